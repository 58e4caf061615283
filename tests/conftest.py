"""Personas, a fake encoder by default, isolated artifact folders, eager Celery, and the environment
of real worker processes."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from tests.factories import DatasetFactory, MembershipFactory, UserFactory, WorkspaceFactory
from tests.fakes import FakeEncoder
from tests.workers import worker_env
from trackers.models import Role

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Two suites on one machine share PostgreSQL and Redis: each run gets its own test database
# and its own broker key prefix, so neither drops, drains or deadlocks the other's.
RUN_ID = f"{os.getpid()}_{secrets.token_hex(4)}"
BROKER_KEY_PREFIX = f"test-{RUN_ID}:"
# Overwritten, not defaulted: a nested run must not share the prefix of the run that started it.
os.environ["TRACKERS_BROKER_KEY_PREFIX"] = BROKER_KEY_PREFIX  # worker processes inherit it
# The suite talks plain HTTP (test client, live servers, worker processes), as `make run` does; the
# HTTPS-only settings of an install behind TLS are checked apart (tests/test_project.py).
os.environ["TRACKERS_LOCAL_HTTP"] = "1"  # for the processes tests start
if not django_settings.LOCAL_HTTP:  # settings.py has been read already
    django_settings.LOCAL_HTTP = True
    django_settings.SECURE_SSL_REDIRECT = False
    django_settings.SECURE_HSTS_SECONDS = 0
    django_settings.SESSION_COOKIE_SECURE = django_settings.CSRF_COOKIE_SECURE = False
# Pages name static files as the source folders do, whatever an earlier `make run` collected.
django_settings.STORAGES = {
    **django_settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
django_settings.CACHES["default"]["KEY_PREFIX"] = BROKER_KEY_PREFIX + "cache"  # not read until first use
# settings.py has already been read; the Celery app reads its config lazily, after this.
django_settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
    **django_settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "global_keyprefix": BROKER_KEY_PREFIX,
}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request, django_db_modify_db_settings_parallel_suffix):
    """A test database of this run's own (`test_trackers_<pid>_<hex>`), unless --reuse-db asks to keep one."""
    if request.config.getvalue("reuse_db"):
        return
    for db in django_settings.DATABASES.values():
        if db["ENGINE"] == "django.db.backends.sqlite3":
            continue  # in memory, private to the process already
        test = db.setdefault("TEST", {})
        test["NAME"] = f"{test.get('NAME') or 'test_' + db['NAME']}_{RUN_ID}"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test saying it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data set {path} is absent on this machine")
    return path


@pytest.fixture(autouse=True)
def _traffic_flushed_when_told(settings):
    """Traffic counts move to Redis when a test says so (``serving.traffic.flush``), not by a thread."""
    settings.TRAFFIC_FLUSH_SECONDS = 0


@pytest.fixture(autouse=True)
def _generation_rows(settings):
    """A test's changes are never committed, so a Redis mirror of the access generation would not
    move: requests read the rows (tests/test_generation_mirror.py tests the mirrors)."""
    settings.GENERATION_REDIS = False


@pytest.fixture(autouse=True)
def _fresh_serving_cache():
    """Each test's rolled-back transaction moves the access generation back: forget what was kept."""
    from serving import hot
    from trackers.http import PerKeyRate

    hot.forget()
    PerKeyRate.counters.clear()
    yield
    hot.forget()
    PerKeyRate.counters.clear()


