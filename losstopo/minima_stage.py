"""The minima stage: each variant's K minima trained stacked in one job, skipped when a variant was trained with
the same settings and code (content-addressed), resumed from its epoch checkpoint after an interruption."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from losstopo import tracking
from losstopo.codeversion import module_version
from losstopo.config import DataConfig, MinimaConfig, Params, as_dict, content_hash
from losstopo.data import Dataset
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.io import load_json, load_or_discard, save_json, save_torch
from losstopo.job_data import DataRequest, job_dataset, job_provenance
from losstopo.models import build_model, parameter_count
from losstopo.provenance import DataProvenance
from losstopo.stacked import StackedModel
from losstopo.stage_frame import ARTIFACTS, compute_stage, resolve_device, stage_dir
from losstopo.train import train_minima

# persisted minima carry the version of the code that trained them (and of nothing else): losstopo.codeversion.
# losstopo.stacked computes the training step's logits, so a change there (even one equal to float tolerance)
# retrains rather than reuse minima a fresh run would not reproduce bit for bit
TRAINING_CODE = module_version("losstopo.train", "losstopo.models", "losstopo.stacked")


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
