"""Migrations depend one way, like the code (serving -> labeling -> trackers; lint-imports checks the code)."""

from __future__ import annotations

from django.db.migrations.loader import MigrationLoader

RANK = {"trackers": 0, "labeling": 1, "serving": 2}


def test_migrations_depend_only_on_the_same_or_a_lower_layer():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    upward = [
        (app, name, dep)
        for (app, name), migration in loader.disk_migrations.items()
        if app in RANK
        for dep in migration.dependencies
        if dep[0] in RANK and RANK[dep[0]] > RANK[app]
    ]
    assert upward == []
