"""`candor_order export|erase` (issue 9): everything Candor holds for one order, and erasure
that unlinks the order while every count, claim and audit stays true."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from notifications import audit, metrics
from notifications.identity import visitor_token_make
from notifications.models import Conversion, Event, ServerDelivery
from notifications.orders import ORDER_TABLES, order_export, order_tombstone
from tests.factories import ProductFactory, SiteFactory
from tests.test_api_server_events import purchase, send
from tests.test_api_webhooks import SHOPIFY_SECRET, shopify, shopify_order
from tests.test_tasks import _log

pytestmark = pytest.mark.django_db

EMAIL = "jon@example.com"


@pytest.fixture
def shop():
    site = SiteFactory(shopify_secret=SHOPIFY_SECRET)
    tee = ProductFactory(site=site, sku="IPOD2008GREEN")
    mug = ProductFactory(site=site, sku="mug")
    return site, tee, mug


def order_cli(action, site, order_id):
    out = StringIO()
    call_command("candor_order", action, "--key", site.public_key, "--order-id", order_id, stdout=out)
    return json.loads(out.getvalue())


def _orders(client, site, tee, mug):
    """Three orders of one site: two signed (one to erase, one to keep) and one Shopify order
    with the shopper's email and name in its payload; plus a browser event (no order)."""
    minutes_ago = (timezone.now() - dt.timedelta(minutes=8)).isoformat()
    two_items = [{"product": tee.sku, "quantity": 1}, {"product": mug.sku, "quantity": 2}]
    for n, order_id in enumerate(["A-1001", "B-2002", "C-3003"]):
        payload = purchase(
            tee, event_id=f"evt-{n}", order_id=order_id, occurred_at=minutes_ago, items=two_items
        )
        assert send(client, payload, site=site).status_code == 202
    assert shopify(client, site, "orders/paid", shopify_order(), delivery="d-1").status_code == 200
    Event.objects.create(
        site=site,
        product=tee,
        kind="add_to_cart",
        source="browser",
        occurred_at=timezone.now(),
        visitor_hash="v1",
    )


def test_export_prints_everything_held_for_the_order(client, shop):
    site, tee, mug = shop
    _orders(client, site, tee, mug)
    exported = order_cli("export", site, "A-1001")
    assert exported["order_id"] == "A-1001" and exported["site"] == site.public_key
    events = exported["tables"]["notifications.Event"]
    assert sorted((e["kind"], e["product_id"], e["quantity"]) for e in events) == sorted(
        [("purchase", tee.pk, 1), ("purchase", mug.pk, 2)]
    )
    assert {e["order_id"] for e in events} == {"A-1001"}
    (delivery,) = exported["tables"]["notifications.ServerDelivery"]
    assert delivery["idempotency_key"] == "evt-0"
    # A webhook's order is found through the order id its delivery's response names.
    shopify_id = str(shopify_order()["id"])
    exported = order_export(site=site, order_id=shopify_id)
    assert len(exported["tables"]["notifications.Event"]) == 1  # its other line is not in the catalog
    assert [d["response"]["order_id"] for d in exported["tables"]["notifications.ServerDelivery"]] == [
        shopify_id
    ]
    # Every order-linked table appears, also when empty.
    assert set(order_export(site=site, order_id="nope")["tables"]) == {
        t.model._meta.label for t in ORDER_TABLES
    }


