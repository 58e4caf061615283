import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def move_thresholds(apps, schema_editor):
    """An owner's threshold on a tracker becomes its live version's (the version it was set for)."""
    Tracker = apps.get_model("trackers", "Tracker")
    ModelVersion = apps.get_model("serving", "ModelVersion")
    for tracker_id, value in Tracker.objects.filter(threshold_override__isnull=False).values_list(
        "pk", "threshold_override"
    ):
        ModelVersion.objects.filter(tracker_id=tracker_id, is_live=True).update(
            threshold_override=value, threshold_set_at=timezone.now()
        )


class Migration(migrations.Migration):
    dependencies = [
        ("serving", "0007_promotion_policy"),
        ("trackers", "0009_tracker_promotion_moves_to_serving"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]
    # The field this reads leaves the tracker afterwards (trackers' own migration does not know serving).
    run_before = [("trackers", "0010_threshold_moves_to_versions")]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="threshold_override",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="threshold_set_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="threshold_set_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(move_thresholds, migrations.RunPython.noop),
    ]
