"""The stage plumbing every experiment uses (its compute-stage frame, job cache, skip-if-done, prune, data
checks), and the compute stages every barcode experiment shares: minima -> paths (and curves) -> topology.

A barcode experiment supplies its variants (dataset x architecture) and settings (:func:`barcode_stages`);
these functions do the rest, write ``artifacts/<experiment>/<stage>/<variant>/...`` and log to MLflow.
Work already done with the same settings (content-addressed) is skipped, and an interrupted
minima stage resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from losstopo import tracking
from losstopo.config import DataConfig, MinimaConfig, Params, PathConfig, as_dict, content_hash
from losstopo.data import Dataset, check_available, load_dataset, resolve_root
from losstopo.provenance import DataProvenance, provenance_of
from losstopo.errors import ConfigError, LosstopoError, TrainingDiverged
from losstopo.executor import Executor, Job, JobCache, job_address, make_executor
from losstopo.io import load_json, load_or_discard, remove_orphans, save_json, save_torch
from losstopo.models import build_model, parameter_count
from losstopo.codeversion import module_version
from losstopo.curves import curve_paths, garipov_curve_training
from losstopo.paths import (Refinement, at_floor, check_not_diverged, convergence_checkpoint, convergence_rule_words,
                            evaluate_in_chunks, path_converged, PathsDiverged, evaluate_paths, optimize_paths,
                            straight_path)
from losstopo.schedules import piecewise_linear_lr
from losstopo.stacked import DatasetLoss, StackedModel, fast_bf16
from losstopo.topology import barcode_of_minima, segment_lengths, to_score
from losstopo.train import train_minima

ARTIFACTS = Path("artifacts")
# persisted minima carry the version of the code that trained them (and of nothing else): losstopo.codeversion
TRAINING_CODE = module_version("losstopo.train", "losstopo.models")


@dataclass(frozen=True)
class Variant:
    key: str  # directory name and MLflow run name, e.g. "mnist-fc-4-32"
    dataset: str
    model: str
    labels: dict = field(default_factory=dict, hash=False, compare=False)  # e.g. {"depth": 4}
    replicate: int = 0  # independent set of minima: seeds offset by REPLICATE_SEED_STRIDE * replicate


REPLICATE_SEED_STRIDE = 1000  # seeds seed + k (k < n_minima) of different replicates never overlap


def replicate_config(config: MinimaConfig, variant: Variant) -> MinimaConfig:
    return dataclasses.replace(config, seed=config.seed + REPLICATE_SEED_STRIDE * variant.replicate) \
        if variant.replicate else config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"params: runtime.device is {name!r}, but this machine's torch sees "
                          f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA device(s); "
                          f"use auto or cpu")
    return device


STAGE_TIMING = "stage.json"  # in a compute stage's output folder: its wall time and where it ran
NOT_RUN = "NOT_RUN.json"  # in a stage's output folder: why it computed nothing


def stage_dir(experiment: str, stage: str, root: Path = ARTIFACTS) -> Path:
    return root / experiment / stage


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` but the stage record itself, by path relative to it."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != STAGE_TIMING}


def require_complete(experiment: str, stage: str, root: Path = ARTIFACTS) -> None:
    """A compute stage's outputs are one unit: its record (STAGE_TIMING) is removed when a run starts writing and
    written, naming every file's sha256, when it ends. Raises, naming the stage to rerun, when the record is missing
    (the last run stopped half way) or a file differs from it; a record without file hashes (written before they
    were kept) is trusted as it is."""
    directory = stage_dir(experiment, stage, root)
    rerun = f"run it (dvc repro, or python -m losstopo.cli stage {experiment} {stage})"
    if (directory / NOT_RUN).is_file():
        return
    if not (directory / STAGE_TIMING).is_file():
        raise LosstopoError(f"{experiment} {stage}: no finished run of this stage (never run, or its last run stopped "
                            f"half way); {rerun}")
    recorded = load_json(directory / STAGE_TIMING).get("files")
    if recorded is None:
        return
    found = file_digests(directory)
    changed = sorted(name for name in recorded.keys() | found.keys() if recorded.get(name) != found.get(name))
    if changed:
        raise LosstopoError(f"{experiment} {stage}: {changed[0]} is not what the stage wrote"
                            + (f" (and {len(changed) - 1} more file(s))" if len(changed) > 1 else "") + f"; {rerun}")


def stage_timing(experiment: str, stage: str, root: Path = ARTIFACTS) -> dict | None:
    """A compute stage's STAGE_TIMING record (wall time, where it ran), or None if it has none."""
    path = stage_dir(experiment, stage, root) / STAGE_TIMING
    return load_json(path) if path.is_file() else None


