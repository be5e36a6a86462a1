"""The benchmark code runs and compares equal work (no timing is asserted)."""

import torch

from benchmarks.perf.data_loading import data_loading_benchmark
from benchmarks.perf.path_step import path_step_benchmark
from benchmarks.perf.permutation_descent import permutation_descent_benchmark
from benchmarks.perf.training import training_benchmark
from losstopo.data import REGISTRY, synthetic_dataset

CPU = torch.device("cpu")


def test_benchmarks_report_positive_times_and_ratio():
    cifar = synthetic_dataset(REGISTRY["cifar10"], reason="test", sizes=(64, 8))
    mnist = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(256, 8))
    results = [path_step_benchmark("fc-2-8", mnist, n_points=5, repeats=1),  # asserts equal gradients inside
               path_step_benchmark("cnn-1-4", cifar, n_points=4, repeats=1),
               path_step_benchmark("fc-2-8", mnist, n_points=5, repeats=1, bf16=True),  # bf16 on CPU: code path only
               training_benchmark("fc-1-8", mnist, k=2),
               data_loading_benchmark(cifar, batch_size=16),
               # both assert equal paths inside (batched vs one by one)
               permutation_descent_benchmark("toy-4", "toy", 6, 100, CPU, iterations=2, repeats=1),
               permutation_descent_benchmark("fc-2-6", "mnist", 3, 64, CPU, iterations=2, repeats=1)]
    for r in results:
        assert r["baseline_s"] > 0 and r["fast_s"] > 0
        assert abs(r["speedup"] - r["baseline_s"] / r["fast_s"]) < 1e-9


def test_wrn_throughput_counts_flops_by_hand_on_a_tiny_net():
    import torch
    from torch import nn

    from benchmarks.perf.wrn_throughput import forward_macs_per_image, wrn_throughput_benchmark

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    assert forward_macs_per_image(net, (3, 8, 8)) == 4 * 8 * 8 * 3 * 9 + 256 * 10
    result = wrn_throughput_benchmark("wrn-10-1", torch.device("cpu"), batch_size=8, repeats=1)
    assert result["images_per_s"] > 0 and "fraction_of_peak" not in result  # no peak claimed on CPU
