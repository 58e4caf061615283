"""The labeling loop through its services: rounds, claims, answers, undo, training, idempotency."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from labeling import game
from labeling import services as labeling_services
from labeling import services as training
from labeling.ml import loop
from labeling.models import Annotation, Card, TrainingRun, TrainingState
from labeling.tasks import train_tracker
from tests.factories import MembershipFactory, UserFactory
from trackers import definitions
from trackers.models import Role, TrackerState

pytestmark = pytest.mark.django_db

CANCEL = [
    "I want to cancel my subscription",
    "please cancel our contract now",
    "we will cancel if this continues",
    "how do I cancel the account",
    "cancel the plan before renewal",
    "we are going to cancel next month",
]
OTHER = [
    "the weather is nice today",
    "can you send the invoice",
    "our team loves the dashboard",
    "the meeting moved to friday",
    "what time is the demo",
    "thanks for the quick reply",
    "the export works fine now",
    "we hired two new people",
    "lunch was great",
    "see you at the conference",
]


def corpus() -> bytes:
    rows = [f"{t} ({i})" for i in range(6) for t in CANCEL] + [f"{t} ({i})" for i in range(8) for t in OTHER]
    return ("text\n" + "\n".join(rows) + "\n").encode()


def cancel_tracker(workspace, owner, dataset, *, round_size: int = 20, name: str = "Wants to cancel"):
    """A concept tracker over the cancel corpus (already imported into ``dataset``)."""
    return labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name=name,
        datasets=[dataset],
        seeds=["cancel my subscription", "we want to cancel", "end the contract"],
        round_size=round_size,
    )


@pytest.fixture
def tracker(embedded, workspace, owner):
    return labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Wants to cancel",
        datasets=[embedded],
        seeds=["cancel my subscription", "we want to cancel", "end the contract"],
        round_size=20,
    )


@pytest.fixture
def labeler(workspace):
    return MembershipFactory(workspace=workspace, user=UserFactory(username="lara"), role=Role.LABELER).user


def oracle(card: Card) -> str:
    return "yes" if "cancel" in card.segment.text else "no"


def test_first_round_is_seed_neighbours_and_random(tracker):
    cards = list(tracker.cards.select_related("segment"))
    assert tracker.state == TrackerState.LABELING and len(cards) == 20
    assert {c.round for c in cards} == {1}
    strategies = Counter(c.strategy for c in cards)
    n_random = round(20 * loop.COLD_START_RANDOM_SHARE)
    assert strategies["seed_neighbour"] == 20 - n_random and strategies["random"] == n_random
    near = [c for c in cards if c.strategy == "seed_neighbour"]
    assert sum("cancel" in c.segment.text for c in near) >= 5  # about 2.5 of 8 by chance


def test_tracker_needs_three_seeds_and_embedded_data(workspace, owner, dataset, embedded):
    with pytest.raises(definitions.TrackerInvalid, match="at least 3 example sentences"):
        labeling_services.create_tracker(
            workspace=workspace, user=owner, name="x", datasets=[embedded], seeds=["a", " "]
        )
    empty = dataset.__class__.objects.create(workspace=workspace, name="empty")
    with pytest.raises(definitions.TrackerInvalid, match="'empty' has no embedded segments yet"):
        labeling_services.create_tracker(
            workspace=workspace, user=owner, name="x", datasets=[empty], seeds=["a", "b", "c"]
        )


def test_two_labelers_never_get_the_same_card(tracker, owner, labeler):
    mine = game.claim_cards(tracker, owner, n=5)
    theirs = game.claim_cards(tracker, labeler, n=5)
    assert len(mine) == len(theirs) == 5
    assert not {c.pk for c in mine} & {c.pk for c in theirs}
    assert [c.pk for c in game.claim_cards(tracker, owner, n=5)] == [c.pk for c in mine]  # still mine


def test_an_abandoned_claim_is_released(tracker, owner, labeler):
    mine = game.claim_cards(tracker, owner, n=20)
    assert game.claim_cards(tracker, labeler, n=2) == []
    Card.objects.filter(pk=mine[0].pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert [c.pk for c in game.claim_cards(tracker, labeler, n=2)] == [mine[0].pk]


def test_a_double_press_records_one_label(tracker, owner):
    card = game.claim_cards(tracker, owner, n=1)[0]
    first, created = labeling_services.answer_card(tracker, owner, card, "yes")
    watermark = game.label_watermark(tracker)
    again, created_again = labeling_services.answer_card(tracker, owner, card, "yes")
    assert game.label_watermark(tracker) == watermark  # a repeat is not new information to train on
    assert created and not created_again and first.pk == again.pk
    assert Annotation.objects.filter(tracker=tracker).count() == 1
    assert Annotation.objects.get().strategy == card.strategy


def test_unknown_answers_are_rejected(tracker, owner):
    card = game.claim_cards(tracker, owner, n=1)[0]
    with pytest.raises(
        game.LabelRejected, match="'maybe' is not an answer of this tracker; expected one of yes, no or skip"
    ):
        labeling_services.answer_card(tracker, owner, card, "maybe")
    assert not Annotation.objects.exists()


def test_undo_puts_the_card_back(tracker, owner):
    card = game.claim_cards(tracker, owner, n=1)[0]
    labeling_services.answer_card(tracker, owner, card, "no")
    back = game.undo_last(tracker, owner)
    assert back.pk == card.pk and back.answered_at is None
    assert not Annotation.objects.exists()
    assert game.claim_cards(tracker, owner, n=1)[0].pk == card.pk


@pytest.mark.django_db(transaction=True)  # two threads, two connections: answers must really commit
def test_concurrent_labelers_lose_and_duplicate_nothing(tracker, owner, labeler):
    errors = []

    def play(user):
        try:
            while cards := [c for c in game.claim_cards(tracker, user, n=2) if c.round == 1]:
                for card in cards:
                    labeling_services.answer_card(tracker, user, card, oracle(card))
                    labeling_services.answer_card(tracker, user, card, oracle(card))  # and a double press
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=play, args=(u,)) for u in (owner, labeler)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    round1 = tracker.cards.filter(round=1)
    answers = Annotation.objects.filter(tracker=tracker, card__round=1)
    assert answers.count() == round1.count() == 20
    assert answers.values("card").distinct().count() == 20  # each card answered exactly once
    assert {a.annotator_id for a in answers} == {owner.pk, labeler.pk}


def test_finishing_a_round_trains_and_queues_the_next(tracker, owner, django_capture_on_commit_callbacks):
    from unittest import mock

    from trackers import work

    with mock.patch("labeling.services.work.heartbeat", wraps=work.heartbeat) as heartbeat:
        while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == 1]:
            for card in cards:
                # each answer commits: the round's last one queues training, which queues round 2
                with django_capture_on_commit_callbacks(execute=True):
                    labeling_services.answer_card(tracker, owner, card, oracle(card))
    assert heartbeat.call_count >= 2  # training runs tell the sweeper they are alive
    run = TrainingRun.objects.get(tracker=tracker)
    assert run.state == TrainingState.SUCCEEDED, run.error
    assert run.label_counts["yes"] >= 5 and run.label_counts["no"] >= 4
    assert run.metrics["cv"]["f1"] > 0.8 and 0 < run.threshold < 1
    assert len(run.metrics["score_histogram"]) == 20 and run.metrics["pool"] == 116
    round2 = tracker.cards.filter(round=2)
    assert round2.count() == 20
    assert set(round2.values_list("strategy", flat=True)) <= {"uncertain", "positive", "random"}
    assert all(c.training_run_id == run.pk and c.score is not None for c in round2)
    tracker.refresh_from_db()
    assert tracker.last_trained_at is not None


def test_training_is_keyed_by_the_labels(tracker, owner, django_capture_on_commit_callbacks):
    card = game.claim_cards(tracker, owner, n=2)
    labeling_services.answer_card(tracker, owner, card[0], "yes")
    labeling_services.answer_card(tracker, owner, card[1], "no")
    with django_capture_on_commit_callbacks(execute=True):  # the run trains once its row commits
        run, created = training.request_training(tracker)
    assert created
    again, created_again = training.request_training(tracker)
    assert not created_again and again.pk == run.pk
    run.refresh_from_db()
    assert run.state == TrainingState.SUCCEEDED
    train_tracker(work_id=run.pk)  # a redelivered message changes nothing
    assert TrainingRun.objects.filter(tracker=tracker).count() == 1
    card3 = game.claim_cards(tracker, owner, n=1)[0]
    labeling_services.answer_card(tracker, owner, card3, "no")
    assert training.request_training(tracker)[1]  # new labels, new run


def test_a_run_left_by_a_killed_worker_is_taken_over(
    tracker, owner, settings, django_capture_on_commit_callbacks
):
    cards = game.claim_cards(tracker, owner, n=2)
    labeling_services.answer_card(tracker, owner, cards[0], "yes")
    labeling_services.answer_card(tracker, owner, cards[1], "no")
    run = TrainingRun.objects.create(
        tracker=tracker, watermark="w1", state=TrainingState.RUNNING, heartbeat_at=timezone.now()
    )
    train_tracker(work_id=run.pk)
    run.refresh_from_db()
    assert run.state == TrainingState.RUNNING  # a live holder is left alone
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    train_tracker(work_id=run.pk)
    run.refresh_from_db()
    assert run.state == TrainingState.SUCCEEDED and run.head_file


def test_an_all_yes_round_still_leaves_a_next_round_and_says_why(
    tracker, owner, client, django_capture_on_commit_callbacks
):
    """Round 1 answered 'yes' throughout: no model can train, yet the game goes on."""
    round1 = list(tracker.cards.filter(round=1))
    for card in round1:
        with django_capture_on_commit_callbacks(execute=True):  # the last answer's training runs on commit
            labeling_services.answer_card(tracker, owner, card, "yes")
    run = TrainingRun.objects.get(tracker=tracker)
    assert run.state == TrainingState.NEEDS_ANSWERS
    assert run.error == f"all {len(round1)} answers so far are 'yes': training needs at least one 'no'"
    round2 = tracker.cards.filter(round=2)
    assert round2.count() == 20 and not round2.filter(segment__in=[c.segment_id for c in round1]).exists()
    assert {c.strategy for c in round2} <= {"seed_neighbour", "random"}
    # the same answers ask for nothing new; the page and the game say why there is no model
    assert training.request_training(tracker) == (run, False)
    client.force_login(owner)
    for url in (reverse("tracker", args=[tracker.code]), reverse("play", args=[tracker.code])):
        html = client.get(url).content.decode()
        assert "training needs at least one &#x27;no&#x27;" in html and "No cards left" not in html


def test_a_failed_run_still_fills_the_next_round_and_train_now_tries_again(
    tracker, owner, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.WORK_MAX_ATTEMPTS = 2
    for card in tracker.cards.filter(round=1):
        with django_capture_on_commit_callbacks(execute=True):
            labeling_services.answer_card(tracker, owner, card, oracle(card))
    TrainingRun.objects.all().delete()
    tracker.cards.filter(round=2).delete()

    from labeling.ml import loop

    real_train, broken_now = loop.train, [True]

    def broken(*args, **kwargs):
        if broken_now[0]:
            raise MemoryError("the head did not fit")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train", broken)
    with django_capture_on_commit_callbacks(execute=True):
        first, created = training.request_training(tracker)
    first.refresh_from_db()
    assert (
        created and first.state == TrainingState.FAILED and first.error == "MemoryError: the head did not fit"
    )
    assert tracker.cards.filter(round=2).count() == 20  # the fallback round
    with django_capture_on_commit_callbacks(execute=True):
        again, created = training.request_training(tracker)  # "Train now": a new attempt, not the failed run
    again.refresh_from_db()
    assert created and again.pk != first.pk and again.attempt == 2 and again.state == TrainingState.FAILED
    with pytest.raises(training.TrainingRefused, match="training failed 2 times on these answers"):
        training.request_training(tracker)
    broken_now[0] = False
    labeling_services.answer_card(tracker, owner, game.claim_cards(tracker, owner, n=1)[0], "no")
    with django_capture_on_commit_callbacks(execute=True):
        fixed, created = training.request_training(tracker)  # new answers, a fresh start
    fixed.refresh_from_db()
    assert created and fixed.attempt == 1 and fixed.state == TrainingState.SUCCEEDED


def test_examples_found_in_the_data_are_answers_not_cards(embedded, workspace, owner):
    found = "I want to cancel my subscription (0)"  # a text of the corpus, word for word
    tracker = labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Cancels",
        datasets=[embedded],
        seeds=[found, "we want to cancel", "end the contract"],
        round_size=20,
    )
    example = Annotation.objects.get(tracker=tracker)
    assert example.answer == "yes" and example.strategy == "example" and example.segment.text == found
    assert not tracker.cards.filter(segment__text=found).exists()
    assert tracker.seeds.get(text=found).segment_id == example.segment_id


def test_the_sweeper_resends_abandoned_training_runs(tracker, owner, django_capture_on_commit_callbacks):
    from labeling.tasks import sweep_stale_runs

    cards = game.claim_cards(tracker, owner, n=2)
    labeling_services.answer_card(tracker, owner, cards[0], "yes")
    labeling_services.answer_card(tracker, owner, cards[1], "no")
    old = timezone.now() - timedelta(hours=1)
    lost = TrainingRun.objects.create(tracker=tracker, watermark="lost", created_at=old)
    dead = TrainingRun.objects.create(
        tracker=tracker, watermark="dead", state=TrainingState.RUNNING, heartbeat_at=old
    )
    fresh = TrainingRun.objects.create(tracker=tracker, watermark="fresh")
    with django_capture_on_commit_callbacks(execute=True):  # the resent runs train once requeued
        swept = sweep_stale_runs()
    assert sorted(swept["requeued"]) == sorted([lost.pk, dead.pk])
    for run in (lost, dead, fresh):
        run.refresh_from_db()
    assert lost.state == dead.state == TrainingState.SUCCEEDED and fresh.state == TrainingState.QUEUED
