from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("trackers", "0009_tracker_promotion_moves_to_serving"),
    ]

    operations = [
        migrations.RemoveField(model_name="tracker", name="threshold_override"),
    ]
