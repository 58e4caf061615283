"""A real Celery worker process on PostgreSQL and Redis: import -> embed -> index, and a kill -9."""

from __future__ import annotations

import os
import re
import signal

import pytest
import redis

from tests.conftest import BROKER_KEY_PREFIX, shared_file
from tests.workers import start_worker, stop_worker, wait_for
from trackers import imports
from trackers.models import Dataset, Job, JobKind, JobState, Segment

pytestmark = [pytest.mark.real_worker, pytest.mark.django_db(transaction=True)]


def jobs_done(dataset):
    states = dict(Job.objects.filter(dataset=dataset).values_list("kind", "state"))
    if JobState.FAILED in states.values():
        raise AssertionError(
            f"a job failed: {list(Job.objects.filter(dataset=dataset).values('kind', 'message'))}"
        )
    return states.get(JobKind.INDEX) == JobState.SUCCEEDED and states


def test_worker_imports_embeds_and_indexes_a_file(env, dataset, owner, tmp_path):
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        data = b"text,label\nI lost my card on the train,lost\nWhat's the euro exchange rate?,fx\nI lost my card on the train,lost\n"
        imports.start_import(dataset=dataset, user=owner, filename="small.csv", data=data)
        wait_for(lambda: jobs_done(dataset), 120, "import, embed and index jobs", log)
    finally:
        stop_worker(proc)
    # the queues lived under this run's key prefix, apart from any other suite on this Redis
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    assert all(broker.exists(f"{BROKER_KEY_PREFIX}_kombu.binding.{q}") for q in ("bulk", "interactive"))
    dataset.refresh_from_db()
    assert dataset.vector_count == 2 and dataset.index_size == 2
    assert Segment.objects.filter(dataset=dataset, vector_row__isnull=True).count() == 0
    from trackers.search import search_segments

    hits = search_segments(dataset, "my bank card is missing", k=1)
    assert hits[0].segment.text == "I lost my card on the train" and hits[0].duplicates == 1


