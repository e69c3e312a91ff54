"""The decision: a pure pipeline of small steps, each passing the candidate on or dropping it
with a named reason (Plausible's ingestion pipeline with `drop(event, reason)`). No I/O here.

`decide(metric, policy, context, session)` is the whole decision for one recipient. The streaming
round splits it for speed: `decide(..., session=None)` once per distinct (segment, value), shared
by every recipient it applies to, then `recipient_refusal` per recipient (holdout and frequency
caps) — the same steps, in the same order.
"""

import enum
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings
from django.utils import translation
from django.utils.translation import get_language, ngettext
from django.utils.translation import gettext as _

from .metric import Metric


class RefusalReason(enum.StrEnum):
    HELD_OUT = "HELD_OUT"
    KIND_NOT_ALLOWED = "KIND_NOT_ALLOWED"
    STALE = "STALE"
    BELOW_MIN_COUNT = "BELOW_MIN_COUNT"
    EXCLUDED_GROUP = "EXCLUDED_GROUP"
    NO_TEMPLATE = "NO_TEMPLATE"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    MIN_GAP = "MIN_GAP"
    DISMISSED = "DISMISSED"
    NO_EVIDENCE = "NO_EVIDENCE"


LIVE_KINDS = frozenset({"viewing_now", "recent_purchase", "purchases_in_window", "add_to_cart_in_window"})
# Reference groups, narrowest first by default. `everyone` is the unnamed group ("3 other people").
GROUPS = ("category", "country", "first_time", "everyone")


@dataclass(frozen=True)
class Policy:
    """One version of a segment's policy (SPEC 3). Built from code defaults or an admin-edited
    `PolicyConfig` row; `version` is what every notification records."""

    version: str
    name: str = "default"
    allowed_kinds: frozenset[str] = LIVE_KINDS
    # Above the cap the widget says "20+": a lower bound, and a ceiling on consensus intensity.
    display_caps: Mapping[str, int] = field(
        default_factory=lambda: {"viewing_now": 20, "purchases_in_window": 50, "add_to_cart_in_window": 20}
    )
    # Counts are rounded down to these steps ("35+" for 37 with step 5); 1 = exact.
    rounding_steps: Mapping[str, int] = field(default_factory=dict)
    # Minimum true (and displayed) count before an aggregate is shown: below it a number would
    # single out a few people (SPEC 2.7) and say little.
    min_count: int = 3
    # Largest share of a reference group that may be claimed; 0 = no share claims at all.
    max_share_pct: int = 0
    # 1 gentle, 2 moderate, 3 strong: the strongest template wording allowed.
    tier: int = 2
    # Frequency caps: new toasts per page view and per session, seconds between new toasts, and
    # silence after the shopper dismisses one. Updates of a toast on screen are not capped.
    per_page_view: int = 2
    per_session: int = 6
    min_gap_s: int = 15
    dismiss_silence_s: int = 600
    # The widest window a claim of each kind may speak of (SPEC 2.3); for recent_purchase, the
    # oldest purchase that may be shown.
    recency_s: Mapping[str, int] = field(
        default_factory=lambda: {
            "recent_purchase": 3600,
            "purchases_in_window": 7 * 86_400,
            "add_to_cart_in_window": 86_400,
            "viewing_now": 3600,
        }
    )
    # Preference order of reference groups; excluded ones never appear in a message.
    allowed_groups: tuple[str, ...] = ("category", "everyone")
    excluded_groups: frozenset[str] = frozenset()
    # Share of visitors (0–100, by visitor hash) who never see a notification: the control group.
    holdout_pct: float = 0.0

    def summary(self) -> str:
        recent_min = self.recency_s.get("recent_purchase", 3600) // 60
        caps = ", ".join(
            f"{kind.replace('_', ' ')} {cap}+" for kind, cap in sorted(self.display_caps.items())
        )
        return (
            f"nothing below a true count of {self.min_count}; caps: {caps}; at most {self.per_page_view} "
            f"new messages per page and {self.per_session} per visit, {self.min_gap_s} s apart; "
            f"silence for {self.dismiss_silence_s // 60} minutes after you close one; "
            f"purchases older than {recent_min} minutes are never shown"
        )


