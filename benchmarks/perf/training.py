"""Training K minima: one stacked run (losstopo.train) vs K plain runs one after another.

Both do the same number of Adam steps on the same batch size: the fast path is the epoch of
``losstopo.train`` (all K minima in one stacked step, its optimiser), the baseline the loop a plain PyTorch user
writes (one nn.Module, one optimiser, per minimum). Evaluation is excluded from both. FLOPs: a forward +
backward of every sample of every step (``benchmarks.perf.flops``), nothing for the optimiser. The bf16 row times
the stacked epoch with bf16 steps against the same stacked epoch in fp32: the speed ratio of the two precisions.
"""

from __future__ import annotations

import dataclasses

import torch

from benchmarks.perf.flops import step_flops_per_sample
from benchmarks.perf.timing import seconds_per_call
from losstopo.config import MinimaConfig
from losstopo.data import Dataset
from losstopo.models import build_model
from losstopo.stacked import StackedModel
from losstopo.train import bf16_steps, make_optimizer, train_epoch


def training_benchmark(model_name: str, data: Dataset, k: int = 8, epochs: int = 1, batch_size: int = 128,
                       repeats: int = 3, bf16: bool = False) -> dict:
    """``k`` minima trained together (``StackedModel``) vs one after another; each time the median of ``repeats``
    calls (a single call of the stacked fc-4-32 run varied 0.16-0.23 s between two runs of the same hour).
    ``bf16``: instead the stacked run with bf16 steps (``minima.mixed_precision``, ``mixed_precision_cpu``; taken
    where :func:`losstopo.train.bf16_steps` says, else fp32 and the row says so) vs the stacked run in fp32."""
    device = data.x_train.device
    image_shape, n_classes = tuple(data.x_train.shape[1:]), data.n_classes
    config = MinimaConfig(n_minima=k, max_epochs=epochs, patience=epochs + 1, batch_size=batch_size)
    fp32_config = dataclasses.replace(config, mixed_precision=False)
    fast_config = dataclasses.replace(config, mixed_precision_cpu=True) if bf16 else config
    n_batches = max(len(data.y_train) // batch_size, 1)
    samples = k * epochs * n_batches * min(batch_size, len(data.y_train))

    module = build_model(model_name, image_shape, n_classes).to(device)
    stacked = StackedModel(module)

    def stacked_run(steps: MinimaConfig):
        params = torch.nn.Parameter(stacked.init_thetas(list(range(k)), device=device))
        optimizer = make_optimizer(params, steps)
        generator = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            order = torch.argsort(torch.rand(k, len(data.y_train), generator=generator), dim=1).to(device)
            train_epoch(stacked, params, optimizer, data, order, steps, lambda b: steps.lr_base)

    def sequential_run():
        for seed in range(k):
            torch.manual_seed(seed)
            module = build_model(model_name, image_shape, n_classes).to(device)
            optimizer = torch.optim.Adam(module.parameters(), lr=config.lr_base)
            for _ in range(epochs):
                order = torch.randperm(len(data.y_train), device=device)
                for b in range(n_batches):
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(module(data.x_train[idx]), data.y_train[idx]).backward()
                    optimizer.step()

    baseline = seconds_per_call((lambda: stacked_run(fp32_config)) if bf16 else sequential_run, device, repeats)
    fast = seconds_per_call(lambda: stacked_run(fast_config), device, repeats)
    precision = "bf16" if bf16_steps(fast_config, device) else "fp32"
    flops = step_flops_per_sample(module, image_shape) * samples
    row = {"benchmark": f"train {k} minima x {epochs} epoch, {model_name}, {len(data.y_train)} images"
                        + (f", {precision} steps vs fp32 steps" if bf16 else ""),
           "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device),
           "precision": precision, "flops": flops}
    return row | ({"baseline_flops": flops, "baseline_precision": "fp32"} if bf16 else {})