def test_a_worker_killed_mid_embedding_loses_nothing(env, dataset, owner, tmp_path, settings):
    path = shared_file("sms_spam", "dev.csv")
    env = {
        **env,
        "TRACKERS_JOB_STALE_SECONDS": "3",
        "CELERY_VISIBILITY_TIMEOUT": "4",
        "TRACKERS_EMBED_PART_SEGMENTS": "512",
    }
    log = tmp_path / "worker.log"
    first = start_worker(env, log)
    try:
        data = b"".join(path.read_bytes().splitlines(keepends=True)[:1501])  # header + 1,500 messages
        imports.start_import(dataset=dataset, user=owner, filename="sms.csv", data=data)
        embed = wait_for(
            lambda: Job.objects.filter(
                dataset=dataset, kind=JobKind.EMBED, state=JobState.RUNNING, processed__gte=520
            ).first(),
            180,
            "embedding under way",
            log,
        )
    finally:
        stop_worker(first, signal.SIGKILL)
    killed_at = Job.objects.get(pk=embed.pk).processed
    assert Job.objects.get(pk=embed.pk).state == JobState.RUNNING
    assert 0 < dataset.__class__.objects.get(pk=dataset.pk).vector_count < embed.total  # a chunk was stored
    second = start_worker(env, log)
    try:
        wait_for(lambda: jobs_done(dataset), 300, "the killed job to be redelivered and finished", log)
    finally:
        stop_worker(second)
    embed.refresh_from_db()
    assert killed_at < embed.total and embed.attempts == 1  # the job waited; its killed part was taken over
    parts = list(embed.parts.all())
    segments = Segment.objects.filter(dataset=dataset).count()  # a long message makes several
    assert len(parts) == -(-segments // 512) and all(p.state == JobState.SUCCEEDED for p in parts)
    assert max(p.attempts for p in parts) == 2 and embed.message.endswith(f"in {len(parts)} parts")
    dataset = Dataset.objects.get(pk=dataset.pk)
    distinct = Segment.objects.filter(dataset=dataset).order_by().values("text_hash").distinct().count()
    assert dataset.documents.count() == 1500
    assert Segment.objects.filter(dataset=dataset, vector_row__isnull=True).count() == 0
    # every distinct text points at one row, and every row used is inside the store
    rows = (
        Segment.objects.filter(dataset=dataset).order_by().values_list("text_hash", "vector_row").distinct()
    )
    assert len(rows) == distinct
    assert max(r for _, r in rows) < dataset.vector_count == dataset.index_size


def test_two_bulk_workers_share_one_datasets_embedding(env, dataset, owner, tmp_path):
    """Parts of one embedding job go to whichever bulk worker is free; each text is stored once."""
    path = shared_file("sms_spam", "dev.csv")
    env = {**env, "TRACKERS_EMBED_PART_SEGMENTS": "150"}
    logs = [tmp_path / "bulk-1.log", tmp_path / "bulk-2.log"]
    workers = [start_worker(env, log, queues="bulk") for log in logs]
    try:
        wait_for(
            lambda: all(log.exists() and " ready." in log.read_text() for log in logs), 60, "workers", logs[0]
        )
        # a bulk-only worker yields the CPU to training: a lower priority, inherited by its pool
        assert [os.getpriority(os.PRIO_PROCESS, w.pid) for w in workers] == [10, 10]
        data = b"".join(path.read_bytes().splitlines(keepends=True)[:1201])  # header + 1,200 messages
        imports.start_import(dataset=dataset, user=owner, filename="sms.csv", data=data)
        wait_for(lambda: jobs_done(dataset), 300, "import, embed and index jobs", logs[0])
    finally:
        for w in workers:
            stop_worker(w)
    embed = Job.objects.get(dataset=dataset, kind=JobKind.EMBED)
    parts = -(-Segment.objects.filter(dataset=dataset).count() // 150)
    assert embed.parts.count() == parts and embed.attempts == 1
    took = [len(re.findall(r"embed_part\[[0-9a-f-]+\] succeeded", log.read_text())) for log in logs]
    assert sum(took) == parts and all(took), f"parts done by each worker: {took}"
    dataset = Dataset.objects.get(pk=dataset.pk)
    pairs = (
        Segment.objects.filter(dataset=dataset).order_by().values_list("text_hash", "vector_row").distinct()
    )
    distinct = Segment.objects.filter(dataset=dataset).order_by().values("text_hash").distinct().count()
    # one row per distinct text, every stored row used: no part wrote over or beside another
    assert len(pairs) == distinct == dataset.vector_count == dataset.index_size
    assert sorted(r for _, r in pairs) == list(range(distinct))


def test_bulk_and_interactive_work_go_to_their_own_queues():
    from config.celery import app

    def queue(name):
        return app.amqp.router.route({}, name)["queue"].name

    assert {
        queue(t)
        for t in (
            "trackers.tasks.import_corpus",
            "trackers.tasks.embed_dataset",
            "trackers.tasks.embed_part",
            "trackers.tasks.build_index",
        )
    } == {"bulk"}
    assert queue("labeling.tasks.train_tracker") == "interactive"
    assert (
        queue("trackers.tasks.sweep_stale_jobs") == queue("labeling.tasks.sweep_stale_runs") == "interactive"
    )


def test_training_runs_on_the_interactive_queue_while_bulk_work_waits(
    env, dataset, workspace, owner, tmp_path
):
    from labeling import game
    from labeling import services as labeling_services
    from labeling.models import TrainingRun, TrainingState
    from tests.test_game import corpus

    log = tmp_path / "worker.log"
    proc = start_worker(env, log)  # both queues: the corpus is imported, embedded and indexed
    try:
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
        wait_for(lambda: jobs_done(dataset), 180, "import, embed and index jobs", log)
    finally:
        stop_worker(proc)
    dataset.refresh_from_db()
    proc = start_worker(env, log, queues="interactive")  # nobody takes bulk work now
    try:
        waiting = imports.start_import(
            dataset=dataset, user=owner, filename="more.csv", data=b"text\nmore words\n"
        )
        tracker = labeling_services.create_tracker(
            workspace=workspace,
            user=owner,
            name="Wants to cancel",
            datasets=[dataset],
            seeds=["cancel my subscription", "we want to cancel", "end the contract"],
            round_size=10,
        )
        while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == 1]:
            for card in cards:
                answer = "yes" if "cancel" in card.segment.text else "no"
                labeling_services.answer_card(tracker, owner, card, answer)
        run = wait_for(
            lambda: TrainingRun.objects.filter(tracker=tracker, state=TrainingState.SUCCEEDED).first(),
            120,
            "the training run on the interactive worker",
            log,
        )
        assert run.label_counts["yes"] and run.label_counts["no"]
        waiting.refresh_from_db()
        assert waiting.state == JobState.QUEUED  # the bulk job is still waiting for a bulk worker
    finally:
        stop_worker(proc)


def test_a_workers_tasks_log_the_request_id_that_queued_them_and_it_says_it_is_alive(
    env, dataset, owner, tmp_path, client
):
    import json

    from serving.models import ApiKey
    from trackers import health

    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        _, raw = ApiKey.issue(workspace=dataset.workspace, name="ci", created_by=owner, role="admin")
        from django.core.files.uploadedfile import SimpleUploadedFile

        response = client.post(
            f"/api/datasets/{dataset.code}/imports",
            {"file": SimpleUploadedFile("calls.csv", b"text\nI lost my card\nthe rate for euros\n")},
            headers={"Authorization": f"Bearer {raw}", "X-Request-ID": "req-import-42"},
        )
        assert response.status_code == 202 and response["X-Request-ID"] == "req-import-42"
        wait_for(lambda: jobs_done(dataset), 120, "import, embed and index jobs", log)
        wait_for(lambda: any(w["alive"] for w in health.workers() or []), 60, "the worker's heartbeat", log)
    finally:
        stop_worker(proc)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    tagged = [line for line in lines if line.get("request_id") == "req-import-42"]
    assert tagged, "no line of the worker carries the request's id"
    assert any("import_corpus" in line["message"] for line in tagged)
    (seen,) = [w for w in health.workers() or [] if w["pid"]]
    assert set(seen["queues"]) == {"interactive", "bulk"}
