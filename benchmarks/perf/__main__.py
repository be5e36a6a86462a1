"""Run every speed benchmark: ``python -m benchmarks.perf [--data-root DIR] [--device auto] [--scale cpu|gpu]``.

Each benchmark times the project's fast path against a plain baseline in the same run, and says how fast
the fast path runs: GFLOP/s counted from the shapes (``benchmarks.perf.flops``) and the fraction of this
machine's fp32 or bf16 matmul peak, measured first. Prints a table and writes ``benchmarks/perf/results.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch

from benchmarks.perf.data_loading import data_loading_benchmark
from benchmarks.perf.flops import matmul_peaks, rates
from benchmarks.perf.path_maximum import path_maximum_benchmark
from benchmarks.perf.path_step import path_step_benchmark
from benchmarks.perf.permutation_descent import permutation_descent_benchmark
from benchmarks.perf.training import training_benchmark
from benchmarks.perf.wrn_throughput import wrn_throughput_benchmark
from losstopo.stage_frame import resolve_device
from losstopo.data import load_dataset
from losstopo.io import save_json
from losstopo.stacked import fast_bf16
from losstopo.machine import cpu_description

# Images per benchmark: `cpu` keeps the whole run to a few minutes on 2 cores; `gpu` is the size.
# `fc_path`: the batch of issue 17's target row (the fc-4-32 path step).
SCALES = {
    "cpu": {"fc_path": 1024, "mnist_path": 10000, "cifar_path": 500, "mnist_train": 10000, "cifar_train": 1000,
            "augment": 10000, "resnet_path": 256, "wrn": "wrn-16-1"},
    "gpu": {"fc_path": 1024, "mnist_path": 10000, "cifar_path": 10000, "mnist_train": 60000, "cifar_train": 50000,
            "augment": 50000, "resnet_path": 10000, "wrn": "wrn-16-10"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scale", choices=sorted(SCALES), default=None, help="default: gpu on CUDA, else cpu")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    device = resolve_device(args.device)
    sizes = SCALES[args.scale or ("gpu" if device.type == "cuda" else "cpu")]
    # Timings depend on shapes, not pixels: a partial copy or a labelled stand-in times the same work.
    mnist, cifar = (load_dataset(name, root=args.data_root, allow_partial=True, allow_synthetic=True)
                    for name in ("mnist", "cifar10"))
    cuda = device.type == "cuda"
    # bf16 path and training steps (paths.mixed_precision, minima.mixed_precision_cpu) where they pay off: CUDA,
    # CPUs with AMX or AVX512-BF16
    bf16_pays = fast_bf16(device)
    fc_path = mnist.subset(sizes["fc_path"], 0).to(device)
    # not resnet-t11-code on CPU: its bf16 gradients there differ from the fp32 ones by 1e-1 (relative norm,
    # measured with 19 points on 256 images), past the benchmark's check of equal work
    bf16_convs = {"cnn-2-64": "cifar_path"} | ({"resnet-t11-code": "resnet_path"} if cuda else {})
    # One thunk per row, run in this order: each row is printed and results.json rewritten as soon as
    # it is measured, so a run stopped by a time limit keeps every row it finished.
    benchmarks = [
        # issue 17's target: the fused MLP step (strategy auto) against one point at a time and against vmap
        *[functools.partial(path_step_benchmark, "fc-4-32", fc_path, bf16=bf16, baseline_strategy=baseline)
          for bf16 in ((False, True) if bf16_pays else (False,)) for baseline in (None, "vmap")],
        *[functools.partial(path_step_benchmark, name, cifar.subset(sizes[size], 0).to(device), strategy=strategy)
          for name, size in (("cnn-2-64", "cifar_path"), ("resnet-t11-code", "resnet_path"))
          for strategy in ("vmap", "loop")],
        *[functools.partial(path_step_benchmark, name, cifar.subset(sizes[size], 0).to(device), bf16=True)
          for name, size in bf16_convs.items() if bf16_pays],
        lambda: path_maximum_benchmark("fc-4-32", fc_path),  # issue 16: the cost of a maximum to a tolerance
        lambda: training_benchmark("fc-4-32", mnist.subset(sizes["mnist_train"], 0).to(device), k=10),  # issue 17: 10 minima
        # issue 17.3: the same stacked epoch with bf16 steps against fp32 steps
        *([functools.partial(training_benchmark, "fc-4-32", mnist.subset(sizes["mnist_train"], 0).to(device), k=10,
                             bf16=True)] if bf16_pays else []),
        lambda: training_benchmark("fc-2-25", mnist.subset(sizes["mnist_train"], 0).to(device), k=6),  # H=25 teachers
        lambda: training_benchmark("cnn-2-64", cifar.subset(sizes["cifar_train"], 0).to(device)),
        lambda: data_loading_benchmark(cifar.subset(sizes["augment"], 0).to(device)),  # no FLOP count
        # permutation paths: the toy's 10 pairs (on the CPU, as the stage runs them), 6 MNIST teachers of H = 25;
        # FLOPs counted as the line searches evaluate the loss, for the baseline too (the same work, by rounding)
        lambda: permutation_descent_benchmark("toy-5", "toy", 10, 1000, device),
        lambda: permutation_descent_benchmark("fc-2-25", "mnist", 6, sizes["mnist_path"], device),
    ]
    peaks = matmul_peaks(device)  # FLOP/s
    print(", ".join(f"{name} matmul peak {flops / 1e9:.1f} GFLOP/s" for name, flops in peaks.items())
          + ("" if bf16_pays else " (bf16 emulated on this CPU: one small product)"), flush=True)
    meta = {"device": torch.cuda.get_device_name(device) if cuda else cpu_description(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": sizes,
            "data": {d.name: d.source for d in (mnist, cifar)}, "peaks": peaks}
    results = []

    def save() -> None:  # after every row
        save_json({"meta": meta, "results": results, "wrn_throughput": throughput}, Path(args.out))

    # first: a target row, kept if a time limit stops the rest
    throughput = wrn_throughput_benchmark(sizes["wrn"], device, peaks)
    print(f"{throughput['benchmark']}: {throughput['images_per_s']:.1f} images/s, {throughput['gflops']:.1f} GFLOP/s, "
          f"{throughput['fraction_of_peak']:.1%} of measured {throughput['precision']} peak")
    save()
    if cuda:
        torch.cuda.empty_cache()
    print(f"{'benchmark':82s} {'baseline s':>11s} {'fast s':>9s} {'speed-up':>9s} {'GFLOP/s':>8s} {'of peak':>8s}",
          flush=True)
    for benchmark in benchmarks:
        r = {"flops": None} | benchmark()
        r |= rates(r["flops"], r["fast_s"], r.get("precision"), peaks)
        if r.get("baseline_flops") is not None:
            baseline_precision = r.get("baseline_precision", r["precision"])
            r |= {f"baseline_{k}": v for k, v in rates(r["baseline_flops"], r["baseline_s"], baseline_precision,
                                                        peaks).items()}
        results.append(r)
        rate = ("-", "-") if r["gflops"] is None else (f"{r['gflops']:.1f}", f"{r['fraction_of_peak']:.1%}")
        print(f"{r['benchmark']:82s} {r['baseline_s']:11.4f} {r['fast_s']:9.4f} {r['speedup']:8.2f}x "
              f"{rate[0]:>8s} {rate[1]:>8s}", flush=True)
        if "baseline_gflops" in r:
            print(f"{'  the baseline:':82s} {r['baseline_gflops']:.1f} GFLOP/s, {r['baseline_fraction_of_peak']:.1%} "
                  f"of peak", flush=True)
        save()
        if cuda:
            torch.cuda.empty_cache()
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
