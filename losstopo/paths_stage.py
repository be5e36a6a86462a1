"""The paths and curves stages: every pair of a variant's minima joined by an Algorithm 3 path (``paths``) or a
one-bend polychain curve of Garipov et al. (``curves``), the pairs cut into jobs balanced over all variants."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from losstopo import tracking
from losstopo.config import DataConfig, Params, PathConfig, as_dict
from losstopo.curves import curve_paths, garipov_curve_training
from losstopo.data import Dataset
from losstopo.errors import TrainingDiverged
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.io import save_json, tensor_digest
from losstopo.job_data import DataRequest, job_dataset, job_provenance
from losstopo.minima_stage import Variant
from losstopo.models import build_model
from losstopo.paths import (PathsDiverged, Refinement, check_not_diverged, convergence_checkpoint,
                            convergence_rule_words, evaluate_in_chunks, evaluate_paths, optimize_paths, path_converged,
                            straight_path)
from losstopo.schedules import piecewise_linear_lr
from losstopo.stacked import DatasetLoss, StackedModel, fast_bf16
from losstopo.stage_frame import ARTIFACTS, NOT_RUN, compute_stage, prune, resolve_device, stage_dir

@dataclass(frozen=True)
class PathsJob:
    """Algorithm 3 paths for some pairs of one variant's minima (``shared[minima_key]``)."""

    minima_key: str
    model: str
    data: DataConfig
    request: DataRequest
    config: PathConfig
    pairs: tuple[tuple[int, int], ...]
    seed: int
    device: str
    progress: bool
    description: str


def path_loss(stacked: StackedModel, dataset: Dataset, cfg: PathConfig) -> DatasetLoss:
    """The loss paths are optimised and evaluated on: minibatches of ``cfg.batch_size`` images,
    ``cfg.max_models`` path points per batched forward (one kernel per layer for all of them), bf16
    steps with ``cfg.mixed_precision`` on CUDA and on AMX CPUs (the losses over the whole subset stay fp32)."""
    bf16 = cfg.mixed_precision and fast_bf16(dataset.x_train.device)
    return DatasetLoss(stacked, dataset.x_train, dataset.y_train, batch_size=cfg.batch_size,
                       max_models=cfg.max_models, minibatch_autocast_dtype=torch.bfloat16 if bf16 else None)


def paths_job(shared: dict[str, torch.Tensor], job: PathsJob) -> dict:
    """The Algorithm 3 paths of ``job.pairs``, their straight-segment baselines and the losses of their end points."""
    loss_fn, thetas, starts, ends, schedule = _job_problem(shared, job)
    cfg = job.config
    try:
        results = optimize_paths(
            loss_fn, starts, ends, n_points=cfg.n_points, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            clip_norm=cfg.clip_norm, alphas=cfg.alphas, max_models=cfg.max_models, seed=job.seed,
            progress=job.progress, description=job.description, step_rule=cfg.step_rule, sample=cfg.sample,
            checkpoints=[convergence_checkpoint(schedule["steps"])], **schedule)
    except PathsDiverged as error:
        pairs = ", ".join(f"minima {job.pairs[p][0]}-{job.pairs[p][1]}" for p in error.paths)
        raise TrainingDiverged(f"{job.description}: the path between {pairs} diverged at step {error.step} "
                               f"(non-finite loss); lower paths.lr or set paths.step_rule: normalized") from None
    return _path_record(loss_fn, job, thetas, starts, ends, results)


def curves_job(shared: dict[str, torch.Tensor], job: PathsJob) -> dict:
    """One-bend polychain curves (Garipov et al.) for ``job.pairs``, recorded as :func:`paths_job` records paths."""
    loss_fn, thetas, starts, ends, schedule = _job_problem(shared, job)
    cfg = job.config
    training = garipov_curve_training(cfg.curve_steps or schedule["steps"], cfg.curve_lr, cfg.curve_momentum,
                                      cfg.curve_weight_decay)
    try:
        results = curve_paths(loss_fn, starts, ends, "polychain", training, cfg.n_points, cfg.alphas, cfg.max_models,
                              job.seed, job.progress)
    except PathsDiverged as error:
        pairs = ", ".join(f"minima {job.pairs[p][0]}-{job.pairs[p][1]}" for p in error.paths)
        raise TrainingDiverged(f"{job.description}: the curve between {pairs} diverged (non-finite weights); "
                               f"lower paths.curve_lr (now {cfg.curve_lr})") from None
    return _path_record(loss_fn, job, thetas, starts, ends, results)


def _job_problem(shared: dict[str, torch.Tensor], job: PathsJob):
    """The loss, the variant's minima, the pairs' start and end points and the step schedule of a paths job."""
    device = resolve_device(job.device)
    dataset = job_dataset(job.data, job.request, device)
    module = build_model(job.model, dataset.x_train.shape[1:], dataset.n_classes).to(device)
    loss_fn = path_loss(StackedModel(module), dataset, job.config)
    thetas = shared[job.minima_key].to(device)
    starts, ends = thetas[[i for i, _ in job.pairs]], thetas[[j for _, j in job.pairs]]
    return loss_fn, thetas, starts, ends, path_schedule(job.config, len(dataset.y_train))


