"""One Algorithm 3 step for all interior points of a 19-point path: stacked vs one point at a time.

The baseline is what a plain PyTorch user writes: for each interior point, load it into an
``nn.Module``, forward/backward on the data, read the gradient. The fast path evaluates all
points as one batched function (:class:`losstopo.stacked.DatasetLoss`, strategy "auto" by default).
"""

from __future__ import annotations

import torch

from benchmarks.perf.flops import step_flops_per_sample
from benchmarks.perf.timing import seconds_per_call
from losstopo.data import Dataset
from losstopo.models import build_model
from losstopo.paths import losses_and_grads, straight_path
from losstopo.stacked import DatasetLoss, StackedModel


def path_step_benchmark(model_name: str, data: Dataset, n_points: int = 19, repeats: int = 3,
                        strategy: str = "auto", bf16: bool = False, baseline_strategy: str | None = None) -> dict:
    """``bf16``: the stacked step under bf16 autocast (``paths.mixed_precision``), against the fp32 baseline.
    ``baseline_strategy``: the baseline is instead the stacked step with that strategy, in the same precision."""
    device = data.x_train.device
    image_shape, n_classes = tuple(data.x_train.shape[1:]), data.n_classes
    module = build_model(model_name, image_shape, n_classes).to(device)
    ends = StackedModel(module).init_thetas([0, 1], device=device)
    interior = straight_path(ends[0], ends[1], n_points)[1:-1]  # (n-2, d)

    def one_at_a_time():
        grads = []
        for theta in interior:
            torch.nn.utils.vector_to_parameters(theta, module.parameters())
            module.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(data.x_train), data.y_train).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]))
        return torch.stack(grads)

    def stacked_step(strategy: str):
        loss_fn = DatasetLoss(StackedModel(module, strategy=strategy), data.x_train, data.y_train,
                              autocast_dtype=torch.bfloat16 if bf16 else None)
        return lambda: losses_and_grads(loss_fn, interior, max_models=len(interior))[1]

    fast_step = stacked_step(strategy)
    baseline_step = stacked_step(baseline_strategy) if baseline_strategy else one_at_a_time
    # Same gradients before timing anything: the benchmark compares equal work (float32 sums in a
    # different order differ by ~1e-3 relative on a deep net, hence a relative-norm check).
    fast_grads, baseline_grads = fast_step(), baseline_step()
    relative = ((fast_grads - baseline_grads).norm() / baseline_grads.norm()).item()
    if relative > (5e-2 if bf16 else 1e-2):  # bf16 keeps ~3 significant digits
        raise AssertionError(f"fast and baseline gradients differ by {relative:.2e} (relative norm)")
    baseline = seconds_per_call(baseline_step, device, repeats)
    fast = seconds_per_call(fast_step, device, repeats)
    compared = f" vs {baseline_strategy}" if baseline_strategy else ""
    precision = "bf16" if bf16 else "fp32"
    return {"benchmark": f"path step, {n_points} points, {model_name}, {len(data.y_train)} images, "
                         f"{strategy}{compared}{', bf16' if bf16 else ''}",
            "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device),
            "precision": precision,
            "flops": step_flops_per_sample(module, image_shape) * len(data.y_train) * len(interior)}
