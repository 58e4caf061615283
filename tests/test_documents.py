"""Document trackers: whole calls are the cards, their vectors come from their segments."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.test import TestCase
from django.urls import reverse

from labeling import game, progress
from labeling import services as labeling_services
from labeling.models import Annotation, TrainingState
from tests.factories import DatasetFactory, MembershipFactory, WorkspaceFactory
from tests.test_topics import play_round
from trackers import imports
from trackers.models import Document, Granularity, Role, Segment

pytestmark = pytest.mark.django_db

SMALL_TALK = [
    "hi thanks for calling how can I help",
    "good morning how is the weather there",
    "let me pull up your account",
    "thanks for your patience",
    "is there anything else today",
]
CANCEL_LINES = [
    "I want to cancel my subscription",
    "please cancel the contract before it renews",
    "we are going to cancel the service",
]
OTHER_LINES = [
    "the dashboard export is slow",
    "can you add two more seats",
    "the invoice address needs changing",
]


def calls() -> bytes:
    """Thirty calls; a third of them contain one cancellation line among small talk."""
    rows = []
    for i in range(30):
        about = CANCEL_LINES if i % 3 == 0 else OTHER_LINES
        turns = [
            {"speaker": "agent", "text": f"{SMALL_TALK[i % 5]} ({i})"},
            {"speaker": "customer", "text": f"{about[(i // 3) % 3]} ({i})"},
            {"speaker": "agent", "text": f"{SMALL_TALK[(i + 1) % 5]} ({i})"},
            {"speaker": "customer", "text": f"{SMALL_TALK[(i + 2) % 5]} ({i})"},
        ]
        title = f"{'cancel' if i % 3 == 0 else 'other'} call {i}"
        rows.append(json.dumps({"id": f"call-{i}", "title": title, "turns": turns}))
    return ("\n".join(rows) + "\n").encode()


def is_cancel(document: Document) -> bool:
    return document.title.startswith("cancel")


def calls_tracker(dataset, owner, workspace, *, speaker_filter: str = ""):
    """A document tracker of cancellation calls over ``calls()``, imported into ``dataset`` here."""
    with TestCase.captureOnCommitCallbacks(execute=True):  # import, embed and index run on commit
        imports.start_import(dataset=dataset, user=owner, filename="calls.jsonl", data=calls())
    dataset.refresh_from_db()
    return labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Cancellation calls",
        granularity=Granularity.DOCUMENT,
        speaker_filter=speaker_filter,
        datasets=[dataset],
        seeds=[
            "I want to cancel my subscription",
            "please cancel the contract",
            "going to cancel the service",
        ],
        round_size=10,
    )


@pytest.fixture
def doc_tracker(dataset, owner, workspace):
    return calls_tracker(dataset, owner, workspace)


def test_the_pool_has_one_entry_per_document_with_the_mean_of_its_lines(doc_tracker, fake_encoder):
    pool = game.build_pool(doc_tracker)
    docs = list(Document.objects.filter(dataset__in=doc_tracker.datasets.all()).order_by("pk"))
    assert pool.keys == [d.pk for d in docs]
    first = docs[0]
    lines = list(Segment.objects.filter(document=first).order_by("position"))
    assert pool.segment_ids[0] == lines[0].pk  # the card of a document is anchored on its first line
    mean = fake_encoder.encode([s.text for s in lines]).mean(axis=0)
    np.testing.assert_allclose(pool.vectors[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert len(pool.member_of) == Segment.objects.filter(dataset__in=doc_tracker.datasets.all()).count()


def test_first_round_finds_documents_by_their_closest_line(doc_tracker):
    cards = list(doc_tracker.cards.select_related("segment__document"))
    assert len(cards) == 10 and len({c.segment.document_id for c in cards}) == 10
    near = [c for c in cards if c.strategy == "seed_neighbour"]
    assert near and all(is_cancel(c.segment.document) for c in near)


def test_a_selection_seed_repeats_every_round_from_the_same_answers(owner, settings):
    """TRACKERS_SELECTION_SEED fixes the random part of each round: the same answers, the same cards."""

    def rounds(name: str, seed: int) -> list[list[str]]:
        settings.SELECTION_SEED = seed
        workspace = WorkspaceFactory(name=name)
        MembershipFactory(workspace=workspace, user=owner, role=Role.OWNER)
        tracker = calls_tracker(DatasetFactory(workspace=workspace, name="Calls"), owner, workspace)
        titles = [sorted(c.segment.document.title for c in tracker.cards.select_related("segment__document"))]
        for round_no in (1, 2):
            play_round(tracker, owner, lambda card: "yes" if is_cancel(card.segment.document) else "no")
            cards = tracker.cards.filter(round=round_no + 1).select_related("segment__document")
            titles.append(sorted(c.segment.document.title for c in cards))
        return titles

    first, again, other = rounds("A", 7), rounds("B", 7), rounds("C", 8)
    assert all(first) and first == again
    assert first != other  # another seed draws other random cards


def test_speaker_filter_builds_document_vectors_from_that_speaker_only(dataset, owner, workspace):
    tracker = calls_tracker(dataset, owner, workspace, speaker_filter="customer")
    pool = game.build_pool(tracker)
    assert len(pool.keys) == 30 and len(pool.member_of) == 60  # two customer lines per call


def test_document_rounds_train_on_document_vectors(doc_tracker, owner):
    given = sum(
        play_round(doc_tracker, owner, lambda card: "yes" if is_cancel(card.segment.document) else "no")
        for _ in range(3)
    )
    runs = progress.runs(doc_tracker)
    assert len(runs) == 3 and runs[-1].state == TrainingState.SUCCEEDED
    latest = runs[-1]
    assert latest.featurizer == "embedding"  # documents use the vectors alone
    assert latest.label_counts["yes"] + latest.label_counts["no"] == given >= 27
    assert latest.metrics["pool"] == 30 and latest.metrics["cv"]["f1"] >= 0.7
    assert set(game.labeled_keys(doc_tracker)) == set(
        Annotation.objects.filter(tracker=doc_tracker).values_list("segment__document_id", flat=True)
    )


def test_the_game_shows_a_documents_key_lines(owner_client, doc_tracker, owner):
    card = game.claim_cards(doc_tracker, owner, n=1)[0]
    doc = card.segment.document
    html = owner_client.get(reverse("play", args=[doc_tracker.code])).content.decode()
    assert doc.title in html and "Whole document" in html
    key_block = html.split('aria-label="Key lines"')[1].split("</ul>")[0]
    assert is_cancel(doc)  # the first card is the seeds' nearest call
    cancel_line = Segment.objects.get(document=doc, position=1)
    assert cancel_line.text in key_block  # the line that makes it a match is the key line
    assert key_block.count("<li") == 1  # four lines: one key line
    for line in Segment.objects.filter(document=doc):
        assert line.text in html


def test_the_labels_page_lists_documents(owner_client, doc_tracker, owner):
    card = game.claim_cards(doc_tracker, owner, n=1)[0]
    labeling_services.answer_card(doc_tracker, owner, card, "yes")
    title = card.segment.document.title
    html = owner_client.get(reverse("labels", args=[doc_tracker.code]), {"q": title}).content.decode()
    assert "<th>Document</th>" in html and f"<strong>{title}</strong>" in html
    none = owner_client.get(
        reverse("labels", args=[doc_tracker.code]), {"q": "no such call"}
    ).content.decode()
    assert "No answers match." in none
