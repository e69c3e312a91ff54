"""Issue 20, part 3: signing and platform secrets are stored encrypted, shown once, then write-only."""

import json
import time
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from django.urls import reverse

from notifications.fields import SecretUnreadable, _cipher_for, secret_encrypt, secrets_cipher
from notifications.models import Site, SiteSecret
from notifications.selectors import site_active_by_key, widget_target_get
from notifications.services import site_secret_rotate
from tests.factories import ProductFactory, SiteFactory
from tests.test_api_server_events import purchase, send
from tests.test_api_webhooks import shopify, shopify_order, woo, woo_order

pytestmark = pytest.mark.django_db

SHOPIFY_SECRET = "shpss_encrypted_0123456789"
WOO_SECRET = "woo-encrypted-secret-#1"
SIGNING_SECRET = "sk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyz"
KEY_A = "rotation-test-key-A-0123456789-abcdefghijklmnopqrstuvwxyz"
KEY_B = "rotation-test-key-B-0123456789-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def site():
    return SiteFactory(shopify_secret=SHOPIFY_SECRET, woocommerce_secret=WOO_SECRET, secret=SIGNING_SECRET)


@pytest.fixture
def superuser():
    return get_user_model().objects.create_superuser("root", "root@example.invalid", "pw-123456789")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def stored(site: Site) -> dict[str, str]:
    """The three columns as the database holds them."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT shopify_secret, woocommerce_secret FROM {Site._meta.db_table} WHERE id = %s",  # noqa: S608
            [site.pk],
        )
        shopify, woocommerce = cursor.fetchone()
        cursor.execute(
            f"SELECT secret FROM {SiteSecret._meta.db_table} WHERE site_id = %s ORDER BY id",  # noqa: S608
            [site.pk],
        )
        signing = [row[0] for row in cursor.fetchall()]
    return {"shopify": shopify, "woocommerce": woocommerce, "signing": signing[-1]}


# --- The field --------------------------------------------------------------------------------


def test_the_columns_hold_ciphertext_and_the_model_reads_the_secret(site):
    raw = stored(site)
    for column, secret in (
        ("shopify", SHOPIFY_SECRET),
        ("woocommerce", WOO_SECRET),
        ("signing", SIGNING_SECRET),
    ):
        assert secret not in raw[column] and secret[4:12] not in raw[column], column
        assert raw[column].startswith("gAAAAA")  # a Fernet token (version byte 0x80)
        assert secrets_cipher().decrypt(raw[column].encode()).decode() == secret
    fresh = Site.objects.get(pk=site.pk)
    assert (fresh.shopify_secret, fresh.woocommerce_secret) == (SHOPIFY_SECRET, WOO_SECRET)
    row = SiteSecret.objects.get(site=site)
    assert row.secret == SIGNING_SECRET and row.hint == "sk_AbCd"
    assert str(row).startswith("sk_AbCd… (active, made ")
    assert list(SiteSecret.objects.filter(site=site).values_list("secret", flat=True)) == [SIGNING_SECRET]


def test_two_encryptions_of_one_secret_differ():
    assert secret_encrypt(plain=SHOPIFY_SECRET) != secret_encrypt(plain=SHOPIFY_SECRET)


def test_a_blank_platform_secret_stays_blank_and_means_not_set():
    site = SiteFactory()
    assert stored(site)["shopify"] == "" and stored(site)["woocommerce"] == ""
    assert Site.objects.get(pk=site.pk).shopify_secret == ""
    assert Site.objects.filter(shopify_secret="").count() == 1


def test_a_lookup_by_secret_is_refused_rather_than_silently_empty(site):
    with pytest.raises(TypeError, match="cannot be looked up by value"):
        list(Site.objects.filter(shopify_secret=SHOPIFY_SECRET))


def test_a_plaintext_or_foreign_value_raises_instead_of_being_used(site):
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Site._meta.db_table} SET shopify_secret = %s WHERE id = %s",  # noqa: S608
            [SHOPIFY_SECRET, site.pk],
        )
    with pytest.raises(SecretUnreadable, match="DJANGO_SECRET_KEY_FALLBACKS"):
        Site.objects.get(pk=site.pk)
    with override_settings(SECRET_KEY=KEY_B, SECRET_KEY_FALLBACKS=[]), pytest.raises(SecretUnreadable):
        SiteSecret.objects.get(site=site)


def test_the_cipher_is_cached_and_decrypting_is_cheap_on_the_signing_path(site):
    assert secrets_cipher() is secrets_cipher()
    token = stored(site)["signing"].encode()
    cipher = secrets_cipher()
    started = time.perf_counter()
    for _ in range(1000):
        cipher.decrypt(token)
    # Measured about 15 µs a decrypt on this machine; one per active secret per signed request.
    assert time.perf_counter() - started < 1.0
    hits = _cipher_for.cache_info().hits
    for _ in range(10):
        SiteSecret.objects.get(site=site)
    assert _cipher_for.cache_info().hits >= hits + 10


def test_lookups_that_check_no_webhook_leave_the_platform_secrets_encrypted(site):
    """The widget socket's and the beacon's site lookups defer the platform secrets: they cost no
    decryption there, and an unreadable one breaks only the webhooks that need it."""
    product = ProductFactory(site=site)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Site._meta.db_table} SET shopify_secret = %s WHERE id = %s",  # noqa: S608
            ["not-a-token", site.pk],
        )
    assert site_active_by_key(key=site.public_key).pk == site.pk
    assert widget_target_get(key=site.public_key, sku=product.sku).site_id == site.pk
    with pytest.raises(SecretUnreadable):
        site_active_by_key(key=site.public_key, platform_secrets=True)


def test_signed_requests_and_webhooks_verify_against_the_decrypted_secrets(client, site):
    product = ProductFactory(site=site)
    assert send(client, purchase(product), secret=SIGNING_SECRET).status_code == 202
    order = shopify_order()
    assert shopify(client, site, "orders/paid", order, secret=SHOPIFY_SECRET).status_code < 300
    assert woo(client, site, "order.updated", woo_order(), secret=WOO_SECRET).status_code < 300
    assert shopify(client, site, "orders/paid", order, delivery="d-2", secret=WOO_SECRET).status_code == 401


# --- SECRET_KEY rotation and `candor_reencrypt_secrets` --------------------------------------


def reencrypt() -> dict:
    out = StringIO()
    call_command("candor_reencrypt_secrets", stdout=out)
    return json.loads(out.getvalue())


def test_rotating_secret_key_keeps_secrets_readable_and_the_command_moves_them(client):
    with override_settings(SECRET_KEY=KEY_A, SECRET_KEY_FALLBACKS=[]):
        site = SiteFactory(
            shopify_secret=SHOPIFY_SECRET, woocommerce_secret=WOO_SECRET, secret=SIGNING_SECRET
        )
        SiteFactory()  # blank platform secrets: nothing to re-encrypt there
        before = stored(site)
    with override_settings(SECRET_KEY=KEY_B, SECRET_KEY_FALLBACKS=[KEY_A]):
        fresh = Site.objects.get(pk=site.pk)
        assert (fresh.shopify_secret, fresh.woocommerce_secret) == (SHOPIFY_SECRET, WOO_SECRET)
        assert SiteSecret.objects.get(site=site).secret == SIGNING_SECRET
        SiteFactory()  # made after the rotation: already under KEY_B
        # `site`'s three, the other site's signing secret; the newest site's is current.
        assert reencrypt() == {"reencrypted": 4, "current": 1}
        after = stored(site)
        assert all(after[column] != before[column] for column in after)
        assert reencrypt() == {"reencrypted": 0, "current": 5}  # idempotent
    with override_settings(SECRET_KEY=KEY_B, SECRET_KEY_FALLBACKS=[]):
        fresh = Site.objects.get(pk=site.pk)
        assert (fresh.shopify_secret, fresh.woocommerce_secret) == (SHOPIFY_SECRET, WOO_SECRET)
        assert SiteSecret.objects.get(site=site).secret == SIGNING_SECRET
        for column, value in stored(site).items():
            assert secrets_cipher(fallbacks=()).decrypt(value.encode()), column


def test_the_command_refuses_a_value_no_key_reads_and_changes_nothing():
    with override_settings(SECRET_KEY=KEY_A, SECRET_KEY_FALLBACKS=[]):
        site = SiteFactory(shopify_secret=SHOPIFY_SECRET)
        before = stored(site)
    from django.core.management import CommandError

    with override_settings(SECRET_KEY=KEY_B, SECRET_KEY_FALLBACKS=[]), pytest.raises(CommandError):
        reencrypt()
    assert stored(site) == before


# --- The migration ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_0014_encrypts_existing_plaintext_and_reverses():
    before = ("notifications", "0013_notification_product_name")
    after = ("notifications", "0014_secrets_encrypted")
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate([before])
    try:
        old = executor.loader.project_state([before]).apps
        site = old.get_model("notifications", "Site").objects.create(
            name="Old",
            public_key="pk_old",
            allowed_origins="https://old.example",
            shopify_secret=SHOPIFY_SECRET,
            woocommerce_secret="",
        )
        old.get_model("notifications", "SiteSecret").objects.create(site=site, secret=SIGNING_SECRET)
        executor = MigrationExecutor(connection)
        executor.migrate([after])
        raw = stored(site)
        assert raw["woocommerce"] == ""
        assert SHOPIFY_SECRET not in raw["shopify"] and SIGNING_SECRET not in raw["signing"]
        assert secrets_cipher().decrypt(raw["shopify"].encode()).decode() == SHOPIFY_SECRET
        assert secrets_cipher().decrypt(raw["signing"].encode()).decode() == SIGNING_SECRET
        new = executor.loader.project_state([after]).apps
        row = new.get_model("notifications", "SiteSecret").objects.get(site_id=site.pk)
        assert (row.secret, row.hint) == (SIGNING_SECRET, "sk_AbCd")
        assert new.get_model("notifications", "Site").objects.get(pk=site.pk).shopify_secret == SHOPIFY_SECRET
        # Reversing writes the plaintext back.
        executor = MigrationExecutor(connection)
        executor.migrate([before])
        assert stored(site) == {"shopify": SHOPIFY_SECRET, "woocommerce": "", "signing": SIGNING_SECRET}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(leaves)


# --- The admin: write-only secrets, hints, the log --------------------------------------------


def change_form_data(response, **over) -> dict:
    """What a browser posts back from the change page, with `over` typed in."""
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if not (value is None or value is False or value == ""):
            data[name] = "on" if value is True else value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        data.update({management.add_prefix(name): management[name].value() for name in management.fields})
        for sub in formset.forms:
            for name in sub.fields:
                value = sub[name].value()
                if not (value is None or value is False or value == ""):
                    data[sub.add_prefix(name)] = value
    data.update(over)
    return data


def admin_pages(admin_client, site) -> str:
    urls = [
        reverse("admin:notifications_site_change", args=[site.pk]),
        reverse("admin:notifications_site_changelist"),
        reverse("admin:notifications_site_history", args=[site.pk]),
        reverse("admin:notifications_site_delete", args=[site.pk]),  # lists the secrets by str()
    ]
    pages = []
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())
    return "\n".join(pages)


def test_no_admin_page_shows_a_stored_secret_or_its_ciphertext(admin_client, site):
    site_secret_rotate(site=site)  # two signing secrets: the inline lists both
    raw = stored(site)
    pages = admin_pages(admin_client, site)
    for value in (SHOPIFY_SECRET, WOO_SECRET, SIGNING_SECRET, *raw.values()):
        assert value not in pages
    for row in SiteSecret.objects.filter(site=site):
        assert row.secret not in pages and f"{row.hint}…" in pages
    assert "sk_AbCd…" in pages
    assert "Set. Leave blank to keep it" in pages
    assert pages.count('type="password"') >= 2


def test_a_site_without_platform_secrets_says_not_set(admin_client):
    site = SiteFactory()
    page = admin_client.get(reverse("admin:notifications_site_change", args=[site.pk])).content.decode()
    assert page.count("Not set.") == 2


def _messages(site) -> list[tuple[str, str]]:
    return [
        (entry.user.username, entry.get_change_message())
        for entry in LogEntry.objects.filter(object_id=str(site.pk)).order_by("id")
    ]


def _no_secret_in_the_log(*secrets: str) -> None:
    for entry in LogEntry.objects.all():
        for secret in secrets:
            assert secret not in entry.change_message and secret not in entry.get_change_message()
            assert secret not in entry.object_repr


def test_platform_secrets_are_write_only_and_each_change_is_logged(admin_client, site):
    url = reverse("admin:notifications_site_change", args=[site.pk])
    # A blank box keeps the stored secret, and logs nothing about it.
    response = admin_client.post(url, change_form_data(admin_client.get(url), name="Renamed"))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    fresh = Site.objects.get(pk=site.pk)
    assert (fresh.name, fresh.shopify_secret, fresh.woocommerce_secret) == (
        "Renamed",
        SHOPIFY_SECRET,
        WOO_SECRET,
    )
    assert _messages(site) == [("root", "Changed Name.")]

    # A typed value replaces it; the log says which secret, never the value.
    admin_client.post(url, change_form_data(admin_client.get(url), shopify_secret="shpss_new_value_42"))
    assert Site.objects.get(pk=site.pk).shopify_secret == "shpss_new_value_42"
    assert ("root", "Changed the Shopify webhook secret") in _messages(site)

    # The checkbox removes it.
    admin_client.post(url, change_form_data(admin_client.get(url), woocommerce_secret_clear="on"))
    fresh = Site.objects.get(pk=site.pk)
    assert (fresh.shopify_secret, fresh.woocommerce_secret) == ("shpss_new_value_42", "")
    assert stored(fresh)["woocommerce"] == ""
    assert ("root", "Removed the WooCommerce webhook secret") in _messages(site)

    # Set again from "not set".
    admin_client.post(url, change_form_data(admin_client.get(url), woocommerce_secret="woo-again"))
    assert Site.objects.get(pk=site.pk).woocommerce_secret == "woo-again"
    assert ("root", "Set the WooCommerce webhook secret") in _messages(site)
    _no_secret_in_the_log(SHOPIFY_SECRET, WOO_SECRET, "shpss_new_value_42", "woo-again", SIGNING_SECRET)
    assert "shpss_new_value_42" not in admin_pages(admin_client, site)


def test_creating_rotating_and_retiring_are_logged_with_the_hint_and_who(admin_client):
    response = admin_client.post(
        reverse("admin:notifications_site_add"),
        {
            "name": "Corner Shop",
            "allowed_origins": "https://corner.example\n",
            "shopify_secret": "shpss_corner_shop_secret",
            "is_active": "on",
            "secrets-TOTAL_FORMS": "0",
            "secrets-INITIAL_FORMS": "0",
            "products-TOTAL_FORMS": "0",
            "products-INITIAL_FORMS": "0",
        },
        follow=True,
    )
    assert response.status_code == 200
    site = Site.objects.get(name="Corner Shop")
    assert site.shopify_secret == "shpss_corner_shop_secret"
    first = SiteSecret.objects.get(site=site)
    assert first.secret in response.content.decode()  # shown once
    log = _messages(site)
    assert ("root", "Set the Shopify webhook secret") in log
    assert ("root", f"Made the first signing secret ({first.hint}…)") in log
    assert ("root", "Added.") in log

    changelist = reverse("admin:notifications_site_changelist")
    response = admin_client.post(
        changelist, {"action": "rotate_secret", "_selected_action": [site.pk]}, follow=True
    )
    second = SiteSecret.objects.filter(site=site).first()
    assert second.secret in response.content.decode()
    assert _messages(site)[-1] == ("root", f"Rotated the signing secret (new secret {second.hint}…)")

    admin_client.post(changelist, {"action": "retire_old_secrets", "_selected_action": [site.pk]})
    assert _messages(site)[-1] == ("root", "Retired 1 signing secret(s)")
    admin_client.post(changelist, {"action": "retire_old_secrets", "_selected_action": [site.pk]})
    assert _messages(site)[-1] == ("root", "Retired 1 signing secret(s)")  # nothing retired, nothing logged
    _no_secret_in_the_log(first.secret, second.secret, "shpss_corner_shop_secret")
    history = admin_client.get(reverse("admin:notifications_site_history", args=[site.pk])).content.decode()
    assert f"Rotated the signing secret (new secret {second.hint}…)" in history
    assert second.secret not in history and first.secret not in history
