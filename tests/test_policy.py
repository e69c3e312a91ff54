"""The policy layer's decision (policy/decision.py) and segments (policy/segments.py): a unit test
per step, and hypothesis properties for the truthfulness and respect invariants (SPEC 2, 3)."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.policy import Decision, Policy, Refusal, RefusalReason, decide
from notifications.policy.decision import (
    GROUPS,
    LIVE_KINDS,
    SessionState,
    Template,
    VisitorContext,
    held_out,
    recipient_refusal,
    visitor_bucket,
    window_words,
)
from notifications.policy.metric import Metric
from notifications.policy.segments import SegmentRule, default_segments, segment_for

EVIDENCE = {"aggregate": "test", "computed_at": "2026-11-24T00:00:00+00:00"}


def viewing(n, **groups):
    return Metric(metric="viewing_now", true_value=n, window_s=30, evidence=EVIDENCE, groups=groups)


def purchase(age_s):
    return Metric(metric="recent_purchase", true_value=age_s, window_s=3600, evidence={"event_ids": [1]})


POLICY = Policy(version="t-1", min_count=3, display_caps={"viewing_now": 20}, allowed_groups=("everyone",))


# --- steps ---------------------------------------------------------------------------------


def test_below_minimum_is_refused_with_a_reason():
    result = decide(metric=viewing(2), policy=POLICY)
    assert isinstance(result, Refusal) and result.reason == RefusalReason.BELOW_MIN_COUNT


def test_at_minimum_is_shown_exactly():
    result = decide(metric=viewing(3), policy=POLICY)
    assert isinstance(result, Decision)
    assert (result.text, result.displayed) == ("3 other people are viewing this", "3")


def test_above_cap_is_a_lower_bound():
    result = decide(metric=viewing(37), policy=POLICY)
    assert (result.text, result.displayed, result.true_value) == (
        "20+ other people are viewing this",
        "20+",
        37,
    )


def test_rounding_is_always_down_and_marked():
    policy = replace(POLICY, rounding_steps={"viewing_now": 5})
    assert decide(metric=viewing(17), policy=policy).displayed == "15+"
    assert decide(metric=viewing(15), policy=policy).displayed == "15"
    # Rounded below the minimum: refused, never rounded up.
    assert decide(metric=viewing(4), policy=policy).reason == RefusalReason.BELOW_MIN_COUNT


def test_a_kind_the_policy_does_not_allow_is_refused():
    policy = replace(POLICY, allowed_kinds=frozenset())
    assert decide(metric=viewing(9), policy=policy).reason == RefusalReason.KIND_NOT_ALLOWED


def test_a_claim_without_evidence_is_refused():
    bare = Metric(metric="viewing_now", true_value=9, window_s=30, evidence={})
    assert decide(metric=bare, policy=POLICY).reason == RefusalReason.NO_EVIDENCE


def test_recent_purchase_in_minutes_floored_and_stale_outside_its_window():
    assert decide(metric=purchase(8 * 60 + 59), policy=POLICY).text == "Someone bought this 8 minutes ago"
    assert decide(metric=purchase(59), policy=POLICY).text == "Someone bought this just now"
    assert decide(metric=purchase(3601), policy=POLICY).reason == RefusalReason.STALE
    short = replace(POLICY, recency_s={"recent_purchase": 600})
    assert decide(metric=purchase(601), policy=short).reason == RefusalReason.STALE


def test_a_count_over_a_wider_window_than_allowed_is_stale():
    week = Metric(metric="purchases_in_window", true_value=9, window_s=604_800, evidence=EVIDENCE)
    policy = replace(POLICY, recency_s={"purchases_in_window": 86_400})
    assert decide(metric=week, policy=policy).reason == RefusalReason.STALE
    assert decide(metric=week, policy=POLICY).text == "Ordered 9 times in the last 7 days"


def test_the_narrowest_allowed_group_wins_and_an_excluded_one_never_appears():
    metric = viewing(12, category=("Design & Art", 12), country=("your country", 4))
    policy = replace(POLICY, allowed_groups=("country", "category", "everyone"))
    assert decide(metric=metric, policy=policy).text == "4 other shoppers from your country are viewing this"
    no_country = replace(policy, excluded_groups=frozenset({"country"}))
    assert (
        decide(metric=metric, policy=no_country).text == "12 other shoppers in Design & Art are viewing this"
    )
    nothing = replace(policy, excluded_groups=frozenset(GROUPS))
    assert decide(metric=metric, policy=nothing).reason == RefusalReason.EXCLUDED_GROUP


def test_a_group_below_the_minimum_falls_back_to_a_wider_one():
    metric = viewing(9, country=("your country", 2))
    policy = replace(POLICY, allowed_groups=("country", "everyone"))
    assert decide(metric=metric, policy=policy).text == "9 other people are viewing this"


def test_store_templates_by_tier_and_share_only_where_allowed():
    templates = (
        Template("viewing_now", 1, "everyone", "{count} other person here", "{count} other people here"),
        Template("viewing_now", 3, "everyone", "{count} people are looking at this right now"),
        Template("purchases_in_window", 1, "everyone", "{share} of shoppers ordered this {window}"),
    )
    gentle = replace(POLICY, tier=1)
    assert decide(metric=viewing(5), policy=gentle, templates=templates).text == "5 other people here"
    strong = replace(POLICY, tier=3)
    assert decide(metric=viewing(5), policy=strong, templates=templates).text.startswith(
        "5 people are looking"
    )
    counted = Metric(metric="purchases_in_window", true_value=5, window_s=86_400, evidence=EVIDENCE)
    # No share claims allowed: the share template is skipped for the shipped one.
    assert (
        decide(metric=counted, policy=gentle, templates=templates).text
        == "Ordered 5 times in the last 24 hours"
    )


def test_no_template_for_a_group_is_a_refusal_not_a_made_up_text():
    metric = Metric(
        metric="purchases_in_window",
        true_value=9,
        window_s=86_400,
        evidence=EVIDENCE,
        groups={"first_time": ("first-time visitors", 9)},
    )
    policy = replace(POLICY, allowed_groups=("first_time",))
    assert decide(metric=metric, policy=policy).reason == RefusalReason.NO_TEMPLATE


def test_held_out_visitors_get_nothing_deterministically():
    policy = replace(POLICY, holdout_pct=50)
    visitors = [f"visitor-{n}" for n in range(400)]
    out = [v for v in visitors if held_out(policy, v)]
    assert 140 < len(out) < 260, "about half"
    assert out == [v for v in visitors if held_out(policy, v)], "the same visitors every time"
    for visitor in out[:20]:
        result = decide(metric=viewing(9), policy=policy, context=VisitorContext(visitor=visitor))
        assert result.reason == RefusalReason.HELD_OUT


def test_frequency_caps_apply_to_new_toasts_only():
    policy = replace(POLICY, per_page_view=1, per_session=3, min_gap_s=20, dismiss_silence_s=600)
    fresh = SessionState(now_s=1000.0)
    assert recipient_refusal(policy=policy, visitor="v", session=fresh, is_new=True) is None
    used = SessionState(now_s=1000.0, page_toasts=1, session_toasts=1, last_toast_s=900.0)
    assert (
        recipient_refusal(policy=policy, visitor="v", session=used, is_new=True)
        == RefusalReason.FREQUENCY_CAP
    )
    # An update of the toast already on screen is not capped (SPEC 5).
    assert recipient_refusal(policy=policy, visitor="v", session=used, is_new=False) is None
    soon = SessionState(now_s=1000.0, last_toast_s=990.0)
    assert recipient_refusal(policy=policy, visitor="v", session=soon, is_new=True) == RefusalReason.MIN_GAP
    dismissed = SessionState(now_s=1000.0, dismissed_s=700.0)
    assert (
        recipient_refusal(policy=policy, visitor="v", session=dismissed, is_new=True)
        == RefusalReason.DISMISSED
    )


# --- segments --------------------------------------------------------------------------------


def test_first_matching_segment_wins_and_the_default_catches_the_rest():
    segments = default_segments()
    expression = VisitorContext(category_kind="self_expression", locale="ja")
    tools_en = VisitorContext(category_kind="utilitarian", locale="en-us")
    tools_ja = VisitorContext(category_kind="utilitarian", locale="ja")
    other = VisitorContext(category_kind="other", locale="pt-br")
    assert segment_for(segments, expression).policy.name == "gentle"
    assert segment_for(segments, tools_en).policy.name == "gentle", "individualist locale before utility"
    assert segment_for(segments, tools_ja).policy.name == "utilitarian"
    assert segment_for(segments, other).name == "Everyone else"


def test_segment_rules_over_every_field():
    ctx = VisitorContext(
        category="Coffee",
        category_kind="utilitarian",
        locale="de-de",
        country="de",
        device="mobile",
        returning="false",
        referrer="https://news.example/article",
        campaign="winter",
        hints={"tier": "gold"},
    )
    assert SegmentRule(categories=("coffee",)).matches(ctx)
    assert SegmentRule(locales=("de",)).matches(ctx) and not SegmentRule(locales=("d",)).matches(ctx)
    assert SegmentRule(countries=("de",), devices=("mobile",), returning="false").matches(ctx)
    assert SegmentRule(referrer_contains="news.example", campaigns=("winter",)).matches(ctx)
    assert SegmentRule(hints={"tier": "gold"}).matches(ctx)
    assert not SegmentRule(hints={"tier": "silver"}).matches(ctx)
    assert not SegmentRule(devices=("desktop",)).matches(ctx)


def test_defaults_are_ethical_without_tuning():
    for segment in default_segments():
        policy = segment.policy
        assert policy.min_count >= 3 and policy.max_share_pct == 0
        assert policy.per_page_view <= 2 and policy.recency_s["recent_purchase"] <= 3600
    gentle = segment_for(default_segments(), VisitorContext(category_kind="self_expression")).policy
    tools = segment_for(default_segments(), VisitorContext(category_kind="utilitarian", locale="ja")).policy
    assert gentle.display_caps["viewing_now"] < tools.display_caps["viewing_now"]
    assert gentle.tier < tools.tier


# --- properties ------------------------------------------------------------------------------

policies = st.builds(
    Policy,
    version=st.just("p"),
    allowed_kinds=st.frozensets(st.sampled_from(sorted(LIVE_KINDS))),
    display_caps=st.fixed_dictionaries(
        {
            kind: st.integers(1, 500)
            for kind in ("viewing_now", "purchases_in_window", "add_to_cart_in_window")
        }
    ),
    rounding_steps=st.fixed_dictionaries(
        {kind: st.integers(1, 20) for kind in ("viewing_now", "purchases_in_window", "add_to_cart_in_window")}
    ),
    min_count=st.integers(1, 50),
    tier=st.integers(1, 3),
    recency_s=st.fixed_dictionaries(
        {
            "recent_purchase": st.integers(60, 7200),
            "purchases_in_window": st.sampled_from([86_400, 604_800]),
            "add_to_cart_in_window": st.sampled_from([86_400, 604_800]),
            "viewing_now": st.just(3600),
        }
    ),
    allowed_groups=st.lists(st.sampled_from(GROUPS), min_size=1, max_size=4, unique=True).map(tuple),
    excluded_groups=st.frozensets(st.sampled_from(GROUPS)),
    holdout_pct=st.sampled_from([0.0, 0.0, 10.0, 50.0, 100.0]),
)


@st.composite
def metrics(draw):
    kind = draw(st.sampled_from(sorted(LIVE_KINDS)))
    true = draw(st.integers(0, 10**6))
    window = {
        "viewing_now": 30,
        "recent_purchase": 3600,
        "purchases_in_window": draw(st.sampled_from([86_400, 604_800])),
        "add_to_cart_in_window": draw(st.sampled_from([86_400, 604_800])),
    }[kind]
    groups = {}
    if kind != "recent_purchase":
        for group, label in (("category", "Design & Art"), ("country", "your country"), ("first_time", "x")):
            if draw(st.booleans()):
                groups[group] = (label, draw(st.integers(0, true)))
    evidence = draw(st.sampled_from([EVIDENCE, {}]))
    return Metric(metric=kind, true_value=true, window_s=window, evidence=evidence, groups=groups)


@settings(deadline=None, max_examples=400)
@given(metric=metrics(), policy=policies, visitor=st.text(min_size=1, max_size=8))
def test_properties_of_every_decision(metric, policy, visitor):
    result = decide(metric=metric, policy=policy, context=VisitorContext(visitor=visitor))
    if isinstance(result, Refusal):
        return
    # Every emitted notification has evidence, and the holdout never sees anything.
    assert result.evidence
    assert not held_out(policy, visitor)
    # An excluded group never appears; a named group's count is a part of the whole.
    assert result.group not in policy.excluded_groups and result.group in policy.allowed_groups
    assert result.true_value <= metric.true_value
    if metric.metric == "recent_purchase":
        # Nothing outside its recency window; minutes floored.
        assert metric.true_value <= policy.recency_s["recent_purchase"]
        assert int(result.displayed) == metric.true_value // 60
        return
    shown = int(result.displayed.rstrip("+"))
    # Displayed ≤ true, never under the minimum, "+" whenever anything was dropped.
    assert shown <= result.true_value and result.true_value >= policy.min_count and shown >= policy.min_count
    assert result.displayed.endswith("+") == (shown < result.true_value)
    assert metric.window_s <= policy.recency_s[metric.metric]
    assert result.displayed in result.text
    # Every digit in the text came from a placeholder: the count or the window in words.
    rest = result.text.replace(result.displayed, "").replace(window_words(metric.window_s), "")
    assert not any(ch.isdigit() for ch in rest)


@st.composite
def event_sequences(draw):
    """A shopper's page views over time: new toasts offered, dismissals, page loads."""
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from(["offer", "offer", "dismiss", "new_page"]), st.floats(0, 120)),
            max_size=60,
        )
    )
    return steps


