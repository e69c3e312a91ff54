"""SPEC 7, "The store's own evidence is labelled": every purchase records its source; a site can
promise `purchases_from = platform`; the audit raises an alarm (and withdraws nothing) for signed
purchases of a product nobody viewed in the 24 hours before."""

import datetime as dt

import pytest
from django.utils import timezone

from notifications import audit, metrics
from notifications.models import AuditAlarm, Event, Exposure, PurchaseSources
from tests.factories import ProductFactory
from tests.test_api_events import good, post
from tests.test_api_server_events import purchase, send
from tests.test_api_webhooks import SHOPIFY_SECRET, shopify, shopify_order

pytestmark = pytest.mark.django_db

LATER = dt.timedelta(minutes=30)  # past the audit's grace for late page-view rows


@pytest.fixture
def site_products():
    first = ProductFactory(sku="IPOD2008GREEN")
    first.site.shopify_secret = SHOPIFY_SECRET
    first.site.save()
    return first.site, first


def _orders(product) -> int:
    return metrics.purchases_in_window(product_id=product.pk, at=timezone.now())[0].true_value


def test_each_purchase_records_its_source(client, site_products):
    site, product = site_products
    assert send(client, purchase(product), site=site).status_code == 202
    assert shopify(client, site, "orders/create", shopify_order()).status_code == 200
    sources = sorted(Event.objects.filter(kind="purchase").values_list("source", flat=True))
    assert sources == ["server", "shopify"]


def test_purchases_from_platform_counts_no_order_the_store_reported_itself(client, site_products):
    site, product = site_products
    for n in range(3):
        response = send(client, purchase(product, event_id=f"e{n}", order_id=f"o{n}"), site=site)
        assert response.status_code == 202
    assert shopify(client, site, "orders/create", shopify_order()).status_code == 200
    assert _orders(product) == 4
    site.purchases_from = PurchaseSources.PLATFORM
    site.save()
    assert _orders(product) == 1  # only the Shopify-verified one
    recent = metrics.recent_purchase(product_id=product.pk, at=timezone.now())
    assert Event.objects.get(pk=recent.evidence["event_ids"][0]).source == "shopify"


def test_sixty_invented_orders_raise_sixty_alarms_and_withdraw_nothing(client, site_products):
    site, product = site_products
    for n in range(60):
        response = send(client, purchase(product, event_id=f"fake-{n}", order_id=f"fake-{n}"), site=site)
        assert response.status_code == 202
    assert audit.purchases_unviewed_audit() == 0  # within the grace: page views may still be logged
    assert audit.purchases_unviewed_audit(now=timezone.now() + LATER) == 60
    assert AuditAlarm.objects.filter(event__isnull=False).count() == 60
    assert _orders(product) == 60  # an alarm asks a person to look; it withdraws nothing
    assert audit.purchases_unviewed_audit(now=timezone.now() + LATER) == 0  # once each


def test_a_purchase_after_a_real_view_raises_no_alarm(client, site_products):
    site, product = site_products
    assert post(client, good(product, type="add_to_cart"), REMOTE_ADDR="198.51.100.5").status_code == 202
    response = send(client, purchase(product, occurred_at=timezone.now().isoformat()), site=site)
    assert response.status_code == 202
    assert audit.purchases_unviewed_audit(now=timezone.now() + LATER) == 0


def _page_view(site, product, *, hours_ago: float) -> None:
    """A page view with the widget's socket, as the hub logs it when the page view ends."""
    started = timezone.now() - dt.timedelta(hours=hours_ago)
    Exposure.objects.create(
        site=site,
        product=product,
        visitor_hash="v" * 32,
        segment="default",
        arm="control",
        started_at=started,
        ended_at=started + dt.timedelta(minutes=1),
        outcome="shown",
    )


@pytest.mark.parametrize(("hours_ago", "alarms"), [(2, 0), (25, 1)])
def test_a_page_view_with_the_widget_counts_as_viewed_for_24_hours(client, site_products, hours_ago, alarms):
    """A page view with the widget backs a purchase made within the next 24 hours, not later."""
    site, product = site_products
    now = timezone.now()
    _page_view(site, product, hours_ago=hours_ago)
    assert send(client, purchase(product, occurred_at=now.isoformat()), site=site).status_code == 202
    assert audit.purchases_unviewed_audit(now=now + LATER) == alarms


def test_platform_verified_purchases_are_not_suspected(client, site_products):
    site, _ = site_products
    assert shopify(client, site, "orders/create", shopify_order()).status_code == 200
    assert audit.purchases_unviewed_audit(now=timezone.now() + LATER) == 0


def test_the_audit_task_runs_both_checks(client, site_products, settings):
    from notifications.tasks import claims_audit_task

    site, product = site_products
    assert send(client, purchase(product), site=site).status_code == 202
    Event.objects.filter(kind="purchase").update(received_at=timezone.now() - LATER)
    claims_audit_task.apply()
    assert AuditAlarm.objects.filter(event__kind="purchase").count() == 1


def test_the_admin_offers_purchases_from(admin_client, site_products):
    site, _ = site_products
    page = admin_client.get(f"/admin/notifications/site/{site.pk}/change/")
    assert page.status_code == 200
    assert b'name="purchases_from"' in page.content
