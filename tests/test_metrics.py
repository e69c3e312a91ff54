"""Ledger metrics (metrics.py): conservative lower bounds over explicit windows, with evidence.
Refunds, cancels, bots and test orders never count; a withdrawal counts whichever arrives first."""

import datetime as dt
import itertools

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications import metrics
from notifications.models import Event
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

_keys = itertools.count()


@pytest.fixture
def product():
    return ProductFactory()


def record(product, kind, *, minutes_ago=5.0, order="o-1", line=True, **over):
    """A ledger row as ingestion would write it (verified unless it is a browser event)."""
    now = timezone.now()
    fields = {
        "site": product.site,
        "product": product if line else None,
        "kind": kind,
        "source": "server",
        "occurred_at": now - dt.timedelta(minutes=minutes_ago),
        "received_at": now,
        "order_id": order,
        "verified": kind != "add_to_cart",
        "idempotency_key": f"k-{next(_keys)}",
        **over,
    }
    return Event.objects.create(**fields)


def counts(product, at=None):
    at = at or timezone.now()
    return [m.true_value for m in metrics.purchases_in_window(product_id=product.pk, at=at)]


def test_orders_count_not_units_in_each_rolling_window(product):
    record(product, "purchase", order="a", quantity=5)
    record(product, "purchase", order="a")  # a second line of the same order
    record(product, "purchase", order="b", minutes_ago=60 * 30)  # 30 h ago: only in 7 d
    record(product, "purchase", order="c", minutes_ago=60 * 24 * 8)  # 8 days: in neither
    assert counts(product) == [1, 2]
    in_24h, in_7d = metrics.purchases_in_window(product_id=product.pk, at=timezone.now())
    assert (in_24h.window_s, in_7d.window_s) == (86_400, 604_800)
    assert in_24h.evidence["orders"] == 1 and len(in_24h.evidence["event_ids"]) == 2


def test_a_refund_withdraws_the_order_also_when_it_arrives_first(product):
    record(product, "refund", order="a", line=False)
    record(product, "purchase", order="a")
    record(product, "purchase", order="b")
    assert counts(product) == [1, 1]


def test_a_line_withdrawal_only_withdraws_its_product(product):
    other = ProductFactory(site=product.site)
    record(product, "purchase", order="a")
    record(other, "purchase", order="a")
    record(other, "cancel", order="a")
    assert counts(product) == [1, 1]
    assert counts(other) == [0, 0]


def test_test_orders_unverified_and_bot_purchases_never_count(product):
    record(product, "purchase", order="t", is_test=True)
    record(product, "purchase", order="u", verified=False)
    record(product, "purchase", order="x", is_bot=True)
    assert counts(product) == [0, 0]
    assert metrics.recent_purchase(product_id=product.pk, at=timezone.now()) is None


def test_another_sites_withdrawal_of_the_same_order_id_changes_nothing(product):
    elsewhere = ProductFactory()
    record(product, "purchase", order="same-id")
    record(elsewhere, "refund", order="same-id", line=False, site=elsewhere.site)
    assert counts(product) == [1, 1]


def test_recent_purchase_is_the_newest_live_one_at_its_own_time(product):
    record(product, "purchase", order="a", minutes_ago=30)
    newest = record(product, "purchase", order="b", minutes_ago=8.5)
    record(product, "purchase", order="c", minutes_ago=2)
    record(product, "cancel", order="c", line=False)
    metric = metrics.recent_purchase(product_id=product.pk, at=timezone.now())
    assert metric.evidence["event_ids"] == [newest.pk]
    assert 8 * 60 + 29 <= metric.true_value <= 8 * 60 + 31
    assert metric.window_s == metrics.RECENT_PURCHASE_WINDOW_S


def test_nothing_older_than_the_window_is_a_recent_purchase(product):
    record(product, "purchase", minutes_ago=61)
    assert metrics.recent_purchase(product_id=product.pk, at=timezone.now()) is None


