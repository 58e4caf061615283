"""API key authentication for the JSON API: a key becomes a ``KeyPrincipal`` of the access layer."""

from __future__ import annotations

from ninja.errors import HttpError
from ninja.security import APIKeyHeader, HttpBearer

from serving.models import ApiKey
from trackers.access import KeyPrincipal

# What a prediction-only key may call: scoring, and reading versions.
PREDICTION_PATHS = ("/predict", "/versions")


def principal_for(raw: str, request=None) -> KeyPrincipal | None:
    key = ApiKey.authenticate(raw) if raw else None
    if key is None:
        return None
    limited = frozenset(key.trackers.values_list("pk", flat=True))
    principal = KeyPrincipal(
        workspace_id=key.workspace_id,
        role=key.role,
        user=key.created_by,
        key_id=key.pk,
        tracker_ids=limited or None,
        predict_only=key.predict_only,
    )
    if principal.predict_only and request is not None:
        path = request.path
        if not (
            path.startswith("/api/v1/")
            and path.endswith(PREDICTION_PATHS)
            and request.method in ("GET", "POST")
        ):
            raise HttpError(
                403, f"key {key.prefix}… may only predict ({', '.join(PREDICTION_PATHS)} under /api/v1/)"
            )
    return principal


class BearerKey(HttpBearer):
    def authenticate(self, request, token):
        return principal_for(token, request)


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request, key):
        return principal_for(key or "", request)
