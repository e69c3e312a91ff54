"""Ledger claims over the socket, on both real-time layers: a signed purchase reaches every viewer
as "Someone bought this 8 minutes ago" within a second, and its refund withdraws it."""

import datetime as dt
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client
from django.utils import timezone

from notifications.models import Notification, SiteSecret
from notifications.signing import signature_header_make
from tests.factories import ProductFactory, site_policy_set
from tests.test_widget_socket import open_visible, settle, visitor

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target(product):
    return {"key": product.site.public_key, "sku": product.sku, "product_id": product.pk}


@pytest.fixture
def product():
    product = ProductFactory()
    # Several toasts on one page in a few seconds: the store's policy allows it here, so the test
    # is about the live path, not the frequency caps (tested in test_policy_*).
    site_policy_set(product.site, min_gap_s=0, per_page_view=5)
    return product


def _signed_post(product, payload):
    secret = SiteSecret.objects.filter(site=product.site).first().secret
    body = json.dumps({"key": product.site.public_key, **payload}).encode()
    try:
        return Client().post(
            "/api/v1/server/events",
            body,
            content_type="application/json",
            HTTP_CANDOR_SIGNATURE=signature_header_make(secret=secret, body=body),
        )
    finally:
        connections.close_all()  # this worker thread's connection, or the test database lingers


# Its own thread, as a request under the ASGI server has; the hub uses the shared executor.
signed_post = sync_to_async(_signed_post, thread_sensitive=False)


def purchase(product, order="order-1", minutes_ago=8.5):
    return {
        "type": "purchase",
        "event_id": f"evt-{order}",
        "order_id": order,
        "occurred_at": (timezone.now() - dt.timedelta(minutes=minutes_ago)).isoformat(),
        "items": [{"product": product.sku, "quantity": 1}],
    }


def kinds(messages, kind):
    return [m for m in messages if m.get("kind") == kind or m.get("claim", {}).get("metric") == kind]


async def test_a_purchase_reaches_every_viewer_and_its_refund_withdraws_it(realtime_mode, target, product):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    for comm in comms:
        await settle(comm)  # the viewing_now snapshot

    started = time.monotonic()
    response = await signed_post(product, purchase(product))
    assert response.status_code == 202
    shown = []
    for comm in comms:
        messages = await settle(comm, timeout=2.0, quiet_s=0.3)
        toasts = kinds(messages, "recent_purchase")
        assert toasts, messages
        assert toasts[0]["type"] == "notification"
        assert toasts[0]["text"] == "Someone bought this 8 minutes ago"
        assert toasts[0]["claim"] == {"metric": "recent_purchase", "window_s": 3600, "displayed": "8"}
        shown.append(toasts[0]["id"])
    assert time.monotonic() - started < 2.0 + 4 * 0.3
    # One log row for the one claim, shared by the four recipients, tracing to the purchase.
    assert len(set(shown)) == 1
    row = await Notification.objects.aget(public_id=shown[0])
    assert row.recipient_count == 4 and len(row.evidence["event_ids"]) == 1

    refund = {
        "type": "refund",
        "event_id": "evt-refund",
        "order_id": "order-1",
        "occurred_at": timezone.now().isoformat(),
    }
    assert (await signed_post(product, refund)).status_code == 202
    for comm in comms:
        messages = await settle(comm, timeout=2.0, quiet_s=0.3)
        assert {"type": "withdraw", "id": shown[0]} in messages, messages
    for comm in comms:
        await comm.disconnect()


async def test_a_test_order_is_never_shown(realtime_mode, target, product):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    for comm in comms:
        await settle(comm)
    response = await signed_post(product, {**purchase(product), "test": True})
    assert response.status_code == 202
    for comm in comms:
        assert kinds(await settle(comm, timeout=1.0, quiet_s=0.3), "recent_purchase") == []
        await comm.disconnect()


async def test_three_orders_show_as_a_count_in_the_last_24_hours(realtime_mode, target, product):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    for comm in comms:
        await settle(comm)
    for n in range(3):
        assert (
            await signed_post(product, purchase(product, order=f"o-{n}", minutes_ago=90))
        ).status_code == 202
    for comm in comms:
        messages = await settle(comm, timeout=2.0, quiet_s=0.3)
        counted = kinds(messages, "purchases_in_window")
        assert counted and counted[-1]["text"] == "Ordered 3 times in the last 24 hours", messages
        assert counted[-1]["claim"] == {"metric": "purchases_in_window", "window_s": 86400, "displayed": "3"}
        # 90 minutes ago is outside the recent-purchase window: no "bought … ago" toast.
        assert kinds(messages, "recent_purchase") == []
        await comm.disconnect()
