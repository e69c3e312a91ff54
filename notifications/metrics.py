"""True metrics, each a lower bound over an explicit window, each with its evidence.

Presence metrics are computed from what `presence.py` read; ledger metrics read the `Event`
ledger (verified purchases only, refunds and cancels withdrawn, bots and test orders never
counted). Nothing here decides what is shown: that is the policy's job."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q
from django.db.models.functions import TruncDate

from .models import Event, EventKind, EventSource, PurchaseSources
from .policy.metric import Metric  # the policy's input type; re-exported as metrics.Metric

FIRST_TIME_LABEL = "first-time visitors"
COUNTRY_LABEL = "your country"


@dataclass(frozen=True)
class PresenceSnapshot:
    """One presence read, aggregated once so each recipient's count is O(1)."""

    visitors: Mapping[str, tuple[str, str]]
    by_country: Mapping[str, int]
    first_time: int

    @classmethod
    def of(cls, visitors: Mapping[str, tuple[str, str]]) -> "PresenceSnapshot":
        by_country: dict[str, int] = {}
        first_time = 0
        for country, returning in visitors.values():
            if country:
                by_country[country] = by_country.get(country, 0) + 1
            first_time += returning == "false"
        return cls(visitors=visitors, by_country=by_country, first_time=first_time)


def viewing_now_key(*, presence: PresenceSnapshot, recipient: str, context) -> tuple:
    """What `viewing_now` would count for this recipient, cheaply: the streaming round decides
    once per distinct key and builds the metric (with its evidence) only then."""
    mine = presence.visitors.get(recipient)
    others = len(presence.visitors) - (mine is not None)
    country = context.country
    same = presence.by_country.get(country, 0) - (mine is not None and mine[0] == country) if country else -1
    first = (
        presence.first_time - (mine is not None and mine[1] == "false")
        if context.returning == "false"
        else -1
    )
    return (others, context.category, same, first)


def viewing_now(
    *,
    presence: PresenceSnapshot,
    recipient: str,
    ttl_s: int,
    at: datetime,
    category: str = "",
    country: str = "",
    returning: str = "",
) -> Metric:
    """Distinct non-bot visitors with a visible page on the product, minus the recipient.

    `presence` comes from one presence read (visitor hash → (country, returning hint); bots are
    never entered there). Two tabs of one visitor are one hash, so they count once; the
    recipient's own hash is never counted for them. Everyone on this product's page is a shopper
    in its category; the country and first-visit groups count only those sharing the recipient's."""
    mine = presence.visitors.get(recipient)
    others = len(presence.visitors) - (mine is not None)
    groups: dict[str, tuple[str, int]] = {}
    if category:
        groups["category"] = (category, others)
    if country:
        same = presence.by_country.get(country, 0) - (mine is not None and mine[0] == country)
        groups["country"] = (COUNTRY_LABEL, same)
    if returning == "false":
        groups["first_time"] = (
            FIRST_TIME_LABEL,
            presence.first_time - (mine is not None and mine[1] == "false"),
        )
    return Metric(
        metric="viewing_now",
        true_value=others,
        window_s=ttl_s,
        evidence={
            "aggregate": "distinct visitor hashes with a visible page on the product, at most "
            f"{settings.CANDOR_VISITORS_PER_ADDRESS} per client address",
            "distinct_visitors": len(presence.visitors),
            "recipient_excluded": mine is not None,
            "presence_ttl_s": ttl_s,
            "computed_at": at.isoformat(),
        },
        groups=groups,
    )


# --- From the ledger -----------------------------------------------------------------------
# Windows are explicit and rolling (SPEC 3: "in the last 24 hours", never "this week").
RECENT_PURCHASE_WINDOW_S = 3600
COUNT_WINDOWS_S = (86_400, 7 * 86_400)
EVIDENCE_IDS_MAX = 100
WITHDRAWALS = (EventKind.REFUND, EventKind.CANCEL)


def purchases_live(*, product_id: int, since: datetime, at: datetime):
    """Verified, non-test purchases of the product in (since, at] that no refund or cancel
    recorded by `at` withdraws — whichever arrived first (SPEC 2.4). A whole-order withdrawal has
    no product; a line withdrawal names this product."""
    withdrawn = Event.objects.filter(
        site_id=OuterRef("site_id"),
        order_id=OuterRef("order_id"),
        kind__in=WITHDRAWALS,
        received_at__lte=at,
    ).filter(Q(product__isnull=True) | Q(product_id=OuterRef("product_id")))
    return (
        Event.objects.filter(
            product_id=product_id,
            kind=EventKind.PURCHASE,
            verified=True,
            is_test=False,
            is_bot=False,
            occurred_at__gt=since,
            occurred_at__lte=at,
            received_at__lte=at,
        )
        # A site that promised `purchases_from = platform` counts no order its own server reported.
        .exclude(source=EventSource.SERVER, site__purchases_from=PurchaseSources.PLATFORM)
        .filter(~Exists(withdrawn))
    )


def recent_purchase(
    *, product_id: int, at: datetime, window_s: int = RECENT_PURCHASE_WINDOW_S
) -> Metric | None:
    """The most recent live purchase inside the window, at its own time; None if there is none.

    `true_value` is its age in whole seconds (the widget shows whole minutes, floored)."""
    rows = _purchase_rows(product_id=product_id, since=at - timedelta(seconds=window_s), at=at)
    return _recent_from(rows, at=at, window_s=window_s)


