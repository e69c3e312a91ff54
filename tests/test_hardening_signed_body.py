"""Issue 18, item 4 (SPEC 7, "Only the signed body decides"): a webhook's state comes from the
signed body, never the unsigned topic; a delivery is a repeat by its delivery id or its body's
hash; idempotency keys are namespaced by source, so a signed `event_id` cannot take a key a
platform delivery needs."""

import datetime as dt
import json

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from notifications.models import Event, IngestRefusal, ServerDelivery
from notifications.signing import signature_header_make
from tests.factories import ProductFactory, SiteFactory
from tests.test_api_webhooks import (
    SHOPIFY_SECRET,
    WOO_SECRET,
    iso,
    shopify,
    shopify_order,
    shopify_refund,
    woo,
    woo_order,
)
from tests.test_server_beacon import secret_of, via_route

pytestmark = pytest.mark.django_db


@pytest.fixture
def site():
    return SiteFactory(shopify_secret=SHOPIFY_SECRET, woocommerce_secret=WOO_SECRET)


@pytest.fixture
def products(site):
    return ProductFactory(site=site, sku="IPOD2008GREEN"), ProductFactory(site=site, sku="632910393")


def purchases():
    return Event.objects.filter(kind="purchase").count()


def test_a_signed_pending_body_replayed_under_orders_paid_is_not_a_purchase(client, site, products):
    """The attack as seen: the signed `orders/create` body of a pending order, replayed with only
    the unsigned topic changed to `orders/paid` and a new delivery id."""
    pending = shopify_order(financial_status="pending")
    first = shopify(client, site, "orders/create", pending, delivery="genuine-1")
    assert first.status_code == 200 and first.json()["state"] == "unpaid"
    replay = shopify(client, site, "orders/paid", pending, delivery="forged-2")
    assert replay.status_code == 200, replay.content
    assert replay.json()["duplicate"] is True and replay.json()["state"] == "unpaid"
    assert purchases() == 0
    assert ServerDelivery.objects.count() == 1


@pytest.mark.parametrize("topic", ["orders/paid", "orders/updated", "refunds/create"])
def test_a_pending_body_is_unpaid_under_any_topic_even_first_seen(client, site, products, topic):
    """Not only a repeat: a pending body seen for the first time under a paying topic is unpaid."""
    response = shopify(client, site, topic, shopify_order(financial_status="pending"), delivery="x")
    assert response.status_code == 200 and response.json()["state"] == "unpaid"
    assert purchases() == 0


def test_a_paid_body_is_paid_under_any_order_topic(client, site, products):
    """SPEC 5 still holds for honest deliveries: Shopify's `orders/paid` bodies say `paid`."""
    response = shopify(client, site, "orders/updated", shopify_order(), delivery="x")
    assert response.json()["state"] == "paid" and purchases() == 2


def test_a_cancelled_body_withdraws_and_the_cancel_topic_alone_does_not(client, site, products):
    shopify(client, site, "orders/create", shopify_order(updated_at=iso(5)), delivery="a")
    # The topic says cancelled, the signed body does not: nothing is withdrawn.
    unsigned_cancel = shopify(
        client, site, "orders/cancelled", shopify_order(updated_at=iso(4)), delivery="b"
    )
    assert unsigned_cancel.json()["state"] == "paid"
    body = shopify_order(updated_at=iso(3), cancelled_at=iso(3), financial_status="voided")
    assert shopify(client, site, "orders/updated", body, delivery="c").json()["state"] == "withdrawn"
    assert Event.objects.filter(kind="cancel").count() == 1


def test_a_refund_body_is_read_as_a_refund_whatever_its_topic(client, site, products):
    """`refunds/create` carries a Refund resource (`order_id`, `refund_line_items`): its shape, not
    the topic, says so. Under `orders/paid` it still withdraws what it lists and pays nothing."""
    shopify(client, site, "orders/create", shopify_order(), delivery="a")
    response = shopify(client, site, "orders/paid", shopify_refund(), delivery="b")
    assert response.status_code == 200 and response.json()["order_id"] == "820982911946154508"
    assert Event.objects.filter(kind="refund").count() == 1 and purchases() == 2


def test_a_refund_body_never_pays_an_unpaid_order(client, site, products):
    shopify(client, site, "orders/create", shopify_order(financial_status="pending"), delivery="a")
    shopify(client, site, "orders/paid", shopify_refund(), delivery="b")
    assert purchases() == 0


def test_the_same_shopify_body_under_a_new_delivery_id_is_a_200_duplicate(client, site, products):
    order = shopify_order()
    assert shopify(client, site, "orders/create", order, delivery="a").json()["duplicate"] is False
    again = shopify(client, site, "orders/create", order, delivery="b")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert purchases() == 2 and ServerDelivery.objects.count() == 1


def test_the_same_woocommerce_body_under_a_new_delivery_id_is_a_200_duplicate(client, site, products):
    order = woo_order(status="on-hold", date_paid_gmt=None)
    woo(client, site, "order.created", order, delivery="a")
    # Replayed under a paying topic with a new delivery id: the body says on-hold.
    again = woo(client, site, "order.updated", order, delivery="b")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert purchases() == 0


def test_a_woocommerce_status_decides_whatever_the_topic(client, site, products):
    """Even under `order.deleted`, a body with a status is read by its status: no topic pays."""
    woo(client, site, "order.deleted", woo_order(status="pending", date_paid_gmt=None), delivery="a")
    assert purchases() == 0 and Event.objects.filter(kind="cancel").count() == 0


