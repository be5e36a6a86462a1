"""The paper-scale cost projection: its call counts against hand counts and against the calls the
library really makes, its arithmetic, and its timers (no wall time is asserted)."""

import itertools
import math
import subprocess
import sys

import pytest
import torch

from benchmarks.perf import projection, workload
from benchmarks.perf.workload import Op, Work, curves_work, full_sizes, minima_work, paths_work, profile_work
from benchmarks.permutation_barrier import draw_toy_teacher
from benchmarks.stages import path_loss
from losstopo.config import MinimaConfig, PathConfig, ToyConfig, load_params, resolve
from losstopo.data import REGISTRY, synthetic_dataset
from losstopo.models import build_model
from losstopo.paths import convergence_checkpoint, evaluate_in_chunks, evaluate_paths, optimize_paths, straight_path
from losstopo.permutation import Convergence, merge_neurons_batch, quadratic_loss
from losstopo.stacked import StackedModel
from losstopo.train import train_minima

MINIMA = MinimaConfig(n_minima=3, batch_size=100, max_epochs=4, patience=None, train_subset=1000, test_subset=500)
PATHS = PathConfig(n_points=5, steps=7, batch_size=200, train_subset=1000, max_models=512)


def _calls(works):
    return [(w.op.kind, w.op.models, w.op.images, w.calls) for w in works]


def test_minima_count_by_hand():
    works = minima_work("fc_depth", "v", "fc-2-8", "mnist", MINIMA, full_sizes)
    # 4 epochs x 1000 // 100 steps; one training-loss evaluation per epoch; final train (loss, accuracy)
    # and test (loss, accuracy)
    assert _calls(works) == [("train", 3, 100, 40), ("eval", 3, 1000, 4), ("eval", 3, 1000, 2), ("eval", 3, 500, 2)]
    assert {w.bound for w in works} == {"exact"}
    patient = minima_work("fc_depth", "v", "fc-2-8", "mnist", MinimaConfig(patience=2, max_epochs=4), full_sizes)
    assert patient[0].bound == "upper"  # the patience rule may stop earlier: counted at max_epochs


def test_paths_count_by_hand():
    # 3 pairs x 3 interior points; the orthogonal gradient of those on all 1000 images; dense evaluation:
    # 5 points + 4 x 4 alphas = 21 per path at step 6 (80% of 7, the convergence rule) and at the end,
    # the straight paths, 3 end points
    assert _calls(paths_work("fc_depth", "v", "fc-2-8", "mnist", PATHS, 3, full_sizes)) == [
        ("grad", 9, 200, 7), ("grad", 9, 1000, 1), ("eval", 63, 1000, 1), ("eval", 63, 1000, 1),
        ("eval", 63, 1000, 1), ("eval", 3, 1000, 1)]
    # two jobs: pairs (0,1),(0,2) and (1,2); 2 x 21 = 42 and 21 points; 64 models per chunk
    split = PathConfig(n_points=5, steps=7, batch_size=200, train_subset=1000, pairs_per_job=2)
    assert _calls(paths_work("fc_depth", "v", "fc-2-8", "mnist", split, 3, full_sizes)) == [
        ("grad", 6, 200, 7), ("grad", 6, 1000, 1), ("eval", 42, 1000, 1), ("eval", 42, 1000, 1),
        ("eval", 42, 1000, 1), ("eval", 3, 1000, 1),
        ("grad", 3, 200, 7), ("grad", 3, 1000, 1), ("eval", 21, 1000, 1), ("eval", 21, 1000, 1),
        ("eval", 21, 1000, 1), ("eval", 2, 1000, 1)]
    # 105 pairs x 21 = 2205 dense points on 25,000 images: 35 model chunks x 3 image chunks of 10,000
    many = PathConfig(n_points=5, steps=7, batch_size=None, train_subset=25000, max_models=64)
    grad, _, optimised = paths_work("fc_depth", "v", "fc-2-8", "mnist", many, 15, full_sizes)[:3]
    assert (grad.op.models, grad.op.images, grad.calls) == (64, 10000, 7 * math.ceil(315 / 64) * 3)
    assert (optimised.op.models, optimised.op.images, optimised.calls) == (64, 10000, 35 * 3)


def test_curves_and_triangles_count_by_hand():
    study = resolve({"wrn_robustness": {"wrn": {
        "minima": {"n_minima": 4},
        "curves": {"epochs": 2, "batch_size": 32, "train_subset": 100, "n_eval": 5, "triangle_epochs": 1,
                   "triangle_resolution": 2, "triangle_regimes": ["vertices_fixed", "sides_fixed"]}}}}
                    ).experiments["wrn_robustness"].wrn
    # 6 curves, 2 epochs x 100 // 32 = 3 steps; 30 curve points and the 4 minima (loss, accuracy) on 100
    # images, 8 models per forward; 4 triangles x 1 epoch, a grid of 6 points each, in both regimes
    triangles = [("grad", 4, 32, 3), ("eval", 8, 100, 3)]
    assert _calls(curves_work("w", "s", "wrn-10-1", "cifar100", study, full_sizes, cuda=False)) == [
        ("grad", 6, 32, 6), ("eval", 8, 100, 4), ("eval", 4, 100, 2), *triangles, *triangles]


