"""A team in Debian's chromium: an owner invites a colleague by link, the colleague signs up through
it and labels, the owner removes them and they are shut out."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.test_browser import log_in
from trackers.models import Membership, Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _shots(tmp_path: Path) -> Path:
    """Where screenshots go: TRACKERS_SCREENSHOT_DIR when set (to look at them), else the test's folder."""
    folder = Path(os.environ.get("TRACKERS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_invite_a_colleague_who_joins_labels_and_is_removed(
    page,
    live_server,
    owner,
    workspace,
    dataset,
    tmp_path,  # noqa: F811
):
    from labeling.models import Annotation
    from tests.test_game import cancel_tracker, corpus
    from trackers import imports

    imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
    dataset.refresh_from_db()
    tracker = cancel_tracker(workspace, owner, dataset, round_size=10, name="Wants to cancel")
    shots = _shots(tmp_path)

    log_in(page, live_server, owner, f"/w/{workspace.code}/members/")
    page.select_option("#invite-form select[name=role]", "labeler")
    page.click("#invite-form button")
    link = page.locator("#invitation-link").input_value()
    assert link.startswith(live_server.url + "/invite/")
    page.screenshot(path=str(shots / "members.png"), full_page=True)

    colleague = page.context.browser.new_context().new_page()
    colleague.goto(link)
    expect(colleague.locator("h1")).to_have_text(f"Join {workspace.name}")
    colleague.screenshot(path=str(shots / "invitation.png"), full_page=True)
    colleague.fill("input[name=username]", "lena")
    colleague.fill("input[name=password1]", "a long pass phrase 7")
    colleague.fill("input[name=password2]", "a long pass phrase 7")
    with colleague.expect_navigation(wait_until="load"):
        colleague.click("#signup button")
    expect(colleague.locator("h1")).to_contain_text(workspace.name)
    assert Membership.objects.get(workspace=workspace, user__username="lena").role == Role.LABELER

    with colleague.expect_navigation(wait_until="load"):
        colleague.goto(f"{live_server.url}/t/{tracker.code}/play/")
    colleague.wait_for_selector(".game-card")
    for _ in range(3):
        card_id = colleague.locator(".game-card").get_attribute("data-card")
        colleague.keyboard.press("n")
        expect(colleague.locator(".game-card")).not_to_have_attribute("data-card", card_id)
    assert Annotation.objects.filter(tracker=tracker, annotator__username="lena").count() == 3

    page.goto(f"{live_server.url}/w/{workspace.code}/members/")
    page.set_viewport_size({"width": 390, "height": 800})
    page.screenshot(path=str(shots / "members-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 800})
    page.once("dialog", lambda dialog: dialog.accept())  # "Remove lena from …?"
    lena = Membership.objects.get(user__username="lena").user
    page.click(f"#member-{lena.pk} button.danger")
    expect(page.locator(".flash")).to_contain_text("lena was removed")
    assert not Membership.objects.filter(workspace=workspace, user=lena).exists()

    for path in (f"/t/{tracker.code}/play/", f"/w/{workspace.code}/"):  # shut out at once
        assert colleague.request.get(live_server.url + path).status == 404
    # the answers lena gave stay: they were the team's work
    assert Annotation.objects.filter(tracker=tracker, annotator=lena).count() == 3


def test_the_console_in_a_browser(page, live_server, owner, workspace, trained, key, broker, tmp_path):  # noqa: PLR0913
    import time as clock

    from django.test import Client
    from django.utils import timezone

    from labeling.models import TrainingRun
    from serving import traffic
    from tests.test_versions import predict
    from trackers import health
    from trackers.models import WorkState

    shots = _shots(tmp_path)
    traffic._reset_after_fork()
    api = Client()
    for text in ["please cancel my plan", "we will end the contract", "lunch was great", "cancel it"] * 5:
        assert predict(api, trained, key, texts=[text]).status_code == 200
    traffic.flush()
    traffic.store(now=clock.time() + 120)
    health.worker_beat("interactive@web-1", ["interactive"], 101, clock.time())
    run = TrainingRun.objects.filter(tracker=trained).first()
    TrainingRun.objects.filter(pk=run.pk).update(
        state=WorkState.FAILED, error="the worker was stopped during the fit", finished_at=timezone.now()
    )
    log_in(page, live_server, owner, f"/w/{workspace.code}/console/?period=1d")
    expect(page.locator("#traffic tbody tr")).to_have_count(1)
    expect(page.locator("#traffic tbody td.num").first).to_have_text("20")
    expect(page.locator("#workers")).to_contain_text("interactive@web-1")
    page.screenshot(path=str(shots / "console.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 800})
    page.screenshot(path=str(shots / "console-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 800})
    page.click("#failed button")  # Retry
    expect(page.locator(".flash")).to_contain_text("Queued again")
    run.refresh_from_db()
    assert run.state != WorkState.FAILED


def test_in_production_keep_see_drift_and_review_live_traffic_in_a_browser(  # noqa: PLR0913
    page, live_server, owner, workspace, trained, key, tmp_path
):
    from django.test import Client

    from labeling.models import Card
    from serving.live import production
    from serving.models import LiveText
    from serving.versions import services as versions
    from tests.test_versions import predict

    shots = _shots(tmp_path)
    log_in(page, live_server, owner, f"/t/{trained.code}/")
    panel = page.locator("#live-panel")
    expect(panel).to_contain_text("It keeps none of the texts")
    panel.locator("select[name=mode]").select_option("all")
    panel.locator("#keeping-form button").click()
    expect(panel).to_contain_text("It keeps every text")
    served = [f"cancel my plan number {i}" for i in range(30)] + [
        f"the parcel {i} came today" for i in range(30)
    ]
    api = Client()
    for i in range(0, len(served), 20):
        assert predict(api, trained, key, texts=served[i : i + 20]).status_code == 200
    # A week of traffic whose scores sit where the training pool's rarely do: drift.
    version = versions.live_version(trained)
    high = float(production.reference_scores(version).max())
    LiveText.objects.bulk_create(
        LiveText(
            tracker=trained,
            version=version,
            text=f"x{i}",
            text_hash=f"x{i}",
            score=high,
            matched=True,
            source="api",
        )
        for i in range(120)
    )
    page.reload()
    expect(panel.locator("#drift-warning")).to_contain_text("as common as in training")
    # the threshold slider spans the precision/recall chart's plotting area (28 of 360 units each side)
    chart = page.locator("svg[aria-label='precision and recall by threshold']").bounding_box()
    slider = page.locator("#threshold").bounding_box()
    pad = chart["width"] * 28 / 360
    assert (
        abs(slider["x"] - (chart["x"] + pad)) <= 4
        and abs(slider["x"] + slider["width"] - (chart["x"] + chart["width"] - pad)) <= 4
    )
    expect(panel.locator("#live-distribution rect").first).to_be_visible()
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "in-production.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 800})
    page.screenshot(path=str(shots / "in-production-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 800})
    LiveText.objects.filter(text__startswith="x").delete()  # (made up above: not texts to ask about)
    with page.expect_navigation():
        panel.locator("#drift-warning button").click()
    assert page.url.endswith(f"/t/{trained.code}/play/")
    asked = set(
        Card.objects.filter(tracker=trained, answered_at__isnull=True).values_list("segment__text", flat=True)
    )
    assert asked and asked <= set(served)
    page.wait_for_load_state("load")
    assert any(text in page.content() for text in asked)  # the game shows a kept live text


def test_marking_scored_results_by_keyboard_y_j_y_marks_the_first_two(
    page, live_server, owner, two_live, embedded, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from serving.models import ScoredSegment
    from serving.scoring import services as scoring

    with django_capture_on_commit_callbacks(execute=True):
        job = scoring.start_scoring(dataset=embedded, user=owner, trackers=[two_live[0]])
    log_in(page, live_server, owner, reverse("scoring-job", args=[job.code]))
    rows = page.locator("[data-result]")
    expect(rows.first).to_be_focused()
    first, second, third = (rows.nth(i).get_attribute("id") for i in range(3))
    page.keyboard.press("y")
    expect(page.locator(f"#{first}")).to_have_class(re.compile("marked-right"))
    page.keyboard.press("j")
    page.keyboard.press("y")
    expect(page.locator(f"#{second}")).to_have_class(re.compile("marked-right"))
    assert "marked" not in (page.locator(f"#{third}").get_attribute("class") or "")
    marked = ScoredSegment.objects.filter(job=job, feedback="right")
    assert sorted(f"result-{pk}" for pk in marked.values_list("pk", flat=True)) == sorted([first, second])


def test_the_tracker_form_shows_topic_labels_only_for_a_topic_tracker(
    page, live_server, owner, workspace, embedded
):
    from django.urls import reverse

    log_in(page, live_server, owner, reverse("tracker-create", args=[workspace.code]))
    labels = page.locator('[data-only-kind="topic"]')
    expect(labels).to_be_hidden()
    expect(page.locator("form.stack")).to_contain_text("Training picks the threshold")
    page.check('input[name="kind"][value="topic"]')
    expect(labels).to_be_visible()
    page.check('input[name="kind"][value="concept"]')
    expect(labels).to_be_hidden()


def test_a_topic_trackers_page_fits_its_cards_and_a_phone(
    page, live_server, owner, workspace, dataset, tmp_path
):
    from tests.test_topics import play_round, ticket_topic_tracker

    shots = _shots(tmp_path)
    tracker = ticket_topic_tracker(dataset, owner, workspace)
    for _ in range(2):
        play_round(tracker, owner)
    log_in(page, live_server, owner, f"/t/{tracker.code}/")
    for width in (1600, 1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(100)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        # the confusion matrix's last column ("none") is inside its card, or its card scrolls to it
        fits = page.evaluate(
            """() => { const t = document.querySelector('table.confusion'); if (!t) return 'none';
                 const box = t.closest('.scroll-x') || t.parentElement;
                 const last = t.querySelector('thead th:last-child').getBoundingClientRect();
                 const card = t.closest('section').getBoundingClientRect();
                 return last.right <= card.right + 1 ? 'inside' : (box.scrollWidth > box.clientWidth ? 'scrolls' : 'hidden'); }"""
        )
        assert fits == ("inside" if width >= 1280 else "scrolls") or fits == "inside", (width, fits)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(shots / "topic-tracker.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 900})
    page.screenshot(path=str(shots / "topic-tracker-phone.png"), full_page=True)
