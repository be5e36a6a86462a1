"""A path's maximum: the adaptive probes and bracket search of :func:`losstopo.paths.evaluate_paths` against
the paper's fixed alphas (4 probes per segment), on the same uneven polylines (Algorithm 3 leaves segments of
unequal length). The row's "baseline" is the fixed probes and "fast" the adaptive maximum, so its speed-up is
below 1: it is the cost of a maximum to a stated tolerance, with the evaluations and the gain beside it."""

from __future__ import annotations

import torch

from benchmarks.perf.timing import seconds_per_call
from losstopo.data import Dataset
from losstopo.models import build_model
from losstopo.paths import evaluate_paths, interpolate_polyline
from losstopo.stacked import DatasetLoss, StackedModel


def path_maximum_benchmark(model_name: str, data: Dataset, n_paths: int = 4, n_points: int = 19,
                           repeats: int = 3) -> dict:
    device = data.x_train.device
    module = build_model(model_name, tuple(data.x_train.shape[1:]), data.n_classes).to(device)
    stacked = StackedModel(module)
    loss_fn = DatasetLoss(stacked, data.x_train, data.y_train)
    generator = torch.Generator().manual_seed(0)
    ends = stacked.init_thetas(list(range(2 * n_paths)), device=device).view(n_paths, 2, -1)
    paths = []
    for start, end in ends:  # points at sorted random positions of the segment: longest/shortest up to ~20x
        t, _ = torch.sort(torch.rand(n_points - 2, generator=generator))
        positions = torch.cat([torch.zeros(1), t, torch.ones(1)]).numpy()
        paths.append(interpolate_polyline(torch.stack([start, end]), positions))
    fixed = evaluate_paths(loss_fn, paths, tolerance=None)
    adaptive = evaluate_paths(loss_fn, paths)
    baseline = seconds_per_call(lambda: evaluate_paths(loss_fn, paths, tolerance=None), device, repeats)
    fast = seconds_per_call(lambda: evaluate_paths(loss_fn, paths), device, repeats)
    return {"benchmark": f"path maximum, {n_paths} uneven paths x {n_points} points, {model_name}, "
                         f"{len(data.y_train)} images, adaptive (fast) vs fixed alphas (baseline)",
            "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device),
            "precision": "fp32", "evaluations": sum(len(r.positions) for r in adaptive),
            "evaluations_fixed_alphas": sum(len(r.positions) for r in fixed),
            "largest_max_gain": max(a.max_loss - f.max_loss for a, f in zip(adaptive, fixed))}
