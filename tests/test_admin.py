import re

import pytest
from django.urls import reverse

from notifications.models import Event, Notification, Site, SiteSecret
from tests.factories import ProductFactory, SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    product = ProductFactory()
    return Event.objects.create(
        site=product.site, product=product, kind="view", source="browser", occurred_at="2026-01-01T00:00:00Z"
    )


@pytest.fixture
def notification():
    product = ProductFactory()
    return Notification.objects.create(
        site=product.site,
        product=product,
        kind="viewing_now",
        text="3 other people are viewing this",
        claim={"metric": "viewing_now", "window_s": 30, "displayed": "3"},
        true_value=3,
        window_s=30,
        evidence={"distinct_visitors": 4},
        policy_version="default-1",
        recipient_count=4,
    )


@pytest.mark.parametrize("model", ["event", "notification"])
def test_ledger_and_log_are_read_only_even_for_superusers(superuser_client, request, model):
    obj = request.getfixturevalue(model)
    assert superuser_client.get(reverse(f"admin:notifications_{model}_changelist")).status_code == 200
    assert superuser_client.get(reverse(f"admin:notifications_{model}_add")).status_code == 403
    change_url = reverse(f"admin:notifications_{model}_change", args=[obj.pk])
    page = superuser_client.get(change_url)
    assert page.status_code == 200  # viewable
    assert b'name="_save"' not in page.content
    assert superuser_client.post(change_url, {"kind": "purchase"}).status_code == 403
    delete_url = reverse(f"admin:notifications_{model}_delete", args=[obj.pk])
    assert superuser_client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = superuser_client.post(
        reverse(f"admin:notifications_{model}_changelist"),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_creating_a_site_in_the_admin_shows_its_secret_once(superuser_client):
    response = superuser_client.post(
        reverse("admin:notifications_site_add"),
        {
            "name": "Corner Shop",
            "allowed_origins": "https://corner.example\n",
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
    secret = SiteSecret.objects.get(site=site).secret
    assert site.public_key.startswith("pk_")
    assert secret in response.content.decode()
    # Shown once: the site's page afterwards shows only a prefix.
    page = superuser_client.get(reverse("admin:notifications_site_change", args=[site.pk])).content.decode()
    assert secret not in page
    assert secret[:7] in page


def test_rotating_from_the_admin_shows_the_new_secret(superuser_client):
    site = SiteFactory()
    response = superuser_client.post(
        reverse("admin:notifications_site_changelist"),
        {"action": "rotate_secret", "_selected_action": [site.pk]},
        follow=True,
    )
    secrets = SiteSecret.objects.filter(site=site, retired_at__isnull=True)
    assert secrets.count() == 2
    newest = secrets.first().secret
    assert newest in response.content.decode()
    superuser_client.post(
        reverse("admin:notifications_site_changelist"),
        {"action": "retire_old_secrets", "_selected_action": [site.pk]},
    )
    assert list(
        SiteSecret.objects.filter(site=site, retired_at__isnull=True).values_list("secret", flat=True)
    ) == [newest]
    assert re.match(r"^sk_", newest)


def test_the_site_page_shows_shoppers_on_the_site_now_capped_per_address(
    superuser_client, realtime_mode, settings
):
    """`shoppers_on_site_now` (SPEC 7) has its reader: the Site page, the same capped count."""
    import asyncio

    from notifications.presence import Entry, presence_store

    settings.CANDOR_VISITORS_PER_ADDRESS = 2
    product = ProductFactory()
    other = ProductFactory(site=product.site)
    elsewhere = ProductFactory()  # another store's shopper is not this store's
    url = reverse("admin:notifications_site_change", args=[product.site.pk])
    loop = asyncio.new_event_loop()
    try:

        async def show(entries):
            for entry in entries:
                await presence_store().show(entry, ttl_s=30)

        page = superuser_client.get(url).content.decode()
        assert "Shoppers on the site now: 0" in page
        loop.run_until_complete(
            show(
                [
                    # One address rotating User-Agents counts twice at most, on any product.
                    *(
                        Entry(product.pk, f"rotating{i}", f"s{i}", product.site_id, address="nat")
                        for i in range(6)
                    ),
                    Entry(other.pk, "rotating9", "s9", product.site_id, address="nat"),
                    # Two tabs, two products: one shopper.
                    Entry(product.pk, "honest", "t1", product.site_id, address="home"),
                    Entry(other.pk, "honest", "t2", product.site_id, address="home"),
                    Entry(elsewhere.pk, "stranger", "u1", elsewhere.site_id, address="far"),
                ]
            )
        )
        page = superuser_client.get(url).content.decode()
        assert "Shoppers on the site now: 3" in page
    finally:
        loop.run_until_complete(presence_store_close(loop))
        loop.close()


async def presence_store_close(loop):
    from notifications.presence import _stores

    store = _stores.pop(loop, None)
    if store is not None:
        await store.close()
