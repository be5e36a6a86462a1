"""Projected wall time of a profile's compute stages on this device.

``python -m benchmarks.perf.projection [--profile paper] [--device auto] [--experiments ...]``

Every distinct :class:`~benchmarks.perf.workload.Op` of the profile is timed once here, at the
stage's shapes, on synthetic tensors (the time of a forward/backward depends on shapes, not on
pixel values), and multiplied by the number of calls the stage makes. Prints one row per stage
and writes ``benchmarks/perf/projection-<profile>.json`` (per-op timings included).

Off CUDA it also counts the kernels each op would launch on a GPU (every model batched as there) and
gives each stage a launch floor: kernels x ``--launch-us`` of host time, what eager PyTorch cannot go
under however fast the GPU. A stage's GPU time is at least the larger of that and its FLOP floor; the
small, many-step stages (fc_depth minima, permutation descents) are bound by launches, not FLOPs.
``--max-seconds 0`` gives the counts and floors without timing anything.

``--probe-images`` / ``--probe-models`` time a smaller call and scale it linearly, for machines
where the stage's own call takes too long to time (the default on CPU). Scaling in models is what
the chunked evaluators do anyway (chunks run one after another); scaling in images overestimates on
a GPU, where small batches under-use the device. On CUDA the default is no probing: exact shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm.auto import tqdm

from benchmarks.perf.permutation_descent import descent_problems, fixed_iterations
from benchmarks.perf.timing import seconds_per_call
from benchmarks.perf.wrn_throughput import bf16_matmul_peak, forward_macs_per_image
from benchmarks.perf.workload import Op, Work, full_sizes, loaded_sizes, profile_work, toy_hidden
from benchmarks.stages import resolve_device
from losstopo.config import load_params
from losstopo.data import REGISTRY, Dataset
from losstopo.io import save_json
from losstopo.models import build_model
from losstopo.paths import evaluate_in_chunks, losses_and_grads
from losstopo.stacked import DatasetLoss, StackedModel
from losstopo.train import make_optimizer, train_epoch

TRAIN_STEPS = 3  # optimiser steps per timed call of a training op
KERNEL_COUNT_IMAGES = 4  # a kernel count does not depend on the number of images
# Host time eager PyTorch spends per kernel on a GPU (dispatch + launch; a few microseconds on a fast host).
# An assumption for the launch floor projected off CUDA; on CUDA the timed calls include it.
LAUNCH_S = 5e-6
DESCENT_ITERATIONS = 3  # iterations per timed descent (two descents per call)


@dataclasses.dataclass(frozen=True)
class Probe:
    images: int | None = None  # time at most this many images per call, scale linearly
    models: int | None = None
    repeats: int = 3
    as_cuda: bool = False  # build the call as on CUDA (batched conv, bf16, channels-last) wherever it runs

    def shrink(self, op: Op) -> tuple[int, int, float]:
        """(models, images) to time and the factor that scales the timed call to ``op``."""
        models = min(op.models, self.models or op.models)
        images = min(op.images, self.images or op.images)
        return models, images, (op.models / models) * (op.images / images)


def _synthetic(dataset: str, images: int, device: torch.device) -> Dataset:
    spec = REGISTRY[dataset]
    x = torch.randn(images, *spec.image_shape, device=device)
    y = torch.randint(spec.n_classes, (images,), device=device)
    return Dataset(dataset, x, y, x, y, spec.n_classes, "timing tensors", "synthetic")


def _stacked(op: Op, data: Dataset, probe: Probe, channels_last: bool = False) -> StackedModel:
    module = build_model(op.model, tuple(data.x_train.shape[1:]), data.n_classes).to(data.x_train.device)
    # as on CUDA: one vmapped call for all models (channels-last training loops over them there too)
    return StackedModel(module, strategy="vmap" if probe.as_cuda else "auto", channels_last=channels_last)


@dataclasses.dataclass(frozen=True)
class Call:
    """What an op's timer runs: ``fn()`` does ``per_fn`` calls of the op at a ``scale``-th of its size."""

    fn: Callable[[], object]
    device: torch.device
    per_fn: int = 1
    scale: float = 1.0


