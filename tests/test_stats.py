import numpy as np
import pytest
from scipy import stats as scipy_stats

from losstopo.stats import theil_sen_slope, trend_test, verdict


def test_perfect_decrease_has_tau_minus_one_and_exact_p():
    result = trend_test([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert result.statistic == pytest.approx(-1.0)
    assert result.p_value == pytest.approx(1 / 120)  # one of 5! orderings is perfectly decreasing
    assert verdict(result) == "supported"


def test_increase_does_not_support_a_decrease():
    result = trend_test([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert result.statistic > 0 and result.p_value > 0.5
    assert verdict(result) == "not supported"


def test_ties_in_x_and_nonfinite_values_are_handled():
    x = [2, 2, 2, 4, 4, 4, 8, 8, 8, 8]
    y = [3.0, 2.9, 3.1, 2.0, 2.2, 1.9, 1.0, 1.1, 0.9, np.inf]
    result = trend_test(x, y)
    assert result.n == 9
    tau, p = scipy_stats.kendalltau(x[:9], y[:9], alternative="less")
    assert result.p_value == pytest.approx(p) and result.statistic == pytest.approx(tau)


def test_theil_sen_slope_of_a_line():
    assert theil_sen_slope([0, 1, 2, 3], [1, -1, -3, -5]) == pytest.approx(-2.0)
