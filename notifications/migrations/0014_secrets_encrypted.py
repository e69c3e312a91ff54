# Signing secrets and platform webhook secrets are stored encrypted (notifications/fields.py,
# issue 20). The columns become text wide enough for a Fernet token, the signing secret loses its
# unique constraint (ciphertexts are random) and gains `hint`, its first 7 characters, which is all
# the admin shows of it from now on.
#
# Existing rows are encrypted with raw SQL: the historical models already carry the encrypted field
# and would try to decrypt the plaintext they read. A value that already decrypts is kept as it is,
# so running the step over a half-migrated table is safe.
#
# Reversing decrypts every value back into the plaintext columns (it needs the same SECRET_KEY or
# its fallbacks, and raises SecretUnreadable otherwise). Works on PostgreSQL and SQLite.

from django.db import migrations, models

import notifications.fields
from notifications.fields import SecretUnreadable, secret_decrypt, secret_encrypt

HINT_CHARS = 7


def _plain(stored: str) -> tuple[str, bool]:
    """(plaintext, whether `stored` was already encrypted)."""
    try:
        return secret_decrypt(stored=stored), True
    except SecretUnreadable:
        return stored, False


def _rows(cursor, table: str, columns: list[str]) -> list[tuple]:
    # Table and column names come from the models, never from input.
    cursor.execute(f"SELECT id, {', '.join(columns)} FROM {table}")  # nosec B608
    return cursor.fetchall()


def _tables(apps, schema_editor) -> tuple[str, str]:
    quote = schema_editor.connection.ops.quote_name
    return (
        quote(apps.get_model("notifications", "SiteSecret")._meta.db_table),
        quote(apps.get_model("notifications", "Site")._meta.db_table),
    )


def secrets_encrypt(apps, schema_editor) -> None:
    signing, sites = _tables(apps, schema_editor)
    with schema_editor.connection.cursor() as cursor:
        for pk, stored, hint in _rows(cursor, signing, ["secret", "hint"]):
            plain, encrypted = _plain(stored)
            cursor.execute(
                f"UPDATE {signing} SET secret = %s, hint = %s WHERE id = %s",  # nosec B608
                [stored if encrypted else secret_encrypt(plain=plain), hint or plain[:HINT_CHARS], pk],
            )
        for pk, shopify, woocommerce in _rows(cursor, sites, ["shopify_secret", "woocommerce_secret"]):
            values = []
            for stored in (shopify or "", woocommerce or ""):
                plain, encrypted = _plain(stored) if stored else ("", True)
                values.append(stored if encrypted else secret_encrypt(plain=plain))
            cursor.execute(
                f"UPDATE {sites} SET shopify_secret = %s, woocommerce_secret = %s WHERE id = %s",  # nosec B608
                [*values, pk],
            )


def secrets_decrypt(apps, schema_editor) -> None:
    signing, sites = _tables(apps, schema_editor)
    with schema_editor.connection.cursor() as cursor:
        for pk, stored in _rows(cursor, signing, ["secret"]):
            cursor.execute(
                f"UPDATE {signing} SET secret = %s WHERE id = %s",  # nosec B608
                [secret_decrypt(stored=stored), pk],
            )
        for pk, shopify, woocommerce in _rows(cursor, sites, ["shopify_secret", "woocommerce_secret"]):
            values = [secret_decrypt(stored=stored) if stored else "" for stored in (shopify, woocommerce)]
            cursor.execute(
                f"UPDATE {sites} SET shopify_secret = %s, woocommerce_secret = %s WHERE id = %s",  # nosec B608
                [*values, pk],
            )


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0013_notification_product_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="sitesecret",
            name="hint",
            field=models.CharField(default="", editable=False, max_length=16),
        ),
        migrations.AlterField(
            model_name="site",
            name="shopify_secret",
            field=notifications.fields.EncryptedTextField(
                blank=True, help_text="The Shopify app's webhook secret (SPEC 5)."
            ),
        ),
        migrations.AlterField(
            model_name="site",
            name="woocommerce_secret",
            field=notifications.fields.EncryptedTextField(
                blank=True, help_text="The WooCommerce webhook's secret (SPEC 5)."
            ),
        ),
        migrations.AlterField(
            model_name="sitesecret",
            name="secret",
            field=notifications.fields.EncryptedTextField(editable=False),
        ),
        migrations.RunPython(secrets_encrypt, secrets_decrypt, elidable=False),
    ]
