

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('trackers', '0008_access_generation_per_workspace'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='tracker',
            name='promote_automatically',
        ),
    ]
