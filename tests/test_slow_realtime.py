"""Slow suites against the real services: a burst of 1,000 connects, and two server processes
sharing presence through Redis. Run with `bash bin/test -m slow` (.ci/run does)."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from tests.factories import DEMO_ORIGIN, ProductFactory
from tests.servers import free_port, other_sessions_wait_end, port_wait, process_stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture
def product():
    return ProductFactory()


async def test_a_burst_of_1000_connects_on_real_redis(redis_url, product, settings):
    settings.CANDOR_UPDATE_INTERVAL_MS = 200
    path = f"/ws/v1/widget?key={product.site.public_key}&product={product.sku}"

    async def one(i):
        comm = WebsocketCommunicator(
            application,
            path,
            headers=[(b"origin", DEMO_ORIGIN.encode()), (b"user-agent", f"{UA} burst/{i}".encode())],
        )
        comm.scope["client"] = (f"127.3.{i // 250}.{1 + i % 250}", 50000)  # a shopper, an address (SPEC 7)
        connected, _ = await comm.connect(timeout=30)
        assert connected
        await comm.send_json_to({"type": "page", "product": product.sku, "visible": True})
        return comm

    comms = await asyncio.gather(*(one(i) for i in range(1000)))
    await asyncio.sleep(2)
    seen = []
    for comm in comms:
        last = None
        while not await comm.receive_nothing(0.001):
            last = await comm.receive_json_from()
        seen.append(last and last["claim"]["displayed"])
    assert seen.count("20+") == 1000, {value: seen.count(value) for value in set(seen)}
    await asyncio.gather(*(comm.disconnect() for comm in comms))


@pytest.fixture
def two_servers(redis_url, postgres):
    """Two uvicorn processes on their own ports, sharing the test database and Redis."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,  # the secrets this process stored are encrypted under it
        "DJANGO_SECURE_SSL_REDIRECT": "0",
    }
    ports, procs = [free_port(), free_port()], []
    for port in ports:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--port",
                    str(port),
                    "--no-proxy-headers",
                    "--ws-max-size",
                    "65536",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        )
    try:
        for port, proc in zip(ports, procs, strict=True):
            port_wait(proc, port, timeout_s=20)
        yield ports
    finally:
        for proc in procs:
            process_stop(proc)
        other_sessions_wait_end()


async def test_viewers_on_two_server_processes_count_together(two_servers, product):
    key, sku = product.site.public_key, product.sku
    sockets = []
    for i in range(5):  # visitors alternate between the two processes
        port = two_servers[i % 2]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/v1/widget?key={key}&product={sku}",
            origin=DEMO_ORIGIN,
            user_agent_header=f"{UA} multi/{i}",
            local_addr=(f"127.0.3.{i + 1}", 0),  # a shopper, an address (SPEC 7)
        )
        await ws.send(json.dumps({"type": "page", "product": sku, "visible": True}))
        sockets.append(ws)

    async def last_message(ws, quiet_s=1.5):
        last = None
        while True:
            try:
                last = json.loads(await asyncio.wait_for(ws.recv(), quiet_s))
            except TimeoutError:
                return last

    finals = await asyncio.gather(*(last_message(ws) for ws in sockets))
    assert [m["claim"]["displayed"] for m in finals] == ["4"] * 5
    # One leaves on process A; viewers on process B hear of it through Redis.
    await sockets.pop(0).close()
    finals = await asyncio.gather(*(last_message(ws) for ws in sockets))
    assert [(m["type"], m["claim"]["displayed"]) for m in finals] == [("update", "3")] * 4
    for ws in sockets:
        await ws.close()
