"""Delivering webhook events: one attempt per task, classified and scheduled.

The task gets the delivery's id only and claims it through the claimable-work machinery; each HTTP
attempt is a ``DeliveryAttempt`` row; failures are classified (2xx succeeds; 410 disables the
endpoint; 3xx and other 4xx are permanent; 5xx, 408, 409, 425, 429 and network errors are tried
again on ``WEBHOOK_RETRY_SCHEDULE``, honouring Retry-After). ``dispatch`` (beat, every few seconds)
sends the deliveries that have come due and takes over those whose worker died. Jitter comes from
``_random``, so that tests can drive the schedule.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet

from serving.models import (
    DeliveryAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from serving.webhooks import outbound, services
from trackers import generation, metrics, work
from trackers.models import WorkState

log = logging.getLogger(__name__)
_random = random.Random()
RETRY_STATUSES = {408, 409, 425, 429}


def resend(delivery: WebhookDelivery) -> WebhookDelivery:
    """Deliver again (same event, same webhook-id), from a fresh schedule."""
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        raise services.EndpointDisabled(
            f"endpoint {endpoint} is disabled ({endpoint.disabled_reason or 'by its owner'}): enable it first"
        )
    at = services.now()
    with transaction.atomic():
        updated = (
            WebhookDelivery.objects.filter(pk=delivery.pk)
            .exclude(state=WorkState.RUNNING)
            .update(
                state=WorkState.QUEUED,
                attempts=0,
                schedule_from=F("tries"),  # its retries start the schedule again
                error="",
                next_attempt_at=at,
                queued_at=at,
                finished_at=None,
            )
        )
        if updated:
            enqueue_on_commit([delivery.pk])
    delivery.refresh_from_db()
    return delivery


# --- delivery -------------------------------------------------------------------------------------


def enqueue_on_commit(ids: list[int], countdown: float = 0) -> None:
    for pk in ids:
        work.send_on_commit(WebhookDelivery.task, countdown=countdown, work_id=pk)


def body_of(event: WebhookEvent) -> bytes:
    """The event's body: the same bytes on every attempt and to every endpoint."""
    return json.dumps(event.payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def due() -> Q:
    return Q(next_attempt_at__lte=services.now())


def delay_before(tries: int, retry_after: float | None) -> float | None:
    """Seconds to wait before the next attempt after ``tries`` attempts; None: no attempt is left."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if tries >= len(schedule):
        return None
    delay = schedule[tries] * (1 + settings.WEBHOOK_JITTER * _random.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, max(schedule)))
    return delay


def attempt(delivery: WebhookDelivery) -> None:
    """One HTTP attempt of a claimed delivery, recorded, then the delivery's next state."""
    endpoint = delivery.endpoint
    event = delivery.event
    if not endpoint.enabled:
        work.fail(
            delivery, f"not sent: the endpoint is disabled ({endpoint.disabled_reason or 'by its owner'})"
        )
        return
    at = services.now()
    body = body_of(event)
    headers = outbound.signed_headers(event.webhook_id, body, services.signing_secrets(endpoint, at), at)
    sent = outbound.post(
        endpoint.url,
        body,
        headers,
        allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS,
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
    )
    tries = delivery.tries + 1
    status = sent.status
    if status is not None and 200 <= status < 300:
        outcome, reason = "succeeded", ""
    elif status == 410:
        outcome, reason = "disabled", "the receiver answered 410 Gone: the endpoint is disabled"
    elif status is not None and 300 <= status < 400:
        where = f" to {sent.location}" if sent.location else ""
        outcome, reason = (
            "failed",
            f"HTTP {status}: redirects are not followed (it points{where}); use the final URL",
        )
    elif status is not None and 400 <= status < 500 and status not in RETRY_STATUSES:
        outcome, reason = "failed", f"HTTP {status}: the receiver refused the event (not tried again)"
    elif sent.refused:
        outcome, reason = "failed", sent.error
    else:
        outcome, reason = "retry", sent.error or f"HTTP {status}"
    on_schedule = tries - delivery.schedule_from  # attempts since it was made or last resent
    next_delay = delay_before(on_schedule, sent.retry_after) if outcome == "retry" else None
    if outcome == "retry" and next_delay is None:
        outcome, reason = "failed", f"gave up after {on_schedule} attempts; the last: {reason}"
    metrics.webhook_attempt(outcome)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=tries,
            started_at=at,
            duration_ms=sent.duration_ms,
            status_code=status,
            response_excerpt=sent.excerpt,
            error=sent.error if outcome == "succeeded" else (sent.error or reason)[:500],
            outcome=outcome,
        )
        delivery.tries, delivery.last_status = tries, status
        if outcome == "succeeded":
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
            work.finish(
                delivery, WorkState.SUCCEEDED, tries=tries, last_status=status, delivered_at=services.now()
            )
            return
        _note_failure(endpoint, at, reason, disable=outcome == "disabled")
        if outcome in ("failed", "disabled"):
            work.fail(delivery, reason)  # saves the row, with its tries and last status
            return
        assert next_delay is not None
        when = at + timedelta(seconds=next_delay)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            state=WorkState.QUEUED,
            attempts=0,
            tries=tries,
            last_status=status,
            error=reason[:500],
            next_attempt_at=when,
            queued_at=when if next_delay <= 60 else None,
        )
        if next_delay <= 60:  # soon: a task that waits; later ones are sent by ``dispatch``
            enqueue_on_commit([delivery.pk], countdown=next_delay)


