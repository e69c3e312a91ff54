# Each notification keeps the product name it was shown under (issue 20): /why/ shows that name,
# not whatever the product is called today. Rows logged before this migration are filled from the
# product's current name: the best available, since the name they were shown under was not kept
# (a product renamed before this migration shows its newer name on old /why/ pages).

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def product_names_fill(apps, schema_editor):
    Notification = apps.get_model("notifications", "Notification")
    Product = apps.get_model("notifications", "Product")
    # One UPDATE … SET product_name = (SELECT name …): the log can be large.
    Notification.objects.update(
        product_name=Subquery(Product.objects.filter(pk=OuterRef("product_id")).values("name")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0012_site_membership"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="product_name",
            field=models.CharField(blank=True, default="", max_length=300),
        ),
        migrations.RunPython(product_names_fill, migrations.RunPython.noop),
    ]
