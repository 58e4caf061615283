"""Model versions: one per successful run, its ONNX head equal to the in-app head, one live per
tracker, promotion and rollback, a manifest that refuses tampering, and the v1 prediction API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from django.db import IntegrityError, transaction
from django.test import Client, TestCase

from labeling import game
from labeling import services as labeling_services
from labeling.models import TrainingRun, TrainingState
from serving.ml import artifacts
from serving.models import ModelVersion
from serving.versions import runtime, services
from tests.test_game import cancel_tracker, oracle
from trackers import encoders

pytestmark = pytest.mark.django_db


def play(tracker, user, callbacks, answer=oracle) -> None:
    """Answer the current round; its last answer trains (eagerly, on commit) and publishes a version."""
    round_no = game.current_round(tracker)
    while cards := [c for c in game.claim_cards(tracker, user, n=2) if c.round == round_no]:
        for card in cards:
            with callbacks(execute=True):
                labeling_services.answer_card(tracker, user, card, answer(card))


def inverse_tracker(workspace, owner, dataset, callbacks):
    """A second live tracker over the cancel corpus that matches everything but cancellations."""
    other = cancel_tracker(workspace, owner, dataset, name="Anything but cancel")
    play(other, owner, callbacks, answer=lambda c: "no" if oracle(c) == "yes" else "yes")
    return other


def real_trained_tracker(dataset, workspace, owner, *, rounds: int):
    """The cancel tracker over the cancel corpus embedded by the real ONNX encoder, ``rounds`` rounds played."""
    from django.core.management import call_command

    from tests.test_game import corpus
    from trackers import imports

    call_command("prepare_encoder")  # a no-op once exported
    with TestCase.captureOnCommitCallbacks(execute=True):
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset)
    for _ in range(rounds):
        play(tracker, owner, TestCase.captureOnCommitCallbacks)
    return tracker


def test_a_successful_run_yields_a_version_whose_onnx_head_scores_as_the_app_does(trained, fake_encoder):
    run = TrainingRun.objects.get(tracker=trained, state=TrainingState.SUCCEEDED)
    version = ModelVersion.objects.get(tracker=trained)
    assert (version.number, version.training_run, version.is_live) == (1, run, True)  # the first goes live
    directory = Path(version.artifact_dir)
    manifest = json.loads((directory / artifacts.MANIFEST).read_text())
    assert manifest["tracker"]["code"] == str(trained.code) and manifest["version"] == 1
    assert manifest["kind"] == "concept" and manifest["labels"] == ["yes"]
    assert manifest["threshold"] == run.threshold and manifest["encoder"]["id"] == fake_encoder.encoder_id
    assert manifest["featurizer"] == {"name": run.featurizer, "params": {}}
    assert manifest["inputs"][0]["name"] == "embedding" and manifest["outputs"][0]["name"] == "scores"
    assert manifest["answers"] == run.label_counts and "onnxruntime" in manifest["libraries"]
    assert set(manifest["files"]) == {"head.onnx"}
    texts = ["please cancel my plan", "the weather is nice", "we will cancel next month", "send the invoice"]
    vectors = fake_encoder.encode(texts)
    session = ort.InferenceSession(str(directory / "head.onnx"), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"embedding": vectors})[0][:, 0]
    in_app = labeling_services.scorer_for(run).score(vectors)
    assert np.abs(exported - in_app).max() <= 1e-5


def test_every_featurizer_training_may_choose_exports_and_scores_as_the_trained_model():
    from labeling.ml.training import FEATURIZERS, scorer_of, topic_scorer_of, train_binary, train_topic
    from serving.ml.export import head_model
    from serving.ml.heads import Heads, parts_of
    from tests.test_training import separable, tokens_for, topics, worded

    def exported(scorer, vectors: np.ndarray, topic: bool, ids=None) -> np.ndarray:
        model = head_model(
            scorer.coef, scorer.intercept, topic=topic, featurizer=scorer.featurizer, ngrams=scorer.ngrams
        )
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {"embedding": vectors.astype(np.float32)}
        if ids is not None:  # padded as a batch of token ids is
            padded = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)
            for row, i in enumerate(ids):
                padded[row, : len(i)] = i
            feeds["input_ids"] = padded
        numpy_engine = Heads.of([parts_of(model)]).apply(vectors, ids)  # what serving runs
        out = session.run(None, feeds)[0]
        assert np.abs(numpy_engine - out).max() <= 1e-5
        return out

    rng = np.random.default_rng(21)
    x, y = separable(rng, n=160, margin=0.3)
    ids = worded(rng, y)
    tokens = tokens_for(ids)
    for featurizer in FEATURIZERS:
        head = train_binary(x, y, featurizers=(featurizer,), tokens=tokens)
        reads = featurizer == "ngrams"
        scores = exported(scorer_of(head), x, topic=False, ids=ids if reads else None)
        trained = head.score(x, tokens.labeled if reads else None)
        assert scores.shape == (len(x), 1) and np.abs(scores[:, 0] - trained).max() <= 1e-5, featurizer
    _, cluster, tv = topics(rng, k=4, n=400, noise=0.4)  # topic heads are trained on the vectors alone
    topic = train_topic(tv, cluster, list("abcd"))
    probabilities = exported(topic_scorer_of(topic), tv, topic=True)
    assert np.abs(probabilities - topic.model.predict_proba(tv.astype(np.float32))).max() <= 1e-5


def test_a_new_version_goes_live_unless_it_is_clearly_worse(
    trained, owner, django_capture_on_commit_callbacks
):
    first = ModelVersion.objects.get(tracker=trained)
    play(trained, owner, django_capture_on_commit_callbacks)  # round 2, answered right: as good or better
    second = ModelVersion.objects.get(tracker=trained, number=2)
    assert second.quality is not None and first.quality is not None and second.quality_interval
    assert second.is_live == (second.quality_interval[1] >= first.quality)
    # answered wrongly, round 3 makes a worse head: it waits for the owner
    live_before = services.live_version(trained)
    play(
        trained,
        owner,
        django_capture_on_commit_callbacks,
        answer=lambda c: "no" if oracle(c) == "yes" else "yes",
    )
    third = ModelVersion.objects.get(tracker=trained, number=3)
    assert third.quality_interval[1] < live_before.quality and not third.is_live
    assert services.live_version(trained) == live_before


def test_without_automatic_promotion_versions_wait_for_the_owner(
    embedded, workspace, owner, django_capture_on_commit_callbacks
):
    tracker = cancel_tracker(workspace, owner, embedded)
    services.set_automatic_promotion(tracker, False)
    play(tracker, owner, django_capture_on_commit_callbacks)
    version = ModelVersion.objects.get(tracker=tracker)
    assert not version.is_live and services.live_version(tracker) is None


def test_the_database_holds_exactly_one_live_version(trained, owner, django_capture_on_commit_callbacks):
    play(trained, owner, django_capture_on_commit_callbacks)
    a, b = ModelVersion.objects.filter(tracker=trained).order_by("number")
    ModelVersion.objects.filter(pk__in=[a.pk, b.pk]).update(is_live=False)
    ModelVersion.objects.filter(pk=a.pk).update(is_live=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=b.pk).update(is_live=True)
    services.promote(b, owner)
    assert list(ModelVersion.objects.filter(tracker=trained, is_live=True)) == [b]
    services.promote(a, owner)  # roll back
    a.refresh_from_db()
    assert a.is_live and a.went_live_by == owner and services.live_version(trained) == a


def test_publishing_twice_writes_one_version(trained):
    run = TrainingRun.objects.get(tracker=trained, state=TrainingState.SUCCEEDED)
    assert services.publish_version(run) == ModelVersion.objects.get(tracker=trained)
    assert ModelVersion.objects.filter(tracker=trained).count() == 1


def test_a_tampered_or_foreign_version_is_refused(trained, fake_encoder):
    version = ModelVersion.objects.get(tracker=trained)
    runtime._heads.clear()
    with pytest.raises(artifacts.ArtifactMismatch, match="trained on vectors of fake-bag-of-words:64"):
        runtime.head_of(version, "all-MiniLM-L6-v2:int8:5b5d756d2507")
    head = Path(version.artifact_dir) / "head.onnx"
    head.write_bytes(head.read_bytes() + b"\0")
    with pytest.raises(artifacts.ArtifactMismatch, match="does not match the sha256 its manifest lists"):
        runtime.head_of(version, fake_encoder.encoder_id)
    manifest = Path(version.artifact_dir) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 7'))
    with pytest.raises(artifacts.ArtifactMismatch, match="is not the manifest this version was written with"):
        runtime.head_of(version, fake_encoder.encoder_id)


def live_threshold(tracker, user, value):
    """The owner moves the live version's threshold, as the tracker page's slider does."""
    services.set_threshold(ModelVersion.objects.get(tracker=tracker, is_live=True), user, value)


def predict(client, tracker, key, **body):
    from serving.predict.api import PredictOut

    response = client.post(
        f"/api/v1/trackers/{tracker.code}/predict", body, content_type="application/json", headers=key
    )
    if response.status_code == 200:  # written without the response model: it must still match it
        assert response["Content-Type"].startswith("application/json")
        PredictOut.model_validate_json(response.content, strict=True)
    return response


def test_predict_scores_texts_with_the_live_version_or_a_pinned_one(
    client, trained, owner, key, fake_encoder, django_capture_on_commit_callbacks
):
    texts = ["please cancel my plan (9)", "the weather is nice today"]
    response = predict(client, trained, key, texts=texts)
    assert response.status_code == 200, response.content
    body = response.json()
    run = TrainingRun.objects.get(tracker=trained, state=TrainingState.SUCCEEDED)
    expected = labeling_services.scorer_for(run).score(fake_encoder.encode(texts))
    assert body["version"] == 1 and body["live"] and body["threshold_source"] == "training"
    assert body["threshold"] == pytest.approx(run.threshold)
    assert [r["score"] for r in body["results"]] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [r["match"] for r in body["results"]] == [bool(s >= run.threshold) for s in expected]
    assert [r["label"] for r in body["results"]] == ["yes" if s >= run.threshold else "no" for s in expected]
    # the owner's threshold answers once set, and says so
    live_threshold(trained, owner, 0.999)
    body = predict(client, trained, key, texts=texts).json()
    assert body["threshold"] == 0.999 and body["threshold_source"] == "owner"
    play(trained, owner, django_capture_on_commit_callbacks)
    assert predict(client, trained, key, texts=texts, version=1).json()["version"] == 1
    assert predict(client, trained, key, texts=texts, version=9).status_code == 404


def test_each_version_answers_with_its_own_threshold_live_pinned_or_rolled_back(
    client, trained, owner, key, django_capture_on_commit_callbacks
):
    play(trained, owner, django_capture_on_commit_callbacks)
    v1, v2 = ModelVersion.objects.filter(tracker=trained).order_by("number")
    texts = ["please cancel my plan (9)", "the weather is nice today", "cancel it now"]

    def answer(**pin):
        body = predict(client, trained, key, texts=texts, **pin).json()
        decided = [r["score"] >= np.float32(body["threshold"]) for r in body["results"]]
        assert [r["match"] for r in body["results"]] == decided  # at the threshold it reports
        return body["version"], body["threshold"], body["threshold_source"]

    services.promote(v2, owner)
    live_threshold(trained, owner, 0.9)  # version 2's
    assert answer() == (2, 0.9, "owner")
    assert answer(version=1) == (1, pytest.approx(v1.threshold), "training")  # pinned: its own
    services.promote(v1, owner)  # a rollback: version 1's own threshold, not the one set for 2
    assert answer() == (1, pytest.approx(v1.threshold), "training")
    live_threshold(trained, owner, 0.2)
    services.promote(v2, owner)
    assert answer() == (2, 0.9, "owner")
    assert answer(version=1) == (1, 0.2, "owner")
    with pytest.raises(services.ThresholdRefused, match="version 1 is not live"):
        services.set_threshold(ModelVersion.objects.get(pk=v1.pk), owner, 0.5)


def test_promote_and_roll_back_through_the_api(
    client, trained, owner, key, django_capture_on_commit_callbacks
):
    play(trained, owner, django_capture_on_commit_callbacks)
    url = f"/api/v1/trackers/{trained.code}/versions"
    listed = client.get(url, headers=key).json()
    assert [v["number"] for v in listed] == [2, 1]
    run = ModelVersion.objects.get(tracker=trained, number=2).training_run
    assert (
        listed[0]["featurizer"] == run.featurizer == "embedding"
        and listed[0]["label_counts"] == run.label_counts
    )
    assert (
        listed[0]["threshold"] == run.threshold
        and listed[0]["metrics"]["estimates"] == run.metrics["estimates"]
    )
    response = client.post(f"{url}/1/promote", headers=key)
    assert response.status_code == 200 and response.json()["is_live"]
    assert predict(client, trained, key, texts=["x"]).json()["version"] == 1
    assert client.post(f"{url}/2/promote", headers=key).json()["number"] == 2
    assert predict(client, trained, key, texts=["x"]).json()["version"] == 2


def test_predict_refuses_what_it_cannot_answer(client, trained, embedded, workspace, owner, key, viewer):
    assert predict(client, trained, key, texts=[]).status_code == 422
    assert predict(client, trained, key, texts=["x"] * 65).status_code == 422
    assert predict(client, trained, key, texts=["x" * 10_001]).status_code == 422
    assert predict(client, trained, key, texts=["bad \ud800"]).status_code == 422
    assert predict(client, trained, {"Authorization": "Bearer trk_nope"}, texts=["x"]).status_code == 401
    untrained = cancel_tracker(workspace, owner, embedded, name="Not trained yet")
    response = predict(client, untrained, key, texts=["x"])
    assert response.status_code == 409 and "has no live model version yet" in response.json()["detail"]


# --- the tracker page's versions panel ---------------------------------------------------


def test_the_tracker_page_loads_the_versions_panel_and_owners_promote_and_roll_back(
    client, trained, owner, viewer, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    play(trained, owner, django_capture_on_commit_callbacks)
    first, second = ModelVersion.objects.filter(tracker=trained).order_by("number")
    client.force_login(owner)
    page = client.get(reverse("tracker", args=[trained.code])).content.decode()
    assert f'hx-get="{reverse("tracker-versions", args=[trained.code])}"' in page
    services.promote(second, owner)
    panel = client.get(reverse("tracker-versions", args=[trained.code])).content.decode()
    assert 'id="version-2" class="live"' in panel and "Roll back to v1" in panel
    assert reverse("tracker-version-download", args=[trained.code, 1]) in panel
    low, high = second.quality_interval  # each version's estimate with its interval
    assert f'{second.quality:.2f} <span class="small muted">({low:.2f}–{high:.2f})</span>' in panel
    counts = second.training_run.label_counts  # the answers each version learned from
    assert (
        f"yes {counts['yes']}, no {counts['no']}" in panel
        or f"no {counts['no']}, yes {counts['yes']}" in panel
    )
    rolled = client.post(reverse("tracker-version-promote", args=[trained.code, 1]), HTTP_HX_REQUEST="true")
    assert rolled.status_code == 200 and 'id="version-1" class="live"' in rolled.content.decode()
    assert services.live_version(trained) == first
    # without htmx (the tracker page's own button), back to the page
    again = client.post(reverse("tracker-version-promote", args=[trained.code, 2]))
    assert again.status_code == 302 and again["Location"] == reverse("tracker", args=[trained.code])
    services.promote(first, owner)
    off = client.post(reverse("tracker-versions-automatic", args=[trained.code]), {"on": "0"})
    assert "Promote automatically" in off.content.decode()
    assert not services.promotes_automatically(trained)
    client.force_login(viewer)
    assert client.post(reverse("tracker-version-promote", args=[trained.code, 2])).status_code == 403
    assert "Roll back" not in client.get(reverse("tracker-versions", args=[trained.code])).content.decode()
    assert services.live_version(trained) == first


# --- the standalone download, with the real encoder ---------------------------------------


@pytest.mark.real_encoder
@pytest.mark.parametrize("features", ["embedding", "ngrams"])
def test_the_downloaded_model_runs_with_onnxruntime_and_tokenizers_alone_and_scores_as_the_app(
    client, dataset, workspace, owner, tmp_path, monkeypatch, features
):
    import io
    import zipfile

    from django.urls import reverse
    from tokenizers import Tokenizer

    from labeling.ml import training

    monkeypatch.setattr(training, "FEATURIZERS", (features,))  # the heads read what training offers
    tracker = real_trained_tracker(dataset, workspace, owner, rounds=1)
    version = ModelVersion.objects.get(tracker=tracker)
    assert version.training_run.featurizer == features
    client.force_login(owner)
    response = client.get(reverse("tracker-version-download", args=[tracker.code, 1]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert set(archive.namelist()) == {"model.onnx", "tokenizer.json", "manifest.json"}
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["version"] == 1 and manifest["standalone"]["outputs"][1]["name"] == "scores"
    # what the README shows: onnxruntime and tokenizers, nothing of the app
    tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode())
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=manifest["standalone"]["tokenizer"]["pad_id"])
    tokenizer.enable_truncation(max_length=manifest["standalone"]["tokenizer"]["max_tokens"])
    session = ort.InferenceSession(archive.read("model.onnx"), providers=["CPUExecutionProvider"])
    texts = ["please cancel my subscription today", "the weather is lovely", "we plan to end the contract"]
    scores = []
    for text in texts:  # one at a time, as the app encodes a text
        enc = tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        scores.append(session.run(["scores"], feeds)[0][0, 0])
    vectors, encoder_id = runtime.embed(texts, services.encoder_id_of(tracker))
    ids = encoders.get_encoder(encoder_id).token_ids(texts)
    answers, _ = runtime.answers(version, runtime.head_of(version, encoder_id), vectors, 0.5, ids)
    in_app = [a.score for a in answers]
    api_scores = client.post(
        f"/api/v1/trackers/{tracker.code}/predict", {"texts": texts}, content_type="application/json"
    ).json()["results"]
    assert [r["score"] for r in api_scores] == pytest.approx(in_app, abs=1e-7)  # the API's path
    assert np.abs(np.asarray(scores) - np.asarray(in_app)).max() <= 1e-5
    # the documented snippet (docs/api.md), as printed there, in a process without the app
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    readme = (REPO / "docs" / "api.md").read_text()
    snippet = readme.split("**Run a downloaded model without the app.**", 1)[1].split("```python\n", 1)[1]
    snippet = snippet.split("```", 1)[0]
    path = tmp_path / "model.zip"
    path.write_bytes(
        b"".join(client.get(reverse("tracker-version-download", args=[tracker.code, 1])).streaming_content)
    )
    code = snippet.replace('"wants-to-cancel-v3.zip"', repr(str(path)))
    code = code.replace('["I want to cancel my plan", "thanks for the demo"]', repr(texts))
    assert code != snippet
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [float(m) for m in re.findall(r"\[([-0-9.e]+)\]", done.stdout)]
    assert np.abs(np.asarray(printed) - np.asarray(in_app)).max() <= 1e-5
    # after the owner moves the threshold, a new download decides as the API does
    low, mid = sorted(in_app)[:2]
    middle = round((low + mid) / 2, 6)  # between two scores, far from both: one text is not a match
    assert (
        client.post(reverse("tracker-threshold", args=[tracker.code]), {"threshold": str(middle)}).status_code
        == 302
    )
    path.write_bytes(
        b"".join(client.get(reverse("tracker-version-download", args=[tracker.code, 1])).streaming_content)
    )
    moved = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert moved.returncode == 0, moved.stderr
    decided = re.findall(r"-> (match|no match) \[", moved.stdout)
    api = client.post(
        f"/api/v1/trackers/{tracker.code}/predict", {"texts": texts}, content_type="application/json"
    ).json()
    assert api["threshold"] == middle and api["threshold_source"] == "owner"
    assert decided == ["match" if r["match"] else "no match" for r in api["results"]]
    assert "match" in decided and "no match" in decided
    assert json.loads(zipfile.ZipFile(path).read("manifest.json"))["threshold"] == middle


@pytest.mark.real_encoder
def test_a_texts_score_is_the_same_alone_and_in_any_batch_and_its_vector_is_the_stored_one(
    client, dataset, workspace, owner, key
):
    from trackers import services as corpus_services
    from trackers.models import Segment

    tracker = real_trained_tracker(dataset, workspace, owner, rounds=1)
    segments = list(Segment.objects.filter(dataset=dataset).order_by("id")[:40])
    texts = [s.text for s in segments]
    alone = [predict(client, tracker, key, texts=[t]).json()["results"][0]["score"] for t in texts]
    batched = [r["score"] for r in predict(client, tracker, key, texts=texts).json()["results"]]
    reversed_ = [r["score"] for r in predict(client, tracker, key, texts=texts[::-1]).json()["results"]][::-1]
    assert alone == batched == reversed_
    # every tracker at once, and bulk scoring, apply the heads stacked: the same scores again
    body = many(client, workspace, key, texts=texts).json()
    matched = {seg["position"]: m["score"] for seg in body["segments"] for m in seg["matches"]}
    assert matched and all(score == alone[position] for position, score in matched.items())
    # the vectors served are the ones stored at import, that the head was trained on
    encoder_id = services.encoder_id_of(tracker)
    served, _ = runtime.embed(texts, encoder_id)
    stored = corpus_services.vector_store(dataset).get([s.vector_row for s in segments])
    assert np.array_equal(served, stored)
    version = ModelVersion.objects.get(tracker=tracker)
    assert runtime.stack_of([version], encoder_id).matrix(stored)[:, 0].tolist() == alone


def test_health_and_readiness_need_no_key_and_say_what_is_not_ready(client, trained, monkeypatch):
    from serving.predict import api as serving_api

    monkeypatch.setattr(serving_api, "_ready", None)
    assert client.get("/api/v1/health").json() == {"status": "ok"}
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 200 and ready.json()["live_versions"] == 1
    version = ModelVersion.objects.get(tracker=trained)
    runtime._heads.clear()
    (Path(version.artifact_dir) / "head.onnx").write_bytes(b"broken")
    calls = []
    monkeypatch.setattr(
        serving_api, "_readiness", lambda real=serving_api._readiness: calls.append(1) or real()
    )
    kept = client.get("/api/v1/ready")  # within the second: the kept answer, no new check
    assert kept.status_code == 200 and calls == []
    monkeypatch.setattr(serving_api, "READY_KEEP_S", 0.0)
    broken = client.get("/api/v1/ready")
    status = broken.json()["status"]
    assert broken.status_code == 503 and calls == [1]
    assert "head.onnx does not match the sha256 its manifest lists" in status
    assert str(version.artifact_dir) not in status and "/" not in status.split("cannot serve:")[1]


def test_a_body_over_the_limit_is_413_and_too_many_requests_429_with_retry_after(
    client, trained, key, settings, workspace, owner, monkeypatch
):
    from types import SimpleNamespace

    from serving.models import ApiKey
    from trackers import rates

    settings.API_V1_MAX_BODY_BYTES = 2_000
    big = predict(client, trained, key, texts=["x" * 3_000])
    assert big.status_code == 413 and "the limit for a prediction request is 2.0 kB" in big.json()["detail"]
    settings.API_V1_RATE = "3/m"
    clock = SimpleNamespace(now=1_800_000_000.0)
    monkeypatch.setattr(rates, "clock", lambda: clock.now)
    _, raw = ApiKey.issue(workspace=workspace, name="burst", created_by=owner)
    burst = {"Authorization": f"Bearer {raw}"}
    codes = [predict(client, trained, burst, texts=["x"]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = predict(client, trained, burst, texts=["x"])
    wait = int(refused["Retry-After"])
    assert refused.status_code == 429 and 0 < wait <= 60
    assert predict(client, trained, key, texts=["x"]).status_code == 200  # another key has its own count
    clock.now += wait - 1
    assert predict(client, trained, burst, texts=["x"]).status_code == 429  # still in the window
    clock.now += 1
    again = [predict(client, trained, burst, texts=["x"]).status_code for _ in range(4)]
    assert again == [200, 200, 200, 429]  # a new window counts from zero
    assert client.get("/api/v1/health").status_code == 200  # health is never throttled


def wsgi_call(path, body=None, headers=None):
    """A request through ``config.wsgi.application`` as a server hands it over: (status, headers, body).
    It runs in the test's thread and transaction: as Django's test client does, the end of the request
    must not close that connection."""
    import io

    from django.core import signals
    from django.db import close_old_connections

    from config.wsgi import application

    data = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": "POST" if body is not None else "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(data),
        "CONTENT_LENGTH": str(len(data)),
        "CONTENT_TYPE": "application/json",
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()},
    }
    started = []
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        chunks = application(
            environ, lambda status, response_headers: started.append((status, response_headers))
        )
        content = b"".join(chunks)
        chunks.close()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    status, response_headers = started[0]
    return int(status.split()[0]), dict(response_headers), content


def test_a_programs_prediction_call_takes_the_lean_path_and_a_browsers_the_whole_one(
    client, trained, owner, key, monkeypatch
):
    import config.wsgi as wsgi

    served = []
    for name in ("lean", "full"):
        handler = getattr(wsgi, name)
        monkeypatch.setattr(wsgi, name, lambda e, s, h=handler, n=name: served.append(n) or h(e, s))
    url = f"/api/v1/trackers/{trained.code}/predict"
    texts = {"texts": ["please cancel my plan (9)", "the weather is nice today"]}
    status, headers, content = wsgi_call(url, texts, key)
    assert (status, served) == (200, ["lean"])
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert json.loads(content) == predict(client, trained, key, **texts).json()  # as the whole stack answers
    assert wsgi_call(url, texts)[0] == 401  # no key, no cookie: 401, on the lean path too
    assert wsgi_call("/api/v1/health")[0] == 200 and served[-1] == "lean"
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    status, _, content = wsgi_call(url, texts, {"Cookie": cookie})
    assert (status, served[-1]) == (403, "full") and b"CSRF" in content  # a session's POST needs its token
    assert wsgi_call(f"/api/v1/trackers/{trained.code}/versions", headers={"Cookie": cookie})[0] == 200


# --- API keys: the page, limits to trackers and to prediction ------------------------------


def test_keys_are_made_on_a_page_shown_once_stored_hashed_and_revoked(
    client, trained, owner, viewer, workspace
):
    from django.urls import reverse

    from serving.models import ApiKey, hash_key

    client.force_login(owner)
    url = reverse("api-keys", args=[workspace.code])
    made = client.post(
        url, {"name": "crm", "role": "labeler", "predict_only": "on", "trackers": [trained.pk]}
    )
    html = made.content.decode()
    raw = html.split('<code id="new-key-value">', 1)[1].split("</code>", 1)[0]
    key = ApiKey.objects.get(name="crm")
    assert raw.startswith("trk_") and key.key_hash == hash_key(raw) and raw not in key.prefix + key.key_hash
    assert key.prefix == raw[:12] and key.predict_only and list(key.trackers.all()) == [trained]
    listed = client.get(url).content.decode()
    assert raw not in listed and f"{key.prefix}…" in listed and "prediction only" in listed
    assert predict(client, trained, {"Authorization": f"Bearer {raw}"}, texts=["x"]).status_code == 200
    client.post(reverse("api-key-revoke", args=[workspace.code, key.pk]))
    client.logout()
    assert predict(client, trained, {"Authorization": f"Bearer {raw}"}, texts=["x"]).status_code == 401
    client.force_login(viewer)
    assert client.get(url).status_code == 403


def test_a_limited_key_sees_only_its_trackers_and_a_prediction_key_only_predicts(
    client, trained, embedded, workspace, owner
):
    from serving.models import ApiKey

    other = cancel_tracker(workspace, owner, embedded, name="Another tracker")
    _, limited = ApiKey.issue(workspace=workspace, name="one", created_by=owner, trackers=[trained])
    headers = {"Authorization": f"Bearer {limited}"}
    assert predict(client, trained, headers, texts=["x"]).status_code == 200
    assert predict(client, other, headers, texts=["x"]).status_code == 404
    listed = client.get(f"/api/workspaces/{workspace.code}/trackers", headers=headers).json()
    assert [t["code"] for t in listed] == [str(trained.code)]
    _, pred = ApiKey.issue(workspace=workspace, name="pred", created_by=owner, predict_only=True)
    headers = {"Authorization": f"Bearer {pred}"}
    assert predict(client, other, headers, texts=["x"]).status_code == 409  # it may predict (no version yet)
    assert client.get(f"/api/v1/trackers/{trained.code}/versions", headers=headers).status_code == 200
    refused = client.post(f"/api/v1/trackers/{trained.code}/versions/1/promote", headers=headers)
    assert refused.status_code == 403 and "may only predict" in refused.json()["detail"]
    assert client.get(f"/api/workspaces/{workspace.code}/trackers", headers=headers).status_code == 403
    with pytest.raises(ValueError, match="trackers of its own workspace"):
        from tests.factories import WorkspaceFactory

        ApiKey.issue(workspace=WorkspaceFactory(), name="x", created_by=owner, trackers=[trained])


def test_keys_through_the_api(client, trained, workspace, key):
    url = f"/api/v1/workspaces/{workspace.code}/keys"
    made = client.post(
        url,
        {"name": "pipeline", "predict_only": True, "trackers": [str(trained.code)]},
        content_type="application/json",
        headers=key,
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["key"].startswith(body["prefix"]) and body["trackers"] == [str(trained.code)]
    listed = client.get(url, headers=key).json()
    assert body["key"] not in str(listed) and {k["name"] for k in listed} == {"integration", "pipeline"}
    new = {"Authorization": f"Bearer {body['key']}"}
    assert predict(client, trained, new, texts=["x"]).status_code == 200
    assert client.get(url, headers=new).status_code == 403  # prediction only
    revoked = client.post(f"{url}/{body['id']}/revoke", headers=key)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert predict(client, trained, new, texts=["x"]).status_code == 401
    bad = client.post(
        url, {"name": "x", "trackers": [str(workspace.code)]}, content_type="application/json", headers=key
    )
    assert bad.status_code == 422 and "every code must be a tracker of this workspace" in bad.json()["detail"]


def test_predicting_with_a_tampered_version_answers_503_saying_why(client, trained, key):
    version = ModelVersion.objects.get(tracker=trained)
    runtime._heads.clear()
    (Path(version.artifact_dir) / "head.onnx").write_bytes(b"tampered")
    response = predict(client, trained, key, texts=["x"])
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "this model version cannot serve: its head.onnx does not match the sha256 its manifest lists"
    )


# --- many trackers at once ------------------------------------------------------------------


def many(client, workspace, key, **body):
    from serving.predict.api import ManyOut

    response = client.post(
        f"/api/v1/workspaces/{workspace.code}/predict", body, content_type="application/json", headers=key
    )
    if response.status_code == 200:  # written without the response model: it must still match it
        assert response["Content-Type"].startswith("application/json")
        ManyOut.model_validate_json(response.content, strict=True)
    return response


def test_every_live_tracker_on_texts_gives_each_texts_matches(
    client, trained, embedded, workspace, owner, key, django_capture_on_commit_callbacks
):
    other = inverse_tracker(workspace, owner, embedded, django_capture_on_commit_callbacks)
    texts = ["please cancel my plan (3)", "the weather is nice today (2)", "cancel the plan before renewal"]
    body = many(client, workspace, key, texts=texts).json()
    assert {t["name"] for t in body["trackers"]} == {"Wants to cancel", "Anything but cancel"}
    for tracker in (trained, other):
        single = predict(client, tracker, key, texts=texts).json()["results"]
        got = [
            next((m for m in seg["matches"] if m["tracker"] == str(tracker.code)), None)
            for seg in body["segments"]
        ]
        assert [m is not None for m in got] == [r["match"] for r in single]
        assert [m["score"] for m in got if m] == [r["score"] for r in single if r["match"]]
    assert [s["position"] for s in body["segments"]] == [0, 1, 2] and body["documents"] == []
    only = many(client, workspace, key, texts=texts, trackers=[str(other.code)]).json()
    assert [t["tracker"] for t in only["trackers"]] == [str(other.code)]
    assert many(client, workspace, key, texts=texts, trackers=[str(workspace.code)]).status_code == 404
    assert many(client, workspace, key, texts=texts, transcript={"turns": [{"text": "x"}]}).status_code == 422
    assert many(client, workspace, key).status_code == 422


def test_a_transcript_gives_matches_per_turn_and_per_call_for_document_trackers(
    client, dataset, workspace, owner, key, fake_encoder
):
    from tests.test_documents import calls_tracker, is_cancel
    from tests.test_topics import play_round

    tracker = calls_tracker(dataset, owner, workspace, speaker_filter="customer")
    for _ in range(2):
        play_round(tracker, owner, lambda card: "yes" if is_cancel(card.segment.document) else "no")
    version = services.live_version(tracker)
    assert version is not None
    turns = [
        {"speaker": "agent", "text": "good morning how can I help"},
        {"speaker": "customer", "text": "I want to cancel my subscription today"},
        {"speaker": "agent", "text": "I am sorry to hear that"},
        {"speaker": "customer", "text": "thanks for your patience"},
    ]
    body = many(client, workspace, key, transcript={"title": "a call", "turns": turns}).json()
    assert [(s["position"], s["speaker"]) for s in body["segments"]] == [
        (i, t["speaker"]) for i, t in enumerate(turns)
    ]
    assert all(s["matches"] == [] for s in body["segments"])  # a document tracker does not score turns
    # the call's vector: the customer's lines only (the tracker's speaker filter), as in training
    lines = fake_encoder.encode([turns[1]["text"], turns[3]["text"]]).sum(axis=0)
    call = (lines / np.linalg.norm(lines))[None, :].astype(np.float32)
    score = float(labeling_services.scorer_for(version.training_run).score(call)[0])
    threshold, _ = services.threshold_of(version)
    assert score >= threshold  # a cancellation call
    assert [(d["tracker"], d["version"]) for d in body["documents"]] == [(str(tracker.code), version.number)]
    assert body["documents"][0]["score"] == pytest.approx(score, abs=1e-5)
    loose = many(client, workspace, key, texts=["cancel"]).json()  # loose texts are no call
    assert loose["documents"] == [] and loose["trackers"] == []
