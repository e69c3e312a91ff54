# Idempotency keys namespaced by source (SPEC 7, "Only the signed body decides"), and no SKU text
# kept for unknown items. Works on a database with deliveries in it: the new unique constraints
# are wider than the old ones (one more column), so every existing row already satisfies them.

from django.db import migrations, models

PLATFORMS = ("shopify", "woocommerce")


def sources_and_skus_forwards(apps, schema_editor):
    ServerDelivery = apps.get_model("notifications", "ServerDelivery")
    # Webhook deliveries were stored under "<platform>:delivery:<id>" with the order's state in
    # their response; everything else was a signed server event (the column's default).
    for platform in PLATFORMS:
        ServerDelivery.objects.filter(
            idempotency_key__startswith=f"{platform}:delivery:", response__has_key="state"
        ).update(source=platform)
    # Unknown SKUs were echoed into the stored response; their text is dropped. A replay of such
    # a delivery rebuilds its `refused_items` from its own (identical) body (ingest.py, webhooks.py).
    for row in ServerDelivery.objects.filter(response__has_key="refused_items").iterator():
        response = {k: v for k, v in row.response.items() if k != "refused_items"}
        response["refused_positions"] = None  # not known: the replay's body is checked afresh
        ServerDelivery.objects.filter(pk=row.pk).update(response=response)


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0009_notification_public_id"),
    ]

    operations = [
        migrations.AddField(
            model_name="serverdelivery",
            name="source",
            field=models.CharField(
                choices=[("server", "Server"), ("shopify", "Shopify"), ("woocommerce", "Woocommerce")],
                default="server",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="event",
            constraint=models.UniqueConstraint(
                condition=models.Q(("idempotency_key__isnull", False)),
                fields=("site", "source", "idempotency_key"),
                name="event_idempotency_key_per_source",
            ),
        ),
        migrations.AddConstraint(
            model_name="serverdelivery",
            constraint=models.UniqueConstraint(
                fields=("site", "source", "idempotency_key"), name="server_delivery_key_per_source"
            ),
        ),
        migrations.RemoveConstraint(
            model_name="event",
            name="event_idempotency_key_per_site",
        ),
        migrations.RemoveConstraint(
            model_name="serverdelivery",
            name="server_delivery_key_per_site",
        ),
        migrations.AddIndex(
            model_name="serverdelivery",
            index=models.Index(fields=["site", "source", "body_sha256"], name="server_delivery_body"),
        ),
        migrations.RunPython(sources_and_skus_forwards, migrations.RunPython.noop, elidable=True),
    ]
