"""Embedding a dataset in parts: each part a task of its own, storing once per text, ended by the last."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from trackers import embedding, imports, services, work
from trackers.models import Dataset, EmbedPart, Job, JobKind, JobState, Segment

pytestmark = pytest.mark.django_db

# 10 rows, 6 distinct texts; with parts of 4 segments, "refund" and "invoice" fall in two parts
ROWS = [
    "refund please",
    "invoice",
    "refund please",
    "cancel",
    "invoice",
    "price",
    "refund please",
    "hello",
    "bye",
]
ROWS.append("cancel")


def csv(rows):
    return ("text\n" + "\n".join(rows) + "\n").encode()


def import_rows(dataset, owner, rows, callbacks):
    """The rows imported, embedded and indexed; the embedding job."""
    with callbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="r.csv", data=csv(rows))
    return Job.objects.get(dataset=dataset, kind=JobKind.EMBED)


def planned(dataset, owner, rows, callbacks):
    """The rows imported and their embedding job claimed and planned; no part has run."""
    with callbacks(execute=False):
        imported = imports.start_import(dataset=dataset, user=owner, filename="r.csv", data=csv(rows))
        imports.run_import(work.claim(Job, imported.pk))
        job = Job.objects.get(dataset=dataset, kind=JobKind.EMBED)
        assert work.claim(Job, job.pk) is not None
        assert embedding.plan_embedding(job) is work.HANDED_TO_PARTS
    return job


def assert_one_row_per_text(dataset, fake_encoder):
    dataset = Dataset.objects.get(pk=dataset.pk)
    rows = dict(Segment.objects.filter(dataset=dataset).values_list("text", "vector_row").distinct())
    texts = set(Segment.objects.filter(dataset=dataset).values_list("text", flat=True))
    assert set(rows) == texts and None not in rows.values()
    # one row per distinct text, and every row of the store is used by a text
    assert len(rows) == len(texts) and sorted(rows.values()) == list(range(dataset.vector_count))
    vectors = services.vector_store(dataset).get(list(rows.values()))
    assert np.allclose(vectors, fake_encoder.encode(list(rows)))


def test_embedding_is_split_into_parts_and_a_text_in_two_parts_gets_one_row(
    dataset, owner, settings, fake_encoder, django_capture_on_commit_callbacks
):
    settings.EMBED_PART_SEGMENTS = 4
    job = import_rows(dataset, owner, ROWS, django_capture_on_commit_callbacks)
    parts = list(job.parts.all())
    assert [(p.number, p.segments, p.state) for p in parts] == [
        (1, 4, JobState.SUCCEEDED),
        (2, 4, JobState.SUCCEEDED),
        (3, 2, JobState.SUCCEEDED),
    ]
    assert sum(p.stored for p in parts) == 7 - 1  # "refund please" and "invoice" were stored by part 1
    assert job.state == JobState.SUCCEEDED and job.processed == job.total == 10 and job.percent == 100
    assert job.message == "embedded 6 distinct texts in 3 parts"
    assert_one_row_per_text(dataset, fake_encoder)
    index = Job.objects.get(dataset=dataset, kind=JobKind.INDEX)
    assert index.state == JobState.SUCCEEDED and index.params == {"after": str(job.code)}
    assert Dataset.objects.get(pk=dataset.pk).index_size == 6


def test_parts_storing_at_once_reuse_each_others_rows(
    dataset, owner, settings, fake_encoder, django_capture_on_commit_callbacks, monkeypatch
):
    """Part 1 embeds; while it does, part 2 embeds and stores the texts they share; part 1 then
    stores only what part 2 did not."""
    settings.EMBED_PART_SEGMENTS = 5
    job = planned(dataset, owner, ROWS, django_capture_on_commit_callbacks)
    first, second = job.parts.all()
    encode = fake_encoder.encode
    interleaved = []

    def encode_while_the_other_part_runs(texts, batch_size=32):
        if not interleaved:
            interleaved.append(True)
            other = work.claim(EmbedPart, second.pk)
            work.finish(other, JobState.SUCCEEDED, **embedding.embed_part(other))
        return encode(texts, batch_size)

    monkeypatch.setattr(fake_encoder, "encode", encode_while_the_other_part_runs)
    mine = work.claim(EmbedPart, first.pk)
    with django_capture_on_commit_callbacks(execute=True):
        work.finish(mine, JobState.SUCCEEDED, **embedding.embed_part(mine))
    second.refresh_from_db()
    # part 2 (price, refund please, hello, bye, cancel) stored all five while part 1 was embedding
    assert interleaved and second.stored == 5
    mine.refresh_from_db()
    assert mine.stored == 1  # of refund please, invoice and cancel, only invoice was still new
    assert_one_row_per_text(dataset, fake_encoder)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.message == "embedded 6 distinct texts in 2 parts"


def test_a_failed_part_fails_its_job_saying_which_part_and_why(
    dataset, owner, settings, fake_encoder, django_capture_on_commit_callbacks, monkeypatch
):
    settings.EMBED_PART_SEGMENTS = 4
    encode = fake_encoder.encode

    def refuse_hello(texts, batch_size=32):
        if "hello" in texts:
            raise RuntimeError("the encoder ran out of memory")
        return encode(texts, batch_size)

    monkeypatch.setattr(fake_encoder, "encode", refuse_hello)
    job = import_rows(dataset, owner, ROWS, django_capture_on_commit_callbacks)
    assert job.state == JobState.FAILED
    assert job.error == "part 2 of 3 failed: RuntimeError: the encoder ran out of memory"
    assert job.message == job.error
    assert [p.state for p in job.parts.all()] == [JobState.SUCCEEDED, JobState.FAILED, JobState.SUCCEEDED]
    assert not Job.objects.filter(dataset=dataset, kind=JobKind.INDEX).exists()
    # what the other parts stored is kept: only part 2's new texts lack a vector (its texts
    # embedded before, by part 1, were pointed at their rows before it failed)
    missing = Segment.objects.filter(dataset=dataset, vector_row__isnull=True)
    assert sorted(missing.values_list("text", flat=True)) == ["hello", "price"]


def test_the_sweeper_leaves_a_job_to_its_parts_and_sends_lost_parts_again(
    dataset, owner, settings, fake_encoder, django_capture_on_commit_callbacks
):
    settings.EMBED_PART_SEGMENTS = 4
    job = planned(dataset, owner, ROWS, django_capture_on_commit_callbacks)
    long_ago = timezone.now() - timedelta(hours=1)
    first, second, third = job.parts.all()
    # the job's own heartbeat is old; part 1's worker died holding it; part 2's message was lost
    Job.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
    EmbedPart.objects.filter(pk=first.pk).update(state=JobState.RUNNING, attempts=1, heartbeat_at=long_ago)
    EmbedPart.objects.filter(pk=second.pk).update(created_at=long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        swept = services.requeue_stale_jobs()
    assert swept == {
        "requeued": [],
        "failed": [],
        "parts_requeued": [first.pk, second.pk],
        "parts_failed": [],
    }
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.attempts == 1  # part 3 is still queued: the job waits
    assert EmbedPart.objects.get(pk=first.pk).attempts == 2
    with django_capture_on_commit_callbacks(execute=True):
        work.enqueue(third)  # its message arrives
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert_one_row_per_text(dataset, fake_encoder)


def test_a_planner_that_died_after_planning_keeps_its_parts(
    dataset, owner, settings, fake_encoder, django_capture_on_commit_callbacks
):
    settings.EMBED_PART_SEGMENTS = 4
    job = planned(dataset, owner, ROWS, django_capture_on_commit_callbacks)
    parts = list(job.parts.values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):  # the rerun plans nothing new
        assert embedding.plan_embedding(job) is work.HANDED_TO_PARTS
    assert list(job.parts.values_list("pk", flat=True)) == parts
    with django_capture_on_commit_callbacks(execute=True):
        for part in job.parts.all():
            work.enqueue(part)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert_one_row_per_text(dataset, fake_encoder)


def test_nothing_to_embed_ends_the_job_at_once_and_builds_the_index(
    dataset, owner, settings, django_capture_on_commit_callbacks
):
    import_rows(dataset, owner, ["hello"], django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        services.create_job(dataset=dataset, kind=JobKind.EMBED, user=owner)
    job = Job.objects.filter(dataset=dataset, kind=JobKind.EMBED).first()  # the newest
    assert job.state == JobState.SUCCEEDED and job.message == "embedded 0 distinct texts"
    assert not job.parts.exists()
    assert Job.objects.filter(dataset=dataset, kind=JobKind.INDEX, state=JobState.SUCCEEDED).count() == 2
