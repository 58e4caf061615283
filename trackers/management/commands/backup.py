"""manage.py backup [--output FILE]: one archive of the install (database, artifacts, uploads,
manifest with checksums), written while the app serves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from trackers import backup


class Command(BaseCommand):
    help = "Write one archive of this install: its database, artifact root and uploads, with checksums."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--output",
            type=Path,
            default=None,
            help="the archive to write (default: <data dir>/backups/trackers-<UTC time>.tar.gz)",
        )

    def handle(self, *args: Any, output: Path | None, **options: Any) -> None:
        target = output or Path(settings.DATA_DIR) / "backups" / time.strftime(
            "trackers-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime()
        )
        started = time.perf_counter()
        try:
            manifest = backup.backup(target)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from exc
        size = target.stat().st_size
        self.stdout.write(
            f"wrote {target} ({size / 1e6:.1f} MB, {len(manifest['files'])} files, "
            f"{manifest['database']['vendor']} database) in {time.perf_counter() - started:.1f}s"
        )
