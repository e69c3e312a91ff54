"""Property: no sequence of refused requests, across the three ingestion routes, changes any count
(the ledger, the catalog, the accepted deliveries) — each is refused with a JSON error."""

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.models import Event, Product, ServerDelivery
from notifications.signing import signature_header_make
from tests.factories import DEMO_ORIGIN, ProductFactory

pytestmark = pytest.mark.django_db

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture
def shop(client):
    product = ProductFactory(site__shopify_secret="shp", site__woocommerce_secret="woo")
    secret = product.site.secrets.get().secret
    # One accepted purchase, so that a conflicting reuse of its event_id is possible.
    body = json.dumps(_purchase(product, "evt-accepted", "order-accepted")).encode()
    response = client.post(
        "/api/v1/server/events",
        body,
        content_type="application/json",
        HTTP_CANDOR_SIGNATURE=signature_header_make(secret=secret, body=body),
    )
    assert response.status_code == 202
    return product, secret


def _purchase(product, event_id, order_id, **over):
    return {
        "key": product.site.public_key,
        "type": "purchase",
        "event_id": event_id,
        "order_id": order_id,
        "occurred_at": (timezone.now() - dt.timedelta(minutes=3)).isoformat(),
        "items": [{"product": product.sku, "quantity": 1}],
        **over,
    }


def _b64(secret, body):
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _send(client, product, secret, kind, n):
    site = product.site
    browser = {"HTTP_ORIGIN": DEMO_ORIGIN, "HTTP_USER_AGENT": f"{UA} v/{n}"}
    event = {"key": site.public_key, "type": "view", "product": product.sku}
    if kind == "browser_purchase":
        return client.post(
            "/api/v1/events", {**event, "type": "purchase"}, content_type="application/json", **browser
        )
    if kind == "browser_foreign_origin":
        return client.post(
            "/api/v1/events", event, content_type="application/json", HTTP_ORIGIN="https://evil.example"
        )
    if kind == "browser_unknown_sku":
        body = {**event, "product": f"nope-{n}"}
        return client.post("/api/v1/events", body, content_type="application/json", **browser)
    if kind == "browser_text_plain":
        return client.post("/api/v1/events", json.dumps(event), content_type="text/plain", **browser)
    body = json.dumps(_purchase(product, f"evt-{n}", f"order-{n}")).encode()
    header = signature_header_make(secret=secret, body=body)
    if kind == "server_wrong_secret":
        header = signature_header_make(secret="sk_wrong", body=body)
    elif kind == "server_stale":
        header = signature_header_make(secret=secret, body=body, t=int(timezone.now().timestamp()) - 301)
    elif kind == "server_tampered":
        body = body.replace(b'"quantity": 1', b'"quantity": 9')
    elif kind == "server_future":
        future = (timezone.now() + dt.timedelta(hours=1)).isoformat()
        body = json.dumps(_purchase(product, f"evt-{n}", f"order-{n}", occurred_at=future)).encode()
        header = signature_header_make(secret=secret, body=body)
    elif kind == "server_conflict":
        body = json.dumps(_purchase(product, "evt-accepted", f"order-{n}")).encode()
        header = signature_header_make(secret=secret, body=body)
    elif kind == "server_catalog_bad":
        payload = {"key": site.public_key, "type": "catalog", "event_id": f"cat-{n}", "items": [{"sku": ""}]}
        body = json.dumps(payload).encode()
        header = signature_header_make(secret=secret, body=body)
    if kind.startswith("server_"):
        return client.post(
            "/api/v1/server/events", body, content_type="application/json", HTTP_CANDOR_SIGNATURE=header
        )
    order = json.dumps({"id": 1000 + n, "financial_status": "paid", "line_items": [{"sku": product.sku}]})
    if kind == "shopify_bad_hmac":
        return client.post(
            f"/api/v1/webhooks/shopify/{site.public_key}",
            order,
            content_type="application/json",
            HTTP_X_SHOPIFY_TOPIC="orders/paid",
            HTTP_X_SHOPIFY_HMAC_SHA256=_b64("not-the-secret", order.encode()),
        )
    if kind == "woo_no_id":
        body = json.dumps({"status": "processing", "line_items": []})
        return client.post(
            f"/api/v1/webhooks/woocommerce/{site.public_key}",
            body,
            content_type="application/json",
            HTTP_X_WC_WEBHOOK_TOPIC="order.created",
            HTTP_X_WC_WEBHOOK_SIGNATURE=_b64("woo", body.encode()),
        )
    raise AssertionError(kind)


KINDS = [
    "browser_purchase",
    "browser_foreign_origin",
    "browser_unknown_sku",
    "browser_text_plain",
    "server_wrong_secret",
    "server_stale",
    "server_tampered",
    "server_future",
    "server_conflict",
    "server_catalog_bad",
    "shopify_bad_hmac",
    "woo_no_id",
]


def _counts():
    return (Event.objects.count(), Product.objects.count(), ServerDelivery.objects.count())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(st.sampled_from(KINDS), min_size=1, max_size=12))
def test_no_sequence_of_refused_requests_changes_any_count(client, shop, sequence):
    product, secret = shop
    before = _counts()
    for n, kind in enumerate(sequence):
        response = _send(client, product, secret, kind, n)
        assert 400 <= response.status_code < 500, (kind, response.status_code, response.content)
        assert set(response.json()["error"]) >= {"code", "message"}
        assert _counts() == before, kind
