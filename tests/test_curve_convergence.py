"""Convergence of curves and triangles is measured: a snapshot of the trainable controls after 80% of the
steps, and each maximum judged by the optimised paths' rule (barcodes paper, section 4, Appendix I)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from analytic import ring_2d
from benchmarks.wrn_robustness.claims import (minima_converged, minima_rule_words, regime_convergence,
                                              robustness_convergence)
from benchmarks.wrn_robustness.jobs import StudySpec
from benchmarks.wrn_robustness.paths import _curves_and_triangles, _Study
from benchmarks.wrn_robustness.schema import CurveConfig
from losstopo.config import DataConfig
from losstopo.curves import CurveTraining, barycentric_grid, train_curves, train_triangles
from losstopo.errors import ConfigError
from losstopo.job_data import DataRequest

START, END = torch.tensor([[-1.0, 0.1]]), torch.tensor([[1.0, -0.1]])
VERTICES = torch.tensor([[[-1.0, 0.1], [1.0, -0.1], [0.1, -1.0]]])  # (1, 3, 2)


def _training(steps: int) -> CurveTraining:
    return CurveTraining(steps=steps, lr=lambda step: 0.02 / (1 + 0.05 * step), momentum=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("kind", ["polychain", "bezier"])
def test_curve_snapshot_is_the_bend_after_exactly_checkpoint_steps(kind):
    final, at_checkpoint = train_curves(ring_2d, START, END, kind, _training(50), seed=3, checkpoint=40)
    assert torch.equal(at_checkpoint, train_curves(ring_2d, START, END, kind, _training(40), seed=3))
    assert not torch.equal(at_checkpoint, train_curves(ring_2d, START, END, kind, _training(41), seed=3))
    assert torch.equal(final, train_curves(ring_2d, START, END, kind, _training(50), seed=3))  # unperturbed
    assert not torch.equal(at_checkpoint, final)
    assert torch.equal(train_curves(ring_2d, START, END, kind, _training(50), seed=3, checkpoint=50)[1], final)
    assert torch.equal(train_curves(ring_2d, START, END, kind, _training(50), seed=3, checkpoint=0)[1],
                       (START + END) / 2)
    with pytest.raises(ValueError, match="outside"):
        train_curves(ring_2d, START, END, kind, _training(50), checkpoint=51)


@pytest.mark.parametrize("regime", ["vertices_fixed", "sides_fixed"])
def test_triangle_snapshot_is_the_controls_after_exactly_checkpoint_steps(regime):
    fixed = None if regime == "vertices_fixed" else (VERTICES + VERTICES.roll(-1, dims=1)) / 2 + 0.1
    (sides, centre), (sides_at, centre_at) = train_triangles(ring_2d, VERTICES, fixed, _training(30), seed=5,
                                                             checkpoint=24)
    short_sides, short_centre = train_triangles(ring_2d, VERTICES, fixed, _training(24), seed=5)
    assert torch.equal(sides_at, short_sides) and torch.equal(centre_at, short_centre)
    assert not torch.equal(centre_at, centre)
    assert (regime == "sides_fixed") == torch.equal(sides_at, sides)  # fixed sides are the same at every step
    full_sides, full_centre = train_triangles(ring_2d, VERTICES, fixed, _training(30), seed=5)
    assert torch.equal(full_sides, sides) and torch.equal(full_centre, centre)


MINIMA_LOSSES = [0.1, 0.2, 1.0]
# Curves (0, 1), (0, 2), (1, 2): moved 0.6 -> 0.5 above its floor 0.2; did not move (2.01 -> 2.0); moved
# 1.5 -> 1.005 but is within 1% of its floor 1.0, the HIGHER endpoint (the lower one, 0.2, would fail it).
CURVE_LOSSES = np.array([[0.1, 0.5, 0.2], [0.1, 2.0, 1.0], [0.2, 1.005, 1.0]])
CURVE_AT_CHECKPOINT = np.array([0.6, 2.01, 1.5])
# Triangle (0, 1, 2) on a resolution-1 grid (3 points): its floor is the highest vertex loss, 1.0.
TRIANGLES = {"vertices_fixed": ([1.2, 0.1, 0.2], 1.5), "sides_fixed": ([1.009, 0.1, 0.2], 2.0)}


def _record(cfg: CurveConfig) -> dict:
    spec = StudySpec("lenet", "lenet", DataConfig(), DataRequest("fashion_mnist", None, 0), cfg, False, 0, "cpu")
    study = _Study(spec, torch.zeros(3, 2), {"n_curve_samples": 64}, Path("unused"))
    curves = {"minima_losses": MINIMA_LOSSES, "minima_train_acc": [1.0] * 3, "t": np.linspace(0, 1, 3),
              "losses": CURVE_LOSSES, "max_at_checkpoint": CURVE_AT_CHECKPOINT}
    triangles = {regime: {"grid": barycentric_grid(1).numpy(), "losses": [np.array([losses])],
                          "max_at_checkpoint": [np.array([at_checkpoint])]}
                 for regime, (losses, at_checkpoint) in TRIANGLES.items()}
    return _curves_and_triangles(study, curves, triangles)


def test_each_curve_and_triangle_maximum_is_judged_by_the_path_rule():
    record = _record(CurveConfig(triangle_resolution=1))
    assert record["curve_converged"] == [False, True, True]
    assert record["curve_max_at_checkpoint"] == pytest.approx(CURVE_AT_CHECKPOINT)
    assert record["curve_relative_change"] == pytest.approx([0.2, 0.005, abs(1.005 - 1.5) / 1.005])
    assert record["triangles"]["vertices_fixed"]["converged"] == [False]  # 1.5 -> 1.2, above 1.01
    assert record["triangles"]["sides_fixed"]["converged"] == [True]  # at its floor
    assert record["triangles"]["sides_fixed"]["relative_change"] == pytest.approx([abs(1.009 - 2.0) / 1.009])
    assert "0.01" in record["convergence_rule"] and "0.8 T" in record["convergence_rule"]
    # The absolute resolution: curve (0, 1) moved by 0.1 in loss units.
    assert _record(CurveConfig(triangle_resolution=1, converge_abs=0.1 + 1e-9))["curve_converged"] == [True] * 3


def test_claims_count_the_converged_fraction_over_all_their_inputs():
    record = _record(CurveConfig(triangle_resolution=1))
    fraction, words = robustness_convergence({"converged": [True, True, False, True]}, record)
    assert fraction == pytest.approx(5 / 7) and "minima 3/4" in words and "curves 2/3" in words
    fraction, words = regime_convergence(record)
    assert fraction == pytest.approx(3 / 5) and "vertices_fixed triangles 0/1" in words
    # Paths records written before the measurement: not measured, so no claim can pass the convergence gate.
    old = {"triangles": {regime: {"max": [1.0]} for regime in TRIANGLES}}
    assert math.isnan(robustness_convergence({"converged": [True] * 4}, old)[0])
    fraction, words = regime_convergence(old)
    assert math.isnan(fraction) and "not recorded" in words


def test_fixed_budget_minima_converge_within_the_study_resolution():
    # 10 epochs: the rule compares epoch 8 (80%) with epoch 10; minimum 0 moved 3e-5 nats (1.1%), minimum 1 moved
    # 2e-3 nats, minimum 2 met the recorded 1% rule.
    losses = [[0.0030, 0.010, 0.50]] * 7 + [[0.00273, 0.012, 0.5010], [0.0027, 0.011, 0.5005], [0.00270, 0.010, 0.5005]]
    summary = {"converged": [False, False, True], "history": [{"train_loss": row} for row in losses]}
    assert minima_converged(summary, None, 1e-4) == [True, False, True]
    assert minima_converged(summary, None, 0.0) == [False, False, True]  # no resolution: the recorded rule
    assert minima_converged(summary, 6, 1e-4) == [False, False, True]  # patience: its own rule only
    assert "0.0001 nats" in minima_rule_words(None, 1e-4) and "patience" in minima_rule_words(6, 1e-4)


def test_curve_config_validates_the_convergence_rule():
    with pytest.raises(ConfigError, match="converge_tol"):
        CurveConfig(converge_tol=0.0).validate("wrn_robustness.wrn.curves")
    with pytest.raises(ConfigError, match="converge_abs"):
        CurveConfig(converge_abs=-1e-3).validate("wrn_robustness.wrn.curves")
