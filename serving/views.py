"""The tracker page's model versions panel (every version with its quality, which one is live,
promote and roll back, automatic promotion on or off, the standalone download), the workspace's
API keys page, bulk scoring (start a job on a dataset, follow it, review and download results), and
a tracker's webhook alerts (endpoints with their health, the delivery log, test events, resends)."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from labeling import charts
from serving import keys, scoring, services, webhooks
from serving.models import (
    ApiKey,
    Feedback,
    Grouping,
    ModelVersion,
    ScoredSegment,
    ScoringJob,
    WebhookDelivery,
    WebhookEndpoint,
)
from trackers.access import (
    Scope,
    get_dataset_for_user,
    get_tracker_for_user,
    get_workspace_for_user,
    require_role,
    role_in,
)
from trackers.forms import text_field
from trackers.http import PageRequest, bad_request
from trackers.models import CAN_IMPORT, CAN_LABEL, Role, Tracker, Workspace
from trackers.text import nonfinite_problem


def _panel(request: PageRequest, tracker: Tracker, refused: str = "") -> TemplateResponse:
    versions = list(
        ModelVersion.objects.filter(tracker=tracker).select_related("tracker", "training_run", "went_live_by")
    )
    return TemplateResponse(
        request,
        "serving/_versions.html",
        {
            "tracker": tracker,
            "versions": versions,
            "live": next((v for v in versions if v.is_live), None),
            "can_manage": role_in(request.user, tracker.workspace) in CAN_IMPORT,
            "refused": refused,
        },
        status=422 if refused else 200,  # htmx swaps a 422 in (base.html), so the reason shows
    )


@login_required
def versions(request: PageRequest, code) -> HttpResponse:
    return _panel(request, get_tracker_for_user(request.user, code))


@login_required
@require_POST
def promote(request: PageRequest, code, number: int) -> HttpResponse:
    """Make a version live: a newer one, or an older one (a rollback)."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    try:
        services.promote(get_object_or_404(ModelVersion, tracker=tracker, number=number), request.user)
    except services.VersionRefused as exc:
        return _panel(request, tracker, refused=str(exc))
    return _panel(request, tracker)


@login_required
@require_POST
def automatic(request: PageRequest, code) -> HttpResponse:
    """Turn automatic promotion on or off."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    tracker.promote_automatically = request.POST.get("on") == "1"
    tracker.save(update_fields=["promote_automatically"])
    return _panel(request, tracker)


@login_required
def download(request: PageRequest, code, number: int) -> HttpResponse | FileResponse:
    """The standalone model of a version: one zip with the ONNX file, the tokenizer and the manifest."""
    tracker = get_tracker_for_user(request.user, code)
    version = get_object_or_404(ModelVersion, tracker=tracker, number=number)
    try:
        path = services.standalone_zip(version)
    except services.NoStandalone as exc:
        return bad_request(str(exc), status=409)
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)  # noqa: SIM115


class KeyForm(forms.Form):
    name = text_field(max_length=120)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.LABELER, help_text="at most your own")
    predict_only = forms.BooleanField(required=False, label="Prediction only")
    trackers = forms.ModelMultipleChoiceField(
        queryset=Tracker.objects.none(), required=False, help_text="none chosen: every tracker"
    )

    def __init__(self, *args, workspace: Workspace, roles: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles  # type: ignore[attr-defined]
        self.fields["trackers"].queryset = workspace.trackers.order_by("name")  # type: ignore[attr-defined]


def _keys_page(
    request: PageRequest, ws: Workspace, form: KeyForm | None = None, raw: str | None = None
) -> TemplateResponse:
    scope = Scope.of_user(request.user)
    if form is None:
        form = KeyForm(workspace=ws, roles=keys.roles_to_give(scope, ws))
    shown = list(keys.visible_keys(scope, ws).select_related("created_by").prefetch_related("trackers"))
    for key in shown:
        key.revocable = key.revoked_at is None and keys.may_revoke(scope, key)  # type: ignore[attr-defined]
    return TemplateResponse(
        request,
        "serving/keys.html",
        {"workspace": ws, "keys": shown, "form": form, "new_key": raw},
        status=200 if form.is_bound is False or not form.errors else 400,
    )


@login_required
def keys_page(request: PageRequest, code) -> HttpResponse:
    """The workspace's API keys: made here (the secret is shown once), limited, revoked; never with
    more rights than the member who makes them."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    if request.method != "POST":
        return _keys_page(request, ws)
    scope = Scope.of_user(request.user)
    form = KeyForm(request.POST, workspace=ws, roles=keys.roles_to_give(scope, ws))
    if not form.is_valid():
        return _keys_page(request, ws, form)
    _, raw = keys.issue_key(
        scope,
        ws,
        name=form.cleaned_data["name"],
        role=form.cleaned_data["role"],
        trackers=list(form.cleaned_data["trackers"]),
        predict_only=form.cleaned_data["predict_only"],
    )
    return _keys_page(request, ws, raw=raw)


