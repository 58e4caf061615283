"""Webhook alerts on matches: endpoints, the events a match makes, and their delivery.

Webhooks subscribe to matches (``serving.matches``): the paths that find them do not know about
alerts. Outbox: ``alert`` writes the events and one delivery row per endpoint in the caller's transaction
(the prediction request, a scoring chunk's checkpoint), and queues each delivery's task on commit.
The task gets the delivery's id only and claims it through the claimable-work machinery; each HTTP
attempt is a ``DeliveryAttempt`` row; failures are classified (2xx succeeds; 410 disables the
endpoint; 3xx and other 4xx are permanent; 5xx, 408, 409, 425, 429 and network errors are tried
again on ``WEBHOOK_RETRY_SCHEDULE``, honouring Retry-After). ``dispatch`` (beat, every few seconds)
sends the deliveries that have come due and takes over those whose worker died.

Time comes from ``now()`` and jitter from ``_random``, so that tests can drive the schedule.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from serving.matches import Hit, stored_hit
from serving.ml import matching
from serving.models import (
    DeliveryAttempt,
    EventSource,
    EventType,
    Grouping,
    ModelVersion,
    ScoredSegment,
    ScoringJob,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from serving.webhooks import outbound
from trackers import errors, generation, work
from trackers.models import Document, Granularity, Tracker, WorkState
from trackers.text import nonfinite_problem, problem

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
FILTER_MAX_FIELDS = 20  # fields of an endpoint's metadata filter
FILTER_MAX_CHARS = 200  # characters of one of its names or string values
RETRY_STATUSES = {408, 409, 425, 429}
_random = random.Random()


def now() -> datetime:
    return timezone.now()


class EndpointInvalid(errors.Invalid):
    """An endpoint that cannot be saved, and why."""


class EndpointDisabled(errors.Conflict):
    """An endpoint that is off, asked to deliver."""


# --- endpoints ----------------------------------------------------------------------------------


def _check_fields(url: str, min_score: float | None, metadata_filter: Any, *, check_url: bool = True) -> str:
    if check_url:
        try:
            url = outbound.check_target(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS).url
        except outbound.TargetRefused as exc:
            raise EndpointInvalid(field="url", message=f"{exc}") from None
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise EndpointInvalid(field="min_score", message=f"a score between 0 and 1 (got {min_score})")
    if not isinstance(metadata_filter, dict) or not all(isinstance(k, str) for k in metadata_filter):
        raise EndpointInvalid(
            field="metadata_filter", message='an object of field names and values, like {"region": "EU"}'
        )
    if len(metadata_filter) > FILTER_MAX_FIELDS:
        raise EndpointInvalid(
            field="metadata_filter",
            message=f"at most {FILTER_MAX_FIELDS} fields (got {len(metadata_filter):,})",
        )
    for name, value in metadata_filter.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise EndpointInvalid(
                field="metadata_filter",
                message=f"the value of '{name[:40]}' is a string, number or true/false",
            )
        if isinstance(value, float) and (why := nonfinite_problem(value, name[:40])):
            raise EndpointInvalid(field="metadata_filter", message=f"{why}")
        if len(name) > FILTER_MAX_CHARS or (isinstance(value, str) and len(value) > FILTER_MAX_CHARS):
            raise EndpointInvalid(
                field="metadata_filter",
                message=f"'{name[:40]}': names and values are at most {FILTER_MAX_CHARS} characters",
            )
        for text in (name, value):
            if isinstance(text, str) and (why := problem(text)):
                raise EndpointInvalid(field="metadata_filter", message=f"'{name[:40]}': {why}")
    return url


def create_endpoint(
    *,
    tracker: Tracker,
    url: str,
    user: User | None,
    description: str = "",
    min_score: float | None = None,
    speaker_filter: str = "",
    metadata_filter: dict[str, Any] | None = None,
    grouping: str = Grouping.TEXT,
    from_api: bool = False,
    from_bulk: bool = True,
    from_import: bool = True,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint of ``tracker``, and its secret (returned once; pages never show it again)."""
    metadata_filter = metadata_filter or {}
    clean_url = _check_fields(url, min_score, metadata_filter)
    if grouping not in Grouping.values:
        raise EndpointInvalid(
            field="grouping", message=f"one of {', '.join(Grouping.values)} (got {grouping!r})"
        )
    secret = outbound.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        tracker=tracker,
        url=clean_url,
        description=description.strip()[:200],
        secret=secret,
        min_score=min_score,
        speaker_filter=speaker_filter.strip(),
        metadata_filter=metadata_filter,
        grouping=grouping,
        from_api=from_api,
        from_bulk=from_bulk,
        from_import=from_import,
        created_by=user,
    )
    return endpoint, secret


