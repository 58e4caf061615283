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


def upgraded(tmp_path, before: list[tuple[str, str]], make: str, show: str) -> str:
    """What ``show`` prints on an install migrated to ``before`` (app, migration), given rows by
    ``make`` through the models as they were then (``W``, ``T``, ``R``, ``V``: workspace, tracker,
    training run, model version), then migrated to the end."""
    from tests.test_project import clean_env, run_manage

    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", TRACKERS_DATA_DIR=str(tmp_path))
    for app, name in before:
        run_manage("migrate", app, name.split("_", 1)[0], env=env)
    prelude = (
        "from django.db import connection; from django.db.migrations.executor import MigrationExecutor;"
        f"state = MigrationExecutor(connection).loader.project_state({before!r});"
        "W = state.apps.get_model('trackers', 'Workspace'); T = state.apps.get_model('trackers', 'Tracker');"
        "R = state.apps.get_model('labeling', 'TrainingRun'); V = state.apps.get_model('serving', 'ModelVersion');"
    )
    run_manage("shell", "-c", prelude + make, env=env)
    run_manage("migrate", env=env)
    return run_manage("shell", "-c", show, env=env).stdout.strip().splitlines()[-1]


def test_a_trackers_promotion_choice_moves_to_serving_with_its_value(tmp_path):
    """An install that turned automatic promotion off for a tracker keeps it off after upgrading."""
    out = upgraded(
        tmp_path,
        [("trackers", "0008_access_generation_per_workspace"), ("serving", "0006_event_choices")],
        "ws = W.objects.create(name='W');"
        "T.objects.create(workspace=ws, name='by hand', promote_automatically=False);"
        "T.objects.create(workspace=ws, name='automatic', promote_automatically=True)",
        "from serving.versions import services; from trackers.models import Tracker;"
        "print(sorted((t.name, services.promotes_automatically(t)) for t in Tracker.objects.all()))",
    )
    assert out == "[('automatic', True), ('by hand', False)]"


def test_an_owners_threshold_moves_to_the_live_version_it_was_set_for(tmp_path):
    """An install whose owner set a tracker's threshold keeps answering with it after upgrading: it
    becomes the live version's, and a version that was not live starts from training's."""
    out = upgraded(
        tmp_path,
        [("trackers", "0009_tracker_promotion_moves_to_serving"), ("serving", "0007_promotion_policy")],
        "ws = W.objects.create(name='W');"
        "t = T.objects.create(workspace=ws, name='moved', threshold_override=0.42);"
        "run = R.objects.create(tracker=t, threshold=0.6, watermark=1);"
        "V.objects.create(tracker=t, number=1, training_run=run, is_live=True);"
        "V.objects.create(tracker=t, number=2, training_run=R.objects.create(tracker=t, threshold=0.7, watermark=2))",
        "from serving.versions import services; from serving.models import ModelVersion;"
        "print([(v.number, services.threshold_of(v)) for v in ModelVersion.objects.order_by('number')])",
    )
    assert out == "[(1, (0.42, 'owner')), (2, (0.7, 'training'))]"
