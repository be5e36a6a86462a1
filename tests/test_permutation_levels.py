"""Fig. 2's toy claim "the loss at the permutation point differs between neuron pairs": the homogeneity
test (Cochran's Q), its size on its null model, and the report claim built from a topology summary."""

import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.permutation_barrier.claims import distinct_levels, level_error, toy_level_claim
from losstopo.evidence import NULL_RATE_BOUND, gate, homogeneity_null_rate, homogeneity_test, null_rate
from losstopo.report import finalise

PAIRS = [(l, m) for l in range(5) for m in range(l + 1, 5)]
# the cpu run's levels (reports/cpu): six pairs on one level, four above it by a factor of 2 to 3
CPU_LEVELS = [0.003366, 0.004229, 0.001362, 0.00136, 0.003396, 0.001364, 0.001366, 0.002784, 0.00136, 0.001363]


def test_q_is_the_inverse_variance_dispersion_with_its_chi_squared_tail():
    result = homogeneity_test([0.0, 2.0], [1.0, 1.0])
    assert result.statistic == pytest.approx(2.0)  # mean 1: (1² + 1²) / 1
    assert result.p_value == pytest.approx(stats.chi2.sf(2.0, 1))
    assert result.p_opposite == pytest.approx(stats.chi2.cdf(2.0, 1))
    assert result.min_attainable_p == 0.0 and result.n == 2
    # inverse-variance weights: the precise value pulls the mean
    weighted = homogeneity_test([0.0, 3.0], [1.0, 2.0])
    assert weighted.statistic == pytest.approx(9 / 5)  # mean 3/5: (3/5)² + (12/5)² / 4


def test_clearly_different_levels_are_significant_and_equal_ones_are_not():
    different = homogeneity_test(CPU_LEVELS, [1e-9] * 10, relative_floor=0.01)
    assert different.p_value < 1e-12 and different.p_opposite > 0.99 and different.effect_size > 10
    equal = homogeneity_test([0.00136 * (1 + 0.002 * k) for k in (-2, -1, 0, 0, 1, 2, 1, -1, 0, 2)],
                             [1e-9] * 10, relative_floor=0.01)  # within 0.4 %: one level at 1 % resolution
    assert equal.p_value > 0.5
    assert equal.p_opposite < 0.05  # they agree better than the resolution: the opposite direction
    rng = np.random.default_rng(7)
    errors = np.array([0.5, 1.0, 2.0, 1.0, 0.5, 1.5])
    noisy = homogeneity_test(3.0 + errors * rng.standard_normal(6), errors)  # one level, errors as stated
    assert 0.05 < noisy.p_value < 0.95


def test_the_relative_floor_sets_the_resolution():
    assert homogeneity_test([1.0, 1.02], [1e-6, 1e-6]).p_value < 1e-10
    assert homogeneity_test([1.0, 1.02], [1e-6, 1e-6], relative_floor=0.01).p_value > 0.05
    assert homogeneity_test([1.0, 1.2], [1e-6, 1e-6], relative_floor=0.01).p_value < 1e-10
    with pytest.raises(ValueError):
        homogeneity_test([0.0, 0.0], [0.0, 1.0])  # a value with no error
    with pytest.raises(ValueError):
        homogeneity_test([1.0, 2.0], [1.0])


def test_one_value_cannot_differ_from_anything():
    result = homogeneity_test([1.0], [0.1])
    assert math.isnan(result.p_value) and result.min_attainable_p == 1.0
    assert gate(1.0, None, result.min_attainable_p) == "underpowered"


def test_size_on_the_null_model_is_alpha_up_to_monte_carlo_error():
    errors = [0.1, 0.2, 0.5, 1.0, 1.0, 2.0, 3.0, 0.1, 0.1, 0.3]
    rate = homogeneity_null_rate(errors, level=5.0)
    assert 0.025 <= rate <= NULL_RATE_BOUND
    floored = homogeneity_null_rate([1e-9] * 10, level=0.002, relative_floor=0.01)
    assert 0.01 <= floored <= NULL_RATE_BOUND  # the floor from the largest draw makes it a little conservative
    # the size check can fail: errors understated 3-fold reject far more often than alpha
    understated = null_rate(lambda rng: homogeneity_test(3.0 * rng.standard_normal(10), np.ones(10)))
    assert understated > 0.5


