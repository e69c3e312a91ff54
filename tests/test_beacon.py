"""The browser-event beacon (notifications/beacon.py): `POST /api/v1/events` served in front of
Django by the ASGI application. It must answer exactly as the Django view does, commit before
its 202, share the rate limits, and group concurrent requests into few INSERTs."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.db import OperationalError, connections
from django.test import Client

from config.asgi import application
from notifications import beacon
from notifications.models import Event, IngestRefusal
from tests.factories import DEMO_ORIGIN, ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def _headers(**over):
    headers = {
        "content-type": "application/json",
        "origin": DEMO_ORIGIN,
        "user-agent": BROWSER,
        "host": "127.0.0.1",
    }
    headers.update(over)
    return {k: v for k, v in headers.items() if v is not None}


async def via_beacon(body: bytes, *, method="POST", **over):
    headers = _headers(**over)
    headers["content-length"] = str(len(body))
    comm = HttpCommunicator(
        application,
        method,
        "/api/v1/events",
        body=body,
        headers=[(k.encode(), v.encode()) for k, v in headers.items()],
    )
    response = await comm.get_response(timeout=5)
    names = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    is_json = names.get("content-type", "").startswith("application/json") and response["body"]
    return response["status"], (json.loads(response["body"]) if is_json else {}), names


def _via_django(body: bytes, method="POST", **over):
    headers = _headers(**over)
    extra = {
        "HTTP_" + k.upper().replace("-", "_"): v
        for k, v in headers.items()
        if k not in ("content-type", "host")
    }
    try:
        client = Client()
        response = client.generic(
            method, "/api/v1/events", body, content_type=headers.get("content-type", ""), **extra
        )
        return (
            response.status_code,
            (response.json() if response.content else {}),
            {k.lower(): v for k, v in response.headers.items()},
        )
    finally:
        connections.close_all()


via_django = sync_to_async(_via_django, thread_sensitive=False)


def _event(item, **over):
    return json.dumps({"key": item.site.public_key, "type": "view", "product": item.sku, **over}).encode()


async def test_the_beacon_answers_exactly_as_the_django_view(settings):
    product = await sync_to_async(ProductFactory)()
    cases = [
        ("a view", _event(product), {}),
        ("an add to cart", _event(product, type="add_to_cart"), {}),
        ("415", _event(product), {"content-type": "text/plain"}),
        ("413", b"{" + b" " * 9000 + b"}", {}),
        ("400 not json", b"{nope", {}),
        ("400 field", json.dumps({"key": product.site.public_key, "type": "view"}).encode(), {}),
        ("400 unknown field", _event(product, extra=1), {}),
        ("404", _event(product, key="pk_unknown"), {}),
        ("403 origin", _event(product), {"origin": "https://evil.example"}),
        ("403 purchase", _event(product, type="purchase"), {}),
        ("422", _event(product, product="no-such-sku"), {}),
    ]
    for name, body, over in cases:
        await sync_to_async(Event.objects.all().delete)()
        ours = await via_beacon(body, **over)
        await sync_to_async(Event.objects.all().delete)()
        from django.core.cache import cache

        await sync_to_async(cache.clear)()
        from notifications.limits import limits_forget

        limits_forget()
        django = await via_django(body, **over)
        assert ours[0] == django[0], name
        assert ours[1] == django[1], name
        for header in ("access-control-allow-origin", "retry-after", "vary"):
            assert ours[2].get(header) == django[2].get(header), (name, header)
    for method in ("OPTIONS", "GET"):
        for origin in (DEMO_ORIGIN, "https://evil.example"):
            ours = await via_beacon(b"", method=method, origin=origin, **{"content-type": None})
            django = await via_django(b"", method, origin=origin, **{"content-type": None})
            assert ours[:2] == django[:2], (method, origin)


async def test_a_202_means_the_row_is_committed_and_requests_share_inserts(monkeypatch):
    product = await sync_to_async(ProductFactory)()
    batches = []
    record = beacon.browser_events_record

    def counting(events):
        batches.append(len(events))
        return record(events)

    monkeypatch.setattr(beacon, "browser_events_record", counting)
    bodies = [(_event(product), {"user-agent": f"{BROWSER} v/{n}"}) for n in range(40)]
    answers = await asyncio.gather(*(via_beacon(body, **over) for body, over in bodies))
    assert [status for status, _, _ in answers] == [202] * 40
    assert await sync_to_async(Event.objects.filter(kind="view").count)() == 40
    assert sum(batches) == 40 and len(batches) < 40, batches  # grouped: fewer INSERTs than requests


async def test_the_beacon_rate_limits_and_deduplicates_like_the_view(settings):
    settings.CANDOR_RATE_PER_VISITOR = "5/m"
    product = await sync_to_async(ProductFactory)()
    statuses = [(await via_beacon(_event(product)))[0] for _ in range(8)]
    assert statuses == [202] * 5 + [429] * 3
    # One visitor viewing one product: one view row, whatever the repeats.
    assert await sync_to_async(Event.objects.filter(kind="view").count)() == 1
    status, _, headers = await via_beacon(_event(product))
    assert status == 429 and int(headers["retry-after"]) >= 1
    # Refusals are counted with the next batch, a moment after the answer.
    for _ in range(50):
        counted = await sync_to_async(
            lambda: sum(IngestRefusal.objects.filter(code="rate_limited").values_list("count", flat=True))
        )()
        if counted == 4:
            break
        await asyncio.sleep(0.05)
    assert counted == 4


async def test_a_ledger_outage_is_503_with_retry_after_and_records_nothing(monkeypatch):
    product = await sync_to_async(ProductFactory)()

    def down(events):
        raise OperationalError("the database is down")

    monkeypatch.setattr(beacon, "browser_events_record", down)
    status, body, headers = await via_beacon(_event(product))
    assert status == 503 and body["error"]["code"] == "unavailable" and headers["retry-after"] == "5"
    assert not await sync_to_async(Event.objects.exists)()


async def test_other_paths_and_a_bad_host_still_go_to_django():
    status, _, _ = await via_beacon(b"", method="GET", host="evil.example", **{"content-type": None})
    assert status == 400  # Django's DisallowedHost answer
    comm = HttpCommunicator(application, "GET", "/api/v1/schema", headers=[(b"host", b"127.0.0.1")])
    assert (await comm.get_response(timeout=5))["status"] == 200


async def test_plain_http_under_ssl_redirect_is_left_to_django(settings):
    """Django's SecurityMiddleware redirects it (its setting is read when the process starts, so
    this checks the hand-over, and `_needs_https` itself)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert beacon._needs_https({"scheme": "http"}, {})
    assert not beacon._needs_https({"scheme": "https"}, {})
    assert not beacon._needs_https({"scheme": "http"}, {"x-forwarded-proto": "https"})
    handed = []

    async def django(scope, receive, send):
        handed.append(scope["path"])

    route = beacon.EventBeacon(django)
    await route(
        {"type": "http", "path": "/api/v1/events", "scheme": "http", "headers": [(b"host", b"127.0.0.1")]},
        None,
        None,
    )
    assert handed == ["/api/v1/events"]
    settings.SECURE_SSL_REDIRECT = False
    assert not beacon._needs_https({"scheme": "http"}, {})
