"""Search, trackers and the labeling game."""

from __future__ import annotations

from collections import Counter

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from labeling import charts, game, progress, services
from labeling.forms import TrackerForm
from labeling.models import Annotation, Card
from serving import services as training
from trackers import services as corpus
from trackers.access import (
    get_dataset_for_user,
    get_tracker_for_user,
    get_workspace_for_user,
    require_role,
    role_in,
)
from trackers.forms import SearchForm
from trackers.models import CAN_IMPORT, CAN_LABEL, Granularity, Segment, TrackerKind


@login_required
def search(request: HttpRequest, code) -> HttpResponse:
    """Find the segments of a dataset closest in meaning to a sentence."""
    ds = get_dataset_for_user(request.user, code)
    form = SearchForm(request.GET or None)
    hits, error = [], ""
    if form.is_valid():
        try:
            hits = services.search_segments(ds, form.cleaned_data["q"], k=form.cleaned_data["k"] or 20)
        except services.IndexNotReady as exc:
            error = str(exc)
    context = {"dataset": ds, "workspace": ds.workspace, "form": form, "hits": hits, "error": error}
    template = "labeling/search.html#results" if request.htmx else "labeling/search.html"
    return TemplateResponse(request, template, context)


@login_required
def tracker_list(request: HttpRequest, code) -> HttpResponse:
    """A workspace's trackers with their state, labels and quality."""
    ws = get_workspace_for_user(request.user, code)
    rows = []
    for t in ws.trackers.prefetch_related("datasets"):
        runs = progress.runs(t)
        rows.append(
            {
                "tracker": t,
                "counts": progress.label_counts(t),
                "quality": progress.quality(runs[-1] if runs else None),
            }
        )
    return TemplateResponse(
        request,
        "labeling/trackers.html",
        {"workspace": ws, "rows": rows, "can_create": role_in(request.user, ws) in CAN_IMPORT},
    )


@login_required
def tracker_create(request: HttpRequest, code) -> HttpResponse:
    """Name, examples and datasets; the first round of cards is chosen on save."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    initial = {"seeds": "\n".join(request.GET.getlist("seed"))} if request.GET.getlist("seed") else None
    form = TrackerForm(request.POST or None, workspace=ws, initial=initial)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            tracker = corpus.create_tracker(
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
        except (corpus.TrackerInvalid, ValidationError) as exc:
            form.add_error(None, exc.message if isinstance(exc, ValidationError) else str(exc))
        else:
            return redirect("play", code=tracker.code)
    status = 422 if request.method == "POST" else 200
    return TemplateResponse(
        request, "labeling/tracker_form.html", {"workspace": ws, "form": form}, status=status
    )


@login_required
def tracker_detail(request: HttpRequest, code) -> HttpResponse:
    """State, quality charts, the threshold trade-off and what the model matches now."""
    tracker = get_tracker_for_user(request.user, code)
    runs = progress.runs(tracker)
    latest = runs[-1] if runs else None
    context = {
        "tracker": tracker,
        "workspace": tracker.workspace,
        "counts": progress.label_counts(tracker),
        "quality": progress.quality(latest),
        "pending": progress.pending_run(tracker),
        "round": game.round_progress(tracker),
        "can_label": role_in(request.user, tracker.workspace) in CAN_LABEL,
        "can_manage": role_in(request.user, tracker.workspace) in CAN_IMPORT,
    }
    if runs:
        sampled_key = "accuracy" if tracker.kind == TrackerKind.TOPIC else "precision"
        sampled_name = f"estimated {sampled_key} (sampled)"
        context["learning_curve"] = charts.line_chart(
            {
                "cross-validated F1": [
                    (progress.quality(r)["labels"], r.metrics["cv"].get("f1", 0))
                    for r in runs
                    if r.metrics.get("cv")
                ],
                sampled_name: [
                    (progress.quality(r)["labels"], r.metrics["estimates"][sampled_key])
                    for r in runs
                    if r.metrics.get("estimates", {}).get(sampled_key) is not None
                ],
            },
            x_label="labels",
        )
        if tracker.kind == TrackerKind.TOPIC:
            context.update(_topic_charts(tracker, latest))
            return TemplateResponse(request, "labeling/tracker.html", context)
        pr = latest.metrics.get("pr_curve", [])
        context["pr_points"] = pr
        context["pr_chart"] = charts.line_chart(
            {
                "precision": [(p["threshold"], p["precision"]) for p in pr],
                "recall": [(p["threshold"], p["recall"]) for p in pr],
            },
            x_label="threshold",
        )
        context["effective_threshold"] = tracker.effective_threshold(latest.threshold)
        context["histogram"] = charts.histogram(
            latest.metrics.get("score_histogram", []), context["effective_threshold"]
        )
        context["matches"] = _top_matches(tracker, latest)
    return TemplateResponse(request, "labeling/tracker.html", context)


def _topic_charts(tracker, run) -> dict:
    """Per-label F1, the confusion matrix and how the pool divides between the labels."""
    cv = run.metrics.get("cv", {})
    confusion = cv.get("confusion") or []
    return {
        "label_f1": charts.label_bars([(p["label"], p["f1"]) for p in cv.get("per_label", [])]),
        "per_label": cv.get("per_label", []),
        "confusion": [
            (name, [(n, n / (sum(row) or 1)) for n in row])
            for name, row in zip(tracker.labels, confusion, strict=False)
        ],
        "predicted": charts.label_bars(
            list(zip(tracker.labels, run.metrics.get("predicted_counts", []), strict=False)),
            scale=max(run.metrics.get("predicted_counts") or [1]),
        ),
        "matches": _per_label(_top_matches(tracker, run, n=30), 5),
    }


def _per_label(matches: list, n: int) -> list:
    """At most ``n`` of the (score, segment, label) matches of each label, in order."""
    counts: Counter = Counter()
    kept = []
    for match in matches:
        counts[match[2]] += 1
        if counts[match[2]] <= n:
            kept.append(match)
    return kept


def _top_matches(tracker, run, n: int = 10):
    """The best-scoring entries at the last training still unlabeled: (score, segment, label or None)."""
    top = [(row[0], row[1], row[2] if len(row) > 2 else None) for row in run.metrics.get("top_unlabeled", [])]
    answered = set(
        Annotation.objects.filter(tracker=tracker, segment_id__in=[sid for sid, _, _ in top]).values_list(
            "segment_id", flat=True
        )
    )
    segs = Segment.objects.select_related("document").in_bulk(
        [sid for sid, _, _ in top if sid not in answered][:n]
    )
    return [(score, segs[sid], label) for sid, score, label in top if sid in segs]


@login_required
@require_POST
def tracker_train(request: HttpRequest, code) -> HttpResponse:
    """Train now on every answer so far (nothing happens if those answers were trained on already)."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    training.request_training(tracker)
    return redirect("tracker", code=tracker.code)