def _path_record(loss_fn, job: PathsJob, thetas, starts, ends, results) -> dict:
    cfg = job.config
    straight = evaluate_paths(loss_fn, list(straight_path(starts, ends, cfg.n_points)), cfg.alphas, cfg.max_models)
    # the paper's fixed probes on the same polylines: how much the adaptive maximum changes the bars
    fixed = evaluate_paths(loss_fn, [r.points for r in results], cfg.alphas, cfg.max_models, tolerance=None)
    ends_used = sorted({k for pair in job.pairs for k in pair})
    end_losses = evaluate_in_chunks(loss_fn, thetas[ends_used], cfg.max_models).tolist()
    return {
        "max_loss": [r.max_loss for r in results], "argmax_position": [r.argmax_position for r in results],
        "n_points": [len(r.points) for r in results], "positions": [r.positions for r in results],
        "dense_losses": [r.dense_losses for r in results], "history": [r.history for r in results],
        "relative_change": [r.relative_change() for r in results],
        "orthogonal_grad_norm": [r.orthogonal_grad_norm for r in results],
        "endpoint_error": [max(float((r.points[0] - thetas[i]).abs().max()),
                               float((r.points[-1] - thetas[j]).abs().max())) for (i, j), r in zip(job.pairs, results)],
        "straight_max_loss": [r.max_loss for r in straight],
        "max_loss_fixed_alphas": [r.max_loss for r in fixed],
        "evaluations": [len(r.positions) for r in results], "evaluations_fixed_alphas": [len(r.positions) for r in fixed],
        "minima_losses": dict(zip(ends_used, end_losses)),
    }


def pair_chunks(n_minima: int, per_job: int | None) -> list[tuple[tuple[int, int], ...]]:
    """All pairs i < j, cut into jobs of ``per_job`` pairs (None: one job)."""
    pairs = list(itertools.combinations(range(n_minima), 2))
    size = per_job or max(len(pairs), 1)
    return [tuple(pairs[s:s + size]) for s in range(0, len(pairs), size)]


def merge_path_jobs(n_minima: int, outputs: list[dict]) -> dict:
    """The jobs' outputs of one variant as one record over all pairs, in pair order."""
    merged = {key: [v for out in outputs for v in out[key]] for key in outputs[0] if key != "minima_losses"}
    losses: dict[int, float] = {}
    for out in outputs:
        for k, value in out["minima_losses"].items():
            losses.setdefault(int(k), value)
    merged["minima_losses"] = [losses[k] for k in range(n_minima)]
    return merged


@dataclass
class PathsTask:
    """One variant's paths in a stage: the minima to join and the data and settings to join them with."""

    key: str
    model: str
    thetas: torch.Tensor
    request: DataRequest
    config: PathConfig
    seed: int


def optimize_variant_paths(tasks: list[PathsTask], params: Params, data: DataConfig, executor: Executor,
                           cache: JobCache, description: str = "paths", method: str = "alg3") -> dict[str, dict]:
    """All pairs of every task's minima joined by Algorithm 3 paths (``method`` alg3) or polychain curves
    (polychain), the jobs of all variants balanced together; returns per task key the merged record
    (``pairs`` plus per-pair lists and ``minima_losses``)."""
    job_fn = {"alg3": paths_job, "polychain": curves_job}[method]
    jobs, owners = [], []
    for task in tasks:
        digest = tensor_digest(task.thetas)
        for chunk in pair_chunks(len(task.thetas), task.config.pairs_per_job):
            spec = PathsJob(task.key, task.model, data, task.request, task.config, chunk, task.seed,
                            params.runtime.device, params.runtime.progress, f"{task.key} paths")
            address = job_address(job_fn, "paths" if method == "alg3" else method, dataclasses.replace(spec, progress=False),
                                  digest)
            jobs.append(Job(address, spec))
            owners.append(task.key)
    outputs = executor.map(job_fn, jobs, shared={t.key: t.thetas.cpu() for t in tasks}, cache=cache,
                           description=description, progress=params.runtime.progress)
    merged = {}
    for task in tasks:
        mine = [out for out, owner in zip(outputs, owners) if owner == task.key]
        record = merge_path_jobs(len(task.thetas), mine) if mine else {"minima_losses": []}
        merged[task.key] = {"pairs": list(itertools.combinations(range(len(task.thetas)), 2)), **record}
    return merged


