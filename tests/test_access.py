"""Every page and API route hides other workspaces' objects: strangers get 404, never 403."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from serving.models import ApiKey, ScoringJob, WebhookEndpoint
from serving.webhooks.outbound import new_secret
from tests.factories import DocumentFactory, MembershipFactory, SegmentFactory, UserFactory
from trackers.models import Job, JobKind, Role, Tracker

pytestmark = pytest.mark.django_db

# Every URL name that takes an object code, with the kind of object it takes.
OBJECT_URLS = {
    "workspace": "workspace",
    "dataset-create": "workspace",
    "dataset": "dataset",
    "dataset-upload": "dataset",
    "dataset-activity": "dataset",
    "search": "dataset",
    "document": "document",
    "job": "job",
    "job-progress": "job",
    "trackers": "workspace",
    "tracker-create": "workspace",
    "tracker": "tracker",
    "tracker-train": "tracker",
    "tracker-check": "tracker",
    "tracker-threshold": "tracker",
    "play": "tracker",
    "answer": "tracker",
    "undo": "tracker",
    "round-summary": "tracker",
    "labels": "tracker",
    "api-keys": "workspace",
    "api-key-revoke": "workspace",
    "tracker-versions": "tracker",
    "tracker-versions-automatic": "tracker",
    "tracker-version-promote": "tracker",
    "tracker-version-download": "tracker",
    "dataset-scoring": "dataset",
    "scoring-job": "scoring",
    "scoring-progress": "scoring",
    "scoring-download": "scoring",
    "scoring-feedback": "scoring",
    "tracker-alerts": "tracker",
    "alert-endpoint": "endpoint",
    "alert-action": "endpoint",
    "members": "workspace",
    "member-invite": "workspace",
    "member-role": "workspace",
    "member-remove": "workspace",
    "invitation-revoke": "workspace",
    "audit": "workspace",
    "workspace-console": "workspace",
    "console-retry": "job",
    "workspace-delete": "workspace",
    "dataset-delete": "dataset",
    "tracker-delete": "tracker",
    "tracker-settings": "tracker",
    "tracker-live": "tracker",
    "tracker-live-keeping": "tracker",
    "tracker-live-review": "tracker",
}
POST_ONLY = {
    "dataset-create",
    "dataset-upload",
    "tracker-train",
    "tracker-check",
    "tracker-threshold",
    "answer",
    "undo",
    "tracker-versions-automatic",
    "tracker-version-promote",
    "api-key-revoke",
    "scoring-feedback",
    "alert-action",
    "member-invite",
    "member-role",
    "member-remove",
    "invitation-revoke",
    "console-retry",
    "tracker-live-keeping",
    "tracker-live-review",
}
# a version number, a key id, a download's format, a result id
MORE_ARGS = {
    "tracker-version-promote": [1],
    "tracker-version-download": [1],
    "api-key-revoke": [1],
    "scoring-download": ["csv"],
    "scoring-feedback": [1],
    "alert-action": ["test"],
    "member-role": [1],
    "member-remove": [1],
    "invitation-revoke": [1],
}


def url_of(name: str, objects: dict) -> str:
    return reverse(name, args=[objects[OBJECT_URLS[name]].code, *MORE_ARGS.get(name, [])])


def _named_patterns(resolver=None, prefix=""):
    for p in (resolver or get_resolver()).url_patterns:
        if isinstance(p, URLResolver):
            continue  # admin and API have their own checks
        if isinstance(p, URLPattern) and p.name and "<uuid:code>" in str(p.pattern):
            yield p.name


def test_every_object_url_is_covered_here():
    assert set(_named_patterns()) == set(OBJECT_URLS)


@pytest.fixture
def objects(workspace, dataset, owner):
    doc = DocumentFactory(dataset=dataset)
    SegmentFactory(document=doc)
    job = Job.objects.create(workspace=workspace, dataset=dataset, kind=JobKind.IMPORT)
    tracker = Tracker.objects.create(workspace=workspace, name="t")
    scoring = ScoringJob.objects.create(workspace=workspace, dataset=dataset)
    endpoint = WebhookEndpoint.objects.create(tracker=tracker, url="https://8.8.8.8/h", secret=new_secret())
    return {
        "endpoint": endpoint,
        "workspace": workspace,
        "dataset": dataset,
        "document": doc,
        "job": job,
        "tracker": tracker,
        "scoring": scoring,
    }


@pytest.mark.parametrize("name", sorted(OBJECT_URLS))
def test_stranger_gets_404(client, stranger, objects, name):
    client.force_login(stranger)
    response = client.post(url_of(name, objects)) if name in POST_ONLY else client.get(url_of(name, objects))
    assert response.status_code == 404


# (a version's download needs a trained version: tests/test_versions.py)
@pytest.mark.parametrize("name", sorted(set(OBJECT_URLS) - POST_ONLY - {"tracker-version-download"}))
def test_member_sees_it(client, owner, objects, name):
    client.force_login(owner)
    assert client.get(url_of(name, objects)).status_code in (200, 286)


@pytest.mark.parametrize("name", sorted(OBJECT_URLS))
def test_anonymous_is_sent_to_login(client, objects, name):
    url = url_of(name, objects)
    response = client.post(url) if name in POST_ONLY else client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_home_lists_only_my_workspaces(client, owner, stranger, workspace):
    other = MembershipFactory(user=owner, role=Role.LABELER).workspace
    client.force_login(owner)
    html = client.get(reverse("home")).content.decode()
    assert workspace.name in html and other.name in html
    stranger_ws = stranger.workspaces.get()
    assert stranger_ws.name not in html


def test_viewer_cannot_create_datasets(client, viewer, workspace):
    client.force_login(viewer)
    assert client.post(reverse("dataset-create", args=[workspace.code]), {"name": "x"}).status_code == 403
    assert not workspace.datasets.exists()


API_OBJECT_ROUTES = [
    ("get", "/api/workspaces/{workspace}/datasets"),
    ("post", "/api/workspaces/{workspace}/datasets"),
    ("get", "/api/datasets/{dataset}"),
    ("post", "/api/datasets/{dataset}/imports"),
    ("get", "/api/datasets/{dataset}/search?q=hello"),
    ("get", "/api/jobs/{job}"),
    ("get", "/api/workspaces/{workspace}/trackers"),
    ("post", "/api/workspaces/{workspace}/trackers"),
    ("get", "/api/trackers/{tracker}"),
    ("post", "/api/trackers/{tracker}/cards"),
    ("post", "/api/trackers/{tracker}/labels"),
    ("post", "/api/trackers/{tracker}/undo"),
    ("post", "/api/trackers/{tracker}/train"),
    ("post", "/api/trackers/{tracker}/check"),
    ("get", "/api/trackers/{tracker}/runs"),
]


def test_every_api_route_with_an_object_is_covered_here():
    import re

    from config.api import api

    def shape(path):
        return re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])

    schema = api.get_openapi_schema()
    routes = {(m, shape(p)) for p, ops in schema["paths"].items() for m in ops if "{" in p}
    assert routes == {(m, shape(p)) for m, p in API_OBJECT_ROUTES}


@pytest.mark.parametrize(("method", "route"), API_OBJECT_ROUTES)
def test_stranger_api_key_gets_404(client, stranger, objects, method, route):
    _, raw = ApiKey.issue(workspace=stranger.workspaces.get(), name="theirs", created_by=stranger)
    url = route.format(**{k: v.code for k, v in objects.items()})
    kwargs = {}
    if route.endswith("/datasets") and method == "post":
        kwargs = {"content_type": "application/json", "data": {"name": "x"}}
    elif route.endswith("/trackers") and method == "post":
        kwargs = {"content_type": "application/json", "data": {"name": "x", "datasets": [], "seeds": []}}
    elif route.endswith("/labels"):
        kwargs = {"content_type": "application/json", "data": {"card": 1, "answer": "yes"}}
    elif route.endswith("/imports"):
        kwargs = {"data": {"file": SimpleUploadedFile("a.csv", b"text\nhello\n")}}
    response = getattr(client, method)(url, headers={"Authorization": f"Bearer {raw}"}, **kwargs)
    assert response.status_code == 404


def test_api_rejects_missing_and_revoked_keys(client, workspace, owner):
    from django.utils import timezone

    assert client.get("/api/workspaces").status_code == 401
    key, raw = ApiKey.issue(workspace=workspace, name="ci", created_by=owner)
    assert client.get("/api/workspaces", headers={"X-API-Key": raw}).status_code == 200
    key.revoked_at = timezone.now()
    key.save()
    assert client.get("/api/workspaces", headers={"X-API-Key": raw}).status_code == 401


def test_a_key_stops_working_when_its_creator_is_deactivated_or_leaves(client, workspace, owner):
    from trackers.models import Membership

    _, raw = ApiKey.issue(workspace=workspace, name="bot", created_by=owner)
    headers = {"X-API-Key": raw}
    assert client.get("/api/workspaces", headers=headers).status_code == 200
    owner.is_active = False
    owner.save()
    assert client.get("/api/workspaces", headers=headers).status_code == 401
    owner.is_active = True
    owner.save()
    assert client.get("/api/workspaces", headers=headers).status_code == 200
    Membership.objects.filter(workspace=workspace, user=owner).delete()  # left the workspace
    assert client.get("/api/workspaces", headers=headers).status_code == 401


def test_a_key_of_a_deleted_user_stops_working(client, workspace):
    gone = MembershipFactory(workspace=workspace, user=UserFactory(username="gone"), role=Role.ADMIN).user
    _, raw = ApiKey.issue(workspace=workspace, name="bot", created_by=gone)
    gone.delete()
    assert client.get("/api/workspaces", headers={"X-API-Key": raw}).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(client, workspace, owner, django_assert_num_queries):
    from datetime import timedelta

    from django.utils import timezone

    key, raw = ApiKey.issue(workspace=workspace, name="bot", created_by=owner)
    headers = {"X-API-Key": raw}
    client.get("/api/workspaces", headers=headers)
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None
    for _ in range(3):
        assert ApiKey.authenticate(raw) is not None
    key.refresh_from_db()
    assert key.last_used_at == first  # no write within the minute
    with django_assert_num_queries(1):  # the lookup alone, no UPDATE
        ApiKey.authenticate(raw)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    ApiKey.authenticate(raw)
    key.refresh_from_db()
    assert timezone.now() - key.last_used_at < timedelta(seconds=5)


def test_admin_lists_every_model(admin_client):
    from django.apps import apps
    from django.contrib import admin

    ours = [m for app in ("trackers", "labeling", "serving") for m in apps.get_app_config(app).get_models()]
    assert ours and all(admin.site.is_registered(m) for m in ours)
    for model in ours:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert admin_client.get(url).status_code == 200, url


def test_users_of_the_same_workspace_share_it(client, workspace, dataset):
    labeler = MembershipFactory(
        workspace=workspace, user=UserFactory(username="lara"), role=Role.LABELER
    ).user
    client.force_login(labeler)
    assert client.get(reverse("dataset", args=[dataset.code])).status_code == 200


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_logins_lock_out_after_repeated_wrong_passwords_and_say_when_to_retry(client, url, settings):
    from axes.models import AccessAttempt

    user = UserFactory(username="mallory-target", is_staff=True)
    user.set_password("the right one")
    user.save()
    wrong = {"username": "mallory-target", "password": "wrong"}
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post(url, wrong).status_code == 200  # the form again, with its error
    locked = client.post(url, wrong)
    assert (
        locked.status_code == 429 and int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    )
    assert "Try again after" in locked.content.decode()
    # the right password does not get in while locked out
    again = client.post(url, {"username": "mallory-target", "password": "the right one"})
    assert again.status_code == 429 and "_auth_user_id" not in client.session
    # once the cool-off has passed (its record cleared), the right password works and resets the count
    AccessAttempt.objects.all().delete()
    ok = client.post(url, {"username": "mallory-target", "password": "the right one"})
    assert ok.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


def test_a_lockout_is_per_username_and_address(client, settings):
    target = UserFactory(username="alice")
    target.set_password("alice's password")
    target.save()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "alice", "password": "x"}, REMOTE_ADDR="10.9.9.9")
    assert (
        client.post(
            "/accounts/login/", {"username": "alice", "password": "x"}, REMOTE_ADDR="10.9.9.9"
        ).status_code
        == 429
    )
    # the same user from her own address still signs in
    ok = client.post(
        "/accounts/login/", {"username": "alice", "password": "alice's password"}, REMOTE_ADDR="10.1.1.1"
    )
    assert ok.status_code == 302
