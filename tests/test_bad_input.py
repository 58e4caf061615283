"""Text fields and lists of every form and schema are bounded and hold only storable text: 400/422 naming the field."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from labeling import services as labeling_services
from trackers import definitions, services
from trackers.models import Dataset, Tracker

pytestmark = pytest.mark.django_db

SURROGATE = "bad \ud800 name"
NUL = "bad \x00 name"


def _json(client, url, body, key):
    import json

    # json.dumps escapes the surrogate as \ud800, as a client would send it
    return client.post(url, json.dumps(body), content_type="application/json", headers=key)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": SURROGATE}, "name"),
        ({"name": NUL}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": "ok", "description": "d" * 2001}, "description"),
        ({"name": "ok", "description": SURROGATE}, "description"),
    ],
)
def test_dataset_api_refuses_unstorable_or_over_long_text_naming_the_field(
    client, workspace, key, body, field
):
    response = _json(client, f"/api/workspaces/{workspace.code}/datasets", body, key)
    assert response.status_code == 422
    assert [e["loc"][-1] for e in response.json()["detail"]] == [field]
    assert not Dataset.objects.filter(workspace=workspace).exclude(name="Calls").exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": SURROGATE}, "name"),
        ({"seeds": ["cancel my plan", "I want to cancel", "bad \x00 one"]}, 2),
        ({"seeds": ["cancel"] * 101}, "seeds"),
        ({"keywords": ["k"] * 51}, "keywords"),
        ({"keywords": ["k" * 101]}, 0),
        ({"speaker_filter": "s" * 121}, "speaker_filter"),
        ({"kind": "topic", "labels": [f"l{i}" for i in range(10)]}, "labels"),
    ],
)
def test_tracker_api_refuses_bad_fields_and_long_lists(client, workspace, embedded, key, change, field):
    body = {
        "name": "Cancel",
        "datasets": [str(embedded.code)],
        "seeds": ["cancel my plan", "I want to cancel", "stop it"],
    }
    response = _json(client, f"/api/workspaces/{workspace.code}/trackers", {**body, **change}, key)
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"][0]["loc"]
    assert not Tracker.objects.exists()


def test_the_service_refuses_what_the_forms_and_schemas_would_not_let_through(workspace, owner, embedded):
    for kwargs, message in [
        ({"name": SURROGATE}, "name contains a lone surrogate (U+D800)"),
        ({"description": NUL}, "description contains a NUL character"),
        ({"seeds": ["ok one", "ok two", "bad \udfff"]}, "example 3 contains a lone surrogate (U+DFFF)"),
        ({"seeds": [f"cancel {i}" for i in range(3000)]}, "give at most 100 example sentences (got 3,000)"),
        ({"keywords": [f"k{i}" for i in range(2000)]}, "give at most 50 keywords (got 2,000)"),
    ]:
        args = {"name": "Cancel", "seeds": ["cancel my plan", "I want to cancel", "stop it"], **kwargs}
        with pytest.raises(definitions.TrackerInvalid, match=re.escape(message)):
            labeling_services.create_tracker(workspace=workspace, user=owner, datasets=[embedded], **args)
    with pytest.raises(services.InputInvalid, match="name is 121 characters long; the limit is 120"):
        services.create_dataset(workspace=workspace, name="n" * 121)


def test_forms_refuse_nul_and_over_long_text(owner_client, workspace, embedded):
    # (a form post cannot carry a lone surrogate: invalid UTF-8 in a form body decodes to U+FFFD)
    for name, message in [(NUL, "Null characters are not allowed"), ("n" * 121, "at most 120 characters")]:
        response = owner_client.post(reverse("dataset-create", args=[workspace.code]), {"name": name})
        assert response.status_code == 302 and not Dataset.objects.filter(name__startswith=name[:3]).exists()
        page = owner_client.get(reverse("workspace", args=[workspace.code])).content.decode()
        assert message in page
    response = owner_client.post(
        reverse("tracker-create", args=[workspace.code]),
        {
            "name": "Cancel",
            "datasets": [embedded.pk],
            "seeds": "cancel my plan\nI want to cancel\nbad \x00 one",
        },
    )
    assert response.status_code == 422 and "Null characters are not allowed" in response.content.decode()
    assert not Tracker.objects.exists()