def test_a_purchase_recorded_after_a_moment_is_not_counted_at_that_moment(product):
    """Audits re-check a claim as of its emission: later rows must not leak into it."""
    before = timezone.now()
    record(product, "purchase", minutes_ago=0.0)
    assert counts(product, at=before) == [0, 0]


def _cart(product, visitor, *, day_offset=0, is_bot=False, address=None):
    now = timezone.now()
    moment = now - dt.timedelta(days=day_offset, minutes=1)
    return record(
        product,
        "add_to_cart",
        order="",
        visitor_hash=visitor,
        address_hash=f"addr-{visitor}" if address is None else address,  # a shopper, an address
        is_bot=is_bot,
        source="browser",
        occurred_at=moment,
        received_at=moment,
    )


def test_add_to_cart_counts_distinct_shoppers_on_the_largest_day(product):
    for visitor in ("v1", "v1", "v2", "v3"):
        _cart(product, visitor)
    _cart(product, "bot", is_bot=True)
    metric = metrics.add_to_cart_in_window(product_id=product.pk, at=timezone.now())
    assert metric.true_value == 3
    assert metric.window_s == 86_400


def test_add_to_cart_never_sums_across_salt_days(product):
    """Yesterday's and today's hashes of one shopper differ: a sum could count them twice."""
    at = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    for visitor, hours_ago in (("old-a", 20), ("old-b", 20), ("new-a", 1), ("new-b", 1), ("new-c", 1)):
        moment = at - dt.timedelta(hours=hours_ago)
        record(
            product,
            "add_to_cart",
            order="",
            visitor_hash=visitor,
            address_hash=f"addr-{visitor}",
            occurred_at=moment,
            received_at=moment,
        )
    metric = metrics.add_to_cart_in_window(product_id=product.pk, at=at)
    assert metric.true_value == 3
    assert sorted(metric.evidence["per_day"].values()) == [2, 3]


# A purchase or withdrawal: (order index, kind, line withdrawal?, minutes ago, test order?)
ledger_rows = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(["purchase", "purchase", "refund", "cancel"]),
        st.booleans(),
        st.integers(0, 60 * 24 * 9),
        st.booleans(),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ledger_rows)
def test_counts_equal_a_brute_force_count_of_live_orders(db, rows):
    """Invariants 2.1 and 2.4: the count is exactly the unwithdrawn, non-test orders in the window
    (so never more than the truth), in whatever order purchases and withdrawals arrive."""
    product = ProductFactory()  # a fresh product per example: the ledger is append-only
    for order, kind, line, minutes_ago, is_test in rows:
        record(
            product,
            kind,
            order=str(order),
            line=line or kind == "purchase",
            minutes_ago=minutes_ago,
            is_test=is_test and kind == "purchase",
        )
    withdrawn = {order for order, kind, *_ in rows if kind != "purchase"}
    expected = []
    for window_min in (60 * 24, 60 * 24 * 7):
        live = {
            order
            for order, kind, _line, minutes_ago, is_test in rows
            if kind == "purchase" and not is_test and minutes_ago < window_min
        }
        expected.append(len(live - withdrawn))
    assert counts(product) == expected


def test_add_to_cart_takes_at_most_the_cap_of_one_address(product, settings):
    """SPEC 7: one address rotating User-Agents adds at most CANDOR_VISITORS_PER_ADDRESS."""
    for i in range(10):
        _cart(product, f"rotating{i}", address="one-machine")
    for visitor in ("h1", "h2"):
        _cart(product, visitor)
    assert metrics.add_to_cart_in_window(product_id=product.pk, at=timezone.now()).true_value == 2 + 2
    settings.CANDOR_VISITORS_PER_ADDRESS = 1
    assert metrics.add_to_cart_in_window(product_id=product.pk, at=timezone.now()).true_value == 1 + 2
