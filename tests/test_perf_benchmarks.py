"""The benchmark code runs and compares equal work (no timing is asserted)."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from benchmarks.perf.data_loading import data_loading_benchmark
from benchmarks.perf.flops import forward_macs_per_image, matmul_peak, rates, step_flops_per_sample
from benchmarks.perf.path_step import path_step_benchmark
from benchmarks.perf.permutation_descent import CountedLoss, mlp_macs, permutation_descent_benchmark
from benchmarks.perf.training import training_benchmark
from benchmarks.perf.wrn_throughput import wrn_throughput_benchmark
from losstopo.data import REGISTRY, synthetic_dataset
from losstopo.models import build_model
from losstopo.permutation import MLPParams, quadratic_loss

CPU = torch.device("cpu")


def test_benchmarks_run_and_count_their_flops():
    cifar = synthetic_dataset(REGISTRY["cifar10"], reason="test", sizes=(64, 8))
    mnist = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(256, 8))
    results = [path_step_benchmark("fc-2-8", mnist, n_points=5, repeats=1),  # asserts equal gradients inside
               path_step_benchmark("fc-2-8", mnist, n_points=5, repeats=1, baseline_strategy="vmap"),
               path_step_benchmark("cnn-1-4", cifar, n_points=4, repeats=1),
               path_step_benchmark("fc-2-8", mnist, n_points=5, repeats=1, bf16=True),  # bf16 on CPU: code path only
               training_benchmark("fc-1-8", mnist, k=2),
               data_loading_benchmark(cifar, batch_size=16),
               # both assert equal paths inside (batched vs one by one)
               permutation_descent_benchmark("toy-4", "toy", 6, 100, CPU, iterations=2, repeats=1),
               permutation_descent_benchmark("fc-2-6", "mnist", 3, 64, CPU, iterations=2, repeats=1)]
    for r in results:
        assert r["baseline_s"] > 0 and r["fast_s"] > 0
    fc = build_model("fc-2-8", (1, 28, 28), 10)
    assert results[0]["flops"] == step_flops_per_sample(fc, (1, 28, 28)) * 256 * 3  # 3 interior points
    assert [r["precision"] for r in results[:4]] == ["fp32", "fp32", "fp32", "bf16"]
    fc = build_model("fc-1-8", (1, 28, 28), 10)
    assert results[4]["flops"] == step_flops_per_sample(fc, (1, 28, 28)) * 2 * 2 * 128  # 2 minima x 2 batches of 128
    toy, mnist_merge = results[6], results[7]
    assert "flops" not in toy  # float64: no peak to compare with
    # the same descents batched or one by one: the same evaluations, unless rounding moved a line search
    assert mnist_merge["flops"] > 0 and 0.8 < mnist_merge["baseline_flops"] / mnist_merge["flops"] < 1.25


def test_bf16_training_row_times_the_stacked_epoch_in_bf16_against_fp32(monkeypatch):
    mnist = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(256, 8))
    fc = build_model("fc-1-8", (1, 28, 28), 10)
    steps = []
    monkeypatch.setattr("benchmarks.perf.training.train_epoch", lambda *args: steps.append(args[5]))
    for fast in (True, False):
        monkeypatch.setattr("losstopo.train.fast_bf16", lambda device: fast)
        row = training_benchmark("fc-1-8", mnist, k=2, repeats=1, bf16=True)
        precision = "bf16" if fast else "fp32"
        assert row["precision"] == precision and row["benchmark"].endswith(f", {precision} steps vs fp32 steps")
        assert row["flops"] == row["baseline_flops"] == step_flops_per_sample(fc, (1, 28, 28)) * 2 * 2 * 128
        assert row["baseline_precision"] == "fp32"
    # each call: the fp32 baseline (a warm-up and a timed epoch), then the option's epochs
    assert [(c.mixed_precision, c.mixed_precision_cpu) for c in steps[:4]] == [(False, False)] * 2 + [(True, True)] * 2


def test_counted_loss_counts_mlp_evaluations_by_hand():
    torch.manual_seed(0)
    assert mlp_macs((2, 3, 1)) == [6, 3]
    inputs = torch.randn(5, 2)
    teacher = MLPParams([torch.randn(3, 2), torch.randn(1, 3)], [torch.randn(3), torch.randn(1)])
    loss = CountedLoss(quadratic_loss(inputs, teacher.forward(inputs)), n_inputs=5, macs=mlp_macs((2, 3, 1)))
    stack = MLPParams([w.expand(4, *w.shape).clone().requires_grad_(True) for w in teacher.weights],
                      [b.expand(4, *b.shape).clone() for b in teacher.biases])
    # forward 2 x 9 MACs; backward: weight gradients 2 x 9, input gradient of the second layer 2 x 3 = 42 per sample
    assert loss.counting(lambda: loss(stack, torch.zeros(4, dtype=torch.long))) == 4 * 5 * 42
    with torch.no_grad():  # forward only
        assert loss.counting(lambda: loss(stack, torch.zeros(4, dtype=torch.long))) == 4 * 5 * 18


def test_step_flops_count_by_hand_on_a_tiny_fc_net():
    net = build_model("fc-1-4", (1, 2, 2), 3)  # Flatten, Linear(4, 4), ReLU, Linear(4, 3)
    macs = 4 * 4 + 4 * 3  # = 28 per sample
    forward = 2 * macs  # 56
    weight_grads = 2 * macs  # 56: every Linear layer
    input_grads = 2 * 4 * 3  # 24: the second layer only (the first layer's input is the data)
    assert step_flops_per_sample(net, (1, 2, 2)) == forward + weight_grads + input_grads == 136
    # a path step of 5 samples through 3 models: 136 * 5 * 3 = 2040 FLOPs; in 2 s on a 1020 FLOP/s peak
    assert rates(136 * 5 * 3, 2.0, "fp32", {"fp32": 1020.0, "bf16": 4080.0}) == {"gflops": 1020 / 1e9,
                                                                                  "fraction_of_peak": 1.0}
    assert rates(None, 2.0, None, {"fp32": 1.0}) == {"gflops": None, "fraction_of_peak": None}


def test_matmul_peaks_are_measured_on_the_cpu():
    for dtype in (torch.float32, torch.bfloat16):
        assert matmul_peak(CPU, dtype, n=128, repeats=1) > 0


def test_wrn_throughput_counts_flops_by_hand_on_a_tiny_net():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    conv, linear = 4 * 8 * 8 * 3 * 9, 256 * 10
    assert forward_macs_per_image(net, (3, 8, 8)) == conv + linear
    assert step_flops_per_sample(net, (3, 8, 8)) == 2 * (conv + linear) * 2 + 2 * linear
    peaks = {"fp32": 1e11, "bf16": 1e12}
    result = wrn_throughput_benchmark("wrn-10-1", CPU, peaks, batch_size=8, repeats=1)
    assert result["images_per_s"] > 0 and result["precision"] == "fp32" and result["fp32_peak_flops"] == 1e11
    wrn = build_model("wrn-10-1", (3, 32, 32), 100)
    assert result["flops_per_image"] == step_flops_per_sample(wrn, (3, 32, 32))  # the model, shape and classes run


def test_bf16_effect_compares_maxima_and_bars_by_hand():
    from benchmarks.bf16_effect import bars_differ
    from benchmarks.path_study import largest_relative_difference

    assert largest_relative_difference({4000: [1.0, 0.5, 2.0]}, {4000: [1.01, 0.5, 1.9]}) == pytest.approx(0.05)
    inf = float("inf")
    fp32 = [(0.1, 0.3), (0.2, 0.35), (0.05, inf)]
    assert bars_differ(fp32, [(0.1, 0.30005), (0.2, 0.35), (0.05, inf)], 1e-4) == []  # within the resolution
    assert bars_differ(fp32, [(0.1, 0.3), (0.2, 0.36), (0.05, inf)], 1e-4) == [1]  # a death moved
    assert bars_differ(fp32, [(0.1, inf), (0.2, 0.35), (0.05, 0.3)], 1e-4) == [0, 2]  # the infinite bar moved


def test_bf16_training_effect_compares_final_losses_by_hand():
    from benchmarks.bf16_effect import training_differences
    from losstopo.train import MinimaResult

    def result(train_loss, epochs, n_epochs):
        return MinimaResult(torch.zeros(3, 2), [0, 1, 2], train_loss, [0.0] * 3, [0.0] * 3, [0.9, 0.8, 0.7], epochs,
                            [False] * 3, [{"epoch": e} for e in range(1, n_epochs + 1)])

    fp32, bf16 = result([0.2, 0.1, 0.04], [3, 3, 2], 3), result([0.19, 0.1, 0.05], [3, 2, 3], 4)
    differences = training_differences(fp32, bf16)
    assert differences["largest_relative_difference"] == pytest.approx(0.25)  # 0.01 / 0.04 (0.05 and 0 elsewhere)
    assert differences["train_loss"] == {"fp32": [0.2, 0.1, 0.04], "bf16": [0.19, 0.1, 0.05]}
    assert differences["epochs_run"] == {"fp32": 3, "bf16": 4}
    assert differences["best_epoch"] == {"fp32": [3, 3, 2], "bf16": [3, 2, 3]}


def test_benchmarks_import_on_a_machine_without_mlflow_or_gudhi():
    """A lent GPU machine has torch but neither MLflow nor gudhi: the speed benchmarks and the compute stages
    (scripts/gpu_session.py runs them there) must still import."""
    code = ("import sys; sys.modules.update(mlflow=None, gudhi=None)\n"
            "import benchmarks.perf.__main__, losstopo.cli, losstopo.barcode_experiment\n"
            "from losstopo import registry\n"
            "assert len(registry.experiments()) == 6")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_descent_profile_runs_and_measures_the_share_of_products(capsys, monkeypatch):
    from benchmarks.perf import profile_descent
    monkeypatch.setattr("sys.argv", ["profile_descent", "--model", "fc-2-6", "--paths", "2", "--inputs", "64",
                                     "--iterations", "1", "--rows", "3"])
    profile_descent.main()
    shares = [line for line in capsys.readouterr().out.splitlines() if "in matrix products" in line]
    assert len(shares) == 2 and all(0 < int(line.split(": ")[1].split("%")[0]) <= 100 for line in shares)