def _toy_path(pair, level, drift=0.0, converged=1.0, n_steps=40):
    """A summarised toy path: loss rising from 0 to ``level``, still moving by ``drift`` over its last decade."""
    distances = np.r_[np.logspace(0, -4, n_steps), 0.0]
    losses = level * (1 - np.exp(-1 / np.maximum(distances, 1e-12))) + drift * (distances <= 1e-3) * (
        distances / 1e-3)
    losses[0] = 0.0
    return {"pair": list(pair), "permutation_loss": float(losses[-1]), "converged_fraction": converged,
            "curve_distances": distances.tolist(), "curve_losses": losses.tolist()}


def _summary(levels, drift=0.0, converged=1.0):
    return {"toy": {"paths": [_toy_path(p, v, drift, converged) for p, v in zip(PAIRS, levels)]},
            "settings": {"convergence": {"rel_tol": 1e-5, "abs_tol": 1e-10}},
            "toy_source": "synthetic toy (test)", "profile": "test"}


def test_level_error_is_the_last_decade_range_or_the_rule_tolerance():
    settled = _toy_path((0, 1), 0.002)
    assert level_error(settled, 1e-5, 1e-10) == pytest.approx(1e-5 * 0.002 + 1e-10)
    moving = _toy_path((0, 1), 0.002, drift=3e-4)
    assert level_error(moving, 1e-5, 1e-10) == pytest.approx(3e-4, rel=0.2)
    # 0.00136 (six pairs), 0.00278, 0.00337 and 0.0034 (3e-5 apart: one level at 4.2e-5), 0.00423
    assert distinct_levels(CPU_LEVELS, 0.01 * max(CPU_LEVELS)) == 4
    assert distinct_levels([1.0, 1.001, 1.002], 0.01) == 1


def test_toy_claim_has_every_field_and_comes_out_both_ways():
    claim = toy_level_claim(_summary(CPU_LEVELS))
    record = claim.as_dict()
    for key in ("claim", "paper_evidence", "test", "statistic", "effect_size", "n", "p_value", "p_opposite",
                "min_attainable_p", "converged_fraction", "null_rate", "null_model", "unit", "data_source",
                "profile", "note"):
        assert record[key] is not None and record[key] != "", key
    assert "differs between neuron pairs" in claim.claim and "Fig. 2" in claim.paper_evidence
    assert claim.unit == "pair (its own descent)" and claim.result.n == 10
    assert claim.data_source == "synthetic toy (test)" and claim.profile == "test"
    assert claim.converged_fraction == 1.0 and claim.result.min_attainable_p == 0.0
    assert claim.null_rate <= NULL_RATE_BOUND and "Gaussian" in claim.null_model
    assert "4 distinct levels" in claim.note and "Chebyshev" in claim.note
    finalise([claim])
    assert claim.verdict == "supported"

    equal = toy_level_claim(_summary([0.00136 * (1 + 0.001 * k) for k in range(10)]))
    finalise([equal])
    assert equal.verdict == "contradicted"  # one level at the 1 % resolution
    assert "1 distinct levels" in equal.note

    # levels apart by less than what the descents still move: not distinguishable
    blurred = toy_level_claim(_summary([0.00136 * (1 + 0.02 * (k % 2)) for k in range(10)], drift=3e-4))
    finalise([blurred])
    assert blurred.verdict != "supported" and blurred.result.p_value > 0.05

    unconverged = toy_level_claim(_summary(CPU_LEVELS, converged=0.6))
    finalise([unconverged])
    assert unconverged.verdict == "not converged" and unconverged.converged_fraction == pytest.approx(0.6)
