"""Tracker pages and the labeling game."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from labeling import charts, game, progress, services
from labeling.forms import TrackerForm, TrackerSettingsForm
from labeling.models import Annotation, Card
from trackers import definitions, errors, search
from trackers.access import (
    get_tracker_for_user,
    get_workspace_for_user,
    require_role,
    role_in,
)
from trackers.definitions import TrackerInvalid
from trackers.http import PageRequest, bad_request, form_id
from trackers.models import CAN_IMPORT, CAN_LABEL, Granularity, Segment, TrackerKind


@login_required
def tracker_list(request: PageRequest, code) -> HttpResponse:
    """A workspace's trackers with their state, labels and quality."""
    ws = get_workspace_for_user(request.user, code)
    rows = []
    for t in ws.trackers.prefetch_related("datasets"):
        rows.append(
            {"tracker": t, "counts": progress.label_counts(t), "quality": progress.tracker_quality(t)}
        )
    return TemplateResponse(
        request,
        "labeling/trackers.html",
        {
            "workspace": ws,
            "rows": rows,
            "can_create": role_in(request.user, ws) in CAN_IMPORT,
            "can_label": role_in(request.user, ws) in CAN_LABEL,
        },
    )


def _codes(values: list[str]) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            continue
    return out


@login_required
def tracker_create(request: PageRequest, code) -> HttpResponse:
    """Name, examples and datasets; the first round of cards is chosen on save."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    initial: dict[str, Any] = {}
    if request.GET.getlist("seed"):  # ticked on a search page: its examples, and the dataset searched
        initial["seeds"] = "\n".join(request.GET.getlist("seed"))
    if found := ws.datasets.filter(code__in=_codes(request.GET.getlist("dataset"))):
        initial["datasets"] = list(found)
    form = TrackerForm(request.POST or None, workspace=ws, initial=initial or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            tracker = services.create_tracker(
                workspace=ws,
                user=request.user,
                name=d["name"],
                description=d["description"],
                kind=d["kind"],
                labels=form.label_list(),
                granularity=d["granularity"],
                datasets=list(d["datasets"]),
                seeds=form.seed_list(),
                keywords=form.keyword_list(),
                target_precision=d["target_precision"],
                round_size=d["round_size"],
                speaker_filter=d["speaker_filter"],
            )
        except (TrackerInvalid, ValidationError) as exc:
            form.add_error(None, exc.message if isinstance(exc, ValidationError) else str(exc))
        else:
            return redirect("play", code=tracker.code)
    status = 422 if request.method == "POST" else 200
    return TemplateResponse(
        request, "labeling/tracker_form.html", {"workspace": ws, "form": form}, status=status
    )


@login_required
def tracker_detail(request: PageRequest, code) -> HttpResponse:
    """The live version's state and quality, its threshold trade-off and what it matches now; a newer
    version that waits, beside it."""
    tracker = get_tracker_for_user(request.user, code)
    runs = progress.runs(tracker)
    latest = runs[-1] if runs else None
    now = progress.live(tracker)
    shown = now.run if now is not None else latest  # while no version is live: the latest run, said so
    waiting = latest if now is not None and latest is not None and latest.pk != now.run.pk else None
    context = {
        "tracker": tracker,
        "workspace": tracker.workspace,
        "counts": progress.label_counts(tracker),
        "live": now,
        "quality": progress.quality(shown, now),
        "waiting": progress.quality(waiting) if waiting is not None else None,
        "pending": progress.pending_run(tracker),
        "round": game.round_progress(tracker),
        "can_label": role_in(request.user, tracker.workspace) in CAN_LABEL,
        "can_manage": role_in(request.user, tracker.workspace) in CAN_IMPORT,
        "is_owner": role_in(request.user, tracker.workspace) == "owner",
    }
    context["no_model"] = progress.no_model_reason(tracker)
    if shown is not None:
        context["learning_curve"] = _learning_curve(tracker, runs, now)
        if tracker.kind == TrackerKind.TOPIC:
            context.update(_topic_charts(tracker, shown))
            return TemplateResponse(request, "labeling/tracker.html", context)
        in_use = now.threshold if now is not None else services.threshold_in_use(tracker, shown)
        pr = shown.metrics.get("pr_curve", [])
        context["pr_points"] = pr
        # The slider, over the chart's thresholds, opens at the threshold in use.
        context["slider_at"] = in_use if in_use is not None else (pr[0]["threshold"] if pr else 0.5)
        context["pr_chart"] = charts.line_chart(
            {
                "precision": [(p["threshold"], p["precision"]) for p in pr],
                "recall": [(p["threshold"], p["recall"]) for p in pr],
            },
            x_label="threshold",
        )
        context["threshold_in_use"] = in_use
        context["histogram"] = charts.histogram(shown.metrics.get("score_histogram", []), in_use)
        context["matches"], context["match_count"] = services.matches_now(shown, in_use)
    return TemplateResponse(request, "labeling/tracker.html", context)


def _learning_curve(tracker, runs, now: progress.Live | None) -> dict:
    """Cross-validated F1 and the estimates over all texts (with their 95% intervals), per run: each
    at the threshold training chose for it, the live one at the threshold in use."""
    estimated, name = (
        ("accuracy", "accuracy, all texts (estimated, 95% interval)")
        if tracker.kind == TrackerKind.TOPIC
        else ("f1", "F1, all texts (estimated, 95% interval)")
    )
    points, whiskers, cv = [], [], []
    for r in runs:
        labels = sum(n for a, n in r.label_counts.items() if a != Annotation.SKIP)
        is_live = now is not None and now.run.pk == r.pk
        est = (
            services.estimates_for(r, now.threshold) if is_live and now is not None else None
        ) or r.metrics.get("estimates", {})
        value = est.get(estimated)
        if isinstance(value, dict) and value.get("value") is not None:
            points.append((labels, value["value"]))
            if value.get("ci"):
                whiskers.append((labels, value["ci"][0], value["ci"][1]))
        if r.metrics.get("cv", {}).get("f1") is not None:
            cv.append((labels, r.metrics["cv"]["f1"]))
    return charts.line_chart(
        {name: points, "F1, cross-validated": cv}, x_label="labels", intervals={name: whiskers}, x_digits=0
    )


def _topic_charts(tracker, run) -> dict:
    """Per-label F1, the confusion matrix and how the pool divides between the labels (and "none")."""
    cv = run.metrics.get("cv", {})
    confusion = cv.get("confusion") or []
    classes = run.metrics.get("classes") or [*tracker.labels, "none"]
    counts = run.metrics.get("predicted_counts", [])
    matches, _ = services.matches_now(run, None, n=10)
    return {
        "classes": classes,
        "label_f1": charts.label_bars(
            [(p["label"], p["f1"]) for p in cv.get("per_label", []) if p["support"]]
        ),
        "per_label": cv.get("per_label", []),
        "confusion": [
            (name, [(n, n / (sum(row) or 1)) for n in row])
            for name, row in zip(classes, confusion, strict=False)
        ],
        "predicted": charts.label_bars(list(zip(classes, counts, strict=False)), scale=max(counts or [1])),
        "matches": matches,
    }


@login_required
@require_POST
def tracker_train(request: PageRequest, code) -> HttpResponse:
    """Train now on every answer so far (nothing happens if those answers were trained on already)."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    try:
        services.request_training(tracker)
    except services.TrainingRefused as exc:
        messages.error(request, str(exc))
    return redirect("tracker", code=tracker.code)


