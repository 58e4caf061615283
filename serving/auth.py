"""API key authentication for the JSON API: a key becomes a ``KeyPrincipal`` of the access layer."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyHeader, HttpBearer, SessionAuth

from serving import hot
from serving.models import LAST_USED_EVERY, ApiKey, hash_key
from trackers.access import KeyPrincipal

# What a prediction-only key may call: scoring, and reading versions.
PREDICTION_PATHS = ("/predict", "/versions")


def _principal(raw: str) -> tuple[ApiKey, KeyPrincipal] | None:
    key = ApiKey.lookup(raw)
    if key is None:
        return None
    limited = frozenset(key.trackers.values_list("pk", flat=True))
    return key, KeyPrincipal(
        workspace_id=key.workspace_id,
        role=key.rights,
        user=key.created_by,
        key_id=key.pk,
        tracker_ids=limited or None,
        predict_only=key.predict_only,
        prefix=key.prefix,
    )


def principal_for(raw: str, request: HttpRequest | None = None) -> KeyPrincipal | None:
    """The caller a key stands for: looked up once per process while nothing it depends on in its
    workspace changes (``serving.hot``); a revocation, a new limit, a creator who leaves or whose role
    changes is seen by the next request."""
    if not raw:
        return None
    digest = hash_key(raw)
    workspace = hot.workspace_of(
        ("key", digest),
        lambda: ApiKey.objects.filter(key_hash=digest).values_list("workspace_id", flat=True).first(),
    )
    snap = hot.snapshot(request, workspace)  # (an unknown key: under the snapshot of no workspace)
    found = snap.get(("key", digest), lambda: _principal(raw))
    if found is None:
        return None
    key, principal = found
    if hot.due(("touch", key.pk), LAST_USED_EVERY.total_seconds()):
        key.touch()
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
    def authenticate(self, request: HttpRequest, token: str) -> KeyPrincipal | None:
        return principal_for(token, request)


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> KeyPrincipal | None:
        return principal_for(key or "", request)


class BrowserSession(SessionAuth):
    """A signed-in browser. Its CSRF token is checked only when there is a session cookie to
    protect: a call with no session and no valid key is not a browser's, and gets 401 (a missing,
    wrong or revoked key), not a CSRF 403."""

    def _get_key(self, request: HttpRequest) -> Any:
        if self.param_name not in request.COOKIES:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if key is None:  # no session cookie: no browser (and no session middleware on the API's lean path)
            return None
        return super().authenticate(request, key)
