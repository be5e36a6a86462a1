"""Stage 2: every study's curves between pairs of minima, then its triangles over triples in each regime of
Appendix I, as jobs (:mod:`benchmarks.wrn_robustness.jobs`) balanced over the studies; then each study's record:
the curves' and triangles' losses, maxima and whether the maxima converged."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.wrn_robustness.jobs import (CurvesJob, StudySpec, TrianglesJob, curves_job, minibatches_per_epoch,
                                            training_for, triangles_job)
from benchmarks.wrn_robustness.schema import CurveConfig, WRNRobustnessConfig
from benchmarks.wrn_robustness.study import NAME, datasets, study_config
from losstopo import tracking
from losstopo.codeversion import module_version
from losstopo.config import DataConfig, Params, as_dict, content_hash
from losstopo.errors import ConfigError, DataError
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.io import load_json, save_json, tensor_digest
from losstopo.job_data import DataRequest, job_dataset, job_provenance
from losstopo.paths import convergence_rule_words, maximum_change, path_converged
from losstopo.paths_stage import pair_chunks
from losstopo.stage_frame import ARTIFACTS, compute_stage, stage_dir


def side_grid_indices(grid: np.ndarray, resolution: int) -> list[list[int]]:
    """Rows of a barycentric grid on the sides AB, BC, CA (the opposite vertex's weight 0), each ordered
    from the side's first vertex to its second (A -> B, B -> C, C -> A)."""
    steps = np.rint(grid * resolution).astype(int)
    out = []
    for first, second, opposite in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        rows = [r for r in range(len(grid)) if steps[r, opposite] == 0]
        out.append(sorted(rows, key=lambda r: steps[r, second]))
    return out


def triple_chunks(n_minima: int, per_job: int | None) -> list[tuple[tuple[int, int, int], ...]]:
    """All triples i < j < k, cut into jobs of ``per_job`` triangles (None: one job)."""
    triples = list(itertools.combinations(range(n_minima), 3))
    size = per_job or max(len(triples), 1)
    return [tuple(triples[s:s + size]) for s in range(0, len(triples), size)]


@dataclass
class _Study:
    """One study whose curves and triangles are (re)computed in this run."""

    spec: StudySpec
    thetas: torch.Tensor  # (n, d) minima on the CPU
    record: dict  # what paths.json says about the study besides the curves and triangles
    out: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def digest(self) -> str:
        """Of the minima: part of every job address (hashing ~10 WRN-16-10 minima takes seconds)."""
        return tensor_digest(self.thetas)


def _study(config: WRNRobustnessConfig, study: str, params: Params, data: DataConfig, root: Path) -> _Study | None:
    """A study to compute, after checking its settings and data; None when its paths.json is up to date."""
    sc = study_config(config, study)
    cfg = sc.curves
    if "sides_fixed" in cfg.triangle_regimes and cfg.kind != "polychain":
        raise ConfigError(f"params: {NAME}.{study}.curves.kind is {cfg.kind!r}, but the sides_fixed "
                          f"triangle regime needs polychain curves (a triangle's side is the polygonal chain "
                          f"through its side centre, Appendix I)")
    minima_dir = stage_dir(NAME, "minima", root) / study
    minima = torch.load(minima_dir / "minima.pt", map_location="cpu", weights_only=True)
    summary = load_json(minima_dir / "minima.json")["summary"]
    # The minima's seed: the curve subset is a prefix of the permutation of the minima's training set.
    request = DataRequest(sc.dataset, cfg.train_subset, 0, sc.minima.seed)
    dataset = job_dataset(data, request)
    if summary["data_source"] != dataset.source:
        raise DataError(f"{NAME} {study}: the minima were trained on {summary['data_source']!r} but "
                        f"the curves would use {dataset.source!r}; rerun the minima stage")
    address = content_hash(module_version("losstopo.curves", "losstopo.stacked", "losstopo.models"), minima["address"],
                           cfg, dataset.source, {"augment": sc.minima.augment})
    out = stage_dir(NAME, "paths", root) / study / "paths.json"
    if out.is_file() and load_json(out).get("address") == address:
        return None
    spec = StudySpec(study, sc.model, data, request, cfg, sc.minima.mixed_precision, sc.minima.seed,
                     params.runtime.device, sc.minima.augment)
    record = {"address": address, "minima_address": minima["address"], "study": study, "model": sc.model,
              "curve_augment": sc.minima.augment,
              "dataset": sc.dataset, "data_source": dataset.source, "data_kind": dataset.source_kind,
              "data": job_provenance(data, request).as_dict(),
              "minima_n_train": summary["n_train"], "profile": params.profile, "n_curve_samples": len(dataset.y_train)}
    return _Study(spec, minima["thetas"], record, out)


def _run_curves(studies: list[_Study], params: Params, executor: Executor, cache: JobCache) -> dict[str, dict]:
    """Every study's curves, chunks of all studies balanced together; per study the chunks merged in pair order."""
    jobs, owners = [], []
    for study in studies:
        for n, chunk in enumerate(pair_chunks(len(study.thetas), study.spec.config.pairs_per_job)):
            spec = CurvesJob(study.spec, chunk, minima=n == 0, progress=params.runtime.progress)
            jobs.append(Job(job_address(curves_job, "curves", dataclasses.replace(spec, progress=False), study.digest), spec))
            owners.append(study.name)
    outputs = executor.map(curves_job, jobs, shared={s.name: {"thetas": s.thetas} for s in studies}, cache=cache,
                           description=f"{NAME} curves", progress=params.runtime.progress)
    merged = {}
    for study in studies:
        mine = [out for out, owner in zip(outputs, owners) if owner == study.name]
        merged[study.name] = {"bends": torch.cat([out["bends"] for out in mine]), "t": mine[0]["t"],
                              "losses": np.concatenate([out["losses"] for out in mine]),
                              "max_at_checkpoint": np.concatenate([out["max_at_checkpoint"] for out in mine]),
                              "minima_losses": mine[0]["minima_losses"],
                              "minima_train_acc": mine[0]["minima_train_acc"]}
    return merged


def _run_triangles(studies: list[_Study], curves: dict[str, dict], params: Params, executor: Executor,
                   cache: JobCache) -> dict[str, dict[str, dict]]:
    """Every study's triangles per regime (after the curves: sides_fixed needs their bends); per study and
    regime the chunks' grid, losses and maxima at the checkpoint merged in triple order."""
    jobs, owners, shared = [], [], {}
    for study in studies:
        cfg = study.spec.config
        bends = curves[study.name]["bends"] if "sides_fixed" in cfg.triangle_regimes else None
        shared[study.name] = {"thetas": study.thetas, "bends": bends}
        bends_digest = tensor_digest(bends) if bends is not None else None
        for regime in cfg.triangle_regimes:
            digests = (study.digest,) + ((bends_digest,) if regime == "sides_fixed" else ())
            for chunk in triple_chunks(len(study.thetas), cfg.triangles_per_job):
                spec = TrianglesJob(study.spec, regime, chunk, progress=params.runtime.progress)
                address = job_address(triangles_job, "triangles", dataclasses.replace(spec, progress=False), *digests)
                jobs.append(Job(address, spec))
                owners.append((study.name, regime))
    outputs = executor.map(triangles_job, jobs, shared=shared, cache=cache, description=f"{NAME} triangles",
                           progress=params.runtime.progress)
    merged: dict[str, dict[str, dict]] = {study.name: {} for study in studies}
    for (name, regime), out in zip(owners, outputs):
        part = merged[name].setdefault(regime, {"grid": out["grid"], "losses": [], "max_at_checkpoint": []})
        part["losses"].append(out["losses"])
        part["max_at_checkpoint"].append(out["max_at_checkpoint"])
    return merged


def run_paths(config: WRNRobustnessConfig, params: Params, root: Path = ARTIFACTS) -> None:
    stage_params = {"data": as_dict(params.data), **{f"{s}.curves": as_dict(study_config(config, s).curves)
                                                     for s in config.studies}}
    with compute_stage(params, NAME, "paths", datasets(config), stage_params, root,
                       keep=set(config.studies), inputs=["minima"]) as (data, executor, cache):
        studies = [s for s in (_study(config, name, params, data, root) for name in config.studies) if s is not None]
        curves = _run_curves(studies, params, executor, cache)
        triangles = _run_triangles(studies, curves, params, executor, cache)
        for study in studies:
            record = study.record | _curves_and_triangles(study, curves[study.name], triangles[study.name])
            save_json(record, study.out)
            _log_paths(study.name, record, study.out)


def convergence_rule(cfg: CurveConfig) -> str:
    return (convergence_rule_words(cfg.converge_tol, cfg.converge_abs, "the highest loss of its minima")
            + " (T: the curve's or triangle's training steps)")


def maxima_convergence(maxima: np.ndarray, at_checkpoint: np.ndarray, floors: list[float], cfg: CurveConfig) -> dict:
    """Curve or triangle maxima (n,) after all steps and after 80% of them -> how much the last steps moved
    each (relative) and whether it met :func:`path_converged`, ``floors`` (n,): the highest loss of its minima."""
    change = maximum_change(maxima, at_checkpoint)
    return {"max_at_checkpoint": at_checkpoint, "relative_change": change,
            "converged": [path_converged(c, m, f, cfg.converge_tol, cfg.converge_abs)
                          for c, m, f in zip(change, maxima, floors)]}


def _curves_and_triangles(study: _Study, curves: dict, triangles: dict[str, dict]) -> dict:
    """The record of a study's curves and triangles from its merged job outputs."""
    cfg, n_samples = study.spec.config, study.record["n_curve_samples"]
    curve_training = training_for(cfg, cfg.epochs, n_samples)
    minima_losses = curves["minima_losses"]
    pairs = list(itertools.combinations(range(len(study.thetas)), 2))
    triples = list(itertools.combinations(range(len(study.thetas)), 3))
    curve_max = curves["losses"].max(axis=1)
    curve_convergence = maxima_convergence(curve_max, curves["max_at_checkpoint"],
                                           [max(minima_losses[i], minima_losses[j]) for i, j in pairs], cfg)
    record = {
        "kind": cfg.kind, "batches_per_epoch": minibatches_per_epoch(cfg, n_samples), "curve_epochs": cfg.epochs,
        "curve_batch_size": cfg.batch_size, "curve_steps": curve_training.steps, "curve_lr": cfg.lr,
        "minima_losses": minima_losses, "minima_train_acc": curves["minima_train_acc"],
        "pairs": pairs, "t": curves["t"], "curve_losses": curves["losses"], "curve_max": curve_max,
        **{f"curve_{key}": value for key, value in curve_convergence.items()},
        "convergence_rule": convergence_rule(cfg), "triples": triples, "triangles": {},
    }
    for regime, part in triangles.items():
        grid, losses = part["grid"], np.concatenate(part["losses"])
        on_sides = side_grid_indices(grid, cfg.triangle_resolution)
        triangle_max = losses.max(axis=1)
        record["triangles"][regime] = {
            "steps": training_for(cfg, cfg.triangle_epochs, n_samples).steps, "epochs": cfg.triangle_epochs,
            "resolution": cfg.triangle_resolution, "grid": grid, "side_rows": on_sides, "losses": losses,
            "max": triangle_max, "side_max": [[float(row[rows].max()) for rows in on_sides] for row in losses],
            "trainable": "centre O" if regime == "sides_fixed" else "side centres D, E, F and centre O",
            **maxima_convergence(triangle_max, np.concatenate(part["max_at_checkpoint"]),
                                 [max(minima_losses[v] for v in triple) for triple in triples], cfg),
        }
    return record


def _log_paths(study: str, record: dict, out: Path) -> None:
    with tracking.variant_run(study, data_source=record["data_source"],
                              params={"model": record["model"], "n_minima": len(record["minima_losses"]),
                                      "n_curves": len(record["pairs"]), "n_curve_samples": record["n_curve_samples"],
                                      "curve_steps": record["curve_steps"]}):
        metrics = {f"curve_{i}_{j}_max": m for (i, j), m in zip(record["pairs"], record["curve_max"])}
        metrics |= {"mean_curve_max": float(np.mean(record["curve_max"])),
                    "curve_converged_fraction": float(np.mean(record["curve_converged"]))}
        for regime, tri in record["triangles"].items():
            metrics |= {f"triangle_{regime}_{i}_{j}_{k}_max": m for (i, j, k), m in zip(record["triples"], tri["max"])}
            metrics |= {f"mean_triangle_{regime}_max": float(np.mean(tri["max"])),
                        f"triangle_{regime}_converged_fraction": float(np.mean(tri["converged"]))}
        tracking.log_metrics(metrics)
        tracking.log_artifact(out)
