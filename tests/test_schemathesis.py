"""Property-based API tests from `/api/v1/schema` (schemathesis): no input, valid or not, gets a 5xx,
and every answer matches the documented status codes, content type and body schema.

Half of the generated bodies name a real site and product, and half of those server events are
signed with the site's secret, so the generator gets past the key and signature checks into the
ledger code, not only into the 401/404 paths. Bounded by `max_examples` to stay quick in CI.
"""

import base64
import hashlib
import hmac
import json
import zlib

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from notifications.signing import signature_header_make
from tests.factories import DEMO_ORIGIN, ProductFactory

schema = schemathesis.openapi.from_wsgi("/api/v1/schema", get_wsgi_application())

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@pytest.fixture(autouse=True)
def _connections_kept():
    """As Django's test client does: a raw WSGI handler closes the connection after each request,
    which would end the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def product(db):
    return ProductFactory(site__shopify_secret="shp-secret", site__woocommerce_secret="woo-secret")


def _base64_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _steer(case, product) -> None:
    """Point about half of the cases at a real site, product and signature (by a stable hash of the
    generated body, so a failing example replays the same way)."""
    body = case.body
    if not isinstance(body, dict):
        return
    seed = zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode())
    if seed % 2:
        return
    site = product.site
    if "key" in body:
        body["key"] = site.public_key
    if "product" in body:
        body["product"] = product.sku
    items = body.get("items")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and "product" in item and seed % 4 == 0:
            item["product"] = product.sku
    if case.path_parameters and "key" in case.path_parameters:
        case.path_parameters["key"] = site.public_key
    headers = case.headers if case.headers is not None else {}
    headers["Origin"] = DEMO_ORIGIN
    raw = json.dumps(body).encode()
    if case.path == "/api/v1/server/events":
        secret = site.secrets.filter(retired_at__isnull=True).first().secret
        headers["Candor-Signature"] = signature_header_make(secret=secret, body=raw)
    elif case.path.startswith("/api/v1/webhooks/shopify/"):
        headers["X-Shopify-Hmac-Sha256"] = _base64_hmac(site.shopify_secret, raw)
        headers["X-Shopify-Topic"] = ("orders/create", "orders/paid", "refunds/create")[seed % 3]
    elif case.path.startswith("/api/v1/webhooks/woocommerce/"):
        headers["X-WC-Webhook-Signature"] = _base64_hmac(site.woocommerce_secret, raw)
        headers["X-WC-Webhook-Topic"] = ("order.created", "order.updated")[seed % 2]
    case.headers = headers


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_answers_5xx_and_matches_its_schema(case, product):
    _steer(case, product)
    from schemathesis import checks as available

    case.call_and_validate(checks=[getattr(available, name) for name in CHECKS])