def prepare_train(op: Op, device: torch.device, probe: Probe) -> Call:
    """Stacked optimiser steps of ``op.models`` minima, as ``train_minima`` takes them."""
    models, images, scale = probe.shrink(op)
    config = dataclasses.replace(op.minima, n_minima=models, batch_size=images)
    data = _synthetic(op.dataset, images, device)
    stacked = _stacked(op, data, probe, config.channels_last and (device.type == "cuda" or probe.as_cuda))
    params = torch.nn.Parameter(stacked.init_thetas(list(range(models)), device=device))
    optimizer = make_optimizer(params, config)
    order = torch.randint(images, (models, TRAIN_STEPS * images), device=device)
    augment = torch.Generator(device=device).manual_seed(0) if config.augment else None

    def steps():
        train_epoch(stacked, params, optimizer, data, order, config, lambda _b: config.lr_base, augment)

    return Call(steps, device, TRAIN_STEPS, scale)


def prepare_loss(op: Op, device: torch.device, probe: Probe) -> Call:
    """One chunk of a batched loss (``eval``) or loss-and-gradient (``grad``) evaluation."""
    models, images, scale = probe.shrink(op)
    data = _synthetic(op.dataset, images, device)
    stacked = _stacked(op, data, probe)
    thetas = stacked.init_thetas(list(range(models)), device=device)
    bf16 = torch.bfloat16 if op.bf16 and (device.type == "cuda" or probe.as_cuda) else None
    loss_fn = DatasetLoss(stacked, data.x_train, data.y_train, chunk_size=images, max_models=models,
                          autocast_dtype=bf16)
    if op.kind == "grad":
        return Call(lambda: losses_and_grads(loss_fn, thetas, models), device, 1, scale)
    return Call(lambda: evaluate_in_chunks(loss_fn, thetas, models), device, 1, scale)


def prepare_descent(op: Op, device: torch.device, probe: Probe) -> Call:
    """Batched iterations of ``op.models`` permutation-path descents at a fixed distance
    (``merge_neurons_batch``), each from a teacher that is also its own target, as in the stage."""
    if op.dataset == "toy":  # the stage runs the toy on the CPU
        device = torch.device("cpu")
    problems = descent_problems(op.model, op.dataset, op.models, op.images, device)
    rule = fixed_iterations(op.rule, DESCENT_ITERATIONS)
    return Call(lambda: problems.merge(rule), device, 2 * DESCENT_ITERATIONS)


PREPARE: dict[str, Callable[[Op, torch.device, Probe], Call]] = {
    "train": prepare_train, "grad": prepare_loss, "eval": prepare_loss, "descent": prepare_descent}


def time_op(op: Op, device: torch.device, probe: Probe) -> float:
    """Seconds of one call of ``op`` (scaled from a probe's smaller call where it shrinks one)."""
    call = PREPARE[op.kind](op, device, probe)
    return seconds_per_call(call.fn, call.device, probe.repeats) / call.per_fn * call.scale


def count_op_kernels(op: Op, device: torch.device) -> float:
    """Kernels one call of ``op`` would launch on CUDA: the tensor operations PyTorch dispatches (views,
    which launch none, left out), counted on a call of a few images with every model batched as on CUDA.
    On a GPU, eager PyTorch spends some microseconds of host time on each: a floor for small ops."""
    probe = Probe(images=KERNEL_COUNT_IMAGES, repeats=1, as_cuda=True)
    call = PREPARE[op.kind](op, device, probe)
    call.fn()  # warm-up: first calls may dispatch set-up work
    with KernelCounter() as counter:
        call.fn()
    return counter.kernels / call.per_fn


class KernelCounter(TorchDispatchMode):
    """Counts the tensor operations that reach a backend (after autograd and vmap), views excluded."""

    NO_KERNEL = {"aten.detach", "aten.empty", "aten.empty_strided", "aten.empty_like", "aten.lift_fresh",
                 "aten._unsafe_view", "aten.alias", "aten.set_", "aten.resize_", "aten._local_scalar_dense"}

    def __init__(self):
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and str(func.overloadpacket) not in self.NO_KERNEL:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def _shape_key(op: Op) -> Op:
    """Ops on datasets of the same shape take the same time: time them once."""
    spec = REGISTRY.get(op.dataset)
    return dataclasses.replace(op, dataset=op.dataset if spec is None else f"{spec.image_shape}x{spec.n_classes}")


