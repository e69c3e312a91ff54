"""`POST /api/v1/server/events` (SPEC 5): signatures, idempotency, refunds, durability."""

import datetime as dt
import json
import time

import pytest
from django.db import DatabaseError
from django.utils import timezone

from notifications.models import Event, IngestRefusal, Product, SiteSecret
from notifications.services import site_secret_rotate
from notifications.signing import signature_header_make
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def product():
    return ProductFactory()


def secret_of(site):
    return SiteSecret.objects.filter(site=site, retired_at__isnull=True).first().secret


def purchase(product, **over):
    return {
        "key": product.site.public_key,
        "type": "purchase",
        "event_id": "evt-1",
        "order_id": "order-1",
        "occurred_at": (timezone.now() - dt.timedelta(minutes=8)).isoformat(),
        "items": [{"product": product.sku, "quantity": 2}],
        **over,
    }


def send(client, payload, *, secret=None, site=None, header=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    if header is None:
        header = signature_header_make(secret=secret or secret_of(site), body=body)
    return client.post(
        "/api/v1/server/events", body, content_type="application/json", HTTP_CANDOR_SIGNATURE=header
    )


def test_a_signed_purchase_is_recorded_verified(client, product):
    response = send(client, purchase(product), site=product.site)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": True, "duplicate": False, "refused_items": []}
    event = Event.objects.get()
    assert (event.kind, event.verified, event.order_id, event.quantity, event.product) == (
        "purchase",
        True,
        "order-1",
        2,
        product,
    )
    assert abs((timezone.now() - dt.timedelta(minutes=8) - event.occurred_at).total_seconds()) < 5


def test_a_repeat_is_a_duplicate_and_counts_once(client, product):
    payload = purchase(product)
    send(client, payload, site=product.site)
    again = send(client, payload, site=product.site)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    # The same order under a new event id is still one order.
    third = send(client, purchase(product, event_id="evt-2"), site=product.site)
    assert third.status_code == 200 and third.json()["duplicate"] is True
    assert Event.objects.count() == 1


def test_the_same_event_id_with_another_body_is_409(client, product):
    send(client, purchase(product), site=product.site)
    response = send(client, purchase(product, order_id="order-2"), site=product.site)
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    assert Event.objects.count() == 1


def test_idempotency_keys_are_per_site(client, product):
    other = ProductFactory()
    send(client, purchase(product), site=product.site)
    response = send(client, purchase(other), site=other.site)
    assert response.status_code == 202 and not response.json()["duplicate"]
    assert Event.objects.count() == 2


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "garbled",
        "wrong_secret",
        "stale",
        "future",
        "tampered",
        "huge",
        "other_sites_secret",
        "no_key",
    ],
)
def test_every_signature_failure_is_401_and_changes_nothing(client, product, case):
    payload = purchase(product)
    body = json.dumps(payload).encode()
    secret = secret_of(product.site)
    header = signature_header_make(secret=secret, body=body)
    raw = body
    if case == "missing":
        header = ""
    elif case == "garbled":
        header = "v1=abc;t=nope"
    elif case == "wrong_secret":
        header = signature_header_make(secret="sk_wrong", body=body)
    elif case == "stale":
        header = signature_header_make(secret=secret, body=body, t=int(time.time()) - 301)
    elif case == "future":
        header = signature_header_make(secret=secret, body=body, t=int(time.time()) + 301)
    elif case == "tampered":
        raw = body.replace(b'"quantity": 2', b'"quantity": 200')
    elif case == "huge":
        header = header + ",v1=" + "a" * 5000
    elif case == "other_sites_secret":
        other = ProductFactory()
        header = signature_header_make(secret=secret_of(other.site), body=body)
    elif case == "no_key":
        raw = json.dumps({**payload, "key": None}).encode()
        header = signature_header_make(secret=secret, body=raw)
    response = send(client, None, header=header, raw=raw)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    assert Event.objects.count() == 0
    assert IngestRefusal.objects.get(code="bad_signature").count == 1


