"""Privacy scan (issue 9, SPEC 2.7): after a simulated day of shoppers, no raw IP, User-Agent,
email or name used in the simulation is anywhere Candor keeps or prints anything.

The day, against a real uvicorn process on the test database and a private redis-server, behind
a trusted proxy (`CANDOR_TRUSTED_PROXIES=127.0.0.1`, so each shopper's address arrives in
`X-Forwarded-For`): 24 shoppers, each with their own address (IPv4 and IPv6) and User-Agent, view
and add to cart over HTTP with a newsletter referrer that carries their email and name, open the
widget's socket and browse (toasts are emitted and logged), add to cart over the socket, and buy
through a Shopify webhook (customer email and names, `browser_ip`, `client_details.user_agent`,
addresses), a WooCommerce webhook (billing names and email, `customer_ip_address`,
`customer_user_agent`) or a signed server request carrying a `customer` object; some orders are
refunded. Then the periodic tasks run (rollups, the claims audit, salts) and an operator exports
an order.

Then every text and JSON column of every table in the database, every key and value in Redis,
the server's whole output (Candor's loggers at DEBUG, uvicorn as docs/operations.md runs it) and the test
process's own log records are searched for every address, User-Agent, email and name used."""

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import time
import uuid

import pytest
import redis
import websockets
from django.db import connection
from django.utils import timezone

from notifications import audit, maintenance
from notifications.orders import order_export
from notifications.signing import signature_header_make
from tests.factories import DEMO_ORIGIN, ProductFactory, SiteFactory, site_policy_set
from tests.servers import log_tail, other_sessions_wait_end, private_redis_start, process_stop, server_env
from tests.servers import uvicorn_start as server_start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SHOPPERS = 24
SHOPIFY_SECRET = "shpss_privacy_scan"
WOO_SECRET = "woo_privacy_scan"
FIRST = ["Zephyrine", "Quillon", "Marisabel", "Thorvald", "Isolde", "Caspian", "Ottoline", "Peregrin"]
LAST = ["Wrenfield", "Ashcombe", "Bellingham", "Crowthorne", "Dunmore", "Everleigh"]


