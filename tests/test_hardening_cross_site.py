"""Issue 9: a client naming another site's product, order or key over HTTP is refused and
changes nothing of the other site (the socket's side is in tests/test_hardening_socket.py)."""

import pytest
from django.utils import timezone

from notifications import metrics
from notifications.models import Event
from tests.factories import ProductFactory, SiteFactory
from tests.test_api_events import assert_error, good, post
from tests.test_api_server_events import purchase, secret_of, send
from tests.test_api_webhooks import SHOPIFY_SECRET, shopify, shopify_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def mine():
    return ProductFactory()


@pytest.fixture
def theirs():
    return ProductFactory(site=SiteFactory(allowed_origins="https://their-shop.example"))


def test_a_browser_event_with_another_sites_sku_or_origin_is_refused(client, mine, theirs):
    assert_error(post(client, good(mine, product=theirs.sku)), 422, "unknown_product", "product")
    # Their key from my origin, and my key from theirs.
    assert_error(post(client, good(theirs)), 403, "forbidden_origin")
    assert_error(post(client, good(mine), origin="https://their-shop.example"), 403, "forbidden_origin")
    assert not Event.objects.exists()


def test_a_signed_purchase_naming_another_sites_sku_is_refused_not_guessed(client, mine, theirs):
    payload = purchase(mine, items=[{"product": theirs.sku, "quantity": 1}])
    response = send(client, payload, site=mine.site)
    assert response.status_code == 202 and response.json()["refused_items"] == [theirs.sku]
    assert not Event.objects.filter(product=theirs).exists()
    # Signed with their secret but naming my key: a bad signature, whatever the body says.
    response = send(client, purchase(mine, event_id="evt-x"), secret=secret_of(theirs.site))
    assert response.status_code == 401


def test_a_refund_on_one_site_never_withdraws_another_sites_order_of_the_same_id(client, mine, theirs):
    assert send(client, purchase(mine, order_id="1001"), site=mine.site).status_code == 202
    assert send(client, purchase(theirs, order_id="1001"), site=theirs.site).status_code == 202
    refund = {
        "key": mine.site.public_key,
        "type": "refund",
        "event_id": "evt-refund",
        "order_id": "1001",
        "occurred_at": timezone.now().isoformat(),
    }
    assert send(client, refund, site=mine.site).status_code == 202
    now = timezone.now()
    assert metrics.purchases_in_window(product_id=mine.pk, at=now)[0].true_value == 0
    assert metrics.purchases_in_window(product_id=theirs.pk, at=now)[0].true_value == 1


def test_a_webhook_to_one_sites_url_cannot_touch_another_sites_products(client, theirs):
    site = SiteFactory(shopify_secret=SHOPIFY_SECRET)
    order = shopify_order(line_items=[{"id": 1, "product_id": 5, "quantity": 1, "sku": theirs.sku}])
    response = shopify(client, site, "orders/paid", order)
    assert response.status_code == 200 and response.json()["refused_items"] == [theirs.sku]
    assert not Event.objects.filter(product=theirs).exists()
    # Their URL with my signature: 401 (their site has no Shopify secret set, or another one).
    assert shopify(client, theirs.site, "orders/paid", order, delivery="d-2").status_code == 401
