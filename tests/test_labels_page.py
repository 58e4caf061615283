"""The labels page: filter, change an answer, and settle disagreements between labelers."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labeling import game
from labeling.models import Annotation
from tests.factories import MembershipFactory, UserFactory
from tests.test_game import cancel_tracker, corpus
from trackers import imports
from trackers.models import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(dataset, owner, workspace, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # import, embed and index run on commit
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset, round_size=6)
    lara = MembershipFactory(workspace=workspace, user=UserFactory(username="lara"), role=Role.LABELER).user
    cards = list(tracker.cards.select_related("segment")[:3])
    game.record_label(tracker, owner, segment=cards[0].segment, answer="yes", card=cards[0])
    game.record_label(tracker, lara, segment=cards[0].segment, answer="no", card=cards[0])  # a disagreement
    game.record_label(tracker, owner, segment=cards[1].segment, answer="no", card=cards[1])
    game.record_label(tracker, lara, segment=cards[2].segment, answer="skip", card=cards[2])
    return tracker, lara, cards


def test_filters(owner_client, setup):
    tracker, lara, cards = setup
    url = reverse("labels", args=[tracker.code])
    assert len(owner_client.get(url).context["page"]) == 4
    assert [a.answer for a in owner_client.get(url, {"answer": "skip"}).context["page"]] == ["skip"]
    assert {a.annotator.username for a in owner_client.get(url, {"labeler": "lara"}).context["page"]} == {
        "lara"
    }
    text = cards[1].segment.text
    assert [a.segment.text for a in owner_client.get(url, {"q": text}).context["page"]] == [text]
    dis = owner_client.get(url, {"disagreements": "1"})
    assert dis.context["n_disagreements"] == 1
    assert {a.segment_id for a in dis.context["page"]} == {cards[0].segment_id}


def test_change_an_answer(owner_client, setup):
    tracker, lara, cards = setup
    a = Annotation.objects.get(tracker=tracker, segment=cards[1].segment)
    owner_client.post(reverse("labels", args=[tracker.code]), {"annotation": a.pk, "answer": "yes"})
    a.refresh_from_db()
    assert a.answer == "yes"


def test_labelers_change_only_their_own(client, setup):
    tracker, lara, cards = setup
    client.force_login(lara)
    owners = Annotation.objects.get(tracker=tracker, segment=cards[1].segment)
    assert (
        client.post(
            reverse("labels", args=[tracker.code]), {"annotation": owners.pk, "answer": "yes"}
        ).status_code
        == 404
    )
    owners.refresh_from_db()
    assert owners.answer == "no"


def test_settle_a_disagreement(owner_client, setup):
    tracker, lara, cards = setup
    owner_client.post(
        reverse("labels", args=[tracker.code]),
        {"action": "resolve", "segment": cards[0].segment_id, "answer": "yes"},
    )
    assert set(
        Annotation.objects.filter(tracker=tracker, segment=cards[0].segment).values_list("answer", flat=True)
    ) == {"yes"}
    assert game.disagreements(tracker).count() == 0
