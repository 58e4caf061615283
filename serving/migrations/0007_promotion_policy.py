import django.db.models.deletion
from django.db import migrations, models


def copy_choices(apps, schema_editor):
    """Trackers whose owner turned automatic promotion off keep it off (the default needs no row)."""
    Tracker = apps.get_model("trackers", "Tracker")
    PromotionPolicy = apps.get_model("serving", "PromotionPolicy")
    PromotionPolicy.objects.bulk_create(
        PromotionPolicy(tracker_id=pk, automatic=False)
        for pk in Tracker.objects.filter(promote_automatically=False).values_list("pk", flat=True)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("serving", "0006_event_choices"),
        ("trackers", "0008_access_generation_per_workspace"),
    ]
    # The field this reads leaves the tracker afterwards (trackers' own migration does not know serving).
    run_before = [("trackers", "0009_tracker_promotion_moves_to_serving")]

    operations = [
        migrations.CreateModel(
            name="PromotionPolicy",
            fields=[
                (
                    "tracker",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="promotion",
                        serialize=False,
                        to="trackers.tracker",
                    ),
                ),
                ("automatic", models.BooleanField(default=True)),
            ],
        ),
        migrations.RunPython(copy_choices, migrations.RunPython.noop),
    ]
