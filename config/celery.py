"""Celery application: Redis broker in production, a filesystem broker by default."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("trackers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
