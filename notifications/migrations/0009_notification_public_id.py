# Adds Notification.public_id, the id /why/ and the socket use (SPEC 7: not enumerable).
#
# Three steps so it runs on a database that already holds notifications: the column is added
# nullable, every existing row gets its own fresh random id (a callable default on AddField
# would be evaluated once and give every row the same value), then it becomes unique and
# required. Old integer /why/ URLs stop resolving: that is the point.

import secrets

from django.db import migrations, models

import notifications.models

BATCH = 2000


def public_ids_backfill(apps, schema_editor):
    Notification = apps.get_model("notifications", "Notification")
    pending = Notification.objects.filter(public_id__isnull=True).order_by("pk")
    while True:
        rows = list(pending.only("pk")[:BATCH])
        if not rows:
            return
        for row in rows:
            row.public_id = secrets.token_urlsafe(16)
        Notification.objects.bulk_update(rows, ["public_id"])


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0008_per_address_and_provenance"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(public_ids_backfill, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="notification",
            name="public_id",
            field=models.CharField(
                default=notifications.models.notification_public_id,
                editable=False,
                max_length=32,
                unique=True,
            ),
        ),
    ]
