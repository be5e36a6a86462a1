"""The curves and triangles jobs that a worker runs (stage 2): train one batch of curves or triangles with a random
t (or random barycentric point) per minibatch under the minima's schedule (Appendix C), then evaluate them densely,
also after 80% of their steps (their convergence check)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.wrn_robustness.schema import CurveConfig
from losstopo.config import DataConfig
from losstopo.curves import CurveTraining, evaluate_curves, evaluate_triangles, train_curves, train_triangles
from losstopo.job_data import DataRequest, job_dataset
from losstopo.models import build_model
from losstopo.paths import convergence_checkpoint
from losstopo.schedules import garipov_lr
from losstopo.stacked import DatasetLoss, StackedModel
from losstopo.stage_frame import resolve_device

# Evaluation batching (memory only; BatchNorm statistics are those of an EVAL_CHUNK-image chunk).
EVAL_MODELS = 8  # parameter vectors per vmapped forward
EVAL_CHUNK = 2000  # images per forward
EVAL_POINT_BUDGET = 2 ** 28  # floats of curve/triangle points materialised at once (1 GiB in fp32)


def _eval_loss(stacked: StackedModel, x: torch.Tensor, y: torch.Tensor) -> DatasetLoss:
    return DatasetLoss(stacked, x, y, chunk_size=EVAL_CHUNK, max_models=EVAL_MODELS)


def garipov_training(epochs: int, batches_per_epoch: int, lr: float, momentum: float,
                     weight_decay: float) -> CurveTraining:
    """Appendix C: the minima's procedure, i.e. the Garipov schedule over the epochs, one step per minibatch."""
    return CurveTraining(steps=epochs * batches_per_epoch,
                         lr=lambda step: garipov_lr(step // batches_per_epoch, epochs, lr),
                         momentum=momentum, weight_decay=weight_decay)


def minibatches_per_epoch(cfg: CurveConfig, n_samples: int) -> int:
    return max(n_samples // cfg.batch_size, 1)  # as train_minima counts an epoch


def training_for(cfg: CurveConfig, epochs: int, n_samples: int) -> CurveTraining:
    return garipov_training(epochs, minibatches_per_epoch(cfg, n_samples), cfg.lr, cfg.momentum, cfg.weight_decay)


def side_bends(bends: torch.Tensor, pairs: list[tuple[int, int]], triples: list[tuple[int, int, int]]) -> torch.Tensor:
    """(T, 3, d) side centres D (AB), E (BC), F (CA) of the triangles (A, B, C) = (i, j, k), i < j < k:
    the bends of the curves (i, j), (j, k) and (i, k). A polychain with one bend is the same set of
    points in either direction, so the curve (i, k) is the side C -> A read backwards."""
    index = {pair: n for n, pair in enumerate(pairs)}
    rows = [[index[(i, j)], index[(j, k)], index[(i, k)]] for i, j, k in triples]
    return bends[torch.tensor(rows, device=bends.device)]


def _groups(n_items: int, points_per_item: int, dim: int) -> list[slice]:
    size = max(1, EVAL_POINT_BUDGET // max(points_per_item * dim, 1))
    return [slice(s, min(s + size, n_items)) for s in range(0, n_items, size)]


@dataclass(frozen=True)
class StudySpec:
    """What every curves and triangles job of one study needs besides its minima (``shared[name]``)."""

    name: str
    model: str
    data: DataConfig
    request: DataRequest
    config: CurveConfig
    mixed_precision: bool
    seed: int
    device: str
    augment: bool = False  # crop + flip of the training batches, as the study's minima (Appendix C: "trained like the minima")


@dataclass(frozen=True)
class CurvesJob:
    """The curves of some pairs of the study's minima; ``minima``: also their losses and accuracies (first job)."""

    study: StudySpec
    pairs: tuple[tuple[int, int], ...]
    minima: bool
    progress: bool


@dataclass(frozen=True)
class TrianglesJob:
    """The triangles of some triples in one regime; sides_fixed takes its sides from the study's curve bends."""

    study: StudySpec
    regime: str
    triples: tuple[tuple[int, int, int], ...]
    progress: bool


def _study_losses(spec: StudySpec) -> tuple[DatasetLoss, DatasetLoss, int]:
    """The loss to train on (minibatches, bf16 on CUDA if the minima used it), the loss to evaluate with,
    and the number of training images."""
    device = resolve_device(spec.device)
    dataset = job_dataset(spec.data, spec.request, device)
    stacked = StackedModel(build_model(spec.model, dataset.x_train.shape[1:], dataset.n_classes).to(device))
    bf16 = torch.bfloat16 if device.type == "cuda" and spec.mixed_precision else None
    train_loss = DatasetLoss(stacked, dataset.x_train, dataset.y_train, chunk_size=EVAL_CHUNK,
                             max_models=EVAL_MODELS, batch_size=spec.config.batch_size, autocast_dtype=bf16,
                             augment=spec.augment)
    return train_loss, _eval_loss(stacked, dataset.x_train, dataset.y_train), len(dataset.y_train)


def _in_groups(evaluate, n_items: int, points_per_item: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``evaluate(group)`` -> (the points' coordinates, losses (items, points)) over groups of items that fit
    EVAL_POINT_BUDGET: the coordinates (the same for every group) and all items' losses."""
    coordinates, losses = None, []
    for group in _groups(n_items, points_per_item, dim):
        coordinates, part = evaluate(group)
        losses.append(part)
    return coordinates, np.concatenate(losses)


def _curve_losses(eval_loss: DatasetLoss, start: torch.Tensor, bends: torch.Tensor, end: torch.Tensor,
                  cfg: CurveConfig) -> tuple[np.ndarray, np.ndarray]:
    """t (n_eval,) and losses (P, n_eval)."""
    return _in_groups(lambda group: evaluate_curves(eval_loss, start[group], bends[group], end[group], cfg.kind,
                                                    cfg.n_eval, max_models=EVAL_MODELS),
                      len(start), cfg.n_eval, start.shape[1])


def curves_job(shared: dict[str, dict], job: CurvesJob) -> dict:
    """Trains and evaluates the curves of ``job.pairs``: bends (P, d) on the CPU, t and losses (P, n_eval), and
    each curve's maximum after 80% of the steps (its convergence check)."""
    cfg = job.study.config
    train_loss, eval_loss, n_samples = _study_losses(job.study)
    thetas = shared[job.study.name]["thetas"].to(resolve_device(job.study.device))
    start, end = thetas[[i for i, _ in job.pairs]], thetas[[j for _, j in job.pairs]]
    training = training_for(cfg, cfg.epochs, n_samples)
    bends, bends_at_checkpoint = train_curves(train_loss, start, end, cfg.kind, training, seed=job.study.seed,
                                              progress=job.progress, checkpoint=convergence_checkpoint(training.steps))
    t, losses = _curve_losses(eval_loss, start, bends, end, cfg)
    _, losses_at_checkpoint = _curve_losses(eval_loss, start, bends_at_checkpoint, end, cfg)
    out = {"bends": bends.cpu(), "t": t, "losses": losses, "max_at_checkpoint": losses_at_checkpoint.max(axis=1)}
    if job.minima:
        losses, accuracies = eval_loss.loss_and_accuracy(thetas)
        out |= {"minima_losses": losses.tolist(), "minima_train_acc": accuracies.tolist()}
    return out


def _triangle_losses(eval_loss: DatasetLoss, vertices: torch.Tensor, sides: torch.Tensor, centre: torch.Tensor,
                     cfg: CurveConfig) -> tuple[np.ndarray, np.ndarray]:
    """The barycentric grid (m, 3) and losses (T, m)."""
    m = (cfg.triangle_resolution + 1) * (cfg.triangle_resolution + 2) // 2
    return _in_groups(lambda group: evaluate_triangles(eval_loss, vertices[group], sides[group], centre[group],
                                                       cfg.triangle_resolution, max_models=EVAL_MODELS),
                      len(vertices), m, vertices.shape[-1])


def triangles_job(shared: dict[str, dict], job: TrianglesJob) -> dict:
    """Trains and evaluates the triangles of ``job.triples``: the barycentric grid, losses (T, grid points) and
    each triangle's maximum after 80% of the steps (its convergence check)."""
    cfg = job.study.config
    train_loss, eval_loss, n_samples = _study_losses(job.study)
    device = resolve_device(job.study.device)
    thetas = shared[job.study.name]["thetas"].to(device)
    vertices = torch.stack([thetas[list(triple)] for triple in job.triples])  # (T, 3, d): A, B, C
    fixed_sides = None
    if job.regime == "sides_fixed":
        pairs = list(itertools.combinations(range(len(thetas)), 2))
        fixed_sides = side_bends(shared[job.study.name]["bends"], pairs, list(job.triples)).to(device)
    training = training_for(cfg, cfg.triangle_epochs, n_samples)
    trained, at_checkpoint = train_triangles(train_loss, vertices, fixed_sides, training, seed=job.study.seed,
                                             progress=job.progress, checkpoint=convergence_checkpoint(training.steps))
    grid, losses = _triangle_losses(eval_loss, vertices, *trained, cfg)
    _, losses_at_checkpoint = _triangle_losses(eval_loss, vertices, *at_checkpoint, cfg)
    return {"grid": grid, "losses": losses, "max_at_checkpoint": losses_at_checkpoint.max(axis=1)}