def shopper(i: int) -> dict:
    first, last = FIRST[i % len(FIRST)] + "x" * (i // len(FIRST)), LAST[i % len(LAST)]
    ip = f"203.0.113.{10 + i}" if i % 3 else f"2001:db8:5ca1::{i + 1:x}"
    return {
        "ip": ip,
        "ua": f"Mozilla/5.0 (X11; Linux x86_64; PrivacyScan-{i:02d}) Gecko/20100101 Firefox/{120 + i}.0",
        "email": f"{first.lower()}.{last.lower()}@mail.example",
        "first": first,
        "last": last,
    }


PEOPLE = [shopper(i) for i in range(SHOPPERS)]


def needles() -> list[str]:
    found = set()
    for p in PEOPLE:
        found |= {p["ip"], p["ua"], p["email"], p["first"], p["last"], f"{p['first']} {p['last']}"}
        found.add(p["email"].replace("@", "%40"))  # as it rides in a URL
    found.add("PrivacyScan")  # any part of any User-Agent
    return sorted(found)


@pytest.fixture
def shop():
    site = SiteFactory(shopify_secret=SHOPIFY_SECRET, woocommerce_secret=WOO_SECRET)
    site_policy_set(site, min_gap_s=0, per_page_view=10, per_session=100)
    products = [ProductFactory(site=site, sku=f"scan-{n}", category="Bags") for n in range(3)]
    return site, products, site.secrets.first().secret


@pytest.fixture
def server(postgres, tmp_path):
    private = private_redis_start(tmp_path)
    log = tmp_path / "uvicorn.log"
    proc = None
    env = server_env(
        private.url,
        CANDOR_TRUSTED_PROXIES="127.0.0.1",
        DJANGO_LOG_LEVEL="DEBUG",  # Candor's own loggers at their most talkative
        CANDOR_PRESENCE_TTL_S="6",
        CANDOR_UPDATE_INTERVAL_MS="200",
    )
    try:
        proc, port = server_start(env, log, extra_args=("--log-level", "warning"))
        yield {"port": port, "log": log, "redis": private}
    finally:
        if proc is not None:
            process_stop(proc)
        private.kill()
        other_sessions_wait_end()


def _http(port: int, path: str, body: bytes, headers: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _platform_sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _shopify_order(i: int, p: dict, sku: str) -> dict:
    placed = (timezone.now() - dt.timedelta(minutes=5)).isoformat(timespec="seconds")
    address = {"first_name": p["first"], "last_name": p["last"], "name": f"{p['first']} {p['last']}"}
    return {
        "id": 7_000_000 + i,
        "email": p["email"],
        "contact_email": p["email"],
        "browser_ip": p["ip"],
        "client_details": {"browser_ip": p["ip"], "user_agent": p["ua"], "accept_language": "en-GB"},
        "customer": {"id": 9_000 + i, "email": p["email"], "first_name": p["first"], "last_name": p["last"]},
        "billing_address": {**address, "city": "Ottawa", "zip": "K2P0V6"},
        "shipping_address": {**address, "city": "Ottawa", "zip": "K2P0V6"},
        "note": f"Gift for {p['first']} {p['last']}",
        "financial_status": "paid",
        "processed_at": placed,
        "created_at": placed,
        "test": False,
        "line_items": [{"id": 1, "product_id": 1, "quantity": 1, "sku": sku, "name": "Bag"}],
    }


def _woo_order(i: int, p: dict, sku: str) -> dict:
    paid = (timezone.now() - dt.timedelta(minutes=5)).astimezone(dt.UTC).replace(tzinfo=None)
    return {
        "id": 8_000 + i,
        "status": "processing",
        "date_paid_gmt": paid.isoformat(timespec="seconds"),
        "customer_ip_address": p["ip"],
        "customer_user_agent": p["ua"],
        "billing": {"first_name": p["first"], "last_name": p["last"], "email": p["email"]},
        "shipping": {"first_name": p["first"], "last_name": p["last"]},
        "customer_note": f"Call {p['first']}",
        "line_items": [{"id": 1, "product_id": 2, "quantity": 1, "sku": sku, "name": "Bag"}],
    }


def _buy(port: int, site, secret: str, i: int, p: dict, sku: str) -> None:
    """Shopper i's order, through one of the three paths; every fourth is refunded."""
    path_kind = i % 3
    if path_kind == 0:
        body = json.dumps(_shopify_order(i, p, sku)).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/paid",
            "X-Shopify-Hmac-Sha256": _platform_sign(SHOPIFY_SECRET, body),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        }
        assert _http(port, f"/api/v1/webhooks/shopify/{site.public_key}", body, headers) == 200
    elif path_kind == 1:
        body = json.dumps(_woo_order(i, p, sku)).encode()
        headers = {
            "Content-Type": "application/json",
            "X-WC-Webhook-Topic": "order.updated",
            "X-WC-Webhook-Signature": _platform_sign(WOO_SECRET, body),
            "X-WC-Webhook-Delivery-ID": str(uuid.uuid4()),
        }
        assert _http(port, f"/api/v1/webhooks/woocommerce/{site.public_key}", body, headers) == 200
    else:
        payload = {
            "key": site.public_key,
            "type": "purchase",
            "event_id": f"evt-{i}",
            "order_id": f"order-{i}",
            "occurred_at": (timezone.now() - dt.timedelta(minutes=3)).isoformat(),
            "items": [{"product": sku, "quantity": 1}],
            "customer": {"email": p["email"], "name": f"{p['first']} {p['last']}", "ip": p["ip"]},
        }
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "Candor-Signature": signature_header_make(secret=secret, body=body),
        }
        assert _http(port, "/api/v1/server/events", body, headers) == 202
        if i % 4 == 2:
            refund = {**payload, "type": "refund", "event_id": f"evt-r-{i}"}
            del refund["items"]
            body = json.dumps(refund).encode()
            headers["Candor-Signature"] = signature_header_make(secret=secret, body=body)
            assert _http(port, "/api/v1/server/events", body, headers) == 202


async def _browse(port: int, site, sku: str, p: dict, dwell_s: float) -> list[dict]:
    context = {
        "locale": "en-GB",
        "country": "gb",
        "referrer": f"https://news.mail.example/?email={p['email']}",
    }
    headers = {"X-Forwarded-For": p["ip"], "Accept-Language": "en-GB,en;q=0.9"}
    url = f"ws://127.0.0.1:{port}/ws/v1/widget?key={site.public_key}&product={sku}"
    received = []
    async with websockets.connect(
        url, origin=DEMO_ORIGIN, user_agent_header=p["ua"], additional_headers=headers, open_timeout=15
    ) as ws:
        await ws.send(json.dumps({"type": "page", "product": sku, "visible": True, "context": context}))
        await ws.send(json.dumps({"type": "event", "event_type": "add_to_cart", "product": sku}))
        deadline = time.monotonic() + dwell_s
        while time.monotonic() < deadline:
            try:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())))
            except TimeoutError:
                break
    return received


