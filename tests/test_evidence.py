"""The verdict rules and the calibrated tests of losstopo.evidence, on cases whose answer is known."""

import itertools
import math

import numpy as np
import pytest

from losstopo import evidence
from losstopo.evidence import (below_threshold_test, binomial_test, group_null_rate, group_test, trend_min_p,
                               trend_null_rate, trend_test)
from losstopo.report import Claim, finalise


def test_perfect_decrease_is_one_of_n_factorial_orderings():
    result = trend_test([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert result.effect_size == pytest.approx(-1.0)
    assert result.p_value == pytest.approx(1 / 120) and result.min_attainable_p == pytest.approx(1 / 120)
    assert result.p_opposite == pytest.approx(1.0)


def test_ties_in_x_raise_the_attainable_p_by_the_replicate_orderings():
    # 3 levels x 2 replicates: 2!^3 of the 6! orderings are perfectly decreasing.
    x = [1, 1, 2, 2, 3, 3]
    assert trend_min_p(np.asarray(x, float), 4000, exact=True) == pytest.approx(8 / 720)
    result = trend_test(x, [6, 5, 4, 3, 2, 1])
    assert result.p_value == pytest.approx(8 / 720)
    # two sets at each of three depths cannot reach p < 0.05 with fewer levels
    assert trend_test([1, 1, 2, 2], [4, 3, 2, 1]).min_attainable_p == pytest.approx(4 / 24)


def test_monte_carlo_trend_p_is_bounded_by_one_over_draws():
    x = np.repeat([10, 15, 20, 25], 6)  # 24! / 6!^4 ~ 3e12 arrangements: drawn, not enumerated
    result = trend_test(x, -x + 0.01 * np.arange(24), draws=999)
    assert result.p_value == pytest.approx(1 / 1000) and result.min_attainable_p == pytest.approx(1 / 1000)
    assert result.test.endswith("Monte Carlo over 999 relabellings")


def test_two_sets_at_five_depths_are_tested_exactly_over_their_113400_arrangements():
    # the FC design: only the perfectly decreasing arrangement reaches the observed S (distinct values)
    x = np.repeat([2, 3, 4, 6, 8], 2)
    result = trend_test(x, -x + 0.01 * np.arange(10), draws=999)
    assert result.p_value == 1 / 113400 and result.min_attainable_p == pytest.approx(1 / 113400)
    assert result.test.endswith("exact over all 113,400 relabellings")


def test_level_arrangements_are_each_distinct_assignment_once():
    x = [1, 1, 2, 2, 2, 3]
    rows = evidence.level_arrangements(x)
    assert len(rows) == math.factorial(6) // (2 * 6) == 60
    assert len({tuple(row) for row in rows}) == 60
    assert all(sorted(row) == sorted(x) for row in rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_exact_trend_p_is_the_fraction_of_all_n_factorial_permutations(seed):
    # the definition, by brute force over all 8! orderings of the values, with ties in x and in y
    x = np.array([2, 2, 3, 3, 4, 4, 6, 6], float)
    y = np.round(np.random.default_rng(seed).standard_normal(8), 1)
    y[3] = y[5]
    permutations = np.array(list(itertools.permutations(range(8))))
    null = evidence.kendall_s(x, y[permutations])
    observed = evidence.kendall_s(x, y[None])[0]
    result = trend_test(x, y)
    assert result.p_value == pytest.approx(np.mean(null <= observed + 1e-12), abs=1e-12)
    assert result.p_opposite == pytest.approx(np.mean(null >= observed - 1e-12), abs=1e-12)


def test_group_test_enumerates_all_labellings():
    result = group_test([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], ("no BN", "BN"))
    assert result.p_value == pytest.approx(1 / 20) and result.effect_size == pytest.approx(1.0)
    assert result.min_attainable_p == pytest.approx(1 / 20)
    assert group_test([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]).p_opposite == pytest.approx(1 / 20)
    assert group_test([1.0], [2.0]).min_attainable_p == pytest.approx(0.5)  # one network against one


def test_binomial_and_signed_rank_tests():
    assert binomial_test(10, 10).p_value == pytest.approx(0.5 ** 10)
    assert binomial_test(0, 10).p_opposite == pytest.approx(0.5 ** 10)
    result = below_threshold_test([0.1, 0.2, 0.05, 0.3, 0.15], 1.0)
    assert result.p_value == pytest.approx(1 / 32) and result.min_attainable_p == pytest.approx(1 / 32)


def _claim(result, converged=1.0, null_rate=0.04, premise_ok=None):
    return Claim("c", "paper", result, "real", "test", "network", converged, null_rate, "iid", premise="p" if
                 premise_ok is not None else "", premise_ok=premise_ok)


def test_every_verdict_class_from_a_constructed_case():
    decreasing = trend_test([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])  # p = 1/720
    increasing = trend_test([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    flat = trend_test([1, 2, 3, 4, 5, 6], [1, 3, 2, 6, 4, 5])
    claims = [_claim(decreasing), _claim(increasing), _claim(flat), _claim(trend_test([1, 2], [2, 1])),
              _claim(decreasing, converged=0.5), _claim(decreasing, converged=float("nan")),
              _claim(decreasing, premise_ok=False), _claim(decreasing, null_rate=0.2)]
    finalise(claims)
    assert [c.verdict for c in claims] == ["supported", "contradicted", "inconclusive", "underpowered",
                                           "not converged", "not converged", "premise failed", "inconclusive"]
    # one Holm family: the four claims that passed the gates
    assert claims[0].p_adjusted == pytest.approx(4 / 720)
    assert "Holm over the 4 claims" in claims[0].adjustment
    assert math.isnan(claims[3].p_adjusted)


@pytest.mark.parametrize("design", [[2, 3, 4, 6, 8], list(np.repeat([2, 3, 4, 6, 8], 2)),
                                    list(np.repeat([10, 15, 20, 25], 6))])
def test_trend_test_rejects_at_most_alpha_on_exchangeable_values(design):
    rate = trend_null_rate(design, draws=400)
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)


def test_group_test_rejects_at_most_alpha_on_exchangeable_values():
    assert group_null_rate(5, 5, draws=400) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)


def test_a_test_that_always_rejects_is_measured_as_such():
    """The null-rate machinery can fail: a test that ignores its data has rate 1."""
    always = lambda rng: trend_test([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])  # noqa: E731
    assert evidence.null_rate(always, draws=20) == 1.0


def test_linear_statistic_test_of_a_difference_of_slopes():
    from benchmarks.cnn_channels import slope_weights
    from losstopo.minima_stage import Variant

    def row(layers, channels, parameters):
        return {"variant": Variant("k", "d", "m", {"conv_layers": layers, "channels": channels,
                                                   "parameters": parameters})}

    rows = [row(1, 32, 100), row(1, 64, 1000), row(2, 32, 1000), row(3, 32, 10000)]
    within, across = slope_weights(rows, "conv_layers"), slope_weights(rows, "channels")
    values = np.array([4.0, 3.0, 1.0, 0.0])  # within CNN-1: -1 per decade; across C=32: -2 per decade
    assert values @ within == pytest.approx(-1.0) and values @ across == pytest.approx(-2.0)
    result = evidence.linear_statistic_test(values, across - within, "t", "slope difference")
    assert result.statistic == pytest.approx(-1.0)
    assert 1 / 24 <= result.min_attainable_p <= result.p_value <= 1
    assert evidence.linear_null_rate(across - within, draws=200) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)


def test_differences_below_the_resolution_become_ties_and_cannot_make_a_trend():
    from losstopo.evidence import at_resolution, trend_test

    depths = [2, 2, 3, 3, 4, 4, 6, 6, 8, 8]
    tiny = [5e-5, 4e-5, 3e-5, 3e-5, 2e-5, 1e-5, 0, 0, 0, 0]  # perfectly decreasing, all below 1e-4
    assert trend_test(depths, tiny).p_value < 0.05
    rounded = at_resolution(tiny, 1e-4)
    assert list(rounded) == [0.0] * 10
    assert trend_test(depths, rounded).p_value == 1.0
    assert list(at_resolution([0.26e-3, 0.34e-3], 1e-4)) == pytest.approx([3e-4, 3e-4])
    assert list(at_resolution(tiny, 0)) == tiny


def test_trend_test_cannot_reject_tied_values():
    """All values tied (e.g. every TO-score 0 at the paths' resolution): no relabelling changes S, so the
    permutation test conditioned on these values cannot reach alpha: the claim is underpowered, not
    inconclusive."""
    result = trend_test([2, 2, 3, 3, 4, 4, 6, 6, 8, 8], [0.0] * 10)
    assert result.p_value == 1.0 and result.min_attainable_p == 1.0
    assert evidence.gate(1.0, None, result.min_attainable_p) == "underpowered"


def test_trend_test_min_p_conditions_on_ties():
    """x = 1, 2, 3 and values 0, 0, 1: the best decreasing order (1, 0, 0) has S = -2, reached by 2 of the 6
    relabellings (1/3), above the 1/6 of three distinct values."""
    assert trend_test([1, 2, 3], [0, 0, 1]).min_attainable_p == pytest.approx(1 / 3)
    assert trend_test([1, 2, 3], [0, 0, 1], "increasing").min_attainable_p == pytest.approx(1 / 3)
    assert trend_test([1, 2, 3], [0, 0.5, 1]).min_attainable_p == pytest.approx(1 / 6)


def test_group_test_min_p_conditions_on_ties():
    """a = (1, 1), b = (1, 0): ranks (3, 3, 3, 1); the largest rank sum of two, 6, is reached by 3 of the
    6 labellings; all tied: 1."""
    assert group_test([1, 1], [1, 0]).min_attainable_p == pytest.approx(3 / 6)
    assert group_test([1, 1], [1, 1]).min_attainable_p == 1.0
    assert group_test([3, 2], [1, 0]).min_attainable_p == pytest.approx(1 / 6)


def test_interval_trend_test_with_point_bounds_is_the_trend_test():
    x, y = [1, 1, 2, 2, 3, 3], [6, 4, 5, 3, 1, 2]
    point, bounded = trend_test(x, y), evidence.interval_trend_test(x, y, y)
    assert bounded.p_value == pytest.approx(point.p_value) and bounded.p_opposite == pytest.approx(point.p_opposite)
    assert bounded.statistic == point.statistic


def test_interval_trend_test_disjoint_ordered_bounds_reach_the_design_minimum():
    # 3 levels x 2 replicates, every interval of a lower level above every interval of a higher one
    x = [1, 1, 2, 2, 3, 3]
    lower, upper = [5.0, 5.2, 3.0, 3.1, 1.0, 1.1], [5.9, 6.0, 3.9, 4.0, 1.5, 1.4]
    result = evidence.interval_trend_test(x, lower, upper)
    assert result.p_value == pytest.approx(8 / 720)
    assert result.effect_size == pytest.approx(trend_test(x, [6, 5, 4, 3, 2, 1]).effect_size)  # tau-b, ties in x
    # one overlap between levels 2 and 3 makes that pair count against the claim: S rises by 2
    overlapping = evidence.interval_trend_test(x, lower, [5.9, 6.0, 3.9, 4.0, 3.05, 1.4])
    assert overlapping.statistic == result.statistic + 2 and overlapping.p_value > result.p_value


def test_interval_trend_test_bounds_the_p_of_every_assignment_inside_the_bounds():
    rng = np.random.default_rng(3)
    x = np.repeat([1, 2, 3, 4], 2)
    centre = np.array([8, 7, 6.5, 5, 4.6, 5.2, 2, 1.5])
    lower, upper = centre - 0.5, centre + 0.5
    bounded = evidence.interval_trend_test(x, lower, upper)
    for _ in range(50):
        values = rng.uniform(lower, upper)
        point = trend_test(x, values)
        assert point.p_value <= bounded.p_value + 1e-12 and point.p_opposite <= bounded.p_opposite + 1e-12
    with pytest.raises(ValueError, match="lower bound"):
        evidence.interval_trend_test(x, upper, lower)


def test_interval_trend_test_rejects_at_most_alpha_on_exchangeable_values():
    rate = evidence.interval_trend_null_rate(list(np.repeat([10, 15, 20, 25], 6)), draws=200)
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)
