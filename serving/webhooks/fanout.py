"""The events matches make: webhooks subscribe to the matches prediction and bulk scoring announce
(``serving.matches``), and each match becomes an event for every endpoint whose conditions it meets.

Outbox: ``alert`` writes the events and one delivery row per endpoint in the caller's transaction
(the prediction request, a scoring chunk's checkpoint), and queues each delivery's task on commit
(``serving.webhooks.sending`` delivers them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from django.db import transaction

from serving.matches import Hit, stored_hit
from serving.ml import matching
from serving.models import (
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
from serving.webhooks import sending, services
from trackers.models import Document, Granularity

log = logging.getLogger(__name__)
PAYLOAD_VERSION = 1


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
        endpoints = services.endpoints_for(version.tracker_id, source)
    if not endpoints or not hits:
        return []
    threshold, threshold_source = threshold_of(version)
    doc_ids = {h.document_id for h in hits if h.document_id is not None}
    documents = Document.objects.select_related("dataset").in_bulk(doc_ids) if doc_ids else {}
    at = services.now()
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
        sending.enqueue_on_commit([d.pk for d in created])
    return created


def send_test(endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A ``webhook.test`` event to one endpoint, delivered like any other."""
    at = services.now()
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
        sending.enqueue_on_commit([delivery.pk])
    return delivery


# --- subscribing to matches -------------------------------------------------------------------


def _endpoints(tracker_id: int, source: str, cache: Any) -> list[WebhookEndpoint]:
    if cache is None:
        return services.endpoints_for(tracker_id, source)
    return cast(
        "list[WebhookEndpoint]",
        cache.get(
            ("webhook-endpoints", tracker_id, source), lambda: services.endpoints_for(tracker_id, source)
        ),
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
            e
            for e in services.endpoints_for(version.tracker_id, job.source)
            if e.grouping == Grouping.DOCUMENT
        ]
        if not per_document:
            continue
        stored = list(
            ScoredSegment.objects.filter(job=job, version=version, match=True).select_related("segment")
        )
        if stored:
            alert(version, [stored_hit(r) for r in stored], source=job.source, endpoints=per_document)