UPDATABLE = (
    "url",
    "description",
    "enabled",
    "min_score",
    "speaker_filter",
    "metadata_filter",
    "grouping",
    "from_api",
    "from_bulk",
    "from_import",
)


def update_endpoint(endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    """Change an endpoint's settings (checked as on creation); enabling it again clears why it was
    disabled and its failing streak."""
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise EndpointInvalid(f"cannot change {', '.join(sorted(unknown))}")
    merged = {name: changes.get(name, getattr(endpoint, name)) for name in UPDATABLE}
    # The target is checked again when it changes or the endpoint is enabled (not to disable it).
    url = _check_fields(
        merged["url"],
        merged["min_score"],
        merged["metadata_filter"],
        check_url="url" in changes or bool(changes.get("enabled")),
    )
    if merged["grouping"] not in Grouping.values:
        raise EndpointInvalid(field="grouping", message=f"one of {', '.join(Grouping.values)}")
    for name, value in {**merged, "url": url}.items():
        setattr(endpoint, name, value)
    if changes.get("enabled"):
        endpoint.disabled_reason, endpoint.failing_since = "", None
    endpoint.save()
    return endpoint


def rotate_secret(endpoint: WebhookEndpoint) -> str:
    """A new secret; the old one keeps signing, beside it, for ``WEBHOOK_SECRET_GRACE_SECONDS``."""
    secret = outbound.new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now() + timedelta(seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
    return secret


def signing_secrets(endpoint: WebhookEndpoint, at: datetime) -> list[str]:
    out = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and at < endpoint.previous_secret_until:
        out.append(endpoint.previous_secret)
    return out


def health(
    endpoints: Iterable[WebhookEndpoint], since: timedelta = timedelta(days=7)
) -> dict[int, dict[str, Any]]:
    """Per endpoint: attempts and successes over ``since``, the success rate and the last error."""
    endpoints = list(endpoints)
    out: dict[int, dict[str, Any]] = {
        e.pk: {"attempts": 0, "succeeded": 0, "success_rate": None, "last_error": "", "last_error_at": None}
        for e in endpoints
    }
    rows = (
        DeliveryAttempt.objects.filter(delivery__endpoint__in=endpoints, started_at__gte=now() - since)
        .values("delivery__endpoint_id")
        .annotate(n=Count("id"), ok=Count("id", filter=Q(outcome="succeeded")))
    )
    for row in rows:
        h = out[row["delivery__endpoint_id"]]
        h["attempts"], h["succeeded"] = row["n"], row["ok"]
        h["success_rate"] = row["ok"] / row["n"] if row["n"] else None
    for e in endpoints:
        last = (
            DeliveryAttempt.objects.filter(delivery__endpoint=e)
            .exclude(outcome="succeeded")
            .order_by("-started_at")
            .first()
        )
        if last is not None:
            said = f" (the receiver said: {last.response_excerpt[:120]})" if last.response_excerpt else ""
            out[e.pk]["last_error"] = (last.error or f"HTTP {last.status_code}") + said
            out[e.pk]["last_error_at"] = last.started_at
    return out


def daily_chart(endpoint: WebhookEndpoint, days: int = 7) -> dict[str, Any]:
    """Attempts per day over ``days`` days, succeeded and failed, as stacked SVG bars."""
    today = now().date()
    first = today - timedelta(days=days - 1)
    counts = {first + timedelta(days=i): [0, 0] for i in range(days)}
    for started, outcome in DeliveryAttempt.objects.filter(
        delivery__endpoint=endpoint, started_at__date__gte=first
    ).values_list("started_at", "outcome"):
        day = timezone.localtime(started).date()
        if day in counts:
            counts[day][0 if outcome == "succeeded" else 1] += 1
    top = max([ok + bad for ok, bad in counts.values()] + [1])
    width, height, gap = 280, 80, 6
    bar = (width - gap * (days - 1)) / days
    bars = []
    for i, (day, (ok, bad)) in enumerate(counts.items()):
        h_ok, h_bad = height * ok / top, height * bad / top
        bars.append(
            {
                "x": round(i * (bar + gap), 1),
                "w": round(bar, 1),
                "ok_y": round(height - h_ok, 1),
                "ok_h": round(h_ok, 1),
                "bad_y": round(height - h_ok - h_bad, 1),
                "bad_h": round(h_bad, 1),
                "ok": ok,
                "bad": bad,
                "day": day.strftime("%a %d"),
            }
        )
    return {"w": width, "h": height, "bars": bars, "total": sum(ok + bad for ok, bad in counts.values())}


# --- events -------------------------------------------------------------------------------------


def _passes(endpoint: WebhookEndpoint, hit: Hit, documents: dict[int, Document]) -> bool:
    """Whether a match meets the endpoint's own conditions (the match itself was decided by
    ``serving.ml.matching``)."""
    if endpoint.min_score is not None and hit.score < endpoint.min_score:
        return False
    if not matching.same_speaker(hit.speaker, endpoint.speaker_filter):
        return False
    if endpoint.metadata_filter:
        doc = documents.get(hit.document_id) if hit.document_id is not None else None
        meta = doc.metadata if doc is not None else {}
        if any((meta or {}).get(k) != v for k, v in endpoint.metadata_filter.items()):
            return False
    return True


def _document_json(doc: Document | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {
        "id": str(doc.code),
        "external_id": doc.external_id,
        "title": doc.title,
        "kind": doc.kind,
        "metadata": doc.metadata,
        "occurred_at": doc.occurred_at.isoformat() if doc.occurred_at else None,
        "dataset": str(doc.dataset.code),
    }


def _match_json(hit: Hit) -> dict[str, Any]:
    return {
        "score": round(float(hit.score), 6),
        "label": hit.label,
        "text": hit.text,
        "position": hit.position,
        "speaker": hit.speaker,
    }


def _payload(
    *,
    event: WebhookEvent,
    version: ModelVersion,
    threshold: float | None,
    threshold_source: str,
    source: str,
    document: dict[str, Any] | None,
    hits: list[Hit],
    at: datetime,
) -> dict[str, Any]:
    tracker = version.tracker
    best = max(hits, key=lambda h: h.score)
    return {
        "type": EventType.MATCH,
        "id": event.webhook_id,
        "version": PAYLOAD_VERSION,
        "timestamp": at.isoformat(),
        "data": {
            "tracker": {"id": str(tracker.code), "name": tracker.name, "kind": tracker.kind},
            "model_version": version.number,
            "threshold": threshold,
            "threshold_source": threshold_source,
            "source": source,
            "granularity": tracker.granularity,
            "score": round(float(best.score), 6),
            "label": best.label,
            "document": document,
            "matches": [_match_json(h) for h in sorted(hits, key=lambda h: (h.position or 0, -h.score))],
        },
    }


def _dedupe_key(version: ModelVersion, grouping: str, hits: list[Hit]) -> str:
    first = hits[0]
    if first.document_id is None:
        return ""  # a text sent to the API: each request is its own event
    if grouping == Grouping.DOCUMENT or first.segment_id is None:
        return f"v{version.pk}:d{first.document_id}"
    return f"v{version.pk}:s{first.segment_id}"


def endpoints_for(tracker_id: int, source: str) -> list[WebhookEndpoint]:
    flag = {
        EventSource.API: "from_api",
        EventSource.BULK: "from_bulk",
        EventSource.IMPORT: "from_import",
        "any": None,
    }[source]
    qs = WebhookEndpoint.objects.filter(tracker_id=tracker_id, enabled=True)
    return list(qs.filter(**{flag: True}) if flag else qs)


def alert(
    version: ModelVersion,
    hits: list[Hit],
    *,
    source: str,
    endpoints: list[WebhookEndpoint] | None = None,
    document: dict[str, Any] | None = None,
) -> list[WebhookDelivery]:
    """Events for ``hits`` of ``version`` (matches, as ``serving.ml.matching`` decided) to each endpoint whose
    condition they meet, grouped as the endpoint asks; deliveries queued once the caller commits.
    A document or segment already alerted to an endpoint for this version is not alerted again.
    ``document``: the hits are lines of one call that is not stored (a transcript sent to the API)."""
    from serving.versions.services import threshold_of

    if endpoints is None:
        endpoints = endpoints_for(version.tracker_id, source)
    if not endpoints or not hits:
        return []
    threshold, threshold_source = threshold_of(version)
    doc_ids = {h.document_id for h in hits if h.document_id is not None}
    documents = Document.objects.select_related("dataset").in_bulk(doc_ids) if doc_ids else {}
    at = now()
    planned: dict[str, tuple[list[Hit], list[tuple[WebhookEndpoint, str]]]] = {}
    for endpoint in endpoints:
        groups: dict[Any, list[Hit]] = {}
        for i, hit in enumerate(h for h in hits if _passes(endpoint, h, documents)):
            by_document = endpoint.grouping == Grouping.DOCUMENT and (
                hit.document_id is not None or document is not None
            )
            groups.setdefault(("d", hit.document_id) if by_document else ("t", i), []).append(hit)
        for members in groups.values():
            key = _dedupe_key(version, endpoint.grouping, members)
            # Endpoints given the same hits share one event (its body is the same for each).
            shape = json.dumps([[h.segment_id, h.document_id, h.text, h.score] for h in members], default=str)
            planned.setdefault(shape, (members, []))[1].append((endpoint, key))
    keys = {key for _, targets in planned.values() for _, key in targets if key}
    taken = (
        set(
            WebhookDelivery.objects.filter(endpoint__in=endpoints, dedupe_key__in=keys).values_list(
                "endpoint_id", "dedupe_key"
            )
        )
        if keys
        else set()
    )
    events: list[WebhookEvent] = []
    rows: list[WebhookDelivery] = []
    for members, targets in planned.values():
        targets = [(e, k) for e, k in targets if (e.pk, k) not in taken]
        if not targets:
            continue
        event = WebhookEvent(tracker_id=version.tracker_id, type=EventType.MATCH, source=source, payload={})
        stored = documents.get(members[0].document_id) if members[0].document_id is not None else None
        event.payload = _payload(
            event=event,
            version=version,
            threshold=threshold,
            threshold_source=threshold_source,
            source=source,
            document=_document_json(stored) if stored is not None else document,
            hits=members,
            at=at,
        )
        events.append(event)
        rows.extend(
            WebhookDelivery(event=event, endpoint=e, dedupe_key=k, next_attempt_at=at, queued_at=at)
            for e, k in targets
        )
    if not events:
        return []
    with transaction.atomic():
        WebhookEvent.objects.bulk_create(events, batch_size=1000)
        for row in rows:
            row.event_id = row.event.pk
        keyed = [r for r in rows if r.dedupe_key]
        created = WebhookDelivery.objects.bulk_create([r for r in rows if not r.dedupe_key], batch_size=1000)
        if keyed:
            # A concurrent retry of the same scoring may have taken a key meanwhile: it keeps it.
            WebhookDelivery.objects.bulk_create(keyed, batch_size=1000, ignore_conflicts=True)
            created += list(WebhookDelivery.objects.filter(event__in={r.event_id for r in keyed}))
        _enqueue_on_commit([d.pk for d in created])
    return created


def send_test(endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A ``webhook.test`` event to one endpoint, delivered like any other."""
    at = now()
    with transaction.atomic():
        event = WebhookEvent(
            tracker_id=endpoint.tracker_id, type=EventType.TEST, source=EventSource.TEST, payload={}
        )
        tracker = endpoint.tracker
        event.payload = {
            "type": EventType.TEST,
            "id": event.webhook_id,
            "version": PAYLOAD_VERSION,
            "timestamp": at.isoformat(),
            "data": {
                "tracker": {"id": str(tracker.code), "name": tracker.name, "kind": tracker.kind},
                "message": "a test event from Trackers: this endpoint is set up to receive alerts",
            },
        }
        event.save()
        delivery = WebhookDelivery.objects.create(
            event=event, endpoint=endpoint, next_attempt_at=at, queued_at=at
        )
        _enqueue_on_commit([delivery.pk])
    return delivery


def resend(delivery: WebhookDelivery) -> WebhookDelivery:
    """Deliver again (same event, same webhook-id), from a fresh schedule."""
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        raise EndpointDisabled(
            f"endpoint {endpoint} is disabled ({endpoint.disabled_reason or 'by its owner'}): enable it first"
        )
    at = now()
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
            _enqueue_on_commit([delivery.pk])
    delivery.refresh_from_db()
    return delivery


# --- delivery -------------------------------------------------------------------------------------


def _enqueue_on_commit(ids: list[int], countdown: float = 0) -> None:
    for pk in ids:
        work.send_on_commit(WebhookDelivery.task, countdown=countdown, work_id=pk)


def body_of(event: WebhookEvent) -> bytes:
    """The event's body: the same bytes on every attempt and to every endpoint."""
    return json.dumps(event.payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def due() -> Q:
    return Q(next_attempt_at__lte=now())


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
    at = now()
    body = body_of(event)
    headers = outbound.signed_headers(event.webhook_id, body, signing_secrets(endpoint, at), at)
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
            work.finish(delivery, WorkState.SUCCEEDED, tries=tries, last_status=status, delivered_at=now())
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
            _enqueue_on_commit([delivery.pk], countdown=next_delay)


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
    at = now()
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
        _enqueue_on_commit(sent)
    swept = work.sweep(WebhookDelivery, waiting=Q(state=WorkState.QUEUED))
    return {"sent": sent, **swept}


def deliveries_of(endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related("attempt_rows")
    )


# --- subscribing to matches -------------------------------------------------------------------


def _endpoints(tracker_id: int, source: str, cache: Any) -> list[WebhookEndpoint]:
    if cache is None:
        return endpoints_for(tracker_id, source)
    return cast(
        "list[WebhookEndpoint]",
        cache.get(("webhook-endpoints", tracker_id, source), lambda: endpoints_for(tracker_id, source)),
    )


def on_found(
    sender: Any,
    *,
    version: ModelVersion,
    hits: Callable[[], list[Hit]],
    source: str,
    stored: bool = False,
    document: dict[str, Any] | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> None:
    """Matches to the tracker's endpoints that take ``source``: written with the matches (the
    outbox), delivered by a worker. Stored segments' matches go now to the endpoints that want each
    text; those grouped by document wait until the job has read every segment (``on_job_scored``)."""
    endpoints = _endpoints(version.tracker_id, source, cache)
    whole = version.tracker.granularity == Granularity.DOCUMENT
    if stored and not whole:
        endpoints = [e for e in endpoints if e.grouping == Grouping.TEXT]
    if endpoints and (found := hits()):
        alert(version, found, source=source, endpoints=endpoints, document=document)


def on_job_scored(sender: Any, *, job: ScoringJob, versions: list[ModelVersion], **kwargs: Any) -> None:
    """A finished job's matches, a document at a time, to the endpoints that group by document."""
    for version in versions:
        if version.tracker.granularity == Granularity.DOCUMENT:
            continue  # a document tracker's matches are whole documents already
        per_document = [
            e for e in endpoints_for(version.tracker_id, job.source) if e.grouping == Grouping.DOCUMENT
        ]
        if not per_document:
            continue
        stored = list(
            ScoredSegment.objects.filter(job=job, version=version, match=True).select_related("segment")
        )
        if stored:
            alert(version, [stored_hit(r) for r in stored], source=job.source, endpoints=per_document)