def _note_failure(endpoint: WebhookEndpoint, at: datetime, reason: str, *, disable: bool) -> None:
    """The endpoint's failing streak; past ``WEBHOOK_DISABLE_AFTER_SECONDS`` (or on 410) it is disabled."""
    endpoint.refresh_from_db(fields=["failing_since", "enabled"])
    since = endpoint.failing_since or at
    fields: dict[str, Any] = {"failing_since": since}
    if disable:
        fields.update(enabled=False, disabled_reason=f"disabled {at:%Y-%m-%d %H:%M} UTC: {reason}"[:500])
    elif (at - since).total_seconds() >= settings.WEBHOOK_DISABLE_AFTER_SECONDS:
        fields.update(
            enabled=False,
            disabled_reason=(
                f"disabled {at:%Y-%m-%d %H:%M} UTC: every delivery has failed since {since:%Y-%m-%d %H:%M} UTC; "
                f"the last: {reason}"
            )[:500],
        )
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
    if not fields.get("enabled", True):
        generation.bump(
            generation.workspace_of(endpoint)
        )  # the prediction path keeps endpoints: it must stop alerting this one
        log.warning("webhook endpoint %s disabled: %s", endpoint.pk, fields["disabled_reason"])


def dispatch() -> dict[str, list[int]]:
    """Periodic: send the deliveries that have come due (a retry hours later, or one whose task was
    lost), and take over those whose worker died mid-attempt."""
    at = services.now()
    lost_before = at - timedelta(seconds=settings.JOB_STALE_SECONDS)
    ready = WebhookDelivery.objects.filter(state=WorkState.QUEUED, next_attempt_at__lte=at).filter(
        Q(queued_at__isnull=True) | Q(queued_at__lt=lost_before)
    )
    sent = []
    for pk in ready.values_list("pk", flat=True)[:5000]:
        if (
            WebhookDelivery.objects.filter(pk=pk, state=WorkState.QUEUED)
            .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=lost_before))
            .update(queued_at=at)
        ):
            sent.append(pk)
    with transaction.atomic():
        enqueue_on_commit(sent)
    swept = work.sweep(WebhookDelivery, waiting=Q(state=WorkState.QUEUED))
    return {"sent": sent, **swept}


def deliveries_of(endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related("attempt_rows")
    )