@dataclass(frozen=True)
class VisitorContext:
    """What the segment rules and reference groups may know of a visitor (SPEC 3). No identity."""

    visitor: str = ""
    category: str = ""
    category_kind: str = "other"
    locale: str = ""
    country: str = ""
    device: str = ""
    returning: str = ""  # "true" / "false" / "" (a store hint; cookieless identity cannot know)
    referrer: str = ""
    campaign: str = ""
    hints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionState:
    """What this shopper has been shown: on this page view, and in this visit."""

    now_s: float
    page_toasts: int = 0
    session_toasts: int = 0
    last_toast_s: float | None = None
    dismissed_s: float | None = None  # when a toast of this kind was last dismissed


@dataclass(frozen=True)
class Template:
    kind: str
    tier: int
    group: str  # one of GROUPS
    singular: str
    plural: str = ""  # empty: the singular serves for every count


class Decision(NamedTuple):
    """A claim that may be shown. Immutable: a named tuple, which is cheaper to build than a
    frozen dataclass (whose constructor sets each field through `object.__setattr__`)."""

    kind: str
    text: str
    displayed: str
    true_value: int
    window_s: int
    evidence: dict
    policy_version: str
    group: str = "everyone"
    # What the text was rendered from, logged with the notification so the audit can render it
    # again (SPEC 7): the exact template text (the store's, or the shipped one as translated),
    # and the language its `{window}` words were rendered in.
    template: str = ""
    language: str = ""

    @property
    def claim(self) -> dict:
        return {"metric": self.kind, "window_s": self.window_s, "displayed": self.displayed}


class Refusal(NamedTuple):
    reason: RefusalReason
    kind: str
    policy_version: str


class _Candidate:
    """The decision in progress. A plain slotted class: steps return altered copies, and
    `dataclasses.replace` cost more than the rest of the pipeline (bench/policy.py)."""

    __slots__ = (
        "metric",
        "policy",
        "context",
        "templates",
        "true_value",
        "displayed_value",
        "displayed",
        "group",
        "group_label",
    )

    def __init__(self, metric: Metric, policy: Policy, context: VisitorContext, templates, true_value: int):
        self.metric, self.policy, self.context, self.templates = metric, policy, context, templates
        self.true_value = true_value
        self.displayed_value = 0
        self.displayed = ""
        self.group = "everyone"
        self.group_label = ""

    def but(self, **changes) -> "_Candidate":
        # Spelled out: a loop of getattr/setattr over the slots was a quarter of a decision.
        copy = _Candidate.__new__(_Candidate)
        copy.metric, copy.policy, copy.context, copy.templates = (
            self.metric,
            self.policy,
            self.context,
            self.templates,
        )
        copy.true_value, copy.displayed_value, copy.displayed = (
            self.true_value,
            self.displayed_value,
            self.displayed,
        )
        copy.group, copy.group_label = self.group, self.group_label
        for name, value in changes.items():
            setattr(copy, name, value)
        return copy


Step = Callable[[_Candidate], "_Candidate | RefusalReason"]


