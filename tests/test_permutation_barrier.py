"""The permutation_barrier stages end to end on tiny settings (synthetic MNIST stand-in), and their helpers."""

import json
import math

import numpy as np
import pytest
from tiny import tiny_params
from conftest import resolve_tiny
from executors import run_minima_and_paths_both_ways
import torch

from benchmarks import permutation_barrier as pb
from benchmarks.permutation_barrier.paths import convergence_rule
from benchmarks.permutation_barrier.schema import ConvergenceConfig, ToyConfig
from benchmarks.permutation_barrier.teachers import draw_toy_teacher
from benchmarks.permutation_barrier.topology import (barrier_bounded, barrier_bounds, barrier_converged,
                                                     converged_fraction, monotone_rise, permutation_point_converged,
                                                     summarise_path)
from losstopo.evidence import below_threshold_test, binomial_test
from losstopo.permutation import incoming_vectors, neuron_distance
from losstopo.stats import bootstrap_ci

TINY = tiny_params("permutation_barrier")


@pytest.fixture
def tiny_params(tmp_path, mlflow_store):
    return resolve_tiny(TINY, tmp_path)


def _read(path):
    return json.loads(path.read_text())


@pytest.mark.slow  # runs stages (pipeline test)
def test_stages_paths_summary_and_report_section(tiny_params, tmp_path):
    import mlflow

    root = tmp_path / "artifacts"
    config = tiny_params.experiment("permutation_barrier")
    for stage in (pb.run_minima, pb.run_paths, pb.run_topology):
        stage(config, tiny_params, root)
    base = root / "permutation_barrier"
    for name in ("minima/toy/teacher.pt", "minima/mnist-H4/teachers.pt", "minima/mnist-H6/minima.json",
                 "minima/summary.json", "paths/toy/paths.json", "paths/mnist-H6/paths.json",
                 "paths/mnist-H6/permutation_points.pt", "topology/summary.json", "topology_metrics.json"):
        assert (base / name).is_file(), name
    assert not list(base.glob("minima/*/checkpoint-*.pt"))

    toy = _read(base / "paths/toy/paths.json")
    assert len(toy["paths"]) == math.comb(4, 2)
    mnist = [_read(base / f"paths/mnist-H{h}/paths.json") for h in (4, 6)]
    assert all(len(v["paths"]) == 2 for v in mnist)
    assert mnist[0]["data_source"].startswith("SYNTHETIC stand-in of mnist")
    for record in toy["paths"] + [r for v in mnist for r in v["paths"]]:
        losses, index = record["losses"], record["permutation_index"]
        assert losses[0] == 0.0  # the student starts at the teacher
        assert abs(losses[-1]) < 1e-8  # ... and ends at its partner, which computes the same function
        assert record["barrier"] == max(losses)
        # a merge costs something, unless both neurons are dead on every input (then exactly nothing)
        if max(record.get("active_fraction", [1.0])) > 0:
            assert record["barrier"] > 1e-9
        else:
            assert record["barrier"] == 0.0
        assert record["distances"][index] == 0.0 and record["distances"][0] > 0
        assert len(losses) == 2 * index + 1 and losses[index] == record["permutation_loss"]
    assert sum(max(r["active_fraction"]) > 0 for v in mnist for r in v["paths"]) >= 3
    for record in (r for v in mnist for r in v["paths"]):
        assert len(record["accuracy"]) == len(record["losses"])
        half = record["half_budget_losses"]  # from the width's second job: the same path at half the budget
        assert len(half) == len(record["losses"]) and half[0] == 0.0 and abs(half[-1]) < 1e-8
        assert record["accuracy"][0] == pytest.approx(record["accuracy"][-1])
        assert record["accuracy_drop"] == pytest.approx(record["accuracy"][0] - record["accuracy"][record["permutation_index"]])
    # the toy's permutation point: the merged pair's incoming vectors coincide
    merged = toy["paths"][0]
    l, m = merged["pair"]
    assert np.allclose(merged["permutation_vectors"][l], merged["permutation_vectors"][m], atol=1e-10)

    for record in (r for v in mnist for r in v["paths"]):  # each maximum refined (refine_budget 8, at most 2 times)
        assert len(record["refined"]) <= 2 and len(record["refined_half_losses"]) == len(record["refined"])
        assert record["maximum_lower_bound"] <= record["certified_maximum"] <= record["barrier"]
        assert record["certified_maximum"] == max(record["refined_losses"])
        assert record["maximum_bracketed"] == (record["certified_maximum"] - record["maximum_lower_bound"]
                                               <= 0.01 * record["certified_maximum"])
    summary = _read(base / "topology/summary.json")
    metrics = _read(base / "topology_metrics.json")
    barriers = {h: [r["certified_maximum"] for r in v["paths"]] for h, v in zip((4, 6), mnist)}
    for h in (4, 6):
        assert summary["mnist"]["per_H"][str(h)]["barrier_mean"] == pytest.approx(np.mean(barriers[h]))
        assert metrics[f"barrier_mean_H{h}"] == pytest.approx(np.mean(barriers[h]))
    monotone = [monotone_rise(r["losses"], r["permutation_index"]) for v in mnist for r in v["paths"]]
    assert summary["mnist"]["n_monotone"] == sum(monotone) and summary["mnist"]["n_paths"] == 4
    assert summary["mnist"]["n_dead_pairs"] == sum(max(r["active_fraction"]) == 0 for v in mnist for r in v["paths"])
    assert metrics["monotone_fraction"] == pytest.approx(np.mean(monotone))
    drops = [100 * r["accuracy_drop"] for v in mnist for r in v["paths"]]
    assert metrics["accuracy_drop_mean_pp"] == pytest.approx(np.mean(drops))
    assert metrics["toy_barrier_max"] == pytest.approx(max(r["barrier"] for r in toy["paths"]))
    assert summary["profile"] == "tiny"

    section = pb.report_section(config, tmp_path / "figures", root)
    assert len(section.claims) == 6
    assert all(c.data_source.startswith("SYNTHETIC") and c.profile == "tiny" and c.unit == "teacher"
               for c in section.claims[:5])
    toy_claim = section.claims[5]  # Fig. 2: the permutation-point loss differs between the toy's pairs
    assert "differs between neuron pairs" in toy_claim.claim and toy_claim.unit == "pair (its own descent)"
    assert toy_claim.result.n == math.comb(4, 2) and toy_claim.data_source == toy["data_source"]
    assert toy_claim.converged_fraction == pytest.approx(np.mean([np.mean(r["converged"][1:]) for r in toy["paths"]]))
    assert toy_claim.result.min_attainable_p == 0.0 and 0 <= toy_claim.null_rate <= 0.07
    saddles = [r["saddle"] for v in mnist for r in v["paths"]]
    assert "saddle" in section.claims[0].claim and section.claims[0].result.statistic == pytest.approx(np.mean(saddles))
    for record in (r for v in mnist for r in v["paths"]):
        assert record["hessian_min_eigenvalue"] <= record["hessian_max_eigenvalue"]
    paths = [summarise_path(r) for v in mnist for r in v["paths"]]
    at_point = np.mean([p["permutation_point_converged"] for p in paths])
    for claim in (section.claims[0], section.claims[1], section.claims[4]):  # saddle, loss at it, accuracy there
        assert claim.converged_fraction == pytest.approx(at_point)
    assert "permutation point decreases" in section.claims[1].claim
    # the barrier trend is tested on each refined maximum's bounds; its inputs are the lower bounds' converged points
    assert section.claims[2].converged_fraction == pytest.approx(np.mean([p["barrier_bounded"] for p in paths]))
    assert "least favourable" in section.claims[2].result.test
    assert section.claims[3].converged_fraction == pytest.approx(np.mean([p["converged_fraction"] for p in paths]))
    for trend in section.claims[1:3]:
        assert trend.result.n == 4 and "decreasing" in trend.result.test
        assert trend.result.min_attainable_p == pytest.approx(1 / 6)  # 2 teachers at each of 2 widths
    assert section.claims[3].result.statistic == pytest.approx(np.mean(monotone))
    assert len(section.figures) == 5
    for figure in section.figures:
        assert figure.stat().st_size > 1000, figure

    stages = set(mlflow.search_runs(experiment_names=["permutation_barrier"])["tags.stage"])
    assert stages == {"permutation_barrier_minima", "permutation_barrier_paths", "permutation_barrier_topology"}

    # finished work (same settings) is not redone
    stamps = {p: p.stat().st_mtime_ns for p in (base / "minima/mnist-H4/teachers.pt", base / "paths/toy/paths.json")}
    pb.run_minima(config, tiny_params, root)
    pb.run_paths(config, tiny_params, root)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow  # runs stages (pipeline test)
