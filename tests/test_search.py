"""The search page: nearest segments with their context, and a clear message before indexing."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

pytestmark = pytest.mark.django_db

TRANSCRIPT = b"""Rep: Thanks for joining today.
Customer: We are also evaluating Zendesk for this.
Rep: Happy to compare features with you.
Customer: Can we book a follow up call on Friday?
"""


def test_search_shows_the_match_with_previous_and_next_utterances(
    owner_client, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # import, embed and index run on commit
        owner_client.post(
            reverse("dataset-upload", args=[dataset.code]),
            {"file": SimpleUploadedFile("acme_call.txt", TRANSCRIPT), "format": "auto", "on_error": "reject"},
        )
    response = owner_client.get(reverse("search", args=[dataset.code]), {"q": "evaluating Zendesk", "k": 2})
    hits = response.context["hits"]
    assert hits[0].segment.text == "We are also evaluating Zendesk for this."
    assert hits[0].previous.text == "Thanks for joining today."
    assert hits[0].next.text == "Happy to compare features with you."
    assert len(hits) == 2 and hits[0].score >= hits[1].score
    html = response.content.decode()
    assert "<strong>We are also evaluating Zendesk for this.</strong>" in html and "acme call" in html


def test_htmx_search_returns_only_the_results_fragment(
    owner_client, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(
            reverse("dataset-upload", args=[dataset.code]),
            {"file": SimpleUploadedFile("c.txt", TRANSCRIPT), "format": "auto", "on_error": "reject"},
        )
    html = owner_client.get(
        reverse("search", args=[dataset.code]), {"q": "follow up call"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert html.lstrip().startswith('<div id="results">') and "<html" not in html
    assert "Can we book a follow up call on Friday?" in html


def test_search_before_indexing_says_what_to_do(owner_client, dataset):
    html = owner_client.get(reverse("search", args=[dataset.code]), {"q": "anything"}).content.decode()
    assert "has no search index yet; import and embed a file first" in html


def test_identical_texts_show_once_with_a_count(owner_client, dataset, django_capture_on_commit_callbacks):
    data = b"text\nwe want to cancel\nwe want to cancel\nsomething else entirely\n"
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(
            reverse("dataset-upload", args=[dataset.code]),
            {"file": SimpleUploadedFile("d.csv", data), "format": "auto", "on_error": "reject"},
        )
    hits = owner_client.get(reverse("search", args=[dataset.code]), {"q": "cancel"}).context["hits"]
    assert [h.segment.text for h in hits].count("we want to cancel") == 1
    assert hits[0].duplicates == 1


def test_a_long_call_is_shown_a_page_at_a_time(owner_client, dataset):
    from tests.factories import DocumentFactory, SegmentFactory
    from trackers.views import DOCUMENT_PAGE_SEGMENTS

    doc = DocumentFactory(dataset=dataset, title="Long call")
    n = DOCUMENT_PAGE_SEGMENTS * 2 + 5
    for i in range(n):
        SegmentFactory(document=doc, dataset=dataset, position=i, text=f"turn number {i}")
    url = reverse("document", args=[doc.code])
    first = owner_client.get(url).content.decode()
    assert first.count('<li id="segment-') == DOCUMENT_PAGE_SEGMENTS and "page 1 of 3" in first
    last = owner_client.get(url, {"page": 3}).content.decode()
    assert last.count('<li id="segment-') == 5 and f"turn number {n - 1}<" in last
    # a search hit links to the page that holds its segment
    at = owner_client.get(url, {"at": DOCUMENT_PAGE_SEGMENTS + 7}).content.decode()
    assert f'id="segment-{DOCUMENT_PAGE_SEGMENTS + 7}"' in at and "page 2 of 3" in at
