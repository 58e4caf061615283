"""Bulk scoring: stacked heads equal to each head alone, a stored dataset scored from its stored
vectors with progress and a checkpoint a takeover goes on from, results in context on a page and
through the API, formula-safe CSV and JSONL, and feedback that the next training run counts."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from django.urls import reverse
from django.utils.html import escape

from labeling import services as labeling_services
from labeling.models import Annotation, Strategy, TrainingRun, TrainingState
from serving.ml.export import head_model
from serving.ml.heads import Heads, check_graph
from serving.models import ScoredSegment, ScoringJob
from serving.scoring import services as scoring
from serving.versions import runtime, services
from tests.factories import DatasetFactory, MembershipFactory, UserFactory, WorkspaceFactory
from tests.test_game import cancel_tracker, oracle
from trackers import imports, work
from trackers import services as corpus_services
from trackers.models import Role, Segment, WorkState

pytestmark = pytest.mark.django_db


def test_stacked_heads_score_as_each_heads_onnx_file_and_as_each_head_alone():
    """One engine (serving.ml.heads) for one head or many: each head's columns of a stack are what
    onnxruntime answers from that head's file, and exactly what the head alone answers."""
    import onnxruntime as ort

    from trackers.ml.ngrams import Ngrams

    rng = np.random.default_rng(3)
    ids = [[101, *rng.integers(2000, 2012, int(rng.integers(0, 9))).tolist(), 102] for _ in range(7)]
    ngrams = Ngrams.build(ids * 2)  # every n-gram of these texts, twice over
    assert ngrams is not None
    parts = [
        (rng.normal(size=(16, 1)), rng.normal(size=1), False, None),
        (rng.normal(size=(16 + len(ngrams), 1)), rng.normal(size=1), False, ngrams),  # reads n-grams
        (rng.normal(size=(16, 3)), rng.normal(size=3), True, None),
        (rng.normal(size=(16, 2)), rng.normal(size=2), True, None),
        (rng.normal(size=(16, 1)), rng.normal(size=1), False, None),
    ]
    vectors = rng.normal(size=(7, 16)).astype(np.float32)
    padded = np.zeros((7, max(map(len, ids))), dtype=np.int64)
    for row, i in enumerate(ids):
        padded[row, : len(i)] = i
    stack = Heads.of(parts)
    assert [softmax for _, softmax in stack.runs] == [False, True, True, False]  # neighbours share
    together = stack.apply(vectors, ids)
    for (w, b, topic, grams), columns in zip(parts, stack.columns, strict=True):
        featurizer = "ngrams" if grams is not None else "embedding"
        model = head_model(w, b, topic=topic, featurizer=featurizer, ngrams=grams)
        check_graph(model)  # what publishing checks once
        feeds = {"embedding": vectors, **({"input_ids": padded} if grams is not None else {})}
        expected = ort.InferenceSession(model.SerializeToString()).run(["scores"], feeds)[0]
        np.testing.assert_allclose(together[:, columns], expected, atol=1e-6)
        alone = Heads.of([(w, b, topic, grams)]).apply(vectors, ids)
        assert np.array_equal(together[:, columns], alone)  # the same float32 scores, stacked or not
        first = Heads.of([(w, b, topic, grams)]).apply(vectors[:1], ids[:1])
        assert np.array_equal(first, alone[:1])  # any batch
    with pytest.raises(ValueError, match="token ids"):
        stack.apply(vectors)  # a head that reads n-grams cannot answer without them
    assert together.shape == (7, 8)
    np.testing.assert_allclose(together[:, 2:5].sum(axis=1), 1.0, atol=1e-6)  # the topics' softmaxes
    np.testing.assert_allclose(together[:, 5:7].sum(axis=1), 1.0, atol=1e-6)


def test_a_graph_that_does_not_answer_as_its_weights_is_refused_at_publishing():
    rng = np.random.default_rng(4)
    model = head_model(rng.normal(size=(16, 1)), rng.normal(size=1), topic=False, featurizer="embedding")
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    sigmoid.op_type = "Relu"  # still a valid graph, no longer the rule the weights are applied by
    with pytest.raises(ValueError, match="does not answer as its weights do"):
        check_graph(model)