@login_required
@require_POST
def tracker_check(request: PageRequest, code) -> HttpResponse:
    """Check what the model misses: a round of cards from just below the threshold of the model the
    page shows (the live version's, at its threshold in use), in place of the open round."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    quality = progress.tracker_quality(tracker) or {}
    try:
        cards = services.start_check_round(tracker, quality.get("run"), quality.get("threshold"))
    except services.CheckRefused as exc:
        messages.error(request, str(exc))
        return redirect("tracker", code=tracker.code)
    messages.success(
        request,
        f"{len(cards)} cards from just below the threshold: answer them to see what the model misses.",
    )
    return redirect("play", code=tracker.code)


def _game_context(request: PageRequest, tracker) -> dict:
    cards = game.claim_cards(tracker, request.user, n=2)
    return {
        "tracker": tracker,
        "workspace": tracker.workspace,
        "card": cards[0] if cards else None,
        "upcoming": cards[1] if len(cards) > 1 else None,
        "round": game.round_progress(tracker),
        "stats": progress.player_stats(tracker, request.user),
        "pending": progress.pending_run(tracker),
        "buttons": answer_buttons(tracker),
        "no_model": progress.no_model_reason(tracker),
    }


def answer_buttons(tracker) -> list[tuple[str, str, str]]:
    """(answer, caption, key) of the game's buttons: Yes/No, or one per topic label on keys 1 to 9."""
    if tracker.kind == TrackerKind.TOPIC:
        return [
            *((name, name, str(i)) for i, name in enumerate(tracker.labels, 1)),
            ("none", "None of these", "0"),
        ]
    return [("yes", "Yes", "y"), ("no", "No", "n")]


