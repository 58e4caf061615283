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


def test_a_trackers_promotion_choice_moves_to_serving_with_its_value(tmp_path):
    """An install that turned automatic promotion off for a tracker keeps it off after upgrading."""
    from tests.test_project import clean_env, run_manage

    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", TRACKERS_DATA_DIR=str(tmp_path))
    run_manage("migrate", "trackers", "0008", env=env)
    run_manage("migrate", "serving", "0006", env=env)
    make = (  # through the models as they were before the move
        "from django.db import connection; from django.db.migrations.executor import MigrationExecutor;"
        "state = MigrationExecutor(connection).loader.project_state("
        "[('trackers', '0008_access_generation_per_workspace'), ('serving', '0006_event_choices')]);"
        "W = state.apps.get_model('trackers', 'Workspace'); T = state.apps.get_model('trackers', 'Tracker');"
        "ws = W.objects.create(name='W');"
        "T.objects.create(workspace=ws, name='by hand', promote_automatically=False);"
        "T.objects.create(workspace=ws, name='automatic', promote_automatically=True)"
    )
    run_manage("shell", "-c", make, env=env)
    run_manage("migrate", env=env)
    show = (
        "from serving.versions import services; from trackers.models import Tracker;"
        "print(sorted((t.name, services.promotes_automatically(t)) for t in Tracker.objects.all()))"
    )
    out = run_manage("shell", "-c", show, env=env).stdout.strip().splitlines()[-1]
    assert out == "[('automatic', True), ('by hand', False)]"