def _game_context(request: HttpRequest, tracker) -> dict:
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
    }


def answer_buttons(tracker) -> list[tuple[str, str, str]]:
    """(answer, caption, key) of the game's buttons: Yes/No, or one per topic label on keys 1 to 9."""
    if tracker.kind == TrackerKind.TOPIC:
        return [(name, name, str(i)) for i, name in enumerate(tracker.labels, 1)]
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
        card.previous, card.next = services.neighbours(card.segment)
    return card


@login_required
def play(request: HttpRequest, code) -> HttpResponse:
    """The game: one card at a time, keyboard first."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    context = _game_context(request, tracker)
    _card_context(context["card"])
    template = "labeling/play.html#game" if request.htmx else "labeling/play.html"
    response = TemplateResponse(request, template, context)
    if request.htmx and context["card"] is None and not context["pending"]:
        response.status_code = 286  # nothing left to show and nothing being prepared: stop polling
    return response


@login_required
@require_POST
def answer(request: HttpRequest, code) -> HttpResponse:
    """Record an answer (a repeat of the same answer is harmless) and show the next card or the round summary."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    card = get_object_or_404(
        Card.objects.select_related("segment"), tracker=tracker, pk=request.POST.get("card") or 0
    )
    if game.held_by_another(card, request.user):
        return HttpResponse("This card is being answered by someone else.", status=409)
    try:
        _, created = game.answer_card(tracker, request.user, card, request.POST.get("answer", ""))
    except game.LabelRejected as exc:
        return HttpResponse(str(exc), status=400)
    if not game.open_cards(tracker).filter(round=card.round).exists() and created:
        context = {
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
    return trigger_client_event(response, "label-recorded", {"created": created, **context["stats"]})


@login_required
@require_POST
def undo(request: HttpRequest, code) -> HttpResponse:
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
def summary(request: HttpRequest, code) -> HttpResponse:
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
def labels(request: HttpRequest, code) -> HttpResponse:
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
                    pk=request.POST.get("segment") or 0,
                )
                game.resolve(tracker, segment, request.POST.get("answer", ""))
            else:
                mine = Annotation.objects.filter(tracker=tracker)
                if role not in CAN_IMPORT:
                    mine = mine.filter(annotator=request.user)  # labelers change their own answers only
                annotation = get_object_or_404(mine, pk=request.POST.get("annotation") or 0)
                game.record_label(
                    tracker,
                    annotation.annotator,
                    segment=annotation.segment,
                    answer=request.POST.get("answer", ""),
                    card=annotation.card,
                )
        except game.LabelRejected as exc:
            return HttpResponse(str(exc), status=400)
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
@require_POST
def tracker_threshold(request: HttpRequest, code) -> HttpResponse:
    """Owners move the threshold along the precision/recall curve, or give it back to training ("auto")."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    raw = request.POST.get("threshold", "")
    if raw == "auto":
        tracker.threshold_override = None
    else:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0.0 < value < 1.0:
            return HttpResponse(
                f"threshold must be a number between 0 and 1, or 'auto' (got '{raw}')", status=400
            )
        tracker.threshold_override = value
    tracker.save(update_fields=["threshold_override"])
    return redirect("tracker", code=tracker.code)
