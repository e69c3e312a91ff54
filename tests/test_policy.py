from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.metrics import Metric
from notifications.policy import Decision, Policy, Refusal, RefusalReason, decide


def viewing(n):
    return Metric(metric="viewing_now", true_value=n, window_s=30, evidence={})


POLICY = Policy(version="t-1", min_count=3, display_caps={"viewing_now": 20})


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


def test_a_kind_the_policy_does_not_allow_is_refused():
    policy = Policy(version="t-2", allowed_kinds=frozenset())
    assert decide(metric=viewing(9), policy=policy).reason == RefusalReason.KIND_NOT_ALLOWED


@settings(deadline=None)
@given(true=st.integers(min_value=0, max_value=10**6), min_count=st.integers(1, 50), cap=st.integers(1, 500))
def test_the_displayed_number_is_never_above_the_truth(true, min_count, cap):
    policy = Policy(version="p", min_count=min_count, display_caps={"viewing_now": cap})
    result = decide(metric=viewing(true), policy=policy)
    if isinstance(result, Refusal):
        assert true < min_count or min(true, cap) < min_count
        return
    shown = int(result.displayed.rstrip("+"))
    assert shown <= true and shown >= min_count
    assert result.displayed.endswith("+") == (true > cap)
    assert result.text.startswith(result.displayed + " ")