def test_one_versions_matches_agree_with_the_stacked_comparison_at_the_threshold():
    from types import SimpleNamespace

    out = np.array([[np.float32(0.7)], [np.nextafter(np.float32(0.7), np.float32(0))]], dtype=np.float32)
    answers, _ = runtime.answers_from(SimpleNamespace(kind="concept"), ["no", "yes"], out, 0.7)
    assert [a.match for a in answers] == (out[:, 0] >= np.float32(0.7)).tolist() == [True, False]
    assert [a.label for a in answers] == ["yes", "no"] and answers[0].score == float(np.float32(0.7))


def expected_results(dataset, tracker) -> dict[int, float]:
    """Every segment at or above the threshold in use, scored by the version's head directly."""
    version = services.live_version(tracker)
    head = runtime.head_of(version, dataset.encoder_id)
    threshold, _ = services.threshold_of(version)
    segs = list(Segment.objects.filter(dataset=dataset, vector_row__isnull=False).order_by("pk"))
    scores = head.scores(corpus_services.vector_store(dataset).get([s.vector_row for s in segs]))[:, 0]
    return {s.pk: float(p) for s, p in zip(segs, scores, strict=True) if p >= threshold}


def stored(job, tracker) -> dict[int, float]:
    return dict(
        ScoredSegment.objects.filter(job=job, version__tracker=tracker).values_list("segment_id", "score")
    )


def test_a_dataset_is_scored_by_every_live_tracker_from_its_stored_vectors(
    two_live, embedded, owner, fake_encoder, django_capture_on_commit_callbacks, settings
):
    settings.SCORING_CHUNK_SEGMENTS = 25  # several chunks, each with its checkpoint
    calls_before = list(fake_encoder.calls)
    with django_capture_on_commit_callbacks(execute=True):
        job = scoring.start_scoring(dataset=embedded, user=owner)
    job.refresh_from_db()
    assert job.state == WorkState.SUCCEEDED, job.error
    assert fake_encoder.calls == calls_before  # nothing embedded again
    assert job.processed == job.total == 116 and job.percent == 100
    for tracker in two_live:
        want = expected_results(embedded, tracker)
        got = stored(job, tracker)
        assert set(got) == set(want) and got
        assert [got[k] for k in sorted(got)] == pytest.approx([want[k] for k in sorted(want)], abs=1e-6)
        counts = job.result["trackers"][str(services.live_version(tracker).pk)]
        assert counts["scored"] == 116 and sum(counts["histogram"]) == 116
        assert counts["matches"] == len(want)
    assert "matches by 2 trackers in 116 segments" in job.message


def test_a_takeover_goes_on_from_the_checkpoint_and_counts_nothing_twice(
    two_live, embedded, owner, settings, monkeypatch
):
    settings.SCORING_CHUNK_SEGMENTS = 20
    clean = scoring.start_scoring(dataset=embedded, user=owner)  # on commit: never, in this test
    crashing = scoring.start_scoring(dataset=embedded, user=owner)
    for job in (clean, crashing):
        assert job.state == WorkState.QUEUED

    real_checkpoint = scoring._checkpoint
    seen = []

    class WorkerKilled(BaseException):
        pass

    def dies_after_two(job, *args, **kwargs):
        real_checkpoint(job, *args, **kwargs)
        seen.append(job.done_through)
        if job.pk == crashing.pk and len(seen) == 2:
            raise WorkerKilled

    monkeypatch.setattr(scoring, "_checkpoint", dies_after_two)
    claimed = work.claim(ScoringJob, crashing.pk)
    with pytest.raises(WorkerKilled):
        scoring.run_scoring(claimed)
    crashing.refresh_from_db()
    assert crashing.state == WorkState.RUNNING and crashing.processed == 40 and crashing.done_through
    partial = ScoredSegment.objects.filter(job=crashing).count()
    assert partial > 0
    # the worker is gone: its heartbeat goes stale and another takes the job over
    ScoringJob.objects.filter(pk=crashing.pk).update(heartbeat_at=crashing.heartbeat_at.replace(year=2000))
    settings.JOB_STALE_SECONDS = 1
    for job in (crashing, clean):
        row = work.claim(ScoringJob, job.pk)
        work.finish(row, WorkState.SUCCEEDED, **scoring.run_scoring(row))
    crashing.refresh_from_db()
    clean.refresh_from_db()
    assert crashing.attempts == 2 and crashing.processed == clean.processed == 116
    assert crashing.result == clean.result
    for tracker in two_live:
        assert stored(crashing, tracker) == pytest.approx(stored(clean, tracker))


