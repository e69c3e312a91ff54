"""Shopify and WooCommerce webhooks (SPEC 5), with payloads shaped like each platform's documented
samples (Shopify's Order and Refund resources, WooCommerce's REST v3 order)."""

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from django.db import DatabaseError
from django.utils import timezone

from notifications.models import Event, IngestRefusal, ServerDelivery
from tests.factories import ProductFactory, SiteFactory

pytestmark = pytest.mark.django_db

SHOPIFY_SECRET = "shpss_0123456789abcdef"
WOO_SECRET = "woo-secret-#1"


@pytest.fixture
def site():
    return SiteFactory(shopify_secret=SHOPIFY_SECRET, woocommerce_secret=WOO_SECRET)


@pytest.fixture
def products(site):
    # One matched by SKU, one by the platform's product id (no SKU on the platform side).
    return ProductFactory(site=site, sku="IPOD2008GREEN"), ProductFactory(site=site, sku="632910393")


def iso(minutes_ago: float) -> str:
    return (timezone.now() - dt.timedelta(minutes=minutes_ago)).isoformat(timespec="seconds")


def shopify_order(**over) -> dict:
    """Trimmed from Shopify's documented `orders/create` sample; personal fields kept to show we
    ignore them."""
    order = {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "email": "jon@example.com",
        "created_at": iso(9),
        "processed_at": iso(8),
        "updated_at": iso(8),
        "name": "#9999",
        "number": 234,
        "order_number": 1234,
        "test": False,
        "currency": "USD",
        "financial_status": "paid",
        "fulfillment_status": None,
        "cancelled_at": None,
        "cancel_reason": None,
        "total_price": "403.00",
        "customer": {"id": 115310627314723954, "first_name": "John", "last_name": "Smith"},
        "billing_address": {"city": "Ottawa", "country": "Canada", "zip": "K2P0V6"},
        "line_items": [
            {
                "id": 866550311766439020,
                "admin_graphql_api_id": "gid://shopify/LineItem/866550311766439020",
                "name": "IPod Nano - 8GB",
                "price": "199.00",
                "product_id": 632910392,
                "quantity": 1,
                "sku": "IPOD2008GREEN",
                "title": "IPod Nano - 8GB",
                "variant_id": 808950810,
                "vendor": None,
            },
            {
                "id": 141249953214522974,
                "name": "IPod Nano - 8GB (black)",
                "price": "204.00",
                "product_id": 632910393,
                "quantity": 2,
                "sku": "",
                "variant_id": 808950811,
            },
        ],
        "refunds": [],
    }
    order.update(over)
    return order


def shopify_refund(**over) -> dict:
    refund = {
        "id": 509562969,
        "order_id": 820982911946154508,
        "created_at": iso(1),
        "note": "it broke during shipping",
        "restock": True,
        "refund_line_items": [
            {
                "id": 104689539,
                "line_item_id": 866550311766439020,
                "quantity": 1,
                "restock_type": "return",
                "line_item": {"id": 866550311766439020, "product_id": 632910392, "sku": "IPOD2008GREEN"},
            }
        ],
        "transactions": [{"id": 179259969, "amount": "199.00", "kind": "refund", "status": "success"}],
    }
    refund.update(over)
    return refund


