"""The three compute stages every barcode experiment shares: minima -> paths -> topology.

An experiment module supplies its variants (dataset x architecture) and settings; these
functions do the rest, write ``artifacts/<experiment>/<stage>/<variant>/...`` and log to MLflow.
Work already done with the same settings (content-addressed) is skipped, and an interrupted
minima stage resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from losstopo import tracking
from losstopo.config import Params, as_dict, content_hash
from losstopo.data import Dataset, check_available, load_dataset
from losstopo.io import load_json, save_json, save_torch
from losstopo.models import build_model, parameter_count
from losstopo.paths import Refinement, evaluate_in_chunks, evaluate_paths, optimize_paths, straight_path
from losstopo.schedules import piecewise_linear_lr
from losstopo.stacked import DatasetLoss, StackedModel
from losstopo.topology import barcode_of_minima, segment_lengths, to_score
from losstopo.train import train_minima

ARTIFACTS = Path("artifacts")


@dataclass(frozen=True)
class Variant:
    key: str  # directory name and MLflow run name, e.g. "mnist-fc-4-32"
    dataset: str
    model: str
    labels: dict = field(default_factory=dict, hash=False, compare=False)  # e.g. {"depth": 4}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stage_dir(experiment: str, stage: str, root: Path = ARTIFACTS) -> Path:
    return root / experiment / stage


class DataCache:
    """Each dataset is read from disk once per stage and kept resident on the device."""

    def __init__(self, params: Params, device: torch.device, names: Iterable[str] = ()):
        """``names``: every dataset the stage will use, checked now, so that a missing one stops the
        stage with its one-line error before any training."""
        self.params, self.device, self._full = params, device, {}
        for name in sorted(set(names)):
            check_available(name, root=params.data.root, allow_partial=params.data.allow_partial,
                            allow_synthetic=params.data.allow_synthetic)

    def get(self, name: str, n_train: int | None, n_test: int | None, seed: int) -> Dataset:
        cached = self._full.get(name)
        # A synthetic stand-in is generated only as large as asked (its prefixes are stable).
        if cached is None or (cached.iid_order and not _covers(cached, n_train, n_test)):
            cfg = self.params.data
            self._full[name] = load_dataset(name, root=cfg.root, allow_partial=cfg.allow_partial,
                                            allow_synthetic=cfg.allow_synthetic, synthetic_sizes=(n_train, n_test))
        return self._full[name].subset(n_train, n_test, seed=seed).to(self.device)


def _covers(dataset: Dataset, n_train: int | None, n_test: int | None) -> bool:
    return (n_train is not None and n_train <= len(dataset.y_train)
            and n_test is not None and n_test <= len(dataset.y_test))


def _prune(directory: Path, keep: set[str]) -> None:
    if directory.is_dir():
        for child in directory.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)


def train_variant(variant: Variant, dataset: Dataset, cfg, out: Path, device: torch.device, progress: bool,
                  address_parts: tuple = (), extra: dict | None = None) -> dict:
    """One variant's minima: skipped when already trained with the same settings (content address),
    resumed from its epoch checkpoint after an interruption, logged to a nested MLflow run.
    Writes ``out/minima.pt`` (weights) and ``out/minima.json`` (summary); returns the summary."""
    extra = extra or {}
    address = content_hash(variant.model, variant.dataset, cfg, dataset.source, *address_parts)
    done = out / "minima.json"
    if done.is_file() and load_json(done).get("address") == address:
        return load_json(done)["summary"]
    checkpoint = out / f"checkpoint-{address}.pt"
    for stale in out.glob("checkpoint-*.pt"):
        if stale != checkpoint:
            stale.unlink()
    module = build_model(variant.model, dataset.x_train.shape[1:], dataset.n_classes)
    stacked = StackedModel(module.to(device), channels_last=cfg.channels_last and device.type == "cuda")
    sizes = {"n_train": len(dataset.y_train), "n_test": len(dataset.y_test)}
    with tracking.variant_run(variant.key, data_source=dataset.source,
                              params={"model": variant.model, "dataset": variant.dataset,
                                      "parameters": parameter_count(module), **variant.labels, **extra, **sizes}):
        def log_epoch(epoch, record):
            tracking.log_metrics({f"train_loss_m{k}": v for k, v in enumerate(record["train_loss"])}
                                 | {"lr": record["lr"]}, step=epoch)

        result = train_minima(stacked, dataset, cfg, checkpoint=checkpoint, on_epoch=log_epoch, progress=progress,
                              description=variant.key)
        tracking.log_metrics({f"m{k}_{name}": getattr(result, name)[k] for k in range(cfg.n_minima)
                              for name in ("train_loss", "train_acc", "test_loss", "test_acc")})
        save_torch({"thetas": result.thetas, "model": variant.model, "dataset": variant.dataset,
                    "data_source": dataset.source, "address": address, **extra}, out / "minima.pt")
        record = {"variant": variant.key, "model": variant.model, "dataset": variant.dataset,
                  "labels": variant.labels, "parameters": parameter_count(module), "data_source": dataset.source,
                  "data_kind": dataset.source_kind, **extra, **sizes, **result.summary()}
        save_json({"address": address, "summary": record}, done)
        checkpoint.unlink(missing_ok=True)
    return record


def save_minima_metrics(summary: dict[str, dict], path: Path) -> None:
    save_json({key: {"mean_train_loss": float(np.mean(record["train_loss"])),
                     "mean_test_acc": float(np.mean(record["test_acc"])), "data_source": record["data_source"]}
               for key, record in summary.items()}, path)


def run_minima(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    device = resolve_device(params.runtime.device)
    out_root = stage_dir(experiment, "minima", root)
    _prune(out_root, {v.key for v in variants})
    data = DataCache(params, device, [v.dataset for v in variants])
    summary = {}
    cfg = config.minima
    with tracking.stage_run(experiment, "minima", profile=params.profile, device=str(device),
                            params={"data": as_dict(params.data), "minima": as_dict(cfg)}):
        for variant in tqdm(variants, desc=f"{experiment} minima", disable=not params.runtime.progress):
            dataset = data.get(variant.dataset, cfg.train_subset, cfg.test_subset, cfg.seed)
            summary[variant.key] = train_variant(variant, dataset, cfg, out_root / variant.key, device,
                                                 params.runtime.progress)
        save_minima_metrics(summary, stage_dir(experiment, "minima_metrics.json", root))


def run_paths(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    device = resolve_device(params.runtime.device)
    out_root = stage_dir(experiment, "paths", root)
    _prune(out_root, {v.key for v in variants})
    data = DataCache(params, device, [v.dataset for v in variants])
    cfg = config.paths
    metrics = {}
    with tracking.stage_run(experiment, "paths", profile=params.profile, device=str(device),
                            params={"data": as_dict(params.data), "paths": as_dict(cfg)}):
        for variant in tqdm(variants, desc=f"{experiment} paths", disable=not params.runtime.progress):
            minima = torch.load(stage_dir(experiment, "minima", root) / variant.key / "minima.pt", map_location=device)
            # Same seed as the minima's subset: the path subset is nested in the minima's training set.
            dataset = data.get(variant.dataset, cfg.train_subset, 0, seed=config.minima.seed)
            module = build_model(variant.model, dataset.x_train.shape[1:], dataset.n_classes).to(device)
            loss_fn = DatasetLoss(StackedModel(module), dataset.x_train, dataset.y_train, batch_size=cfg.batch_size)
            thetas = minima["thetas"].to(device)
            pairs = list(itertools.combinations(range(len(thetas)), 2))
            starts, ends = thetas[[i for i, _ in pairs]], thetas[[j for _, j in pairs]]
            with tracking.variant_run(variant.key, data_source=dataset.source):
                schedule = path_schedule(cfg, len(dataset.y_train))
                results = optimize_paths(
                    loss_fn, starts, ends,
                    n_points=cfg.n_points, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    clip_norm=cfg.clip_norm, alphas=cfg.alphas, max_models=cfg.max_models, seed=config.minima.seed,
                    progress=params.runtime.progress, description=f"{variant.key} paths", **schedule,
                )
                straight = [r.max_loss for r in evaluate_paths(loss_fn, list(straight_path(starts, ends, cfg.n_points)),
                                                               cfg.alphas, cfg.max_models)]
                minima_losses = evaluate_in_chunks(loss_fn, thetas, cfg.max_models).tolist()
                record = {
                    "variant": variant.key, "labels": variant.labels, "data_source": dataset.source,
                    "data_kind": dataset.source_kind, "n_path_samples": len(dataset.y_train),
                    "minima_losses": minima_losses, "pairs": pairs,
                    "max_loss": [r.max_loss for r in results], "straight_max_loss": straight,
                    "n_points": [len(r.points) for r in results], "positions": [r.positions for r in results],
                    "dense_losses": [r.dense_losses for r in results], "history": [r.history for r in results],
                }
                save_json(record, out_root / variant.key / "paths.json")
                tracking.log_metrics({f"path_{i}_{j}_max": r.max_loss for (i, j), r in zip(pairs, results)}
                                     | {f"path_{i}_{j}_straight_max": s for (i, j), s in zip(pairs, straight)})
                metrics[variant.key] = {"mean_path_max": float(np.mean(record["max_loss"])),
                                        "mean_straight_max": float(np.mean(straight))}
        save_json(metrics, stage_dir(experiment, "paths_metrics.json", root))


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


def path_max_matrix(record: dict, key: str = "max_loss") -> np.ndarray:
    """(n, n) symmetric matrix of ``record[key]`` over ``record["pairs"]``; NaN where no pair was joined."""
    n = len(record["minima_losses"])
    matrix = np.full((n, n), np.nan)
    for (i, j), value in zip(record["pairs"], record[key]):
        matrix[i, j] = matrix[j, i] = value
    return matrix


def run_topology(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    out_root = stage_dir(experiment, "topology", root)
    _prune(out_root, {v.key for v in variants})
    metrics = {}
    with tracking.stage_run(experiment, "topology", profile=params.profile, device="cpu",
                            params={"topology": as_dict(config.topology)}):
        for variant in variants:
            record = load_json(stage_dir(experiment, "paths", root) / variant.key / "paths.json")
            losses, matrix = record["minima_losses"], path_max_matrix(record)
            bars = {method: barcode_of_minima(losses, matrix, method) for method in ("paper", "persistence")}
            chosen = bars[config.topology.method]
            result = {
                "variant": variant.key, "labels": variant.labels, "data_source": record["data_source"],
                "data_kind": record["data_kind"], "method": config.topology.method, "bars": chosen,
                "bars_paper": bars["paper"], "bars_persistence": bars["persistence"],
                "to_score": to_score(chosen), "to_score_persistence": to_score(bars["persistence"]),
                "segment_lengths": segment_lengths(chosen), "path_max": record["max_loss"],
                "straight_max": record["straight_max_loss"], "profile": params.profile,
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
