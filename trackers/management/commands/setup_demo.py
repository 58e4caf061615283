"""Create the demo admin, workspace and dataset, and queue the demo corpus import."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from trackers import imports, services
from trackers.demo import demo_zip
from trackers.models import Dataset, Membership, Role, Workspace

DEMO_WORKSPACE = "Demo workspace"
DEMO_DATASET = "Demo sales & support calls"


class Command(BaseCommand):
    help = "Idempotently set up a demo workspace with an admin user and the generated demo call corpus."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("TRACKERS_DEMO_USER", "admin"))
        parser.add_argument("--calls", type=int, default=150)

    def handle(self, *args, username: str, calls: int, **options):
        User = get_user_model()
        password_file = settings.DATA_DIR / "demo-credentials.txt"
        with transaction.atomic():
            user = User.objects.filter(username=username).first()
            if user is None:
                password = os.environ.get("TRACKERS_DEMO_PASSWORD") or secrets.token_urlsafe(9)
                user = User.objects.create_superuser(
                    username=username, email=f"{username}@example.com", password=password
                )
                password_file.parent.mkdir(parents=True, exist_ok=True)
                password_file.write_text(f"{username}\n{password}\n")
                password_file.chmod(0o600)
            ws = Workspace.objects.filter(name=DEMO_WORKSPACE, memberships__user=user).first()
            if ws is None:
                ws = services.create_workspace(name=DEMO_WORKSPACE, owner=user)
            Membership.objects.get_or_create(workspace=ws, user=user, defaults={"role": Role.OWNER})
            ds, created = Dataset.objects.get_or_create(
                workspace=ws,
                name=DEMO_DATASET,
                defaults={
                    "description": f"{calls} generated call transcripts with recurring sales and support concepts."
                },
            )
            if created or not ds.documents.exists() and not ds.jobs.exists():
                job = imports.start_import(
                    dataset=ds,
                    user=user,
                    filename="demo-calls.zip",
                    data=demo_zip(calls),
                    fmt="zip",
                    on_error="reject",
                )
                self.stdout.write(f"queued import of {calls} demo calls (job {job.code})")
        creds = password_file.read_text().split() if password_file.exists() else [username, "(set earlier)"]
        self.stdout.write(
            self.style.SUCCESS(
                f"demo ready: workspace '{ws.name}', dataset '{ds.name}'\n"
                f"  log in as: {creds[0]}  password: {creds[1]}  (saved in {password_file})"
            )
        )
