"""The experiment statistics (SPEC 4): checked against statsmodels, and on simulated experiments
whose true effect is known, the intervals cover it at about the nominal 95%. Assignment is stable
and balanced."""

import hashlib
import random

import pytest
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    proportion_confint,
    samplesize_proportions_2indep_onetail,
)

from notifications.experiments import (
    HOLDOUT,
    arm_assign,
    difference_interval,
    ratio_interval,
    sample_size_control,
    wilson_interval,
)
from notifications.policy.decision import Policy
from notifications.policy.segments import Segment, SegmentRule

CASES = [(3, 50, 1, 60), (45, 1000, 30, 1000), (120, 2400, 90, 2500), (1, 9, 7, 11), (500, 500, 490, 500)]


@pytest.mark.parametrize(("x1", "n1", "x0", "n0"), CASES)
def test_wilson_matches_statsmodels(x1, n1, x0, n0):
    for x, n in ((x1, n1), (x0, n0)):
        ours = wilson_interval(x, n)
        low, high = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert ours.low == pytest.approx(low, abs=1e-9) and ours.high == pytest.approx(high, abs=1e-9)


@pytest.mark.parametrize(("x1", "n1", "x0", "n0"), CASES)
def test_difference_interval_is_newcombe_as_statsmodels_computes_it(x1, n1, x0, n0):
    ours = difference_interval(x1, n1, x0, n0)
    low, high = confint_proportions_2indep(x1, n1, x0, n0, method="newcomb", compare="diff", alpha=0.05)
    assert ours.low == pytest.approx(low, abs=1e-9) and ours.high == pytest.approx(high, abs=1e-9)


@pytest.mark.parametrize(("x1", "n1", "x0", "n0"), [c for c in CASES if c[0] and c[2]])
def test_ratio_interval_is_katz_log_as_statsmodels_computes_it(x1, n1, x0, n0):
    ratio, ours = ratio_interval(x1, n1, x0, n0)
    low, high = confint_proportions_2indep(x1, n1, x0, n0, method="log", compare="ratio", alpha=0.05)
    assert ratio == pytest.approx((x1 / n1) / (x0 / n0))
    assert ours.low == pytest.approx(low, rel=1e-9) and ours.high == pytest.approx(high, rel=1e-9)


def test_a_ratio_with_an_empty_cell_is_still_finite_and_none_when_both_are_empty():
    ratio, interval = ratio_interval(0, 100, 5, 100)
    assert 0 < interval.low < ratio < interval.high < 100
    assert ratio_interval(0, 100, 0, 100) is None
    assert ratio_interval(1, 0, 5, 100) is None


@pytest.mark.parametrize(("p0", "lift", "ratio"), [(0.05, 0.10, 1.0), (0.02, 0.25, 9.0), (0.3, -0.1, 0.5)])
def test_sample_size_matches_statsmodels_and_gives_80_percent_power(p0, lift, ratio):
    n0 = sample_size_control(p0=p0, relative_lift=lift, ratio=ratio)
    p1 = p0 * (1 + lift)
    # statsmodels' sample 1 is our treated arm: nobs2 = ratio * nobs1, so its ratio is ours inverted.
    theirs = samplesize_proportions_2indep_onetail(p1 - p0, p0, 0.8, ratio=1 / ratio, alpha=0.05)
    assert n0 * ratio == pytest.approx(theirs, rel=1e-6)
    power = power_proportions_2indep(
        p1 - p0, p0, n0 * ratio, ratio=1 / ratio, alpha=0.05, return_results=False
    )
    assert power == pytest.approx(0.8, abs=0.01)


def test_sample_size_is_none_when_it_cannot_be_known():
    assert sample_size_control(p0=0.0, relative_lift=0.1) is None
    assert sample_size_control(p0=0.95, relative_lift=0.1) is None  # p1 would pass 100%


@pytest.mark.parametrize(("p0", "p1", "n0", "n1"), [(0.05, 0.06, 4000, 4000), (0.10, 0.08, 500, 4500)])
def test_the_intervals_cover_a_known_true_effect_about_95_percent_of_the_time(p0, p1, n0, n1):
    rng = random.Random(20261125)  # fixed: the test is deterministic, the data still random-like
    runs = 2000
    covered_diff = covered_ratio = 0
    for _ in range(runs):
        x0 = sum(rng.random() < p0 for _ in range(n0))
        x1 = sum(rng.random() < p1 for _ in range(n1))
        covered_diff += difference_interval(x1, n1, x0, n0).covers(p1 - p0)
        covered_ratio += ratio_interval(x1, n1, x0, n0)[1].covers(p1 / p0)
    # 2,000 runs: the binomial standard error of a 95% coverage is 0.5 points; allow ±1.5.
    for covered in (covered_diff, covered_ratio):
        assert 0.935 <= covered / runs <= 0.965, covered / runs


def _visitors(n):
    return [hashlib.sha256(f"v{i}".encode()).hexdigest()[:32] for i in range(n)]


def _segment(variants=()):
    return Segment("Everyone", SegmentRule(), Policy(version="base-1", name="cap 10"), variants)


def test_assignment_is_stable_and_balanced_across_holdout_and_variants():
    cap50 = Policy(version="v-1", name="cap 50")
    cap99 = Policy(version="w-1", name="cap 99")
    segment = _segment(((cap50, 30.0), (cap99, 20.0)))
    visitors = _visitors(60_000)
    arms = [arm_assign(visitor=v, segment=segment, site_holdout_pct=10).name for v in visitors]
    again = [arm_assign(visitor=v, segment=segment, site_holdout_pct=10).name for v in visitors]
    assert arms == again  # deterministic: a visitor keeps an arm
    share = {name: arms.count(name) / len(arms) for name in set(arms)}
    # 10% held out; of the rest 30% / 20% / 50%. 60,000 draws: SE ≤ 0.2 points; allow 1.
    expected = {HOLDOUT: 0.10, "cap 50": 0.27, "cap 99": 0.18, "cap 10": 0.45}
    for name, value in expected.items():
        assert share[name] == pytest.approx(value, abs=0.01), (name, share)


def test_the_variant_draw_is_independent_of_the_holdout_draw():
    segment = _segment(((Policy(version="v-1", name="cap 50"), 50.0),))
    visitors = _visitors(40_000)
    with_holdout = {v: arm_assign(visitor=v, segment=segment, site_holdout_pct=50).name for v in visitors}
    without = {v: arm_assign(visitor=v, segment=segment, site_holdout_pct=0).name for v in visitors}
    # Among visitors the holdout lets through, the variant split is still 50/50 and unchanged.
    through = [v for v in visitors if with_holdout[v] != HOLDOUT]
    assert all(with_holdout[v] == without[v] for v in through)
    assert sum(without[v] == "cap 50" for v in through) / len(through) == pytest.approx(0.5, abs=0.015)


def test_raising_the_holdout_only_moves_visitors_into_it():
    segment = _segment()
    visitors = _visitors(5000)
    small = {v for v in visitors if arm_assign(visitor=v, segment=segment, site_holdout_pct=5).held_out}
    large = {v for v in visitors if arm_assign(visitor=v, segment=segment, site_holdout_pct=20).held_out}
    assert small < large


def test_a_policy_s_own_holdout_still_applies_inside_its_arm():
    segment = Segment("S", SegmentRule(), Policy(version="b-1", name="base", holdout_pct=100))
    assert arm_assign(visitor=_visitors(1)[0], segment=segment, site_holdout_pct=0).held_out