def test_scoring_refuses_what_it_cannot_do(embedded, workspace, owner, two_live):
    other_ws_tracker_dataset = DatasetFactory(workspace=WorkspaceFactory(name="Other"))
    with pytest.raises(scoring.ScoringRefused, match="no tracker with a live model version"):
        scoring.start_scoring(dataset=other_ws_tracker_dataset, user=owner)
    untrained = cancel_tracker(workspace, owner, embedded, name="Not yet")
    with pytest.raises(scoring.ScoringRefused, match="'Not yet' has no live model version"):
        scoring.start_scoring(dataset=embedded, user=owner, trackers=[untrained])
    foreign = DatasetFactory(workspace=workspace, name="Other encoder", encoder_id="another-encoder")
    with pytest.raises(scoring.ScoringRefused, match="trained on vectors of another encoder"):
        scoring.start_scoring(dataset=foreign, user=owner, trackers=[two_live[0]])
    imports.start_import(dataset=embedded, user=owner, filename="more.csv", data=b"text\nmore\n")
    with pytest.raises(scoring.ScoringRefused, match="still being imported or embedded"):
        scoring.start_scoring(dataset=embedded, user=owner)


def test_document_and_topic_trackers_are_scored_per_call_and_per_label(
    dataset, workspace, owner, owner_client
):
    from tests.test_documents import calls_tracker, is_cancel
    from tests.test_topics import play_round, ticket_topic_tracker

    calls = calls_tracker(dataset, owner, workspace, speaker_filter="customer")
    for _ in range(2):
        play_round(calls, owner, lambda card: "yes" if is_cancel(card.segment.document) else "no")
    version = services.live_version(calls)
    job = scoring.start_scoring(dataset=dataset, user=owner, trackers=[calls])
    row = work.claim(ScoringJob, job.pk)
    work.finish(row, WorkState.SUCCEEDED, **scoring.run_scoring(row))
    job.refresh_from_db()
    results = list(ScoredSegment.objects.filter(job=job).select_related("segment__document"))
    docs = {r.segment.document for r in results}
    assert docs and all(is_cancel(d) for d in docs)  # whole calls, the cancellation ones
    assert len(results) == len(docs)  # one result per call, on its first customer line
    for r in results:
        first = r.segment.document.segments.filter(speaker__iexact="customer").order_by("pk").first()
        assert r.segment == first
    # in context: the agent's lines before and after each call's first customer line
    html = owner_client.get(reverse("scoring-job", args=[job.code])).content.decode()
    for r in scoring.with_context(results):
        lines = {s.position: s for s in r.segment.document.segments.all()}
        assert (r.before, r.after) == (lines[r.segment.position - 1], lines[r.segment.position + 1])
        assert r.before.speaker == r.after.speaker == "agent"
        assert escape(r.before.text) in html and escape(r.after.text) in html
    counts = job.result["trackers"][str(version.pk)]
    assert counts["scored"] == dataset.documents.count()

    tickets = DatasetFactory(workspace=workspace, name="Tickets")
    topic = ticket_topic_tracker(tickets, owner, workspace)
    for _ in range(2):
        play_round(topic, owner)
    job = scoring.start_scoring(dataset=tickets, user=owner, trackers=[topic], min_score=0.0)
    row = work.claim(ScoringJob, job.pk)
    work.finish(row, WorkState.SUCCEEDED, **scoring.run_scoring(row))
    job.refresh_from_db()
    labels = job.result["trackers"][str(services.live_version(topic).pk)]["labels"]
    assert sum(labels.values()) == tickets.segments.count()
    assert set(ScoredSegment.objects.filter(job=job).values_list("label", flat=True)) <= set(topic.labels)


