"""losstopo.robustness: the robustness of the barcode of minima over subsets of minima (Fig. 7) and its test,
on cases whose answer is known."""

import math

import numpy as np
import pytest

from losstopo.robustness import (mean_cv, mean_cvs, robustness_null_rate, robustness_summary, robustness_test,
                                 shuffled_barriers, spread)


def test_spread_is_the_population_std_over_the_enumeration():
    assert spread([]) == {"n": 0, "mean": None, "std": None, "cv": None}
    assert spread([1.0, 3.0]) == {"n": 2, "mean": 2.0, "std": 1.0, "cv": 0.5}
    assert spread([0.0, 0.0])["cv"] is None  # no CV of a zero mean


def test_robustness_summary_of_three_minima_by_hand():
    # Minima 0, 1, 2 at losses 0, 1, 2; curve maxima 0-1: 3, 0-2: 5, 1-2: 4. Algorithm 1 on each subset:
    # {0, 1}: h_1 = 3; {0, 2}: h_2 = 5; {1, 2}: h_2 = 4; all three: h_1 = 3, h_2 = min(5, 4) = 4.
    losses = [0.0, 1.0, 2.0]
    matrix = np.array([[np.nan, 3.0, 5.0], [3.0, np.nan, 4.0], [5.0, 4.0, np.nan]])
    summary = robustness_summary(losses, matrix, [1, 2, 3, 7], fixed_requested=5)
    assert summary["sizes"] == [2, 3] and summary["n_minima"] == 3 and summary["global_minimum"] == 0
    assert summary["values"] == [{"size": 2, "minima": [[], [3.0], [5.0, 4.0]]},
                                 {"size": 3, "minima": [[], [3.0], [4.0]]}]
    pooled = summary["per_minimum"]
    assert [row["n"] for row in pooled] == [0, 2, 3]
    assert [row["full_height"] for row in pooled] == [math.inf, 3.0, 4.0]
    assert pooled[1]["cv"] == 0.0
    assert pooled[2]["mean"] == pytest.approx(13 / 3) and pooled[2]["std"] == pytest.approx(math.sqrt(2) / 3)
    assert summary["mean_cv"] == pytest.approx((0.0 + (math.sqrt(2) / 3) / (13 / 3)) / 2)
    # (b) the requested fixed minimum 5 is clamped to the last one, 2: not the global minimum
    fixed = summary["fixed_minimum"]
    assert (fixed["index"], fixed["requested"], fixed["is_global_minimum"]) == (2, 5, False)
    assert fixed["by_size"] == [{"size": 2, "n": 2, "mean": 4.5, "std": 0.5, "cv": 0.5 / 4.5},
                                {"size": 3, "n": 1, "mean": 4.0, "std": 0.0, "cv": 0.0}]
    # the claim's points: subsets smaller than the whole set, minima with at least two finite bars there
    assert summary["trend_points"] == [{"size": 2, "minimum": 2, "cv": pytest.approx(1 / 9)}]
    assert summary["mean_cv_by_size"] == [{"size": 2, "mean_cv": pytest.approx(1 / 9)}, {"size": 3, "mean_cv": None}]


def test_robustness_is_no_longer_supported_on_random_path_maxima():
    """The old procedure said 'supported' in 24-100% of random landscapes; the restated one, whose null is
    the construction itself, rejects at about alpha."""
    assert robustness_null_rate(5, (2, 3, 4, 5), draws=400) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)


def test_shuffled_barriers_keep_every_maximum_above_its_minima_and_the_barriers_as_a_set():
    rng = np.random.default_rng(0)
    losses = rng.random(6)
    floors = np.maximum.outer(losses, losses)
    matrix = floors + rng.exponential(1.0, (6, 6))
    matrix = np.triu(matrix, 1) + np.triu(matrix, 1).T
    np.fill_diagonal(matrix, np.nan)
    upper = np.triu_indices(6, 1)
    shuffled = shuffled_barriers(losses, matrix, rng)
    assert np.array_equal(shuffled, shuffled.T, equal_nan=True) and np.isnan(np.diag(shuffled)).all()
    assert (shuffled[upper] >= floors[upper]).all()
    assert np.allclose(np.sort(shuffled[upper] - floors[upper]), np.sort(matrix[upper] - floors[upper]))
    assert not np.allclose(shuffled[upper], matrix[upper])


def test_robustness_test_detects_a_landscape_whose_bars_do_not_depend_on_the_subset():
    # Every path's maximum is set by its higher end point, so h_p is the same on every subset that holds a
    # lower minimum (CV 0); the same values shuffled over the pairs make h_p depend on the subset.
    losses = np.arange(6) * 0.1
    higher = np.maximum.outer(np.arange(6), np.arange(6))
    matrix = losses[higher] + 0.5 + 0.1 * higher
    np.fill_diagonal(matrix, np.nan)
    result = robustness_test(losses, matrix, [2, 3, 4, 5, 6], draws=199)
    assert result.statistic == pytest.approx(0.0) and result.p_value == pytest.approx(1 / 200)


def test_the_batched_statistic_is_the_summarys_mean_cv_draw_by_draw():
    """``mean_cvs`` (all null draws at once) against the summary built subset by subset, on landscapes with tied
    losses, missing paths and constant maxima (every CV 0, which must count as 0, not as missing)."""
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 6):
        losses = np.round(rng.random(n), 1)  # ties, broken by index
        matrices = []
        for kind in range(4):
            matrix = np.maximum.outer(losses, losses) + rng.exponential(1.0, (n, n))
            matrix = np.triu(matrix, 1) + np.triu(matrix, 1).T
            if kind == 1:
                matrix[0, n - 1] = matrix[n - 1, 0] = np.nan
            if kind == 2:
                matrix[:] = 1.0 + losses.max()
            np.fill_diagonal(matrix, np.nan)
            matrices.append(matrix)
        batched = mean_cvs(losses, np.stack(matrices), [2, 3, 4, 5])
        for matrix, value in zip(matrices, batched):
            expected = robustness_summary(losses, matrix, [2, 3, 4, 5], 0)["mean_cv"]
            if expected is None:
                assert np.isnan(value) and mean_cv(losses, matrix, [2, 3, 4, 5]) is None
            else:
                assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)
                assert mean_cv(losses, matrix, [2, 3, 4, 5]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert mean_cvs(losses, np.stack(matrices), [2, 3, 4, 5])[2] == pytest.approx(0.0, abs=1e-12)
