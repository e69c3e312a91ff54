"""A real Redis restart in the middle of a test (SPEC 5, "Widget socket", "Presence").

Never a stale number presented as live: when Redis dies every shown claim is withdrawn (or the
socket closed) within two presence refreshes, and no new number is sent while it is down. Signed
purchases still land in PostgreSQL. When Redis comes back (empty), presence is rebuilt from the
sockets really open within about one refresh interval and every client gets a fresh snapshot,
including the purchase that arrived during the outage.

No mocks: the test starts its own `redis-server` on a free port (never the machine's shared one on
6379), SIGKILLs it, and starts a new one on the same port; the app is a uvicorn process on the
pytest-django test database. Run with `bash bin/test -m slow tests/test_slow_redis_restart.py`."""

import asyncio
import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from notifications.models import Event
from notifications.presence import KEY_PREFIX
from notifications.selectors import policy_catalog_build
from notifications.signing import signature_header_make
from tests.factories import DEMO_ORIGIN, ProductFactory
from tests.servers import (
    PrivateRedis,
    free_port,
    log_tail,
    other_sessions_wait_end,
    port_wait,
    process_stop,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
TTL_S = 6
REFRESH_S = TTL_S / 3  # the server re-enters its sockets' presence this often
VISITORS = 4
NUMERIC = ("notification", "update")


_tail = log_tail


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("SKIPPED LOUDLY: redis-server is not installed.")
    server = PrivateRedis(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def product():
    product = ProductFactory()
    return {
        "key": product.site.public_key,
        "sku": product.sku,
        "pk": product.pk,
        "site_id": product.site_id,
        "secret": product.site.secrets.first().secret,
        # The factory's neutral product falls in the site's default segment (the last one).
        "min_gap_s": policy_catalog_build(product.site_id).segments[-1].policy.min_gap_s,
    }


@pytest.fixture
def server(postgres, private_redis, tmp_path):
    """One uvicorn process on the test database and the private Redis; presence TTL 6 s."""
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": private_redis.url,
        "CANDOR_PRESENCE_TTL_S": str(TTL_S),
        "CANDOR_UPDATE_INTERVAL_MS": "200",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,  # the secrets this process stored are encrypted under it
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    env.pop("DJANGO_DEBUG", None)
    port, log = free_port(), tmp_path / "uvicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--no-proxy-headers"]
            + ["--ws-max-size", "65536", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        port_wait(proc, port, log=lambda: _tail(log))
        yield {"port": port, "log": log, "redis": private_redis}
    finally:
        process_stop(proc)
        other_sessions_wait_end()


class Visitor:
    """One shopper's widget: a socket, and every message it received with its arrival time."""

    def __init__(self, n: int, url: str, sku: str):
        self.n, self.url, self.sku = n, url, sku
        self.log: list[tuple[float, dict]] = []
        self.closed_at: float | None = None
        self.ws = None
        self.reader: asyncio.Task | None = None

    async def open(self):
        self.closed_at = None
        self.ws = await websockets.connect(
            self.url,
            origin=DEMO_ORIGIN,
            user_agent_header=f"{UA} visitor/{self.n}",
            open_timeout=10,
            local_addr=(f"127.0.2.{self.n + 1}", 0),  # a shopper, an address (SPEC 7)
        )
        self.reader = asyncio.create_task(self._read())
        await self.page()

    async def page(self):
        await self.ws.send(json.dumps({"type": "page", "product": self.sku, "visible": True}))

    async def _read(self):
        try:
            async for raw in self.ws:
                self.log.append((time.monotonic(), json.loads(raw)))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)

    def since(self, t: float) -> list[dict]:
        return [m for at, m in self.log if at >= t]

    def between(self, t0: float, t1: float) -> list[dict]:
        return [m for at, m in self.log if t0 <= at < t1]

    def shown(self) -> dict[str, dict]:
        """What the widget shows now, by kind, replaying notification / update / withdraw."""
        shown: dict[str, dict] = {}
        for _, m in self.log:
            if m["type"] in NUMERIC:
                shown[m["claim"]["metric"]] = m
            elif m["type"] == "withdraw":
                shown = {k: v for k, v in shown.items() if v["id"] != m["id"]}
        return shown

    def displayed(self) -> dict[str, str]:
        return {kind: m["claim"]["displayed"] for kind, m in self.shown().items()}

    def fresh(self, t: float, kind: str, displayed: str | None = None) -> dict | None:
        for m in self.since(t):
            if m["type"] in NUMERIC and m["claim"]["metric"] == kind:
                if displayed is None or m["claim"]["displayed"] == displayed:
                    return m
        return None


async def _until(predicate, timeout_s: float, what: str, visitors, log: Path) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            dump = "\n".join(f"visitor {v.n} (closed_at={v.closed_at}): {v.log}" for v in visitors)
            pytest.fail(f"{what}: not within {timeout_s} s\n{dump}\n--- uvicorn ---\n{_tail(log)}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _post_purchase(port: int, product: dict, order_id: str) -> tuple[int, dict]:
    body = json.dumps(
        {
            "key": product["key"],
            "type": "purchase",
            "event_id": f"evt-{order_id}",
            "order_id": order_id,
            "occurred_at": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4, seconds=10)).isoformat(),
            "items": [{"product": product["sku"], "quantity": 1}],
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Candor-Signature": signature_header_make(secret=product["secret"], body=body),
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api/v1/server/events", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _purchase_rows(site_id: int, order_id: str) -> list[tuple]:
    try:
        rows = Event.objects.filter(site_id=site_id, order_id=order_id)
        return list(rows.values_list("kind", "verified", "quantity"))
    finally:
        connections.close_all()  # this worker thread's connection, or the test database lingers


async def _presence_prefixes(port: int, product_id: int) -> set[str]:
    client = aioredis.Redis(port=port, socket_connect_timeout=1)
    try:
        members = await client.zrangebyscore(f"{KEY_PREFIX}{product_id}", int(time.time() * 1000) + 1, "+inf")
        return {m.split(b"|", 1)[0].decode() for m in members}
    finally:
        await client.aclose()


async def test_a_redis_restart_withdraws_then_rebuilds_presence_and_snapshots(server, product):
    port, log, private_redis = server["port"], server["log"], server["redis"]
    url = f"ws://127.0.0.1:{port}/ws/v1/widget?key={product['key']}&product={product['sku']}"
    visitors = [Visitor(n, url, product["sku"]) for n in range(VISITORS)]
    try:
        # 1. Up: four distinct visitors each see "3 viewing now" (the others, not themselves).
        for v in visitors:
            await v.open()
        await _until(
            lambda: all(v.displayed().get("viewing_now") == "3" for v in visitors),
            10,
            "every visitor is shown viewing_now 3",
            visitors,
            log,
        )
        assert len(await _presence_prefixes(private_redis.port, product["pk"])) == VISITORS
        await asyncio.sleep(0.5)  # quiet: nothing in flight when Redis dies
        shown_ids = {v.n: v.shown()["viewing_now"]["id"] for v in visitors}

        # 2. Redis dies without a goodbye. Within two refresh intervals every shown claim is
        # withdrawn (or the socket closed): never a stale number presented as live.
        t_kill = time.monotonic()
        private_redis.kill()

        def withdrawn(v):
            return v.closed_at is not None or any(
                m == {"type": "withdraw", "id": shown_ids[v.n]} for m in v.since(t_kill)
            )

        took_withdraw = await _until(
            lambda: all(withdrawn(v) for v in visitors),
            2 * REFRESH_S + 1,
            "every shown claim withdrawn (or socket closed) after Redis died",
            visitors,
            log,
        )
        assert all(v.shown() == {} for v in visitors if v.closed_at is None)

        # 3. Still down: a signed purchase is accepted and committed to PostgreSQL.
        order_id = f"order-{uuid.uuid4().hex[:8]}"
        status, data = await asyncio.to_thread(_post_purchase, port, product, order_id)
        assert status == 202, (data, _tail(log))
        assert data == {"accepted": True, "duplicate": False, "refused_items": []}
        rows = await sync_to_async(_purchase_rows, thread_sensitive=False)(product["site_id"], order_id)
        assert rows == [("purchase", True, 1)]
        # A page that says it is visible again forces a round; with presence unreadable it must
        # not produce a number either. Then stay down across two more refresh attempts.
        for v in visitors:
            if v.closed_at is None:
                await v.page()
        await asyncio.sleep(2 * REFRESH_S + 0.5)
        t_up = time.monotonic()
        for v in visitors:
            during = [m for m in v.between(t_kill, t_up) if m["type"] != "withdraw"]
            assert during == [], f"visitor {v.n} got a claim while Redis was down: {during}"

        # 4. A new, empty Redis on the same port. Within about one heartbeat interval presence is
        # rebuilt from the open sockets and every client gets a fresh snapshot.
        private_redis.start()
        t_restarted = time.monotonic()
        for v in visitors:
            if v.closed_at is not None:  # a closed widget reconnects, as widget.js does
                await v.open()
        prefixes: set[str] = set()
        while len(prefixes) < VISITORS:
            assert time.monotonic() - t_restarted < REFRESH_S + 1, (
                f"presence not rebuilt within one heartbeat interval: {prefixes}\n{_tail(log)}"
            )
            await asyncio.sleep(0.05)
            prefixes = await _presence_prefixes(private_redis.port, product["pk"])
        took_presence = time.monotonic() - t_restarted

        await _until(
            lambda: all(v.fresh(t_up, "viewing_now", "3") for v in visitors),
            3 * REFRESH_S,
            "every visitor gets a fresh viewing_now 3 after Redis came back",
            visitors,
            log,
        )
        assert len(await _presence_prefixes(private_redis.port, product["pk"])) == VISITORS
        # The purchase committed during the outage (its change could not be published) shows
        # too: it is a new toast, so as soon as the frequency caps allow (the minimum gap after
        # the last toast opened, which may be the restored one).
        last_toast_at = max(at for v in visitors for at, m in v.log if m["type"] == "notification")
        await _until(
            lambda: all(v.fresh(t_up, "recent_purchase") for v in visitors),
            max(t_up + 3 * REFRESH_S, last_toast_at + product["min_gap_s"] + REFRESH_S) - time.monotonic(),
            "every visitor gets the purchase made during the outage after Redis came back",
            visitors,
            log,
        )
        for v in visitors:
            claim = v.fresh(t_up, "recent_purchase")["claim"]
            assert claim["displayed"] == "4", claim
        # And it stays up: no spurious withdraw over the next two refreshes (a pooled connection
        # to the dead server must not look like a second outage).
        await asyncio.sleep(2 * REFRESH_S + 0.5)
        for v in visitors:
            shown = v.displayed()
            assert shown == {"viewing_now": "3", "recent_purchase": "4"}, (v.n, v.since(t_up), _tail(log))

        def arrival(kind):  # when the last visitor got its first fresh `kind`, after the restart
            firsts = [
                min(at for at, m in v.log if at >= t_up and m.get("claim", {}).get("metric") == kind)
                for v in visitors
            ]
            return max(firsts) - t_restarted

        print(
            f"withdrawn {took_withdraw:.2f} s after the kill; after the restart: presence rebuilt"
            f" {took_presence:.2f} s, snapshot {arrival('viewing_now'):.2f} s,"
            f" purchase {arrival('recent_purchase'):.2f} s"
        )
    finally:
        await asyncio.gather(*(v.close() for v in visitors), return_exceptions=True)
