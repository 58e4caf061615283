"""What a security and fault probe found, each refused clearly now: numbers JSON cannot hold, filters
without bounds, broken version files, paths in error texts, a limited key reading other trackers'
counts, open redirects, alerts asked by the wrong role, HTML errors and no rate under /api/, and
pages without a Content-Security-Policy or with cacheable private answers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from django.urls import reverse

from serving.models import ApiKey, ModelVersion, ScoredSegment
from serving.versions import runtime
from serving.webhooks import services as webhooks
from tests import api_world
from trackers.models import Role

pytestmark = pytest.mark.django_db


def post_json(client, url, body: str | bytes, headers, method="post"):
    return getattr(client, method)(url, body, content_type="application/json", headers=headers)


# --- 4, 5: numbers JSON cannot hold; filters without bounds ---------------------------------------


@pytest.mark.parametrize(
    ("number", "said"),
    [("NaN", "metadata_filter.region: NaN"), ("Infinity", "metadata_filter.region: Infinity"),
     ("-Infinity", "metadata_filter.region: -Infinity"), ("1e400", "metadata_filter.region: Infinity")],
)  # fmt: skip
def test_a_filter_with_a_number_json_cannot_hold_is_refused_by_the_api(client, two_live, key, number, said):
    wants = two_live[0]
    body = f'{{"url": "https://93.184.215.14/h", "metadata_filter": {{"region": {number}}}}}'
    made = post_json(client, f"/api/v1/trackers/{wants.code}/webhooks", body, key)
    assert made.status_code == 400 and made.json()["detail"].startswith(said)
    assert "is not a number JSON can hold" in made.json()["detail"]
    endpoint, _ = webhooks.create_endpoint(tracker=wants, url="https://93.184.215.14/h", user=None)
    patched = post_json(client, f"/api/v1/webhooks/{endpoint.code}", body, key, method="patch")
    assert patched.status_code == 400 and patched.json()["detail"].startswith(said)
    endpoint.refresh_from_db()
    assert endpoint.metadata_filter == {}  # nothing stored


def test_a_request_body_nested_too_deeply_or_not_json_is_a_400_saying_why(client, two_live, key):
    url = f"/api/v1/trackers/{two_live[0].code}/webhooks"
    deep = post_json(
        client, url, '{"url": "x", "metadata_filter": ' + "[" * 100_000 + "]" * 100_000 + "}", key
    )
    assert deep.status_code == 400 and deep.json()["detail"] == "the request body nests too deeply"
    broken = post_json(client, url, '{"url": ', key)
    assert broken.status_code == 400
    assert broken.json()["detail"].startswith(
        "the request body is not JSON: Expecting value (line 1, column 9)"
    )


def test_the_alerts_form_refuses_non_finite_deep_and_oversized_filters(client, two_live, owner, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    client.force_login(owner)
    url = reverse("tracker-alerts", args=[two_live[0].code])

    def refused(metadata_filter: str) -> str:
        response = client.post(
            url, {"url": "https://93.184.215.14/h", "grouping": "text", "metadata_filter": metadata_filter}
        )
        assert response.status_code == 400
        return response.content.decode()

    assert "region: NaN is not a number JSON can hold" in refused('{"region": NaN}')
    assert "region: Infinity (or a number too large, like 1e400)" in refused('{"region": 1e400}')
    assert "nests too deeply" in refused('{"a": ' + "[" * 3_000 + "]" * 3_000 + "}")
    many = json.dumps({f"k{i}": i for i in range(7_000)})
    assert "Ensure this value has at most" in refused(many)
    assert "at most 20 fields (got 21)" in refused(json.dumps({f"k{i}": i for i in range(21)}))
    assert "names and values are at most 200 characters" in refused(json.dumps({"k": "x" * 201}))
    assert not two_live[0].webhook_endpoints.exists()


def test_a_filter_made_through_the_service_is_bounded_too(two_live):
    with pytest.raises(webhooks.EndpointInvalid, match="at most 20 fields"):
        webhooks.create_endpoint(
            tracker=two_live[0],
            url="https://93.184.215.14/h",
            user=None,
            metadata_filter={f"k{i}": 1 for i in range(21)},
        )
    with pytest.raises(webhooks.EndpointInvalid, match="score: NaN is not a number JSON can hold"):
        webhooks.create_endpoint(
            tracker=two_live[0],
            url="https://93.184.215.14/h",
            user=None,
            metadata_filter={"score": float("nan")},
        )


# --- 6: broken version files -----------------------------------------------------------------------


def test_a_version_whose_files_fail_their_checksum_is_neither_downloaded_nor_promoted(
    client, two_live, owner, key
):
    from serving.versions import services

    wants = two_live[0]
    live = ModelVersion.objects.get(tracker=wants, is_live=True)
    client.force_login(owner)
    download = reverse("tracker-version-download", args=[wants.code, live.number])
    kept = services.zip_path(live)  # as if it had been built and kept before the files were broken
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert client.get(download).status_code == 200
    runtime._heads.clear()
    (Path(live.artifact_dir) / "head.onnx").write_bytes(b"tampered")
    again = client.get(download)
    assert again.status_code == 409  # checked at every download, the kept zip too
    assert again.content.decode() == (
        f"version {live.number} cannot be downloaded: its head.onnx does not match the sha256 its manifest lists"
    )
    live.is_live = False
    live.save()
    refused = client.post(f"/api/v1/trackers/{wants.code}/versions/{live.number}/promote", headers=key)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"version {live.number} cannot serve: its head.onnx does not match the sha256 its manifest lists"
    )
    page = client.post(
        reverse("tracker-version-promote", args=[wants.code, live.number]), headers={"HX-Request": "true"}
    )
    assert page.status_code == 422 and "cannot serve: its head.onnx does not match" in page.content.decode()
    assert not ModelVersion.objects.filter(tracker=wants, is_live=True).exists()


# --- 8, 9: a limited key's view of a scoring job; the feedback form's redirect -------------------------


def test_a_limited_key_sees_only_its_trackers_counts_in_a_scoring_job(client, world, workspace, owner):
    wants, other = world.tracker, world.other
    _, raw = ApiKey.issue(workspace=workspace, name="one", created_by=owner, trackers=[other])
    _, full = ApiKey.issue(workspace=workspace, name="all", created_by=owner)
    url = f"/api/v1/scoring/{world.scoring.code}"
    limited = client.get(url, headers={"Authorization": f"Bearer {raw}"}).json()["trackers"]
    everything = client.get(url, headers={"Authorization": f"Bearer {full}"}).json()["trackers"]
    assert {t["tracker"] for t in limited} == {str(other.code)}
    assert {t["tracker"] for t in everything} == {str(wants.code), str(other.code)}


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_the_scoring_feedback_form_never_redirects_off_the_site(client, world, owner, target):
    client.force_login(owner)
    url = reverse("scoring-feedback", args=[world.scoring.code, world.result.pk])
    away = client.post(url, {"verdict": "right", "next": target})
    assert away.status_code == 302 and away["Location"] == reverse("scoring-job", args=[world.scoring.code])
    back = client.post(url, {"verdict": "right", "next": "/scoring/x/?page=2"})
    assert back["Location"] == "/scoring/x/?page=2"
    assert ScoredSegment.objects.get(pk=world.result.pk).feedback == "right"


# --- 11, 12: JSON answers, rates, headers, logs ------------------------------------------------------------


def test_every_answer_under_api_is_json_even_a_too_big_body_or_a_server_error(
    client, two_live, key, monkeypatch, settings
):
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    wants = two_live[0]
    big = post_json(
        client, f"/api/workspaces/{wants.workspace.code}/datasets", '{"name": "' + "x" * 3_000_000 + '"}', key
    )
    assert big.status_code == 413 and big["Content-Type"] == "application/json; charset=utf-8"
    assert big.json()["detail"].startswith("the request body is over ")
    assert big.json()["detail"].endswith("the limit for a JSON body (send files as uploads)")

    def fail(*args, **kwargs):
        raise RuntimeError("/secret/path/of/the/install")

    monkeypatch.setattr("labeling.api.Scope.tracker", fail)
    client.raise_request_exception = False
    crashed = client.get(f"/api/trackers/{wants.code}", headers=key)
    assert crashed.status_code == 500 and crashed["Content-Type"] == "application/json"
    assert crashed.json() == {"detail": "Internal Server Error: the details are in the server's log"}
    page_404 = client.get("/w/not-a-workspace/")
    assert page_404.status_code == 404 and "text/html" in page_404["Content-Type"]


def test_the_api_beyond_v1_has_a_rate_per_key_and_search_one_of_its_own(client, embedded, key, settings):
    settings.API_RATE, settings.API_SEARCH_RATE = "5/m", "2/m"
    url = f"/api/datasets/{embedded.code}/search?q=cancel"
    assert [client.get(url, headers=key).status_code for _ in range(3)] == [200, 200, 429]
    limited = client.get(f"/api/datasets/{embedded.code}", headers=key)
    assert limited.status_code == 200  # three of five used
    assert [client.get(f"/api/datasets/{embedded.code}", headers=key).status_code for _ in range(2)] == [
        200,
        429,
    ]
    assert int(client.get(f"/api/datasets/{embedded.code}", headers=key)["Retry-After"]) >= 1


def test_pages_carry_a_content_security_policy_and_private_answers_are_not_stored(
    client, owner, workspace, key
):
    login = client.get(reverse("login"))
    policy = login["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy and "unsafe-eval" not in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    client.force_login(owner)
    page = client.get(reverse("workspace", args=[workspace.code]))
    assert "no-store" in page["Cache-Control"] and "private" in page["Cache-Control"]
    assert "<script>" not in page.content.decode()  # no inline script for the policy to block
    client.logout()
    answer = client.get("/api/workspaces", headers=key)
    assert "no-store" in answer["Cache-Control"]


def test_no_template_has_an_inline_script_or_event_handler():
    import re

    templates = Path(__file__).resolve().parent.parent / "templates"
    for path in templates.rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\")\b)[^>]*>", text), path
        assert not re.search(r"\son[a-z]+=\"", text) and "hx-on" not in text, path


def test_a_refusal_is_logged_as_one_line_without_a_traceback(client, viewer, workspace):
    import io

    from config.logfilters import OneLineRefusals

    (console,) = [
        h for h in logging.getLogger().handlers if any(isinstance(f, OneLineRefusals) for f in h.filters)
    ]
    logged = io.StringIO()
    before = console.setStream(logged)  # the app's own console handler, as configured
    try:
        client.force_login(viewer)
        assert client.get(reverse("api-keys", args=[workspace.code])).status_code == 403
    finally:
        console.setStream(before)
    import json

    records = [json.loads(line) for line in logged.getvalue().splitlines()]  # one JSON object per line
    said = [r for r in records if r["logger"] not in ("axes.handlers.database", "trackers.requests")]
    assert [r["message"] for r in said] == [f"Forbidden (Permission denied): /w/{workspace.code}/keys/"]
    assert "exc_info" not in said[0]  # no traceback
    (answered,) = [r for r in records if r["logger"] == "trackers.requests"]
    assert answered["status"] == 403 and answered["request_id"] == said[0]["request_id"]


def test_the_readiness_answer_names_no_path_when_the_encoder_cannot_load(client, monkeypatch, caplog):
    from serving.predict import api as serving_api

    def broken(*args, **kwargs):
        raise FileNotFoundError("/opt/install/var/artifacts/encoders/model.onnx")

    monkeypatch.setattr(serving_api, "_ready", None)
    monkeypatch.setattr(runtime, "embed", broken)
    with caplog.at_level(logging.WARNING):
        answer = client.get("/api/v1/ready")
    assert answer.status_code == 503
    assert answer.json()["status"] == "not ready: the encoder cannot be loaded (FileNotFoundError)"
    assert "/opt/install" in caplog.text  # the operator's log has it all


def test_only_owners_and_admins_may_ask_a_many_trackers_call_to_alert(client, two_live, workspace, owner):
    viewer = api_world.member(workspace, "vic", Role.VIEWER)
    _, raw = ApiKey.issue(workspace=workspace, name="v", created_by=viewer, role=Role.VIEWER)
    url = f"/api/v1/workspaces/{workspace.code}/predict"
    body = json.dumps({"texts": ["I want to cancel"], "alert": True})
    refused = post_json(client, url, body, {"Authorization": f"Bearer {raw}"})
    assert refused.status_code == 403 and refused.json()["detail"].startswith("alert: only owners and admins")
    assert (
        post_json(
            client, url, json.dumps({"texts": ["I want to cancel"]}), {"Authorization": f"Bearer {raw}"}
        ).status_code
        == 200
    )


def test_a_change_with_nulls_resets_what_has_a_default_and_refuses_the_rest(client, two_live, key):
    endpoint, _ = webhooks.create_endpoint(
        tracker=two_live[0], url="https://93.184.215.14/h", user=None, min_score=0.9, description="d"
    )
    url = f"/api/v1/webhooks/{endpoint.code}"
    cleared = post_json(
        client, url, '{"min_score": null, "description": null, "metadata_filter": null}', key, "patch"
    )
    assert cleared.status_code == 200, cleared.content
    assert (
        cleared.json()["min_score"],
        cleared.json()["description"],
        cleared.json()["metadata_filter"],
    ) == (None, "", {})
    for field in ("enabled", "url", "grouping", "from_api"):
        refused = post_json(client, url, f'{{"{field}": null}}', key, "patch")
        assert refused.status_code == 422 and refused.json()["detail"].startswith(
            f"{field}: null is not a value"
        )
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.url == "https://93.184.215.14/h"


def test_every_cache_object_of_a_process_shares_one_redis_connection_pool():
    """Django keeps a cache object per context, and a server may give each request a fresh context:
    the rate counter must not open a new Redis connection for each request."""
    import contextvars

    from django.core.cache import caches

    pools = set()

    def pool_of_this_context() -> None:
        pools.add(id(caches["default"]._cache.get_client(write=True).connection_pool))

    for _ in range(3):
        contextvars.Context().run(pool_of_this_context)
    assert len(pools) == 1


def test_predictions_go_on_when_redis_does_not_answer_and_the_rate_is_not_counted(
    client, two_live, key, settings, caplog, monkeypatch
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "unix:///nonexistent/redis.sock",
            "OPTIONS": {"pool_class": "trackers.http.SharedPool"},
        }
    }
    settings.API_V1_RATE = "1/m"
    monkeypatch.setattr("trackers.http._redis_down_said", -60.0)
    url = f"/api/v1/trackers/{two_live[0].code}/predict"
    with caplog.at_level(logging.WARNING):
        answers = [post_json(client, url, '{"texts": ["cancel it"]}', key).status_code for _ in range(3)]
    assert answers == [200, 200, 200]  # fails open: a count Redis cannot keep stops no request
    assert "the API's rate is not counted: Redis does not answer" in caplog.text
