"""SPEC 7, "One address, few visitors" and "Sockets cost something": one machine rotating
User-Agents never lifts a count above the honest visitors + CANDOR_VISITORS_PER_ADDRESS, over
the socket (both real-time layers) and through beacons, and holds at most
CANDOR_SOCKETS_PER_ADDRESS sockets, each of which must say its page within the timeout."""

import asyncio
import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifications import metrics
from notifications.identity import address_hash_compute, address_network, salt_cache_clear
from notifications.models import Event
from notifications.presence import Entry, MemoryPresence, _by_visitor, presence_store, site_visitors_now
from tests.factories import ProductFactory, site_policy_set
from tests.test_api_events import good, post
from tests.test_widget_socket import communicator, settle, visitor

pytestmark = pytest.mark.django_db(transaction=True)

ATTACKER = "127.0.9.9"
VIEWING = "viewing_now"


# --- the rule itself -------------------------------------------------------------------------


def test_an_address_is_the_ipv4_address_or_the_ipv6_64():
    assert address_network("203.0.113.7") == "203.0.113.7"
    same_64 = address_network("2001:db8:1:2:aaaa::1")
    assert same_64 == address_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_network("2001:db8:1:3::1") != address_network("2001:db8:1:2::1")
    assert address_network("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_network("") == ""


def test_the_address_hash_is_keyed_per_site_and_never_the_address():
    a = address_hash_compute(site_id=1, ip="203.0.113.7")
    assert a == address_hash_compute(site_id=1, ip="203.0.113.7")
    assert a != address_hash_compute(site_id=2, ip="203.0.113.7")  # no linking across stores
    assert a == address_hash_compute(site_id=1, ip="::ffff:203.0.113.7")
    assert "203" not in a and len(a) == 16
    salt_cache_clear()


def _member(visitor: str, address: str, n: int = 0) -> str:
    return Entry(1, visitor, f"s{n}", address=address).member


@given(
    st.dictionaries(
        st.text("abcdef0123456789", min_size=4, max_size=8),  # visitor hash
        st.sampled_from(["a1", "a2", "a3", ""]),  # its address
        max_size=40,
    ),
    st.integers(1, 4),
)
@hsettings(deadline=None, max_examples=200)
def test_presence_counts_at_most_the_cap_per_address(visitors, cap):
    members = [_member(v, a, n) for n, (v, a) in enumerate(visitors.items())]
    members += [_member(v, a, 99) for v, a in list(visitors.items())[:3]]  # second tabs
    counted = _by_visitor(members, per_address=cap)
    by_address: dict[str, int] = {}
    for a in visitors.values():
        by_address[a] = by_address.get(a, 0) + 1
    assert set(counted) <= set(visitors)
    assert len(counted) == sum(min(cap, n) for n in by_address.values())
    for address in by_address:
        assert sum(1 for v in counted if visitors[v] == address) <= cap


def test_which_visitors_of_an_address_count_does_not_depend_on_order():
    members = [_member(f"v{i:02d}", "same", i) for i in range(10)]
    assert _by_visitor(members, per_address=2) == _by_visitor(list(reversed(members)), per_address=2)


async def test_memory_presence_applies_the_cap(settings):
    settings.CANDOR_VISITORS_PER_ADDRESS = 2
    settings.CANDOR_REDIS_URL = ""
    store = presence_store()
    assert isinstance(store, MemoryPresence)
    for i in range(40):
        await store.show(Entry(7, f"attacker{i:02d}", f"s{i}", 1, address="x"), ttl_s=30)
    for i in range(3):
        await store.show(Entry(7, f"honest{i}", f"h{i}", 1, address=f"home{i}"), ttl_s=30)
    assert len(await store.visitors(7)) == 5
    assert len(site_visitors_now(1)) == 5  # the site-wide count is capped the same way


# --- over the socket: 40 User-Agents from one address --------------------------------------


@pytest.fixture
def target():
    """A product whose policy lets every number through at once: the count is what is read."""
    item = ProductFactory()
    site_policy_set(item.site, min_gap_s=0, per_page_view=10, per_session=100)
    return {"key": item.site.public_key, "sku": item.sku, "product_id": item.pk}


def _viewing(messages) -> str | None:
    shown = [m for m in messages if m.get("type") in ("notification", "update")]
    shown = [m for m in shown if m["claim"]["metric"] == VIEWING]
    return shown[-1]["claim"]["displayed"] if shown else None


async def test_forty_user_agents_from_one_address_add_at_most_two_viewers(realtime_mode, target, settings):
    settings.CANDOR_SOCKETS_PER_ADDRESS = 100  # the socket limit has its own test: here, the count
    honest = []
    for i in range(4):
        comm = communicator(target, visitor(i))
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "page", "product": target["sku"], "visible": True})
        honest.append(comm)
    assert _viewing(await settle(honest[0])) == "3"
    attackers = []
    for i in range(40):
        comm = communicator(target, f"{visitor(1000 + i)} rotating/{i}", client=ATTACKER)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "page", "product": target["sku"], "visible": True})
        attackers.append(comm)
    await asyncio.sleep(0.5)
    # 3 other honest shoppers + at most 2 for the attacker's address.
    assert _viewing(await settle(honest[0])) == "5"
    for comm in attackers:
        seen = await settle(comm, timeout=0.2, quiet_s=0.05)
        viewing = [m["claim"]["displayed"] for m in seen if m.get("claim", {}).get("metric") == VIEWING]
        numbers = [int(displayed.rstrip("+")) for displayed in viewing]
        assert all(n <= 6 for n in numbers)
    for comm in honest + attackers:
        await comm.disconnect()


