"""Topic trackers: one of N labels, a multinomial head, a button per label, per-label quality."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import TestCase
from django.urls import reverse

from labeling import game, progress
from labeling import services as labeling_services
from labeling.ml.estimates import TopicEvidence, topic_estimates
from labeling.ml.selection import topic_round
from labeling.ml.training import (
    REGULARISATION_C,
    load_scorer,
    save_scorer,
    topic_scorer_of,
    train_topic,
)
from labeling.models import Annotation, TrainingState
from trackers import definitions, imports
from trackers.models import Segment, TrackerKind

LABELS = ["billing", "cancellation", "technical"]
TOPICS = {
    "billing": [
        "my invoice shows the wrong amount",
        "why was my card charged twice",
        "please send a receipt for the payment",
        "the bill is higher than last month",
    ],
    "cancellation": [
        "I want to cancel my subscription",
        "please close our account for good",
        "we will not renew the contract",
        "stop the plan at the end of the month",
    ],
    "technical": [
        "the app crashes when I log in",
        "the export button throws an error",
        "sync fails with a timeout",
        "the page will not load on my phone",
    ],
}
SEEDS = [
    ("billing", "I was charged twice on my invoice"),
    ("cancellation", "cancel my subscription please"),
    ("technical", "the app keeps crashing"),
]


def topic_of(text: str) -> str:
    return next(label for label, texts in TOPICS.items() if any(text.startswith(t) for t in texts))


def topic_corpus() -> bytes:
    rows = [f"{t} ({i})" for i in range(8) for texts in TOPICS.values() for t in texts]
    return ("text\n" + "\n".join(rows) + "\n").encode()


def clusters(rng, n_per: int = 40, dim: int = 16, k: int = 3):
    centres = np.eye(dim, dtype=np.float32)[:k] * 3
    x = np.vstack([c + rng.normal(0, 0.6, (n_per, dim)) for c in centres]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.repeat(np.arange(k), n_per)


def test_topic_head_learns_separable_topics_and_reports_per_label():
    x, y = clusters(np.random.default_rng(0))
    head = train_topic(x, y, LABELS)
    assert head.model.C == REGULARISATION_C  # the concept heads' regularisation (C=1 over-shrinks)
    assert head.cv["accuracy"] > 0.95 and head.cv["f1"] > 0.95
    assert [p["label"] for p in head.cv["per_label"]] == LABELS
    confusion = np.array(head.cv["confusion"])
    assert confusion.sum() == len(y) and np.trace(confusion) >= 0.95 * len(y)


def test_stored_topic_scorer_matches_the_model(tmp_path):
    x, y = clusters(np.random.default_rng(1))
    head = train_topic(x, y, LABELS)
    scorer = topic_scorer_of(head)
    save_scorer(scorer, tmp_path / "head.npz")
    loaded = load_scorer(tmp_path / "head.npz")
    assert loaded.is_topic and loaded.labels == LABELS
    np.testing.assert_allclose(loaded.probabilities(x), head.model.predict_proba(x), atol=1e-4)


def test_a_label_without_answers_is_never_predicted():
    x, y = clusters(np.random.default_rng(2), k=2)  # nobody has answered "technical" yet
    head = train_topic(x, y, LABELS)
    proba = topic_scorer_of(head).probabilities(x)
    assert proba.shape == (len(x), 3) and proba[:, 2].max() < 1e-6
    np.testing.assert_allclose(proba[:, :2], head.model.predict_proba(x), atol=1e-4)


def test_topic_training_needs_two_labels():
    with pytest.raises(ValueError, match="at least two labels"):
        train_topic(np.eye(4, dtype=np.float32), np.zeros(4, dtype=np.int64), LABELS)


def test_topic_round_asks_about_small_margins_and_confirms_every_label():
    rng = np.random.default_rng(0)
    n = 300
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    proba = np.full((n, 3), 0.05)
    winner = np.arange(n) % 3
    proba[np.arange(n), winner] = 0.9
    proba[:10] = [0.45, 0.44, 0.11]  # ten texts where the model hesitates between two labels
    picks = topic_round(vectors, proba, size=20, rng=rng)
    by = {}
    for p in picks:
        by.setdefault(p.strategy, []).append(p.index)
    assert len(picks) == 20 and len({p.index for p in picks}) == 20
    assert set(range(10)) <= set(by["uncertain"])  # every hesitant text is asked first
    assert {int(winner[i]) for i in by["positive"]} == {0, 1, 2}
    assert "random" in by


def test_topic_estimates_count_answers_exactly_and_sample_the_rest():
    evidence = TopicEvidence(
        answered_predicted=np.array([0, 1, 2, 2]),
        answered_oof=np.array([0, 1, 1, 2]),
        answered_y=np.array([0, 1, 2, 2]),
        answered_strategy=np.array(["random", "random", "random", "uncertain"]),
        unanswered_predicted=np.array([0, 0, 1, 3, 3, 3]),
    )
    est = topic_estimates(evidence, [*LABELS, "none"])
    lo, hi = est["accuracy"]["ci"]
    assert lo < est["accuracy"]["value"] < hi and 4 / 10 <= hi <= 1.0
    # how the data divides: answers where given, predictions elsewhere, "none" included
    assert [s["predicted"] for s in est["shares"]] == [3, 2, 2, 3]
    assert est["strata"] == {"answered": 4, "unanswered": 6, "sampled": 3}


# --- through the services and pages, on PostgreSQL ------------------------------------------

pytestmark_db = pytest.mark.django_db
# The helpers below run what a real commit would (queued import and training tasks, eager here) with
# TestCase.captureOnCommitCallbacks, the same context the django_capture_on_commit_callbacks fixture gives.


def ticket_topic_tracker(dataset, owner, workspace, *, round_size: int = 12):
    """The three-label ticket tracker over the ticket corpus (imported into ``dataset`` here)."""
    with TestCase.captureOnCommitCallbacks(execute=True):  # import, embed and index run on commit
        imports.start_import(dataset=dataset, user=owner, filename="tickets.csv", data=topic_corpus())
    dataset.refresh_from_db()
    return labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Ticket topic",
        kind=TrackerKind.TOPIC,
        labels=LABELS,
        datasets=[dataset],
        seeds=SEEDS,
        round_size=round_size,
    )


@pytest.fixture
def topic_tracker(dataset, owner, workspace):
    return ticket_topic_tracker(dataset, owner, workspace)


def play_round(tracker, user, answer_of=lambda card: topic_of(card.segment.text)) -> int:
    """Answer the current round with ``answer_of(card)``; training (eager in tests) queues the next."""
    answered, round_no = 0, game.current_round(tracker)
    while (cards := game.claim_cards(tracker, user, n=1)) and cards[0].round == round_no:
        with TestCase.captureOnCommitCallbacks(execute=True):  # the round's last answer trains on commit
            labeling_services.answer_card(tracker, user, cards[0], answer_of(cards[0]))
        answered += 1
    return answered


@pytestmark_db
@pytest.mark.parametrize(
    ("labels", "seeds", "error"),
    [
        (["billing"], SEEDS[:1] * 3, r"needs 2 to 9 labels \(got 1\)"),
        ([f"l{i}" for i in range(10)], SEEDS, r"needs 2 to 9 labels \(got 10\)"),
        (["billing", "Billing"], SEEDS, "label 'Billing' is given twice"),
        (["billing", "skip"], SEEDS, "'skip' is reserved"),
        (["billing", "None"], SEEDS, "'None' is reserved"),
        (LABELS, [*SEEDS, ("refunds", "money back")], "example label 'refunds' is not one of the labels"),
        (LABELS, SEEDS[:2] + [("billing", "another bill")], "'technical' has none"),
        (LABELS, ["a sentence without a label", *SEEDS], "topic examples need a label"),
    ],
)
def test_topic_trackers_check_labels_and_examples(
    workspace, owner, dataset, labels, seeds, error, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="tickets.csv", data=topic_corpus())
    dataset.refresh_from_db()
    with pytest.raises(definitions.TrackerInvalid, match=error):
        labeling_services.create_tracker(
            workspace=workspace,
            user=owner,
            name="Ticket topic",
            kind=TrackerKind.TOPIC,
            labels=labels,
            datasets=[dataset],
            seeds=seeds,
        )
    assert not workspace.trackers.exists()


@pytestmark_db
def test_topic_rounds_train_a_multinomial_head(topic_tracker, owner):
    assert topic_tracker.answers == [*LABELS, "none"]
    assert set(topic_tracker.seeds.values_list("label", flat=True)) == set(LABELS)
    with pytest.raises(game.LabelRejected, match="expected one of billing, cancellation, technical"):
        card = game.claim_cards(topic_tracker, owner, n=1)[0]
        game.record_label(topic_tracker, owner, segment=card.segment, answer="yes", card=card)
    for _ in range(3):
        assert play_round(topic_tracker, owner) == 12
    runs = progress.runs(topic_tracker)
    assert len(runs) == 3 and all(r.state == TrainingState.SUCCEEDED for r in runs)
    latest = runs[-1]
    assert sum(latest.label_counts[label] for label in LABELS) == 36
    # the confusion matrix and how the data divides have a row for "none" (nobody answered it here)
    assert latest.metrics["cv"]["f1"] > 0.6 and len(latest.metrics["cv"]["confusion"]) == 4
    assert sum(latest.metrics["predicted_counts"]) == latest.metrics["pool"]
    assert latest.metrics["predicted_counts"][3] == 0
    assert {row[2] for row in latest.metrics["top_unlabeled"]} <= set(LABELS)
    later = topic_tracker.cards.filter(round=4)
    assert later.count() == 12 and later.filter(strategy="uncertain").exists()
    # the head predicts held-in texts right: every answer's topic comes out on top
    scorer = load_scorer(latest.head_file)
    pool = game.build_pool(topic_tracker)
    predicted = np.argmax(scorer.probabilities(pool.vectors), axis=1)
    truth = np.array([LABELS.index(topic_of(t)) for t in pool.texts])
    assert np.mean(predicted == truth) > 0.6  # chance is 1/3; the real encoder is tested below
    counts = progress.label_counts(topic_tracker)
    assert [a for a, _ in counts["per_answer"]] == [*LABELS, "none"] and counts["answered"] == 36


@pytestmark_db
def test_none_of_these_trains_a_class_of_its_own(owner_client, topic_tracker, owner):
    """Answering "none" (key 0) for every technical ticket: "none" becomes a class the head predicts."""

    def billing_or_cancellation(card) -> str:
        topic = topic_of(card.segment.text)
        return "none" if topic == "technical" else topic

    html = owner_client.get(reverse("play", args=[topic_tracker.code])).content.decode()
    assert 'value="none" data-key="0"' in html
    for _ in range(3):
        play_round(topic_tracker, owner, billing_or_cancellation)
    latest = progress.runs(topic_tracker)[-1]
    assert latest.label_counts["none"] > 0 and latest.metrics["classes"] == [*LABELS, "none"]
    confusion = np.array(latest.metrics["cv"]["confusion"])
    assert confusion.shape == (4, 4) and confusion[3].sum() == latest.label_counts["none"]
    assert confusion[3, 3] > 0
    # a text may be predicted "none": the technical tickets nobody answered mostly are
    scorer = load_scorer(latest.head_file)
    pool = game.build_pool(topic_tracker)
    predicted = np.argmax(scorer.probabilities(pool.vectors), axis=1)
    technical = [i for i, t in enumerate(pool.texts) if topic_of(t) == "technical"]
    assert np.mean(predicted[technical] == 3) > 0.6
    assert latest.metrics["predicted_counts"][3] >= len(technical) // 2
    page = owner_client.get(reverse("tracker", args=[topic_tracker.code])).content.decode()
    assert "<th>none</th>" in page and "(and “none”)" in page


@pytestmark_db
def test_topic_game_and_pages(owner_client, topic_tracker, owner):
    html = owner_client.get(reverse("play", args=[topic_tracker.code])).content.decode()
    for i, label in enumerate(LABELS, 1):
        assert f'value="{label}" data-key="{i}"' in html
    assert 'value="yes"' not in html and "Which label fits" in html
    card = game.claim_cards(topic_tracker, owner, n=1)[0]
    wrong = owner_client.post(reverse("answer", args=[topic_tracker.code]), {"card": card.pk, "answer": "no"})
    assert wrong.status_code == 400
    ok = owner_client.post(
        reverse("answer", args=[topic_tracker.code]),
        {"card": card.pk, "answer": topic_of(card.segment.text)},
        HTTP_HX_REQUEST="true",
    )
    assert ok.status_code == 200
    assert Annotation.objects.get(tracker=topic_tracker).answer == topic_of(card.segment.text)
    play_round(topic_tracker, owner)
    page = owner_client.get(reverse("tracker", args=[topic_tracker.code])).content.decode()
    # per-label charts once every answered label has two answers to cross-validate; a note before
    cv = progress.runs(topic_tracker)[-1].metrics["cv"]
    shown = ["F1 per label", "Confusion"] if cv else ["Cross-validation needs at least two answers"]
    assert all(s in page for s in shown) and "accuracy, all texts" in page
    assert page.index('id="cv-macro-f1"') < page.index('id="est-accuracy"')  # macro-F1 comes first
    assert "Precision / recall trade-off" not in page
    # the next round's cards say which label the model predicts
    nxt = [c for c in topic_tracker.cards.filter(answered_at__isnull=True) if c.training_run_id]
    assert nxt and all(c.label in [*LABELS, "none"] for c in nxt)
    html = owner_client.get(reverse("play", args=[topic_tracker.code])).content.decode()
    assert "the model says “" in html
    listing = owner_client.get(reverse("trackers", args=[topic_tracker.workspace.code])).content.decode()
    assert "topic · segment" in listing


@pytestmark_db
def test_topic_tracker_through_the_form(
    owner_client, workspace, dataset, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="tickets.csv", data=topic_corpus())
    url = reverse("tracker-create", args=[workspace.code])
    form = {
        "name": "Ticket topic",
        "kind": "topic",
        "labels": "billing, cancellation, technical",
        "datasets": [dataset.pk],
        "target_precision": 0.8,
        "round_size": 10,
    }
    bad = owner_client.post(url, {**form, "seeds": "billing: charged twice\nno label here"})
    assert bad.status_code == 422 and "example line 2: write it as" in bad.content.decode()
    ok = owner_client.post(
        url,
        {**form, "seeds": "billing: charged twice\ncancellation: close my account\ntechnical: app crashes"},
    )
    tracker = workspace.trackers.get()
    assert ok.status_code == 302 and tracker.kind == "topic" and tracker.labels == LABELS
    assert sorted(tracker.seeds.values_list("label", "text")) == [
        ("billing", "charged twice"),
        ("cancellation", "close my account"),
        ("technical", "app crashes"),
    ]


@pytestmark_db
def test_topic_tracker_through_the_api(client, workspace, dataset, owner, django_capture_on_commit_callbacks):
    from serving.models import ApiKey

    with django_capture_on_commit_callbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="tickets.csv", data=topic_corpus())
    _, raw = ApiKey.issue(workspace=workspace, name="ci", created_by=owner)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    url = f"/api/workspaces/{workspace.code}/trackers"
    body = {
        "name": "Ticket topic",
        "kind": "topic",
        "labels": LABELS,
        "datasets": [str(dataset.code)],
        "seeds": [{"label": label, "text": text} for label, text in SEEDS],
        "round_size": 10,
    }
    bad = client.post(
        url, {**body, "seeds": ["no label", *body["seeds"]]}, content_type="application/json", **headers
    )
    assert bad.status_code == 422 and "topic examples need a label" in bad.json()["detail"]
    made = client.post(url, body, content_type="application/json", **headers)
    assert made.status_code == 201, made.content
    out = made.json()
    assert out["kind"] == "topic" and out["answers"] == [*LABELS, "none"] and out["labels"] == LABELS
    code = out["code"]
    cards = client.post(f"/api/trackers/{code}/cards?n=1", **headers).json()
    text = cards[0]["text"]
    sent = client.post(
        f"/api/trackers/{code}/labels",
        {"card": cards[0]["id"], "answer": topic_of(text)},
        content_type="application/json",
        **headers,
    )
    assert sent.status_code == 201
    status = client.get(f"/api/trackers/{code}", **headers).json()
    assert status["label_counts"]["answered"] == 1


@pytestmark_db
@pytest.mark.real_encoder
def test_topic_tracker_learns_banking_intents_with_the_real_encoder(
    workspace, owner, dataset, django_capture_on_commit_callbacks
):
    import csv

    from django.core.management import call_command

    from tests.conftest import shared_file

    call_command("prepare_encoder")  # a no-op once exported
    intents = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "pin_blocked"]
    rows, seen = [], dict.fromkeys(intents, 0)
    for r in csv.DictReader(open(shared_file("banking77", "dev.csv"), newline="", encoding="utf-8")):
        if r["label"] in intents and seen[r["label"]] < 80:
            seen[r["label"]] += 1
            rows.append(r)
    data = "text,label\n" + "".join(
        f'"{r["text"].replace(chr(34), chr(34) * 2)}",{r["label"]}\n' for r in rows
    )
    with django_capture_on_commit_callbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="b77.csv", data=data.encode())
    dataset.refresh_from_db()
    tracker = labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Card questions",
        kind=TrackerKind.TOPIC,
        labels=intents,
        datasets=[dataset],
        seeds=[
            ("card_arrival", "when will my new card be delivered"),
            ("exchange_rate", "what rate do you use to convert currency"),
            ("lost_or_stolen_card", "someone stole my card"),
            ("pin_blocked", "my pin is blocked after too many tries"),
        ],
        round_size=20,
    )
    for _ in range(3):
        play_round(tracker, owner, lambda card: card.segment.known_label)
    latest = progress.runs(tracker)[-1]
    scorer = load_scorer(latest.head_file)
    pool = game.build_pool(tracker)
    truth = dict(Segment.objects.filter(dataset=dataset).values_list("vector_row", "known_label"))
    predicted = np.argmax(scorer.probabilities(pool.vectors), axis=1)
    accuracy = np.mean([intents[p] == truth[row] for p, (_, row) in zip(predicted, pool.keys, strict=True)])
    assert accuracy > 0.85, accuracy  # 60 answers over 320 texts; chance is 1/4
    assert latest.metrics["cv"]["f1"] > 0.8


def test_topic_simulation_reports_macro_f1_per_round():
    from labeling.ml.simulation import SimulationSpec, simulate

    x, y = clusters(np.random.default_rng(4), n_per=200)
    spec = SimulationSpec(repeats=2, rounds=3, round_size=10)
    ours = simulate(x, y, spec, "ours", topic_labels=LABELS)
    rand = simulate(x, y, spec, "random", topic_labels=LABELS)
    assert [p["labels"] for p in ours["curve"]] == [15, 25, 35]  # 5 seeds spread over the labels, then rounds
    assert ours["f1_mean"] > 0.9 and rand["f1_mean"] > 0.9  # separable topics: both learn them


def test_accuracy_close_to_always_answering_the_largest_label_is_flagged():
    from types import SimpleNamespace

    from labeling.progress import _majority

    mostly_none = SimpleNamespace(label_counts={"billing": 3, "outage": 2, "none": 45, "skip": 4})
    assert _majority(mostly_none, 0.91) == {
        "majority_label": "none",
        "majority_share": 0.9,
        "accuracy_near_majority": True,
    }
    assert not _majority(mostly_none, 0.95)["accuracy_near_majority"]
    assert _majority(SimpleNamespace(label_counts={}), None)["majority_label"] is None
