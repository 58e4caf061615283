"""A person in Debian's chromium: log in, upload a file, watch the progress bar finish, search."""

from __future__ import annotations

import pytest

from labeling import services as labeling_services
from trackers import imports
from trackers.models import Job, JobState

expect = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make test`").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CSV = b"""text,label
Honestly the price is way above our budget,pricing
We are also evaluating Zendesk for support,competitor
Can we set up a follow-up call on Friday?,follow_up
If this outage happens again we will cancel,cancel
"""


def log_in(page, live_server, user, next_path: str = "/") -> None:
    user.set_password("s3cret-pass-123")
    user.save()
    page.goto(f"{live_server.url}/accounts/login/?next={next_path}")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "s3cret-pass-123")
    # Until the page it lands on has loaded, its deferred scripts (the game's keys) may not have run.
    with page.expect_navigation(wait_until="load"):
        page.click("button[type=submit]")


def test_upload_progress_and_search_in_a_browser(page, live_server, owner, dataset, tmp_path):
    log_in(page, live_server, owner)
    page.wait_for_url(f"{live_server.url}/w/**")
    page.click(f"text={dataset.name}")

    upload = tmp_path / "objections.csv"
    upload.write_bytes(CSV)
    page.set_input_files("#upload-form input[type=file]", str(upload))
    page.click("#upload-form button[type=submit]")
    # the jobs appear without a page load and the panel polls until every bar is full
    page.wait_for_selector("#job-list tr.job-row >> text=objections.csv")
    expect(page.locator("#job-list tr.state-succeeded")).to_have_count(3)
    assert page.locator("#job-list tr.state-failed").count() == 0
    assert page.locator("#activity .stats").inner_text().split()[:2] == ["4", "documents"]
    assert Job.objects.filter(state=JobState.SUCCEEDED).count() == 3
    # the documents table fills in once the work is done, without a reload
    expect(page.locator("#documents tbody tr")).to_have_count(4)
    expect(page.locator("#documents")).not_to_contain_text("No documents yet")
    page.screenshot(path=str(tmp_path / "dataset.png"))

    page.goto(f"{live_server.url}/d/{dataset.code}/search/")
    page.fill("input[name=q]", "evaluating Zendesk")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .hit")
    first = page.locator("#results .hit .match").first.inner_text()
    assert "We are also evaluating Zendesk for support" in first
    assert "q=evaluating%20Zendesk" in page.url  # the results are bookmarkable


def test_bad_file_shows_the_error_in_place(page, live_server, owner, dataset, tmp_path):
    log_in(page, live_server, owner, f"/d/{dataset.code}/")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"\n")
    page.set_input_files("#upload-form input[type=file]", str(empty))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-form .error >> text=empty.csv: the file is empty")
    assert not Job.objects.exists()


def test_a_full_round_with_the_keyboard_alone(page, live_server, owner, dataset, workspace, tmp_path):
    from labeling.models import Annotation, TrainingRun
    from tests.test_game import cancel_tracker, corpus
    from trackers import imports

    imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset, round_size=10, name="Wants to cancel")
    log_in(page, live_server, owner, f"/t/{tracker.code}/play/")
    page.wait_for_selector(".game-card")
    page.keyboard.press("?")
    assert page.locator("#keys-help").is_visible()
    page.keyboard.press("Escape")
    seen = []
    for i in range(10):
        card = page.locator(".game-card")
        text = card.locator(".focus strong").inner_text()
        card_id = card.get_attribute("data-card")
        seen.append(card_id)
        page.keyboard.press("y" if "cancel" in text else "n")
        if i < 9:
            expect(page.locator(".game-card")).not_to_have_attribute("data-card", card_id)
            assert page.locator("#round-count").inner_text() == f"{i + 1}/10"
    page.wait_for_selector("text=Round 1 done!")
    page.wait_for_selector(".summary table.compare")  # training finished and the summary shows before/after
    page.screenshot(path=str(tmp_path / "summary.png"))
    assert len(set(seen)) == 10
    assert Annotation.objects.filter(tracker=tracker).count() == 10
    assert TrainingRun.objects.filter(tracker=tracker, state="succeeded").count() == 1
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Round 2")
    page.screenshot(path=str(tmp_path / "round2.png"))


def test_the_game_fits_a_phone(page, live_server, owner, dataset, workspace):
    from tests.test_game import cancel_tracker, corpus

    imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset, round_size=10)
    page.set_viewport_size({"width": 390, "height": 800})
    log_in(page, live_server, owner, f"/t/{tracker.code}/play/")
    page.wait_for_selector(".game-card")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    for name in ("yes", "no", "skip"):
        box = page.locator(f"button.answer.{name}").bounding_box()
        assert box["width"] >= 300 and box["height"] >= 44  # thumb-sized targets
    page.locator("button.answer.no").click()
    expect(page.locator("#round-count")).to_have_text("1/10")


def test_a_topic_round_with_number_keys(page, live_server, owner, dataset, workspace, tmp_path):
    from labeling.models import Annotation
    from tests.test_topics import LABELS, ticket_topic_tracker, topic_of

    tracker = ticket_topic_tracker(dataset, owner, workspace, round_size=8)
    log_in(page, live_server, owner, f"/t/{tracker.code}/play/")
    page.wait_for_selector(".game-card")
    truth = []
    for i in range(8):
        card = page.locator(".game-card")
        text = card.locator(".focus strong").inner_text()
        card_id = card.get_attribute("data-card")
        truth.append((text, topic_of(text)))
        page.keyboard.press(str(LABELS.index(topic_of(text)) + 1))
        if i < 7:
            expect(page.locator(".game-card")).not_to_have_attribute("data-card", card_id)
    page.wait_for_selector(".summary table.compare >> text=Accuracy (cross-validated)")
    stored = {
        a.segment.text: a.answer for a in Annotation.objects.filter(tracker=tracker).select_related("segment")
    }
    assert stored == dict(truth)  # every key press stored the label it stands for
    page.goto(f"{live_server.url}/t/{tracker.code}/")
    page.wait_for_selector("text=How the data divides")
    page.screenshot(path=str(tmp_path / "topic.png"), full_page=True)


def test_swipe_right_says_yes_and_left_says_no(page, live_server, owner, dataset, workspace):
    from labeling.models import Annotation
    from tests.test_game import cancel_tracker, corpus

    imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset, round_size=10)
    page.set_viewport_size({"width": 390, "height": 800})
    log_in(page, live_server, owner, f"/t/{tracker.code}/play/")
    answers = []
    for dx, expected in ((160, "yes"), (-160, "no")):
        page.wait_for_selector(".game-card")
        card_id = page.locator(".game-card").get_attribute("data-card")
        page.evaluate(
            """(dx) => {
              const card = document.querySelector('.game-card .focus');
              const fire = (type, x) => card.dispatchEvent(new PointerEvent(type,
                {bubbles: true, pointerType: 'touch', clientX: x, clientY: 300}));
              fire('pointerdown', 200); fire('pointermove', 200 + dx / 2); fire('pointerup', 200 + dx);
            }""",
            dx,
        )
        expect(page.locator(".game-card")).not_to_have_attribute("data-card", card_id)
        answers.append((int(card_id), expected))
    stored = dict(Annotation.objects.filter(tracker=tracker).values_list("card_id", "answer"))
    assert stored == dict(answers)


def test_a_document_card_shows_key_lines_and_opens_the_whole_call(
    page, live_server, owner, dataset, workspace, tmp_path
):
    from labeling.models import Annotation
    from tests.test_documents import calls

    imports.start_import(dataset=dataset, user=owner, filename="calls.jsonl", data=calls())
    dataset.refresh_from_db()
    tracker = labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Cancellation calls",
        granularity="document",
        datasets=[dataset],
        seeds=[
            "I want to cancel my subscription",
            "please cancel the contract",
            "going to cancel the service",
        ],
        round_size=5,
    )
    log_in(page, live_server, owner, f"/t/{tracker.code}/play/")
    page.wait_for_selector(".game-card .key-lines li")
    assert page.locator(".key-lines li").count() == 1
    assert not page.locator(".whole-document p").first.is_visible()
    page.click(".whole-document summary")
    assert (
        page.locator(".whole-document p").count() == 4
        and page.locator(".whole-document p").first.is_visible()
    )
    page.screenshot(path=str(tmp_path / "document.png"), full_page=True)
    title = page.locator(".game-card .doc strong").inner_text()
    page.keyboard.press("y" if title.startswith("cancel") else "n")
    expect(page.locator("#round-count")).to_have_text("1/5")
    answer = Annotation.objects.select_related("segment__document").get(tracker=tracker)
    assert answer.segment.document.title == title


def test_the_pages_scripts_run_under_the_content_security_policy(
    page, live_server, owner, dataset, workspace
):
    """The tracker page's slider, the alerts page's confirmation and the API docs, each working with
    no inline script allowed (the fixture fails on anything the policy blocks)."""
    from serving.webhooks import services as webhooks
    from tests.test_game import cancel_tracker, corpus
    from tests.test_versions import play

    imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset)
    from django.test import TestCase

    play(tracker, owner, TestCase.captureOnCommitCallbacks)
    log_in(page, live_server, owner, f"/t/{tracker.code}/")
    readout = page.locator("#threshold-readout")
    expect(readout).to_contain_text("→ precision")  # written by static/js/tracker.js
    before = readout.inner_text()
    page.focus("#threshold")
    page.keyboard.press("Home")
    expect(readout).not_to_have_text(before)

    endpoint, _ = webhooks.create_endpoint(tracker=tracker, url="https://93.184.215.14/hook", user=owner)
    page.goto(f"{live_server.url}/t/{tracker.code}/alerts/")
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss() if len(asked) == 1 else dialog.accept()

    page.on("dialog", answer)
    page.click("form[data-confirm] button")  # dismissed: nothing happens
    page.click("form[data-confirm] button")  # accepted: deleted
    expect(page.locator("text=No endpoints yet")).to_be_visible()
    assert asked == ["Delete this endpoint and its delivery log?"] * 2
    assert not tracker.webhook_endpoints.filter(pk=endpoint.pk).exists()

    page.goto(f"{live_server.url}/api/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