def test_both_secrets_verify_during_rotation_and_the_old_stops_after_retire(client, product):
    from notifications.services import site_secret_retire

    old = secret_of(product.site)
    new = site_secret_rotate(site=product.site)
    assert send(client, purchase(product), secret=old).status_code == 202
    assert send(client, purchase(product, event_id="e2", order_id="o2"), secret=new).status_code == 202
    site_secret_retire(site=product.site)
    assert send(client, purchase(product, event_id="e3", order_id="o3"), secret=old).status_code == 401
    assert send(client, purchase(product, event_id="e4", order_id="o4"), secret=new).status_code == 202


def test_several_v1_values_are_accepted(client, product):
    body = json.dumps(purchase(product)).encode()
    good = signature_header_make(secret=secret_of(product.site), body=body)
    t, v1 = good.split(",")
    response = send(client, None, header=f"{t},v1={'0' * 64},{v1}", raw=body)
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"occurred_at": (timezone.now() + dt.timedelta(minutes=5)).isoformat()}, "occurred_at"),
        ({"occurred_at": (timezone.now() - dt.timedelta(days=91)).isoformat()}, "occurred_at"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"items": []}, "items"),
        ({"items": [{"product": "x", "quantity": 0}]}, "items"),
        ({"event_id": ""}, "event_id"),
        ({"type": "gift"}, "type"),
    ],
)
def test_signed_but_unacceptable_is_422(client, product, over, field):
    response = send(client, purchase(product, **over), site=product.site)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert Event.objects.count() == 0


def test_unknown_skus_are_refused_items_never_guessed(client, product):
    payload = purchase(
        product, items=[{"product": product.sku, "quantity": 1}, {"product": "ghost", "quantity": 1}]
    )
    response = send(client, payload, site=product.site)
    assert response.status_code == 202 and response.json()["refused_items"] == ["ghost"]
    assert Event.objects.count() == 1
    assert not Product.objects.filter(sku="ghost").exists()
    assert IngestRefusal.objects.get(endpoint="server_events", code="unknown_product").count == 1


def test_refund_and_cancel_are_recorded_even_before_the_purchase(client, product):
    refund = {k: v for k, v in purchase(product, type="refund", event_id="r1").items() if k != "items"}
    assert send(client, refund, site=product.site).status_code == 202
    assert send(client, purchase(product), site=product.site).status_code == 202
    kinds = sorted(Event.objects.values_list("kind", "order_id"))
    assert kinds == [("purchase", "order-1"), ("refund", "order-1")]


def test_test_orders_are_stored_and_flagged(client, product):
    assert send(client, purchase(product, test=True), site=product.site).status_code == 202
    assert Event.objects.get().is_test


def test_catalog_upsert(client, product):
    payload = {
        "key": product.site.public_key,
        "type": "catalog",
        "event_id": "cat-1",
        "items": [{"sku": "new-1", "name": "New", "category": "Tools", "category_kind": "utilitarian"}],
    }
    response = send(client, payload, site=product.site)
    assert response.status_code == 202 and response.json()["created"] == 1
    assert Product.objects.filter(site=product.site, sku="new-1").exists()


def test_database_unavailable_is_503_never_2xx(client, product, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr("notifications.beacon.signed_site_verify", broken)
    response = send(client, purchase(product), site=product.site)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "unavailable"


def test_a_replayed_request_counts_once_and_a_late_replay_is_401(client, product):
    body = json.dumps(purchase(product)).encode()
    header = signature_header_make(secret=secret_of(product.site), body=body)
    first = send(client, None, header=header, raw=body)
    replay = send(client, None, header=header, raw=body)
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json()["duplicate"] is True
    # The same capture replayed after the 300 s tolerance no longer verifies.
    late = signature_header_make(secret=secret_of(product.site), body=body, t=int(time.time()) - 400)
    assert send(client, None, header=late, raw=body).status_code == 401
    assert Event.objects.filter(kind="purchase").count() == 1