@dataclass(frozen=True)
class DataRequest:
    """Which images a job uses: a seeded subset of a named dataset (None: all)."""

    name: str
    n_train: int | None
    n_test: int | None
    seed: int = 0


class DataCache:
    """Each dataset is read from disk once per process and kept in memory; jobs get their subset on
    their device."""

    def __init__(self, data: DataConfig, names: Iterable[str] = ()):
        """``names``: every dataset the stage will use, checked now, so that a missing one stops the
        stage with its one-line error before any training."""
        self.data, self._full = data, {}
        self.stand_ins = [name for name in sorted(set(names))
                          if check_available(name, root=data.root, allow_partial=data.allow_partial,
                                             allow_synthetic=data.allows_synthetic(name))]

    def get(self, request: DataRequest, device: torch.device | str = "cpu") -> Dataset:
        return self._loaded(request).subset(request.n_train, request.n_test, seed=request.seed).to(device)

    def provenance(self, request: DataRequest) -> DataProvenance:
        """Where the images of :meth:`get` come from, as fields (what a record stores beside the label)."""
        return provenance_of(self._loaded(request), request.n_train, request.n_test)

    def _loaded(self, request: DataRequest) -> Dataset:
        """The whole dataset (as loaded) that ``request``'s subset is drawn from."""
        cached = self._full.get(request.name)
        # A synthetic stand-in is generated only as large as asked (its prefixes are stable).
        if cached is None or (cached.iid_order and not _covers(cached, request.n_train, request.n_test)):
            cfg = self.data
            self._full[request.name] = load_dataset(
                request.name, root=cfg.root, allow_partial=cfg.allow_partial,
                allow_synthetic=cfg.allows_synthetic(request.name),
                synthetic_sizes=(request.n_train, request.n_test))
        return self._full[request.name]


def _covers(dataset: Dataset, n_train: int | None, n_test: int | None) -> bool:
    return (n_train is not None and n_train <= len(dataset.y_train)
            and n_test is not None and n_test <= len(dataset.y_test))


_PROCESS_DATA: dict[DataConfig, DataCache] = {}


def job_dataset(data: DataConfig, request: DataRequest, device: torch.device | str = "cpu") -> Dataset:
    """A dataset subset from this process's cache: the stage's driver and every job it runs in the same
    process (local executor) or on the same Ray worker share one copy per dataset."""
    return _process_cache(data).get(request, device)


def job_provenance(data: DataConfig, request: DataRequest) -> DataProvenance:
    """The provenance of :func:`job_dataset`'s images (the stage records store ``.as_dict()`` as ``data``)."""
    return _process_cache(data).provenance(request)


def _process_cache(data: DataConfig) -> DataCache:
    if data not in _PROCESS_DATA:
        _PROCESS_DATA[data] = DataCache(data)
    return _PROCESS_DATA[data]


def stage_data(params: Params, names: Iterable[str]) -> DataConfig:
    """The stage's data settings with the root made absolute (jobs may run in another working directory
    or on another node), after checking that every dataset in ``names`` can be loaded."""
    root = resolve_root(params.data.root)
    data = dataclasses.replace(params.data, root=str(root.resolve()) if root else None)
    stand_ins = DataCache(data, names).stand_ins
    if stand_ins:
        print(f"losstopo: SYNTHETIC stand-ins (no offline copy; data.allow_synthetic names them): "
              f"{', '.join(stand_ins)}", file=sys.stderr)
    return data