def test_stages_write_the_same_outputs_whichever_executor_runs_the_jobs(tiny_params, tmp_path, monkeypatch):
    local, remote, executor = run_minima_and_paths_both_ways(pb, tiny_params, tmp_path, monkeypatch)
    assert executor.calls == 2 + 1 + 4  # teachers per width, all toy pairs together, 2 MNIST path jobs per width
    for name in ("minima/summary.json", "minima/toy/minima.json", "minima/mnist-H4/minima.json",
                 "minima/mnist-H6/minima.json", "paths/toy/paths.json", "paths/mnist-H4/paths.json",
                 "paths/mnist-H6/paths.json"):
        assert _read(local / name) == _read(remote / name), name
    for width in (4, 6):
        points = [torch.load(base / f"paths/mnist-H{width}/permutation_points.pt") for base in (local, remote)]
        assert torch.equal(points[0]["permutation_points"], points[1]["permutation_points"])
    assert not list((tmp_path / "pickling" / ".jobs").rglob("*.pt"))  # job caches cleared


def test_toy_teacher_is_seeded_with_distinct_neurons():
    cfg = ToyConfig(n_inputs=50, hidden=5, seed=3)
    teacher, inputs = draw_toy_teacher(cfg)
    again, inputs_again = draw_toy_teacher(cfg)
    assert torch.equal(teacher.flat(), again.flat()) and torch.equal(inputs, inputs_again)
    assert teacher.layer_sizes == (2, 5, 1) and inputs.shape == (50, 2)
    angles = torch.atan2(teacher.weights[0][:, 1], teacher.weights[0][:, 0]) % (2 * math.pi)
    gaps = torch.diff(torch.sort(angles).values)
    assert float(gaps.min()) > 2 * math.pi / 5 / 2 - 1e-9  # jitter is at most a quarter of the spacing each side
    assert min(float(neuron_distance(teacher, 1, l, m)) for l in range(5) for m in range(l + 1, 5)) > 0.1
    assert incoming_vectors(teacher, 1).shape == (5, 3)


