"""The widget socket end to end, through config.asgi.application, on both real-time layers:
the embedded in-process one and the real Redis (the `realtime_mode` fixture)."""

import asyncio
import hashlib
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from notifications.models import Event, Notification
from notifications.presence import Entry, presence_store
from tests.factories import DEMO_ORIGIN, ProductFactory, site_policy_set

pytestmark = pytest.mark.django_db(transaction=True)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture
def product():
    product = ProductFactory()
    # The socket's mechanics, not the frequency caps (tests/test_policy_streaming.py): a policy
    # that lets every change through at once.
    site_policy_set(product.site, min_gap_s=0, per_page_view=10, per_session=100)
    return product


@pytest.fixture
def target(product):
    return {"key": product.site.public_key, "sku": product.sku, "product_id": product.pk}


def address_of(ua: str) -> str:
    """A loopback address of this shopper's own (SPEC 7 counts at most two visitors of one
    address): derived from its User-Agent, so one shopper's tabs share it and two shoppers don't."""
    digest = hashlib.sha256(ua.encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


def communicator(target, ua, *, origin=DEMO_ORIGIN, sku=None, key=None, client=None):
    headers = [(b"user-agent", ua.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    path = f"/ws/v1/widget?key={key or target['key']}&product={sku or target['sku']}"
    comm = WebsocketCommunicator(application, path, headers=headers)
    comm.scope["client"] = (client or address_of(ua), 50000)
    return comm


async def open_visible(target, ua, **kwargs):
    comm = communicator(target, ua, **kwargs)
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "page", "product": target["sku"], "visible": True})
    return comm


async def settle(comm, *, timeout=3.0, quiet_s=0.4):
    """Read messages until none arrives for `quiet_s`; return them all.

    (receive_nothing, not a receive timeout: asgiref cancels the app when a receive times out.)
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    messages = []
    while True:
        if await comm.receive_nothing(quiet_s if messages else 0.05):
            if messages or loop.time() > deadline:
                return messages
            continue
        messages.append(await comm.receive_json_from())


def visitor(n):
    return f"{BROWSER} visitor/{n}"


async def test_four_visitors_each_see_three_others(realtime_mode, target):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    for comm in comms:
        messages = await settle(comm)
        assert messages, "every visitor is shown the others"
        last = messages[-1]
        assert last["text"] == "3 other people are viewing this"
        assert last["claim"] == {"metric": "viewing_now", "window_s": 30, "displayed": "3"}
        assert messages[0]["type"] == "notification"
        assert messages[0]["kind"] == "viewing_now"
        assert messages[0]["why_url"].endswith(f"/why/{messages[0]['id']}")
    for comm in comms:
        assert await comm.receive_nothing(0.3)
    for comm in comms:
        await comm.disconnect()


async def test_same_visitor_in_two_tabs_counts_once(realtime_mode, target):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    for comm in comms:
        assert (await settle(comm))[-1]["claim"]["displayed"] == "3"
    second_tab = await open_visible(target, visitor(0))
    # Visitor 0's second tab is not another person, and visitor 0 is not counted for themself.
    assert (await settle(second_tab))[-1]["claim"]["displayed"] == "3"
    for comm in comms:
        assert await comm.receive_nothing(0.3), "a second tab changes nobody's count"
    fifth = await open_visible(target, visitor(5))
    assert (await settle(fifth))[-1]["claim"]["displayed"] == "4"
    for comm in [*comms, second_tab]:
        update = (await settle(comm))[-1]
        assert update["type"] == "update" and update["claim"]["displayed"] == "4"
    for comm in [*comms, second_tab, fifth]:
        await comm.disconnect()


async def test_hidden_page_is_not_counted_and_receives_nothing(realtime_mode, target):
    comms = [await open_visible(target, visitor(i)) for i in range(5)]
    for comm in comms:
        assert (await settle(comm))[-1]["claim"]["displayed"] == "4"
    hidden = comms.pop()
    await hidden.send_json_to({"type": "page", "product": target["sku"], "visible": False})
    for comm in comms:
        assert (await settle(comm))[-1]["claim"]["displayed"] == "3"
    assert await hidden.receive_nothing(0.5)
    # Visible again: counted again, and it gets a fresh snapshot.
    await hidden.send_json_to({"type": "page", "product": target["sku"], "visible": True})
    assert (await settle(hidden))[-1]["claim"]["displayed"] == "4"
    for comm in [*comms, hidden]:
        await comm.disconnect()


async def test_leaving_below_the_minimum_withdraws_the_toast(realtime_mode, target):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    shown = {}
    for comm in comms:
        shown[comm] = (await settle(comm))[-1]["id"]
    leaver = comms.pop()
    await leaver.disconnect()
    for comm in comms:
        messages = await settle(comm)
        assert messages == [{"type": "withdraw", "id": shown[comm]}]
    for comm in comms:
        await comm.disconnect()


async def test_bots_are_not_counted(realtime_mode, target):
    bot = await open_visible(target, "Mozilla/5.0 HeadlessChrome/131.0")
    crawler = await open_visible(target, "Googlebot/2.1 (+http://www.google.com/bot.html)")
    comms = [await open_visible(target, visitor(i)) for i in range(3)]
    for comm in comms:
        assert await comm.receive_nothing(0.5), "2 other humans is below the minimum of 3"
    fourth = await open_visible(target, visitor(3))
    for comm in [*comms, fourth]:
        assert (await settle(comm))[-1]["claim"]["displayed"] == "3"
    for comm in [bot, crawler, *comms, fourth]:
        await comm.disconnect()


async def test_a_ghost_viewer_is_gone_after_one_ttl(realtime_mode, target, settings):
    """A process that dies never runs disconnect(); its presence must expire on its own."""
    settings.CANDOR_PRESENCE_TTL_S = 1
    # An entry as a killed process would leave it: nobody refreshes it any more.
    await presence_store().show(Entry(target["product_id"], "ghost", "dead-socket"), ttl_s=2)
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    await asyncio.sleep(2.5)
    for comm in comms:
        messages = await settle(comm)
        assert {m["claim"]["displayed"] for m in messages} <= {"3", "4"}
        assert messages[-1]["claim"]["displayed"] == "3", "the ghost no longer counts"
    for comm in comms:
        await comm.disconnect()


async def test_one_log_row_per_distinct_claim_with_its_recipients(realtime_mode, target):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    ids = {(await settle(comm))[-1]["id"] for comm in comms}
    assert len(ids) == 1
    (notification_id,) = ids
    row = await database_sync_to_async(Notification.objects.get)(public_id=notification_id)
    assert row.text == "3 other people are viewing this"
    assert row.recipient_count == 4
    assert row.true_value == 3
    assert row.window_s == 30
    # The evidence backs the claim: the counted visitors, less the recipient, reach the true value.
    evidence = row.evidence
    assert evidence["distinct_visitors"] - evidence["recipient_excluded"] >= row.true_value
    assert row.policy_version
    page = await database_sync_to_async(Client().get)(f"/why/{notification_id}")
    assert page.status_code == 200
    assert "3 other people are viewing this" in page.content.decode()
    # What recipients get is the row's random public id, never its integer id (SPEC 7).
    assert isinstance(notification_id, str) and len(notification_id) >= 22
    assert (await database_sync_to_async(Client().get)(f"/why/{row.pk}")).status_code == 404
    for comm in comms:
        await comm.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://127.0.0.1:8000.evil.example",
        "http://127.0.0.1:8001",
        "https://127.0.0.1:8000",
        None,
    ],
)
async def test_a_disallowed_origin_is_refused_at_the_handshake(realtime_mode, target, origin):
    comm = communicator(target, visitor(1), origin=origin)
    connected, _ = await comm.connect()
    assert not connected


async def test_unknown_key_or_product_is_refused(realtime_mode, target):
    other_site_product = await database_sync_to_async(ProductFactory)()
    for kwargs in (
        {"key": "pk_nope"},
        {"sku": "no-such-sku"},
        {"sku": other_site_product.sku},
    ):
        comm = communicator(target, visitor(1), **kwargs)
        connected, _ = await comm.connect()
        assert not connected, kwargs


async def test_origin_check_ignores_case_and_default_port(realtime_mode, target):
    comm = communicator(target, visitor(1), origin="HTTP://127.0.0.1:8000")
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()


async def test_a_frame_over_4_kb_closes_with_1009(realtime_mode, target):
    comm = await open_visible(target, visitor(1))
    await comm.send_to(text_data=json.dumps({"type": "page", "visible": True, "pad": "x" * 5000}))
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 1009}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe", "group": "site-2"},
        {"type": "page", "visible": "yes"},
        {"no": "type"},
        "not json",
        [1, 2],
    ],
)
async def test_an_unknown_or_malformed_message_closes_with_1008(realtime_mode, target, frame):
    comm = await open_visible(target, visitor(1))
    await comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 1008}


async def test_a_browser_can_never_report_a_purchase(realtime_mode, target):
    comm = await open_visible(target, visitor(1))
    await comm.send_json_to({"type": "event", "event_type": "purchase", "product": target["sku"]})
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 1008}
    assert await database_sync_to_async(Event.objects.count)() == 0


async def test_add_to_cart_over_the_socket_is_recorded_unverified(realtime_mode, target):
    comm = await open_visible(target, visitor(1))
    await comm.send_json_to({"type": "event", "event_type": "add_to_cart", "product": target["sku"]})
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()
    event = await database_sync_to_async(Event.objects.get)()
    assert event.kind == "add_to_cart" and event.source == "socket"
    assert not event.verified and not event.is_bot
    assert len(event.visitor_hash) == 32 and BROWSER not in json.dumps(event.context)


async def test_dismissed_toast_is_not_reopened_on_that_page(realtime_mode, target):
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    shown = [(await settle(comm))[-1] for comm in comms]
    await comms[0].send_json_to({"type": "dismiss", "id": shown[0]["id"]})
    await comms[1].send_json_to({"type": "pause"})
    await asyncio.sleep(0.1)
    fifth = await open_visible(target, visitor(5))
    await settle(fifth)
    assert await comms[0].receive_nothing(0.5)
    assert await comms[1].receive_nothing(0.2)
    assert (await settle(comms[2]))[-1]["claim"]["displayed"] == "4"
    for comm in [*comms, fifth]:
        await comm.disconnect()


async def test_a_burst_of_joins_is_coalesced_to_one_update_a_second(realtime_mode, target, settings):
    """Leading edge: the first change goes out at once; the rest of the burst becomes one update
    at the end of the interval, recomputed then (SPEC 5)."""
    settings.CANDOR_UPDATE_INTERVAL_MS = 1000
    comms = [await open_visible(target, visitor(i)) for i in range(4)]
    for comm in comms:
        assert (await settle(comm, timeout=4))[-1]["claim"]["displayed"] == "3"
    await asyncio.sleep(1.1)  # the interval since the last round has passed
    loop = asyncio.get_running_loop()
    started = loop.time()
    burst = [await open_visible(target, visitor(10 + i)) for i in range(6)]
    joined_s = loop.time() - started
    watcher = comms[0]
    messages, times = [], []
    while loop.time() - started < 2.6:
        if not await watcher.receive_nothing(0.05):
            messages.append(await watcher.receive_json_from())
            times.append(loop.time() - started)
    assert joined_s < 0.8, "the burst must fit in one interval for this test to mean anything"
    # 6 joins, but at most one message per interval: the leading edge and one trailing update.
    assert 1 <= len(messages) <= 2, (times, [m["claim"]["displayed"] for m in messages])
    assert messages[-1]["claim"]["displayed"] == "9", "the trailing update is recomputed at send time"
    if len(messages) == 2:
        assert times[1] - times[0] >= 0.9, times
    for comm in [*comms, *burst]:
        await comm.disconnect()