@contextmanager
def compute_stage(params: Params, experiment: str, stage: str, datasets: Iterable[str], logged: dict,
                  root: Path = ARTIFACTS, keep: set[str] | None = None,
                  inputs: Iterable[str] = ()) -> Iterator[tuple[DataConfig, Executor, JobCache]]:
    """The frame of a compute stage: checks every dataset it needs, opens its MLflow stage run (logging
    ``logged``) and yields the data settings for its jobs, the executor chosen in params (or on the command
    line) and the stage's cache of finished jobs. The cache is cleared once the stage's outputs are written;
    a stage that raises keeps it, so that a rerun does only the unfinished jobs. ``keep``: the variant folders
    to keep in the stage's output; the others are removed, but only after every dataset has been checked.
    ``inputs``: the experiment's stages whose outputs this one reads, each checked complete first
    (:func:`require_complete`); this stage's own record goes before it writes and comes back, with every file's
    hash, when it ends."""
    started = time.perf_counter()
    for upstream in inputs:
        require_complete(experiment, upstream, root)
    orphans = remove_orphans(stage_dir(experiment, stage, root))
    if orphans:
        print(f"{experiment} {stage}: removed {len(orphans)} unfinished write(s) of a killed run, e.g. {orphans[0].name}")
    data = stage_data(params, datasets)
    if keep is not None:
        prune(stage_dir(experiment, stage, root), keep)
    executor, cache = make_executor(params.executor, params.ray), JobCache(root / ".jobs" / experiment / stage)
    device = str(resolve_device(params.runtime.device))
    record = stage_dir(experiment, stage, root) / STAGE_TIMING
    record.unlink(missing_ok=True)  # from here until the end, the outputs are not a finished unit
    with tracking.stage_run(experiment, stage, profile=params.profile, device=device, params=logged):
        yield data, executor, cache
        wall = time.perf_counter() - started
        tracking.log_metrics({"stage_wall_s": wall})
    save_json({"experiment": experiment, "stage": stage, "profile": params.profile, "device": device,
               "executor": executor.name, "threads": torch.get_num_threads(), "wall_s": wall,
               "cpus_per_job": params.ray.cpus_per_job if executor.name == "ray" else None,
               "note": "this invocation only: jobs finished by an interrupted earlier one came from its cache",
               "files": file_digests(stage_dir(experiment, stage, root))}, record)
    cache.clear()


def prune(directory: Path, keep: set[str]) -> None:
    """Removes the folders in ``directory`` not named in ``keep`` (variants a profile no longer runs)."""
    if directory.is_dir():
        for child in directory.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)


# --- minima ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MinimaJob:
    """One variant's K minima, trained stacked in one job."""

    model: str
    data: DataConfig
    request: DataRequest
    config: MinimaConfig
    device: str
    checkpoint: str | None  # epoch checkpoint for resuming (on the node that runs the job)
    progress: bool
    description: str


def minima_job(_shared, job: MinimaJob) -> dict:
    device = resolve_device(job.device)
    dataset = job_dataset(job.data, job.request, device)
    module = build_model(job.model, dataset.x_train.shape[1:], dataset.n_classes).to(device)
    stacked = StackedModel(module, channels_last=job.config.channels_last and device.type == "cuda")
    result = train_minima(stacked, dataset, job.config, checkpoint=Path(job.checkpoint) if job.checkpoint else None,
                          progress=job.progress, description=job.description)
    if job.checkpoint:
        Path(job.checkpoint).unlink(missing_ok=True)
    return {"result": result, "parameters": parameter_count(module)}


@dataclass
class MinimaTask:
    """What a stage asks for one variant: its minima settings, data subset and output folder.
    ``address_parts`` and ``extra`` are added to its content address and to its records."""

    variant: Variant
    request: DataRequest
    config: MinimaConfig
    out: Path
    address_parts: tuple = ()
    extra: dict = field(default_factory=dict)


def train_variants(tasks: list[MinimaTask], params: Params, data: DataConfig, executor: Executor,
                   cache: JobCache, description: str = "minima") -> dict[str, dict]:
    """Every task's minima, one job per variant. A variant already trained with the same settings is
    skipped (content address in ``out/minima.json``); an interrupted job resumes from its epoch checkpoint.
    Writes ``out/minima.pt`` (weights) and ``out/minima.json`` (summary), logs a nested MLflow run per
    variant, and returns the summaries by variant key."""
    summaries, jobs, todo = {}, [], []
    for task in tasks:
        dataset = job_dataset(data, task.request)
        address = content_hash(TRAINING_CODE, task.variant.model, task.variant.dataset, task.config, dataset.source,
                               *task.address_parts)
        if (finished := _finished_minima(task.out, address)) is not None:
            summaries[task.variant.key] = finished["summary"]
            continue
        checkpoint = task.out / f"checkpoint-{address}.pt"
        for stale in task.out.glob("checkpoint-*.pt"):
            if stale != checkpoint:
                stale.unlink()
        spec = MinimaJob(task.variant.model, data, task.request, task.config, params.runtime.device,
                         str(checkpoint.resolve()), params.runtime.progress, task.variant.key)
        jobs.append(Job(job_address(minima_job, "minima", address, dataclasses.replace(spec, checkpoint=None, progress=False)),
                        spec))
        todo.append((task, address, dataset, job_provenance(data, task.request)))
    outputs = executor.map(minima_job, jobs, cache=cache, description=description, progress=params.runtime.progress)
    for (task, address, dataset, provenance), output in zip(todo, outputs):
        summaries[task.variant.key] = _save_minima(task, address, dataset, provenance, output)
    return summaries


