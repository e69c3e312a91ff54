"""Audience segments (SPEC 3): ordered rules over the visitor context, first match wins, and a
default segment always exists. Pure: the admin's rows are turned into these by `selectors.py`.

The shipped defaults, and why (sources in docs/policy.md, "Policy defaults"):
- Self-expression categories (fashion, music, lifestyle): consensus messages backfire soonest
  when the product signals identity (Berger & Heath 2007, "Where consumers diverge from others";
  Cialdini's social proof works best under similarity and uncertainty). Gentle tier, low caps,
  no share claims, the category as the reference group rather than "everyone".
- Individualist locales (English, Dutch, German, Scandinavian; Hofstede's individualism index):
  uniqueness-seeking shoppers react against "everyone is buying" (reactance: Brehm 1966; Snyder &
  Fromkin's need for uniqueness). Gentle tier, lower caps.
- Utilitarian goods: social proof reduces uncertainty about quality, with little identity cost
  (Huang & Chen 2006; Amblee & Bui 2011). Higher caps, moderate tier.
- Everything: k ≥ 3, nothing looped, no superlatives, at most two new toasts a page.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from .decision import Policy, VisitorContext

INDIVIDUALIST_LANGUAGES = ("en", "nl", "de", "sv", "da", "no", "nb", "fi")


@dataclass(frozen=True)
class SegmentRule:
    """Every non-empty condition must hold; an empty rule matches everyone."""

    category_kinds: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()  # language prefixes ("en", "pt-br")
    countries: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    returning: str = ""  # "", "true", "false"
    referrer_contains: str = ""
    campaigns: tuple[str, ...] = ()
    hints: Mapping[str, str] = field(default_factory=dict)

    def matches(self, c: VisitorContext) -> bool:
        if self.category_kinds and c.category_kind not in self.category_kinds:
            return False
        if self.categories and c.category.lower() not in self.categories:
            return False
        if self.locales and not any(c.locale == p or c.locale.startswith(p + "-") for p in self.locales):
            return False
        if self.countries and c.country not in self.countries:
            return False
        if self.devices and c.device not in self.devices:
            return False
        if self.returning and c.returning != self.returning:
            return False
        if self.referrer_contains and self.referrer_contains not in c.referrer:
            return False
        if self.campaigns and c.campaign not in self.campaigns:
            return False
        return all(c.hints.get(name) == value for name, value in self.hints.items())


@dataclass(frozen=True)
class Segment:
    name: str
    rule: SegmentRule
    policy: Policy
    # Experiment arms (SPEC 4): (policy, share of the segment's visitors in percent). The rest
    # keep `policy`. Assigned in `experiments.arm_assign`.
    variants: tuple[tuple[Policy, float], ...] = ()


def segment_for(segments: tuple[Segment, ...], context: VisitorContext) -> Segment:
    """First match wins; the last segment is the default and matches everyone."""
    for segment in segments:
        if segment.rule.matches(context):
            return segment
    return segments[-1]


def default_segments(*, min_count: int = 3) -> tuple[Segment, ...]:
    gentle = Policy(
        version="default-gentle-1",
        name="gentle",
        tier=1,
        min_count=min_count,
        display_caps={"viewing_now": 10, "purchases_in_window": 20, "add_to_cart_in_window": 10},
        allowed_groups=("category", "everyone"),
        per_page_view=1,
        per_session=4,
        min_gap_s=30,
    )
    utilitarian = Policy(
        version="default-utilitarian-1",
        name="utilitarian",
        tier=2,
        min_count=min_count,
        display_caps={"viewing_now": 50, "purchases_in_window": 100, "add_to_cart_in_window": 50},
        rounding_steps={"purchases_in_window": 5},
        allowed_groups=("everyone", "category"),
    )
    moderate = Policy(version="default-1", name="moderate", tier=2, min_count=min_count)
    return (
        Segment("Self-expression products", SegmentRule(category_kinds=("self_expression",)), gentle),
        Segment("Individualist locales", SegmentRule(locales=INDIVIDUALIST_LANGUAGES), gentle),
        Segment("Utilitarian products", SegmentRule(category_kinds=("utilitarian",)), utilitarian),
        Segment("Everyone else", SegmentRule(), moderate),
    )


def policy_default() -> Policy:
    """The policy of the shipped default segment ("Everyone else")."""
    from django.conf import settings

    return default_segments(min_count=max(1, settings.CANDOR_MIN_COUNT))[-1].policy
