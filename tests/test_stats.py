import pytest

from losstopo.stats import holm, theil_sen_slope


def test_theil_sen_slope_of_a_line():
    assert theil_sen_slope([0, 1, 2, 3], [1, -1, -3, -5]) == pytest.approx(-2.0)


def test_theil_sen_slope_is_the_median_pairwise_slope_and_ignores_an_outlier_and_nan():
    # pairwise slopes: 1 (six pairs without x = 4), 37, 19, 13, 10 -> median 1; least squares gives 8.2
    assert theil_sen_slope([0, 1, 2, 3, 4], [0, 1, 2, 3, 40]) == pytest.approx(1.0)
    assert theil_sen_slope([0, 1, 2, 3], [0, float("nan"), 2, 3]) == pytest.approx(1.0)


def test_holm_matches_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, float("nan"), 0.04])  # NaN stays NaN and is not counted in m
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04) and adjusted[1] != adjusted[1]
    assert holm([]) == []
