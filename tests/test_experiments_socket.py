"""Experiments over the real socket path, on both real-time layers (SPEC 4): every page view is
logged with its arm and what the policy did, variants really apply their policy, and a purchase
carrying the shopper's token lands in that shopper's arm."""

import json
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client
from django.utils import timezone

from notifications.experiments import HOLDOUT, experiment_results
from notifications.models import Conversion, Exposure, PolicyConfig, PolicyVariant, Site
from notifications.services import policy_save
from tests.factories import DEMO_ORIGIN, ProductFactory, site_policy_set
from tests.test_api_server_events import purchase, send
from tests.test_widget_socket import communicator, open_visible, settle, visitor

pytestmark = pytest.mark.django_db(transaction=True)


def target_of(product):
    return {"key": product.site.public_key, "sku": product.sku, "product_id": product.pk}


async def _open(product, n, *, first=0):
    comms = [await open_visible(target_of(product), visitor(first + i)) for i in range(n)]
    return comms, [await settle(comm, timeout=2.0) for comm in comms]


async def _close(comms):
    for comm in comms:
        await comm.disconnect()


def _exposures():
    return list(
        Exposure.objects.order_by("id").values("arm", "segment", "outcome", "reason", "toasts", "intensity")
    )


exposures = sync_to_async(_exposures)


async def test_every_page_view_is_logged_with_what_it_was_shown(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0)
    comms, seen = await _open(product, 4)
    assert all(messages[-1]["claim"]["displayed"] == "3" for messages in seen)
    await _close(comms)
    rows = await exposures()
    assert len(rows) == 4
    for row in rows:
        assert row == {
            "arm": "Everyone policy",
            "segment": "Everyone",
            "outcome": "shown",
            "reason": "",
            "toasts": 1,
            "intensity": 3,
        }


async def test_a_page_view_shown_nothing_is_logged_with_the_reason(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0)
    comms, seen = await _open(product, 2)  # each sees one other: below the minimum of 3
    assert seen == [[], []]
    await _close(comms)
    assert [(r["outcome"], r["reason"]) for r in await exposures()] == [("refused", "BELOW_MIN_COUNT")] * 2


async def test_the_site_holdout_sees_nothing_and_is_logged_as_held_out(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0)
    await sync_to_async(Site.objects.filter(pk=product.site.pk).update)(holdout_pct=100)
    comms, seen = await _open(product, 5)
    assert seen == [[]] * 5
    await _close(comms)
    assert [(r["arm"], r["outcome"]) for r in await exposures()] == [(HOLDOUT, "held_out")] * 5


async def test_a_variant_s_policy_is_the_one_applied(realtime_mode):
    product = await sync_to_async(ProductFactory)()

    def configure():
        base = site_policy_set(product.site, min_gap_s=0, cap_viewing_now=50)
        variant = policy_save(
            policy=PolicyConfig(site=product.site, name="cap 3", cap_viewing_now=3, min_gap_s=0)
        )
        PolicyVariant.objects.create(segment=base.segments.get(), policy=variant, share_pct=100)

    await sync_to_async(configure)()
    comms, seen = await _open(product, 5)
    assert all(messages[-1]["claim"]["displayed"] == "3+" for messages in seen), seen
    await _close(comms)
    rows = await exposures()
    assert {(r["arm"], r["outcome"], r["intensity"]) for r in rows} == {("cap 3", "shown", 3)}


async def test_a_bot_s_page_view_is_in_no_experiment(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0)
    comm = await open_visible(target_of(product), "Googlebot/2.1 (+http://www.google.com/bot.html)")
    await settle(comm, timeout=0.5)
    await comm.disconnect()
    assert await exposures() == []


def _buy_with_token(product, ua, order):
    client = Client(REMOTE_ADDR="10.1.2.3")
    try:
        token = client.post(
            "/api/v1/visitor-token",
            json.dumps({"key": product.site.public_key}),
            content_type="application/json",
            HTTP_ORIGIN=DEMO_ORIGIN,
            HTTP_USER_AGENT=ua,
        ).json()["token"]
        # Bought now, after the page views (a purchase before a visitor's first exposure is not
        # that exposure's conversion).
        payload = purchase(
            product,
            visitor_token=token,
            order_id=order,
            event_id=f"e-{order}",
            occurred_at=timezone.now().isoformat(),
        )
        return send(client, payload, site=product.site).json()
    finally:
        connections.close_all()


async def test_a_purchase_with_the_shopper_s_token_converts_in_the_shopper_s_arm(realtime_mode):
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0)
    await sync_to_async(Site.objects.filter(pk=product.site.pk).update)(holdout_pct=50)
    comms = []
    for n in range(8):
        comm = communicator(target_of(product), visitor(n))
        comm.scope["client"] = ("10.1.2.3", 40000 + n)  # as the HTTP client below: one shopper, one address
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "page", "product": product.sku, "visible": True})
        comms.append(comm)
    for comm in comms:
        await settle(comm, timeout=1.0)
    await _close(comms)
    buy = sync_to_async(_buy_with_token, thread_sensitive=False)
    assert (await buy(product, visitor(0), "order-a"))["attribution"] == "recorded"
    assert (await buy(product, visitor(1), "order-b"))["attribution"] == "recorded"

    def check():
        results = experiment_results(site=Site.objects.get(pk=product.site.pk))
        counted = {a.arm: (a.counts.visitors, a.counts.conversions) for a in results.arms}
        buyers = Counter(
            Exposure.objects.get(visitor_hash=c.visitor_hash).arm for c in Conversion.objects.all()
        )
        return counted, buyers

    counted, buyers = await sync_to_async(check)()
    assert sum(visitors for visitors, _ in counted.values()) == 8
    assert {arm: conversions for arm, (_, conversions) in counted.items() if conversions} == dict(buyers)
    assert sum(buyers.values()) == 2