def path_schedule(cfg, n_samples: int) -> dict:
    """Steps, learning rate and refinement of a PathConfig, with the paper's epoch units converted to steps."""
    steps_per_epoch = 1 if cfg.batch_size is None else max(-(-n_samples // cfg.batch_size), 1)
    steps = int(round(cfg.epochs * steps_per_epoch)) if cfg.epochs is not None else cfg.steps
    lr = cfg.lr
    if cfg.schedule == "piecewise":
        lr = lambda step: piecewise_linear_lr(step, steps_per_epoch, cfg.m1, cfg.m2, cfg.lr, cfg.lr_min)  # noqa: E731
    refinement = None
    if cfg.refine_every_epochs is not None:
        refinement = Refinement(every=max(int(round(cfg.refine_every_epochs * steps_per_epoch)), 1),
                                criterion=cfg.refine_criterion, threshold=cfg.refine_threshold,
                                alphas=tuple(cfg.alphas))
    return {"steps": steps, "lr": lr, "refinement": refinement, "record_every": max(steps // 50, 1)}


STAGE_METHOD = {"paths": "alg3", "curves": "polychain"}  # the path method each stage computes


def run_paths(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS,
              stage: str = "paths") -> None:
    """Every pair of every variant's minima joined by the stage's path method (``paths``: Algorithm 3,
    ``curves``: polychain curves), when ``paths.method`` asks for it; otherwise the stage says so and holds
    nothing a later stage could read as paths."""
    method, cfg = STAGE_METHOD[stage], config.paths
    out_root = stage_dir(experiment, stage, root)
    if cfg.method not in (method, "best"):
        prune(out_root, set())
        save_json({"experiment": experiment, "stage": stage, "profile": params.profile,
                   "not_run": f"{experiment}.paths.method is {cfg.method!r}: no {method} paths requested"},
                  out_root / NOT_RUN)
        save_json({}, stage_dir(experiment, f"{stage}_metrics.json", root))
        return
    metrics = {}
    with compute_stage(params, experiment, stage, [v.dataset for v in variants],
                       {"data": as_dict(params.data), "paths": as_dict(cfg)}, root,
                       inputs=["minima"]) as (data, executor, cache):
        # Same seed as the minima's subset: the path subset is nested in the minima's training set.
        request = {v.key: DataRequest(v.dataset, cfg.train_subset, 0, config.minima.seed) for v in variants}
        tasks = [PathsTask(v.key, v.model, torch.load(stage_dir(experiment, "minima", root) / v.key / "minima.pt",
                                                      map_location="cpu", weights_only=True)["thetas"],
                           request[v.key], cfg, config.minima.seed) for v in variants]
        (out_root / NOT_RUN).unlink(missing_ok=True)
        prune(out_root, {v.key for v in variants})  # only now: the data and every variant's minima were read
        results = optimize_variant_paths(tasks, params, data, executor, cache, f"{experiment} {stage}", method)
        setting = f"{experiment}.paths.lr (now {cfg.lr})" if method == "alg3" else \
            f"{experiment}.paths.curve_lr (now {cfg.curve_lr})"
        for variant in variants:  # every variant checked before any output is written
            result = results[variant.key]
            check_not_diverged(variant.key, result["pairs"], result.get("max_loss", []),
                               result.get("straight_max_loss", []), setting)
        for variant in variants:
            dataset, result = job_dataset(data, request[variant.key]), results[variant.key]
            pairs = result["pairs"]
            record = {
                "variant": variant.key, "labels": variant.labels, "method": method, "data_source": dataset.source,
                "data_kind": dataset.source_kind, "data": job_provenance(data, request[variant.key]).as_dict(),
                "n_path_samples": len(dataset.y_train),
                "minima_losses": result["minima_losses"], "pairs": pairs,
                **{key: result[key] for key in ("max_loss", "straight_max_loss", "n_points", "positions",
                                                "dense_losses", "history", "relative_change",
                                                "orthogonal_grad_norm", "max_loss_fixed_alphas", "evaluations",
                                                "evaluations_fixed_alphas")},
                "convergence_rule": convergence_rule_words(cfg.converge_tol, cfg.converge_abs,
                                                           "the higher endpoint's loss"),
                "converged": [path_converged(c, m, max(result["minima_losses"][i], result["minima_losses"][j]),
                                             cfg.converge_tol, cfg.converge_abs)
                              for c, m, (i, j) in zip(result["relative_change"], result["max_loss"], pairs)],
            }
            save_json(record, out_root / variant.key / "paths.json")
            with tracking.variant_run(variant.key, data_source=dataset.source):
                tracking.log_metrics({f"path_{i}_{j}_max": m for (i, j), m in zip(pairs, record["max_loss"])}
                                     | {f"path_{i}_{j}_straight_max": s
                                        for (i, j), s in zip(pairs, record["straight_max_loss"])})
            metrics[variant.key] = {"mean_path_max": float(np.mean(record["max_loss"])),
                                    "mean_straight_max": float(np.mean(record["straight_max_loss"])),
                                    "converged_fraction": float(np.mean(record["converged"])),
                                    # adaptive probes + bracket search vs the paper's fixed alphas, same polylines
                                    "adaptive_max_gain": float(np.max(np.subtract(record["max_loss"],
                                                                                  record["max_loss_fixed_alphas"]))),
                                    "evaluations_ratio": float(np.sum(record["evaluations"])
                                                               / np.sum(record["evaluations_fixed_alphas"]))}
        save_json(metrics, stage_dir(experiment, f"{stage}_metrics.json", root))


def run_curves(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    run_paths(experiment, variants, config, params, root, stage="curves")
