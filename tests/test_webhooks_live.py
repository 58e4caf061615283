"""Webhook alerts through real worker processes, a real receiver on loopback and Redis: signed events
verified with standardwebhooks, every one of 200 events delivered although the worker is killed -9
midway, and a call file imported into a workspace with a live tracker alerted with no other step."""

from __future__ import annotations

import json
import signal
import time

import pytest
from django.db import transaction
from standardwebhooks import Webhook

from labeling import game
from labeling import services as labeling_services
from serving import matches
from serving.models import ModelVersion, ScoringJob, WebhookDelivery
from serving.versions import services
from serving.webhooks import fanout
from serving.webhooks import services as webhooks
from tests.receiver import Answer, receiving
from tests.test_game import cancel_tracker, corpus, oracle
from tests.test_worker import jobs_done
from tests.workers import start_worker, stop_worker, wait_for
from trackers import imports
from trackers.models import WorkState

pytestmark = [pytest.mark.real_worker, pytest.mark.django_db(transaction=True)]

FAST = {
    "TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS": "1",  # the receiver is on loopback
    "TRACKERS_WEBHOOK_DISPATCH_SECONDS": "1",
    "TRACKERS_WEBHOOK_RETRY_SCHEDULE": "0,1,1,1,1,1,1,1",
    "TRACKERS_JOB_STALE_SECONDS": "4",
    "TRACKERS_WEBHOOK_STALE_SECONDS": "4",  # a killed worker's attempts are taken over in seconds
}


def live_tracker(dataset, workspace, owner, log):
    """The cancel tracker trained by the worker until its first version is live."""
    imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    wait_for(lambda: jobs_done(dataset), 180, "import, embed and index jobs", log)
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset, round_size=10)
    while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == 1]:
        for card in cards:
            labeling_services.answer_card(tracker, owner, card, oracle(card))
    wait_for(
        lambda: ModelVersion.objects.filter(tracker=tracker, is_live=True).exists(),
        120,
        "the first model version to go live",
        log,
    )
    return tracker


def test_a_worker_delivers_signed_events_and_a_kill_9_midway_through_200_loses_none(
    env, dataset, workspace, owner, tmp_path, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    log = tmp_path / "worker.log"
    env = {**env, **FAST}
    trainer = start_worker(env, log, queues="interactive,bulk")
    try:
        tracker = live_tracker(dataset, workspace, owner, log)
    finally:
        stop_worker(trainer)
    version = services.live_version(tracker)
    with receiving(Answer(200, delay=0.03)) as r:
        endpoint, secret = webhooks.create_endpoint(tracker=tracker, url=r.url, user=owner)
        hits = [matches.Hit(score=0.99, label="yes", text=f"please cancel account {i}") for i in range(200)]
        with transaction.atomic():  # queued to Redis when this commits
            made = fanout.alert(version, hits, source="api", endpoints=[endpoint])
        events = {d.event.webhook_id for d in made}
        assert len(made) == len(events) == 200
        worker = start_worker(env, log, queues="webhooks", beat=True)
        try:
            wait_for(lambda: len(r.received) >= 40, 120, "the first 40 deliveries", log)
        finally:
            stop_worker(worker, signal.SIGKILL)  # the whole process group, mid-delivery
        at_kill = len(set(r.ids()))
        assert at_kill < 200, "the kill came after every delivery: nothing was tested"
        worker = start_worker(env, log, queues="webhooks", beat=True)
        try:
            wait_for(lambda: events <= set(r.ids()), 180, "every event to arrive after the restart", log)
            wait_for(
                lambda: (
                    WebhookDelivery.objects.filter(endpoint=endpoint, state=WorkState.SUCCEEDED).count()
                    == 200
                ),
                60,
                "every delivery to be recorded as delivered",
                log,
            )
        finally:
            stop_worker(worker)
        for got in r.received:
            payload = Webhook(secret).verify(got.body, got.headers)  # signed, and fresh
            assert payload["type"] == "tracker.match" and payload["id"] == got.headers["webhook-id"]
    assert set(r.ids()) == events  # every one delivered at least once, none invented
    print(f"killed after {at_kill} distinct events; {len(r.received) - 200} delivered twice")


def test_an_imported_call_is_scored_by_the_live_tracker_and_alerted_with_no_other_step(
    env, dataset, workspace, owner, tmp_path, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    log = tmp_path / "worker.log"
    worker = start_worker({**env, **FAST}, log, queues="interactive,bulk,webhooks")
    try:
        tracker = live_tracker(dataset, workspace, owner, log)
        with receiving() as r:
            endpoint, secret = webhooks.create_endpoint(
                tracker=tracker, url=r.url, user=owner, grouping="document"
            )
            call = {
                "id": "call-42",
                "title": "Renewal call with Globex",
                "account": "Globex",
                "turns": [
                    {"speaker": "agent", "text": "thanks for calling, how can I help"},
                    {
                        "speaker": "customer",
                        "text": "we want to cancel the subscription at the end of the month",
                    },
                    {"speaker": "agent", "text": "I am sorry to hear that"},
                ],
            }
            imports.start_import(
                dataset=dataset, user=owner, filename="calls.jsonl", data=(json.dumps(call) + "\n").encode()
            )
            wait_for(lambda: r.received, 120, "the alert for the imported call", log)
            got = r.received[0]
            payload = Webhook(secret).verify(got.body, got.headers)
        data = payload["data"]
        assert data["source"] == "import" and data["tracker"]["id"] == str(tracker.code)
        assert (
            data["document"]["external_id"] == "call-42"
            and data["document"]["title"] == "Renewal call with Globex"
        )
        assert data["document"]["metadata"] == {"account": "Globex"}
        assert [m["text"] for m in data["matches"]] == [call["turns"][1]["text"]]
        assert data["matches"][0]["speaker"] == "customer" and data["matches"][0]["position"] == 1
        job = ScoringJob.objects.get(source="import")
        assert job.state == WorkState.SUCCEEDED and job.total == 3  # only the imported call's lines
    finally:
        stop_worker(worker)


def test_a_dead_receiver_does_not_hold_up_prediction(
    env, dataset, workspace, owner, tmp_path, settings, client, key
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    log = tmp_path / "worker.log"
    worker = start_worker({**env, **FAST}, log, queues="interactive,bulk,webhooks")
    try:
        tracker = live_tracker(dataset, workspace, owner, log)
        with receiving(Answer(200, delay=30)) as r:  # answers after the delivery timeout
            webhooks.create_endpoint(tracker=tracker, url=r.url, user=owner, from_api=True)
            url = f"/api/v1/trackers/{tracker.code}/predict"
            for i in range(5):
                started = time.monotonic()
                response = client.post(
                    url,
                    {"texts": [f"cancel my subscription now ({i})"]},
                    content_type="application/json",
                    headers=key,
                )
                assert response.status_code == 200 and response.json()["results"][0]["match"]
                assert time.monotonic() - started < 5  # the receiver holds each delivery for 15 s
            wait_for(lambda: len(r.received) >= 1, 60, "the worker to reach the slow receiver", log)
            # Prediction answered every request while the receiver held the worker's delivery.
            assert (
                WebhookDelivery.objects.filter(state__in=[WorkState.QUEUED, WorkState.RUNNING]).count() >= 4
            )
    finally:
        stop_worker(worker)
