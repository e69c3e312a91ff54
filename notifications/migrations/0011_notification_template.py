# Each notification records the template text it was rendered from and its locale, so the claims
# audit can render it again and compare (SPEC 7, issue 19). Rows logged before this migration get
# blank values: what they were rendered from was not kept, and the audit skips their text check
# (their claim is still checked against the ledger).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0010_intake_namespaces"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="locale",
            field=models.CharField(blank=True, default="", max_length=16),
        ),
        migrations.AddField(
            model_name="notification",
            name="template_text",
            field=models.CharField(blank=True, default="", max_length=500),
        ),
    ]