def test_monotone_rise_tolerates_small_dips_only():
    assert monotone_rise([0, 1, 2, 3, 3, 3, 2, 1, 0], 4)
    assert monotone_rise([0, 1, 2, 1.995, 3, 3, 3], 3 + 1)  # dip of 0.005 < 1% of 3
    assert not monotone_rise([0, 2, 1, 3, 3, 3, 3], 3)  # passes a saddle on the way
    assert not monotone_rise([0, 3, 2, 2, 2], 2)  # maximum before the permutation point
    assert monotone_rise([0, 0, 0], 1)


def test_convergence_rule_maps_params():
    rule = convergence_rule(ConvergenceConfig(method="gd", lr=0.1, max_iter=7, grad_tol=1e-5, rel_tol=1e-4,
                                                 abs_tol=1e-8))
    assert (rule.method, rule.lr, rule.max_iter, rule.grad_tol, rule.rel_tol, rule.abs_tol) == \
        ("gd", 0.1, 7, 1e-5, 1e-4, 1e-8)


def test_binomial_test_is_one_sided_exact():
    result = binomial_test(10, 10)
    assert result.p_value == pytest.approx(0.5 ** 10) and result.statistic == 1.0
    assert result.min_attainable_p == pytest.approx(0.5 ** 10)
    assert binomial_test(3, 10).p_opposite == pytest.approx(176 / 1024)  # P(X <= 3), X ~ Bin(10, 1/2)


