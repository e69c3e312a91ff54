"""Hostile socket clients against a real uvicorn process run as docs/operations.md runs it
(`--ws-max-size 65536`): a 10 MB frame is refused with 1009 without the process buffering it,
and a flood of small frames is closed with 1008 (the consumer's per-socket message budget)."""

import asyncio
import json
import time
from pathlib import Path

import pytest
import websockets

from tests.factories import DEMO_ORIGIN, ProductFactory
from tests.servers import log_tail, other_sessions_wait_end, private_redis_start, process_stop, server_env
from tests.servers import uvicorn_start as server_start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(postgres, tmp_path):
    private = private_redis_start(tmp_path)
    log = tmp_path / "uvicorn.log"
    proc = None
    try:
        proc, port = server_start(server_env(private.url), log)
        yield {"proc": proc, "port": port, "log": log}
    finally:
        if proc is not None:
            process_stop(proc)
        private.kill()
        other_sessions_wait_end()


@pytest.fixture
def product():
    return ProductFactory()


async def _connect(server, product, n: int):
    url = f"ws://127.0.0.1:{server['port']}/ws/v1/widget?key={product.site.public_key}&product={product.sku}"
    # The client's own limits off: it is the server's we are testing.
    return await websockets.connect(
        url, origin=DEMO_ORIGIN, user_agent_header=f"{UA} abuse/{n}", max_size=None, open_timeout=10
    )


async def _close_code(ws, timeout_s: float = 10) -> int:
    try:
        async with asyncio.timeout(timeout_s):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def test_a_10_mb_frame_closes_with_1009_without_the_server_buffering_it(server, product):
    pid = server["proc"].pid
    ws = await _connect(server, product, 1)
    await ws.send(json.dumps({"type": "page", "product": product.sku, "visible": True}))
    before_mb = rss_mb(pid)
    started = time.monotonic()
    try:
        await ws.send(json.dumps({"type": "page", "visible": True, "pad": "x" * 10 * 1024 * 1024}))
    except websockets.ConnectionClosed:
        pass  # the server may close while the frame is still going out
    code = await _close_code(ws)
    took_s = time.monotonic() - started
    grown_mb = rss_mb(pid) - before_mb
    assert code == 1009, log_tail(server["log"])
    assert grown_mb < 20, f"the server grew {grown_mb:.1f} MB for a refused frame"
    # The process is fine: a new socket is served.
    again = await _connect(server, product, 2)
    await again.close()
    print(f"10 MB frame: closed 1009 in {took_s:.2f} s; server RSS grew {grown_mb:.1f} MB")


async def test_a_flood_of_small_frames_closes_with_1008(server, product):
    ws = await _connect(server, product, 3)
    frame = json.dumps({"type": "page", "product": product.sku, "visible": True})
    sent = 0
    started = time.monotonic()
    try:
        for _ in range(5000):
            await ws.send(frame)
            sent += 1
    except websockets.ConnectionClosed:
        pass
    code = await _close_code(ws)
    assert code == 1008, log_tail(server["log"])
    print(f"flood: closed 1008 after {sent} frames sent in {time.monotonic() - started:.2f} s")