def test_woocommerces_deletion_notice_withdraws_the_order(client, site, products):
    woo(client, site, "order.created", woo_order(), delivery="a")
    response = woo(client, site, "order.deleted", {"id": 727}, delivery="b")
    assert response.status_code == 200 and response.json()["state"] == "withdrawn"


# --- Namespaced idempotency keys ------------------------------------------------------------


def _signed(site, product, *, event_id: str, order_id: str) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "key": site.public_key,
            "type": "purchase",
            "event_id": event_id,
            "order_id": order_id,
            "occurred_at": (timezone.now() - dt.timedelta(minutes=2)).isoformat(),
            "items": [{"product": product.sku, "quantity": 1}],
        }
    ).encode()
    return body, signature_header_make(secret=secret_of(site), body=body)


def _webhook_880001(site):
    order = shopify_order(id=880001, admin_graphql_api_id="gid://shopify/Order/880001")
    try:
        return shopify(Client(), site, "orders/paid", order, delivery="880001-delivery")
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["asgi", "django"])
@pytest.mark.parametrize("event_id", ["shopify:order:880001", "shopify:delivery:880001-delivery"])
async def test_a_signed_event_id_cannot_take_a_key_a_shopify_delivery_needs(path, event_id):
    """The attack as seen: a signed `event_id` of `shopify:order:880001` first, then the genuine
    Shopify delivery of order 880001, which must be recorded (200), never refused (503) or
    swallowed as a duplicate. Through the batched ASGI route and the Django view alike."""
    site = await sync_to_async(SiteFactory)(shopify_secret=SHOPIFY_SECRET)
    product = await sync_to_async(ProductFactory)(site=site, sku="IPOD2008GREEN")
    body, header = await sync_to_async(_signed)(site, product, event_id=event_id, order_id="invented-1")
    if path == "asgi":
        status, answer, _ = await via_route(body, header)
    else:
        response = await sync_to_async(_post_signed, thread_sensitive=False)(body, header)
        status, answer = response
    assert status == 202, answer
    response = await sync_to_async(_webhook_880001, thread_sensitive=False)(site)
    assert response.status_code == 200, response.content
    assert response.json()["duplicate"] is False and response.json()["state"] == "paid"
    sources = await sync_to_async(
        lambda: sorted(Event.objects.filter(kind="purchase").values_list("source", "order_id"))
    )()
    assert sources == [("server", "invented-1"), ("shopify", "880001")]


def _post_signed(body, header):
    try:
        response = Client().post(
            "/api/v1/server/events", body, content_type="application/json", HTTP_CANDOR_SIGNATURE=header
        )
        return response.status_code, response.json()
    finally:
        connections.close_all()


def test_a_shopify_delivery_cannot_take_a_signed_events_key(client, site, products):
    """The other way round: the platform's keys live in their own namespace too."""
    shopify(client, site, "orders/create", shopify_order(id=880001), delivery="d")
    body, header = _signed(site, products[0], event_id="shopify:delivery:d", order_id="s-1")
    response = client.post(
        "/api/v1/server/events", body, content_type="application/json", HTTP_CANDOR_SIGNATURE=header
    )
    assert response.status_code == 202 and response.json()["duplicate"] is False


def test_erasing_an_order_finds_its_signed_delivery_even_under_a_platform_like_event_id(site, products):
    from notifications.orders import order_erase

    client = Client()
    body, header = _signed(site, products[0], event_id="shopify:order:1", order_id="o-1")
    client.post("/api/v1/server/events", body, content_type="application/json", HTTP_CANDOR_SIGNATURE=header)
    result = order_erase(site=site, order_id="o-1")
    assert result["erased"]["notifications.ServerDelivery"] == 1
    assert ServerDelivery.objects.get().response == {"erased": True}


# --- The migration, on a database that already holds deliveries ------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_0010_namespaces_existing_deliveries_and_drops_sku_text():
    executor = MigrationExecutor(connection)
    executor.migrate([("notifications", "0009_notification_public_id")])
    old = executor.loader.project_state([("notifications", "0009_notification_public_id")]).apps
    Site = old.get_model("notifications", "Site")
    Delivery = old.get_model("notifications", "ServerDelivery")
    site = Site.objects.create(name="old", public_key="pk_old", allowed_origins="https://old.example")
    Delivery.objects.create(
        site=site,
        idempotency_key="shopify:delivery:9",
        body_sha256="a" * 64,
        response={"accepted": True, "order_id": "9", "state": "paid", "refused_items": ["jo@example.com"]},
    )
    Delivery.objects.create(
        site=site,
        idempotency_key="shopify:delivery:10",  # a signed event_id that merely looked like one
        body_sha256="b" * 64,
        response={"accepted": True, "duplicate": False, "refused_items": []},
    )
    executor = MigrationExecutor(connection)
    executor.migrate([("notifications", "0010_intake_namespaces")])
    rows = {
        row.idempotency_key: (row.source, row.response)
        for row in ServerDelivery.objects.filter(site_id=site.pk)
    }
    assert rows["shopify:delivery:9"][0] == "shopify"
    assert rows["shopify:delivery:10"][0] == "server"
    assert "jo@example.com" not in json.dumps(rows)
    assert rows["shopify:delivery:9"][1]["refused_positions"] is None
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("notifications"))
    IngestRefusal.objects.all().delete()