@pytest.fixture
def done_job(two_live, embedded, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = scoring.start_scoring(dataset=embedded, user=owner, trackers=[two_live[0]])
    job.refresh_from_db()
    assert job.state == WorkState.SUCCEEDED
    return job


def test_downloads_are_csv_safe_against_formulas_and_jsonl(owner_client, done_job):
    top = ScoredSegment.objects.filter(job=done_job).order_by("-score").first()
    Segment.objects.filter(pk=top.segment_id).update(text='=HYPERLINK("http://evil","cancel")')
    response = owner_client.get(reverse("scoring-download", args=[done_job.code, "csv"]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == ScoredSegment.objects.filter(job=done_job).count()
    assert rows[0]["text"] == '\'=HYPERLINK("http://evil","cancel")'
    assert all(not r[c].startswith(scoring.FORMULA_START) for r in rows for c in r)
    response = owner_client.get(reverse("scoring-download", args=[done_job.code, "jsonl"]) + "?min_score=0.9")
    records = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert records and all(r["score"] >= 0.9 for r in records)
    assert records == sorted(records, key=lambda r: -r["score"])
    assert {"tracker", "version", "score", "label", "document", "position", "text"} <= set(records[0])
    assert owner_client.get(reverse("scoring-download", args=[done_job.code, "xlsx"])).status_code == 404


def test_feedback_joins_the_trackers_answers_and_the_next_run_counts_it(
    done_job, two_live, owner, django_capture_on_commit_callbacks
):
    tracker = two_live[0]
    before = TrainingRun.objects.filter(tracker=tracker, state=TrainingState.SUCCEEDED).first()
    unanswered = (
        ScoredSegment.objects.filter(job=done_job)
        .exclude(segment__annotations__tracker=tracker)
        .select_related("version__tracker", "segment")
        .order_by("score")
    )
    wrong, right = unanswered[0], unanswered[1]
    scoring.give_feedback(wrong, owner, "wrong")
    scoring.give_feedback(right, owner, "right")
    assert Annotation.objects.get(tracker=tracker, segment=wrong.segment).answer == "no"
    mark = Annotation.objects.get(tracker=tracker, segment=right.segment)
    assert mark.answer == "yes" and mark.strategy == Strategy.FEEDBACK
    with pytest.raises(scoring.FeedbackRefused, match="not a verdict"):
        scoring.give_feedback(right, owner, "maybe")
    with django_capture_on_commit_callbacks(execute=True):
        run, created = labeling_services.request_training(tracker)
    run.refresh_from_db()
    assert created and run.state == TrainingState.SUCCEEDED
    assert run.label_counts["no"] == before.label_counts["no"] + 1
    assert run.label_counts["yes"] == before.label_counts["yes"] + 1


def test_feedback_on_a_dataset_the_tracker_did_not_learn_from_brings_it_into_the_pool(
    two_live, workspace, owner, django_capture_on_commit_callbacks
):
    from tests.test_game import corpus

    production = DatasetFactory(workspace=workspace, name="Production calls")
    with django_capture_on_commit_callbacks(execute=True):
        imports.start_import(dataset=production, user=owner, filename="prod.csv", data=corpus())
    production.refresh_from_db()
    tracker = two_live[0]
    with django_capture_on_commit_callbacks(execute=True):
        job = scoring.start_scoring(dataset=production, user=owner, trackers=[tracker])
    result = ScoredSegment.objects.filter(job=job).select_related("version__tracker", "segment").first()
    scoring.give_feedback(result, owner, "right")
    assert tracker.datasets.filter(pk=production.pk).exists()
    from labeling import game

    inputs = game.loop_inputs(tracker)
    key = (production.pk, result.segment.vector_row)
    assert inputs.pool.index_of()[key] in set(inputs.answers.rows.tolist())


def test_the_results_page_shows_matches_in_context_and_marks_them_with_one_key(
    owner_client, done_job, two_live, embedded
):
    page = owner_client.get(reverse("dataset-scoring", args=[embedded.code]))
    assert page.status_code == 200 and "Wants to cancel" in page.content.decode()
    started = owner_client.post(
        reverse("dataset-scoring", args=[embedded.code]), {"trackers": [two_live[1].pk]}
    )
    assert started.status_code == 302
    page = owner_client.get(reverse("scoring-job", args=[done_job.code]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'aria-label="score histogram of Wants to cancel"' in html and "100%" in html
    top = ScoredSegment.objects.filter(job=done_job).order_by("-score", "id").first()
    assert f'id="result-{top.pk}"' in html and 'data-key="y"' in html and 'data-key="n"' in html
    assert "js/review.js" in html
    response = owner_client.post(
        reverse("scoring-feedback", args=[done_job.code, top.pk]),
        {"verdict": "wrong"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and "marked-wrong" in response.content.decode()
    top.refresh_from_db()
    assert top.feedback == "wrong" and top.feedback_by.username == "olivia"
    filtered = owner_client.get(
        reverse("scoring-job", args=[done_job.code]), {"tracker": str(two_live[0].code), "min_score": "0.99"}
    )
    assert filtered.status_code == 200
    shown = filtered.content.decode().count("data-result")
    assert shown == min(25, ScoredSegment.objects.filter(job=done_job, score__gte=0.99).count())


def test_viewers_cannot_mark_and_strangers_see_nothing(client, done_job, workspace, stranger):
    viewer = MembershipFactory(workspace=workspace, user=UserFactory(username="vera"), role=Role.VIEWER).user
    result = ScoredSegment.objects.filter(job=done_job).first()
    client.force_login(viewer)
    assert "data-key" not in client.get(reverse("scoring-job", args=[done_job.code])).content.decode()
    assert (
        client.post(
            reverse("scoring-feedback", args=[done_job.code, result.pk]), {"verdict": "right"}
        ).status_code
        == 403
    )
    client.force_login(stranger)
    assert client.get(reverse("scoring-job", args=[done_job.code])).status_code == 404


def test_bulk_scoring_through_the_api(
    client, two_live, embedded, workspace, owner, key, django_capture_on_commit_callbacks
):
    from serving.models import ApiKey

    wants = two_live[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/datasets/{embedded.code}/score",
            {"trackers": [str(wants.code)]},
            content_type="application/json",
            headers=key,
        )
    assert response.status_code == 202, response.content
    code = response.json()["code"]
    status = client.get(f"/api/v1/scoring/{code}", headers=key).json()
    assert status["state"] == "succeeded" and status["percent"] == 100
    assert status["trackers"][0]["tracker"] == str(wants.code) and status["trackers"][0]["scored"] == 116
    page = client.get(f"/api/v1/scoring/{code}/results?limit=5&min_score=0.5", headers=key).json()
    assert page["count"] >= len(page["items"]) > 0 and all(i["score"] >= 0.5 for i in page["items"])
    past = client.get(f"/api/v1/scoring/{code}/results?offset=10000000", headers=key)
    assert past.status_code == 200 and past.json()["items"] == []
    for query, field in (
        ("offset=9223372036854775807", "offset"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
    ):
        refused = client.get(f"/api/v1/scoring/{code}/results?{query}", headers=key)
        assert refused.status_code == 422, (query, refused.content)
        assert refused.json()["detail"][0]["loc"][-1] == field
    item = page["items"][0]
    marked = client.post(
        f"/api/v1/scoring/{code}/results/{item['id']}/feedback",
        {"verdict": "right"},
        content_type="application/json",
        headers=key,
    )
    assert marked.status_code == 200 and marked.json()["feedback"] == "right"
    bad = client.post(
        f"/api/v1/scoring/{code}/results/{item['id']}/feedback",
        {"verdict": "perhaps"},
        content_type="application/json",
        headers=key,
    )
    assert bad.status_code == 422
    jsonl = client.get(f"/api/v1/scoring/{code}/download?format=jsonl", headers=key)
    every = ScoredSegment.objects.filter(job__code=code).count()
    assert jsonl.status_code == 200 and len(b"".join(jsonl.streaming_content).splitlines()) == every
    untrained = cancel_tracker(workspace, owner, embedded, name="Not yet")
    refused = client.post(
        f"/api/v1/datasets/{embedded.code}/score",
        {"trackers": [str(untrained.code)]},
        content_type="application/json",
        headers=key,
    )
    assert refused.status_code == 409 and "no live model version" in refused.json()["detail"]
    other = DatasetFactory(workspace=WorkspaceFactory(name="Elsewhere"))
    assert (
        client.post(
            f"/api/v1/datasets/{other.code}/score", {}, content_type="application/json", headers=key
        ).status_code
        == 404
    )
    _, raw = ApiKey.issue(workspace=workspace, name="predict", created_by=owner, predict_only=True)
    assert (
        client.get(f"/api/v1/scoring/{code}", headers={"Authorization": f"Bearer {raw}"}).status_code == 403
    )
    _, limited = ApiKey.issue(
        workspace=workspace, name="other only", created_by=owner, trackers=[two_live[1]]
    )
    seen = client.get(
        f"/api/v1/scoring/{code}/results", headers={"Authorization": f"Bearer {limited}"}
    ).json()
    assert seen["count"] == 0  # the job's results are of a tracker this key may not see


@pytest.mark.real_worker
@pytest.mark.django_db(transaction=True)
def test_bulk_scoring_runs_in_a_real_worker_with_progress_download_and_feedback_the_next_run_counts(
    env, dataset, workspace, owner, tmp_path, client
):
    from labeling import game
    from serving.models import ModelVersion
    from tests.test_game import corpus
    from tests.test_worker import jobs_done
    from tests.workers import start_worker, stop_worker, wait_for

    log = tmp_path / "worker.log"
    proc = start_worker({**env, "TRACKERS_SCORING_CHUNK_SEGMENTS": "20"}, log)
    try:
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
        wait_for(lambda: jobs_done(dataset), 180, "import, embed and index jobs", log)
        dataset.refresh_from_db()
        tracker = cancel_tracker(workspace, owner, dataset, round_size=10)
        while cards := [c for c in game.claim_cards(tracker, owner, n=2) if c.round == 1]:
            for card in cards:
                labeling_services.answer_card(tracker, owner, card, oracle(card))
        version = wait_for(
            lambda: ModelVersion.objects.filter(tracker=tracker, is_live=True).first(),
            120,
            "the first model version to go live",
            log,
        )
        client.force_login(owner)
        started = client.post(reverse("dataset-scoring", args=[dataset.code]), {})
        assert started.status_code == 302
        job = ScoringJob.objects.get(dataset=dataset)
        assert started["Location"] == reverse("scoring-job", args=[job.code])
        seen = []

        def finished():
            job.refresh_from_db()
            seen.append(job.processed)
            return job.is_done

        wait_for(finished, 120, "the scoring job", log, interval=0.05)
        assert job.state == WorkState.SUCCEEDED, job.error
        assert job.processed == job.total == 116 and seen == sorted(seen)
        progress = client.get(reverse("scoring-progress", args=[job.code])).content.decode()
        assert "100%" in progress and "116/116" in progress
        counts = job.result["trackers"][str(version.pk)]
        assert counts["scored"] == 116 and sum(counts["histogram"]) == 116
        response = client.get(reverse("scoring-download", args=[job.code, "csv"]))
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert len(rows) == ScoredSegment.objects.filter(job=job).count() == counts["matches"] > 0
        before = TrainingRun.objects.filter(tracker=tracker, state=TrainingState.SUCCEEDED).latest(
            "finished_at"
        )
        result = (
            ScoredSegment.objects.filter(job=job)
            .exclude(segment__annotations__tracker=tracker)
            .order_by("score")
            .first()
        )
        marked = client.post(reverse("scoring-feedback", args=[job.code, result.pk]), {"verdict": "wrong"})
        assert marked.status_code == 302
        run, created = labeling_services.request_training(tracker)
        assert created
        wait_for(
            lambda: TrainingRun.objects.filter(pk=run.pk, state=TrainingState.SUCCEEDED).exists(),
            120,
            "the training run after feedback",
            log,
        )
        run.refresh_from_db()
        assert run.label_counts["no"] == before.label_counts["no"] + 1
    finally:
        stop_worker(proc)
