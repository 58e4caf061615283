"""Bulk scoring pages: start a job on a dataset, follow it, review, mark and download its results."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from labeling import charts
from serving.models import (
    Feedback,
    ScoredSegment,
    ScoringJob,
)
from serving.scoring import services as scoring
from serving.versions import services
from trackers.access import (
    Scope,
    get_dataset_for_user,
    require_role,
    role_in,
)
from trackers.http import PageRequest, bad_request
from trackers.models import CAN_IMPORT, CAN_LABEL, Tracker, Workspace


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

    def __init__(self, *args: Any, workspace: Workspace, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["trackers"].queryset = workspace.trackers.filter(  # type: ignore[attr-defined]
            versions__is_live=True
        ).order_by("name")


@login_required
def dataset_scoring(request: PageRequest, code: UUID) -> HttpResponse:
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


def _job_for(request: PageRequest, code: UUID) -> ScoringJob:
    return Scope.of_user(request.user).find(
        ScoringJob.objects.select_related("dataset"), workspace="workspace", code=code
    )


def _summary(job: ScoringJob) -> list[dict[str, Any]]:
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

    def __init__(self, *args: Any, job: ScoringJob, **kwargs: Any) -> None:
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
def scoring_job(request: PageRequest, code: UUID) -> HttpResponse:
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
def scoring_progress(request: PageRequest, code: UUID) -> HttpResponse:
    job = _job_for(request, code)
    response = TemplateResponse(
        request, "serving/scoring_job.html#progress", {"job": job, "summary": _summary(job)}
    )
    if job.is_done:
        response["HX-Refresh"] = "true"  # the results are in: show them
    return response


@login_required
def scoring_download(request: PageRequest, code: UUID, fmt: str) -> StreamingHttpResponse:
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
def scoring_feedback(request: PageRequest, code: UUID, result_id: int) -> HttpResponse:
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