def test_below_threshold_test_and_bootstrap():
    small = [0.0, 0.1, 0.2, 0.05, 0.3, 0.0, 0.15, 0.1]
    result = below_threshold_test(small, 1.0)
    assert result.p_value == pytest.approx(0.5 ** 8)  # every value below: the most extreme signed-rank sum
    assert result.effect_size > 0
    assert below_threshold_test([2.0, 3.0, 1.5, 4.0], 1.0).p_opposite == pytest.approx(0.5 ** 4)
    low, high = bootstrap_ci(small)
    assert low <= np.mean(small) <= high and high - low < 0.2
    # the percentile bootstrap of a mean of 400 normal draws: ~ mean +- z s / sqrt(n) at each level
    values = np.random.default_rng(5).normal(1.0, 2.0, 400)
    half_width = values.std() / np.sqrt(len(values))
    for level, z in ((0.95, 1.960), (0.5, 0.674)):
        low, high = bootstrap_ci(values, level)
        assert (high - low) / 2 == pytest.approx(z * half_width, rel=0.1)
        assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.1 * half_width)


def test_mnist_steps_count_as_converged_only_if_halving_their_budget_leaves_their_loss():
    record = {"merge_points": 4, "barrier": 1.0, "converged": [True, False, False, False],
              "losses": [0.0, 0.1, 0.5, 1.0, 1.0, 0.5, 0.1, 0.0]}
    assert converged_fraction(record) == 0.0  # no half-budget run: the rule's flags (none met it)
    record["half_budget_losses"] = [0.0, 0.1, 0.52, 1.005, 1.005, 0.52, 0.1, 0.0]
    assert converged_fraction(record) == 2 / 3  # step 2 moved by 0.02 > 1% of the barrier, step 3 by 0.005


def test_each_claim_reads_the_convergence_of_what_it_uses():
    """The permutation point and the path maximum are converged when halving the budget moved them by <= 1% of
    themselves, whatever the steps between them did; without a half-budget run, the rule's flag of their step."""
    record = {"merge_points": 4, "permutation_index": 3, "barrier": 1.0, "converged": [True, False, False, True],
              "losses": [0.0, 0.1, 0.5, 1.0, 1.0, 0.5, 0.1, 0.0],
              "half_budget_losses": [0.0, 0.3, 0.9, 1.005, 1.005, 0.9, 0.3, 0.0]}
    assert permutation_point_converged(record) and barrier_converged(record)
    record["half_budget_losses"][3] = record["half_budget_losses"][4] = 1.02  # moved by 2% of itself
    assert not permutation_point_converged(record) and not barrier_converged(record)
    # a maximum mid-path: the permutation point can converge while the maximum has not
    record |= {"losses": [0.0, 0.1, 2.0, 1.0, 1.0, 2.0, 0.1, 0.0], "barrier": 2.0,
               "half_budget_losses": [0.0, 0.1, 2.5, 1.001, 1.001, 2.5, 0.1, 0.0]}
    assert permutation_point_converged(record) and not barrier_converged(record)
    record["final_half_loss"] = 1.02  # the point's own descent: its second half moved it by 2% of itself
    assert not permutation_point_converged(record)
    record["final_half_loss"] = 1.009  # by 0.9%, whatever the half-budget path says
    record["half_budget_losses"][3] = 1.5
    assert permutation_point_converged(record)
    del record["half_budget_losses"], record["final_half_loss"]
    assert permutation_point_converged(record) and not barrier_converged(record)  # flags: step 3 yes, step 2 no
    # a refined maximum (losstopo.path_maximum) is converged when bracketed, whatever the flags say; it is the barrier
    record |= {"certified_maximum": 1.9, "maximum_lower_bound": 1.0, "maximum_bracketed": False, "refined": [],
               "pair": [0, 1], "permutation_loss": 1.0, "distances": [3.0, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0],
               "start_vectors": [], "permutation_vectors": []}
    assert not barrier_converged(record) and summarise_path(record)["barrier"] == 1.9
    record["converged"][2] = True
    assert not barrier_converged(record)
    record["maximum_bracketed"] = True
    assert barrier_converged(record)
    summary = summarise_path(record)
    assert summary["uniform_budget_barrier"] == 2.0 and summary["barrier_refined"] and summary["refinements"] == 0
    # the converged maximum lies between the converged point's loss (less the 1% it may still move) and the maximum
    assert summary["barrier_bounds"] == pytest.approx((0.99, 1.9)) and summary["barrier_bounded"]
    record["maximum_lower_bound"] = 0.0  # only the exact start converged: a bound, but not from a converged descent
    assert barrier_bounds(record) == (0.0, 1.9) and not barrier_bounded(record)
    del record["maximum_lower_bound"]
    assert barrier_bounds(record) is None and not barrier_bounded(record)


