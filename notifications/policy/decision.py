"""The decision: a pure pipeline of small steps, each passing the candidate on or dropping it
with a named reason (Plausible's ingestion pipeline with `drop(event, reason)`). No I/O here.

This is the foundation's default policy; segments, versions in the database and the template
linter build on it (issue 5).
"""

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..metrics import Metric


class RefusalReason(enum.StrEnum):
    KIND_NOT_ALLOWED = "KIND_NOT_ALLOWED"
    BELOW_MIN_COUNT = "BELOW_MIN_COUNT"
    STALE = "STALE"


LIVE_KINDS = frozenset({"viewing_now", "recent_purchase", "purchases_in_window", "add_to_cart_in_window"})


@dataclass(frozen=True)
class Policy:
    version: str
    allowed_kinds: frozenset[str] = LIVE_KINDS
    # Minimum true count (and displayed count) before an aggregate is shown: below it a number
    # would single out a few people (SPEC 2.7) and say little.
    min_count: int = 3
    # Above the cap the widget says "20+": a lower bound, and a ceiling on consensus intensity.
    display_caps: dict[str, int] = field(
        default_factory=lambda: {"viewing_now": 20, "purchases_in_window": 50, "add_to_cart_in_window": 20}
    )
    # Nothing older than this is shown as a recent purchase (SPEC 2.3).
    recent_purchase_window_s: int = 3600


def policy_default() -> Policy:
    return Policy(version="default-1", min_count=max(1, settings.CANDOR_MIN_COUNT))


@dataclass(frozen=True)
class Decision:
    kind: str
    text: str
    displayed: str
    true_value: int
    window_s: int
    evidence: dict
    policy_version: str

    @property
    def claim(self) -> dict:
        return {"metric": self.kind, "window_s": self.window_s, "displayed": self.displayed}


@dataclass(frozen=True)
class Refusal:
    reason: RefusalReason
    kind: str
    policy_version: str


@dataclass(frozen=True)
class _Candidate:
    metric: Metric
    policy: Policy
    displayed_value: int = 0
    displayed: str = ""


Step = Callable[[_Candidate], "_Candidate | RefusalReason"]


def _kind_allowed(c: _Candidate) -> "_Candidate | RefusalReason":
    return c if c.metric.metric in c.policy.allowed_kinds else RefusalReason.KIND_NOT_ALLOWED


def _fresh(c: _Candidate) -> "_Candidate | RefusalReason":
    """A recent purchase is shown only inside the policy's recency window (its age in seconds)."""
    if c.metric.metric == "recent_purchase" and c.metric.true_value > c.policy.recent_purchase_window_s:
        return RefusalReason.STALE
    return c


def _true_value_at_least_min(c: _Candidate) -> "_Candidate | RefusalReason":
    # A recent purchase is one verified purchase, not an aggregate over people: no minimum.
    if c.metric.metric == "recent_purchase":
        return c
    return c if c.metric.true_value >= c.policy.min_count else RefusalReason.BELOW_MIN_COUNT


def _cap(c: _Candidate) -> "_Candidate | RefusalReason":
    """Never more than the truth: values above the cap show as the cap with "+". A purchase's
    age shows in whole minutes, floored."""
    if c.metric.metric == "recent_purchase":
        minutes = c.metric.true_value // 60
        return _Candidate(c.metric, c.policy, minutes, str(minutes))
    cap = c.policy.display_caps.get(c.metric.metric)
    value = c.metric.true_value
    if cap is not None and value > cap:
        return _Candidate(c.metric, c.policy, cap, f"{cap}+")
    return _Candidate(c.metric, c.policy, value, str(value))


def _displayed_at_least_min(c: _Candidate) -> "_Candidate | RefusalReason":
    if c.metric.metric == "recent_purchase":
        return c
    return c if c.displayed_value >= c.policy.min_count else RefusalReason.BELOW_MIN_COUNT


PIPELINE: tuple[Step, ...] = (_kind_allowed, _fresh, _true_value_at_least_min, _cap, _displayed_at_least_min)


def window_words(window_s: int) -> str:
    """A rolling window in words: "in the last 24 hours", "in the last 7 days"."""
    if window_s % 86_400 == 0 and window_s > 86_400:
        return _("in the last {n} days").format(n=window_s // 86_400)
    if window_s % 3600 == 0 and window_s > 3600:
        return _("in the last {n} hours").format(n=window_s // 3600)
    if window_s == 3600:
        return _("in the last hour")
    return _("in the last {n} minutes").format(n=max(1, window_s // 60))


def _render(kind: str, count_value: int, count: str, window_s: int) -> str:
    # Numbers enter text only through placeholders, already capped (SPEC 3, templates).
    if kind == "viewing_now":
        return ngettext(
            "{count} other person is viewing this",
            "{count} other people are viewing this",
            count_value,
        ).format(count=count)
    if kind == "recent_purchase":
        if count_value < 1:
            return _("Someone bought this just now")
        return ngettext(
            "Someone bought this {minutes} minute ago",
            "Someone bought this {minutes} minutes ago",
            count_value,
        ).format(minutes=count)
    if kind == "purchases_in_window":
        return ngettext(
            "Ordered {count} time {window}", "Ordered {count} times {window}", count_value
        ).format(count=count, window=window_words(window_s))
    if kind == "add_to_cart_in_window":
        return ngettext(
            "{count} shopper added this to their cart {window}",
            "{count} shoppers added this to their cart {window}",
            count_value,
        ).format(count=count, window=window_words(window_s))
    raise ValueError(f"no template for {kind}")


def decide(*, metric: Metric, policy: Policy) -> Decision | Refusal:
    candidate = _Candidate(metric, policy)
    for step in PIPELINE:
        result = step(candidate)
        if isinstance(result, RefusalReason):
            return Refusal(reason=result, kind=metric.metric, policy_version=policy.version)
        candidate = result
    return Decision(
        kind=metric.metric,
        text=_render(metric.metric, candidate.displayed_value, candidate.displayed, metric.window_s),
        displayed=candidate.displayed,
        true_value=metric.true_value,
        window_s=metric.window_s,
        evidence=metric.evidence,
        policy_version=policy.version,
    )
