"""A newcomer's first hour, in Debian's chromium against the production server (`python -m config.run`:
granian, the three Celery workers, the embedded Redis, SQLite, the real encoder), each step
photographed into ``TRACKERS_SCREENSHOT_DIR`` (``docs/screenshots/`` when the README's pictures are
made again):

sign in → a dataset → import a file → search → a tracker from ticked results → two rounds by
keyboard, the chart growing → promote → an API key → a prediction → a signed webhook on a loopback
receiver, in the delivery log → roll back → a viewer, who sees no button that leads to a 403.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from tests.conftest import CHROMIUM
from tests.receiver import receiving
from tests.test_supervised_run import Run, running
from trackers.demo import CONCEPTS, SMALL_TALK, _fill

pytestmark = [pytest.mark.real_worker, pytest.mark.browser]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with running(tmp_path_factory.mktemp("journey")) as r:
        yield r


@pytest.fixture
def browser(monkeypatch):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make test`")
    if not shutil.which("chromium") and not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        playwright.expect.set_options(timeout=60_000)
        yield browser
        browser.close()


def _new_page(browser, run: Run):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def support_messages() -> tuple[bytes, dict[str, bool]]:
    """A CSV of customer messages written from the demo's phrasings (each said a few ways), and
    which of them threaten to cancel: the truth the journey's answers come from."""
    import csv
    import io
    import random

    rng = random.Random(3)
    truth: dict[str, bool] = {}
    for concept, templates in CONCEPTS.items():
        for template in templates:
            for _ in range(3):
                truth[_fill(template, rng, "Dana")] = concept == "cancellation_threat"
    for line in SMALL_TALK:
        truth[_fill(line, rng, "Dana", vary=False)] = False
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text"])
    writer.writerows([text] for text in truth)
    return out.getvalue().encode(), {" ".join(t.split()): y for t, y in truth.items()}


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TRACKERS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _log_in(page, run: Run, user: str, password: str) -> None:
    page.goto(f"{run.url}/accounts/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation(wait_until="load"):
        page.click("button[type=submit]")


def _play_round(page, truth: dict[str, bool]) -> int:
    """Answer the open round by keyboard, from ``truth``, until its summary."""
    answered = 0
    for _ in range(80):
        page.wait_for_selector("#game [data-card], #game.summary")
        if page.locator("#game.summary").count():
            break
        card = page.locator("[data-card]")
        before = card.get_attribute("data-card")
        text = page.locator("#game .focus strong").inner_text()
        page.keyboard.press("y" if truth.get(" ".join(text.split())) else "n")
        answered += 1
        page.wait_for_function(
            "(b) => { const c = document.querySelector('[data-card]'); "
            "return !c || c.dataset.card !== b || document.querySelector('#game.summary'); }",
            arg=before,
        )
    page.wait_for_selector("#game.summary table.compare, #game.summary #no-model", timeout=120_000)
    return answered


def test_the_first_hour(run, browser, tmp_path):  # noqa: PLR0915 (one journey, step by step)
    from playwright.sync_api import expect

    shots = _shots(tmp_path)
    page = _new_page(browser, run)
    _log_in(page, run, "admin", "demo-pass-123")
    page.screenshot(path=str(shots / "01-workspace.png"), full_page=True)

    # a dataset, and a file imported into it
    page.fill("input[name=name]", "Support messages")
    with page.expect_navigation():
        page.click("form[action$='/datasets/'] button")
    data, truth = support_messages()
    upload = tmp_path / "messages.csv"
    upload.write_bytes(data)
    page.set_input_files("#upload-form input[type=file]", str(upload))
    page.check("input[name=on_error][value=skip]")
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#job-list tr.state-succeeded")).to_have_count(3, timeout=180_000)
    expect(page.locator("#documents tbody tr")).to_have_count(25)  # the first page, without a reload
    assert len(truth) > 100
    page.screenshot(path=str(shots / "02-import.png"), full_page=True)

    # search by meaning, tick three examples, a tracker from them
    page.click("text=Search by meaning")
    page.fill("input[name=q]", "we are thinking about cancelling our contract")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .hit")
    boxes = page.locator("#results input[name=seed]")
    picked = 0
    for i in range(boxes.count()):
        if truth.get(" ".join(page.locator("#results .hit .match").nth(i).inner_text().split())):
            boxes.nth(i).check()
            picked += 1
        if picked == 3:
            break
    assert picked == 3
    page.screenshot(path=str(shots / "03-search.png"), full_page=True)
    with page.expect_navigation():
        page.click("text=New tracker from the ticked examples")
    expect(page.locator("input[name=datasets]:checked")).to_have_count(1)  # the dataset searched
    page.fill("input[name=name]", "Wants to cancel")
    page.fill("input[name=round_size]", "10")
    page.screenshot(path=str(shots / "04-new-tracker.png"), full_page=True)
    with page.expect_navigation():
        page.click("text=Create and start labeling")
    assert page.url.endswith("/play/"), page.url
    tracker_url = page.url.removesuffix("play/")

    # two rounds by keyboard; the learning curve grows
    assert _play_round(page, truth) == 10
    page.screenshot(path=str(shots / "05-round-summary.png"), full_page=True)
    page.goto(tracker_url)
    dots_after_one = page.locator("svg[aria-label='learning curve'] circle").count()
    page.goto(tracker_url + "play/")
    assert _play_round(page, truth) >= 1
    page.goto(tracker_url)
    expect(page.locator("svg[aria-label='learning curve'] circle")).not_to_have_count(dots_after_one)
    assert page.locator("svg[aria-label='learning curve'] circle").count() > dots_after_one
    page.wait_for_selector("#live-panel .stats")  # the In production panel has loaded
    page.screenshot(path=str(shots / "06-tracker.png"), full_page=True)

    # promote: version 1 went live by itself; version 2 goes live by itself or waits to be promoted
    versions = page.locator("#versions")
    promote = versions.locator("button", has_text="Promote")
    if promote.count():  # version 2 waits (automatic promotion found it no better): promote it
        page.once("dialog", lambda d: d.accept())
        promote.first.click()
    expect(versions.locator("tr.live")).to_contain_text("v2")

    # an API key, and a prediction with it
    workspace_url = page.locator("nav.crumbs a").first.get_attribute("href")
    page.goto(run.url + workspace_url + "keys/")
    page.fill("input[name=name]", "crm")
    with page.expect_navigation():
        page.click("text=Create key")
    key = page.locator("#new-key-value").inner_text().strip()
    page.screenshot(path=str(shots / "07-api-key.png"), full_page=True)
    code = tracker_url.rstrip("/").rsplit("/", 1)[-1]
    headers = {"Authorization": f"Bearer {key}"}
    answer = requests.post(
        f"{run.url}/api/v1/trackers/{code}/predict",
        json={
            "texts": [
                "We want to cancel the subscription before the next billing cycle.",
                "Thanks, talk soon!",
            ]
        },
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["version"] == 2 and [r["match"] for r in body["results"]] == [True, False]

    # a signed webhook on a loopback receiver, and the delivery log
    with receiving() as receiver:
        page.goto(tracker_url + "alerts/")
        page.fill("input[name=url]", receiver.url)
        page.check("input[name=from_api]")
        with page.expect_navigation():
            page.click("text=Add endpoint")
        secret = page.locator("#new-secret-value").inner_text().strip()
        page.screenshot(path=str(shots / "08-alerts.png"), full_page=True)
        requests.post(
            f"{run.url}/api/v1/trackers/{code}/predict",
            json={"texts": ["Honestly we're ready to walk away and cancel the contract."]},
            headers=headers,
            timeout=30,
        )
        for _ in range(120):
            if receiver.received:
                break
            page.wait_for_timeout(500)
        (got,) = receiver.received
        event = Webhook(secret).verify(got.body, got.headers)
        assert event["type"] == "tracker.match" and "walk away" in json.dumps(event)
        with page.expect_navigation():
            page.click(f"a:has-text('{receiver.url}')")
        expect(page.locator("#deliveries")).to_contain_text("ready to walk away")
        expect(page.locator("#deliveries .state-succeeded")).to_have_count(1)
        page.screenshot(path=str(shots / "09-deliveries.png"), full_page=True)

    # roll back to version 1: the API answers with it
    page.goto(tracker_url)
    page.once("dialog", lambda d: d.accept())
    page.locator("#versions button:has-text('Roll back to v1')").click()
    expect(page.locator("#versions tr.live")).to_contain_text("v1")
    again = requests.post(
        f"{run.url}/api/v1/trackers/{code}/predict",
        json={"texts": ["cancel it"]},
        headers=headers,
        timeout=30,
    )
    assert again.json()["version"] == 1
    assert page.errors == []  # type: ignore[attr-defined]

    # a viewer sees no button that would answer 403
    run.manage_json(
        "import json; from django.contrib.auth.models import User; from trackers.models import Membership, "
        "Workspace; u = User.objects.create_user('vera', password='vera-pass-123'); "
        "Membership.objects.create(workspace=Workspace.objects.get(memberships__user__username='admin'), user=u, "
        "role='viewer'); "
        "print(json.dumps(1))"
    )
    viewer = _new_page(browser, run)
    _log_in(viewer, run, "vera", "vera-pass-123")
    for path in (workspace_url, workspace_url + "trackers/", tracker_url.replace(run.url, "")):
        viewer.goto(run.url + path)
        forms = viewer.locator("form[method=post]:visible, form[hx-post]:visible, button[hx-post]:visible")
        actions = [
            forms.nth(i).evaluate("e => e.getAttribute('action') || e.getAttribute('hx-post')")
            for i in range(forms.count())
        ]
        assert [a for a in actions if a and "logout" not in a] == [], (path, actions)
        links = viewer.locator("main a[href^='/']")
        for href in {links.nth(i).get_attribute("href") for i in range(links.count())}:
            status = viewer.request.get(run.url + href).status
            assert status != 403, (path, href)
    viewer.screenshot(path=str(shots / "10-viewer.png"), full_page=True)
