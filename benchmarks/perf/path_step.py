"""One Algorithm 3 step for all interior points of a 19-point path: stacked vs one point at a time.

The baseline is what a plain PyTorch user writes: for each interior point, load it into an
``nn.Module``, forward/backward on the data, read the gradient. The fast path evaluates all
points as one batched function (:class:`losstopo.stacked.DatasetLoss` under ``vmap``).
"""

from __future__ import annotations

import torch

from benchmarks.perf.timing import seconds_per_call
from losstopo.data import Dataset
from losstopo.models import build_model
from losstopo.paths import losses_and_grads, straight_path
from losstopo.stacked import DatasetLoss, StackedModel


def path_step_benchmark(model_name: str, data: Dataset, n_points: int = 19, repeats: int = 3,
                        strategy: str = "vmap", bf16: bool = False) -> dict:
    """``bf16``: the stacked step under bf16 autocast (``paths.mixed_precision``), against the fp32 baseline."""
    device = data.x_train.device
    image_shape, n_classes = tuple(data.x_train.shape[1:]), data.n_classes
    stacked = StackedModel(build_model(model_name, image_shape, n_classes).to(device), strategy=strategy)
    ends = stacked.init_thetas([0, 1], device=device)
    interior = straight_path(ends[0], ends[1], n_points)[1:-1]  # (n-2, d)
    loss_fn = DatasetLoss(stacked, data.x_train, data.y_train, autocast_dtype=torch.bfloat16 if bf16 else None)
    module = build_model(model_name, image_shape, n_classes).to(device)

    def one_at_a_time():
        grads = []
        for theta in interior:
            torch.nn.utils.vector_to_parameters(theta, module.parameters())
            module.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(data.x_train), data.y_train).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]))
        return torch.stack(grads)

    def stacked_step():
        return losses_and_grads(loss_fn, interior, max_models=len(interior))[1]

    # Same gradients before timing anything: the benchmark compares equal work (float32 sums in a
    # different order differ by ~1e-3 relative on a deep net, hence a relative-norm check).
    fast_grads, plain_grads = stacked_step(), one_at_a_time()
    relative = ((fast_grads - plain_grads).norm() / plain_grads.norm()).item()
    if relative > (5e-2 if bf16 else 1e-2):  # bf16 keeps ~3 significant digits
        raise AssertionError(f"stacked and plain gradients differ by {relative:.2e} (relative norm)")
    baseline = seconds_per_call(one_at_a_time, device, repeats)
    fast = seconds_per_call(stacked_step, device, repeats)
    precision = ", bf16" if bf16 else ""
    return {"benchmark": f"path step, {n_points} points, {model_name}, {len(data.y_train)} images, {strategy}{precision}",
            "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device)}