def _finished_minima(out: Path, address: str) -> dict | None:
    """minima.json of a variant trained with the same settings, if its minima.pt is readable and says the same
    address (a truncated or stale weights file is discarded and the variant retrained)."""
    done = out / "minima.json"
    try:
        finished = load_json(done) if done.is_file() else {}
    except ValueError:
        print(f"losstopo: discarded unreadable {done}; the variant will be retrained")
        finished = {}
    if finished.get("address") != address:
        return None
    weights = load_or_discard(out / "minima.pt", "minima weights")
    if weights is None or weights.get("address") != address:
        return None
    return finished


def _save_minima(task: MinimaTask, address: str, dataset: Dataset, provenance: DataProvenance, output: dict) -> dict:
    variant, result, cfg = task.variant, output["result"], task.config
    sizes = {"n_train": len(dataset.y_train), "n_test": len(dataset.y_test)}
    with tracking.variant_run(variant.key, data_source=dataset.source,
                              params={"model": variant.model, "dataset": variant.dataset,
                                      "parameters": output["parameters"], **variant.labels, **task.extra, **sizes}):
        for record in result.history:
            tracking.log_metrics({f"train_loss_m{k}": v for k, v in enumerate(record["train_loss"])}
                                 | {"lr": record["lr"]}, step=record["epoch"])
        tracking.log_metrics({f"m{k}_{name}": getattr(result, name)[k] for k in range(cfg.n_minima)
                              for name in ("train_loss", "train_acc", "test_loss", "test_acc")})
        save_torch({"thetas": result.thetas, "model": variant.model, "dataset": variant.dataset,
                    "data_source": dataset.source, "address": address, **task.extra}, task.out / "minima.pt")
        record = {"variant": variant.key, "model": variant.model, "dataset": variant.dataset,
                  "labels": variant.labels, "parameters": output["parameters"], "data_source": dataset.source,
                  "data_kind": dataset.source_kind, "data": provenance.as_dict(), **task.extra, **sizes,
                  **result.summary()}
        save_json({"address": address, "summary": record}, task.out / "minima.json")
    return record


def save_minima_metrics(summary: dict[str, dict], path: Path) -> None:
    """Numbers only (DVC's metrics table); each variant's data source is in its minima.json."""
    save_json({key: {"mean_train_loss": float(np.mean(record["train_loss"])),
                     "mean_test_acc": float(np.mean(record["test_acc"])),
                     "converged_fraction": float(np.mean(record["converged"]))}
               for key, record in summary.items()}, path)


