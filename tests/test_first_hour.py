"""What a newcomer meets in the first hour: error pages with the site's layout and a way back, a
favicon, one page leading to both API references, and API errors that say where, in JSON."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from django.template import loader
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_a_missing_page_has_the_layout_the_reason_and_a_way_back(client, owner):
    client.force_login(owner)
    response = client.get(f"/w/{uuid.uuid4()}/")
    page = response.content.decode()
    assert response.status_code == 404
    assert 'class="topbar"' in page and "<h1>Not found</h1>" in page and 'href="/"' in page


def test_a_refused_page_says_why_with_the_layout(client, trained, viewer):
    client.force_login(viewer)
    response = client.post(
        reverse("tracker-live-keeping", args=[trained.code]), {"mode": "all", "per_day": 5}
    )
    page = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in page and "<h1>Not allowed</h1>" in page and "Members page" in page


def test_the_server_error_page_renders_without_a_request_and_has_the_layout():
    page = loader.get_template("500.html").render({})
    assert 'class="topbar"' in page and "Something went wrong" in page and 'href="/"' in page


def test_there_is_a_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
    assert 'rel="icon"' in client.get(reverse("login")).content.decode()


def test_one_page_leads_to_both_api_references_and_the_header_links_it(client, owner):
    client.force_login(owner)
    page = client.get(reverse("api-reference")).content.decode()
    assert 'href="/api/v1/docs"' in page and 'href="/api/docs"' in page
    home = client.get(reverse("home"), follow=True).content.decode()
    assert f'href="{reverse("api-reference")}">API</a>' in home
    assert "API</a>\n        · <form" in home  # "API · Log out", not "API Log out"


def test_api_errors_are_json_and_name_where_the_problem_is(client, trained, key):
    url = f"/api/v1/trackers/{trained.code}/predict"
    response = client.post(url, json.dumps({"texts": []}), content_type="application/json", headers=key)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "texts"]]
    wrong_method = client.get(url, headers=key)
    assert wrong_method.status_code == 405 and wrong_method["Content-Type"].startswith("application/json")
    assert "detail" in wrong_method.json()


def _crumbs(page: str) -> str:
    return page.split('<nav class="crumbs">')[1].split("</nav>")[0]


def test_breadcrumbs_name_the_workspace_once_on_every_page(client, owner, workspace, trained, embedded):
    from serving.models import WebhookEndpoint
    from serving.scoring import services as scoring
    from serving.webhooks import services as webhooks

    endpoint, _ = webhooks.create_endpoint(tracker=trained, url="https://8.8.8.8/hook", user=owner)
    job = scoring.start_scoring(dataset=embedded, user=owner, trackers=[trained])
    client.force_login(owner)
    pages = [
        reverse("api-keys", args=[workspace.code]),
        reverse("tracker-alerts", args=[trained.code]),
        reverse("alert-endpoint", args=[endpoint.code]),
        reverse("dataset-scoring", args=[embedded.code]),
        reverse("scoring-job", args=[job.code]),
        reverse("tracker", args=[trained.code]),
    ]
    for url in pages:
        crumbs = _crumbs(client.get(url).content.decode())
        assert crumbs.count(workspace.name) == 1, (url, crumbs)
        assert f'href="{reverse("workspace", args=[workspace.code])}"' in crumbs, url
    assert "scoring" in _crumbs(client.get(reverse("scoring-job", args=[job.code])).content.decode())
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_the_tracker_page_says_what_ready_means_and_the_dataset_table_speaks_plainly(
    client, owner, workspace, trained, embedded
):
    client.force_login(owner)
    page = client.get(reverse("tracker", args=[trained.code])).content.decode()
    assert "answers until ready" in page and "marked ready at 100 answers with at least 5 of each" in page
    listing = client.get(reverse("workspace", args=[workspace.code])).content.decode()
    assert "Distinct texts" in listing and ">Vectors<" not in listing and "(exact, 116 texts)" in listing
    assert "exact" in client.get(reverse("dataset", args=[embedded.code])).content.decode()


def test_keys_promotion_and_rollback_ask_before_they_act(
    client, owner, workspace, trained, key, django_capture_on_commit_callbacks
):
    from tests.test_versions import play

    play(
        trained, owner, django_capture_on_commit_callbacks
    )  # a second version: the first can be rolled back to
    client.force_login(owner)
    keys = client.get(reverse("api-keys", args=[workspace.code])).content.decode()
    assert 'data-confirm="Revoke the key' in keys
    made = client.post(
        reverse("api-keys", args=[workspace.code]), {"name": "ci", "role": "labeler"}
    ).content.decode()
    assert 'data-copy="#new-key-value"' in made
    assert "Bearer &lt;key&gt;</code>." in made and "…</code>." not in made
    versions = client.get(reverse("tracker-versions", args=[trained.code])).content.decode()
    assert 'hx-confirm="Roll back to version 1?' in versions


def test_a_loopback_webhook_is_refused_naming_the_setting_and_the_hint_follows_it(
    client, owner, trained, settings
):
    client.force_login(owner)
    url = reverse("tracker-alerts", args=[trained.code])
    response = client.post(
        url, {"url": "http://127.0.0.1:9000/hook", "grouping": "text", "from_import": "on"}
    )
    page = response.content.decode()
    assert response.status_code == 400
    error = page.split('class="errorlist')[1].split("</ul>")[0]
    assert "loopback" in error and "TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1" in error
    assert "needs TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1" in client.get(url).content.decode()
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    assert "TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS is on" in client.get(url).content.decode()
    made = client.post(url, {"url": "http://127.0.0.1:9000/hook", "grouping": "text", "from_import": "on"})
    assert made.status_code in (200, 302) and trained.webhook_endpoints.count() == 1


def test_a_tracker_from_ticked_search_results_has_the_dataset_ticked_and_viewers_see_no_button(
    client, owner, viewer, embedded
):
    client.force_login(viewer)
    searched = client.get(reverse("search", args=[embedded.code]), {"q": "cancel my plan"}).content.decode()
    assert "New tracker from the ticked examples" not in searched and 'name="seed"' not in searched
    client.force_login(owner)
    searched = client.get(reverse("search", args=[embedded.code]), {"q": "cancel my plan"}).content.decode()
    assert "New tracker from the ticked examples" in searched
    assert f'name="dataset" value="{embedded.code}"' in searched
    form = client.get(
        reverse("tracker-create", args=[embedded.workspace.code]),
        {"seed": ["cancel my plan (1)", "we want to cancel (2)"], "dataset": str(embedded.code)},
    ).content.decode()
    box = form.split(f'value="{embedded.pk}"')[1].split(">")[0]
    assert "checked" in box
    assert "cancel my plan (1)" in form


def test_the_deliveries_page_sends_a_test_says_what_each_match_was_and_shows_no_stale_error(
    client, owner, trained
):
    from datetime import timedelta

    from django.utils import timezone

    from serving.matches import Hit
    from serving.models import DeliveryAttempt, EventSource, WebhookDelivery
    from serving.versions import services as versions
    from serving.webhooks import fanout
    from serving.webhooks import services as webhooks

    endpoint, _ = webhooks.create_endpoint(tracker=trained, url="https://8.8.8.8/hook", user=owner)
    client.force_login(owner)
    page_url = reverse("alert-endpoint", args=[endpoint.code])
    assert 'id="send-test"' in client.get(page_url).content.decode()
    sent = client.post(reverse("alert-action", args=[endpoint.code, "test"]), {"back": "deliveries"})
    assert sent.status_code == 302 and sent["Location"] == page_url
    fanout.alert(
        versions.live_version(trained),
        [Hit(score=0.93, label="yes", text="please cancel the whole account")],
        source=EventSource.API,
        endpoints=[endpoint],
    )
    now = timezone.now()
    delivery = WebhookDelivery.objects.filter(endpoint=endpoint, event__type="tracker.match").get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(tries=1, next_attempt_at=now - timedelta(seconds=5))
    for number, (outcome, at) in enumerate(
        [("retry", now - timedelta(hours=2)), ("succeeded", now - timedelta(hours=1))]
    ):
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number + 1,
            started_at=at,
            duration_ms=12,
            outcome=outcome,
            status_code=500 if outcome == "retry" else 200,
            error="HTTP 500" if outcome == "retry" else "",
        )
    page = client.get(page_url).content.decode()
    assert "“please cancel the whole account”" in page and "score 0.93" in page
    assert "next attempt due now" in page and "0 minutes" not in page
    assert 'id="last-error"' not in page and 'id="last-success"' in page


def test_the_charts_read_plainly():
    from labeling import charts

    curve = charts.line_chart({"F1": [(25, 0.5), (100, 0.8)]}, x_label="labels", x_digits=0)
    assert curve["x_range"] == "25–100"
    pr = charts.line_chart({"precision": [(0.05, 0.5), (0.94, 1.0)]}, x_label="threshold")
    assert pr["x_range"] == "0.05–0.94"
    hist = charts.histogram([4000, 30, 0, 0, 2, 1, 0, 0, 0, 3], threshold=0.4)
    heights = [bar[3] for bar in hist["bars"]]
    assert heights[5] >= 1.5 and heights[9] > heights[5]  # a single text still shows beside thousands
    assert [bar[5] for bar in hist["bars"]] == [False] * 4 + [True] * 6  # at or above the threshold
    assert [t for _, t in hist["x_ticks"]] == [0, 0.25, 0.5, 0.75, 1]


SETTINGS_SOURCE = (Path(__file__).resolve().parent.parent / "config" / "settings.py").read_text()
EXAMPLE = (Path(__file__).resolve().parent.parent / ".env.example").read_text()


def _example_values() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def test_env_example_gives_every_setting_its_default():
    import re

    example = _example_values()
    read = set(
        re.findall(r'(?:env_bool|env_int|env_list|os\.environ\.get)\("([A-Z][A-Z0-9_]+)"', SETTINGS_SOURCE)
    ) | set(re.findall(r'os\.environ\["([A-Z][A-Z0-9_]+)"\]', SETTINGS_SOURCE))
    assert len(read) > 40, read  # the pattern finds the settings (test_project checks they are all listed)
    defaults = dict(re.findall(r'env_int\("([A-Z0-9_]+)", ([0-9_]+)\)', SETTINGS_SOURCE))
    assert len(defaults) > 15
    for name, default in defaults.items():
        if example.get(name):
            assert int(example[name]) == int(default.replace("_", "")), name
    for name, default in re.findall(r'os\.environ\.get\("([A-Z0-9_]+)", "([^"]*)"\)', SETTINGS_SOURCE):
        if example.get(name) and default:
            assert example[name] == default, name
    assert "TRACKERS_ENV_FILE" in EXAMPLE


def test_a_dot_env_file_is_read_and_the_environment_wins(tmp_path):
    import os
    import subprocess
    import sys

    env_file = tmp_path / "trackers.env"
    env_file.write_text("TRACKERS_LIVE_RETENTION_DAYS=7\nTRACKERS_TIME_ZONE=Europe/Paris\n")
    env = {
        k: v for k, v in os.environ.items() if k not in ("TRACKERS_LIVE_RETENTION_DAYS", "TRACKERS_TIME_ZONE")
    }
    env.update(TRACKERS_ENV_FILE=str(env_file), TRACKERS_TIME_ZONE="UTC")
    code = "from config import settings; print(settings.LIVE_RETENTION_DAYS, settings.TIME_ZONE)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.split() == ["7", "UTC"]


def test_the_configuration_doc_lists_every_setting_of_env_example():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    missing = [line for line in EXAMPLE.splitlines() if line and line not in doc]
    assert missing == []


def test_periodic_tasks_say_nothing_at_info_but_their_failures_show():
    import logging

    from config.logfilters import QuietPeriodic

    quiet = QuietPeriodic(["serving.tasks.dispatch_webhooks"])

    def record(name: str, level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    assert not quiet.filter(
        record("celery.beat", logging.INFO, "Scheduler: Sending due task d (serving.tasks.dispatch_webhooks)")
    )
    assert not quiet.filter(
        record("celery.app.trace", logging.INFO, "Task serving.tasks.dispatch_webhooks[1] succeeded")
    )
    assert quiet.filter(
        record("celery.app.trace", logging.ERROR, "Task serving.tasks.dispatch_webhooks[1] raised")
    )
    assert quiet.filter(
        record("celery.app.trace", logging.INFO, "Task trackers.tasks.import_file[2] succeeded")
    )
    from django.conf import settings

    configured = settings.LOGGING["filters"]["quiet_periodic"]["tasks"]
    assert "serving.tasks.dispatch_webhooks" in configured


def test_an_unclosed_quote_keeps_the_good_rows_before_it_when_asked(
    owner, dataset, django_capture_on_commit_callbacks
):
    from trackers import imports
    from trackers.models import Job

    data = b'id,text\na1,we want to cancel\na2,send the invoice\na3,"an unclosed quote\na4,never read\n'
    with django_capture_on_commit_callbacks(execute=True):
        job = imports.start_import(dataset=dataset, user=owner, filename="f.csv", data=data, on_error="skip")
    job = Job.objects.get(pk=job.pk)
    assert job.state == "succeeded", job.message
    assert sorted(dataset.documents.values_list("external_id", flat=True)) == ["a1", "a2"]
    assert any("not closed before the end of the file" in e["text"] for e in job.errors)
    with django_capture_on_commit_callbacks(execute=True):
        rejected = imports.start_import(
            dataset=dataset, user=owner, filename="g.csv", data=data, on_error="reject"
        )
    assert Job.objects.get(pk=rejected.pk).state == "failed" and dataset.documents.count() == 2


def test_points_reward_answers_that_corrected_the_model(client, owner, trained):
    from labeling import game, progress
    from labeling.models import Card

    before = progress.player_stats(trained, owner)
    assert before["points"] == before["answers"] + 4 * before["corrections"]
    card = (
        Card.objects.filter(
            tracker=trained, answered_at__isnull=True, score__isnull=False, training_run__isnull=False
        )
        .select_related("training_run", "segment")
        .first()
    )
    predicted_yes = card.score >= card.training_run.threshold
    client.force_login(owner)
    game.claim_cards(trained, owner, n=50)
    response = client.post(
        reverse("answer", args=[trained.code]),
        {"card": card.pk, "answer": "no" if predicted_yes else "yes"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    after = progress.player_stats(trained, owner)
    assert after["answers"] == before["answers"] + 1 and after["corrections"] == before["corrections"] + 1
    assert after["points"] == before["points"] + 5
    assert '"corrected": true' in response["HX-Trigger"]
    assert "correction" in client.get(reverse("play", args=[trained.code])).content.decode()


def test_the_readme_fits_a_screen_and_its_pictures_and_links_exist():
    import re

    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert len(pictures) >= 4 and all((repo / p).is_file() for p in pictures), pictures
    journey = (repo / "tests" / "test_journey.py").read_text()
    assert all(Path(p).name in journey for p in pictures)  # each is taken by the journey test
    links = re.findall(r"\]\(((?:docs/|\.env)[^)#]*)\)", readme)
    assert links and all((repo / link).exists() for link in links), links
    for needed in ("Python 3.11", "2 GB", "make stop", "/admin/", "/api-reference/", ".env"):
        assert needed in readme, needed