def _recent_from(rows: list[tuple], *, at: datetime, window_s: int) -> Metric | None:
    """From live purchase rows, newest first: the newest, if it is inside the window."""
    if not rows or rows[0][2] <= at - timedelta(seconds=window_s):
        return None
    event_id, _order, occurred_at = rows[0]
    return Metric(
        metric="recent_purchase",
        true_value=max(0, int((at - occurred_at).total_seconds())),
        window_s=window_s,
        evidence={
            "event_ids": [event_id],
            "occurred_at": occurred_at.isoformat(),
            "window_s": window_s,
            "computed_at": at.isoformat(),
        },
    )


def purchases_in_window(
    *, product_id: int, at: datetime, windows_s=COUNT_WINDOWS_S, rows: list | None = None
) -> list[Metric]:
    """Distinct live orders of the product in each rolling window (orders, not units). `rows`:
    the live purchases over the widest window, newest first, if the caller already read them."""
    widest = max(windows_s)
    if rows is None:
        rows = _purchase_rows(product_id=product_id, since=at - timedelta(seconds=widest), at=at)
    result = []
    for window_s in sorted(windows_s):
        since = at - timedelta(seconds=window_s)
        inside = [(event_id, order_id) for event_id, order_id, occurred_at in rows if occurred_at > since]
        orders = {order_id for _, order_id in inside}
        result.append(
            Metric(
                metric="purchases_in_window",
                true_value=len(orders),
                window_s=window_s,
                evidence={
                    "aggregate": "distinct verified orders not refunded or cancelled",
                    "orders": len(orders),
                    "window_s": window_s,
                    "event_ids": [event_id for event_id, _ in inside[:EVIDENCE_IDS_MAX]],
                    "computed_at": at.isoformat(),
                },
            )
        )
    return result


def add_to_cart_in_window(
    *, product_id: int, at: datetime, window_s: int = COUNT_WINDOWS_S[0], category: str = ""
) -> Metric:
    """Distinct shoppers who added the product to their cart in the window.

    A visitor's hash changes with the daily salt, so one shopper on both sides of midnight UTC
    has two hashes. Summing the days could count them twice; the largest single day's distinct
    count never can, so that is the lower bound reported (SPEC 2.1). Within a day, one client
    address adds at most CANDOR_VISITORS_PER_ADDRESS shoppers however many User-Agents it rotates
    (SPEC 7); rows from before the address was recorded share one address ("")."""
    per_address = (
        Event.objects.filter(
            product_id=product_id,
            kind=EventKind.ADD_TO_CART,
            is_bot=False,
            occurred_at__gt=at - timedelta(seconds=window_s),
            occurred_at__lte=at,
        )
        .exclude(visitor_hash="")
        .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
        .values("day", "address_hash")
        .annotate(shoppers=Count("visitor_hash", distinct=True))
    )
    cap = settings.CANDOR_VISITORS_PER_ADDRESS
    days: dict[str, int] = {}
    for row in per_address:
        day = row["day"].isoformat()
        days[day] = days.get(day, 0) + min(cap, row["shoppers"])
    shoppers = max(days.values(), default=0)
    return Metric(
        metric="add_to_cart_in_window",
        true_value=shoppers,
        groups={"category": (category, shoppers)} if category else {},
        window_s=window_s,
        evidence={
            "aggregate": "distinct non-bot visitors adding to cart, at most "
            f"{cap} per client address; the largest single UTC day",
            "visitors_per_address": cap,
            "per_day": days,
            "window_s": window_s,
            "computed_at": at.isoformat(),
        },
    )


def _purchase_rows(*, product_id: int, since: datetime, at: datetime) -> list[tuple]:
    return list(
        purchases_live(product_id=product_id, since=since, at=at)
        .order_by("-occurred_at", "-id")
        .values_list("id", "order_id", "occurred_at")
    )


def product_ledger_metrics(*, product_id: int, at: datetime, category: str = "") -> list[Metric]:
    """Every ledger metric a product page could be shown, computed once per update round: one
    query for the live purchases (the counts and the most recent one) and one for carts."""
    rows = _purchase_rows(product_id=product_id, since=at - timedelta(seconds=max(COUNT_WINDOWS_S)), at=at)
    recent = _recent_from(rows, at=at, window_s=RECENT_PURCHASE_WINDOW_S)
    found = [recent]
    found += purchases_in_window(product_id=product_id, at=at, rows=rows)
    found.append(add_to_cart_in_window(product_id=product_id, at=at, category=category))
    return [metric for metric in found if metric is not None]


def shoppers_on_site_now(*, visitors: Mapping[str, tuple[str, str]], ttl_s: int, at: datetime) -> Metric:
    """Distinct non-bot visitors with a visible page anywhere on the site (presence)."""
    return Metric(
        metric="shoppers_on_site_now",
        true_value=len(visitors),
        window_s=ttl_s,
        evidence={
            "aggregate": "distinct visitor hashes with a visible page on any of the site's products",
            "distinct_visitors": len(visitors),
            "computed_at": at.isoformat(),
        },
    )
