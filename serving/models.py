"""API keys: workspace-scoped credentials for the JSON API, stored as hashes only."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from trackers.models import Role, Workspace

KEY_PREFIX = "trk_"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls, *, workspace: Workspace, name: str, role: str = Role.ADMIN, created_by=None
    ) -> tuple[ApiKey, str]:
        """Create a key; the raw secret is returned once and never stored."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(
            workspace=workspace,
            name=name,
            prefix=raw[:12],
            key_hash=hash_key(raw),
            role=role,
            created_by=created_by,
        )
        return key, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiKey | None:
        key = (
            cls.objects.select_related("workspace")
            .filter(key_hash=hash_key(raw), revoked_at__isnull=True)
            .first()
        )
        if key:
            cls.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
        return key
