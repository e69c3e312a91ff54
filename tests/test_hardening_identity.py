"""Issue 9, identity end to end: a spoofed X-Forwarded-For from an untrusted peer never makes
one shopper many (over HTTP and over the socket), a trusted proxy's does tell shoppers apart,
and one shopper on two sites gets unrelated hashes."""

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application
from notifications.models import Event
from tests.factories import DEMO_ORIGIN, ProductFactory, SiteFactory, site_policy_set
from tests.test_api_events import UA, good, post
from tests.test_widget_socket import settle

SPOOFED = ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"]


@pytest.mark.django_db
def test_a_spoofed_forwarded_for_is_one_visitor_over_http(client, settings):
    settings.CANDOR_TRUSTED_PROXIES = []  # the test client's peer (127.0.0.1) is not a proxy of ours
    product = ProductFactory()
    for ip in SPOOFED:
        assert post(client, good(product, type="add_to_cart"), HTTP_X_FORWARDED_FOR=ip).status_code == 202
    assert Event.objects.filter(product=product).values("visitor_hash").distinct().count() == 1
    # Behind a trusted proxy the same header is the client's address: five shoppers.
    settings.CANDOR_TRUSTED_PROXIES = ["127.0.0.1"]
    other = ProductFactory(site=product.site)
    for ip in SPOOFED:
        assert post(client, good(other, type="add_to_cart"), HTTP_X_FORWARDED_FOR=ip).status_code == 202
    assert Event.objects.filter(product=other).values("visitor_hash").distinct().count() == 5


@pytest.mark.django_db
def test_one_shopper_on_two_sites_has_unrelated_hashes(client):
    mine = ProductFactory()
    theirs = ProductFactory(site=SiteFactory())
    for product in (mine, theirs):
        assert post(client, good(product, type="add_to_cart"), ua=UA).status_code == 202
    hashes = dict(Event.objects.values_list("site_id", "visitor_hash"))
    assert len(set(hashes.values())) == 2


async def _socket(product, *, peer: str, forwarded: str):
    comm = WebsocketCommunicator(
        application,
        f"/ws/v1/widget?key={product.site.public_key}&product={product.sku}",
        headers=[
            (b"origin", DEMO_ORIGIN.encode()),
            (b"user-agent", UA.encode()),
            (b"x-forwarded-for", forwarded.encode()),
        ],
    )
    comm.scope["client"] = (peer, 50000)
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "page", "product": product.sku, "visible": True})
    return comm


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("trusted", "viewers_seen"), [(False, None), (True, "3")])
async def test_a_spoofed_forwarded_for_is_one_viewer_on_the_socket(settings, trusted, viewers_seen):
    settings.CANDOR_REDIS_URL = ""
    settings.CANDOR_UPDATE_INTERVAL_MS = 50
    settings.CANDOR_TRUSTED_PROXIES = ["198.51.100.1"] if trusted else []
    product = await _product()
    comms = [await _socket(product, peer="198.51.100.1", forwarded=ip) for ip in SPOOFED[:4]]
    try:
        messages = await settle(comms[0], timeout=1.5)
        shown = messages[-1]["claim"]["displayed"] if messages else None
        # Untrusted: one visitor in four tabs, so nobody "else" is viewing; trusted: four shoppers.
        assert shown == viewers_seen, messages
    finally:
        for comm in comms:
            await comm.disconnect()


async def _product():
    from channels.db import database_sync_to_async

    def make():
        product = ProductFactory()
        site_policy_set(product.site, min_gap_s=0, per_page_view=10, per_session=100)
        return product

    return await database_sync_to_async(make)()
