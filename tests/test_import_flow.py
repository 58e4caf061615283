"""Uploading files through the page and the service: jobs, progress, bad rows, dedup."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.urls import reverse

from trackers import imports, services, work
from trackers.models import Document, Job, JobKind, JobState, Segment

pytestmark = pytest.mark.django_db

GOOD_CSV = (
    b"text,label,channel\nMy card has not arrived yet,card_arrival,app\nHow do I reset my PIN?,pin,web\n"
)
MIXED_CSV = b"text,label\nMy card has not arrived yet,card_arrival\n,empty\nHow do I reset my PIN?,pin\n"


def upload(client, dataset, name, data, on_error="reject", fmt="auto", run_jobs=True, **headers):
    """POST a file; with ``run_jobs`` the jobs it queues on commit run (eagerly), as after a real commit."""
    # What the django_capture_on_commit_callbacks fixture returns: the test's transaction never commits.
    with TestCase.captureOnCommitCallbacks(execute=run_jobs):
        return client.post(
            reverse("dataset-upload", args=[dataset.code]),
            {"file": SimpleUploadedFile(name, data), "format": fmt, "on_error": on_error},
            **headers,
        )


def test_upload_runs_import_embed_and_index_jobs(owner_client, dataset, fake_encoder):
    response = upload(owner_client, dataset, "msgs.csv", GOOD_CSV)
    assert response.status_code == 302
    jobs = {j.kind: j for j in Job.objects.filter(dataset=dataset)}
    assert set(jobs) == {JobKind.IMPORT, JobKind.EMBED, JobKind.INDEX}
    assert all(j.state == JobState.SUCCEEDED and j.percent == 100 for j in jobs.values())
    assert jobs[JobKind.IMPORT].result == {"documents": 2, "segments": 2, "skipped": 0, "rows": 2}
    seg = Segment.objects.get(text="How do I reset my PIN?")
    assert seg.known_label == "pin" and seg.document.metadata == {"channel": "web"}
    dataset.refresh_from_db()
    assert (
        dataset.vector_count == 2
        and dataset.index_kind == "flat"
        and dataset.encoder_id == fake_encoder.encoder_id
    )


def test_reject_mode_imports_nothing_and_lists_every_bad_row(owner_client, dataset):
    upload(owner_client, dataset, "first.csv", GOOD_CSV)
    before = list(Segment.objects.values_list("id", "text", "vector_row"))
    upload(owner_client, dataset, "mixed.csv", MIXED_CSV + b",again\n")
    job = Job.objects.get(params__filename="mixed.csv")
    assert job.state == JobState.FAILED
    assert "2 bad row(s); nothing was imported" in job.message
    assert [e["text"] for e in job.errors] == [
        "mixed.csv, line 3, field 'text': is empty",
        "mixed.csv, line 5, field 'text': is empty",
    ]
    assert list(Segment.objects.values_list("id", "text", "vector_row")) == before
    page = owner_client.get(reverse("job", args=[job.code]))
    assert b"mixed.csv" in page.content and b"is empty" in page.content and b"2 problems" in page.content


def test_skip_mode_imports_good_rows_and_lists_skipped(owner_client, dataset):
    upload(owner_client, dataset, "mixed.csv", MIXED_CSV, on_error="skip")
    job = Job.objects.get(kind=JobKind.IMPORT)
    assert job.state == JobState.SUCCEEDED
    assert job.result["documents"] == 2 and job.result["skipped"] == 1
    assert [e["line"] for e in job.errors] == [3]
    assert sorted(Segment.objects.values_list("text", flat=True)) == [
        "How do I reset my PIN?",
        "My card has not arrived yet",
    ]


def test_unreadable_file_fails_even_in_skip_mode(owner_client, dataset):
    upload(owner_client, dataset, "latin.csv", "text\ncaf\xe9\n".encode("latin-1"), on_error="skip")
    job = Job.objects.get(kind=JobKind.IMPORT)
    assert job.state == JobState.FAILED and job.message == f"the file cannot be read: {job.errors[0]['text']}"
    assert "is not UTF-8 text" in job.errors[0]["text"]
    assert not Document.objects.exists()


def test_file_over_the_size_limit_is_refused_in_the_request(owner_client, dataset, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    response = upload(owner_client, dataset, "big.csv", b"text\n" + b"a" * 2000 + b"\n")
    assert response.status_code == 422
    assert "big.csv: the file is 2.0 kB; the limit is 1.0 kB" in response.content.decode()
    assert not Job.objects.exists()


def test_size_limit_message_names_file_and_sizes(dataset, owner, settings):
    settings.UPLOAD_MAX_BYTES = 2_000_000
    with pytest.raises(imports.ImportRejected, match=r"^big.csv: the file is 3.0 MB; the limit is 2.0 MB$"):
        imports.start_import(dataset=dataset, user=owner, filename="big.csv", data=b"t" * 3_000_000)


def test_empty_upload_is_refused(owner_client, dataset):
    response = upload(owner_client, dataset, "empty.csv", b"\n")
    assert response.status_code == 422
    assert "empty.csv: the file is empty" in response.content.decode()


@pytest.mark.django_db
def test_htmx_upload_returns_the_polling_activity_panel(
    owner_client, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(owner_client, dataset, "msgs.csv", GOOD_CSV, run_jobs=False, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and len(callbacks) == 1
    job = Job.objects.get()
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="activity"') and f'id="job-{job.code}"' in html
    assert reverse("dataset-activity", args=[dataset.code]) in html and 'hx-trigger="every 1s"' in html


def test_activity_polls_until_every_job_is_done_then_answers_286(owner_client, dataset):
    upload(owner_client, dataset, "msgs.csv", GOOD_CSV)
    url = reverse("dataset-activity", args=[dataset.code])
    done = owner_client.get(url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "every 1s" not in done.content.decode()
    assert done.content.decode().count("job-row state-succeeded") == 3  # import, embed and index
    Job.objects.filter(kind=JobKind.EMBED).update(state=JobState.RUNNING, processed=1, total=4)
    running = owner_client.get(url, HTTP_HX_REQUEST="true")
    assert (
        running.status_code == 200
        and "25%" in running.content.decode()
        and "every 1s" in running.content.decode()
    )


def test_job_progress_answers_286_when_done(owner_client, dataset):
    upload(owner_client, dataset, "msgs.csv", GOOD_CSV)
    job = Job.objects.get(kind=JobKind.IMPORT)
    done = owner_client.get(reverse("job-progress", args=[job.code]), HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and b"100%" in done.content
    Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING, processed=1, total=4)
    running = owner_client.get(reverse("job-progress", args=[job.code]), HTTP_HX_REQUEST="true")
    assert running.status_code == 200 and b"25%" in running.content and b"every 1s" in running.content


def test_duplicate_segments_are_embedded_once(owner_client, dataset, fake_encoder):
    data = b"text\nsame words\nsame words\nother words\nsame words\n"
    upload(owner_client, dataset, "dups.csv", data)
    assert sum(fake_encoder.calls) == 2
    rows = dict(Segment.objects.values_list("text", "vector_row").distinct())
    assert Segment.objects.filter(text="same words").values("vector_row").distinct().count() == 1
    assert len(set(rows.values())) == 2
    # a later file repeating a text reuses the stored vector
    upload(owner_client, dataset, "more.csv", b"text\nsame words\nnew words\n")
    assert sum(fake_encoder.calls) == 3
    dataset.refresh_from_db()
    assert dataset.vector_count == 3


def test_reimporting_the_same_document_ids_is_reported_not_duplicated(owner_client, dataset):
    data = b"id,text\nm1,first message\nm2,second message\n"
    upload(owner_client, dataset, "a.csv", data)
    upload(owner_client, dataset, "a-again.csv", data + b"m3,third message\n", on_error="skip")
    job = Job.objects.get(params__filename="a-again.csv")
    assert job.result["documents"] == 1
    assert [e["message"] for e in job.errors] == [
        "document id 'm1' is already in this dataset",
        "document id 'm2' is already in this dataset",
    ]
    assert Document.objects.filter(dataset=dataset).count() == 3


def test_transcript_zip_upload_splits_calls_into_utterances(owner_client, dataset):
    from trackers.demo import demo_zip

    upload(owner_client, dataset, "demo.zip", demo_zip(5))
    assert Document.objects.filter(dataset=dataset, kind="call").count() == 5
    doc = Document.objects.filter(dataset=dataset).first()
    speakers = set(doc.segments.values_list("speaker", flat=True))
    assert len(speakers) == 2
    assert doc.segments.first().start_time == 0.0


def test_viewer_cannot_upload(client, viewer, dataset):
    client.force_login(viewer)
    assert upload(client, dataset, "msgs.csv", GOOD_CSV).status_code == 403
    assert not Job.objects.exists()


def test_import_job_rerun_after_success_does_nothing(owner_client, dataset):
    from trackers.tasks import import_corpus

    upload(owner_client, dataset, "msgs.csv", GOOD_CSV)
    job = Job.objects.get(kind=JobKind.IMPORT)
    import_corpus(work_id=job.pk)
    assert Document.objects.count() == 2 and Job.objects.filter(kind=JobKind.EMBED).count() == 1


@pytest.mark.django_db
def test_a_killed_worker_job_is_queued_again_and_finishes(
    dataset, owner, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    with django_capture_on_commit_callbacks(execute=False):
        job = imports.start_import(dataset=dataset, user=owner, filename="m.csv", data=GOOD_CSV)
    # a worker claimed it and died: running, with an old heartbeat
    Job.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.requeue_stale_jobs() == {
            "requeued": [job.pk],
            "failed": [],
            "parts_requeued": [],
            "parts_failed": [],
        }
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.attempts == 1
    assert Document.objects.count() == 2


@pytest.mark.django_db
def test_a_running_job_with_a_fresh_heartbeat_is_not_claimed_twice(
    dataset, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = imports.start_import(dataset=dataset, user=owner, filename="m.csv", data=GOOD_CSV)
    assert work.claim(Job, job.pk) is not None
    assert work.claim(Job, job.pk) is None
    assert services.requeue_stale_jobs() == {
        "requeued": [],
        "failed": [],
        "parts_requeued": [],
        "parts_failed": [],
    }


@pytest.mark.django_db
def test_a_job_that_keeps_killing_its_worker_fails_at_the_attempt_cap(
    dataset, owner, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    settings.WORK_MAX_ATTEMPTS = 3
    with django_capture_on_commit_callbacks(execute=False):
        job = imports.start_import(dataset=dataset, user=owner, filename="m.csv", data=GOOD_CSV)
    long_ago = timezone.now() - timedelta(hours=1)
    for attempt in (1, 2, 3):  # each claim's worker dies: running, heartbeat gone stale
        assert work.claim(Job, job.pk) is not None
        Job.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
        assert Job.objects.get(pk=job.pk).attempts == attempt
    # the sweeper does not send it a fourth time: it fails, saying why
    assert services.requeue_stale_jobs() == {
        "requeued": [],
        "failed": [job.pk],
        "parts_requeued": [],
        "parts_failed": [],
    }
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.attempts == 3
    assert job.error.startswith("gave up after 3 attempts: the worker stopped each time before finishing")
    assert job.message == job.error
    assert work.claim(Job, job.pk) is None  # a late redelivery finds nothing to do
    assert Document.objects.count() == 0


@pytest.mark.django_db
def test_a_redelivered_job_past_the_cap_is_failed_by_the_claim_itself(dataset, owner, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.WORK_MAX_ATTEMPTS = 1
    job = Job.objects.create(
        workspace=dataset.workspace,
        dataset=dataset,
        kind=JobKind.IMPORT,
        state=JobState.RUNNING,
        attempts=1,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    assert work.claim(Job, job.pk) is None
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "gave up after 1 attempt: the worker stopped" in job.error


def test_nul_and_surrogates_on_postgresql_are_row_errors_not_a_database_failure(owner_client, dataset):
    data = (
        b'{"id": "m1", "text": "fine"}\n'
        b'{"id": "m2", "text": "nul \\u0000 inside"}\n'
        b'{"id": "m3", "text": "ok", "channel": "bad \\ud800"}\n'
        b'{"id": "m4", "text": "also fine"}\n'
    )
    upload(owner_client, dataset, "rows.jsonl", data, on_error="skip")
    job = Job.objects.get(params__filename="rows.jsonl")
    assert job.state == JobState.SUCCEEDED and job.result["documents"] == 2
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, "text"), (3, "channel")]
    assert sorted(Document.objects.values_list("external_id", flat=True)) == ["m1", "m4"]
    assert not any(word in job.message + str(job.errors) for word in ("INSERT", "SELECT", "DataError"))


def test_a_database_failure_is_told_in_the_projects_words(dataset, owner, monkeypatch):
    from django.db import DataError

    def refuse(job):
        raise DataError('invalid byte sequence for encoding "UTF8": 0x00\nCONTEXT: INSERT INTO "segment" ...')

    monkeypatch.setattr(imports, "run_import", refuse)
    with TestCase.captureOnCommitCallbacks(execute=True):
        job = imports.start_import(dataset=dataset, user=owner, filename="a.csv", data=GOOD_CSV)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "INSERT" not in job.error and "0x00" not in job.error and "database refused" in job.error


@pytest.mark.parametrize(
    ("data", "on_error", "state"),
    [(GOOD_CSV, "reject", JobState.SUCCEEDED), (MIXED_CSV, "reject", JobState.FAILED)],
)
def test_an_uploads_file_is_deleted_once_its_job_has_ended(
    owner_client, dataset, settings, data, on_error, state
):
    from pathlib import Path

    upload(owner_client, dataset, "msgs.csv", data, on_error=on_error)
    job = Job.objects.get(kind=JobKind.IMPORT)
    assert job.state == state
    assert not Path(job.params["path"]).exists() and not Path(job.params["path"]).parent.exists()
    assert Path(settings.MEDIA_ROOT, "uploads").is_dir()  # the folder of all uploads stays


def test_an_upload_stays_while_its_job_may_still_run(dataset, owner):
    from pathlib import Path

    job = imports.start_import(dataset=dataset, user=owner, filename="a.csv", data=GOOD_CSV)  # not run yet
    assert Path(job.params["path"]).exists()


@pytest.mark.parametrize("path", ["page", "/api/datasets/{code}/imports"])
def test_an_over_limit_body_is_refused_before_it_is_read(owner_client, dataset, settings, path, monkeypatch):
    from trackers import views

    settings.UPLOAD_MAX_BYTES = 1000
    url = reverse("dataset-upload", args=[dataset.code]) if path == "page" else path.format(code=dataset.code)
    called = []
    monkeypatch.setattr(views, "dataset_upload", lambda *a, **k: called.append(1))
    response = owner_client.post(
        url, data=b"x" * 10, content_type="application/octet-stream", CONTENT_LENGTH="312000000"
    )
    assert response.status_code == 413 and "the limit for an upload is" in response.content.decode()
    assert response["Content-Type"].startswith("application/json" if path != "page" else "text/plain")
    assert called == [] and not Job.objects.exists()


def test_numbers_json_cannot_hold_are_row_errors_naming_line_and_field(owner_client, dataset):
    data = (
        b'{"id": "m1", "text": "fine", "score": 0.5}\n'
        b'{"id": "m2", "text": "not a number", "score": NaN}\n'
        b'{"id": "m3", "text": "too big", "meta": {"size": 1e400}}\n'
        b'{"id": "m4", "text": "minus infinity", "tags": [1, -Infinity]}\n'
        b'{"id": "m5", "text": "also fine"}\n'
    )
    upload(owner_client, dataset, "numbers.jsonl", data, on_error="skip")
    job = Job.objects.get(params__filename="numbers.jsonl")
    assert job.state == JobState.SUCCEEDED and job.result["documents"] == 2
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, "score"), (3, "meta.size"), (4, "tags[1]")]
    assert "NaN is not a number JSON can hold" in job.errors[0]["message"]
    assert sorted(Document.objects.values_list("external_id", flat=True)) == ["m1", "m5"]
    upload(owner_client, dataset, "numbers-strict.jsonl", data, on_error="reject")
    strict = Job.objects.get(params__filename="numbers-strict.jsonl")
    numbers = [(e["line"], e["field"]) for e in strict.errors if "JSON can hold" in e["message"]]
    assert strict.state == JobState.FAILED and numbers == [(2, "score"), (3, "meta.size"), (4, "tags[1]")]
    assert Document.objects.count() == 2  # nothing already stored is lost
