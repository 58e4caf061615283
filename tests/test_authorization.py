"""Who may call what: every operation of /api/openapi.json and /api/v1/openapi.json, called by every
kind of caller, answers the status its rules give. The operations are read from the schemas, so an
operation added without a line in ``RULES`` fails here; each call reaches a real object of the right
kind (tests/api_world.py) with a valid body, inside a savepoint rolled back after it, so that every
caller meets the same world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from config.api import api, api_v1
from serving import hot
from serving.models import ApiKey
from tests import api_world
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory
from trackers.models import ROLE_RANK, Role

pytestmark = pytest.mark.django_db

ANY = Role.VIEWER  # any member may


@dataclass(frozen=True)
class Rule:
    role: Role = ANY  # the lowest role that may call it
    ok: frozenset[int] = frozenset({200})
    tracker: bool = False  # its object belongs to a tracker: a key limited to other trackers gets 404
    predict: bool = False  # a prediction-only key may call it
    public: bool = False  # no authentication at all
    limited: int | None = None  # what a key limited to trackers gets instead of ``ok``
    stranger: int = 404  # what a member of another workspace gets
    body: dict = field(default_factory=dict)
    query: str = ""


def ok(*codes: int) -> frozenset[int]:
    return frozenset(codes)


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/api/workspaces"): Rule(stranger=200),
    ("GET", "/api/workspaces/{code}/datasets"): Rule(),
    ("POST", "/api/workspaces/{code}/datasets"): Rule(Role.ADMIN, ok(201), body={"name": "Fresh"}),
    ("GET", "/api/datasets/{code}"): Rule(),
    ("POST", "/api/datasets/{code}/imports"): Rule(Role.ADMIN, ok(202), body={"upload": True}),
    ("GET", "/api/jobs/{code}"): Rule(),
    ("GET", "/api/datasets/{code}/search"): Rule(query="q=cancel"),
    ("GET", "/api/workspaces/{code}/trackers"): Rule(),
    ("POST", "/api/workspaces/{code}/trackers"): Rule(
        Role.ADMIN, ok(201), body={"name": "New", "datasets": ["<dataset>"], "seeds": ["a", "b", "c"]}
    ),
    ("GET", "/api/trackers/{code}"): Rule(tracker=True),
    ("POST", "/api/trackers/{code}/cards"): Rule(Role.LABELER, tracker=True),
    ("POST", "/api/trackers/{code}/labels"): Rule(
        Role.LABELER, ok(201), tracker=True, body={"card": "<card>", "answer": "yes"}
    ),
    ("POST", "/api/trackers/{code}/undo"): Rule(Role.LABELER, ok(200, 204), tracker=True),
    ("POST", "/api/trackers/{code}/train"): Rule(Role.LABELER, ok(200, 202), tracker=True),
    ("POST", "/api/trackers/{code}/check"): Rule(Role.LABELER, ok(201, 409), tracker=True),
    ("GET", "/api/trackers/{code}/runs"): Rule(tracker=True),
    ("POST", "/api/v1/trackers/{code}/predict"): Rule(
        tracker=True, predict=True, body={"texts": ["cancel it"]}
    ),
    ("GET", "/api/v1/trackers/{code}/versions"): Rule(tracker=True, predict=True),
    ("POST", "/api/v1/trackers/{code}/versions/{number}/promote"): Rule(Role.ADMIN, tracker=True),
    ("GET", "/api/v1/health"): Rule(public=True),
    ("GET", "/api/v1/ready"): Rule(public=True),
    ("GET", "/api/v1/workspaces/{code}/keys"): Rule(Role.ADMIN),
    ("POST", "/api/v1/workspaces/{code}/keys"): Rule(
        Role.ADMIN, ok(201), limited=403, body={"name": "made", "role": "viewer"}
    ),
    # a limited key sees no key but itself: another's is not found
    ("POST", "/api/v1/workspaces/{code}/keys/{key_id}/revoke"): Rule(Role.ADMIN, limited=404),
    ("POST", "/api/v1/workspaces/{code}/predict"): Rule(predict=True, body={"texts": ["cancel it"]}),
    ("POST", "/api/v1/datasets/{code}/score"): Rule(Role.ADMIN, ok(202)),
    ("GET", "/api/v1/scoring/{code}"): Rule(),
    ("GET", "/api/v1/scoring/{code}/results"): Rule(),
    ("GET", "/api/v1/scoring/{code}/download"): Rule(),
    ("POST", "/api/v1/scoring/{code}/results/{result_id}/feedback"): Rule(
        Role.LABELER, tracker=True, body={"verdict": "right"}
    ),
    ("POST", "/api/v1/events/{event_id}/feedback"): Rule(
        Role.LABELER, tracker=True, body={"verdict": "wrong"}
    ),
    ("POST", "/api/v1/predictions/{prediction_id}/feedback"): Rule(
        Role.LABELER, tracker=True, body={"verdict": "right", "text": "cancel it now"}
    ),
    ("GET", "/api/v1/trackers/{code}/webhooks"): Rule(Role.ADMIN, tracker=True),
    ("POST", "/api/v1/trackers/{code}/webhooks"): Rule(
        Role.ADMIN, ok(201), tracker=True, body={"url": "https://93.184.215.14/other"}
    ),
    ("GET", "/api/v1/webhooks/{code}"): Rule(Role.ADMIN, tracker=True),
    ("PATCH", "/api/v1/webhooks/{code}"): Rule(Role.ADMIN, tracker=True, body={"description": "changed"}),
    ("DELETE", "/api/v1/webhooks/{code}"): Rule(Role.ADMIN, ok(204), tracker=True),
    ("POST", "/api/v1/webhooks/{code}/rotate"): Rule(Role.ADMIN, tracker=True),
    ("POST", "/api/v1/webhooks/{code}/test"): Rule(Role.ADMIN, ok(202), tracker=True),
    ("GET", "/api/v1/webhooks/{code}/deliveries"): Rule(Role.ADMIN, tracker=True),
    ("POST", "/api/v1/deliveries/{delivery_id}/resend"): Rule(Role.ADMIN, ok(202), tracker=True),
    ("GET", "/api/v1/trackers/{code}/events"): Rule(Role.ADMIN, tracker=True),
}

# Each kind of caller: the role it acts with (None: no member of this workspace), and what it is.
CALLERS = {
    "owner": Role.OWNER,
    "admin": Role.ADMIN,
    "labeler": Role.LABELER,
    "viewer": Role.VIEWER,
    "limited": Role.ADMIN,  # an admin's key limited to the other tracker
    "prediction-only": Role.ADMIN,  # an admin's key that may only predict
    "demoted-maker": Role.VIEWER,  # an admin key whose maker is a viewer now
    "revoked": None,
    "other-workspace": None,  # an owner's key of another workspace
}


def operations() -> list[tuple[str, str]]:
    found = []
    for one, prefix in ((api, "/api"), (api_v1, "/api/v1")):
        for path, ops in one.get_openapi_schema(path_prefix=prefix)["paths"].items():
            found += [(method.upper(), path) for method in ops]
    return sorted(found)


def test_every_operation_of_both_schemas_has_a_rule():
    assert set(operations()) == set(RULES)


def expected(rule: Rule, caller: str) -> frozenset[int]:
    if rule.public:
        return rule.ok
    if caller == "revoked":
        return ok(401)
    if caller == "other-workspace":
        return ok(rule.stranger)
    if caller == "prediction-only" and not rule.predict:
        return ok(403)
    if caller == "limited" and rule.tracker:
        return ok(404)
    role = CALLERS[caller]
    assert role is not None
    if ROLE_RANK[role] < ROLE_RANK[rule.role]:
        return ok(403)
    if caller == "limited" and rule.limited is not None:
        return ok(rule.limited)
    return rule.ok


@pytest.fixture
def callers(world, workspace, owner):
    """Headers of every kind of caller."""

    def key(maker, role, **kw):
        return {
            "Authorization": f"Bearer {ApiKey.issue(workspace=workspace, name=role, created_by=maker, role=role, **kw)[1]}"
        }

    admin = api_world.member(workspace, "adam", Role.ADMIN)
    labeler = api_world.member(workspace, "lara", Role.LABELER)
    viewer = api_world.member(workspace, "vera", Role.VIEWER)
    demoted = api_world.member(workspace, "dora", Role.ADMIN)
    headers = {
        "owner": key(owner, Role.OWNER),
        "admin": key(admin, Role.ADMIN),
        "labeler": key(labeler, Role.LABELER),
        "viewer": key(viewer, Role.VIEWER),
        "limited": key(admin, Role.ADMIN, trackers=[world.other]),
        "prediction-only": key(admin, Role.ADMIN, predict_only=True),
        "demoted-maker": key(demoted, Role.ADMIN),
    }
    api_world.demote(workspace, demoted, Role.VIEWER)
    revoked, raw = ApiKey.issue(workspace=workspace, name="gone", created_by=owner, role=Role.OWNER)
    revoked.revoked_at = revoked.created_at
    revoked.save()
    headers["revoked"] = {"Authorization": f"Bearer {raw}"}
    elsewhere = WorkspaceFactory(name="Elsewhere")
    stranger = MembershipFactory(workspace=elsewhere, user=UserFactory(username="sid"), role=Role.OWNER).user
    _, raw = ApiKey.issue(workspace=elsewhere, name="theirs", created_by=stranger, role=Role.OWNER)
    headers["other-workspace"] = {"Authorization": f"Bearer {raw}"}
    return headers


class Rollback(Exception):
    pass


def call(client, method: str, path: str, rule: Rule, world, headers) -> int:
    url = path.format(**api_world.fill(path, world))
    if rule.query:
        url += "?" + rule.query
    body = dict(rule.body)
    if body.get("datasets") == ["<dataset>"]:
        body["datasets"] = [str(world.dataset.code)]
    if body.get("card") == "<card>":
        body["card"] = world.card
    if body.pop("upload", False):
        upload = SimpleUploadedFile("more.csv", b"text\nplease cancel my plan\n", content_type="text/csv")
        return client.post(url, {"file": upload}, headers=headers).status_code
    if method == "GET":
        return client.get(url, headers=headers).status_code
    return client.generic(method, url, json.dumps(body), "application/json", headers=headers).status_code


def test_each_caller_gets_the_status_its_rights_give(client, world, callers, settings):
    """Every operation x every caller, in one world (built once: it takes trained trackers); each
    call in a savepoint rolled back after it. Every mismatch is listed before the test fails."""
    settings.API_V1_RATE = settings.API_RATE = settings.API_SEARCH_RATE = "100000/m"
    wrong = []
    for method, path in sorted(RULES):
        rule = RULES[(method, path)]
        for caller, headers in callers.items():
            try:
                with transaction.atomic():
                    got = call(client, method, path, rule, world, headers)
                    raise Rollback  # every caller meets the same world
            except Rollback:
                pass
            hot.forget()  # what the rolled-back call kept would not be there in a real process
            if got not in expected(rule, caller):
                wrong.append(f"{method} {path} by {caller}: {got}, expected {sorted(expected(rule, caller))}")
    assert not wrong, "\n".join(wrong)
