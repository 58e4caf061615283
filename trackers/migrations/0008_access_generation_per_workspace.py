from django.core.management.color import no_style
from django.db import migrations, models


def reset_ids(apps, schema_editor):
    """The first counter was written with an explicit id: new ones must not take it again."""
    model = apps.get_model("trackers", "AccessGeneration")
    for sql in schema_editor.connection.ops.sequence_reset_sql(no_style(), [model]):
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("trackers", "0007_access_generation"),
    ]

    operations = [
        migrations.AddField(
            model_name="accessgeneration",
            name="scope",
            field=models.BigIntegerField(default=0, unique=True),
        ),
        migrations.RunPython(reset_ids, migrations.RunPython.noop),
    ]