@login_required
@require_POST
def revoke_key(request: PageRequest, code, key_id: int) -> HttpResponse:
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    keys.revoke_key(Scope.of_user(request.user), get_object_or_404(ApiKey, workspace=ws, pk=key_id))
    return redirect("api-keys", code=ws.code)


# --- Bulk scoring ---------------------------------------------------------------------------


class ScoreForm(forms.Form):
    trackers = forms.ModelMultipleChoiceField(
        queryset=Tracker.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="none chosen: every tracker with a live version",
    )
    min_score = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Keep results from score",
        help_text="empty: each tracker's threshold in use",
    )

    def __init__(self, *args, workspace: Workspace, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["trackers"].queryset = workspace.trackers.filter(  # type: ignore[attr-defined]
            versions__is_live=True
        ).order_by("name")


@login_required
def dataset_scoring(request: PageRequest, code) -> HttpResponse:
    """Score a dataset with live trackers, and the dataset's scoring jobs."""
    dataset = get_dataset_for_user(request.user, code)
    ws = dataset.workspace
    can_start = role_in(request.user, ws) in CAN_IMPORT
    form = ScoreForm(request.POST if request.method == "POST" else None, workspace=ws)
    if request.method == "POST":
        require_role(request.user, ws, CAN_IMPORT)
        if form.is_valid():
            chosen = list(form.cleaned_data["trackers"]) or None
            try:
                job = scoring.start_scoring(
                    dataset=dataset,
                    user=request.user,
                    trackers=chosen,
                    min_score=form.cleaned_data["min_score"],
                )
            except scoring.ScoringRefused as exc:
                form.add_error(None, str(exc))
            else:
                return redirect("scoring-job", code=job.code)
    return TemplateResponse(
        request,
        "serving/scoring.html",
        {
            "dataset": dataset,
            "form": form,
            "can_start": can_start,
            "jobs": ScoringJob.objects.filter(dataset=dataset).prefetch_related("versions__tracker")[:20],
        },
        status=400 if form.is_bound and form.errors else 200,
    )


def _job_for(request: PageRequest, code) -> ScoringJob:
    return Scope.of_user(request.user).find(
        ScoringJob.objects.select_related("dataset"), workspace="workspace", code=code
    )


def _summary(job: ScoringJob) -> list[dict]:
    return [
        {
            **c,
            "version": v,
            "rate": 100 * c["matches"] / c["scored"] if c["scored"] else None,
            "histogram": charts.histogram(c["histogram"], services.threshold_of(v)[0]),
        }
        for v, c in scoring.counts_of(job)
    ]


class ResultsFilter(forms.Form):
    tracker = forms.ModelChoiceField(
        queryset=Tracker.objects.none(), required=False, empty_label="every tracker", to_field_name="code"
    )
    min_score = forms.FloatField(required=False, min_value=0, max_value=1, label="score from")
    matches_only = forms.BooleanField(required=False, label="matches only")

    def __init__(self, *args, job: ScoringJob, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        trackers = Tracker.objects.filter(versions__scoring_jobs=job).distinct().order_by("name")
        self.fields["tracker"].queryset = trackers  # type: ignore[attr-defined]


def _filtered(request: PageRequest, job: ScoringJob) -> tuple[ResultsFilter, QuerySet[ScoredSegment]]:
    form = ResultsFilter(request.GET or None, job=job)
    data = form.cleaned_data if form.is_valid() else {}
    qs = scoring.results_of(
        job,
        tracker=data.get("tracker"),
        min_score=data.get("min_score"),
        matches_only=bool(data.get("matches_only")),
    )
    return form, qs


@login_required
def scoring_job(request: PageRequest, code) -> HttpResponse:
    """A scoring job: progress, each tracker's counts and score histogram, and the results in context,
    filtered by tracker and score, each one marked right or wrong with one key."""
    job = _job_for(request, code)
    form, qs = _filtered(request, job)
    page = Paginator(qs, 25).get_page(request.GET.get("page"))
    scoring.with_context(list(page.object_list))
    query = request.GET.copy()
    query.pop("page", None)
    return TemplateResponse(
        request,
        "serving/scoring_job.html",
        {
            "job": job,
            "summary": _summary(job),
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "can_mark": role_in(request.user, job.workspace) in CAN_LABEL,
        },
    )


@login_required
def scoring_progress(request: PageRequest, code) -> HttpResponse:
    job = _job_for(request, code)
    response = TemplateResponse(
        request, "serving/scoring_job.html#progress", {"job": job, "summary": _summary(job)}
    )
    if job.is_done:
        response["HX-Refresh"] = "true"  # the results are in: show them
    return response


@login_required
def scoring_download(request: PageRequest, code, fmt: str) -> StreamingHttpResponse:
    if fmt not in ("csv", "jsonl"):
        raise Http404("downloads are .csv or .jsonl")
    job = _job_for(request, code)
    _, qs = _filtered(request, job)
    lines = scoring.csv_lines(qs) if fmt == "csv" else scoring.jsonl_lines(qs)
    response = StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    )
    response["Content-Disposition"] = f'attachment; filename="scoring-{job.code}.{fmt}"'
    return response


@login_required
@require_POST
def scoring_feedback(request: PageRequest, code, result_id: int) -> HttpResponse:
    """Right or wrong on one result: the answer joins the tracker's answers."""
    job = _job_for(request, code)
    result = get_object_or_404(
        ScoredSegment.objects.select_related("version__tracker", "segment__document"), job=job, pk=result_id
    )
    require_role(request.user, job.workspace, CAN_LABEL)
    try:
        label = request.POST.get("label") or None  # a topic's label button: this one is right instead
        verdict = request.POST.get("verdict") or (Feedback.WRONG if label else "")
        scoring.give_feedback(result, request.user, verdict, label)
    except scoring.FeedbackRefused as exc:
        return bad_request(str(exc), status=422)
    if request.htmx:
        scoring.with_context([result])
        return TemplateResponse(
            request, "serving/scoring_job.html#result", {"job": job, "r": result, "can_mark": True}
        )
    back = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(back, allowed_hosts=None):  # this site's paths only
        back = reverse("scoring-job", kwargs={"code": job.code})
    return redirect(back)


# --- Webhook alerts ------------------------------------------------------------------------------


class EndpointForm(forms.Form):
    url = forms.CharField(
        max_length=2000, label="URL", help_text="https:// (checked: no private or loopback address)"
    )
    description = text_field(max_length=200, required=False)
    min_score = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Only from score",
        help_text="empty: the threshold in use",
    )
    speaker_filter = text_field(max_length=120, required=False, label="Only lines of speaker")
    metadata_filter = forms.CharField(
        required=False,
        max_length=webhooks.FILTER_MAX_FIELDS * (2 * webhooks.FILTER_MAX_CHARS + 8),
        label="Only documents whose metadata has",
        help_text='JSON, e.g. {"region": "EU"}',
    )
    grouping = forms.ChoiceField(choices=Grouping.choices, initial=Grouping.TEXT)
    from_bulk = forms.BooleanField(required=False, initial=True, label="Bulk scoring jobs")
    from_import = forms.BooleanField(required=False, initial=True, label="Newly imported documents")
    from_api = forms.BooleanField(required=False, label="Prediction API calls")

    def clean_metadata_filter(self) -> dict:
        raw = (self.cleaned_data.get("metadata_filter") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None
        except RecursionError:
            raise forms.ValidationError("nests too deeply: an object of names and plain values") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('an object of field names and values, like {"region": "EU"}')
        if why := nonfinite_problem(value):
            raise forms.ValidationError(why)
        return value


def _alerts_tracker(request: PageRequest, code) -> Tracker:
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    return tracker


def _endpoint_for(request: PageRequest, code) -> WebhookEndpoint:
    return Scope.of_user(request.user).find(
        WebhookEndpoint.objects.all(), workspace="tracker__workspace", allowed=CAN_IMPORT, code=code
    )


def _alerts_page(
    request: PageRequest,
    tracker: Tracker,
    form: EndpointForm,
    secret: tuple[WebhookEndpoint, str] | None = None,
) -> TemplateResponse:
    endpoints = list(WebhookEndpoint.objects.filter(tracker=tracker))
    health = webhooks.health(endpoints)
    return TemplateResponse(
        request,
        "serving/alerts.html",
        {
            "tracker": tracker,
            "workspace": tracker.workspace,
            "rows": [(e, health[e.pk], webhooks.daily_chart(e)) for e in endpoints],
            "form": form,
            "new_secret": secret,
        },
        status=400 if form.is_bound and form.errors else 200,
    )


@login_required
def alerts(request: PageRequest, code) -> HttpResponse:
    """A tracker's webhook endpoints with their health, and a new one (its secret shown once)."""
    tracker = _alerts_tracker(request, code)
    if request.method != "POST":
        return _alerts_page(request, tracker, EndpointForm())
    form = EndpointForm(request.POST)
    if not form.is_valid():
        return _alerts_page(request, tracker, form)
    try:
        endpoint, secret = webhooks.create_endpoint(tracker=tracker, user=request.user, **form.cleaned_data)
    except webhooks.EndpointInvalid as exc:
        form.add_error(
            exc.field if exc.field in form.fields else None,
            exc.message if exc.field in form.fields else str(exc),
        )
        return _alerts_page(request, tracker, form)
    return _alerts_page(request, tracker, EndpointForm(), (endpoint, secret))


@login_required
def alert_endpoint(request: PageRequest, code) -> HttpResponse:
    """One endpoint's delivery log: every delivery with every attempt, newest first."""
    endpoint = _endpoint_for(request, code)
    page = Paginator(webhooks.deliveries_of(endpoint), 30).get_page(request.GET.get("page"))
    return TemplateResponse(
        request,
        "serving/alert_endpoint.html",
        {
            "endpoint": endpoint,
            "tracker": endpoint.tracker,
            "health": webhooks.health([endpoint])[endpoint.pk],
            "chart": webhooks.daily_chart(endpoint),
            "page": page,
        },
    )


@login_required
@require_POST
def alert_action(request: PageRequest, code, action: str) -> HttpResponse:
    """Send a test event, rotate the secret, enable or disable, or delete an endpoint."""
    endpoint = _endpoint_for(request, code)
    tracker = endpoint.tracker
    if action == "test":
        webhooks.send_test(endpoint)
    elif action == "rotate":
        secret = webhooks.rotate_secret(endpoint)
        return _alerts_page(request, tracker, EndpointForm(), (endpoint, secret))
    elif action == "enable":
        try:
            webhooks.update_endpoint(endpoint, enabled=request.POST.get("on") == "1")
        except webhooks.EndpointInvalid as exc:  # enabling checks the target again
            return bad_request(f"cannot enable {endpoint}: {exc}", status=422)
    elif action == "delete":
        endpoint.delete()
    else:
        raise Http404(f"no action {action!r}")
    return redirect("tracker-alerts", code=tracker.code)


@login_required
@require_POST
def resend_delivery(request: PageRequest, pk: int) -> HttpResponse:
    delivery = Scope.of_user(request.user).find(
        WebhookDelivery.objects.all(), workspace="endpoint__tracker__workspace", allowed=CAN_IMPORT, pk=pk
    )
    try:
        webhooks.resend(delivery)
    except webhooks.EndpointDisabled as exc:
        return bad_request(str(exc), status=exc.status)
    return redirect("alert-endpoint", code=delivery.endpoint.code)
