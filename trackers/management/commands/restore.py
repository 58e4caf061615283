"""manage.py restore ARCHIVE: load a backup into this install, which must be empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trackers import backup


class Command(BaseCommand):
    help = "Load an archive written by `manage.py backup` into this empty install (stop the app first)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", type=Path)

    def handle(self, *args: Any, archive: Path, **options: Any) -> None:
        if not archive.is_file():
            raise CommandError(f"no archive at {archive}")
        try:
            manifest = backup.restore(archive)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"restored {archive} (made {manifest['created_at']}, {len(manifest['files'])} files, "
            f"{manifest['database']['vendor']} database)"
        )
        for path in manifest.get("missing", []):
            self.stderr.write(f"missing (deleted while the backup ran): {path}")