def measure_ops(works: list[Work], measure: Callable[[Op], float], desc: str, progress: bool = True,
                max_seconds: float | None = None) -> dict[Op, float]:
    """``measure(op)`` of every distinct op of ``works``, in their order, once per shape; after
    ``max_seconds`` no new shape is measured (the ops left out are missing from the result)."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    by_shape: dict[Op, float] = {}
    values = {}
    for op in tqdm(list(dict.fromkeys(w.op for w in works)), desc=desc, disable=not progress):
        key = _shape_key(op)
        if key not in by_shape:
            if deadline is not None and time.monotonic() > deadline:
                continue
            by_shape[key] = measure(op)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        values[op] = by_shape[key]
    return values


def time_ops(works: list[Work], device: torch.device, probe: Probe, progress: bool = True,
             max_seconds: float | None = None) -> dict[Op, float]:
    """Seconds per call of every distinct op of ``works``."""
    return measure_ops(works, lambda op: time_op(op, device, probe), "timing", progress, max_seconds)


def count_kernels(works: list[Work], device: torch.device, progress: bool = True) -> dict[Op, float]:
    """Kernels per call of every distinct op of ``works`` (see :func:`count_op_kernels`)."""
    return measure_ops(works, lambda op: count_op_kernels(op, device), "kernels", progress)


@functools.cache
def forward_macs(model: str, dataset: str) -> int:
    """Multiply-accumulates of one image's forward pass (convolutions and linear layers)."""
    if dataset == "toy":  # 2 inputs -> hidden ReLU -> 1
        return 3 * toy_hidden(model)
    spec = REGISTRY[dataset]
    return forward_macs_per_image(build_model(model, spec.image_shape, spec.n_classes), spec.image_shape)


def op_flops(op: Op) -> float:
    """Floating-point operations of one call: 2 per MAC, x3 with the backward pass (one closure per descent
    iteration, a lower count: a line search may evaluate more)."""
    return 2 * forward_macs(op.model, op.dataset) * (1 if op.kind == "eval" else 3) * op.models * op.images