def test_epoch_units_and_refinement_make_a_lower_bound():
    cfg = PathConfig(n_points=5, batch_size=150, train_subset=1000, epochs=2, refine_every_epochs=1)
    grad = paths_work("resnet_lr", "v", "fc-2-8", "mnist", cfg, 2, full_sizes)[0]
    assert grad.calls == 2 * math.ceil(1000 / 150) and grad.bound == "lower"  # points are added while it runs


class _CountingStacked(StackedModel):
    """Counts the batched forwards (one per chunk of models and images) that the library makes."""

    calls = {"logits": 0, "logits_per_model": 0}

    def logits(self, thetas, x):
        _CountingStacked.calls["logits"] += 1
        return super().logits(thetas, x)

    def logits_per_model(self, thetas, xs):
        _CountingStacked.calls["logits_per_model"] += 1
        return super().logits_per_model(thetas, xs)


@pytest.fixture
def counting():
    _CountingStacked.calls.update(logits=0, logits_per_model=0)
    return _CountingStacked


def test_counts_equal_the_calls_train_minima_makes(counting):
    data = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(1000, 500))
    train_minima(counting(build_model("fc-2-8", (1, 28, 28), 10)), data, MINIMA, progress=False)
    works = minima_work("fc_depth", "v", "fc-2-8", "mnist", MINIMA, full_sizes)
    assert counting.calls["logits_per_model"] == sum(w.calls for w in works if w.op.kind == "train")
    assert counting.calls["logits"] == sum(w.calls for w in works if w.op.kind == "eval")


def test_counts_equal_the_calls_a_paths_job_makes(counting):
    cfg = PathConfig(n_points=5, steps=7, batch_size=200, train_subset=25000, max_models=512)
    data = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(25000, 10))
    stacked = counting(build_model("fc-1-4", (1, 28, 28), 10))
    loss_fn = path_loss(stacked, data, cfg)
    thetas = stacked.init_thetas(list(range(8)))
    pairs = [(i, j) for i in range(8) for j in range(i + 1, 8)]
    starts, ends = thetas[[i for i, _ in pairs]], thetas[[j for _, j in pairs]]
    # as paths_job calls them, at the paper's fixed probes (the adaptive refinement is data-dependent)
    optimize_paths(loss_fn, starts, ends, n_points=cfg.n_points, steps=cfg.steps, max_models=cfg.max_models,
                   checkpoints=[convergence_checkpoint(cfg.steps)], tolerance=None)
    evaluate_paths(loss_fn, list(straight_path(starts, ends, cfg.n_points)), cfg.alphas, cfg.max_models,
                   tolerance=None)
    evaluate_in_chunks(loss_fn, thetas, cfg.max_models)
    works = paths_work("fc_depth", "v", "fc-1-4", "mnist", cfg, 8, full_sizes)
    assert counting.calls["logits"] == sum(w.calls for w in works)


def test_descent_count_is_one_descent_per_distance():
    rule = Convergence(max_iter=7)
    [work] = [w for w in profile_work(resolve({"permutation_barrier": {
        "toy": {"hidden": 4, "n_steps": 5}, "mnist": {"widths": [5], "n_seeds": 2},
        "convergence": {"max_iter": 7}}}), full_sizes) if w.op.dataset == "toy"]
    assert work.calls == 5 * 7 and work.op.models == math.comb(4, 2) and work.bound == "upper"
    # the library: the paths' merges descend together, one batched objective call per iteration
    # (its line search may add more), n_steps descents after the start point, each at most max_iter
    teacher, inputs = draw_toy_teacher(ToyConfig(hidden=4, n_inputs=50))
    loss_fn = quadratic_loss(inputs, teacher.forward(inputs).detach())
    pairs = list(itertools.combinations(range(4), 2))
    calls = []

    def counting_loss(params, index):
        calls.append(len(index))
        return loss_fn(params, index)

    merges = merge_neurons_batch([teacher] * len(pairs), 1, pairs, counting_loss, n_steps=5, rule=rule)
    assert all(len(m.iterations) - 1 == 5 and max(m.iterations) <= rule.max_iter for m in merges)
    iterations = sum(max(m.iterations[i] for m in merges) for i in range(1, 6))
    assert iterations <= work.calls and max(calls) == len(pairs)  # all pairs in one call


def test_every_profile_has_work_for_every_experiment():
    for profile in ("paper", "gpu-short", "ci"):
        works = profile_work(load_params("params.yaml", profile))
        assert {w.experiment for w in works} == {"fc_depth", "cnn_channels", "cnn_bn", "resnet_lr", "wrn_robustness",
                                                  "permutation_barrier"}
        assert all(w.calls > 0 and w.op.models > 0 and w.op.images > 0 for w in works)


