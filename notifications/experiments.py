"""Experiments (SPEC 4): who is in which arm, what each arm converted, and how sure we are.

Assignment is deterministic from the visitor hash: a site-level holdout (those visitors never
see a notification), then, inside a segment, policy variants by a second, independent hash. The
visitor hash rotates with the daily salt, so a visitor keeps an arm for that UTC day and is a
new unit the next day: the unit of analysis is a visitor-day.

A conversion is a verified purchase whose order carried the shopper's visitor token
(`Candor.visitorToken()`), made within the site's attribution window after the visitor's first
exposure in the segment, and not since refunded or cancelled. The token names the visitor hash of
the day it was issued, so exposures before the UTC midnight preceding the token cannot be linked:
the effective window is the shorter of the site's window and "since midnight UTC".

Statistics are the standard large-sample ones, written out because they are a few lines each and
pulling numpy/scipy/pandas into every web process for them is not worth it; the test suite checks
each against statsmodels (`tests/test_experiments_stats.py`):
- a rate's interval: Wilson score;
- absolute lift (difference of rates): Newcombe's hybrid score interval (Newcombe 1998, method 10);
- relative lift (ratio − 1): the Katz log interval, with 0.5 added to each cell when one is empty;
- sample size: the normal approximation with pooled variance under H0 and unpooled under H1, at
  the arms' current allocation, 5% two-sided, 80% power.
"""

import datetime as dt
import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import NormalDist

from django.db.models import Max, Min
from django.utils import timezone

from .models import Conversion, Event, EventKind, Exposure, SegmentConfig, Site
from .policy.decision import Policy, held_out, visitor_bucket
from .policy.segments import Segment

HOLDOUT = "holdout"
ALPHA = 0.05
POWER = 0.80
Z_ALPHA = NormalDist().inv_cdf(1 - ALPHA / 2)


# --- Assignment (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    name: str
    policy: Policy | None  # None: held out, sees nothing

    @property
    def held_out(self) -> bool:
        return self.policy is None


