"""Training K minima: one stacked run (losstopo.train) vs K plain runs one after another.

Both do the same number of Adam steps on the same batch size: the fast path is the epoch of
``losstopo.train`` (all K minima in one stacked step, its optimiser), the baseline the loop a plain PyTorch user
writes (one nn.Module, one optimiser, per minimum). Evaluation is excluded from both. FLOPs: a forward +
backward of every sample of every step (``benchmarks.perf.flops``), nothing for the optimiser.
"""

from __future__ import annotations

import torch

from benchmarks.perf.flops import step_flops_per_sample
from benchmarks.perf.timing import seconds_per_call
from losstopo.config import MinimaConfig
from losstopo.data import Dataset
from losstopo.models import build_model
from losstopo.stacked import StackedModel
from losstopo.train import make_optimizer, train_epoch


def training_benchmark(model_name: str, data: Dataset, k: int = 8, epochs: int = 1, batch_size: int = 128,
                       repeats: int = 3) -> dict:
    """``k`` minima trained together (``StackedModel``) vs one after another; each time the median of ``repeats``
    calls (a single call of the stacked fc-4-32 run varied 0.16-0.23 s between two runs of the same hour)."""
    device = data.x_train.device
    image_shape, n_classes = tuple(data.x_train.shape[1:]), data.n_classes
    config = MinimaConfig(n_minima=k, max_epochs=epochs, patience=epochs + 1, batch_size=batch_size)
    n_batches = max(len(data.y_train) // batch_size, 1)
    samples = k * epochs * n_batches * min(batch_size, len(data.y_train))

    module = build_model(model_name, image_shape, n_classes).to(device)
    stacked = StackedModel(module)

    def stacked_run():
        params = torch.nn.Parameter(stacked.init_thetas(list(range(k)), device=device))
        optimizer = make_optimizer(params, config)
        generator = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            order = torch.argsort(torch.rand(k, len(data.y_train), generator=generator), dim=1).to(device)
            train_epoch(stacked, params, optimizer, data, order, config, lambda b: config.lr_base)

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

    baseline = seconds_per_call(sequential_run, device, repeats)
    fast = seconds_per_call(stacked_run, device, repeats)
    return {"benchmark": f"train {k} minima x {epochs} epoch, {model_name}, {len(data.y_train)} images",
            "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device),
            "precision": "bf16" if config.mixed_precision and device.type == "cuda" else "fp32",  # as train_epoch
            "flops": step_flops_per_sample(module, image_shape) * samples}