def test_a_widths_own_final_budget_changes_only_that_widths_paths_address():
    """final_max_iter_by_width doubles one width's budget at d = 0: that width's paths are recomputed, every other
    width's finished paths keep their address (and so are not rerun)."""
    import dataclasses

    from benchmarks.permutation_barrier.claims import own_budget_words
    from benchmarks.permutation_barrier.paths import mnist_paths_address, width_rule

    from losstopo.config import resolve

    config = resolve(TINY).experiment("permutation_barrier")
    common = dataclasses.replace(config.mnist, final_max_iter=40)
    rule = convergence_rule(config.convergence)
    own = dataclasses.replace(common, final_max_iter_by_width={6: 80})
    assert (own.final_budget(4), own.final_budget(6)) == (40, 80)

    def address(cfg, width):
        return mnist_paths_address(cfg, width_rule(cfg, rule, width), f"teachers-{width}", "SYNTHETIC")

    assert address(own, 4) == address(common, 4)
    assert address(own, 6) != address(common, 6)
    assert width_rule(own, rule, 6).final_max_iter == 80 and width_rule(own, rule, 4).final_max_iter == 40
    # the report and the claims' notes name the width's own budget (JSON keys are strings)
    assert own_budget_words({"settings": {"mnist": {"final_max_iter_by_width": {"25": 32000, "15": 8}}}}) == \
        "; H = 15: 8; H = 25: 32,000"
    assert own_budget_words({"settings": {"mnist": {"final_max_iter": 40}}}) == ""


def test_each_width_has_a_paths_job_and_a_half_budget_job_of_their_own_addresses():
    from benchmarks.permutation_barrier.paths import _mnist_path_jobs, width_rule

    from losstopo.config import resolve

    params = resolve(TINY)
    config = params.experiment("permutation_barrier")
    rule = width_rule(config.mnist, convergence_rule(config.convergence), 4)
    saved = {"layer_sizes": [784, 4, 4, 10], "thetas": torch.zeros(2, 3)}
    jobs = _mnist_path_jobs(config.mnist, 4, "paths-4", saved, params.data, rule, "cpu")
    assert [job.spec.half_budget for job in jobs] == [False, True] and jobs[0].address != jobs[1].address
    again = _mnist_path_jobs(config.mnist, 4, "paths-4", saved | {"thetas": torch.ones(2, 3)}, params.data, rule, "cpu")
    assert [job.address for job in again] != [job.address for job in jobs]  # other teachers: other jobs


def test_a_loss_at_round_off_is_converged_within_the_descents_absolute_tolerance():
    """A merge of two neurons dead on every input costs nothing: its float32 loss sits at round-off (6e-13 on a cpu
    H = 25 teacher) and moves by more than 1% of itself between any two evaluations. A move of at most the
    descent's absolute tolerance counts as none; a real move above it still does not."""
    record = {"merge_points": 3, "permutation_index": 2, "barrier": 6.4e-13, "converged": [True, True, True],
              "losses": [0.0, 6.0e-13, 5.95e-13, 6.0e-13, 0.0], "half_budget_losses": [0.0, 1.1e-12, 1.0e-12, 1.1e-12, 0.0],
              "final_half_loss": 1.29e-12}
    assert not permutation_point_converged(record) and not barrier_converged(record)
    assert converged_fraction(record) == 0.0
    assert permutation_point_converged(record, 1e-10) and barrier_converged(record, 1e-10)
    assert converged_fraction(record, 1e-10) == 1.0
    record["final_half_loss"] = 5.95e-13 + 2e-10  # moved by twice the tolerance
    assert not permutation_point_converged(record, 1e-10)
    record["final_half_loss"] = 1.0  # a large loss: the relative part is unchanged by the slack
    record["losses"][2] = 1.011
    assert not permutation_point_converged(record, 1e-10)
