"""Issue 18, item 5 (SPEC 7, "Malformed input fails alone"): a body that cannot be parsed within
limits (nesting deeper than 32, numbers beyond 2^53, NaN or Infinity) is a 400 naming its field,
for that request only, on every route and through both intake paths (the ASGI beacon in front of
Django, and the Django views); context values are an allow-list; an unknown SKU is counted, never
stored."""

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.db import connections
from django.test import Client
from django.utils import timezone

from config.asgi import application
from notifications.ingest import context_clean
from notifications.intake_parse import MAX_DEPTH, MAX_SAFE_INTEGER, json_parse
from notifications.models import Event, ServerDelivery, SiteSecret
from notifications.signing import signature_header_make
from tests.factories import DEMO_ORIGIN, ProductFactory, SiteFactory
from tests.test_widget_socket import communicator, open_visible, visitor

pytestmark = pytest.mark.django_db(transaction=True)

SHOPIFY_SECRET = "shpss_malformed"
WOO_SECRET = "woo-malformed"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
DEEP = "[" * (MAX_DEPTH + 8) + "]" * (MAX_DEPTH + 8)
POISONS = {
    # name: (JSON text put in a field, what the 400's message says)
    "nested 40 deep": (DEEP, "nested at most 32"),
    "an integer of 31 digits": ("1" + "0" * 30, "Numbers must be finite"),
    "NaN": ("NaN", "Numbers must be finite"),
    "1e400": ("1e400", "Numbers must be finite"),
}
TOP_LEVEL = b"[" * 6000  # the body of the attack as seen: 6 KB of `[[[[…`


