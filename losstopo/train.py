"""Training many minima of one architecture at once (barcodes paper, section 2.1, Appendix A).

All K minima live in one ``(K, d)`` tensor and train together through
:class:`~losstopo.stacked.StackedModel`: each has its own seed, its own initialisation and its
own order of minibatches, and Adam's elementwise update keeps them independent. The learning
rate follows ``config.schedule``: Smith's triangular cyclical rate with Adam (FC and CNN
experiments), the piecewise-linear S(m1, m2, lr_max, lr_min) per batch with SGD (ResNet,
Tables 4, 5) or Garipov's schedule (WRN, Table 6). A minimum counts as converged when its full
training loss has not improved by more than ``min_improvement`` (relative) plus ``min_improvement_abs``
for ``patience`` epochs (the absolute part stops a loss near zero from counting 1% of 1e-5 as progress); its
best-epoch weights are the minimum returned. With ``patience=None`` every minimum trains for
``max_epochs`` (the papers' fixed budgets) and its last weights are returned; it counts as converged
when its last 20% of epochs moved its training loss by less than 1% (:func:`fixed_budget_converged`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from losstopo.config import MinimaConfig
from losstopo.data import Dataset
from losstopo.errors import TrainingDiverged
from losstopo.augment import random_crop_flip
from losstopo.io import load_or_discard, save_torch
from losstopo.schedules import garipov_lr, piecewise_linear_lr, triangular_lr
from losstopo.stacked import DatasetLoss, StackedModel, cross_entropy_per_model, fast_bf16

DIVERGED_FACTOR = 10.0  # x ln(classes): a finite loss that high is divergence (a tiny net on noise can pass 1.5 x)


@dataclass
class MinimaResult:
    thetas: torch.Tensor  # (K, d) best-epoch weights of each minimum
    seeds: list[int]
    train_loss: list[float]
    train_acc: list[float]
    test_loss: list[float]
    test_acc: list[float]
    epochs: list[int]  # epoch of each minimum's best weights
    converged: list[bool]  # stopped by the patience rule (False: max_epochs reached first)
    history: list[dict] = field(default_factory=list)  # one entry per epoch

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "thetas"}


def train_minima(
    stacked: StackedModel,
    data: Dataset,
    config: MinimaConfig,
    *,
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    description: str = "minima",
) -> MinimaResult:
    device = data.x_train.device
    seeds = [config.seed + k for k in range(config.n_minima)]
    n_train = len(data.y_train)
    batches_per_epoch = max(n_train // config.batch_size, 1)
    train_loss_fn = DatasetLoss(stacked, data.x_train, data.y_train, chunk_size=config.eval_batch_size)
    test_loss_fn = DatasetLoss(stacked, data.x_test, data.y_test, chunk_size=config.eval_batch_size)

    state = _load_checkpoint(checkpoint)
    if state is None:
        thetas = stacked.init_thetas(seeds, device=device)
        state = {
            "epoch": 0, "thetas": thetas, "best": thetas.clone(),
            "best_loss": torch.full((config.n_minima,), math.inf), "best_epoch": [0] * config.n_minima,
            "stale": [0] * config.n_minima, "optimizer": None, "history": [],
            "rng": torch.Generator().manual_seed(config.seed).get_state(),
        }
    params = torch.nn.Parameter(state["thetas"].to(device))
    optimizer = make_optimizer(params, config)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    generator = torch.Generator()
    generator.set_state(state["rng"])
    lr_at = _schedule(config, batches_per_epoch)
    augment_generator = torch.Generator(device=device).manual_seed(config.seed) if config.augment else None
    patience = config.patience if config.patience is not None else config.max_epochs + 1

    bar = tqdm(range(state["epoch"], config.max_epochs), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        if all(s >= patience for s in state["stale"]):
            break
        order = torch.argsort(torch.rand(config.n_minima, n_train, generator=generator), dim=1).to(device)
        train_epoch(stacked, params, optimizer, data, order, config, lambda b: lr_at(epoch * batches_per_epoch + b),
                    augment_generator)
        with torch.no_grad():
            epoch_loss = train_loss_fn(params.detach()).cpu()
        _stop_if_diverged(epoch_loss, seeds, epoch, config, data.n_classes)
        improved = epoch_loss < state["best_loss"] * (1 - config.min_improvement) - config.min_improvement_abs
        if config.patience is None:  # fixed budget: the minimum is the last epoch's weights
            improved = torch.ones_like(improved)
        for k in range(config.n_minima):
            if improved[k]:
                state["best"][k] = params.detach()[k]
                state["best_loss"][k] = epoch_loss[k]
                state["best_epoch"][k] = epoch + 1
                state["stale"][k] = 0
            else:
                state["stale"][k] += 1
        record = {"epoch": epoch + 1, "train_loss": epoch_loss.tolist(), "lr": optimizer.param_groups[0]["lr"]}
        state["history"].append(record)
        state.update(epoch=epoch + 1, thetas=params.detach(), optimizer=optimizer.state_dict(), rng=generator.get_state())
        if checkpoint is not None:
            save_torch(state, checkpoint)
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
        bar.set_postfix(loss=f"{epoch_loss.max():.4f}", active=sum(s < patience for s in state["stale"]))

    best = state["best"].to(device)
    train_loss, train_acc = train_loss_fn.loss_and_accuracy(best)
    test_loss, test_acc = test_loss_fn.loss_and_accuracy(best)
    return MinimaResult(
        thetas=best.cpu(), seeds=seeds, train_loss=train_loss.tolist(), train_acc=train_acc.tolist(),
        test_loss=test_loss.tolist(), test_acc=test_acc.tolist(),
        epochs=list(state["best_epoch"]),
        converged=(fixed_budget_converged(state["history"], config.n_minima) if config.patience is None
                   else [s >= patience for s in state["stale"]]),
        history=state["history"],
    )


FIXED_BUDGET_TOLERANCE = 0.01  # fixed budgets: converged when the last 20% of epochs moved the loss by < 1%


def fixed_budget_converged(history: list[dict], n_minima: int) -> list[bool]:
    """For a fixed epoch budget (no patience rule), convergence measured, not assumed: the relative change
    of each minimum's full training loss between 80% of the epochs and the last is below
    :data:`FIXED_BUDGET_TOLERANCE`."""
    if not history:
        return [False] * n_minima
    earlier = history[int(round(0.8 * len(history))) - 1 if len(history) > 1 else 0]["train_loss"]
    last = history[-1]["train_loss"]
    return [abs(b - a) / max(abs(b), 1e-12) < FIXED_BUDGET_TOLERANCE for a, b in zip(earlier, last)]


def make_optimizer(params: torch.nn.Parameter, config: MinimaConfig) -> torch.optim.Optimizer:
    """The minima's optimiser on their one (K, d) tensor. Adam is the fused kernel (CPU and CUDA): the same update
    in one pass instead of six elementwise ones (0.30 -> 0.07 ms a step for 10 fc-4-32 on this project's CPU,
    benchmarks/RESULTS.md)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD([params], lr=config.lr_max, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam([params], lr=config.lr_base, weight_decay=config.weight_decay,
                            fused=params.device.type in ("cpu", "cuda"))


def train_epoch(stacked: StackedModel, params: torch.nn.Parameter, optimizer: torch.optim.Optimizer, data: Dataset,
                order: torch.Tensor, config: MinimaConfig, lr_of_batch: Callable[[int], float],
                augment_generator: torch.Generator | None = None) -> None:
    """One pass over the data for all K minima at once: ``order`` (K, N) is each minimum's own
    shuffle; every step is one stacked forward/backward and one optimiser step on params (K, d). Only the logits
    run under bf16 autocast (:func:`bf16_steps`); the loss is reduced in fp32 (cross_entropy_per_model)."""
    device = params.device
    use_bf16 = bf16_steps(config, device)
    for b in range(max(order.shape[1] // config.batch_size, 1)):
        for group in optimizer.param_groups:
            group["lr"] = lr_of_batch(b)
        idx = order[:, b * config.batch_size:(b + 1) * config.batch_size]  # (K, B)
        xs = gather_rows(data.x_train, idx)
        if config.augment:
            xs = random_crop_flip(xs.flatten(0, 1), generator=augment_generator).view_as(xs)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = stacked.logits_per_model(params, xs)
        loss = cross_entropy_per_model(logits, data.y_train[idx]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bf16_steps(config: MinimaConfig, device: torch.device) -> bool:
    """Whether train_epoch's steps run under bf16 autocast: on CUDA with ``mixed_precision``, on a CPU with fast
    bf16 with ``mixed_precision_cpu`` (elsewhere CPU bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return config.mixed_precision
    return config.mixed_precision_cpu and fast_bf16(device)


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for an index tensor of any shape, as one row copy of the flattened samples (advanced indexing of
    an image tensor by a 2-D index takes several times longer on CPU; measured in benchmarks/RESULTS.md)."""
    return x.reshape(len(x), -1).index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


def _schedule(config: MinimaConfig, batches_per_epoch: int):
    """iteration -> learning rate."""
    if config.schedule == "piecewise":
        return lambda i: piecewise_linear_lr(i, batches_per_epoch, config.m1, config.m2, config.lr_max, config.lr_base)
    if config.schedule == "garipov":
        return lambda i: garipov_lr(i // batches_per_epoch, config.max_epochs, config.lr_max)
    cycle_iterations = max(int(config.cycle_epochs * batches_per_epoch), 2)
    return lambda i: triangular_lr(i, config.lr_base, config.lr_max, cycle_iterations)


def divergence_bound(n_classes: int) -> float:
    """A training loss above this has diverged: DIVERGED_FACTOR x the cross-entropy of a uniform guess, ln(classes)."""
    return DIVERGED_FACTOR * math.log(n_classes)


def _stop_if_diverged(epoch_loss: torch.Tensor, seeds: list[int], epoch: int, config: MinimaConfig,
                      n_classes: int) -> None:
    bound = divergence_bound(n_classes)
    bad = (~torch.isfinite(epoch_loss) | (epoch_loss > bound)).nonzero().flatten().tolist()
    if bad:
        k = bad[0]
        raise TrainingDiverged(
            f"minimum {k} (seed {seeds[k]}) diverged at epoch {epoch + 1}: training loss {epoch_loss[k].item():.4g} "
            f"(above {bound:.3g} = {DIVERGED_FACTOR} x ln({n_classes} classes), or not finite); lower minima.lr_max "
            f"(now {config.lr_max}) or check the data"
        )


def _load_checkpoint(path: Path | None) -> dict | None:
    """An epoch checkpoint to resume from; an unreadable one is discarded (training starts over)."""
    return None if path is None else load_or_discard(path, "epoch checkpoint")