@pytest.fixture(autouse=True)
def _isolated_files(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.JOB_STALE_SECONDS = 600
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # the same cards from the same answers on every run (tests that need fresh draws pass a seed)
    settings.SELECTION_SEED = int(os.environ.get("TEST_SELECTION_SEED", "0"))


@pytest.fixture(autouse=True)
def _eager_celery(request):
    """Tasks run in-process when their transaction commits, unless a test starts a real worker."""
    from config.celery import app

    if request.node.get_closest_marker("real_worker"):
        yield
        return
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def fake_encoder(request, monkeypatch):
    if request.node.get_closest_marker("real_encoder") or request.node.get_closest_marker("real_worker"):
        yield None
        return
    enc = FakeEncoder()

    def get_encoder(encoder_id=None):
        return enc

    monkeypatch.setattr("trackers.encoders.get_encoder", get_encoder)
    yield enc


@pytest.fixture
def workspace(db):
    return WorkspaceFactory(name="Acme Sales")


@pytest.fixture
def owner(workspace):
    return MembershipFactory(workspace=workspace, user=UserFactory(username="olivia"), role=Role.OWNER).user


@pytest.fixture
def viewer(workspace):
    return MembershipFactory(workspace=workspace, user=UserFactory(username="victor"), role=Role.VIEWER).user


@pytest.fixture
def stranger(db):
    """A user with a workspace of their own, and none of ours."""
    return MembershipFactory(user=UserFactory(username="sid"), role=Role.OWNER).user


@pytest.fixture
def dataset(workspace):
    return DatasetFactory(workspace=workspace, name="Calls")


@pytest.fixture
def key(workspace, owner):
    """Headers with an API key of the owner's."""
    from serving.models import ApiKey

    _, raw = ApiKey.issue(workspace=workspace, name="integration", created_by=owner)
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def embedded(dataset, owner, django_capture_on_commit_callbacks):
    """``dataset`` with the cancel corpus of tests.test_game imported, embedded and indexed."""
    from tests.test_game import corpus
    from trackers import imports

    with django_capture_on_commit_callbacks(execute=True):  # import, embed and index run on commit
        imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    assert dataset.vector_count == 116
    return dataset


@pytest.fixture
def trained(embedded, workspace, owner, django_capture_on_commit_callbacks):
    """A concept tracker over the cancel corpus with one live version."""
    from tests.test_game import cancel_tracker
    from tests.test_versions import play

    tracker = cancel_tracker(workspace, owner, embedded)
    play(tracker, owner, django_capture_on_commit_callbacks)
    return tracker


@pytest.fixture
def two_live(embedded, workspace, owner, django_capture_on_commit_callbacks):
    """Two concept trackers with a live version each over the cancel corpus."""
    from serving.versions import services
    from tests.test_game import cancel_tracker
    from tests.test_versions import inverse_tracker, play

    wants = cancel_tracker(workspace, owner, embedded)
    play(wants, owner, django_capture_on_commit_callbacks)
    other = inverse_tracker(workspace, owner, embedded, django_capture_on_commit_callbacks)
    assert services.live_version(wants) and services.live_version(other)
    return wants, other


@pytest.fixture
def world(two_live, workspace, owner, embedded, django_capture_on_commit_callbacks):
    """An object of every kind the JSON APIs name in their paths (tests/api_world.py)."""
    from tests import api_world

    wants, other = two_live
    return api_world.build(workspace, owner, embedded, wants, other, django_capture_on_commit_callbacks)


@pytest.fixture
def broker(settings):
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        pytest.skip("worker tests need REDIS_URL naming a Redis server (make test sets it)")
    client = redis.Redis.from_url(url)

    def drop_our_keys():
        # Only this run's keys: another suite may be using the same Redis database right now.
        for key in client.scan_iter(match=f"{BROKER_KEY_PREFIX}*", count=500):
            client.delete(key)

    drop_our_keys()
    yield url
    drop_our_keys()


@pytest.fixture
def env(broker, settings, tmp_path):
    """The environment of a real worker process on this run's PostgreSQL database and Redis keys."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("worker tests need DATABASE_URL pointing at PostgreSQL (make test sets it)")
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}"
    return worker_env(
        DATABASE_URL=url,
        REDIS_URL=broker,
        CELERY_BROKER_URL=broker,
        TRACKERS_ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT),
        TRACKERS_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        TRACKERS_ENCODER_DIR=str(settings.ENCODER_DIR),
        TRACKERS_DATA_DIR=str(tmp_path / "var"),
        TRACKERS_SELECTION_SEED=str(settings.SELECTION_SEED),
    )


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(m) for m in ("real_encoder", "real_worker", "browser")):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    for marker in (
        "real_encoder: uses the exported ONNX model",
        "real_worker: starts a Celery worker process",
        "browser: drives Debian chromium with Playwright",
    ):
        config.addinivalue_line("markers", marker)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page(live_server, monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the ORM checks in the test body are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make test`")
    if not shutil.which("chromium") and not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.set_default_timeout(15_000)
        playwright.expect.set_options(timeout=15_000)
        # Pages run under the app's Content-Security-Policy: anything it blocks fails the test.
        blocked: list[str] = []
        page.on(
            "console",
            lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.on("pageerror", lambda exc: blocked.append(str(exc)))
        yield page
        browser.close()
        assert blocked == []
        # ORM calls made while Playwright's loop runs get connections of their own context
        from django.db import connections

        connections.close_all()
