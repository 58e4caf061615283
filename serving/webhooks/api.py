"""Webhook alerts in the prediction API: a tracker's endpoints (made, changed, deleted; the secret
shown once, rotated), their health and delivery log with every attempt, test events, resends, and
the tracker's events."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import AfterValidator

from serving.models import EventSource, EventType, Grouping, WebhookDelivery, WebhookEndpoint, WebhookEvent
from serving.pagination import Pages
from serving.webhooks import fanout, sending
from serving.webhooks import services as webhooks
from trackers.access import Scope
from trackers.models import CAN_IMPORT
from trackers.text import storable

router = Router(tags=["webhooks"])


Url = Annotated[
    str,
    Field(max_length=2000, description="http(s); refused if it resolves to a non-public address"),
    AfterValidator(storable),
]
Description = Annotated[str, Field(max_length=200), AfterValidator(storable)]
Speaker = Annotated[str, Field(max_length=120), AfterValidator(storable)]


class EndpointIn(Schema):
    url: Url
    description: Description = ""
    min_score: float | None = Field(
        None, ge=0, le=1, description="a stricter score than the threshold in use"
    )
    speaker_filter: Speaker = ""
    metadata_filter: dict[str, Any] = Field(default_factory=dict)
    grouping: Grouping = Grouping.TEXT
    from_api: bool = False
    from_bulk: bool = True
    from_import: bool = True


# What a null in a change means, per field: min_score null is the threshold in use again.
CLEARABLE: dict[str, Any] = {
    "min_score": None,
    "description": "",
    "speaker_filter": "",
    "metadata_filter": {},
}


class EndpointPatch(Schema):
    url: Url | None = None
    description: Description | None = None
    enabled: bool | None = None
    min_score: float | None = Field(None, ge=0, le=1)
    speaker_filter: Speaker | None = None
    metadata_filter: dict[str, Any] | None = None
    grouping: Grouping | None = None
    from_api: bool | None = None
    from_bulk: bool | None = None
    from_import: bool | None = None


class Health(Schema):
    attempts: int
    succeeded: int
    success_rate: float | None
    last_error: str
    last_error_at: datetime | None


class EndpointOut(Schema):
    code: UUID
    tracker: UUID = Field(alias="tracker.code")
    url: str
    description: str
    enabled: bool
    disabled_reason: str
    min_score: float | None
    speaker_filter: str
    metadata_filter: dict[str, Any]
    grouping: str
    from_api: bool
    from_bulk: bool
    from_import: bool
    failing_since: datetime | None
    previous_secret_until: datetime | None
    created_at: datetime
    health: Health

    @staticmethod
    def resolve_health(endpoint: WebhookEndpoint) -> dict[str, Any]:
        return webhooks.health([endpoint])[endpoint.pk]


class EndpointCreated(EndpointOut):
    secret: str = Field(description="shown this once: verify signatures with it")


class SecretOut(Schema):
    secret: str = Field(description="the new secret, shown this once")
    previous_valid_until: datetime = Field(description="the old secret signs beside it until then")


class AttemptOut(Schema):
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    outcome: str
    error: str
    response_excerpt: str


class DeliveryOut(Schema):
    id: int
    endpoint: UUID = Field(alias="endpoint.code")
    webhook_id: str = Field(alias="event.webhook_id")
    type: str = Field(alias="event.type")
    state: str
    tries: int
    last_status: int | None
    next_attempt_at: datetime
    delivered_at: datetime | None
    error: str
    created_at: datetime
    attempts: list[AttemptOut]

    @staticmethod
    def resolve_attempts(delivery: WebhookDelivery) -> list[Any]:
        return list(delivery.attempt_rows.all())


class EventDelivery(Schema):
    id: int
    endpoint: UUID = Field(alias="endpoint.code")
    state: str
    tries: int


class EventOut(Schema):
    webhook_id: str
    type: str
    source: str
    created_at: datetime
    payload: dict[str, Any]
    deliveries: list[EventDelivery]

    @staticmethod
    def resolve_deliveries(event: WebhookEvent) -> list[Any]:
        return list(event.deliveries.all())


class EventsQuery(Schema):
    type: EventType | None = None
    source: EventSource | None = None


def _endpoint(request: HttpRequest, code: UUID) -> WebhookEndpoint:
    return Scope.of_request(request).find(
        WebhookEndpoint.objects.all(),
        workspace="tracker__workspace",
        tracker="tracker",
        allowed=CAN_IMPORT,
        code=code,
    )


@router.get("/trackers/{code}/webhooks", operation_id="list_webhooks", response=list[EndpointOut])
def endpoints(request: HttpRequest, code: UUID) -> list[WebhookEndpoint]:
    """The tracker's webhook endpoints, with their health over the last 7 days (never their secrets)."""
    tracker = Scope.of_request(request).tracker(code, CAN_IMPORT)
    return list(WebhookEndpoint.objects.filter(tracker=tracker).select_related("tracker"))


