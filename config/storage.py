"""Static files: hashed, compressed and served by whitenoise."""

from __future__ import annotations

from django.conf import settings
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """After `collectstatic`, hashed names; before it (a test run, a fresh checkout), the plain names,
    rather than a 500 on every page for a file the manifest does not know yet."""

    manifest_strict = False

    def stored_name(self, name: str) -> str:
        if settings.DEBUG:  # `make dev` serves the source folders, which know no hashed names
            return name
        try:
            return super().stored_name(name)
        except ValueError:  # not collected: the name as it is (served from the finders in DEBUG)
            return name
