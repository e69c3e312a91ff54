"""The streaming path sends only what the policy layer decided: segments, reference groups,
holdout and frequency caps, end to end over the socket, on both real-time layers."""

import asyncio
import datetime as dt
import json

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client
from django.utils import timezone

from notifications.models import RefusalCount, SiteSecret
from notifications.signing import signature_header_make
from notifications.streaming import hub_get
from tests.factories import ProductFactory, site_policy_set
from tests.test_widget_socket import communicator, open_visible, settle, visitor

pytestmark = pytest.mark.django_db(transaction=True)


def target_of(product):
    return {"key": product.site.public_key, "sku": product.sku, "product_id": product.pk}


def _signed_purchase(product, order="o-1", minutes_ago=4.5):
    secret = SiteSecret.objects.filter(site=product.site).first().secret
    body = json.dumps(
        {
            "key": product.site.public_key,
            "type": "purchase",
            "event_id": f"e-{order}",
            "order_id": order,
            "occurred_at": (timezone.now() - dt.timedelta(minutes=minutes_ago)).isoformat(),
            "items": [{"product": product.sku}],
        }
    ).encode()
    try:
        return Client().post(
            "/api/v1/server/events",
            body,
            content_type="application/json",
            HTTP_CANDOR_SIGNATURE=signature_header_make(secret=secret, body=body),
        )
    finally:
        connections.close_all()


signed_purchase = sync_to_async(_signed_purchase, thread_sensitive=False)


async def open_all(target, n, *, timeout=3.0):
    comms = [await open_visible(target, visitor(i)) for i in range(n)]
    return comms, [await settle(comm, timeout=timeout) for comm in comms]


async def close_all(comms):
    for comm in comms:
        await comm.disconnect()


async def test_self_expression_products_get_gentle_wording_about_their_category(realtime_mode):
    product = await sync_to_async(ProductFactory)(category="Design & Art", category_kind="self_expression")
    comms, seen = await open_all(target_of(product), 4)
    for messages in seen:
        assert messages[-1]["text"] == "3 other shoppers in Design & Art are viewing this"
    await close_all(comms)


async def test_held_out_visitors_never_get_anything(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, holdout_pct=100, min_gap_s=0)
    comms, seen = await open_all(target_of(product), 5, timeout=0.5)
    assert seen == [[]] * 5
    assert (await signed_purchase(product)).status_code == 202
    for comm in comms:
        assert await comm.receive_nothing(0.6)
    await close_all(comms)


async def test_one_new_toast_per_page_view_then_only_updates(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, per_page_view=1, min_gap_s=0)
    comms, seen = await open_all(target_of(product), 4)
    assert all(messages[-1]["kind"] == "viewing_now" for messages in seen)
    assert (await signed_purchase(product)).status_code == 202
    for comm in comms:
        later = await settle(comm, timeout=1.0, quiet_s=0.4)
        assert [m for m in later if m.get("kind") == "recent_purchase"] == [], "the page's one toast is used"
    # A fifth viewer: the toast on screen is updated (updates are not capped).
    fifth = await open_visible(target_of(product), visitor(9))
    for comm in comms:
        update = (await settle(comm))[-1]
        assert update["type"] == "update" and update["claim"]["displayed"] == "4"
    await hub_get()._refusals_flush()
    counted = await sync_to_async(lambda: {r.reason: r.count for r in RefusalCount.objects.all()})()
    assert counted.get("FREQUENCY_CAP", 0) >= 4
    await close_all([*comms, fifth])


async def test_a_toast_held_back_by_the_gap_is_sent_when_the_gap_ends(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=1, per_page_view=3)
    comms, seen = await open_all(target_of(product), 4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await signed_purchase(product)).status_code == 202
    for comm in comms:
        messages = await settle(comm, timeout=3.0, quiet_s=0.3)
        purchase = [m for m in messages if m.get("kind") == "recent_purchase"]
        assert purchase and purchase[0]["text"] == "Someone bought this 4 minutes ago", messages
    assert loop.time() - started >= 0.5, "not before the gap"
    await close_all(comms)