def _beacons(port: int, site, sku: str, p: dict) -> None:
    referrer = (
        f"https://news.mail.example/?email={p['email'].replace('@', '%40')}&name={p['first']}+{p['last']}"
    )
    for kind in ("view", "add_to_cart"):
        body = json.dumps(
            {
                "key": site.public_key,
                "type": kind,
                "product": sku,
                "context": {"referrer": referrer, "campaign": "spring", "locale": "en-GB", "hint_vip": "no"},
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Origin": DEMO_ORIGIN,
            "User-Agent": p["ua"],
            "X-Forwarded-For": f"{p['ip']}, 127.0.0.1",
        }
        assert _http(port, "/api/v1/events", body, headers) == 202


def _database_hits(targets: list[str]) -> list[str]:
    hits = []
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            columns = [
                c.name
                for c in connection.introspection.get_table_description(cursor, table)
                if c.type_code in (25, 1043, 1042, 114, 3802)  # text, varchar, char, json, jsonb
            ]
            for column in columns:
                quoted_table, quoted_column = (
                    connection.ops.quote_name(table),
                    connection.ops.quote_name(column),
                )
                for needle in targets:
                    cursor.execute(
                        f"SELECT count(*) FROM {quoted_table} WHERE strpos({quoted_column}::text, %s) > 0",  # noqa: S608 (names from the catalog)
                        [needle],
                    )
                    if cursor.fetchone()[0]:
                        hits.append(f"{table}.{column} holds {needle!r}")
    return hits


def _redis_dump(port: int) -> str:
    client = redis.Redis(port=port)
    try:
        parts = []
        for key in client.scan_iter(count=1000):
            parts.append(key.decode(errors="replace"))
            kind = client.type(key).decode()
            if kind == "string":
                parts.append(repr(client.get(key)))
            elif kind == "zset":
                parts.append(repr(client.zrange(key, 0, -1)))
            elif kind == "hash":
                parts.append(repr(client.hgetall(key)))
            elif kind == "list":
                parts.append(repr(client.lrange(key, 0, -1)))
            elif kind == "set":
                parts.append(repr(client.smembers(key)))
        return "\n".join(parts)
    finally:
        client.close()


def test_a_simulated_day_leaves_no_raw_ip_user_agent_email_or_name_anywhere(server, shop, caplog):
    caplog.set_level(logging.DEBUG)
    site, products, secret = shop
    port = server["port"]

    async def day():
        sessions = []
        for i, p in enumerate(PEOPLE):
            sku = products[i % len(products)].sku
            await asyncio.to_thread(_beacons, port, site, sku, p)
            sessions.append(asyncio.create_task(_browse(port, site, sku, p, dwell_s=4)))
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        for i, p in enumerate(PEOPLE):
            await asyncio.to_thread(_buy, port, site, secret, i, p, products[i % len(products)].sku)
        return await asyncio.gather(*sessions)

    received = asyncio.run(day())
    toasts = [m for messages in received for m in messages if m["type"] == "notification"]
    assert {m["kind"] for m in toasts} >= {"viewing_now", "recent_purchase"}, received[-1]

    # The day's upkeep and an operator's export of an order.
    now = timezone.now()
    maintenance.rollups_build(hours=2, now=now + dt.timedelta(hours=1))
    audit.claims_audit()
    maintenance.salts_rotate()
    exported = json.dumps(order_export(site=site, order_id="order-2"))
    assert "order-2" in exported

    targets = needles()
    stored = _database_hits(targets)
    assert stored == [], "\n".join(stored)
    in_redis = [n for n in targets if n in _redis_dump(server["redis"].port)]
    assert in_redis == []
    server_output = server["log"].read_text(errors="replace")
    printed = [n for n in targets if n in server_output]
    assert printed == [], f"the server printed {printed}:\n{log_tail(server['log'])}"
    # This process's own log records (the upkeep, the export); the shoppers' websocket client
    # logs its own handshake here too, which is the browser's business, not Candor's.
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))
    logged_here = [n for n in targets if n in ours]
    assert logged_here == []
    assert exported.count("@") == 0
    print(
        f"{SHOPPERS} shoppers: {len(toasts)} toasts received; scanned {len(targets)} needles in every"
        f" table, Redis, {len(server_output.splitlines())} lines of server output and"
        f" {len(caplog.records)} log records here"
    )