@settings(deadline=None, max_examples=300)
@given(
    steps=event_sequences(),
    per_page=st.integers(0, 4),
    per_session=st.integers(0, 8),
    gap=st.integers(0, 60),
    silence=st.integers(0, 900),
)
def test_frequency_caps_hold_over_any_sequence(steps, per_page, per_session, gap, silence):
    policy = replace(
        POLICY, per_page_view=per_page, per_session=per_session, min_gap_s=gap, dismiss_silence_s=silence
    )
    now = 0.0
    page = session = 0
    last = dismissed = None
    shown_at: list[float] = []
    pages: list[int] = [0]
    for action, advance in steps:
        now += advance
        if action == "new_page":
            page = 0
            pages.append(0)
        elif action == "dismiss":
            dismissed = now
        else:
            state = SessionState(
                now_s=now, page_toasts=page, session_toasts=session, last_toast_s=last, dismissed_s=dismissed
            )
            if recipient_refusal(policy=policy, visitor="v", session=state, is_new=True) is None:
                assert dismissed is None or now - dismissed >= silence
                page += 1
                session += 1
                pages[-1] += 1
                last = now
                shown_at.append(now)
    assert all(count <= per_page for count in pages)
    assert len(shown_at) <= per_session
    assert all(b - a >= gap for a, b in zip(shown_at, shown_at[1:], strict=False))


def test_visitor_buckets_spread_over_the_range():
    buckets = [visitor_bucket(f"v{n}") for n in range(1000)]
    assert 0 <= min(buckets) < 5 and 95 < max(buckets) < 100


def test_a_store_recent_purchase_template_never_reads_zero_minutes():
    """SPEC 3: `{minutes}` only when it is at least 1; under a minute, the kind's "just now"."""
    templates = (Template("recent_purchase", 1, "everyone", "A shopper bought this {minutes} minutes ago"),)
    just_now = decide(metric=purchase(30), policy=POLICY, templates=templates)
    assert just_now.text == "Someone bought this just now"
    assert (
        decide(metric=purchase(5 * 60), policy=POLICY, templates=templates).text
        == "A shopper bought this 5 minutes ago"
    )
