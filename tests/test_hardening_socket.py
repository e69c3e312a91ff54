"""Issue 9, the widget socket under attack and fault, in the default suite (through
config.asgi.application, on the in-process layer and the real Redis)."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from notifications.consumers import MESSAGE_BURST
from notifications.models import Event
from notifications.presence import presence_store
from notifications.streaming import hub_get
from tests.factories import ProductFactory
from tests.test_widget_socket import (  # noqa: F401 (fixtures)
    communicator,
    open_visible,
    product,
    settle,
    target,
    visitor,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_refreshed_socket_leaves_presence_the_moment_it_closes(realtime_mode, target):  # noqa: F811
    """The refresher re-enters a socket under the very member it joined with (its country
    included); otherwise the refreshed copy outlived the socket by a TTL: a ghost viewer."""
    comm = await open_visible(target, visitor(1))
    await comm.send_json_to(
        {"type": "page", "product": target["sku"], "visible": True, "context": {"country": "de"}}
    )
    await settle(comm, timeout=0.5)
    await hub_get().refresh_now()
    assert len(await presence_store().visitors(target["product_id"])) == 1
    await comm.disconnect()
    assert await presence_store().visitors(target["product_id"]) == {}


async def test_a_10_mb_frame_closes_with_1009(realtime_mode, target):  # noqa: F811
    """The consumer's own limit (4 KB); in production uvicorn's --ws-max-size 65536 refuses a
    10 MB frame before it is even buffered (tests/test_slow_socket_abuse.py)."""
    comm = await open_visible(target, visitor(1))
    await comm.send_to(text_data=json.dumps({"type": "page", "visible": True, "pad": "x" * 10_000_000}))
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}


async def test_a_flood_of_small_frames_closes_with_1008_and_records_little(realtime_mode, target):  # noqa: F811
    comm = await open_visible(target, visitor(1))
    frame = json.dumps({"type": "event", "event_type": "add_to_cart", "product": target["sku"]})
    for _ in range(500):
        await comm.send_to(text_data=frame)
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1008}
    # One token each: the burst (less the page sent first) and whatever refilled meanwhile.
    recorded = await database_sync_to_async(Event.objects.filter(kind="add_to_cart").count)()
    assert 0 < recorded <= MESSAGE_BURST + 5


async def test_a_widget_paced_client_is_never_closed(realtime_mode, target):  # noqa: F811
    """Thirty messages in three seconds (visibility flips, an add to cart): well over anything
    widget.js sends, and still inside the bucket."""
    comm = await open_visible(target, visitor(1))
    for i in range(30):
        if i % 10 == 9:
            await comm.send_json_to({"type": "event", "event_type": "add_to_cart", "product": target["sku"]})
        else:
            await comm.send_json_to({"type": "page", "product": target["sku"], "visible": i % 2 == 0})
        await asyncio.sleep(0.1)
    assert await comm.receive_nothing(0.3) or (await comm.receive_output())["type"] != "websocket.close"
    await comm.disconnect()


# --- another site's products (issue 9: a client naming another site's group or product) ------


@pytest.fixture
def foreign():
    """A product of another site, with the same allowed origin: only the key tells them apart."""
    return ProductFactory()


async def test_the_handshake_refuses_a_key_with_another_sites_sku(realtime_mode, target, foreign):  # noqa: F811
    comm = communicator(target, visitor(1), sku=foreign.sku)
    connected, _ = await comm.connect()
    assert not connected
    # And the other way round: the other site's key with this site's SKU.
    comm = communicator(target, visitor(1), key=foreign.site.public_key)
    connected, _ = await comm.connect()
    assert not connected


@pytest.mark.parametrize("message", ["page", "event"])
async def test_a_socket_naming_another_sites_product_is_closed_and_changes_nothing(
    realtime_mode,
    target,  # noqa: F811
    foreign,
    message,
):
    watcher_target = {"key": foreign.site.public_key, "sku": foreign.sku, "product_id": foreign.pk}
    comm = await open_visible(target, visitor(1))
    await settle(comm, timeout=0.3)
    if message == "page":
        frame = {"type": "page", "product": foreign.sku, "visible": True}
    else:
        frame = {"type": "event", "event_type": "add_to_cart", "product": foreign.sku}
    await comm.send_json_to(frame)
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 1008}
    assert await presence_store().visitors(foreign.pk) == {}
    assert not await database_sync_to_async(Event.objects.filter(product=foreign).exists)()
    # The other site's own viewers are untouched and see nothing of this site.
    watcher = await open_visible(watcher_target, visitor(2))
    assert await watcher.receive_nothing(0.5)
    await watcher.disconnect()
