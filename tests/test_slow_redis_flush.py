"""Redis flushed (FLUSHALL / FLUSHDB) under live sockets: presence is rebuilt from the sockets
really open within one refresh interval (the server re-enters its own sockets every TTL/3), and
no count is ever inflated — in particular a viewer who leaves after the rebuild stops counting at
once, not one TTL later.

No mocks: a private `redis-server` on a free port (never the machine's shared one) is flushed
under a real uvicorn process on the test database."""

import asyncio
import json
import time

import pytest
import redis

from tests.factories import ProductFactory, site_policy_set
from tests.servers import log_tail, other_sessions_wait_end, private_redis_start, process_stop, server_env
from tests.servers import uvicorn_start as server_start
from tests.test_slow_redis_restart import Visitor, _presence_prefixes, _until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TTL_S = 6
REFRESH_S = TTL_S / 3


class CountryVisitor(Visitor):
    """A page that tells its country (a reference-group attribute kept in the presence member)."""

    async def page(self):
        await self.ws.send(
            json.dumps({"type": "page", "product": self.sku, "visible": True, "context": {"country": "de"}})
        )


@pytest.fixture
def flushable(postgres, tmp_path):
    private = private_redis_start(tmp_path)
    log = tmp_path / "uvicorn.log"
    proc = None
    try:
        env = server_env(private.url, CANDOR_PRESENCE_TTL_S=str(TTL_S), CANDOR_UPDATE_INTERVAL_MS="200")
        proc, port = server_start(env, log)
        yield {"port": port, "log": log, "redis": private}
    finally:
        if proc is not None:
            process_stop(proc)
        private.kill()
        other_sessions_wait_end()


def _viewing(v) -> list[int]:
    return [
        int(m["claim"]["displayed"].rstrip("+"))
        for _, m in v.log
        if m["type"] in ("notification", "update") and m["claim"]["metric"] == "viewing_now"
    ]


@pytest.fixture
def product():
    product = ProductFactory()
    # Every change may reach the screen at once: the frequency caps are not under test here.
    site_policy_set(product.site, min_gap_s=0, per_page_view=10, per_session=100)
    return product


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB"])
async def test_a_flushed_redis_is_rebuilt_from_open_sockets_and_never_inflates(flushable, product, command):
    port, log, private = flushable["port"], flushable["log"], flushable["redis"]
    url = f"ws://127.0.0.1:{port}/ws/v1/widget?key={product.site.public_key}&product={product.sku}"
    visitors = [CountryVisitor(n, url, product.sku) for n in range(5)]
    first_four = visitors[:4]
    try:
        for v in first_four:
            await v.open()
        await _until(
            lambda: all(v.displayed().get("viewing_now") == "3" for v in first_four),
            10,
            "four visitors each see 3 others",
            first_four,
            log,
        )

        client = redis.Redis(port=private.port)
        try:
            assert client.execute_command(command)
        finally:
            client.close()
        flushed_at = time.monotonic()
        assert await _presence_prefixes(private.port, product.pk) == set()

        # Rebuilt by the server's own refresh within one interval, with exactly the open sockets.
        prefixes: set[str] = set()
        while len(prefixes) < 4:
            assert time.monotonic() - flushed_at < REFRESH_S + 1, (prefixes, log_tail(log))
            await asyncio.sleep(0.05)
            prefixes = await _presence_prefixes(private.port, product.pk)
        rebuilt_s = time.monotonic() - flushed_at
        assert len(prefixes) == 4

        # After the rebuild the counts follow the truth both ways: a fifth visitor arrives...
        await visitors[4].open()
        await _until(
            lambda: all(v.displayed().get("viewing_now") == "4" for v in visitors),
            5,
            "five visitors each see 4 others",
            visitors,
            log,
        )
        # ...and one leaves: the others see 3 well within one TTL (a presence member the refresh
        # had re-created under another name would keep them at 4 for up to a TTL).
        await visitors[0].close()
        left_at = time.monotonic()
        await _until(
            lambda: all(v.displayed().get("viewing_now") == "3" for v in visitors[1:]),
            REFRESH_S,
            "the four who stayed see 3 others",
            visitors[1:],
            log,
        )
        drop_s = time.monotonic() - left_at
        assert len(await _presence_prefixes(private.port, product.pk)) == 4

        # Never inflated: nobody was ever shown more others than were really there (4 at most,
        # and only once the fifth had arrived).
        for v in visitors:
            assert max(_viewing(v), default=0) <= 4, v.log
        for v in first_four:
            before_flush = [m for at, m in v.log if at < flushed_at and "claim" in m]
            assert all(m["claim"]["displayed"] == "3" for m in before_flush), v.log
        print(f"{command}: presence rebuilt in {rebuilt_s:.2f} s; a leave seen in {drop_s:.2f} s")
    finally:
        await asyncio.gather(*(v.close() for v in visitors), return_exceptions=True)