def _card_context(card: Card | None) -> Card | None:
    """What a card shows around its segment: the utterances next to it, or a document's key lines."""
    if card is None:
        return None
    if card.tracker.granularity == Granularity.DOCUMENT:
        card.previous = card.next = None
        card.lines, card.key_ids = services.key_lines(card.tracker, card.segment.document)
        card.key_lines = [s for s in card.lines if s.pk in card.key_ids]
    else:
        card.previous, card.next = search.neighbours(card.segment)
    return card


@login_required
def play(request: PageRequest, code) -> HttpResponse:
    """The game: one card at a time, keyboard first."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    context = _game_context(request, tracker)
    _card_context(context["card"])
    if context["card"] is None and not context["pending"]:
        context["unshown"] = game.unshown_count(tracker) + game.open_cards(tracker).count()
    template = "labeling/play.html#game" if request.htmx else "labeling/play.html"
    response = TemplateResponse(request, template, context)
    if request.htmx and context["card"] is None and not context["pending"] and not context["unshown"]:
        response.status_code = 286  # nothing left to show and nothing being prepared: stop polling
    return response


class _NotAnId(ValueError):
    pass


def _posted_id(request: PageRequest, name: str) -> int:
    value = form_id(request.POST.get(name))
    if value is None:
        raise _NotAnId(name)
    return value


@login_required
@require_POST
def answer(request: PageRequest, code) -> HttpResponse:
    """Record an answer (a repeat of the same answer is harmless) and show the next card or the round summary."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    try:
        card_id = _posted_id(request, "card")
    except _NotAnId as exc:
        return bad_request(f"'{exc}' must be the id of a card (a whole number)")
    card = get_object_or_404(Card.objects.select_related("segment"), tracker=tracker, pk=card_id)
    try:
        _, created = services.answer_card(tracker, request.user, card, request.POST.get("answer", ""))
    except errors.Refused as exc:
        return bad_request(str(exc), status=409 if isinstance(exc, errors.Conflict) else 400)
    if not game.open_cards(tracker).filter(round=card.round).exists() and created:
        context: dict[str, Any] = {
            "tracker": tracker,
            "workspace": tracker.workspace,
            "summary": progress.round_summary(tracker, card.round),
        }
        if not request.htmx:
            return TemplateResponse(request, "labeling/play.html", context)
        response = TemplateResponse(request, "labeling/play.html#summary", context)
        return trigger_client_event(response, "round-complete", {"round": card.round})
    if not request.htmx:
        return redirect("play", code=tracker.code)
    context = _game_context(request, tracker)
    _card_context(context["card"])
    response = TemplateResponse(request, "labeling/play.html#game", context)
    threshold = card.training_run.threshold if card.training_run_id and card.training_run else None
    correction = progress.corrected(
        card.score, card.label, threshold, request.POST.get("answer", ""), tracker.kind
    )
    return trigger_client_event(
        response,
        "label-recorded",
        {"created": created, "corrected": created and correction, **context["stats"]},
    )


