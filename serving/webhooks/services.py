"""Webhook endpoints: made, changed, checked, their secrets rotated, their health.

The events a match makes are ``serving.webhooks.fanout``'s; their delivery, ``serving.webhooks.sending``.
Time comes from ``now()`` here, for all three, so that tests can drive the schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from serving.models import (
    DeliveryAttempt,
    EventSource,
    Grouping,
    WebhookEndpoint,
)
from serving.webhooks import outbound
from trackers import audit, deletion, errors
from trackers.models import AuditAction, Tracker
from trackers.text import nonfinite_problem, problem

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

FILTER_MAX_FIELDS = 20  # fields of an endpoint's metadata filter
FILTER_MAX_CHARS = 200  # characters of one of its names or string values


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
    _record(AuditAction.ENDPOINT_CREATED, endpoint, {"url": endpoint.url}, user=user)
    return endpoint, secret


def _record(action: AuditAction, endpoint: WebhookEndpoint, detail: dict[str, Any], user: Any = None) -> None:
    tracker = endpoint.tracker
    audit.record(
        action,
        workspace=tracker.workspace,
        target=f"{tracker.name}: {endpoint.url}",
        code=endpoint.code,
        detail=detail,
        user=user,
    )


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
    before = {name: getattr(endpoint, name) for name in UPDATABLE}
    for name, value in {**merged, "url": url}.items():
        setattr(endpoint, name, value)
    if changes.get("enabled"):
        endpoint.disabled_reason, endpoint.failing_since = "", None
    changed = {
        name: [before[name], getattr(endpoint, name)]
        for name in UPDATABLE
        if before[name] != getattr(endpoint, name)
    }
    with transaction.atomic():
        endpoint.save()
        if changed:
            _record(AuditAction.ENDPOINT_CHANGED, endpoint, {"changed": changed})
    return endpoint


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Remove an endpoint, its deliveries and their attempts."""
    with transaction.atomic():
        _record(AuditAction.ENDPOINT_DELETED, endpoint, {"url": endpoint.url})
        endpoint.delete()


def rotate_secret(endpoint: WebhookEndpoint) -> str:
    """A new secret; the old one keeps signing, beside it, for ``WEBHOOK_SECRET_GRACE_SECONDS``."""
    secret = outbound.new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now() + timedelta(seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
    endpoint.secret = secret
    with transaction.atomic():
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
        _record(
            AuditAction.SECRET_ROTATED,
            endpoint,
            {"previous_secret_until": endpoint.previous_secret_until.isoformat()},
        )
    return secret


def signing_secrets(endpoint: WebhookEndpoint, at: datetime) -> list[str]:
    out = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and at < endpoint.previous_secret_until:
        out.append(endpoint.previous_secret)
    return out


def health(
    endpoints: Iterable[WebhookEndpoint], since: timedelta = timedelta(days=7)
) -> dict[int, dict[str, Any]]:
    """Per endpoint: attempts and successes over ``since``, the success rate, and the last error
    unless an attempt succeeded after it (``last_success_at`` says when one last did)."""
    endpoints = list(endpoints)
    out: dict[int, dict[str, Any]] = {
        e.pk: {
            "attempts": 0,
            "succeeded": 0,
            "success_rate": None,
            "last_error": "",
            "last_error_at": None,
            "last_success_at": None,
        }
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
        attempts = DeliveryAttempt.objects.filter(delivery__endpoint=e).order_by("-started_at", "-id")
        ok = attempts.filter(outcome="succeeded").values_list("started_at", "id").first()
        out[e.pk]["last_success_at"] = ok[0] if ok else None
        last = attempts.exclude(outcome="succeeded").first()
        if last is not None and (ok is None or (last.started_at, last.pk) > ok):
            said = f" (the receiver said: {last.response_excerpt[:120]})" if last.response_excerpt else ""
            out[e.pk]["last_error"] = (last.error or f"HTTP {last.status_code}") + said
            out[e.pk]["last_error_at"] = last.started_at
    return out


def endpoints_for(tracker_id: int, source: str) -> list[WebhookEndpoint]:
    flag = {
        EventSource.API: "from_api",
        EventSource.BULK: "from_bulk",
        EventSource.IMPORT: "from_import",
        "any": None,
    }[source]
    qs = WebhookEndpoint.objects.filter(tracker_id=tracker_id, enabled=True)
    return list(qs.filter(**{flag: True}) if flag else qs)


def describe_deletion(sender: type, *, obj: Any, **kwargs: Any) -> list[str]:
    """Alert endpoints and their delivery log go with their tracker."""
    trackers = deletion.trackers_of(obj)
    if not trackers:
        return []
    endpoints = WebhookEndpoint.objects.filter(tracker__in=trackers).count()
    return [f"{endpoints:,} alert endpoints with their deliveries"]