async def test_after_a_dismissal_that_kind_stays_silent(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0, per_page_view=5, dismiss_silence_s=600)
    comms, seen = await open_all(target_of(product), 4)
    first = comms[0]
    await first.send_json_to({"type": "dismiss", "id": seen[0][-1]["id"]})
    await asyncio.sleep(0.1)
    # The same shopper opens the product again in a new tab: still silent for viewing_now.
    again = await open_visible(target_of(product), visitor(0))
    assert [m for m in await settle(again, timeout=0.8) if m.get("kind") == "viewing_now"] == []
    await close_all([*comms, again])


async def test_shoppers_from_your_country_when_the_store_prefers_that_group(realtime_mode, settings):
    settings.CANDOR_COUNTRY_HEADER = "CF-IPCountry"
    product = await sync_to_async(ProductFactory)(category="Coffee", category_kind="utilitarian")
    await sync_to_async(site_policy_set)(
        product.site, min_gap_s=0, allowed_groups="country, everyone", excluded_groups="category"
    )
    target = target_of(product)
    comms = []
    for i, country in enumerate(["DE", "DE", "DE", "DE", "FR"]):
        comm = communicator(target, visitor(i))
        comm.scope["headers"].append((b"cf-ipcountry", country.encode()))
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "page", "product": target["sku"], "visible": True})
        comms.append(comm)
    texts = [(await settle(comm))[-1]["text"] for comm in comms]
    assert texts[:4] == ["3 other shoppers from your country are viewing this"] * 4
    # The French shopper has no compatriot here: the wider group ("everyone") is true for them.
    assert texts[4] == "4 other people are viewing this"
    await close_all(comms)


async def test_pause_lasts_for_the_visit_not_only_the_page(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0, per_page_view=5)
    comms, seen = await open_all(target_of(product), 4)
    await comms[0].send_json_to({"type": "pause"})
    await asyncio.sleep(0.1)
    await comms[0].disconnect()
    # The same shopper's next page view: nothing, though 3 others are there.
    again = await open_visible(target_of(product), visitor(0))
    assert await settle(again, timeout=0.8) == []
    await close_all([*comms[1:], again])


async def _three_kinds_true(product):
    """Three purchases in the window (one of them recent) and three other viewers: a page view
    opened now has `viewing_now`, `recent_purchase` and `purchases_in_window` true at once."""
    for order in ("o-1", "o-2", "o-3"):
        assert (await signed_purchase(product, order=order)).status_code == 202
    return await open_all(target_of(product), 3)


def _new_toasts(messages):
    return [m for m in messages if m["type"] == "notification"]


async def test_toasts_granted_earlier_in_a_round_count_against_per_page_view(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0, per_page_view=2, per_session=10)
    others, seen = await _three_kinds_true(product)
    shopper = await open_visible(target_of(product), visitor(7))
    first = _new_toasts(await settle(shopper, timeout=3.0, quiet_s=0.5))
    # Three kinds were true in the round that opened the page; the cap is two.
    assert len(first) == 2, first
    assert len({m["kind"] for m in first}) == 2
    for comm, before in zip(others, seen, strict=True):
        assert len(_new_toasts([*before, *await settle(comm, timeout=0.6)])) <= 2
    await hub_get()._refusals_flush()
    counted = await sync_to_async(lambda: {r.reason: r.count for r in RefusalCount.objects.all()})()
    assert counted.get("FREQUENCY_CAP", 0) >= 1
    await close_all([*others, shopper])


async def test_toasts_granted_in_a_round_count_against_per_session_across_page_views(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0, per_page_view=5, per_session=2)
    others, _ = await _three_kinds_true(product)
    shopper = await open_visible(target_of(product), visitor(7))
    assert len(_new_toasts(await settle(shopper, timeout=3.0, quiet_s=0.5))) == 2
    await shopper.disconnect()
    # The same shopper's next page view, with the same three kinds true: the visit's two are used.
    again = await open_visible(target_of(product), visitor(7))
    assert _new_toasts(await settle(again, timeout=1.0, quiet_s=0.5)) == []
    await close_all([*others, again])
