"""One workspace with an object of every kind the JSON APIs take in their paths, and the rule that
fills a path's parameters with the right kind: used by the authorization matrix and the fuzzers, so
that a request reaches the object it names instead of a 404.

The kind of a path parameter is the collection it follows (``/trackers/{code}`` is a tracker,
``/keys/{key_id}`` a key); a parameter after a collection this module does not know fails loudly, so a
new kind of object cannot slip past the tests that use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from serving import matches
from serving.matches import Hit
from serving.models import (
    ApiKey,
    EventSource,
    EventType,
    ScoredSegment,
    ScoringJob,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from serving.scoring import services as scoring
from serving.versions import services
from serving.webhooks import fanout
from serving.webhooks import services as webhooks
from trackers.models import Dataset, Job, Membership, Role, Tracker, Workspace


@dataclass
class World:
    workspace: Workspace
    dataset: Dataset
    job: Job
    tracker: Tracker  # a live concept tracker: the object of every tracker-scoped operation
    other: Tracker  # a second live tracker: the one a limited key is allowed
    version: int  # a version number of ``tracker``
    key: ApiKey  # a labeler key of the owner's: the one revoked by the revoke operation
    scoring: ScoringJob
    result: ScoredSegment  # a result of ``tracker`` in ``scoring``
    endpoint: WebhookEndpoint  # of ``tracker``
    delivery: WebhookDelivery  # of ``endpoint``
    card: int  # an unanswered card of ``tracker``
    event: WebhookEvent  # a match alert of ``tracker``
    prediction: str  # the id of a result of ``tracker``'s live version, for "cancel it now"


def build(workspace: Workspace, owner, dataset: Dataset, wants: Tracker, other: Tracker, callbacks) -> World:
    """Everything beside the two live trackers ``wants`` and ``other`` (fixture ``two_live``)."""
    with callbacks(execute=True):
        job = scoring.start_scoring(dataset=dataset, user=owner, trackers=[wants, other])
    job.refresh_from_db()
    result = ScoredSegment.objects.filter(job=job, version__tracker=wants).order_by("-score").first()
    assert result is not None, "the scoring job scored nothing"
    endpoint, _ = webhooks.create_endpoint(tracker=wants, url="https://93.184.215.14/hook", user=owner)
    delivery = fanout.send_test(endpoint)
    key, _ = ApiKey.issue(workspace=workspace, name="to revoke", created_by=owner, role=Role.LABELER)
    card = wants.cards.filter(answered_at__isnull=True, claimed_by__isnull=True).order_by("pk").first()
    assert card is not None, "the tracker has no unanswered card that no one holds"
    version = services.live_version(wants)
    assert version is not None
    fanout.alert(
        version,
        [Hit(score=0.9, label="yes", text="cancel it now")],
        source=EventSource.API,
        endpoints=[endpoint],
    )
    event = WebhookEvent.objects.filter(tracker=wants, type=EventType.MATCH).get()
    return World(
        workspace=workspace,
        dataset=dataset,
        job=dataset.jobs.order_by("pk").first(),
        tracker=wants,
        other=other,
        version=version.number,
        key=key,
        scoring=job,
        result=result,
        endpoint=endpoint,
        delivery=delivery,
        card=card.pk,
        event=event,
        prediction=matches.prediction_id(version, "cancel it now", True, "yes"),
    )


# The collection a parameter follows -> the value that names the world's object of that kind.
KINDS: dict[str, Any] = {
    "workspaces": lambda w: w.workspace.code,
    "datasets": lambda w: w.dataset.code,
    "jobs": lambda w: w.job.code,
    "trackers": lambda w: w.tracker.code,
    "versions": lambda w: w.version,
    "keys": lambda w: w.key.pk,
    "scoring": lambda w: w.scoring.code,
    "results": lambda w: w.result.pk,
    "webhooks": lambda w: w.endpoint.code,
    "deliveries": lambda w: w.delivery.pk,
    "events": lambda w: w.event.webhook_id,
    "predictions": lambda w: w.prediction,
}


def fill(path: str, world: World) -> dict[str, Any]:
    """The path parameters of ``path`` (an OpenAPI template) named after the world's objects."""
    values = {}
    for collection, name in re.findall(r"/([a-z_]+)/\{([a-z_]+)\}", path):
        if collection not in KINDS:
            raise AssertionError(f"{path}: no object of kind {collection!r} in tests/api_world.py")
        values[name] = str(KINDS[collection](world))
    if set(values) != set(re.findall(r"\{([a-z_]+)\}", path)):
        raise AssertionError(f"{path}: a parameter that follows no collection")
    return values


def member(workspace: Workspace, username: str, role: str):
    from tests.factories import MembershipFactory, UserFactory

    return MembershipFactory(workspace=workspace, user=UserFactory(username=username), role=role).user


def demote(workspace: Workspace, user, role: str) -> None:
    membership = Membership.objects.get(workspace=workspace, user=user)
    membership.role = role
    membership.save()  # the access generation moves: every process sees it at its next request