def arm_bucket(visitor: str, segment: str) -> float:
    """A position in [0, 100) for the variant draw, independent of the holdout's bucket (another
    hash input), so variant shares are shares of the visitors who are not held out."""
    digest = hashlib.sha256(f"arm|{segment}|{visitor}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def arm_assign(*, visitor: str, segment: Segment, site_holdout_pct: float) -> Arm:
    """The visitor's arm in this segment: the site's holdout first, then the segment's variants
    (each `share_pct` of the rest; the remainder keeps the segment's own policy), then the chosen
    policy's own holdout share (SPEC 3). All three use only the visitor hash."""
    if site_holdout_pct > 0 and visitor and visitor_bucket(visitor) < site_holdout_pct:
        return Arm(HOLDOUT, None)
    policy = segment.policy
    if segment.variants and visitor:
        bucket = arm_bucket(visitor, segment.name)
        edge = 0.0
        for variant_policy, share_pct in segment.variants:
            edge += share_pct
            if bucket < edge:
                policy = variant_policy
                break
    if held_out(policy, visitor):
        return Arm(HOLDOUT, None)
    return Arm(policy.name, policy)


def displayed_intensity(kind: str, displayed: str) -> int:
    """The consensus number a claim put on screen: "20+" is 20; a recent purchase is one person."""
    if kind == "recent_purchase":
        return 1
    digits = displayed.rstrip("+")
    return int(digits) if digits.isdigit() else 0


@dataclass(slots=True)
class PageExposure:
    """What one page view was exposed to, kept by its socket and logged when the view ends."""

    site_id: int
    product_id: int
    visitor: str
    segment: str
    arm: str
    policy_version: str
    started_at: dt.datetime
    held_out: bool = False
    toasts: int = 0
    intensity: int = 0
    reason: str = ""

    def refused(self, reason: str) -> None:
        if not self.reason:
            self.reason = str(reason)

    def displayed(self, kind: str, displayed: str, *, new: bool) -> None:
        self.toasts += new
        self.intensity = max(self.intensity, displayed_intensity(kind, displayed))

    def row(self, *, ended_at: dt.datetime) -> dict:
        if self.toasts:
            outcome, reason = "shown", ""
        elif self.held_out:
            outcome, reason = "held_out", ""
        else:
            outcome, reason = "refused", self.reason or "NO_EVIDENCE"
        return {
            "site_id": self.site_id,
            "product_id": self.product_id,
            "visitor_hash": self.visitor,
            "segment": self.segment[:100],
            "arm": self.arm[:100],
            "policy_version": self.policy_version[:200],
            "started_at": self.started_at,
            "ended_at": ended_at,
            "outcome": outcome,
            "reason": reason,
            "toasts": min(self.toasts, 32767),
            "intensity": self.intensity,
        }


# --- Statistics (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def wilson_interval(successes: int, trials: int, *, z: float = Z_ALPHA) -> Interval | None:
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def difference_interval(x1: int, n1: int, x0: int, n0: int, *, z: float = Z_ALPHA) -> Interval | None:
    """Newcombe's hybrid score interval for p1 − p0."""
    w1, w0 = wilson_interval(x1, n1, z=z), wilson_interval(x0, n0, z=z)
    if w1 is None or w0 is None:
        return None
    p1, p0 = x1 / n1, x0 / n0
    d = p1 - p0
    return Interval(
        d - math.sqrt((p1 - w1.low) ** 2 + (w0.high - p0) ** 2),
        d + math.sqrt((w1.high - p1) ** 2 + (p0 - w0.low) ** 2),
    )


def ratio_interval(
    x1: int, n1: int, x0: int, n0: int, *, z: float = Z_ALPHA
) -> tuple[float, Interval] | None:
    """The risk ratio p1 / p0 and its Katz log interval; 0.5 is added to every cell when a count
    is zero (otherwise the log is undefined). None when a group is empty or both counts are 0."""
    if n1 <= 0 or n0 <= 0 or (x1 == 0 and x0 == 0):
        return None
    if x1 == 0 or x0 == 0:
        x1, x0, n1, n0 = x1 + 0.5, x0 + 0.5, n1 + 0.5, n0 + 0.5
    ratio = (x1 / n1) / (x0 / n0)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
    return ratio, Interval(math.exp(math.log(ratio) - z * se), math.exp(math.log(ratio) + z * se))


def sample_size_control(
    *, p0: float, relative_lift: float, ratio: float = 1.0, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Visitors needed in the control arm to detect p1 = p0 × (1 + relative_lift) with a two-sided
    test, when the treatment arm gets `ratio` visitors per control visitor."""
    p1 = p0 * (1 + relative_lift)
    if not (0 < p0 < 1 and 0 < p1 < 1) or ratio <= 0 or relative_lift == 0:
        return None
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    pooled = (p0 + ratio * p1) / (1 + ratio)
    null_sd = math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
    alt_sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1) / ratio)
    return ((z_a * null_sd + z_b * alt_sd) / (p1 - p0)) ** 2


# --- Results (reads) ---------------------------------------------------------------------------

# Bins of the highest consensus number a visitor saw: 0 is "nothing shown" (held out or refused).
INTENSITY_BINS = ((0, 0), (1, 4), (5, 9), (10, 19), (20, 49), (50, None))


def intensity_bin(value: int) -> int:
    for index, (low, high) in enumerate(INTENSITY_BINS):
        if value >= low and (high is None or value <= high):
            return index
    return 0


def intensity_label(index: int) -> str:
    low, high = INTENSITY_BINS[index]
    if high is None:
        return f"{low}+"
    return str(low) if low == high else f"{low}–{high}"


@dataclass
class Rate:
    visitors: int = 0
    conversions: int = 0

    @property
    def rate(self) -> float | None:
        return self.conversions / self.visitors if self.visitors else None

    @property
    def interval(self) -> Interval | None:
        return wilson_interval(self.conversions, self.visitors)


@dataclass(frozen=True)
class Comparison:
    """An arm against a control arm."""

    control: str
    absolute: float | None
    absolute_interval: Interval | None
    relative: float | None
    relative_interval: Interval | None
    needed_total: int | None  # visitors (both arms) still to collect at the current allocation


@dataclass
class ArmResult:
    segment: str
    arm: str
    counts: Rate
    shown_share: float | None  # page views with a toast, of this arm's page views
    comparisons: list[Comparison] = field(default_factory=list)


@dataclass
class CurvePoint:
    segment: str
    bin: int
    counts: Rate

    @property
    def label(self) -> str:
        return intensity_label(self.bin)


@dataclass
class Results:
    site_id: int
    since: dt.datetime
    until: dt.datetime
    window_h: int
    holdout_pct: float
    minimum_lift_pct: float
    exposures: int
    conversions: int
    arms: list[ArmResult]
    curve: list[CurvePoint]
    overall_shown: Rate = field(default_factory=Rate)
    overall_holdout: Rate = field(default_factory=Rate)
    overall: Comparison | None = None
    mixed_visitors: int = 0

    def segments(self) -> list[str]:
        return list(dict.fromkeys(a.segment for a in self.arms))


def compare(treated: Rate, control: Rate, *, control_name: str, minimum_lift_pct: float) -> Comparison:
    x1, n1, x0, n0 = treated.conversions, treated.visitors, control.conversions, control.visitors
    absolute = (x1 / n1 - x0 / n0) if n1 and n0 else None
    ratio = ratio_interval(x1, n1, x0, n0)
    needed = None
    if n1 and n0:
        per_control = sample_size_control(p0=x0 / n0, relative_lift=minimum_lift_pct / 100, ratio=n1 / n0)
        if per_control is not None:
            needed = max(0, math.ceil(per_control * (1 + n1 / n0)) - (n0 + n1))
    return Comparison(
        control=control_name,
        absolute=absolute,
        absolute_interval=difference_interval(x1, n1, x0, n0),
        relative=(ratio[0] - 1) if ratio and x0 else None,
        relative_interval=Interval(ratio[1].low - 1, ratio[1].high - 1) if ratio else None,
        needed_total=needed,
    )


def _withdrawn_orders(site_id: int, order_ids: set[str]) -> set[str]:
    """Orders the ledger has since refunded or cancelled: wholly, or line by line to the last."""
    if not order_ids:
        return set()
    rows = Event.objects.filter(site_id=site_id, order_id__in=order_ids).values_list(
        "order_id", "kind", "product_id"
    )
    bought: dict[str, set] = defaultdict(set)
    taken_back: dict[str, set] = defaultdict(set)
    whole = set()
    for order_id, kind, product_id in rows:
        if kind == EventKind.PURCHASE:
            bought[order_id].add(product_id)
        elif kind in (EventKind.REFUND, EventKind.CANCEL):
            if product_id is None:
                whole.add(order_id)
            else:
                taken_back[order_id].add(product_id)
    return whole | {o for o, products in bought.items() if products and products <= taken_back[o]}


def _base_arms(site_id: int) -> dict[str, str]:
    """Each configured segment's own policy name: the reference arm its variants are compared to."""
    return {
        name: policy_name
        for name, policy_name in SegmentConfig.objects.filter(site_id=site_id).values_list(
            "name", "policy__name"
        )
    }


def experiment_results(
    *,
    site: Site,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    minimum_lift_pct: float = 10.0,
) -> Results:
    """Conversion per segment and arm, lifts against the holdout (and variants against the
    segment's own policy) with 95% intervals, the sample still needed, and the curve of conversion
    against the highest number displayed. Aggregates only: no visitor hash leaves this function."""
    until = until or timezone.now()
    since = since or until - dt.timedelta(days=28)
    window = dt.timedelta(hours=site.attribution_window_h)
    exposures = Exposure.objects.filter(site=site, started_at__gte=since, started_at__lt=until)
    per_visitor = (
        exposures.values("segment", "arm", "visitor_hash")
        .annotate(first=Min("started_at"), intensity=Max("intensity"))
        .order_by()
    )
    shown_views: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for segment, arm, outcome in exposures.values_list("segment", "arm", "outcome").iterator():
        views = shown_views[(segment, arm)]
        views[0] += outcome == "shown"
        views[1] += 1

    conversions = list(
        Conversion.objects.filter(
            site=site, occurred_at__gte=since, occurred_at__lt=until + window
        ).values_list("visitor_hash", "order_id", "occurred_at")
    )
    withdrawn = _withdrawn_orders(site.pk, {order_id for _, order_id, _ in conversions})
    bought_at: dict[str, list[dt.datetime]] = defaultdict(list)
    for visitor, order_id, occurred_at in conversions:
        if order_id not in withdrawn:
            bought_at[visitor].append(occurred_at)

    def converted(visitor: str, first: dt.datetime) -> bool:
        return any(first <= t <= first + window for t in bought_at.get(visitor, ()))

    arms: dict[tuple[str, str], Rate] = defaultdict(Rate)
    curve: dict[tuple[str, int], Rate] = defaultdict(Rate)
    visitors: dict[str, list] = {}  # visitor → [first exposure, arms seen]
    for row in per_visitor.iterator():
        visitor, first = row["visitor_hash"], row["first"]
        hit = converted(visitor, first)
        for bucket in (
            arms[(row["segment"], row["arm"])],
            curve[(row["segment"], intensity_bin(row["intensity"]))],
        ):
            bucket.visitors += 1
            bucket.conversions += hit
        seen = visitors.setdefault(visitor, [first, set()])
        seen[0] = min(seen[0], first)
        seen[1].add(row["arm"] == HOLDOUT)

    results = Results(
        site_id=site.pk,
        since=since,
        until=until,
        window_h=site.attribution_window_h,
        holdout_pct=site.holdout_pct,
        minimum_lift_pct=minimum_lift_pct,
        exposures=exposures.count(),
        conversions=sum(len(times) for times in bought_at.values()),
        arms=[],
        curve=[CurvePoint(segment, index, counts) for (segment, index), counts in sorted(curve.items())],
    )
    # Site-wide: a visitor-day is "held out" or "shown policies" when all of its exposures agree
    # (a policy's own holdout can differ between segments; such visitors are left out and counted).
    for visitor, (first, kinds) in visitors.items():
        if len(kinds) > 1:
            results.mixed_visitors += 1
            continue
        bucket = results.overall_holdout if True in kinds else results.overall_shown
        bucket.visitors += 1
        bucket.conversions += converted(visitor, first)
    if results.overall_holdout.visitors and results.overall_shown.visitors:
        results.overall = compare(
            results.overall_shown,
            results.overall_holdout,
            control_name=HOLDOUT,
            minimum_lift_pct=minimum_lift_pct,
        )

    base_arms = _base_arms(site.pk)
    by_segment: dict[str, dict[str, Rate]] = defaultdict(dict)
    for (segment, arm), counts in arms.items():
        by_segment[segment][arm] = counts
    for segment in sorted(by_segment):
        members = by_segment[segment]
        treated = {arm: c for arm, c in members.items() if arm != HOLDOUT}
        base = base_arms.get(segment)
        if base not in treated:
            base = max(treated, key=lambda arm: treated[arm].visitors, default=None)
        order = ([HOLDOUT] if HOLDOUT in members else []) + sorted(
            treated, key=lambda arm: (arm != base, arm)
        )
        for arm in order:
            counts = members[arm]
            shown, views = shown_views.get((segment, arm), (0, 0))
            result = ArmResult(segment, arm, counts, shown_share=shown / views if views else None)
            # Against the holdout: does showing anything help? Against the segment's own policy:
            # the variant question (cap 10 versus cap 50).
            controls = [HOLDOUT] if arm != HOLDOUT and HOLDOUT in members else []
            if arm not in (HOLDOUT, base) and base is not None:
                controls.append(base)
            result.comparisons = [
                compare(counts, members[c], control_name=c, minimum_lift_pct=minimum_lift_pct)
                for c in controls
            ]
            results.arms.append(result)
    return results