def visitor_bucket(visitor: str) -> float:
    """A stable position in [0, 100) for a visitor hash: the holdout and experiment arms."""
    digest = hashlib.sha256(f"candor-arm:{visitor}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 * 100


def held_out(policy: Policy, visitor: str) -> bool:
    return policy.holdout_pct > 0 and bool(visitor) and visitor_bucket(visitor) < policy.holdout_pct


def _has_evidence(c: _Candidate) -> "_Candidate | RefusalReason":
    return c if c.metric.evidence else RefusalReason.NO_EVIDENCE


def _kind_allowed(c: _Candidate) -> "_Candidate | RefusalReason":
    return c if c.metric.metric in c.policy.allowed_kinds else RefusalReason.KIND_NOT_ALLOWED


def _fresh(c: _Candidate) -> "_Candidate | RefusalReason":
    """Nothing older than the policy's window: a purchase's age, a count's window."""
    limit = c.policy.recency_s.get(c.metric.metric)
    if limit is None:
        return c
    if c.metric.metric == "recent_purchase":
        return c if c.metric.true_value <= limit else RefusalReason.STALE
    return c if c.metric.window_s <= limit else RefusalReason.STALE


def _group(c: _Candidate) -> "_Candidate | RefusalReason":
    """The narrowest reference group that is allowed, not excluded, and true for this claim.

    `everyone` uses the metric's own value; a named group uses the metric's count for that group
    (`metric.groups`), which is never more than the whole."""
    for group in c.policy.allowed_groups:
        if group in c.policy.excluded_groups:
            continue
        if group == "everyone":
            return c.but(true_value=c.metric.true_value, group="everyone", group_label="")
        found = c.metric.groups.get(group)
        if found is not None and found[0]:
            label, value = found
            if c.metric.metric == "recent_purchase" or value >= c.policy.min_count:
                true_value = c.metric.true_value if c.metric.metric == "recent_purchase" else value
                return c.but(true_value=true_value, group=group, group_label=label)
    return RefusalReason.EXCLUDED_GROUP


def _true_value_at_least_min(c: _Candidate) -> "_Candidate | RefusalReason":
    # A recent purchase is one verified purchase, not an aggregate over people: no minimum.
    if c.metric.metric == "recent_purchase":
        return c
    return c if c.true_value >= c.policy.min_count else RefusalReason.BELOW_MIN_COUNT


def _cap_and_round(c: _Candidate) -> "_Candidate | RefusalReason":
    """Never more than the truth: above the cap the cap with "+", else rounded down to the step
    (with "+" when rounding dropped anything). A purchase's age shows in whole minutes, floored."""
    if c.metric.metric == "recent_purchase":
        minutes = c.true_value // 60
        return c.but(displayed_value=minutes, displayed=str(minutes))
    value = c.true_value
    cap = c.policy.display_caps.get(c.metric.metric)
    if cap is not None and value > cap:
        return c.but(displayed_value=cap, displayed=f"{cap}+")
    step = max(1, c.policy.rounding_steps.get(c.metric.metric, 1))
    rounded = value - value % step
    return c.but(displayed_value=rounded, displayed=f"{rounded}+" if rounded < value else str(rounded))


def _displayed_at_least_min(c: _Candidate) -> "_Candidate | RefusalReason":
    if c.metric.metric == "recent_purchase":
        return c
    return c if c.displayed_value >= c.policy.min_count else RefusalReason.BELOW_MIN_COUNT


PIPELINE: tuple[Step, ...] = (
    _has_evidence,
    _kind_allowed,
    _fresh,
    _group,
    _true_value_at_least_min,
    _cap_and_round,
    _displayed_at_least_min,
)


def window_words(window_s: int, *, language: str | None = None) -> str:
    """A rolling window in words: "in the last 24 hours", "in the last 7 days", in `language`
    (default: the active one)."""
    return _window_words_in(language or get_language(), window_s)


@lru_cache(maxsize=256)
def shopper_language(locale: str) -> str:
    """The shipped language a shopper's locale reads (settings.LANGUAGES, translated in
    locale/<lang>/LC_MESSAGES/django.po): "de-de" and "de" → "de"; a locale Candor does not ship
    ("pt-br", "ja") or none → settings.LANGUAGE_CODE (English)."""
    locale = (locale or "").strip().lower().replace("_", "-")
    if not locale:
        return settings.LANGUAGE_CODE
    try:
        return translation.get_supported_language_variant(locale)
    except LookupError:
        return settings.LANGUAGE_CODE


@lru_cache(maxsize=1024)
def _window_words_in(language: str | None, window_s: int) -> str:
    # Translated in `language`, whatever is active: the cache is keyed by it.
    with translation.override(language):
        return _window_words(window_s)


def _window_words(window_s: int) -> str:
    if window_s % 86_400 == 0 and window_s > 86_400:
        return _("in the last {n} days").format(n=window_s // 86_400)
    if window_s % 3600 == 0 and window_s > 3600:
        return _("in the last {n} hours").format(n=window_s // 3600)
    if window_s == 3600:
        return _("in the last hour")
    return _("in the last {n} minutes").format(n=max(1, window_s // 60))


# The shipped templates (tier 1 wording: plain, no exclamation, no superlative), translated
# through Django's machinery. Numbers and labels only through placeholders. Built lazily per
# (kind, group): one translation call per decision, not one per possible wording.
_BUILTIN = {
    ("viewing_now", "everyone"): lambda n: ngettext(
        "{count} other person is viewing this", "{count} other people are viewing this", n
    ),
    ("viewing_now", "category"): lambda n: ngettext(
        "{count} other shopper in {group} is viewing this",
        "{count} other shoppers in {group} are viewing this",
        n,
    ),
    ("viewing_now", "country"): lambda n: ngettext(
        "{count} other shopper from your country is viewing this",
        "{count} other shoppers from your country are viewing this",
        n,
    ),
    ("viewing_now", "first_time"): lambda n: ngettext(
        "{count} other new visitor is viewing this",
        "{count} other new visitors are viewing this",
        n,
    ),
    ("recent_purchase", "everyone"): lambda n: (
        _("Someone bought this just now")
        if n < 1
        else ngettext(
            "Someone bought this {minutes} minute ago", "Someone bought this {minutes} minutes ago", n
        )
    ),
    ("purchases_in_window", "everyone"): lambda n: ngettext(
        "Ordered {count} time {window}", "Ordered {count} times {window}", n
    ),
    ("add_to_cart_in_window", "everyone"): lambda n: ngettext(
        "{count} shopper added this to their cart {window}",
        "{count} shoppers added this to their cart {window}",
        n,
    ),
    ("add_to_cart_in_window", "category"): lambda n: ngettext(
        "{count} shopper in {group} added this to their cart {window}",
        "{count} shoppers in {group} added this to their cart {window}",
        n,
    ),
}


def _builtin(kind: str, group: str, value: int, language: str | None) -> str | None:
    # A purchase is someone's, whatever the reference group: its wording names no group.
    return _builtin_in(language, kind, "everyone" if kind == "recent_purchase" else group, value)


@lru_cache(maxsize=8192)
def _builtin_in(language: str | None, kind: str, group: str, value: int) -> str | None:
    """Translations do not change while a process runs: cache them per language and value."""
    template = _BUILTIN.get((kind, group))
    if template is None:
        return None
    # Translated in `language`, whatever is active: the cache is keyed by it.
    with translation.override(language):
        return template(value)


class BuiltinTemplate(NamedTuple):
    """One shipped template, as the admin shows it beside a store's own (read-only)."""

    kind: str
    group: str
    singular: str  # the wording for a value of 1, placeholders left in
    plural: str  # the wording for other values ("" when the kind has no plural: just now)
    when: str = ""  # when the wording is used, if not for every value


def builtin_templates() -> list[BuiltinTemplate]:
    """The shipped templates in the active language, per kind and reference group, with their
    placeholders: each is rendered at a value of 1 (singular) and 2 (plural), the strings as
    shipped. A recent purchase under a minute also lists its just-now wording."""
    rows = []
    for (kind, group), template in _BUILTIN.items():
        rows.append(BuiltinTemplate(kind, group, template(1), template(2)))
        if kind == "recent_purchase":
            rows.append(BuiltinTemplate(kind, group, template(0), "", when="under a minute"))
    return rows


def _template_text(c: _Candidate, language: str | None) -> str | None:
    """The store's template for (kind, group) at the highest tier the policy allows, else the
    shipped one."""
    kind = c.metric.metric
    if kind == "recent_purchase" and c.displayed_value < 1:
        # Under a minute: the kind's "just now" wording (SPEC 3: `{minutes}` only when ≥ 1). A
        # store's template carries `{minutes}` and would read "0 minutes ago".
        return _builtin(kind, c.group, c.displayed_value, language)
    chosen = None
    for template in c.templates:
        if template.kind == kind and template.group == c.group and template.tier <= c.policy.tier:
            if "{share}" in template.singular and c.policy.max_share_pct <= 0:
                continue  # no share data is claimed unless the policy allows share claims
            if chosen is None or template.tier > chosen.tier:
                chosen = template
    if chosen is not None:
        return chosen.singular if c.displayed_value == 1 or not chosen.plural else chosen.plural
    return _builtin(kind, c.group, c.displayed_value, language)


def template_render(
    *, template: str, displayed: str, window_s: int, group_label: str, language: str | None
) -> str:
    """A template's text for one claim. The policy renders every message with it, and the claims
    audit renders a logged notification again with it (under `translation.override(language)`:
    the `{window}` words are translated in the active language) to check the text shown."""
    # Numbers and labels enter text only through placeholders, already capped (SPEC 3).
    return template.format(
        count=displayed,
        minutes=displayed,
        window=_window_words_in(language, window_s),
        group=group_label,
        product="",
        share="",
    )


def _render(c: _Candidate, language: str | None) -> tuple[str, str] | None:
    """(the template used, its text for this claim), or None when no template fits."""
    pattern = _template_text(c, language)
    if pattern is None:
        return None
    return pattern, template_render(
        template=pattern,
        displayed=c.displayed,
        window_s=c.metric.window_s,
        group_label=c.group_label,
        language=language,
    )


def recipient_refusal(
    *, policy: Policy, visitor: str, session: SessionState | None, is_new: bool
) -> RefusalReason | None:
    """The per-recipient steps: the holdout, then (for a new toast only) the frequency caps."""
    if held_out(policy, visitor):
        return RefusalReason.HELD_OUT
    if session is None or not is_new:
        return None
    if session.dismissed_s is not None and session.now_s - session.dismissed_s < policy.dismiss_silence_s:
        return RefusalReason.DISMISSED
    if session.page_toasts >= policy.per_page_view or session.session_toasts >= policy.per_session:
        return RefusalReason.FREQUENCY_CAP
    if session.last_toast_s is not None and session.now_s - session.last_toast_s < policy.min_gap_s:
        return RefusalReason.MIN_GAP
    return None


_NO_CONTEXT = VisitorContext()
_ACTIVE = "<the active language>"


def decide(
    *,
    metric: Metric,
    policy: Policy,
    context: VisitorContext | None = None,
    session: SessionState | None = None,
    templates: tuple[Template, ...] = (),
    is_new: bool = True,
    language: str | None = _ACTIVE,
) -> Decision | Refusal:
    """Show `metric` to a visitor under `policy`, or refuse with a reason.

    `session=None` skips the frequency caps (the caller applies them per recipient); the holdout
    is checked whenever the context names a visitor. Text is in the shopper's language
    (`shopper_language(context.locale)`) when the context has a locale, else the active one; a
    caller making many decisions passes `language=` once (the lookup is a context-local read, a
    quarter of a decision's cost: bench/policy.py)."""
    context = context or _NO_CONTEXT
    refusal = recipient_refusal(policy=policy, visitor=context.visitor, session=session, is_new=is_new)
    if refusal is not None:
        return Refusal(reason=refusal, kind=metric.metric, policy_version=policy.version)
    candidate = _Candidate(metric, policy, context, templates, metric.true_value)
    for step in PIPELINE:
        result = step(candidate)
        if isinstance(result, RefusalReason):
            return Refusal(reason=result, kind=metric.metric, policy_version=policy.version)
        candidate = result
    if language is _ACTIVE:
        language = shopper_language(context.locale) if context.locale else get_language()
    rendered = _render(candidate, language)
    if rendered is None:
        return Refusal(reason=RefusalReason.NO_TEMPLATE, kind=metric.metric, policy_version=policy.version)
    template, text = rendered
    return Decision(
        kind=metric.metric,
        text=text,
        displayed=candidate.displayed,
        true_value=candidate.true_value,
        window_s=metric.window_s,
        # A named group's label is kept with the evidence: the text is re-rendered from it.
        evidence={
            **metric.evidence,
            "group": candidate.group,
            "group_true_value": candidate.true_value,
            "group_label": candidate.group_label,
        }
        if candidate.group != "everyone"
        else metric.evidence,
        policy_version=policy.version,
        group=candidate.group,
        template=template,
        language=language or "",
    )