def test_erase_unlinks_the_order_and_keeps_counts_claims_and_the_audit_true(client, shop):
    site, tee, mug = shop
    _orders(client, site, tee, mug)
    now = timezone.now()
    # Claims made (and logged) before the erasure, not yet audited.
    counted = _log(tee, metrics.purchases_in_window(product_id=tee.pk, at=now)[0])
    recent = _log(tee, metrics.recent_purchase(product_id=tee.pk, at=now))
    assert counted.claim["displayed"] == "4" and recent is not None
    before = {p.pk: metrics.purchases_in_window(product_id=p.pk, at=now)[0].true_value for p in (tee, mug)}

    result = order_cli("erase", site, "A-1001")
    tombstone = order_tombstone(site=site, order_id="A-1001")
    assert result["erased"] == {
        "notifications.Event": 2,
        "notifications.ServerDelivery": 1,
        "notifications.Conversion": 0,
    }
    assert result["tombstone"] == tombstone and "A-1001" not in json.dumps(result)

    # Counts are unchanged, and the audit of the claims made before still passes.
    after = {p.pk: metrics.purchases_in_window(product_id=p.pk, at=now)[0].true_value for p in (tee, mug)}
    assert after == before
    assert audit.claims_audit() == audit.AuditResult(checked=2, alarms=0)

    # The order can no longer be found or linked: nothing holds its id or its event id any more.
    exported = order_cli("export", site, "A-1001")
    assert all(rows == [] for rows in exported["tables"].values())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM notifications_event "
            "WHERE order_id = 'A-1001' OR idempotency_key LIKE 'evt-0:%%'"
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM notifications_serverdelivery WHERE idempotency_key = 'evt-0'")
        assert cursor.fetchone()[0] == 0
    assert Event.objects.filter(order_id=tombstone).count() == 2
    assert ServerDelivery.objects.get(idempotency_key__startswith=tombstone).response == {"erased": True}
    # The other orders are untouched; erasing twice changes nothing more.
    assert Event.objects.filter(order_id="B-2002").count() == 2
    assert order_cli("erase", site, "A-1001")["erased"] == {
        "notifications.Event": 0,
        "notifications.ServerDelivery": 0,
        "notifications.Conversion": 0,
    }


def test_news_of_an_erased_order_still_withdraws_and_never_counts_it_twice(client, shop):
    site, tee, mug = shop
    _orders(client, site, tee, mug)
    order_cli("erase", site, "A-1001")
    now = timezone.now()
    assert metrics.purchases_in_window(product_id=tee.pk, at=now)[0].true_value == 4
    # The store retries the purchase under a new event id: still the same order, counted once.
    retry = purchase(tee, event_id="evt-retry", order_id="A-1001")
    response = send(client, retry, site=site)
    assert response.status_code == 200 and response.json()["duplicate"] is True
    # A late refund of the erased order still withdraws it.
    refund = {
        "key": site.public_key,
        "type": "refund",
        "event_id": "evt-r",
        "order_id": "A-1001",
        "occurred_at": now.isoformat(),
    }
    assert send(client, refund, site=site).status_code == 202
    assert metrics.purchases_in_window(product_id=tee.pk, at=timezone.now())[0].true_value == 3
    assert not Event.objects.filter(order_id="A-1001").exists()
    # The same for a platform's order: erased, then cancelled by a later delivery.
    shopify_id = str(shopify_order()["id"])
    order_cli("erase", site, shopify_id)
    cancelled = shopify_order(cancelled_at=timezone.now().isoformat(), financial_status="voided")
    assert shopify(client, site, "orders/cancelled", cancelled, delivery="d-2").status_code == 200
    assert metrics.purchases_in_window(product_id=tee.pk, at=timezone.now())[0].true_value == 2
    assert not Event.objects.filter(order_id=shopify_id).exists()
    assert EMAIL not in json.dumps(list(ServerDelivery.objects.values_list("response", flat=True)))


def test_the_command_refuses_an_unknown_key():
    with pytest.raises(CommandError, match="no site"):
        order_cli("export", SiteFactory.build(public_key="pk_nope"), "1")


def test_an_order_s_experiment_attribution_is_exported_and_erased_with_it(client, shop):
    site, tee, _ = shop
    token = visitor_token_make(site_id=site.pk, visitor_hash="c" * 32)
    payload = purchase(tee, event_id="evt-t", order_id="T-1", visitor_token=token)
    assert send(client, payload, site=site).json()["attribution"] == "recorded"
    exported = order_export(site=site, order_id="T-1")
    (conversion,) = exported["tables"]["notifications.Conversion"]
    assert conversion["visitor_hash"] == "c" * 32
    result = order_cli("erase", site, "T-1")
    assert result["erased"]["notifications.Conversion"] == 1
    row = Conversion.objects.get()
    assert row.order_id == order_tombstone(site=site, order_id="T-1") and row.visitor_hash == ""
