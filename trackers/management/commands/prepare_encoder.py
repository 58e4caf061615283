"""Export the packaged sentence-transformers model to ONNX (fp32 + int8) once."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from trackers.ml.embedding import MANIFEST_NAME, EncoderNotPrepared, OnnxEncoder


class Command(BaseCommand):
    help = "Export all-MiniLM-L6-v2 to ONNX under the artifact root (skipped when already there)."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="export again even if artifacts exist")

    def handle(self, *args, force: bool = False, **options):
        target = settings.ENCODER_DIR
        if not force and (target / MANIFEST_NAME).exists():
            try:
                enc = OnnxEncoder(target, settings.ENCODER_VARIANT)
            except EncoderNotPrepared as exc:
                self.stdout.write(f"existing encoder unusable ({exc}); exporting again")
            else:
                self.stdout.write(f"encoder ready: {enc.encoder_id} in {target}")
                return
        from trackers.ml.export_encoder import export  # torch is imported only here

        t0 = time.perf_counter()
        manifest = export(target)
        sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.0f} MB" for k, v in manifest["variants"].items())
        self.stdout.write(
            self.style.SUCCESS(f"exported encoder to {target} in {time.perf_counter() - t0:.1f}s ({sizes})")
        )