def _hmac64(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _site_and_product():
    site = SiteFactory(shopify_secret=SHOPIFY_SECRET, woocommerce_secret=WOO_SECRET)
    product = ProductFactory(site=site)
    secret = SiteSecret.objects.filter(site=site, retired_at__isnull=True).first().secret
    return site, product, secret


def _iso(minutes_ago=2):
    return (timezone.now() - dt.timedelta(minutes=minutes_ago)).isoformat()


# Each route: how to build a body with `poison` (JSON text) in one field, the field it is in, and
# the request's headers for that body.
def _events(site, product, secret, poison):
    body = f'{{"key": "{site.public_key}", "type": "view", "product": "{product.sku}", '
    body += f'"context": {{"x": {poison}}}}}'
    return "/api/v1/events", body.encode(), "context", {"origin": DEMO_ORIGIN}


def _visitor_token(site, product, secret, poison):
    return "/api/v1/visitor-token", f'{{"key": {poison}}}'.encode(), "key", {"origin": DEMO_ORIGIN}


def _server(site, product, secret, poison):
    body = (
        f'{{"key": "{site.public_key}", "type": "purchase", "event_id": "e-1", "order_id": "o-1", '
        f'"occurred_at": "{_iso()}", "items": [{{"product": "{product.sku}", "quantity": {poison}}}]}}'
    ).encode()
    return "/api/v1/server/events", body, "items", _server_headers(secret, body)


def _server_headers(secret, body):
    return {"candor-signature": signature_header_make(secret=secret, body=body)}


def _shopify(site, product, secret, poison):
    body = f'{{"id": 77, "financial_status": "paid", "line_items": {poison}}}'.encode()
    return f"/api/v1/webhooks/shopify/{site.public_key}", body, "line_items", _shopify_headers(body)


def _shopify_headers(body):
    return {
        "x-shopify-topic": "orders/create",
        "x-shopify-hmac-sha256": _hmac64(SHOPIFY_SECRET, body),
        "x-shopify-webhook-id": hashlib.sha256(body).hexdigest(),
    }


def _woocommerce(site, product, secret, poison):
    body = f'{{"id": 77, "status": "processing", "line_items": {poison}}}'.encode()
    return f"/api/v1/webhooks/woocommerce/{site.public_key}", body, "line_items", _woo_headers(body)


def _woo_headers(body):
    return {
        "x-wc-webhook-topic": "order.created",
        "x-wc-webhook-signature": _hmac64(WOO_SECRET, body),
        "x-wc-webhook-delivery-id": hashlib.sha256(body).hexdigest()[:20],
    }


ROUTES = {
    "events": _events,
    "visitor-token": _visitor_token,
    "server events": _server,
    "shopify": _shopify,
    "woocommerce": _woocommerce,
}


async def via_asgi(path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """Through the ASGI application a server runs: the beacon's routes, and Django for the rest."""
    headers = {
        "host": "127.0.0.1",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "user-agent": BROWSER,
        **headers,
    }
    comm = HttpCommunicator(
        application, "POST", path, body=body, headers=[(k.encode(), v.encode()) for k, v in headers.items()]
    )
    response = await comm.get_response(timeout=10)
    return response["status"], json.loads(response["body"])


def _via_django(path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    try:
        response = Client().post(
            path, body, content_type="application/json", HTTP_USER_AGENT=BROWSER, **extra
        )
        return response.status_code, response.json()
    finally:
        connections.close_all()


via_django = sync_to_async(_via_django, thread_sensitive=False)
PATHS = {"asgi": via_asgi, "django": via_django}


def _no_tracebacks(caplog):
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("path", PATHS)
async def test_a_body_beyond_the_limits_is_a_400_naming_its_field_on_every_route(path, route, poison, caplog):
    site, product, secret = await sync_to_async(_site_and_product)()
    text, says = POISONS[poison]
    url, body, field, headers = ROUTES[route](site, product, secret, text)
    status, answer = await PATHS[path](url, body, headers)
    assert status == 400, answer
    assert answer["error"]["code"] == "malformed" and answer["error"]["field"] == field
    assert says in answer["error"]["message"]
    assert await sync_to_async(Event.objects.count)() == 0
    _no_tracebacks(caplog)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("path", PATHS)
async def test_6_kb_of_brackets_is_a_400_or_for_the_signed_route_a_401(path, route, caplog):
    """The attack as seen (it was a 500 with a RecursionError). On the signed route no site key
    can be read from it, so it fails verification first: 401, as SPEC 5 orders."""
    site, product, secret = await sync_to_async(_site_and_product)()
    url, _, _, headers = ROUTES[route](site, product, secret, "1")
    if route == "server events":
        headers = _server_headers(secret, TOP_LEVEL)
    elif route == "shopify":
        headers = _shopify_headers(TOP_LEVEL)
    elif route == "woocommerce":
        headers = _woo_headers(TOP_LEVEL)
    status, answer = await PATHS[path](url, TOP_LEVEL, headers)
    if route == "server events":
        assert (status, answer["error"]["code"]) == (401, "bad_signature")
    else:
        assert status == 400 and answer["error"]["field"] == "body", answer
    _no_tracebacks(caplog)


async def test_nested_bodies_fail_alone_beside_honest_purchases_in_one_batch(caplog):
    """Through the real ASGI app, all at once so they share batches: every honest purchase is a
    202 and in the ledger; each bad body gets its own 4xx; nothing is a 5xx or a traceback."""
    site, product, secret = await sync_to_async(_site_and_product)()
    honest = []
    for n in range(30):
        body = json.dumps(
            {
                "key": site.public_key,
                "type": "purchase",
                "event_id": f"honest-{n}",
                "order_id": f"order-{n}",
                "occurred_at": _iso(),
                "items": [{"product": product.sku, "quantity": 1}],
            }
        ).encode()
        honest.append((body, _server_headers(secret, body)))
    bad = [_server(site, product, secret, text)[1] for text, _ in POISONS.values()]
    bad = [(body, _server_headers(secret, body)) for body in bad]
    unkeyed = (TOP_LEVEL, _server_headers(secret, TOP_LEVEL))
    requests = honest[:10] + bad[:2] + honest[10:20] + [unkeyed] + bad[2:] + honest[20:]
    answers = await asyncio.gather(*(via_asgi("/api/v1/server/events", b, h) for b, h in requests))
    by_body = {body: answer for (body, _), answer in zip(requests, answers, strict=True)}
    assert [by_body[body][0] for body, _ in honest] == [202] * 30
    assert [by_body[body][0] for body, _ in bad] == [400] * len(bad)
    assert {by_body[body][1]["error"]["field"] for body, _ in bad} == {"items"}
    assert by_body[TOP_LEVEL][0] == 401
    assert await sync_to_async(Event.objects.filter(kind="purchase").count)() == 30
    _no_tracebacks(caplog)


async def test_nested_browser_events_fail_alone_beside_honest_views(caplog):
    site, product, secret = await sync_to_async(_site_and_product)()
    honest = [
        json.dumps({"key": site.public_key, "type": "view", "product": product.sku}).encode()
        for _ in range(10)
    ]
    bad = [_events(site, product, secret, text)[1] for text, _ in POISONS.values()] + [TOP_LEVEL]

    async def send(body, n):
        return await via_asgi(
            "/api/v1/events", body, {"origin": DEMO_ORIGIN, "user-agent": f"{BROWSER} v/{n}"}
        )

    answers = await asyncio.gather(*(send(body, n) for n, body in enumerate(honest + bad)))
    assert [status for status, _ in answers] == [202] * 10 + [400] * len(bad)
    assert await sync_to_async(Event.objects.count)() == 10
    _no_tracebacks(caplog)


@pytest.mark.parametrize("path", PATHS)
async def test_numbers_up_to_2_53_pass_and_beyond_are_refused(path):
    site, product, secret = await sync_to_async(_site_and_product)()
    for number, status in (
        (MAX_SAFE_INTEGER, 422),
        (MAX_SAFE_INTEGER + 1, 400),
        (-MAX_SAFE_INTEGER - 1, 400),
    ):
        # The signed route: a quantity of 2^53 is parsed, then refused by its own rule (422).
        url, body, _, headers = _server(site, product, secret, str(number))
        assert (await PATHS[path](url, body, headers))[0] == status, number
    url, body, _, headers = _events(site, product, secret, str(MAX_SAFE_INTEGER + 1))
    assert (await PATHS[path](url, body, headers))[0] == 400


def test_the_parse_itself():
    assert json_parse('{"a": [1.5, 9007199254740992, "[[[[ in a string is text"]}')["a"][1] == 2**53
    assert json_parse("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None  # 32 deep is allowed


@pytest.mark.parametrize(
    "frame", [DEEP, "[" * 4000, '{"type": "page", "visible": true, "n": NaN}', f'{{"n": {2**60}}}']
)
async def test_a_socket_frame_beyond_the_limits_closes_1008_without_an_exception(frame, caplog):
    product = await sync_to_async(ProductFactory)()
    target = {"key": product.site.public_key, "sku": product.sku, "product_id": product.pk}
    comm = await open_visible(target, visitor(1))
    await comm.send_to(text_data=frame)
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1008}
    _no_tracebacks(caplog)


# --- The context allow-list ------------------------------------------------------------------

DISGUISED = {
    "hint_email": "jane.doe＠example.com",  # a full-width at sign
    "hint_at": "jane.doe(at)example.com",
    "campaign": "jane.doe%2540example.com",  # "@" encoded twice
    "hint_name": "Jane Doe +1-555-0100",
    "hint_phone": "15550100",
    "hint_contact": "jane@example.com",
    "referrer": "jane.doe@example.com",  # no scheme: no host at all
    "locale": "Jane Doe",
    "country": "jane",
    "device": "jane-doe",
    "returning": "maybe",
    "name": "Jane",
    "hint_Jane Doe": "x",
}
KEPT = {
    "locale": "en-US",
    "country": "DE",
    "device": "mobile",
    "returning": True,
    "referrer": "https://Mail.Example/?email=jane%40example.com",
    "campaign": "Spring-Sale_2025",
    "hint_vip": "gold",
}


def test_context_values_are_an_allow_list():
    assert context_clean(DISGUISED) == {}
    assert context_clean(KEPT) == {
        "locale": "en-us",
        "country": "de",
        "device": "mobile",
        "returning": "true",
        "referrer": "mail.example",
        "campaign": "spring-sale_2025",
        "hint_vip": "gold",
    }


@pytest.mark.parametrize("path", PATHS)
async def test_disguised_emails_and_phone_numbers_never_reach_the_ledger(path):
    site, product, secret = await sync_to_async(_site_and_product)()
    body = json.dumps(
        {
            "key": site.public_key,
            "type": "add_to_cart",
            "product": product.sku,
            "context": {**DISGUISED, "hint_vip": "gold"},
        }
    ).encode()
    assert (await PATHS[path]("/api/v1/events", body, {"origin": DEMO_ORIGIN}))[0] == 202
    event = await sync_to_async(Event.objects.get)()
    assert event.context == {"hint_vip": "gold"}


async def test_the_socket_keeps_only_allowed_context_values():
    product = await sync_to_async(ProductFactory)()
    target = {"key": product.site.public_key, "sku": product.sku, "product_id": product.pk}
    comm = communicator(target, visitor(1))
    assert (await comm.connect())[0]
    page = {
        "type": "page",
        "product": product.sku,
        "visible": True,
        "context": {**DISGUISED, "country": "fr"},
    }
    await comm.send_json_to(page)
    await comm.send_json_to({"type": "event", "event_type": "add_to_cart", "product": product.sku})
    await comm.receive_nothing(0.5)
    await comm.disconnect()
    event = await sync_to_async(Event.objects.get)()
    assert event.context == {"country": "fr"}


# --- An unknown SKU is counted, never stored -------------------------------------------------

EMAIL_SKU = "jane.doe@example.com"


@pytest.mark.parametrize("path", PATHS)
async def test_an_unknown_sku_is_answered_but_never_stored(path):
    site, product, secret = await sync_to_async(_site_and_product)()
    body = json.dumps(
        {
            "key": site.public_key,
            "type": "purchase",
            "event_id": "e-sku",
            "order_id": "o-sku",
            "occurred_at": _iso(),
            "items": [{"product": EMAIL_SKU, "quantity": 1}, {"product": product.sku, "quantity": 1}],
        }
    ).encode()
    status, answer = await PATHS[path]("/api/v1/server/events", body, _server_headers(secret, body))
    assert status == 202 and answer["refused_items"] == [EMAIL_SKU]
    again = await PATHS[path]("/api/v1/server/events", body, _server_headers(secret, body))
    assert again == (200, {"accepted": True, "duplicate": True, "refused_items": [EMAIL_SKU]})
    stored = await sync_to_async(
        lambda: json.dumps(list(ServerDelivery.objects.values("idempotency_key", "response")))
    )()
    assert "jane.doe" not in stored and '"refused_positions": [0]' in stored


@pytest.mark.parametrize("platform", ["shopify", "woocommerce"])
async def test_a_webhooks_unknown_line_item_is_answered_but_never_stored(platform):
    site, product, secret = await sync_to_async(_site_and_product)()
    items = [
        {"id": 1, "product_id": 5, "quantity": 1, "sku": EMAIL_SKU},
        {"id": 2, "quantity": 1, "sku": product.sku},
    ]
    if platform == "shopify":
        body = json.dumps(
            {"id": 91, "financial_status": "paid", "processed_at": _iso(), "line_items": items}
        ).encode()
        headers = _shopify_headers(body)
    else:
        order = {"id": 91, "status": "processing", "date_paid_gmt": _iso()[:19], "line_items": items}
        body = json.dumps(order).encode()
        headers = _woo_headers(body)
    url = f"/api/v1/webhooks/{platform}/{site.public_key}"
    status, answer = await via_asgi(url, body, headers)
    assert status == 200 and answer["refused_items"] == [EMAIL_SKU], answer
    delivery_header = "x-shopify-webhook-id" if platform == "shopify" else "x-wc-webhook-delivery-id"
    again = await via_asgi(url, body, {**headers, delivery_header: "another-delivery"})
    assert again[1]["duplicate"] is True and again[1]["refused_items"] == [EMAIL_SKU]
    stored = await sync_to_async(
        lambda: json.dumps(list(ServerDelivery.objects.values("idempotency_key", "response")))
    )()
    assert "jane.doe" not in stored
