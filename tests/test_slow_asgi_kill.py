"""An ASGI server process SIGKILLed with sockets open (its `disconnect()` never runs): its
viewers stop counting within one presence TTL, as a second server process sharing Redis shows
to its own viewers. No ghost viewers, and never a number above the sockets really open.

Real processes throughout: a private redis-server and two uvicorn processes on free ports; the
killed one is SIGKILLed, as the kernel's OOM killer or a crashed container would."""

import asyncio
import os
import signal
import time

import pytest

from tests.factories import ProductFactory, site_policy_set
from tests.servers import other_sessions_wait_end, private_redis_start, process_stop, server_env
from tests.servers import uvicorn_start as server_start
from tests.test_slow_redis_restart import Visitor, _presence_prefixes, _until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TTL_S = 3
REFRESH_S = TTL_S / 3


@pytest.fixture
def two_processes(postgres, tmp_path):
    private = private_redis_start(tmp_path)
    env = server_env(private.url, CANDOR_PRESENCE_TTL_S=str(TTL_S), CANDOR_UPDATE_INTERVAL_MS="200")
    started = []
    try:
        for name in ("a", "b"):
            log = tmp_path / f"uvicorn-{name}.log"
            proc, port = server_start(env, log)
            started.append({"proc": proc, "port": port, "log": log})
        yield started, private
    finally:
        for server in started:
            process_stop(server["proc"])
        private.kill()
        other_sessions_wait_end()


@pytest.fixture
def product():
    product = ProductFactory()
    site_policy_set(product.site, min_gap_s=0, per_page_view=10, per_session=100)
    return product


async def test_a_killed_server_leaves_no_ghost_viewers_after_one_ttl(two_processes, product):
    (a, b), private = two_processes
    path = f"/ws/v1/widget?key={product.site.public_key}&product={product.sku}"
    on_a = [Visitor(n, f"ws://127.0.0.1:{a['port']}{path}", product.sku) for n in range(2)]
    on_b = [Visitor(n, f"ws://127.0.0.1:{b['port']}{path}", product.sku) for n in range(2, 6)]
    try:
        for v in [*on_a, *on_b]:
            await v.open()
        await _until(
            lambda: all(v.displayed().get("viewing_now") == "5" for v in on_b),
            10,
            "six visitors on two processes: each on B sees 5 others",
            on_b,
            b["log"],
        )
        assert len(await _presence_prefixes(private.port, product.pk)) == 6

        os.killpg(a["proc"].pid, signal.SIGKILL)
        a["proc"].wait(timeout=10)
        killed_at = time.monotonic()
        took = await _until(
            lambda: all(v.displayed().get("viewing_now") == "3" for v in on_b),
            TTL_S + REFRESH_S + 1,
            "B's viewers stop counting A's dead sockets within one TTL",
            on_b,
            b["log"],
        )
        assert len(await _presence_prefixes(private.port, product.pk)) == 4
        # Never more than were really there: 5 others while A lived, at most 5 until its
        # presence expired, 3 from then on.
        for v in on_b:
            after = [m["claim"]["displayed"] for m in v.since(killed_at + TTL_S + REFRESH_S) if "claim" in m]
            assert set(after) <= {"3"}, v.log
        await asyncio.sleep(REFRESH_S * 2)
        assert all(v.displayed().get("viewing_now") == "3" for v in on_b)
        print(f"A killed: B's viewers saw the drop to 3 after {took:.2f} s (TTL {TTL_S} s)")
    finally:
        await asyncio.gather(*(v.close() for v in [*on_a, *on_b]), return_exceptions=True)