@login_required
@require_POST
def undo(request: PageRequest, code) -> HttpResponse:
    """Take back my last answer; its card comes back first."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    game.undo_last(tracker, request.user)
    if not request.htmx:
        return redirect("play", code=tracker.code)
    context = _game_context(request, tracker)
    _card_context(context["card"])
    return TemplateResponse(request, "labeling/play.html#game", context)


@login_required
def summary(request: PageRequest, code) -> HttpResponse:
    """The round summary; polls until the training it started is done (then 286)."""
    tracker = get_tracker_for_user(request.user, code)
    try:
        round_no = int(request.GET.get("round", "0")) or None
    except ValueError:
        round_no = None
    data = progress.round_summary(tracker, round_no)
    response = TemplateResponse(request, "labeling/play.html#summary", {"tracker": tracker, "summary": data})
    if not data["pending"]:
        response.status_code = 286
    return response


@login_required
def labels(request: PageRequest, code) -> HttpResponse:
    """Every answer of a tracker: search, filter, change one, and settle disagreements."""
    tracker = get_tracker_for_user(request.user, code)
    role = role_in(request.user, tracker.workspace)
    if request.method == "POST":
        require_role(request.user, tracker.workspace, CAN_LABEL)
        try:
            if request.POST.get("action") == "resolve":
                require_role(request.user, tracker.workspace, CAN_IMPORT)
                segment = get_object_or_404(
                    Segment.objects.filter(annotations__tracker=tracker).distinct(),
                    pk=_posted_id(request, "segment"),
                )
                game.resolve(tracker, segment, request.POST.get("answer", ""))
            else:
                mine = Annotation.objects.filter(tracker=tracker)
                if role not in CAN_IMPORT:
                    mine = mine.filter(annotator=request.user)  # labelers change their own answers only
                annotation = get_object_or_404(mine, pk=_posted_id(request, "annotation"))
                game.record_label(
                    tracker,
                    annotation.annotator,
                    segment=annotation.segment,
                    answer=request.POST.get("answer", ""),
                    card=annotation.card,
                )
        except game.LabelRejected as exc:
            return bad_request(str(exc))
        except _NotAnId as exc:
            return bad_request(f"'{exc}' must be the id of a row (a whole number)")
        return redirect(request.get_full_path())
    qs = Annotation.objects.filter(tracker=tracker).select_related("segment__document", "annotator")
    f = request.GET
    if f.get("q"):
        q = Q(segment__text__icontains=f["q"])
        if tracker.granularity == Granularity.DOCUMENT:
            q |= Q(segment__document__title__icontains=f["q"])
        qs = qs.filter(q)
    if f.get("answer"):
        qs = qs.filter(answer=f["answer"])
    if f.get("labeler"):
        qs = qs.filter(annotator__username=f["labeler"])
    if f.get("strategy"):
        qs = qs.filter(strategy=f["strategy"])
    if f.get("disagreements"):
        qs = qs.filter(segment__in=game.disagreements(tracker)).order_by("segment_id", "annotator__username")
    page = Paginator(qs, 50).get_page(f.get("page"))
    return TemplateResponse(
        request,
        "labeling/labels.html",
        {
            "tracker": tracker,
            "workspace": tracker.workspace,
            "page": page,
            "filters": f,
            "answers": [*tracker.answers, Annotation.SKIP],
            "labelers": sorted(
                set(Annotation.objects.filter(tracker=tracker).values_list("annotator__username", flat=True))
            ),
            "strategies": sorted(
                set(Annotation.objects.filter(tracker=tracker).values_list("strategy", flat=True)) - {""}
            ),
            "n_disagreements": game.disagreements(tracker).count(),
            "can_resolve": role in CAN_IMPORT,
            "can_label": role in CAN_LABEL,
        },
    )


@login_required
def tracker_settings(request: PageRequest, code) -> HttpResponse:
    """Owners and admins rename a tracker, or change its description, target precision or round size."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    current = {k: getattr(tracker, k) for k in definitions.EDITABLE}
    form = TrackerSettingsForm(request.POST or None, initial=current)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                definitions.change_tracker(tracker, by=request.user, **form.cleaned_data)
            except errors.Refused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, "Saved.")
                return redirect("tracker", code=tracker.code)
        status = 422
    return TemplateResponse(
        request,
        "labeling/tracker_settings.html",
        {"tracker": tracker, "workspace": tracker.workspace, "form": form},
        status=status,
    )
