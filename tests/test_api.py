"""The JSON API: key auth, dataset creation, import with bad rows, job polling, search, OpenAPI."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from serving.models import ApiKey
from trackers.models import Role

pytestmark = pytest.mark.django_db


def test_create_dataset_import_poll_and_search(client, workspace, key, django_capture_on_commit_callbacks):
    created = client.post(
        f"/api/workspaces/{workspace.code}/datasets",
        {"name": "Support chats"},
        content_type="application/json",
        headers=key,
    )
    assert created.status_code == 201
    ds = created.json()["code"]
    again = client.post(
        f"/api/workspaces/{workspace.code}/datasets",
        {"name": "Support chats"},
        content_type="application/json",
        headers=key,
    )
    assert again.status_code == 409 and "already exists" in again.json()["detail"]

    data = b'{"text": "my card was stolen yesterday"}\n{"text": "what is the exchange rate for euros"}\n'
    with django_capture_on_commit_callbacks(execute=True):  # import, embed and index run on commit
        started = client.post(
            f"/api/datasets/{ds}/imports", {"file": SimpleUploadedFile("m.jsonl", data)}, headers=key
        )
    assert started.status_code == 202
    job = client.get(f"/api/jobs/{started.json()['code']}", headers=key).json()
    assert job["state"] == "succeeded" and job["percent"] == 100 and job["result"]["documents"] == 2

    info = client.get(f"/api/datasets/{ds}", headers=key).json()
    assert info["segments"] == 2 and info["vectors"] == 2 and info["index_kind"] == "flat"

    hits = client.get(f"/api/datasets/{ds}/search", {"q": "stolen card", "k": 1}, headers=key).json()
    assert [h["text"] for h in hits] == ["my card was stolen yesterday"]


def test_import_with_bad_rows_reports_them(client, dataset, key, django_capture_on_commit_callbacks):
    data = b'{"text": "fine"}\n{"text": oops}\n'
    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(
            f"/api/datasets/{dataset.code}/imports",
            {"file": SimpleUploadedFile("m.jsonl", data), "on_error": "skip"},
            headers=key,
        )
    job = client.get(f"/api/jobs/{started.json()['code']}", headers=key).json()
    assert job["state"] == "succeeded" and job["result"]["skipped"] == 1
    assert job["errors"][0]["line"] == 2 and job["errors"][0]["file"] == "m.jsonl"
    assert job["errors"][0]["message"].startswith("is not valid JSON")


def test_bad_options_and_empty_files_are_refused_with_422(client, dataset, key):
    url = f"/api/datasets/{dataset.code}/imports"
    bad = client.post(
        url, {"file": SimpleUploadedFile("a.csv", b"text\nx\n"), "on_error": "maybe"}, headers=key
    )
    assert bad.status_code == 422 and "on_error must be 'reject' or 'skip'" in bad.json()["detail"]
    empty = client.post(url, {"file": SimpleUploadedFile("a.csv", b"")}, headers=key)
    assert empty.status_code == 422 and empty.json()["detail"] == "a.csv: the file is empty"


def test_search_before_any_index_is_409(client, dataset, key):
    response = client.get(f"/api/datasets/{dataset.code}/search", {"q": "x"}, headers=key)
    assert response.status_code == 409 and "has no search index yet" in response.json()["detail"]


def test_viewer_key_cannot_import(client, workspace, dataset, owner):
    _, raw = ApiKey.issue(workspace=workspace, name="read-only", role=Role.VIEWER, created_by=owner)
    response = client.post(
        f"/api/datasets/{dataset.code}/imports",
        {"file": SimpleUploadedFile("a.csv", b"text\nx\n")},
        headers={"X-API-Key": raw},
    )
    assert response.status_code == 403


def test_session_auth_works_for_members(owner_client, workspace):
    assert [w["name"] for w in owner_client.get("/api/workspaces").json()] == [workspace.name]


def test_openapi_schema_documents_the_routes(client):
    schema = client.get("/api/openapi.json").json()
    assert "/api/datasets/{code}/imports" in schema["paths"]
    assert "/api/datasets/{code}/search" in schema["paths"]
    assert {"BearerKey", "HeaderKey"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.parametrize("path", ["/api/nope", "/api/datasets/x/y/z", "/api/<script>alert(1)</script>"])
def test_unknown_api_paths_answer_json_404_in_the_error_shape(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"} and "<script>" not in response.content.decode()