async def test_the_per_address_cap_is_a_setting(realtime_mode, target, settings):
    settings.CANDOR_VISITORS_PER_ADDRESS = 1
    comms = []
    for i in range(4):
        comm = communicator(target, visitor(i), client="127.0.8.8")  # four shoppers behind one NAT
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "page", "product": target["sku"], "visible": True})
        comms.append(comm)
    honest = communicator(target, visitor(99))
    assert (await honest.connect())[0]
    await honest.send_json_to({"type": "page", "product": target["sku"], "visible": True})
    # Undercounted (1 of the 4 behind the NAT), never overcounted: below the minimum of 3.
    assert _viewing(await settle(honest, timeout=1.0)) is None
    for comm in [*comms, honest]:
        await comm.disconnect()


# --- through beacons: 40 add_to_cart with rotating User-Agents -------------------------------


def test_forty_beacons_from_one_address_add_at_most_two_shoppers(client, settings):
    settings.CANDOR_RATE_PER_IP = "100000/m"
    product = ProductFactory()
    for i in range(3):
        response = post(
            client, good(product, type="add_to_cart"), ua=visitor(i), REMOTE_ADDR=f"198.51.100.{i + 1}"
        )
        assert response.status_code == 202
    for i in range(40):
        ua = f"{visitor(500 + i)} r/{i}"
        response = post(client, good(product, type="add_to_cart"), ua=ua, REMOTE_ADDR=ATTACKER)
        assert response.status_code == 202  # accepted and recorded: nothing accepted is lost
    assert Event.objects.filter(kind="add_to_cart").count() == 43
    assert Event.objects.filter(kind="add_to_cart").values("address_hash").distinct().count() == 4
    now = dt.datetime.now(dt.UTC)
    metric = metrics.add_to_cart_in_window(product_id=product.pk, at=now)
    assert metric.true_value == 3 + 2
    assert metric.evidence["visitors_per_address"] == 2


def test_an_ipv6_attacker_rotating_within_its_64_is_one_address(client, settings):
    settings.CANDOR_RATE_PER_IP = "100000/m"
    product = ProductFactory()
    for i in range(30):
        address = f"2001:db8:7:7::{i + 1:x}"
        post(client, good(product, type="add_to_cart"), ua=f"{visitor(i)} v6", REMOTE_ADDR=address)
    now = dt.datetime.now(dt.UTC)
    assert metrics.add_to_cart_in_window(product_id=product.pk, at=now).true_value == 2


def test_the_stored_address_is_a_hash_never_the_address(client):
    product = ProductFactory()
    post(client, good(product, type="add_to_cart"), REMOTE_ADDR="198.51.100.77")
    event = Event.objects.get()
    assert event.address_hash and "198.51.100.77" not in str(event.__dict__)


# --- sockets cost something ---------------------------------------------------------------


async def test_sockets_past_the_per_address_limit_are_refused_429(realtime_mode, target, settings):
    settings.CANDOR_SOCKETS_PER_ADDRESS = 3
    held = []
    for i in range(3):
        comm = communicator(target, visitor(i), client=ATTACKER)
        comm.scope["extensions"] = {"websocket.http.response": {}}
        assert (await comm.connect())[0]
        held.append(comm)
    extra = communicator(target, visitor(9), client=ATTACKER)
    extra.scope["extensions"] = {"websocket.http.response": {}}
    await extra.send_input({"type": "websocket.connect"})
    start = await extra.receive_output(1)
    assert start["type"] == "websocket.http.response.start" and start["status"] == 429
    assert (b"retry-after", b"30") in start["headers"]
    body = await extra.receive_output(1)
    assert b"rate_limited" in body["body"]
    # Another address is not affected; a closed socket gives its slot back.
    other = communicator(target, visitor(10))
    assert (await other.connect())[0]
    await held.pop().disconnect()
    again = communicator(target, visitor(11), client=ATTACKER)
    assert (await again.connect())[0]
    for comm in [*held, other, again]:
        await comm.disconnect()


async def test_a_server_without_the_denial_extension_refuses_plainly(realtime_mode, target, settings):
    settings.CANDOR_SOCKETS_PER_ADDRESS = 1
    first = communicator(target, visitor(1), client=ATTACKER)
    assert (await first.connect())[0]
    second = communicator(target, visitor(2), client=ATTACKER)
    assert (await second.connect()) == (False, 1000)  # 403 at the handshake
    await first.disconnect()


async def test_a_socket_that_never_says_its_page_is_closed_1008(realtime_mode, target, settings):
    settings.CANDOR_PAGE_TIMEOUT_S = 0.3
    silent = communicator(target, visitor(1))
    assert (await silent.connect())[0]
    talking = communicator(target, visitor(2))
    assert (await talking.connect())[0]
    await talking.send_json_to({"type": "page", "product": target["sku"], "visible": False})
    await asyncio.sleep(0.6)
    closed = await silent.receive_output(1)
    assert closed == {"type": "websocket.close", "code": 1008}
    assert await talking.receive_nothing(0.2)  # said its page: kept open
    await talking.disconnect()
    await silent.wait()


@sync_to_async
def _events():
    return list(Event.objects.all())