def project(works: list[Work], seconds: dict[Op, float], kernels: dict[Op, float] | None = None,
            launch_s: float = LAUNCH_S) -> list[dict]:
    """One row per (experiment, stage): projected seconds, the FLOPs they do, and what the count is
    (exact / upper / lower bound; ``untimed`` where some of its ops have no timing: its seconds are
    then a part only). With ``kernels``, also the kernels the stage launches and their floor at
    ``launch_s`` each (ops not counted add none)."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    flops: dict[tuple[str, str], float] = defaultdict(float)
    launches: dict[tuple[str, str], float] = defaultdict(float)
    bounds: dict[tuple[str, str], set[str]] = defaultdict(set)
    for work in works:
        key = (work.experiment, work.stage)
        totals[key] += work.calls * seconds.get(work.op, 0.0)
        flops[key] += work.calls * op_flops(work.op)
        launches[key] += work.calls * (kernels or {}).get(work.op, 0.0)
        bounds[key].add(work.bound if work.op in seconds else "untimed")
    rows = [{"experiment": e, "stage": s, "seconds": totals[(e, s)], "flops": flops[(e, s)],
             "bound": _combined(bounds[(e, s)])} for e, s in totals]
    if kernels is not None:
        for row in rows:
            key = (row["experiment"], row["stage"])
            row.update(kernels=launches[key], launch_floor_s=launches[key] * launch_s)
    return rows


def _combined(bounds: set[str]) -> str:
    if "untimed" in bounds:
        return "untimed"
    if bounds <= {"exact"}:
        return "exact"
    if "upper" in bounds and "lower" in bounds:
        return "mixed"
    return "upper" if "upper" in bounds else "lower"


def print_rows(rows: list[dict], total: float, peak: float, cuda: bool, launch_us: float) -> None:
    launches = "kernels" in rows[0] if rows else False
    print(f"{'experiment':22s} {'stage':8s} {'seconds':>12s} {'hours':>9s} {'PFLOP':>10s} {'h at peak':>9s}"
          + (f" {'Mkernels':>9s} {'h launch':>9s}" if launches else "") + "  count")
    for r in rows:
        print(f"{r['experiment']:22s} {r['stage']:8s} {r['seconds']:12.1f} {r['seconds'] / 3600:9.3f} "
              f"{r['flops'] / 1e15:10.1f} {r['hours_at_peak']:9.3f}"
              + (f" {r['kernels'] / 1e6:9.2f} {r['launch_floor_s'] / 3600:9.3f}" if launches else "")
              + f"  {r['bound']}")
    flops = sum(r["flops"] for r in rows)
    untimed = sum(r["bound"] == "untimed" for r in rows)
    print(f"{'total':31s} {total:12.1f} {total / 3600:9.3f} {flops / 1e15:10.1f} {flops / peak / 3600:9.3f}"
          + (f" {sum(r['kernels'] for r in rows) / 1e6:9.2f} {sum(r['launch_floor_s'] for r in rows) / 3600:9.3f}"
             if launches else "")
          + (f"  (seconds a part only: {untimed} stages untimed, --max-seconds ran out)" if untimed else ""))
    print(f"('h at peak': the FLOPs at {'the bf16 matmul peak measured now' if cuda else 'the reference rate'}, "
          f"{peak / 1e12:.0f} TFLOP/s: a floor no implementation beats"
          + (f"; 'h launch': the kernels at {launch_us:g} us of host time each, the floor of eager PyTorch on a "
             "GPU: a stage's GPU time is at least the larger of the two)" if launches else ")"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--experiments", nargs="*", default=None)
    parser.add_argument("--probe-images", type=int, default=None, help="default: none on CUDA, 256 on CPU")
    parser.add_argument("--probe-models", type=int, default=None, help="default: none on CUDA, 8 on CPU")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 on CUDA, 1 on CPU")
    parser.add_argument("--sizes", choices=("full", "here"), default="full",
                        help="full: the real datasets' sizes; here: the copies params.data resolves to on this machine")
    parser.add_argument("--reference-tflops", type=float, default=790.0,
                        help="off CUDA, the rate for the 'h at peak' column (default: an H200's bf16 matrix rate)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop timing new ops after this long; stages left out are marked 'untimed'")
    parser.add_argument("--kernels", action=argparse.BooleanOptionalAction, default=None,
                        help="count each op's kernels for a launch floor (default: off CUDA only)")
    parser.add_argument("--launch-us", type=float, default=LAUNCH_S * 1e6,
                        help="host microseconds per kernel launch assumed for the launch floor")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    params = load_params(args.params, args.profile)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    probe = Probe(args.probe_images or (None if cuda else 256), args.probe_models or (None if cuda else 8),
                  args.repeats or (3 if cuda else 1))
    sizes = full_sizes if args.sizes == "full" else loaded_sizes(params.data)
    works = profile_work(params, sizes, cuda, args.experiments)
    seconds = time_ops(works, device, probe, max_seconds=args.max_seconds)
    count = args.kernels if args.kernels is not None else not cuda
    kernels = count_kernels(works, device) if count else None  # cheap: a few images per op, no deadline
    rows = project(works, seconds, kernels, args.launch_us * 1e-6)
    total = sum(r["seconds"] for r in rows)  # a part only where a row is untimed: the table says so
    peak = bf16_matmul_peak(device) if cuda else args.reference_tflops * 1e12
    for r in rows:
        r["hours_at_peak"] = r["flops"] / peak / 3600
    print_rows(rows, total, peak, cuda, args.launch_us)
    meta = {"profile": args.profile, "sizes": args.sizes,
            "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "probe": dataclasses.asdict(probe),
            "peak_flops": peak, "peak_measured": cuda, "launch_s": args.launch_us * 1e-6 if count else None}
    ops = [{"op": {k: v for k, v in dataclasses.asdict(w.op).items() if k not in ("minima", "rule")},
            "experiment": w.experiment, "stage": w.stage, "what": w.what, "calls": w.calls, "bound": w.bound,
            "seconds_per_call": seconds.get(w.op), "seconds": w.calls * seconds[w.op] if w.op in seconds else None,
            "kernels_per_call": (kernels or {}).get(w.op)} for w in works]
    out = Path(args.out or Path(__file__).with_name(f"projection-{args.profile}.json"))
    save_json({"meta": meta, "stages": rows, "total_seconds": total,
               "untimed_stages": sum(r["bound"] == "untimed" for r in rows),
               "total_flops": sum(r["flops"] for r in rows), "work": ops}, out)
    print(f"written {out}")


if __name__ == "__main__":
    main()
