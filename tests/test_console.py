"""The console: traffic per tracker counted off the request path and stored per minute, alerts,
queues, workers, failed work with Retry, storage and health; a workspace's for its owners and
admins, the install's for staff."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling.models import TrainingRun
from serving import traffic
from serving.models import TrafficMinute
from tests.test_versions import predict
from trackers import health
from trackers.models import AuditAction, AuditEntry, WorkState

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_traffic(broker):
    """Traffic goes through this run's Redis keys; nothing of an earlier test is left waiting."""
    traffic._reset_after_fork()
    yield
    traffic._reset_after_fork()


def test_latency_buckets_and_percentiles():
    assert traffic.bucket_of(0.0001) == 0
    for seconds in (0.0004, 0.003, 0.0125, 0.2, 4.0):
        k = traffic.bucket_of(seconds)
        assert traffic.bucket_upper_ms(k - 1) < seconds * 1000 <= traffic.bucket_upper_ms(k) * 1.0000001
    histogram = {str(traffic.bucket_of(0.002)): 98, str(traffic.bucket_of(0.050)): 2}
    assert traffic.percentile(histogram, 0.5) == pytest.approx(
        traffic.bucket_upper_ms(traffic.bucket_of(0.002))
    )
    assert traffic.percentile(histogram, 0.99) == pytest.approx(
        traffic.bucket_upper_ms(traffic.bucket_of(0.050))
    )
    assert traffic.percentile({}, 0.5) is None


def test_predictions_are_counted_per_tracker_and_minute_through_redis_into_the_database(
    client, trained, key, redis_traffic
):
    body = predict(client, trained, key, texts=["please cancel my plan", "the weather is nice"]).json()
    predict(client, trained, key, texts=["cancel it now"])
    matched = sum(r["match"] for r in body["results"])
    assert not TrafficMinute.objects.exists()  # counted in the process only
    assert traffic.flush() == 1
    assert traffic.store(now=time.time()) == 0  # this minute is still open
    assert traffic.store(now=time.time() + 120) == 1
    row = TrafficMinute.objects.get(tracker=trained)
    assert row.predictions == 3 and row.span_minutes == 1
    assert row.matches >= matched and sum(row.latency.values()) == 2  # two requests timed
    # Another process adds to the same minute: counted once each, never lost.
    traffic.record(trained.pk, 5, 1, 0.004)
    traffic.flush()
    traffic.store(now=time.time() + 120)
    assert TrafficMinute.objects.get(tracker=trained).predictions == 8


def test_old_minutes_roll_up_into_hours_and_the_oldest_go(trained):
    now = timezone.now()
    old = (now - timedelta(days=3)).replace(minute=5, second=0, microsecond=0)
    for i in range(3):
        TrafficMinute.objects.create(
            tracker=trained, start=old + timedelta(minutes=i), predictions=10, matches=1, latency={"4": 10}
        )
    TrafficMinute.objects.create(tracker=trained, start=now - timedelta(days=40), predictions=1)
    traffic._roll_up(now)
    (hour,) = TrafficMinute.objects.filter(tracker=trained)
    assert (hour.span_minutes, hour.start, hour.predictions, hour.matches, hour.latency) == (
        60,
        old.replace(minute=0),
        30,
        3,
        {"4": 30},
    )


def test_redis_away_keeps_the_counts_for_the_next_flush(trained, settings, redis_traffic):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    traffic.record(trained.pk, 4, 2, 0.01)
    assert traffic.flush() == 0
    assert sum(t.predictions for t in traffic._pending.tallies.values()) == 4


def _console(client, workspace, **query):
    return client.get(reverse("workspace-console", args=[workspace.code]), query)


def test_the_console_shows_traffic_alerts_queues_workers_storage_and_health(
    client, trained, key, owner, workspace, embedded, redis_traffic
):
    predict(client, trained, key, texts=["please cancel my plan", "cancel it", "nice weather"])
    traffic.flush()
    traffic.store(now=time.time() + 120)
    health.worker_beat("interactive@test", ["interactive"], 123, time.time())
    client.force_login(owner)
    for period in ("1d", "7d", "30d"):
        page = _console(client, workspace, period=period)
        assert page.status_code == 200
        (row,) = page.context["traffic"]["rows"]
        assert row["tracker"] == trained and row["predictions"] == 3 and row["p50_ms"] is not None
        assert len(row["chart"]["bars"]) == {"1d": 24, "7d": 7, "30d": 30}[period]
    html = page.content.decode()
    assert "interactive@test" in html and page.context["queues"]["interactive"] is not None
    storage = page.context["storage"]
    (ds,) = storage["datasets"]
    assert ds["texts"] > 0 and ds["vectors"] > 0 and ds["index"] > 0
    assert storage["models"][0]["versions"] == 1 and storage["models"][0]["bytes"] > 0
    checks = page.context["health"]
    assert checks["database"]["ok"] and checks["redis"]["ok"] and checks["encoder"]["ok"]
    assert not checks["workers"]["ok"] and "no worker takes bulk, webhooks" in checks["workers"]["detail"]


def test_failed_work_is_listed_with_why_and_retried_from_the_console(client, trained, owner, workspace):
    run = TrainingRun.objects.filter(tracker=trained).first()
    TrainingRun.objects.filter(pk=run.pk).update(
        state=WorkState.FAILED, error="the worker ran out of memory", finished_at=timezone.now()
    )
    client.force_login(owner)
    page = _console(client, workspace)
    (failed,) = page.context["failed"]
    assert failed["what"] == f"training of {trained.name}" and failed["refusal"] is None
    assert b"the worker ran out of memory" in page.content
    url = reverse("workspace-console", args=[workspace.code])
    done = client.post(
        reverse("console-retry", args=[run.code]), {"kind": "run", "workspace": workspace.code, "back": url}
    )
    assert done.status_code == 302 and done["Location"] == url
    run.refresh_from_db()
    assert run.state != WorkState.FAILED
    assert AuditEntry.objects.filter(action=AuditAction.JOB_RETRIED).count() == 1


def test_who_sees_which_console(client, workspace, owner, viewer, stranger, admin_client):
    client.force_login(viewer)
    assert _console(client, workspace).status_code == 403
    client.force_login(stranger)
    assert _console(client, workspace).status_code == 404
    assert client.get(reverse("install-console")).status_code == 302  # to the admin's login
    page = admin_client.get(reverse("install-console"))
    assert page.status_code == 200 and page.context["install"]
    assert Client().get(reverse("workspace-console", args=[workspace.code])).status_code == 302


def test_a_failed_import_whose_upload_is_gone_says_so_instead_of_offering_retry(
    client, owner, workspace, dataset
):
    from trackers.models import Job, JobKind

    job = Job.objects.create(
        workspace=workspace,
        dataset=dataset,
        kind=JobKind.IMPORT,
        state=WorkState.FAILED,
        error="row 3: text is empty",
        params={"path": "/nowhere/calls.csv"},
        finished_at=timezone.now(),
    )
    client.force_login(owner)
    (failed,) = _console(client, workspace).context["failed"]
    assert failed["code"] == job.code and "import the file again" in failed["refusal"]
    refused = client.post(
        reverse("console-retry", args=[job.code]), {"kind": "job", "workspace": workspace.code}, follow=True
    )
    assert b"import the file again" in refused.content
    job.refresh_from_db()
    assert job.state == WorkState.FAILED
