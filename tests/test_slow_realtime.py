"""Slow suites against the real services: a burst of 1,000 connects, and two server processes
sharing presence through Redis. Run with `bash bin/test -m slow` (.ci/run does)."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from tests.factories import DEMO_ORIGIN, ProductFactory

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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_servers(redis_url, postgres):
    """Two uvicorn processes on their own ports, sharing the test database and Redis."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": "test-only-" + "x" * 40,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
    }
    ports, procs = [_free_port(), _free_port()], []
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
        for port in ports:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"server on {port} did not start")
        yield ports
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=10)
        _wait_for_other_sessions_to_end()


def _wait_for_other_sessions_to_end(timeout_s=10.0):
    """PostgreSQL notices a dead client's session a moment later; the test database can only be
    dropped once it has."""
    from django.db import connection

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)


async def test_viewers_on_two_server_processes_count_together(two_servers, product):
    key, sku = product.site.public_key, product.sku
    sockets = []
    for i in range(5):  # visitors alternate between the two processes
        port = two_servers[i % 2]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/v1/widget?key={key}&product={sku}",
            origin=DEMO_ORIGIN,
            user_agent_header=f"{UA} multi/{i}",
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
