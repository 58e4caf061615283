"""The game and tracker pages through the Django test client."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from labeling import game
from labeling import services as labeling_services
from labeling.models import Annotation, Card, TrainingRun, TrainingState
from tests.test_game import cancel_tracker, corpus, oracle
from trackers import imports

pytestmark = pytest.mark.django_db


@pytest.fixture
def tracker(dataset, owner, workspace, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # import, embed and index run on commit
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    return cancel_tracker(workspace, owner, dataset, round_size=10, name="Wants to cancel")


def test_create_tracker_through_the_form(
    owner_client, workspace, dataset, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    url = reverse("tracker-create", args=[workspace.code])
    bad = owner_client.post(
        url,
        {
            "name": "Churn",
            "datasets": [dataset.pk],
            "seeds": "only one",
            "target_precision": 0.8,
            "round_size": 25,
        },
    )
    assert bad.status_code == 422 and "give at least 3 example sentences (got 1)" in bad.content.decode()
    ok = owner_client.post(
        url,
        {
            "name": "Churn",
            "datasets": [dataset.pk],
            "seeds": "cancel it\nwe quit\nend it now",
            "keywords": "cancel, quit",
            "target_precision": 0.9,
            "round_size": 10,
        },
    )
    tracker = workspace.trackers.get()
    assert ok.status_code == 302 and ok["Location"] == reverse("play", args=[tracker.code])
    assert tracker.keywords == ["cancel", "quit"] and tracker.target_precision == 0.9
    assert tracker.cards.count() == 10 and tracker.seeds.count() == 3


def test_search_results_prefill_the_tracker_form(owner_client, workspace):
    url = reverse("tracker-create", args=[workspace.code]) + "?seed=first+example&seed=second+example"
    assert "first example\nsecond example" in owner_client.get(url).content.decode()


def test_play_shows_a_card_with_context_and_keyboard_hints(owner_client, tracker):
    html = owner_client.get(reverse("play", args=[tracker.code])).content.decode()
    card = Card.objects.get(
        tracker=tracker,
        claimed_by__isnull=False,
        answered_at__isnull=True,
        pk=int(html.split('data-card="')[1].split('"')[0]),
    )
    assert f"<strong>{card.segment.text}</strong>" in html
    assert (
        'data-key="y"' in html
        and 'data-key="n"' in html
        and 'data-key="s"' in html
        and 'data-key="u"' in html
    )
    assert "Round 1" in html and "0/10" in html and 'id="upcoming"' in html


def test_answering_a_full_round_shows_the_summary_then_the_next_round(
    owner_client, tracker, owner, django_capture_on_commit_callbacks
):
    url = reverse("answer", args=[tracker.code])
    last = None
    for _ in range(10):
        card = (
            Card.objects.filter(tracker=tracker, round=1, answered_at__isnull=True, claimed_by=owner).first()
            or Card.objects.filter(tracker=tracker, round=1, answered_at__isnull=True).first()
        )
        with django_capture_on_commit_callbacks(execute=True):  # the last answer's training runs on commit
            last = owner_client.post(url, {"card": card.pk, "answer": oracle(card)}, HTTP_HX_REQUEST="true")
        assert last.status_code == 200
    html = last.content.decode()
    assert "Round 1 done!" in html and "matches found" in html
    assert "round-complete" in last["HX-Trigger"]
    run = TrainingRun.objects.get(tracker=tracker)
    assert run.state == TrainingState.SUCCEEDED
    summary = owner_client.get(reverse("round-summary", args=[tracker.code]), HTTP_HX_REQUEST="true")
    assert summary.status_code == 286 and "F1 (cross-validated)" in summary.content.decode()
    assert "This model is live: the API answers with it (version 1)" in summary.content.decode()
    assert 'id="summary-how"' in summary.content.decode()  # why F1 may sit below precision and recall
    nxt = owner_client.get(reverse("play", args=[tracker.code])).content.decode()
    assert "Round 2" in nxt and "0/10" in nxt


def test_double_press_is_one_label_and_other_labelers_cards_are_409(
    owner_client, client, tracker, owner, viewer, workspace
):
    from tests.factories import MembershipFactory, UserFactory
    from trackers.models import Role

    card = Card.objects.filter(tracker=tracker).first()
    url = reverse("answer", args=[tracker.code])
    first = owner_client.post(url, {"card": card.pk, "answer": "yes"}, HTTP_HX_REQUEST="true")
    second = owner_client.post(url, {"card": card.pk, "answer": "yes"}, HTTP_HX_REQUEST="true")
    assert first.status_code == second.status_code == 200
    assert Annotation.objects.filter(tracker=tracker).count() == 1
    other = MembershipFactory(workspace=workspace, user=UserFactory(username="lara"), role=Role.LABELER).user
    client.force_login(other)
    claimed = Card.objects.filter(tracker=tracker, answered_at__isnull=True, claimed_by=owner).first()
    assert client.post(url, {"card": claimed.pk, "answer": "no"}).status_code == 409


def test_viewers_cannot_play(client, viewer, tracker):
    client.force_login(viewer)
    assert client.get(reverse("play", args=[tracker.code])).status_code == 403


def test_bad_answer_is_400(owner_client, tracker):
    card = Card.objects.filter(tracker=tracker).first()
    response = owner_client.post(reverse("answer", args=[tracker.code]), {"card": card.pk, "answer": "maybe"})
    assert response.status_code == 400 and "'maybe' is not an answer" in response.content.decode()


XSS = "<img src=x onerror=alert(9)>"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("answer", {"card": "{card}", "answer": XSS}),
        ("tracker-threshold", {"threshold": XSS}),
        ("labels", {"annotation": "{annotation}", "answer": XSS}),
    ],
)
def test_refusals_never_echo_input_as_html(owner_client, tracker, owner, name, data):
    card = Card.objects.filter(tracker=tracker).first()
    if "annotation" in data:
        annotation, _ = labeling_services.answer_card(tracker, owner, card, "yes")
        data = {**data, "annotation": annotation.pk}
    data = {k: (v.format(card=card.pk) if isinstance(v, str) else v) for k, v in data.items()}
    response = owner_client.post(reverse(name, args=[tracker.code]), data)
    assert response.status_code == 400
    assert (
        response["Content-Type"].startswith("text/plain") and response["X-Content-Type-Options"] == "nosniff"
    )


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("answer", {"card": "abc", "answer": "yes"}, "card"),
        ("answer", {"card": "1e5", "answer": "yes"}, "card"),
        ("labels", {"annotation": "x1", "answer": "yes"}, "annotation"),
        ("labels", {"action": "resolve", "segment": "--1", "answer": "yes"}, "segment"),
    ],
)
def test_ids_that_are_not_numbers_are_400_naming_the_field(owner_client, tracker, name, data, field):
    response = owner_client.post(reverse(name, args=[tracker.code]), data)
    assert response.status_code == 400 and f"'{field}' must be the id of" in response.content.decode()


def test_undo_brings_the_card_back(owner_client, tracker):
    card = Card.objects.filter(tracker=tracker).first()
    owner_client.post(
        reverse("answer", args=[tracker.code]), {"card": card.pk, "answer": "no"}, HTTP_HX_REQUEST="true"
    )
    html = owner_client.post(reverse("undo", args=[tracker.code]), HTTP_HX_REQUEST="true").content.decode()
    assert f'data-card="{card.pk}"' in html and not Annotation.objects.exists()


def test_tracker_page_shows_quality_charts_and_matches(
    owner_client, tracker, owner, django_capture_on_commit_callbacks
):
    from labeling import game

    while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == 1]:
        for c in cards:
            with django_capture_on_commit_callbacks(execute=True):
                labeling_services.answer_card(tracker, owner, c, oracle(c))
    html = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert "Quality as labels grow" in html and "<polyline" in html and 'class="bar"' in html
    assert "What it matches now" in html and "cancel" in html.split("What it matches now")[1]
    assert 'id="pr-points"' in html
    # a match answered after the training leaves the list without retraining
    from labeling.models import TrainingRun
    from trackers.models import Segment

    top_id = TrainingRun.objects.get(tracker=tracker).metrics["top_unlabeled"][0][0]
    top = Segment.objects.get(pk=top_id)
    assert top.text in html.split("What it matches now")[1]
    game.record_label(tracker, owner, segment=top, answer="yes")
    again = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert top.text not in again.split("What it matches now")[1]
    listing = owner_client.get(reverse("trackers", args=[tracker.workspace.code])).content.decode()
    assert "Wants to cancel" in listing


def test_the_game_stops_polling_only_when_every_text_was_shown(owner_client, tracker):
    from django.utils import timezone

    url = reverse("play", args=[tracker.code])
    Card.objects.filter(tracker=tracker).update(answered_at=timezone.now())  # round over, nothing training
    response = owner_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "not shown yet" in response.content.decode()
    # every text of the pool on a card, all answered: now there is nothing left to show
    carded = set(Card.objects.filter(tracker=tracker).values_list("segment_id", flat=True))
    Card.objects.bulk_create(
        [
            Card(tracker=tracker, segment=s, round=9, strategy="random", answered_at=timezone.now())
            for s in game.eligible_segments(tracker).exclude(pk__in=carded)
        ]
    )
    response = owner_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 286 and "No cards left" in response.content.decode()


def test_a_threshold_belongs_to_its_version_and_the_page_is_about_the_live_one(
    owner_client, client, viewer, tracker, owner, django_capture_on_commit_callbacks
):
    from labeling import game
    from labeling.models import TrainingRun
    from serving.models import ModelVersion
    from serving.versions import services as versions

    def play_round() -> None:
        now = game.current_round(tracker)
        while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == now]:
            for c in cards:
                with django_capture_on_commit_callbacks(execute=True):
                    labeling_services.answer_card(tracker, owner, c, oracle(c))

    play_round()
    v1 = ModelVersion.objects.get(tracker=tracker)
    assert v1.is_live
    url = reverse("tracker-threshold", args=[tracker.code])
    assert owner_client.post(url, {"threshold": "1.5"}).status_code == 422
    assert owner_client.post(url, {"threshold": "lots"}).status_code == 400
    owner_client.post(url, {"threshold": "0.35"})
    v1.refresh_from_db()
    assert (v1.threshold_override, v1.threshold_set_by) == (0.35, owner) and v1.threshold_set_at is not None
    html = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert "In use: <strong>0.350</strong>" in html and f"set for version 1 by {owner.username}" in html
    assert "These are the numbers of <strong>version 1</strong>" in html
    # the slider opens at the threshold in use, not at its lowest point
    slider = html[html.index('id="threshold"') - 80 : html.index('id="threshold"') + 120]
    assert 'value="0"' not in slider
    # "what it matches now": only texts at or above the threshold in use, and how many there are
    listed = html[html.index('id="matches"') : html.index("</ol>", html.index('id="matches"'))]
    scores = [float(x) for x in re.findall(r'<span class="badge">([0-9.]+)</span>', listed)]
    count = int(re.search(r'id="match-count">(\d+) unanswered', html).group(1))
    assert scores and min(scores) >= 0.35 and count >= len(scores)
    # a new run that does not go live: the page stays about version 1, the new one waits beside it
    versions.set_automatic_promotion(tracker, False)
    play_round()
    v2 = ModelVersion.objects.get(tracker=tracker, number=2)
    assert not v2.is_live and v2.threshold_override is None
    html = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert (
        "In use: <strong>0.350</strong>" in html
        and "version 1</strong>, the one the API answers with" in html
    )
    waiting = html[html.index('id="waiting-version"') :]
    assert (
        "version 2" in waiting and "automatic promotion is off" in waiting and "Promote version 2" in waiting
    )
    summary = owner_client.get(reverse("round-summary", args=[tracker.code]), HTTP_HX_REQUEST="true")
    assert "This model is not live: the API answers with version 1; the new one waits because automatic" in (
        summary.content.decode()
    )
    # promoted, version 2 starts from training's own threshold; rolled back, version 1 has its own again
    assert owner_client.post(reverse("tracker-version-promote", args=[tracker.code, 2])).status_code == 302
    run2 = TrainingRun.objects.get(model_version=v2)
    html = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert f"In use: <strong>{run2.threshold:.3f}</strong>" in html and 'id="waiting-version"' not in html
    assert versions.threshold_of(ModelVersion.objects.get(pk=v2.pk)) == (run2.threshold, "training")
    versions.promote(ModelVersion.objects.get(pk=v1.pk), owner)
    html = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert (
        "In use: <strong>0.350</strong>" in html
        and "version 1</strong>, the one the API answers with" in html
    )
    owner_client.post(url, {"threshold": "0.999"})
    html = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert "No unanswered text scores at or above the threshold in use (0.999)" in html
    owner_client.post(url, {"threshold": "auto"})
    v1.refresh_from_db()
    assert v1.threshold_override is None and versions.threshold_of(v1)[1] == "training"
    client.force_login(viewer)
    assert client.post(url, {"threshold": "0.5"}).status_code == 403
    assert TrainingRun.objects.filter(tracker=tracker).count() == 2


def test_the_game_works_without_javascript(owner_client, tracker, owner, django_capture_on_commit_callbacks):
    url = reverse("answer", args=[tracker.code])
    last = None
    for _ in range(10):
        card = Card.objects.filter(tracker=tracker, round=1, answered_at__isnull=True).first()
        with django_capture_on_commit_callbacks(execute=True):
            last = owner_client.post(url, {"card": card.pk, "answer": oracle(card)})
    assert last.status_code == 200
    html = last.content.decode()
    assert html.lstrip().startswith("<!doctype html>") and "Round 1 done!" in html
    first = owner_client.post(
        url, {"card": Card.objects.filter(tracker=tracker, round=2).first().pk, "answer": "no"}
    )
    assert first.status_code == 302 and first["Location"] == reverse("play", args=[tracker.code])


def test_check_what_it_misses_replaces_the_open_round_with_cards_from_just_below_the_threshold(
    owner_client, client, viewer, tracker, owner, django_capture_on_commit_callbacks
):
    import numpy as np
    from django.utils import timezone

    from labeling import progress

    while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == 1]:
        for c in cards:
            with django_capture_on_commit_callbacks(execute=True):
                labeling_services.answer_card(tracker, owner, c, oracle(c))
    # every card of the game keeps the chance it had of being drawn, and the loop reads it back
    round_two = list(tracker.cards.filter(round=2))
    assert round_two and all(0 < c.probability <= 1 for c in round_two)
    random_first = tracker.cards.filter(round=1, strategy="random")
    assert all(0 < c.probability < 1 for c in random_first)
    answers = game.loop_inputs(tracker).answers
    drawn = answers.probabilities[np.isfinite(answers.probabilities)]
    assert len(drawn) == tracker.cards.filter(round=1).count() and (drawn > 0).all()

    quality = progress.tracker_quality(tracker)
    assert quality is not None and quality["recall_width"] is not None
    page = owner_client.get(reverse("tracker", args=[tracker.code])).content.decode()
    assert ('id="check-round"' in page) == quality["check_offered"]
    game.claim_cards(tracker, owner, n=1)  # cards someone holds stay theirs
    now = timezone.now()
    held = {c.pk for c in game.open_cards(tracker) if c.claimed_until and c.claimed_until > now}
    assert held
    url = reverse("tracker-check", args=[tracker.code])
    response = owner_client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse("play", args=[tracker.code])
    open_cards = list(game.open_cards(tracker))
    checks = [c for c in open_cards if c.strategy == "check"]
    assert {c.pk for c in open_cards} - {c.pk for c in checks} == held
    run = quality["run"]
    assert 0 < len(checks) <= 20 and all(c.training_run_id == run.pk for c in checks)
    assert all(c.score < quality["threshold"] and 0 < c.probability <= 1 for c in checks)
    assert {c.round for c in checks} == {3}
    # answering the check round (and the held card) trains the next version on those answers too
    for c in game.open_cards(tracker):
        with django_capture_on_commit_callbacks(execute=True):
            labeling_services.answer_card(tracker, owner, c, oracle(c))
    latest = progress.runs(tracker)[-1]
    answered = {r.pk: r.label_counts["yes"] + r.label_counts["no"] for r in (run, latest)}
    assert latest.pk != run.pk and answered[latest.pk] == answered[run.pk] + len(checks) + len(held)
    client.force_login(viewer)
    assert client.post(url).status_code == 403  # viewers do not play


def test_a_check_round_is_refused_for_a_topic_tracker_with_a_reason(
    owner_client, workspace, dataset, owner, tracker
):
    topic = labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Call reason",
        kind="topic",
        labels=["billing", "cancel"],
        datasets=[dataset],
        seeds=[("billing", "my invoice is wrong"), ("cancel", "end my plan"), ("billing", "charged twice")],
    )
    response = owner_client.post(reverse("tracker-check", args=[topic.code]), follow=True)
    assert "a check round is for yes/no trackers" in response.content.decode()
    assert not topic.cards.filter(strategy="check").exists()
