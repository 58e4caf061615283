"""API key authentication for the JSON API: a key becomes a ``KeyPrincipal`` of the access layer."""

from __future__ import annotations

from ninja.security import APIKeyHeader, HttpBearer

from serving.models import ApiKey
from trackers.access import KeyPrincipal


def principal_for(raw: str) -> KeyPrincipal | None:
    key = ApiKey.authenticate(raw) if raw else None
    if key is None:
        return None
    return KeyPrincipal(workspace_id=key.workspace_id, role=key.role, user=key.created_by, key_id=key.pk)


class BearerKey(HttpBearer):
    def authenticate(self, request, token):
        return principal_for(token)


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request, key):
        return principal_for(key or "")