def woo_order(**over) -> dict:
    """Trimmed from WooCommerce REST API v3's documented order (GMT dates carry no offset)."""
    paid = (timezone.now() - dt.timedelta(minutes=5)).astimezone(dt.UTC).replace(tzinfo=None)
    order = {
        "id": 727,
        "parent_id": 0,
        "number": "727",
        "order_key": "wc_order_58d2d042d1d",
        "created_via": "rest-api",
        "status": "processing",
        "currency": "USD",
        "date_created": paid.isoformat(timespec="seconds"),
        "date_created_gmt": (paid - dt.timedelta(minutes=1)).isoformat(timespec="seconds"),
        "date_paid": paid.isoformat(timespec="seconds"),
        "date_paid_gmt": paid.isoformat(timespec="seconds"),
        "total": "29.35",
        "customer_id": 0,
        "billing": {"first_name": "John", "email": "john.doe@example.com", "country": "US"},
        "payment_method": "bacs",
        "line_items": [
            {
                "id": 315,
                "name": "Woo Single #1",
                "product_id": 93,
                "variation_id": 0,
                "quantity": 2,
                "sku": "IPOD2008GREEN",
                "price": 3,
            },
            {"id": 316, "name": "Ship Your Idea", "product_id": 632910393, "quantity": 1, "sku": ""},
        ],
        "refunds": [],
    }
    order.update(over)
    return order


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify(client, site, topic, payload, *, delivery="d-1", secret=SHOPIFY_SECRET, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {
        "HTTP_X_SHOPIFY_TOPIC": topic,
        "HTTP_X_SHOPIFY_HMAC_SHA256": signature if signature is not None else sign(secret, body),
        "HTTP_X_SHOPIFY_SHOP_DOMAIN": "example.myshopify.com",
        "HTTP_X_SHOPIFY_API_VERSION": "2025-10",
        "HTTP_X_SHOPIFY_WEBHOOK_ID": delivery,
    }
    return client.post(
        f"/api/v1/webhooks/shopify/{site.public_key}", body, content_type="application/json", **headers
    )


def woo(client, site, topic, payload, *, delivery="w-1", secret=WOO_SECRET, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    resource, _, event = topic.partition(".")
    headers = {
        "HTTP_X_WC_WEBHOOK_TOPIC": topic,
        "HTTP_X_WC_WEBHOOK_RESOURCE": resource,
        "HTTP_X_WC_WEBHOOK_EVENT": event,
        "HTTP_X_WC_WEBHOOK_SIGNATURE": signature if signature is not None else sign(secret, body),
        "HTTP_X_WC_WEBHOOK_ID": "12",
        "HTTP_X_WC_WEBHOOK_DELIVERY_ID": delivery,
        "HTTP_X_WC_WEBHOOK_SOURCE": "https://shop.example.com/",
    }
    return client.post(
        f"/api/v1/webhooks/woocommerce/{site.public_key}", body, content_type="application/json", **headers
    )


def purchases():
    return list(Event.objects.filter(kind="purchase").order_by("id"))


def test_a_paid_shopify_order_is_one_verified_purchase_per_known_line(client, site, products):
    order = shopify_order()
    response = shopify(client, site, "orders/create", order)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "accepted": True,
        "duplicate": False,
        "order_id": "820982911946154508",
        "state": "paid",
        "test": False,
        "refused_items": [],
    }
    rows = purchases()
    assert [(e.product, e.quantity, e.source, e.verified) for e in rows] == [
        (products[0], 1, "shopify", True),
        (products[1], 2, "shopify", True),
    ]
    assert rows[0].occurred_at == dt.datetime.fromisoformat(order["processed_at"])
    # Nothing personal reaches the ledger.
    stored = json.dumps([e.context for e in rows]) + "".join(e.visitor_hash for e in rows)
    assert "jon@example.com" not in stored and "Ottawa" not in stored


def test_the_same_delivery_again_changes_nothing(client, site, products):
    shopify(client, site, "orders/create", shopify_order())
    again = shopify(client, site, "orders/create", shopify_order())
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(purchases()) == 2


def test_one_order_counts_once_across_deliveries_and_topics(client, site, products):
    # Each a delivery of its own (an identical body would be a repeat: see the replay tests).
    shopify(client, site, "orders/create", shopify_order(updated_at=iso(3)), delivery="a")
    shopify(client, site, "orders/paid", shopify_order(updated_at=iso(2)), delivery="b")
    shopify(client, site, "orders/updated", shopify_order(updated_at=iso(1)), delivery="c")
    assert len(purchases()) == 2
    assert ServerDelivery.objects.count() == 3


def test_an_unpaid_order_counts_when_a_later_delivery_says_paid(client, site, products):
    pending = shopify(client, site, "orders/create", shopify_order(financial_status="pending"), delivery="a")
    assert pending.status_code == 200 and pending.json()["state"] == "unpaid"
    assert purchases() == []
    paid = shopify(client, site, "orders/paid", shopify_order(), delivery="b")
    assert paid.json()["state"] == "paid"
    assert len(purchases()) == 2


def test_cancelled_withdraws_and_never_goes_back(client, site, products):
    shopify(client, site, "orders/create", shopify_order(), delivery="a")
    cancelled = shopify_order(cancelled_at=iso(0), cancel_reason="customer", financial_status="voided")
    response = shopify(client, site, "orders/cancelled", cancelled, delivery="b")
    assert response.json()["state"] == "withdrawn"
    # A stale "paid" delivery arriving late does not bring it back.
    late = shopify(client, site, "orders/updated", shopify_order(), delivery="c")
    assert late.json()["state"] == "withdrawn"
    assert len(purchases()) == 2
    withdrawal = Event.objects.get(kind="cancel")
    assert (withdrawal.order_id, withdrawal.product, withdrawal.verified) == (
        "820982911946154508",
        None,
        True,
    )


def test_a_cancel_before_payment_means_the_order_never_counts(client, site, products):
    shopify(client, site, "orders/cancelled", shopify_order(cancelled_at=iso(0)), delivery="a")
    shopify(client, site, "orders/paid", shopify_order(), delivery="b")
    assert purchases() == []


def test_a_refund_with_line_items_withdraws_those_products(client, site, products):
    shopify(client, site, "orders/create", shopify_order(), delivery="a")
    response = shopify(client, site, "refunds/create", shopify_refund(), delivery="b")
    assert response.status_code == 200 and response.json()["state"] == "paid"
    refund = Event.objects.get(kind="refund")
    assert (refund.product, refund.order_id) == (products[0], "820982911946154508")
    # The same refund inside a later order payload is not recorded twice.
    order = shopify_order(financial_status="partially_refunded", refunds=[shopify_refund()])
    shopify(client, site, "orders/updated", order, delivery="c")
    assert Event.objects.filter(kind="refund").count() == 1


def test_a_refund_without_line_items_withdraws_the_whole_order(client, site, products):
    shopify(client, site, "orders/create", shopify_order(), delivery="a")
    response = shopify(client, site, "refunds/create", shopify_refund(refund_line_items=[]), delivery="b")
    assert response.json()["state"] == "withdrawn"


def test_a_test_order_is_stored_and_flagged(client, site, products):
    response = shopify(client, site, "orders/create", shopify_order(test=True))
    assert response.json()["test"] is True
    assert {e.is_test for e in purchases()} == {True}


def test_unknown_line_items_are_refused_and_counted_never_guessed(client, site, products):
    order = shopify_order()
    order["line_items"].append({"id": 1, "product_id": 999, "quantity": 1, "sku": "NOT-IN-CATALOG"})
    response = shopify(client, site, "orders/create", order)
    assert response.json()["refused_items"] == ["NOT-IN-CATALOG"]
    assert len(purchases()) == 2
    assert IngestRefusal.objects.get(code="unknown_product").count == 1


@pytest.mark.parametrize(
    "signature",
    ["", "not-base64", sign("wrong-secret", b"{}"), "A" * 300],
)
def test_a_bad_shopify_signature_is_401_and_changes_nothing(client, site, products, signature):
    response = shopify(client, site, "orders/create", shopify_order(), signature=signature)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    assert Event.objects.count() == 0 and ServerDelivery.objects.count() == 0


def test_a_tampered_body_is_401(client, site, products):
    body = json.dumps(shopify_order()).encode()
    signature = sign(SHOPIFY_SECRET, body)
    response = shopify(
        client, site, "orders/create", None, raw=body.replace(b"paid", b"PAID"), signature=signature
    )
    assert response.status_code == 401


def test_another_sites_secret_is_401(client, site, products):
    other = SiteFactory(shopify_secret="other-secret")
    response = shopify(client, site, "orders/create", shopify_order(), secret=other.shopify_secret)
    assert response.status_code == 401


def test_a_site_without_a_secret_refuses_every_delivery(client, products):
    bare = SiteFactory()
    response = shopify(client, bare, "orders/create", shopify_order(), secret="")
    assert response.status_code == 401


def test_an_unknown_site_is_404(client, site):
    response = client.post("/api/v1/webhooks/shopify/pk_nope", b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_site"


def test_signed_but_not_json_is_400(client, site):
    response = shopify(client, site, "orders/create", None, raw=b"not json")
    assert response.status_code == 400


def test_signed_order_without_an_id_is_422(client, site):
    response = shopify(client, site, "orders/create", {"line_items": []})
    assert response.status_code == 422
    assert Event.objects.count() == 0


def test_a_topic_candor_does_not_use_answers_200_and_records_nothing(client, site, products):
    response = shopify(client, site, "products/update", {"id": 1, "title": "x"})
    assert response.status_code == 200 and response.json()["ignored"] is True
    assert ServerDelivery.objects.count() == 0


def test_a_future_order_time_is_422(client, site, products):
    response = shopify(client, site, "orders/create", shopify_order(processed_at=iso(-10)))
    assert response.status_code == 422
    assert Event.objects.count() == 0


def test_the_database_down_is_503_never_200(client, site, products, monkeypatch):
    def down(**_kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr("notifications.api.order_news_record", down)
    response = shopify(client, site, "orders/create", shopify_order())
    assert response.status_code == 503 and response["Retry-After"]


# --- WooCommerce ---------------------------------------------------------------------------


def test_a_processing_woocommerce_order_is_a_purchase_at_its_paid_time(client, site, products):
    order = woo_order()
    response = woo(client, site, "order.created", order)
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "paid"
    rows = purchases()
    assert [(e.product, e.quantity, e.source) for e in rows] == [
        (products[0], 2, "woocommerce"),
        (products[1], 1, "woocommerce"),
    ]
    expected = dt.datetime.fromisoformat(order["date_paid_gmt"]).replace(tzinfo=dt.UTC)
    assert rows[0].occurred_at == expected


@pytest.mark.parametrize("status", ["pending", "on-hold"])
def test_an_unpaid_woocommerce_order_waits_for_payment(client, site, products, status):
    woo(client, site, "order.created", woo_order(status=status, date_paid_gmt=None), delivery="a")
    assert purchases() == []
    woo(client, site, "order.updated", woo_order(status="completed"), delivery="b")
    assert len(purchases()) == 2


@pytest.mark.parametrize("status", ["cancelled", "refunded", "failed"])
def test_woocommerce_withdrawals(client, site, products, status):
    woo(client, site, "order.created", woo_order(), delivery="a")
    response = woo(client, site, "order.updated", woo_order(status=status), delivery="b")
    assert response.json()["state"] == "withdrawn"
    late = woo(client, site, "order.updated", woo_order(status="completed"), delivery="c")
    assert late.json()["state"] == "withdrawn"
    assert Event.objects.filter(kind="cancel").count() == 1


def test_a_partial_woocommerce_refund_withdraws_the_whole_order(client, site, products):
    woo(client, site, "order.created", woo_order(), delivery="a")
    refunded = woo_order(status="completed", refunds=[{"id": 726, "reason": "", "total": "-10.00"}])
    response = woo(client, site, "order.updated", refunded, delivery="b")
    assert response.json()["state"] == "withdrawn"


def test_the_woocommerce_ping_is_answered_and_records_nothing(client, site):
    response = client.post(
        f"/api/v1/webhooks/woocommerce/{site.public_key}",
        b"webhook_id=12",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200 and response.json()["ping"] is True
    assert ServerDelivery.objects.count() == 0 and Event.objects.count() == 0


def test_a_bad_woocommerce_signature_is_401(client, site, products):
    response = woo(client, site, "order.created", woo_order(), secret=SHOPIFY_SECRET)
    assert response.status_code == 401
    assert Event.objects.count() == 0


def test_a_repeated_woocommerce_delivery_changes_nothing(client, site, products):
    first = woo(client, site, "order.created", woo_order(), delivery="same")
    again = woo(client, site, "order.created", woo_order(), delivery="same")
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert len(purchases()) == 2


def test_orders_are_scoped_to_their_site(client, site, products):
    """Another store's order with the same id never suppresses this store's."""
    other = SiteFactory(shopify_secret="other-secret")
    ProductFactory(site=other, sku="IPOD2008GREEN")
    shopify(client, other, "orders/create", shopify_order(), secret="other-secret")
    shopify(client, site, "orders/create", shopify_order())
    assert Event.objects.filter(site=site, kind="purchase").count() == 2
    assert Event.objects.filter(site=other, kind="purchase").count() == 1