@router.post("/trackers/{code}/webhooks", operation_id="create_webhook", response={201: EndpointCreated})
def create(request: HttpRequest, code: UUID, body: EndpointIn) -> Status[Any]:
    """A new endpoint: matches of the tracker are delivered there, signed with the secret returned
    here once (Standard Webhooks)."""
    scope = Scope.of_request(request)
    tracker = scope.tracker(code, CAN_IMPORT)
    endpoint, secret = webhooks.create_endpoint(
        tracker=tracker, user=scope.actor, **body.dict()
    )  # refused: 422
    assert endpoint.secret == secret  # the one response that shows it
    return Status(201, endpoint)


@router.get("/webhooks/{code}", operation_id="get_webhook", response=EndpointOut)
def endpoint(request: HttpRequest, code: UUID) -> WebhookEndpoint:
    return _endpoint(request, code)


@router.patch("/webhooks/{code}", operation_id="update_webhook", response=EndpointOut)
def change(request: HttpRequest, code: UUID, body: EndpointPatch) -> WebhookEndpoint:
    """Change an endpoint (the URL is checked again); ``enabled: true`` turns a disabled one back on."""
    found = _endpoint(request, code)
    changes = body.dict(exclude_unset=True)
    for name, value in list(changes.items()):
        if value is None:  # null: back to the default where there is one; refused where there is none
            if name not in CLEARABLE:
                raise webhooks.EndpointInvalid(
                    "null is not a value it can take (leave it out to keep it)", field=name
                )
            changes[name] = CLEARABLE[name]
    return webhooks.update_endpoint(found, **changes)  # refused: 422


@router.delete("/webhooks/{code}", operation_id="delete_webhook", response={204: None})
def delete(request: HttpRequest, code: UUID) -> Status[Any]:
    webhooks.delete_endpoint(_endpoint(request, code))
    return Status(204, None)


@router.post("/webhooks/{code}/rotate", operation_id="rotate_webhook_secret", response=SecretOut)
def rotate(request: HttpRequest, code: UUID) -> dict[str, Any]:
    """A new secret; the old one keeps signing beside it for the grace period."""
    found = _endpoint(request, code)
    secret = webhooks.rotate_secret(found)
    return {"secret": secret, "previous_valid_until": found.previous_secret_until}


@router.post("/webhooks/{code}/test", operation_id="send_test_event", response={202: DeliveryOut})
def test_event(request: HttpRequest, code: UUID) -> Status[Any]:
    """Send a ``webhook.test`` event to the endpoint, delivered like any other."""
    return Status(202, fanout.send_test(_endpoint(request, code)))


@router.get("/webhooks/{code}/deliveries", operation_id="list_deliveries", response=list[DeliveryOut])
@paginate(Pages)
def deliveries(request: HttpRequest, code: UUID) -> QuerySet[WebhookDelivery]:
    """The endpoint's delivery log, newest first, each delivery with every attempt."""
    return sending.deliveries_of(_endpoint(request, code)).select_related("endpoint")


@router.post("/deliveries/{delivery_id}/resend", operation_id="resend_delivery", response={202: DeliveryOut})
def resend(request: HttpRequest, delivery_id: int) -> Status[Any]:
    """Deliver again: the same event and webhook-id, from a fresh schedule."""
    delivery = Scope.of_request(request).find(
        WebhookDelivery.objects.select_related("event"),
        workspace="endpoint__tracker__workspace",
        tracker="endpoint__tracker",
        allowed=CAN_IMPORT,
        pk=delivery_id,
    )
    return Status(202, sending.resend(delivery))  # a disabled endpoint: 409


@router.get("/trackers/{code}/events", operation_id="list_events", response=list[EventOut])
@paginate(Pages)
def events(request: HttpRequest, code: UUID, query: Query[EventsQuery]) -> QuerySet[WebhookEvent]:
    """The tracker's events, newest first, with where each went and how that went."""
    tracker = Scope.of_request(request).tracker(code, CAN_IMPORT)
    qs = WebhookEvent.objects.filter(tracker=tracker).prefetch_related("deliveries__endpoint")
    if query.type:
        qs = qs.filter(type=query.type)
    if query.source:
        qs = qs.filter(source=query.source)
    return qs
