"""SPEC 7 over real sockets, against uvicorn run as docs/operations.md runs it, on the real Redis and
PostgreSQL: four honest shoppers, each from its own loopback address, and one machine
(127.0.9.9) rotating 40 User-Agents over sockets and beacons. The machine gets at most 20 sockets
(the rest: HTTP 429 at the handshake), lifts no count above the honest shoppers + 2, and a socket
that never says its page is closed with 1008."""

import asyncio
import datetime as dt
import http.client
import json

import pytest
import websockets
from asgiref.sync import sync_to_async

from notifications import metrics
from notifications.models import Event
from tests.factories import DEMO_ORIGIN, ProductFactory
from tests.servers import other_sessions_wait_end, process_stop, server_env, uvicorn_start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
ATTACKER = "127.0.9.9"


@pytest.fixture
def server(redis_url, postgres, tmp_path):
    env = server_env(redis_url, CANDOR_PAGE_TIMEOUT_S="2", CANDOR_UPDATE_INTERVAL_MS="100")
    proc, port = uvicorn_start(env, tmp_path / "uvicorn.log")
    try:
        yield port
    finally:
        process_stop(proc)
        other_sessions_wait_end()


def _honest(i: int) -> str:
    return f"127.0.1.{i + 1}"


async def _open(port, product, *, ua, source):
    url = f"ws://127.0.0.1:{port}/ws/v1/widget?key={product.site.public_key}&product={product.sku}"
    ws = await websockets.connect(url, origin=DEMO_ORIGIN, user_agent_header=ua, local_addr=(source, 0))
    await ws.send(json.dumps({"type": "page", "product": product.sku, "visible": True}))
    return ws


async def _viewing_seen(ws, quiet_s=1.5) -> list[str]:
    seen = []
    while True:
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), quiet_s))
        except TimeoutError:
            return seen
        if message.get("type") in ("notification", "update") and message["claim"]["metric"] == "viewing_now":
            seen.append(message["claim"]["displayed"])


def _beacon(port, product, *, ua, source) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        body = json.dumps({"key": product.site.public_key, "type": "add_to_cart", "product": product.sku})
        headers = {"Content-Type": "application/json", "Origin": DEMO_ORIGIN, "User-Agent": ua}
        conn.request("POST", "/api/v1/events", body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


async def test_one_machine_rotating_user_agents_adds_at_most_two_over_real_sockets(server):
    product = await sync_to_async(ProductFactory)()
    honest = [await _open(server, product, ua=f"{UA} honest/{i}", source=_honest(i)) for i in range(4)]
    try:
        assert (await _viewing_seen(honest[0]))[-1:] == ["3"]
        attackers, refused = [], 0
        for i in range(40):
            try:
                attackers.append(await _open(server, product, ua=f"{UA} rotating/{i}", source=ATTACKER))
            except websockets.exceptions.InvalidStatus as exc:
                assert exc.response.status_code == 429
                assert exc.response.headers["Retry-After"] == "30"
                refused += 1
        assert (len(attackers), refused) == (20, 20)  # CANDOR_SOCKETS_PER_ADDRESS
        seen = await _viewing_seen(honest[0], quiet_s=2.5)
        assert seen and set(seen) <= {"3", "4", "5"}, seen
        assert seen[-1] == "5"  # 3 other honest shoppers + 2 for the machine, never 23
        for ws in attackers:
            await ws.close()
        # Its sockets closed, the machine's slots are free again.
        again = await _open(server, product, ua=f"{UA} rotating/again", source=ATTACKER)
        await again.close()
    finally:
        for ws in honest:
            await ws.close()


async def test_one_machine_rotating_user_agents_adds_at_most_two_carts_over_real_beacons(server):
    product = await sync_to_async(ProductFactory)()
    shoppers = [(f"{UA} h/{i}", _honest(i)) for i in range(3)]
    shoppers += [(f"{UA} r/{i}", ATTACKER) for i in range(40)]
    statuses = [await asyncio.to_thread(_beacon, server, product, ua=ua, source=src) for ua, src in shoppers]
    assert statuses == [202] * 43  # all accepted and recorded: nothing accepted is lost

    def truth():
        assert Event.objects.filter(product=product, kind="add_to_cart").count() == 43
        return metrics.add_to_cart_in_window(product_id=product.pk, at=dt.datetime.now(dt.UTC)).true_value

    assert await sync_to_async(truth)() == 3 + 2


async def test_a_real_socket_that_never_says_its_page_is_closed_1008(server):
    product = await sync_to_async(ProductFactory)()
    url = f"ws://127.0.0.1:{server}/ws/v1/widget?key={product.site.public_key}&product={product.sku}"
    ws = await websockets.connect(url, origin=DEMO_ORIGIN, user_agent_header=UA, local_addr=("127.0.7.7", 0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd.code == 1008
    assert 1.5 <= loop.time() - started <= 6  # CANDOR_PAGE_TIMEOUT_S=2 for this server