def run_minima(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    out_root = stage_dir(experiment, "minima", root)
    cfg = config.minima
    with compute_stage(params, experiment, "minima", [v.dataset for v in variants],
                       {"data": as_dict(params.data), "minima": as_dict(cfg),
                        "minima_by_dataset": config.minima_by_dataset}, root,
                       keep={v.key for v in variants}) as (data, executor, cache):
        # Replicates differ in their seeds only; every variant trains on the same data subset.
        tasks = [MinimaTask(v, DataRequest(v.dataset, mine.train_subset, mine.test_subset, mine.seed),
                            replicate_config(mine, v), out_root / v.key)
                 for v, mine in ((v, config.minima_for(v.dataset)) for v in variants)]
        summary = train_variants(tasks, params, data, executor, cache, f"{experiment} minima")
        save_minima_metrics(summary, stage_dir(experiment, "minima_metrics.json", root))


# --- paths -----------------------------------------------------------------------------------------

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


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


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


def best_paths(records: dict[str, dict], tolerance: float = 0.01, absolute: float = 0.0) -> dict:
    """Per pair the lowest maximum over the path methods' records (method -> paths.json record, same pairs):
    every path between two minima bounds their minimax value from above, so the lowest one is the best estimate
    of the bar it defines. Returns the pair-wise ``max_loss``, ``method`` (which one defined it) and
    ``relative_change`` of that path, ``converged`` when that path converged and either lies at its floor (the
    higher endpoint's loss, within ``tolerance`` and ``absolute`` as in :func:`path_converged`: nothing can go
    lower) or every other method's path converged too (an unconverged higher path could still end lower), and
    each method's maxima under ``max_loss_by_method``."""
    methods = list(records)
    first = records[methods[0]]
    for method in methods[1:]:
        if [tuple(p) for p in records[method]["pairs"]] != [tuple(p) for p in first["pairs"]]:
            raise ConfigError(f"{first['variant']}: the {method} and {methods[0]} paths join different pairs; "
                              f"rerun both stages")
    maxima = np.array([records[m]["max_loss"] for m in methods], dtype=float)  # (methods, pairs)
    chosen = np.argmin(maxima, axis=0)  # ties: the first method listed
    def pick(key):
        return [records[methods[c]].get(key, [None] * len(chosen))[p] for p, c in enumerate(chosen)]
    return {"max_loss": maxima[chosen, np.arange(len(chosen))].tolist(),
            "method": [methods[c] for c in chosen],
            "converged": [_best_converged(records, methods, methods[c], p, tolerance, absolute)
                          for p, c in enumerate(chosen)],
            "relative_change": pick("relative_change"), "orthogonal_grad_norm": pick("orthogonal_grad_norm"),
            "max_loss_by_method": {m: records[m]["max_loss"] for m in methods},
            "converged_by_method": {m: records[m].get("converged") for m in methods}}


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


def _best_converged(records: dict[str, dict], methods: list[str], chosen: str, p: int, tolerance: float,
                    absolute: float) -> bool:
    record = records[chosen]
    i, j = record["pairs"][p]
    floor = max(record["minima_losses"][i], record["minima_losses"][j])
    return bool(record["converged"][p] and (at_floor(record["max_loss"][p], floor, tolerance, absolute)
                                            or all(records[m]["converged"][p] for m in methods)))


def method_stages(method: str) -> list[str]:
    """The stages whose paths ``paths.method`` uses (alg3: paths, polychain: curves; best: both)."""
    return [stage for stage, m in STAGE_METHOD.items() if method in (m, "best")]


def paths_digests(experiment: str, key: str, stages: Iterable[str], root: Path = ARTIFACTS) -> dict[str, str]:
    """sha256 of each stage's paths.json of a variant (missing: "missing"); a topology records those it used."""
    digests = {}
    for stage in stages:
        path = stage_dir(experiment, stage, root) / key / "paths.json"
        digests[stage] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    return digests


def load_topology(experiment: str, key: str, root: Path = ARTIFACTS) -> dict:
    """A variant's topology.json, refused (one line) when the paths it was built from have changed since."""
    topology = load_json(stage_dir(experiment, "topology", root) / key / "topology.json")
    recorded = topology.get("paths_digest")
    if recorded is not None and recorded != paths_digests(experiment, key, recorded, root):
        raise LosstopoError(f"{experiment} {key}: the topology is older than its paths (paths.json changed since); "
                            f"run `losstopo stage {experiment} topology` before the report")
    return topology


def variant_paths(experiment: str, key: str, method: str, root: Path = ARTIFACTS) -> tuple[dict[str, dict],
                                                                                           dict[str, str]]:
    """The paths.json records ``paths.method`` asks for, by path method, and the sha256 of each file by stage
    (what :func:`load_topology` checks later)."""
    records, digests = {}, {}
    for stage in method_stages(method):
        path = stage_dir(experiment, stage, root) / key / "paths.json"
        if not path.is_file():
            raise LosstopoError(f"{experiment} topology: {path} is missing (paths.method {method!r} needs the "
                                f"{stage} stage's output); run `losstopo stage {experiment} {stage}` first")
        content = path.read_bytes()
        record = json.loads(content)
        records[record.get("method", STAGE_METHOD[stage])] = record
        digests[stage] = hashlib.sha256(content).hexdigest()
    return records, digests


def path_max_matrix(record: dict, key: str = "max_loss") -> np.ndarray:
    """(n, n) symmetric matrix of ``record[key]`` over ``record["pairs"]``; NaN where no pair was joined."""
    n = len(record["minima_losses"])
    matrix = np.full((n, n), np.nan)
    for (i, j), value in zip(record["pairs"], record[key]):
        matrix[i, j] = matrix[j, i] = value
    return matrix


def run_topology(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    for stage in method_stages(config.paths.method):
        require_complete(experiment, stage, root)
    out_root = stage_dir(experiment, "topology", root)
    metrics = {}
    all_records = {v.key: variant_paths(experiment, v.key, config.paths.method, root) for v in variants}
    prune(out_root, {v.key for v in variants})  # only now: every variant's paths were read
    with tracking.stage_run(experiment, "topology", profile=params.profile, device="cpu",
                            params={"topology": as_dict(config.topology)}):
        for variant in variants:
            records, digests = all_records[variant.key]
            record = next(iter(records.values()))
            combined = best_paths(records, config.paths.converge_tol, config.paths.converge_abs)
            losses, matrix = record["minima_losses"], path_max_matrix({**record, **combined})
            bars = {method: barcode_of_minima(losses, matrix, method) for method in ("paper", "persistence")}
            chosen = bars[config.topology.method]
            by_method = {m: to_score(barcode_of_minima(losses, path_max_matrix(r), config.topology.method))
                         for m, r in records.items()}
            result = {
                "variant": variant.key, "labels": variant.labels, "data_source": record["data_source"],
                "data_kind": record["data_kind"], "data": record.get("data"),  # None: paths from before it was recorded
                "method": config.topology.method, "bars": chosen,
                "bars_paper": bars["paper"], "bars_persistence": bars["persistence"],
                "to_score": to_score(chosen), "to_score_persistence": to_score(bars["persistence"]),
                "segment_lengths": segment_lengths(chosen), "path_max": combined["max_loss"],
                "straight_max": record["straight_max_loss"], "profile": params.profile,
                "paths_converged": combined["converged"], "paths_relative_change": combined["relative_change"],
                "orthogonal_grad_norm": combined["orthogonal_grad_norm"],
                "path_method": combined["method"], "path_max_by_method": combined["max_loss_by_method"],
                "paths_converged_by_method": combined["converged_by_method"], "to_score_by_method": by_method,
                "paths_digest": digests,
            }
            out = out_root / variant.key / "topology.json"
            save_json(result, out)
            with tracking.variant_run(variant.key, data_source=record["data_source"]):
                tracking.log_metrics({"to_score": result["to_score"],
                                      "to_score_persistence": result["to_score_persistence"]}
                                     | {f"bar_{k}_death": d for k, (_, d) in enumerate(chosen) if np.isfinite(d)})
                tracking.log_artifact(out)
            metrics[variant.key] = {"to_score": result["to_score"]}
        save_json(metrics, stage_dir(experiment, "topology_metrics.json", root))


def barcode_stages(experiment: str, variants: Callable[[Any], list[Variant]]) -> dict[str, Callable[[Any, Params], None]]:
    """The four stages of a barcode experiment (minima, paths, curves, topology: the runners above), each a
    ``(config, params)`` callable run on ``variants(config)``; what its :class:`~losstopo.registry.Experiment` lists."""
    def stage(runner):
        def run(config, params: Params) -> None:
            runner(experiment, variants(config), config, params)
        run.__name__ = runner.__name__
        return run
    return {"minima": stage(run_minima), "paths": stage(run_paths), "curves": stage(run_curves),
            "topology": stage(run_topology)}


def variant_datasets(variants: Callable[[Any], list[Variant]]) -> Callable[[Any], list[str]]:
    """The datasets a barcode experiment's stages read: its variants' (what ``losstopo validate`` checks)."""
    def datasets(config) -> list[str]:
        return [v.dataset for v in variants(config)]
    return datasets


# --- what the reports need of every stage ----------------------------------------------------------

def converged_fraction(minima: list[dict], topologies: list[dict]) -> tuple[float, str]:
    """The smaller of the fractions of minima (patience rule) and of paths (their rule) that converged;
    NaN when the paths' convergence was not recorded."""
    minima_flags = [flag for m in minima for flag in m["converged"]]
    path_flags = [flag for t in topologies for flag in (t.get("paths_converged") or [float("nan")])]
    fm, fp = float(np.mean(minima_flags)), float(np.mean(path_flags))
    return min(fm, fp), f"minima {sum(minima_flags)}/{len(minima_flags)} converged, paths {fp:.0%}"


def zero_length_bars(bars) -> int:
    """Finite bars with h_p = L(p): no path to a lower minimum rose above the minimum itself."""
    return sum(1 for birth, death in bars if np.isfinite(death) and death - birth <= 1e-12)


def mean_bar_length(bars) -> float:
    """Mean h_p - L(p) over the finite bars (NaN when there is none)."""
    lengths = [death - birth for birth, death in bars if np.isfinite(death)]
    return float(np.mean(lengths)) if lengths else float("nan")