def test_projection_sums_calls_times_seconds():
    a, b = Op("train", "fc-2-8", "mnist", 3, 100), Op("eval", "fc-2-8", "mnist", 3, 1000)
    works = [Work("x", "minima", "", a, 40, "exact"), Work("x", "minima", "", b, 4, "upper"),
             Work("x", "paths", "", b, 2, "lower")]
    rows = projection.project(works, {a: 0.5, b: 2.0})
    macs = 784 * 8 + 8 * 8 + 8 * 10  # fc-2-8: 784 -> 8 -> 8 -> 10
    train, evaluate = 2 * macs * 3 * 3 * 100, 2 * macs * 3 * 1000  # x3 for the backward pass; 3 models
    assert rows == [{"experiment": "x", "stage": "minima", "seconds": 40 * 0.5 + 4 * 2.0,
                     "flops": 40 * train + 4 * evaluate, "bound": "upper"},
                    {"experiment": "x", "stage": "paths", "seconds": 4.0, "flops": 2 * evaluate, "bound": "lower"}]


def test_timers_run_every_kind_of_op_and_probes_scale_linearly():
    works = (minima_work("fc_depth", "v", "fc-2-8", "mnist", MINIMA, full_sizes)
             + paths_work("fc_depth", "v", "fc-2-8", "mnist", PATHS, 3, full_sizes)
             + [workload.descent_work("p", "toy", workload.toy_model(3), "toy", 3, 4, 40, Convergence(max_iter=5)),
                workload.descent_work("p", "H", "fc-2-5", "mnist", 1, 4, 64, Convergence(max_iter=5))])
    seconds = projection.time_ops(works, torch.device("cpu"), projection.Probe(repeats=1), progress=False)
    assert {w.op.kind for w in works} == {"train", "grad", "eval", "descent"}
    assert all(0 < s < math.inf for s in seconds.values())
    probe = projection.Probe(images=50, models=2)
    assert probe.shrink(Op("eval", "fc-2-8", "mnist", 6, 200)) == (2, 50, 3 * 4)
    assert probe.shrink(Op("eval", "fc-2-8", "mnist", 1, 20)) == (1, 20, 1)


def test_kernel_counter_counts_computations_not_views():
    a, b = torch.randn(4, 3), torch.randn(3, 5)
    with projection.KernelCounter() as counter:
        c = a @ b  # 1
        c.t().reshape(-1)[:3].unsqueeze(0)  # views only (the reshape of a transposed tensor copies: 1)
        (c + 1).relu_()  # 2
    assert counter.kernels == 4


def test_kernels_per_call_do_not_grow_with_stacked_models_and_make_a_launch_floor():
    cpu = torch.device("cpu")
    counts = {k: projection.count_op_kernels(Op("grad", "cnn-1-4", "cifar10", k, 64), cpu) for k in (2, 16)}
    assert counts[2] == counts[16] > 10  # vmapped as on CUDA: one kernel per layer for all models
    train = {k: projection.count_op_kernels(Op("train", "fc-2-8", "mnist", k, 32, minima=MINIMA), cpu) for k in (2, 6)}
    assert train[2] == train[6] > counts[2] / 2
    op = Op("eval", "fc-2-8", "mnist", 3, 100)
    rows = projection.project([Work("x", "paths", "", op, 7, "exact")], {op: 1.0}, {op: 20.0}, launch_s=1e-3)
    assert rows[0]["kernels"] == 140 and rows[0]["launch_floor_s"] == pytest.approx(0.14)


def test_ops_left_untimed_by_the_deadline_mark_their_stage_untimed():
    works = (minima_work("fc_depth", "v", "fc-2-8", "mnist", MINIMA, full_sizes)
             + paths_work("fc_depth", "v", "fc-2-8", "mnist", PATHS, 3, full_sizes))
    seconds = projection.time_ops(works, torch.device("cpu"), projection.Probe(repeats=1), progress=False,
                                  max_seconds=0)
    assert seconds == {}
    rows = projection.project(works, seconds)
    assert {r["bound"] for r in rows} == {"untimed"} and all(r["seconds"] == 0 and r["flops"] > 0 for r in rows)
    minima_only = [w for w in works if w.stage == "minima"]
    timed = projection.time_ops(minima_only, torch.device("cpu"), projection.Probe(repeats=1), progress=False)
    rows = {r["stage"]: r["bound"] for r in projection.project(works, timed)}
    assert rows == {"minima": "exact", "paths": "untimed"}


def test_benchmarks_import_on_a_machine_without_mlflow_or_gudhi():
    """A lent GPU machine has torch but neither MLflow nor gudhi: the speed benchmarks must still run there."""
    code = ("import sys; sys.modules.update(mlflow=None, gudhi=None)\n"
            "import benchmarks.perf.__main__, benchmarks.perf.projection, benchmarks.wrn_robustness")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
