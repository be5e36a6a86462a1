"""Random-point curves, triangles and the robustness of the barcode: barcodes paper, section 4, Table 3,
Fig. 6, 7, Appendix A (Tables 6, 7), Appendix C and Appendix I (Table 14, Fig. 15, 16).

Two studies, each a stack of minima trained with SGD and the Garipov schedule (Table 6 / Table 7):

- ``wrn``: WideResNet-16-10 on CIFAR-100 (section 4, Table 3, Fig. 6, 7, 15); offline there is no
  CIFAR-100, so reduced profiles use the labelled SYNTHETIC stand-in (and a narrower WRN);
- ``lenet``: LeNet on Fashion-MNIST (Appendix I, Table 14, Fig. 16); offline only a partial real
  copy (2,557 images) exists.

Paths stage: a polygonal chain with one bend between every pair of minima, the pairs of a job
(``curves.pairs_per_job``; default all) trained in one batch with a random t per minibatch (Garipov
et al. 2018) under the minima's schedule (Appendix C); dense evaluation gives each curve's maximum.
Then, once the curves are done, a triangle over every triple of minima in each regime of Appendix I
(``curves.triangles_per_job`` per job): ``sides_fixed`` keeps the trained curves as the sides (their
bends are the side centres D = AB, E = BC, F = CA) and trains only the centre O; ``vertices_fixed``
trains D, E, F and O. Convergence is measured, not assumed: each curve and triangle is also evaluated
after 80% of its steps, and its maximum counts as converged by the rule of the optimised paths
(:func:`losstopo.paths.path_converged`; floor: the highest loss of its minima).

Topology stage: the barcode of minima (Fig. 6a, Algorithm 1), the 1-saddle barcode of the complex of
minima, curves and triangles (Fig. 6b, Algorithm 2), and the robustness of the minima barcode to the
choice and number of minima (Fig. 7): the bar of each minimum recomputed on every subset of minima.

Loss everywhere below is the mean cross-entropy on the curves' training subset (nested in the minima's
training set); BatchNorm normalises with the statistics of the evaluated batch, recomputed for every
parameter vector (see :mod:`losstopo.stacked`), which is "BN statistics recomputed at each evaluated t".
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.cnn_channels import accuracy_note
from losstopo.stages import (ARTIFACTS, DataRequest, MinimaTask, Variant, prune, compute_stage, job_dataset,
                             job_provenance, pair_chunks, path_max_matrix, require_complete, resolve_device, stage_dir,
                             tensor_digest, train_variants)
from losstopo import plots, tracking
from losstopo.config import (CurveConfig, DataConfig, Params, TriangleStudyConfig, WRNRobustnessConfig, as_dict,
                             content_hash)
from losstopo.codeversion import module_version
from losstopo.curves import CurveTraining, evaluate_curves, evaluate_triangles, train_curves, train_triangles
from losstopo.data import source_label, title_caveat
from losstopo.errors import ConfigError, DataError
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.io import load_json, save_json
from losstopo.models import build_model
from losstopo.paths import (convergence_checkpoint, convergence_rule_words, evaluate_in_chunks, maximum_change,
                            path_converged)
from losstopo.registry import Experiment
from losstopo.report import Claim, Section
from losstopo.schedules import garipov_lr
from losstopo.stacked import DatasetLoss, StackedModel
from losstopo.evidence import NULL_DRAWS, below_threshold_null_rate, below_threshold_test, null_rate
from losstopo.stats import TestResult
from losstopo.topology import barcode_of_minima, higher_barcodes, own_sides_barcodes, subset_robustness, to_score

NAME = "wrn_robustness"
TITLE = ("Random-point curves, triangles and barcode robustness (barcodes paper, section 4, Tables 3, 14, "
         "Fig. 6, 7, 15, 16)")
STUDIES = ("wrn", "lenet")  # every study; a profile runs those in wrn_robustness.studies
QUANTITIES = ("train_loss", "test_loss", "train_acc", "test_acc")
QUANTITY_NAMES = {"train_loss": "train loss", "test_loss": "test loss", "train_acc": "train acc, %",
                  "test_acc": "test acc, %"}
REGIMES = ("sides_fixed", "vertices_fixed")

# The paper's minima characteristics, (mean, std) over its minima; accuracies in %.
PAPER_TABLES = {
    "wrn": {  # Table 3: WideResNet16x10 CIFAR100 minima (5 minima, section 4)
        "train_loss": (0.0072, 0.0007), "test_loss": (0.9093, 0.0130),
        "train_acc": (99.9812, 0.0060), "test_acc": (77.9280, 0.2665),
    },
    "lenet": {  # Table 14: LeNet FashionMNIST minima characteristics (Appendix I)
        "train_loss": (0.1596, 0.0050), "test_loss": (0.2600, 0.0034),
        "train_acc": (94.3204, 0.2578), "test_acc": (90.7725, 0.2987),
    },
}
PAPER_TABLE_NAMES = {"wrn": "Table 3 (WideResNet16x10, CIFAR-100)", "lenet": "Table 14 (LeNet, Fashion-MNIST)"}
PAPER_MODELS = {"wrn": "WideResNet16x10, about 17.1M parameters", "lenet": "LeNet of Table 12"}
PAPER_FIGURES = {"wrn": "Fig. 6, 7, 15", "lenet": "Fig. 16"}

# Evaluation batching (memory only; BatchNorm statistics are those of an EVAL_CHUNK-image chunk).
EVAL_MODELS = 8  # parameter vectors per vmapped forward
EVAL_CHUNK = 2000  # images per forward
EVAL_POINT_BUDGET = 2 ** 28  # floats of curve/triangle points materialised at once (1 GiB in fp32)


def study_config(config: WRNRobustnessConfig, study: str) -> TriangleStudyConfig:
    return getattr(config, study)


def _eval_loss(stacked: StackedModel, x: torch.Tensor, y: torch.Tensor) -> DatasetLoss:
    return DatasetLoss(stacked, x, y, chunk_size=EVAL_CHUNK, max_models=EVAL_MODELS)


# --- stage 1: minima --------------------------------------------------------------------------------

def datasets(config) -> list[str]:
    """The datasets this experiment's stages read (checked by `losstopo validate`)."""
    return [study_config(config, s).dataset for s in config.studies]


def run_minima(config: WRNRobustnessConfig, params: Params, root: Path = ARTIFACTS) -> None:
    out_root = stage_dir(NAME, "minima", root)
    stage_params = {"data": as_dict(params.data),
                    **{s: {"dataset": study_config(config, s).dataset, "model": study_config(config, s).model,
                           "minima": as_dict(study_config(config, s).minima)} for s in config.studies}}
    with compute_stage(params, NAME, "minima", datasets(config), stage_params, root,
                       keep=set(config.studies)) as (data, executor, cache):
        tasks = []
        for study in config.studies:
            sc = study_config(config, study)
            cfg = sc.minima
            tasks.append(MinimaTask(Variant(study, sc.dataset, sc.model),
                                    DataRequest(sc.dataset, cfg.train_subset, cfg.test_subset, cfg.seed), cfg,
                                    out_root / study,
                                    extra={"study": study, "max_epochs": cfg.max_epochs, "batch_size": cfg.batch_size,
                                           "lr": cfg.lr_max, "weight_decay": cfg.weight_decay,
                                           "augment": cfg.augment, "profile": params.profile}))
        train_variants(tasks, params, data, executor, cache, f"{NAME} minima")


# --- stage 2: curves and triangles ------------------------------------------------------------------

def garipov_training(epochs: int, batches_per_epoch: int, lr: float, momentum: float,
                     weight_decay: float) -> CurveTraining:
    """Appendix C: the minima's procedure, i.e. the Garipov schedule over the epochs, one step per minibatch."""
    return CurveTraining(steps=epochs * batches_per_epoch,
                         lr=lambda step: garipov_lr(step // batches_per_epoch, epochs, lr),
                         momentum=momentum, weight_decay=weight_decay)


def _batches_per_epoch(cfg: CurveConfig, n_samples: int) -> int:
    return max(n_samples // cfg.batch_size, 1)  # as train_minima counts an epoch


def _training(cfg: CurveConfig, epochs: int, n_samples: int) -> CurveTraining:
    return garipov_training(epochs, _batches_per_epoch(cfg, n_samples), cfg.lr, cfg.momentum, cfg.weight_decay)


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


def _curve_losses(eval_loss: DatasetLoss, start: torch.Tensor, bends: torch.Tensor, end: torch.Tensor,
                  cfg: CurveConfig) -> tuple[np.ndarray, np.ndarray]:
    """t (n_eval,) and losses (P, n_eval), evaluated in groups of curves that fit EVAL_POINT_BUDGET."""
    t, losses = None, []
    for group in _groups(len(start), cfg.n_eval, start.shape[1]):
        t, part = evaluate_curves(eval_loss, start[group], bends[group], end[group], cfg.kind, cfg.n_eval,
                                  max_models=EVAL_MODELS)
        losses.append(part)
    return t, np.concatenate(losses)


def curves_job(shared: dict[str, dict], job: CurvesJob) -> dict:
    """Trains and evaluates the curves of ``job.pairs``: bends (P, d) on the CPU, t and losses (P, n_eval), and
    each curve's maximum after 80% of the steps (its convergence check)."""
    cfg = job.study.config
    train_loss, eval_loss, n_samples = _study_losses(job.study)
    thetas = shared[job.study.name]["thetas"].to(resolve_device(job.study.device))
    start, end = thetas[[i for i, _ in job.pairs]], thetas[[j for _, j in job.pairs]]
    training = _training(cfg, cfg.epochs, n_samples)
    bends, bends_at_checkpoint = train_curves(train_loss, start, end, cfg.kind, training, seed=job.study.seed,
                                              progress=job.progress, checkpoint=convergence_checkpoint(training.steps))
    t, losses = _curve_losses(eval_loss, start, bends, end, cfg)
    _, losses_at_checkpoint = _curve_losses(eval_loss, start, bends_at_checkpoint, end, cfg)
    out = {"bends": bends.cpu(), "t": t, "losses": losses, "max_at_checkpoint": losses_at_checkpoint.max(axis=1)}
    if job.minima:
        out |= {"minima_losses": evaluate_in_chunks(eval_loss, thetas, EVAL_MODELS).tolist(),
                "minima_train_acc": eval_loss.accuracy(thetas).tolist()}
    return out


def _triangle_losses(eval_loss: DatasetLoss, vertices: torch.Tensor, sides: torch.Tensor, centre: torch.Tensor,
                     cfg: CurveConfig) -> tuple[np.ndarray, np.ndarray]:
    """The barycentric grid (m, 3) and losses (T, m), evaluated in groups of triangles that fit EVAL_POINT_BUDGET."""
    grid, losses = None, []
    m = (cfg.triangle_resolution + 1) * (cfg.triangle_resolution + 2) // 2
    for group in _groups(len(vertices), m, vertices.shape[-1]):
        grid, part = evaluate_triangles(eval_loss, vertices[group], sides[group], centre[group],
                                        cfg.triangle_resolution, max_models=EVAL_MODELS)
        losses.append(part)
    return grid, np.concatenate(losses)


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
    training = _training(cfg, cfg.triangle_epochs, n_samples)
    trained, at_checkpoint = train_triangles(train_loss, vertices, fixed_sides, training, seed=job.study.seed,
                                             progress=job.progress, checkpoint=convergence_checkpoint(training.steps))
    grid, losses = _triangle_losses(eval_loss, vertices, *trained, cfg)
    _, losses_at_checkpoint = _triangle_losses(eval_loss, vertices, *at_checkpoint, cfg)
    return {"grid": grid, "losses": losses, "max_at_checkpoint": losses_at_checkpoint.max(axis=1)}


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
    curve_training = _training(cfg, cfg.epochs, n_samples)
    minima_losses = curves["minima_losses"]
    pairs = list(itertools.combinations(range(len(study.thetas)), 2))
    triples = list(itertools.combinations(range(len(study.thetas)), 3))
    curve_max = curves["losses"].max(axis=1)
    curve_convergence = maxima_convergence(curve_max, curves["max_at_checkpoint"],
                                           [max(minima_losses[i], minima_losses[j]) for i, j in pairs], cfg)
    record = {
        "kind": cfg.kind, "batches_per_epoch": _batches_per_epoch(cfg, n_samples), "curve_epochs": cfg.epochs,
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
            "steps": _training(cfg, cfg.triangle_epochs, n_samples).steps, "epochs": cfg.triangle_epochs,
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


# --- stage 3: barcodes and robustness ---------------------------------------------------------------

def curve_max_matrix(record: dict) -> np.ndarray:
    return path_max_matrix(record, "curve_max")


def edge_filtration(record: dict) -> dict[tuple[int, int], float]:
    """Filtration value of each curve in the complex: its maximum, never below its end points."""
    losses = record["minima_losses"]
    return {(i, j): max(float(m), losses[i], losses[j]) for (i, j), m in zip(record["pairs"], record["curve_max"])}


def appendix_i_bar(triple, edges: dict[tuple[int, int], float], triangle_max: float) -> tuple[float, float] | None:
    """Appendix I: a triangle's 1-bar runs from the maximum over its sides to its own maximum (None if empty)."""
    i, j, k = triple
    birth = max(edges[(i, j)], edges[(j, k)], edges[(i, k)])
    return (birth, float(triangle_max)) if triangle_max > birth else None


def saddle_to_score(bars) -> float:
    """Index-1 TO-score (section 1.4): bottleneck distance to the empty barcode of the ideal function."""
    points = np.array([(b, d) for b, d in bars], dtype=float).reshape(-1, 2)
    import gudhi  # on first use: compute-only machines lack it

    return float(gudhi.bottleneck_distance(points, np.empty((0, 2)), e=0)) if len(points) else 0.0


def _spread(values) -> dict:
    """Mean, population std (over the complete enumeration of subsets) and CV of one list of h_p."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return {"n": 0, "mean": None, "std": None, "cv": None}
    mean, std = float(values.mean()), float(values.std())
    return {"n": int(len(values)), "mean": mean, "std": std, "cv": std / abs(mean) if mean else None}


ROBUSTNESS_DRAWS = 199  # relabellings of the curve maxima per robustness test
ROBUSTNESS_NULL_DRAWS = 400  # null landscapes for the test's measured size (as evidence.NULL_DRAWS)


def shuffled_barriers(losses, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same barriers (a path's maximum above its higher end point's loss), reassigned to the pairs at random
    and put back on the new pair's higher end point: every shuffled maximum still lies above both its minima, as
    every real one does (shuffling the maxima themselves broke that, and the test rejected 7% of null landscapes)."""
    n = len(matrix)
    upper = np.triu_indices(n, 1)
    floors = np.maximum.outer(np.asarray(losses, float), np.asarray(losses, float))
    out = np.full_like(matrix, np.nan)
    out[upper] = floors[upper] + rng.permutation(matrix[upper] - floors[upper])
    out.T[upper] = out[upper]
    return out


def robustness_test(losses, matrix: np.ndarray, sizes, draws: int = ROBUSTNESS_DRAWS, seed: int = 0) -> TestResult:
    """Is the barcode more stable over subsets of minima than the construction alone makes it?

    h_p over a subset is a minimum over the lower minima in it, so its spread shrinks with the subset
    size whatever the landscape. The null here is the construction itself: the observed barriers reassigned to
    the pairs at random (:func:`shuffled_barriers`), under which they are exchangeable and the test exact.
    Statistic: the mean CV of h_p over all subsets; one-sided Monte Carlo p that the observed mean CV is this
    small under the null.
    """
    rng = np.random.default_rng(seed)
    observed = robustness(losses, matrix, sizes, 0)["mean_cv"]
    name = "Monte Carlo test of the mean CV of h_p over subsets vs barriers shuffled over pairs (smaller)"
    if observed is None:
        return TestResult(name, float("nan"), float("nan"), float("nan"), "mean CV - null median", 0,
                          float("nan"), 1 / (1 + draws))
    null = np.array([robustness(losses, shuffled_barriers(losses, matrix, rng), sizes, 0)["mean_cv"] or np.nan
                     for _ in range(draws)])
    null = null[np.isfinite(null)]
    p = float((1 + np.sum(null <= observed + 1e-12)) / (1 + len(null)))
    p_other = float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))
    return TestResult(name, float(observed), p, float(observed - np.median(null)), "mean CV - null median",
                      len(losses), p_other, 1 / (1 + len(null)))


@functools.cache
def robustness_null_rate(n_minima: int, sizes: tuple[int, ...], draws: int = ROBUSTNESS_NULL_DRAWS) -> float:
    """Size of :func:`robustness_test` on landscapes without structure: minima losses and curve maxima
    (above both end points) drawn at random, 99 relabellings per test."""
    def one(rng: np.random.Generator) -> TestResult:
        losses = rng.random(n_minima)
        matrix = np.maximum.outer(losses, losses) + rng.exponential(1.0, (n_minima, n_minima))
        matrix = np.triu(matrix, 1) + np.triu(matrix, 1).T
        np.fill_diagonal(matrix, np.nan)
        return robustness_test(losses, matrix, sizes, draws=99, seed=int(rng.integers(2**31)))
    return null_rate(one, draws)


def robustness(losses, matrix: np.ndarray, sizes_requested, fixed_requested: int) -> dict:
    """Fig. 7 from :func:`subset_robustness`: per minimum over all subsets (a), the fixed minimum per size (b),
    and the CV per (minimum, size) that the robustness claim tests."""
    n = len(losses)
    sizes = sorted({s for s in sizes_requested if 2 <= s <= n})
    table = subset_robustness(losses, matrix, sizes)
    full = barcode_of_minima(losses, matrix, "paper")
    global_minimum = int(np.lexsort((np.arange(n), losses))[0])
    fixed = min(max(fixed_requested, 0), n - 1)
    per_size = [{"size": s, "minima": [{"minimum": p, **_spread(table[s][p])} for p in range(n)]} for s in sizes]
    points = [(s, p, row["cv"]) for s, entry in zip(sizes, per_size) for p, row in enumerate(entry["minima"])
              if s < n and row["n"] >= 2 and row["cv"] is not None]
    pooled = [{"minimum": p, "loss": float(losses[p]), "full_height": full[p][1],
               **_spread([h for s in sizes for h in table[s][p]])} for p in range(n)]
    cvs = [row["cv"] for row in pooled if row["n"] >= 2 and row["cv"] is not None]
    return {
        "sizes_requested": list(sizes_requested), "sizes": sizes, "n_minima": n,
        "values": [{"size": s, "minima": [table[s][p] for p in range(n)]} for s in sizes],
        "per_minimum": pooled, "per_size": per_size, "global_minimum": global_minimum,
        "fixed_minimum": {"index": fixed, "requested": fixed_requested, "is_global_minimum": fixed == global_minimum,
                          "by_size": [{"size": s, **_spread(table[s][fixed])} for s in sizes]},
        "mean_cv": float(np.mean(cvs)) if cvs else None,
        "mean_cv_by_size": [{"size": s, "mean_cv": float(np.mean(v)) if v else None}
                            for s in sizes for v in [[c for s2, _, c in points if s2 == s]]],
        "trend_points": [{"size": s, "minimum": p, "cv": c} for s, p, c in points],
    }


def run_topology(config: WRNRobustnessConfig, params: Params, root: Path = ARTIFACTS) -> None:
    require_complete(NAME, "paths", root)
    out_root = stage_dir(NAME, "topology", root)
    prune(out_root, set(config.studies))
    metrics = {}
    with tracking.stage_run(NAME, "topology", profile=params.profile, device="cpu",
                            params={"subset_sizes": config.subset_sizes, "fixed_minimum": config.fixed_minimum}):
        for study in config.studies:
            record = load_json(stage_dir(NAME, "paths", root) / study / "paths.json")
            losses, matrix = record["minima_losses"], curve_max_matrix(record)
            bars = barcode_of_minima(losses, matrix, "paper")
            bars_persistence = barcode_of_minima(losses, matrix, "persistence")
            edges = edge_filtration(record)
            saddles = {}
            for regime, tri in record["triangles"].items():
                triangle_max = {tuple(t): m for t, m in zip(record["triples"], tri["max"])}
                # vertices_fixed triangles retrained their sides: the complex is built on those, not on the curves
                complex_bars = (own_sides_barcodes(losses, list(zip(map(tuple, record["triples"]), tri["side_max"],
                                                                    tri["max"])))
                                if regime == "vertices_fixed" else higher_barcodes(losses, edges, triangle_max))
                per_triangle = [appendix_i_bar(t, edges, m) for t, m in triangle_max.items()]
                own = [appendix_i_bar((0, 1, 2), {(0, 1): max(s[0], losses[i], losses[j]),
                                                  (1, 2): max(s[1], losses[j], losses[k]),
                                                  (0, 2): max(s[2], losses[i], losses[k])}, m)
                       for (i, j, k), s, m in zip(record["triples"], tri["side_max"], tri["max"])]
                saddles[regime] = {"bars_0": complex_bars[0], "bars_1": complex_bars[1],
                                   "to_score_1": saddle_to_score(complex_bars[1]),
                                   "appendix_i_bars": per_triangle, "own_side_bars": own}
            robust = robustness(losses, matrix, config.subset_sizes, config.fixed_minimum)
            robust["permutation_test"] = robustness_test(losses, matrix, config.subset_sizes).as_dict()
            result = {
                "study": study, "model": record["model"], "dataset": record["dataset"],
                "data_source": record["data_source"], "data_kind": record["data_kind"], "data": record.get("data"),
                "profile": params.profile,
                "minima_losses": losses, "bars": bars, "bars_persistence": bars_persistence,
                "to_score": to_score(bars), "to_score_persistence": to_score(bars_persistence),
                "pairs": record["pairs"], "curve_max": record["curve_max"], "edge_filtration": list(edges.values()),
                "triples": record["triples"], "saddles": saddles, "robustness": robust,
            }
            out = out_root / study / "topology.json"
            save_json(result, out)
            fixed = robust["fixed_minimum"]
            with tracking.variant_run(study, data_source=record["data_source"]):
                logged = {"to_score": result["to_score"], "to_score_persistence": result["to_score_persistence"],
                          "mean_cv": robust["mean_cv"]}
                logged |= {f"bar_{k}_death": d for k, (_, d) in enumerate(bars) if math.isfinite(d)}
                logged |= {f"to_score_1_{regime}": s["to_score_1"] for regime, s in saddles.items()}
                logged |= {f"n_bars_1_{regime}": len(s["bars_1"]) for regime, s in saddles.items()}
                logged |= {f"cv_m{row['minimum']}": row["cv"] for row in robust["per_minimum"] if row["cv"] is not None}
                logged |= {f"fixed_m{fixed['index']}_std_size{row['size']}": row["std"]
                           for row in fixed["by_size"] if row["std"] is not None}
                tracking.log_metrics(logged)
                tracking.log_artifact(out)
            metrics[study] = {
                "to_score": result["to_score"], "to_score_persistence": result["to_score_persistence"],
                **{f"to_score_1_{regime}": s["to_score_1"] for regime, s in saddles.items()},
                "mean_cv": robust["mean_cv"],
                "cv_per_minimum": {str(row["minimum"]): row["cv"] for row in robust["per_minimum"]},
                "mean_cv_by_size": {str(row["size"]): row["mean_cv"] for row in robust["mean_cv_by_size"]},
                "fixed_minimum": fixed["index"],
                "fixed_minimum_cv_by_size": {str(row["size"]): row["cv"] for row in fixed["by_size"]},
            }
        save_json(metrics, stage_dir(NAME, "topology_metrics.json", root))


# --- report -----------------------------------------------------------------------------------------

def _mean_std(values, scale: float = 1.0, digits: int = 4) -> str:
    values = np.asarray(values, float) * scale
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.{digits}f} ± {std:.{digits}f}"


def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _percent(fraction: float) -> str:
    return "not measured" if not math.isfinite(fraction) else f"{fraction:.0%}"


def scale_words(summary: dict, paths: dict) -> str:
    n_minima = len(summary["train_loss"])
    return (f"`{summary['model']}` ({summary['parameters']:,} parameters), {n_minima} minima, "
            f"SGD {summary['max_epochs']} epochs on {summary['n_train']:,} training images (batch "
            f"{summary['batch_size']}, lr {summary['lr']:g}, L2 {summary['weight_decay']:g}"
            f"{', crop+flip' if summary['augment'] else ''}), profile `{summary['profile']}`")


def short_source(record: dict) -> str:
    """The data source in a few words (the full text is printed above each study's tables)."""
    return source_label(record["data_kind"], record["dataset"])


def minima_table(section: Section, study: str, summary: dict, paths: dict, test_subset: int | None) -> None:
    """Table 3 / Table 14: ours (mean ± sample std over our minima) beside the paper's, scale and data on every row."""
    paper = PAPER_TABLES[study]
    scale = (f"{summary['model']}, {len(summary['train_loss'])} minima, {summary['max_epochs']} epochs on "
             f"{summary['n_train']:,} images, profile {summary['profile']}")
    note = accuracy_note(summary["data_kind"], summary["n_test"], test_subset)
    rows = []
    for q in QUANTITIES:
        acc = q.endswith("acc")
        ours = _mean_std(summary[q], 100.0 if acc else 1.0, 2 if acc else 4)
        where = (f"{summary['n_train']:,} training images" if q.startswith("train")
                 else f"{summary['n_test']:,} test images ({note})")
        rows.append([QUANTITY_NAMES[q], ours, f"{paper[q][0]:.4f} ± {paper[q][1]:.4f}", scale,
                     f"{short_source(summary)}; {where}"])
    section.add_table(["quantity", f"ours (n={len(summary['train_loss'])})",
                       f"paper, {PAPER_TABLE_NAMES[study]}", "our scale", "our data"], rows)


def triangle_table(section: Section, topo: dict, paths: dict) -> None:
    """Triangle maxima per regime (the study of Fig. 15 / 16), beside the maxima of the curves on their sides."""
    regimes = [r for r in REGIMES if r in paths["triangles"]]
    edges = dict(zip(map(tuple, topo["pairs"]), topo["edge_filtration"]))
    header = ["triangle (A, B, C)", "curve maxima AB / BC / CA", "max of the curves"]
    for regime in regimes:
        header += [f"{regime}: triangle max", f"{regime}: own sides max", f"{regime}: Appendix I bar",
                   f"{regime}: converged"]
    rows = []
    for n, (i, j, k) in enumerate(map(tuple, paths["triples"])):
        sides = [edges[(i, j)], edges[(j, k)], edges[(i, k)]]
        row = [f"({i}, {j}, {k})", " / ".join(f"{s:.4f}" for s in sides), f"{max(sides):.4f}"]
        for regime in regimes:
            tri, bar = paths["triangles"][regime], topo["saddles"][regime]["appendix_i_bars"][n]
            row += [f"{tri['max'][n]:.4f}", f"{max(tri['side_max'][n]):.4f}",
                    "none (enters with its last side)" if bar is None else f"[{bar[0]:.4f}, {bar[1]:.4f}]",
                    "not recorded" if "converged" not in tri else "yes" if tri["converged"][n] else "no"]
        rows.append(row)
    if rows:
        mean_row = ["mean", "", f"{np.mean([max(edges[(i, j)], edges[(j, k)], edges[(i, k)]) for i, j, k in map(tuple, paths['triples'])]):.4f}"]
        for regime in regimes:
            tri = paths["triangles"][regime]
            mean_row += [f"{np.mean(tri['max']):.4f}", f"{np.mean([max(s) for s in tri['side_max']]):.4f}", "",
                         _percent(float(np.mean(tri["converged"]))) if "converged" in tri else ""]
        rows.append(mean_row)
    section.add_table(header, rows)


def robustness_table(section: Section, topo: dict) -> None:
    robust = topo["robustness"]
    header = ["minimum", "L(p)", "h_p (all minima)", "(a) h_p over all subsets: mean ± std", "CV", "subsets"]
    header += [f"size {s}: mean ± std (n)" for s in robust["sizes"]]
    rows = []
    for p, row in enumerate(robust["per_minimum"]):
        line = [str(p) + (" (fixed)" if p == robust["fixed_minimum"]["index"] else ""), f"{row['loss']:.4f}",
                "∞" if not math.isfinite(row["full_height"]) else f"{row['full_height']:.4f}",
                "—" if row["n"] == 0 else f"{row['mean']:.4f} ± {row['std']:.4f}", _fmt(row["cv"], 3), row["n"]]
        for entry in robust["per_size"]:
            cell = entry["minima"][p]
            line.append("—" if cell["n"] == 0 else f"{cell['mean']:.4f} ± {cell['std']:.4f} ({cell['n']})")
        rows.append(line)
    section.add_table(header, rows)


def claim_convergence(groups: dict[str, list[bool] | None]) -> tuple[float, str]:
    """The fraction of a claim's inputs (all groups together) that met their convergence rule, and the count
    per group in words; a group is None where its artefact predates the measurement, which makes it NaN."""
    flags, words = [], []
    for name, group in groups.items():
        flags += [float("nan")] if group is None else list(group)
        words.append(f"{name} not recorded" if group is None else f"{name} {sum(group)}/{len(group)}")
    return float(np.mean(flags)), ", ".join(words)


def minima_converged(summary: dict, patience: int | None, converge_abs: float) -> list[bool]:
    """The minima's recorded rule (patience, or for a fixed budget a loss that moved < 1% over the last 20% of
    epochs), or, for a fixed budget, a loss that moved by <= ``converge_abs`` nats over those epochs: the study's
    resolution, the one its curves and triangles are measured at (near zero loss 1% is below the epochs' noise)."""
    history = summary.get("history") or []
    if patience is not None or converge_abs <= 0 or len(history) < 2:
        return list(summary["converged"])
    earlier, last = history[int(round(0.8 * len(history))) - 1]["train_loss"], history[-1]["train_loss"]
    return [bool(flag) or abs(b - a) <= converge_abs for flag, a, b in zip(summary["converged"], earlier, last)]


def minima_rule_words(patience: int | None, converge_abs: float) -> str:
    if patience is not None:
        return f"minima: stopped by the patience rule ({patience} epochs)"
    resolution = f" or by <= {converge_abs:g} nats" if converge_abs > 0 else ""
    return f"minima: loss moved < 1%{resolution} over the last 20% of epochs"


def robustness_convergence(summary: dict, paths: dict, minima_flags: list[bool] | None = None) -> tuple[float, str]:
    """The robustness claim's inputs: the minima (``minima_flags``, by default their recorded rule) and the
    curves (maxima rule)."""
    flags = summary["converged"] if minima_flags is None else minima_flags
    return claim_convergence({"minima": flags, "curves": paths.get("curve_converged")})


def regime_convergence(paths: dict) -> tuple[float, str]:
    """The regime claim's inputs: both regimes' triangles, and the curves (the sides of sides_fixed)."""
    return claim_convergence({f"{regime} triangles": paths["triangles"][regime].get("converged")
                              for regime in ("vertices_fixed", "sides_fixed")}
                             | {"curves (the sides_fixed sides)": paths.get("curve_converged")})


def robustness_claim(study: str, topo: dict, summary: dict, paths: dict, study_cfg: TriangleStudyConfig) -> Claim:
    robust = topo["robustness"]
    fixed = robust["fixed_minimum"]
    fixed_words = "; ".join(f"size {row['size']}: std {_fmt(row['std'])}, CV {_fmt(row['cv'], 3)} (n={row['n']})"
                            for row in fixed["by_size"])
    raw = robust.get("permutation_test")
    result = (TestResult(**{k: (float("nan") if v is None else v) for k, v in raw.items()}) if raw
              else TestResult("not computed (topology older than this test)", float("nan"), float("nan"),
                              float("nan"), "", 0, float("nan"), 1.0))
    patience, resolution = study_cfg.minima.patience, study_cfg.curves.converge_abs
    converged, convergence_words = robustness_convergence(summary, paths,
                                                          minima_converged(summary, patience, resolution))
    note = (f"Restated (the old test, 'spread shrinks with subset size', holds by construction on random path "
            f"maxima): the observed mean CV of h_p over all subsets of sizes {robust['sizes']} against the same "
            f"barriers (curve maximum minus its higher minimum's loss) shuffled over the pairs ({ROBUSTNESS_DRAWS} "
            f"shuffles). Converged: {convergence_words} "
            f"({_percent(converged)} of the inputs; {minima_rule_words(patience, resolution)}; curves: "
            f"{paths.get('convergence_rule', 'not recorded')}). Mean CV by size: "
            + ", ".join(f"{r['size']}: {_fmt(r['mean_cv'], 3)}" for r in robust["mean_cv_by_size"])
            + f". Fixed minimum {fixed['index']}"
            + (" (the global minimum of this set: no finite bar)" if fixed["is_global_minimum"] else "")
            + (f" (requested {fixed['requested']}, clamped to the {robust['n_minima']} minima)"
               if fixed["requested"] != fixed["index"] else "")
            + f": {fixed_words}.")
    return Claim(f"The barcode is robust to the choice of minima: h_p varies less over subsets of minima than "
                 f"with the same barriers shuffled over pairs ({study}: {topo['model']})",
                 "section 4, Fig. 7: 'the barcode is a rather robust characteristic ... in terms of both the set "
                 "of learned minima and the number of minima'", result, topo["data_source"], topo["profile"],
                 "set of minima (pairs relabelled)", converged,
                 robustness_null_rate(robust["n_minima"], tuple(robust["sizes"])),
                 f"random minima losses, each pair's barrier drawn i.i.d. (exponential) above its higher minimum "
                 f"(no structure), {ROBUSTNESS_NULL_DRAWS} draws of the test with 99 shuffles", data=topo.get("data"),
                 note=note)


def regime_claim(study: str, topo: dict, paths: dict) -> Claim:
    """Fig. 16 vs 15: triangles whose side centres train (vertices_fixed) end lower than triangles on the
    fixed curves (sides_fixed), paired by triangle."""
    low, high = paths["triangles"]["vertices_fixed"]["max"], paths["triangles"]["sides_fixed"]["max"]
    differences = np.subtract(low, high)
    converged, convergence_words = regime_convergence(paths)
    return Claim(f"Triangles with trainable side centres are lower than triangles on fixed sides ({study}: "
                 f"{topo['model']})", "Appendix I, Fig. 16 vs Fig. 15: trainable side centres give lower triangles",
                 below_threshold_test(differences, 0.0), topo["data_source"], topo["profile"], "triangle (paired)",
                 converged, below_threshold_null_rate(len(differences)),
                 f"paired differences symmetric about 0, {NULL_DRAWS} draws", data=topo.get("data"),
                 note=f"{len(differences)} triangles; mean difference {np.mean(differences):.4g}. Converged: "
                      f"{convergence_words} ({_percent(converged)} of the inputs; "
                      f"{paths.get('convergence_rule', 'rule not recorded')}).")


def report_section(config: WRNRobustnessConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    section.add_text(
        "Curves: a polygonal chain with one bend between every pair of minima, trained with a random t per "
        "minibatch (Garipov et al. 2018) under the minima's schedule (Appendix C: Table 6 for the WRN, Table 7 for "
        "LeNet); each curve's value is the maximum of its loss on an even t grid. Triangles over every triple of "
        "minima (Appendix I): *sides_fixed* keeps the trained curves as sides and trains only the centre O (Fig. 15); "
        "*vertices_fixed* trains the side centres D, E, F and O (Fig. 16). Losses are the mean cross-entropy on the "
        "curves' training images, BatchNorm statistics recomputed for every evaluated parameter vector. The "
        "1-saddle barcode (Fig. 6b) is the dimension-1 persistence of the complex of minima (their loss), curves "
        "(their maximum) and triangles (their maximum), Algorithm 2; for one triangle it is Appendix I's segment "
        "from the maximum of its sides to its own maximum.")
    minima_root, paths_root = stage_dir(NAME, "minima", root), stage_dir(NAME, "paths", root)
    topology_root = stage_dir(NAME, "topology", root)
    for study in config.studies:
        summary = load_json(minima_root / study / "minima.json")["summary"]
        paths = load_json(paths_root / study / "paths.json")
        topo = load_json(topology_root / study / "topology.json")
        source = topo["data_source"]
        short, caveat = short_source(topo), title_caveat(topo["data_kind"], topo["dataset"])
        lines = [f"### {study}: {summary['model']} on {summary['dataset']} (paper: {PAPER_MODELS[study]}; "
                 f"{PAPER_FIGURES[study]})",
                 f"Data: **{source}**.",
                 f"- Scale: {scale_words(summary, paths)}.",
                 f"- Curves: {len(paths['pairs'])} {paths['kind']} curves, {paths['curve_epochs']} epochs = "
                 f"{paths['curve_steps']} steps of batch {paths['curve_batch_size']} on {paths['n_curve_samples']:,} "
                 f"training images (a prefix of the minima's {paths['minima_n_train']:,}"
                 f"{'; crop+flip, as the minima' if paths.get('curve_augment') else ''}), evaluated at "
                 f"{len(paths['t'])} points; triangles: {len(paths['triples'])} per regime, "
                 + ", ".join(f"{r} {t['epochs']} epochs ({t['steps']} steps, trains {t['trainable']}), "
                             f"grid of resolution {t['resolution']}" for r, t in paths["triangles"].items())
                 + ".",
                 "- Converged (maximum after 80% of the steps vs after all): "
                 + claim_convergence({"curves": paths.get("curve_converged")}
                                     | {f"{r} triangles": t.get("converged") for r, t in paths["triangles"].items()})[1]
                 + f"; rule: {paths.get('convergence_rule', 'not recorded')}."]
        if summary["data_kind"] == "synthetic":
            lines.append(f"- **Real {summary['dataset']} was not available: minima, curves and barcodes are on the "
                         f"labelled SYNTHETIC stand-in (class templates plus noise); they say nothing about "
                         f"{PAPER_TABLE_NAMES[study]}.**")
        elif summary["data_kind"] == "offline-partial":
            lines.append("- **Partial real copy: the test rows are held-out training images, not the official "
                         "test set.**")
        section.add_text("\n\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
        section.add_text(f"Minima characteristics ({PAPER_TABLE_NAMES[study]}; mean ± std, ours: sample std over "
                         f"our minima; ours at the scale stated on each row):")
        minima_table(section, study, summary, paths, study_config(config, study).minima.test_subset)

        flat = sum(1 for b, d in topo["bars"] if math.isfinite(d) and d <= b)
        if flat:
            section.add_text(f"**{flat} of {len(topo['bars']) - 1} finite bars have zero length (h_p = L(p)): the "
                             f"lowest curve to a lower minimum never rises above this minimum's loss, i.e. these "
                             f"points are not separated from lower minima by any barrier at this scale (at ci the "
                             f"minima are far from converged, and training the curves lowers the loss further).**")
        section.add_text(f"Barcode of minima: TO-score **{topo['to_score']:.4f}** (Algorithm 1), "
                         f"{topo['to_score_persistence']:.4f} (exact graph persistence). 1-saddle barcode: "
                         + "; ".join(f"{r}: {len(s['bars_1'])} bar(s), index-1 TO-score {s['to_score_1']:.4f}"
                                     for r, s in topo["saddles"].items()) + ".")
        section.add_figure(plots.barcodes({"Algorithm 1": topo["bars"], "graph persistence": topo["bars_persistence"]},
                                          figures / f"wrn_robustness_barcode_{study}.png",
                                          f"Barcode of minima, {summary['model']} (Fig. 6a){caveat}"),
                           f"Barcode of minima, {study} (Fig. 6a; {short})")
        if topo["saddles"]:
            section.add_figure(plots.barcodes({r: s["bars_1"] for r, s in topo["saddles"].items()},
                                              figures / f"wrn_robustness_saddles_{study}.png",
                                              f"1-saddle barcode, {summary['model']} (Fig. 6b){caveat}"),
                               f"1-saddle barcode per triangle regime, {study} (Fig. 6b; {short})")
        t = np.asarray(paths["t"], float)
        section.add_figure(plots.loss_along_paths({f"{i}-{j}": (t, np.asarray(losses, float))
                                                   for (i, j), losses in zip(paths["pairs"], paths["curve_losses"])},
                                                  figures / f"wrn_robustness_curves_{study}.png",
                                                  f"Loss along the trained curves, {summary['model']}{caveat}"),
                           f"Training loss along each curve, {study} ({short})")
        section.add_text(f"Triangle maxima per regime ({'Fig. 15' if study == 'wrn' else 'Fig. 16'}; sides are "
                         f"the curves in sides_fixed, retrained polychains in vertices_fixed; 'Appendix I bar' uses the "
                         f"curves' maxima for the sides):")
        triangle_table(section, topo, paths)
        for regime, tri in paths["triangles"].items():
            worst = int(np.argmax(tri["max"]))
            section.add_figure(plots.triangle_losses(
                np.asarray(tri["grid"], float), np.asarray(tri["losses"][worst], float),
                figures / f"wrn_robustness_triangle_{study}_{regime}.png",
                f"{summary['model']}, {regime}, triangle {tuple(paths['triples'][worst])}{caveat}",
                tuple(f"{v} = {m}" for v, m in zip("ABC", paths["triples"][worst]))),
                f"Loss over the highest triangle (vertices A, B, C = minima), {regime}, {study} "
                f"({'Fig. 15' if study == 'wrn' else 'Fig. 16'}; {short})")

        robust = topo["robustness"]
        section.add_text(f"Robustness (Fig. 7): the bar of each minimum recomputed (Algorithm 1) on every subset of "
                         f"the {robust['n_minima']} minima of sizes {robust['sizes']}; std over all subsets "
                         f"(population std of the complete enumeration).")
        robustness_table(section, topo)
        finite = [row for row in robust["per_minimum"] if row["n"] > 0]
        section.add_figure(plots.mean_std_points(
            {study: ([row["minimum"] for row in finite], [row["mean"] for row in finite],
                     [row["std"] for row in finite])},
            figures / f"wrn_robustness_fig7a_{study}.png", f"Saddle h_p over subsets of minima (Fig. 7a), {study}",
            "minimum", "h_p: mean ± std over subsets"),
            f"(a) Mean and std of each minimum's saddle over all choices of the minima's set, {study} ({short})")
        fixed = robust["fixed_minimum"]
        by_size = [row for row in fixed["by_size"] if row["n"] > 0]
        section.add_figure(plots.mean_std_points(
            {f"minimum {fixed['index']}": ([row["size"] for row in by_size], [row["mean"] for row in by_size],
                                           [row["std"] for row in by_size])},
            figures / f"wrn_robustness_fig7b_{study}.png", f"Fixed minimum vs set size (Fig. 7b), {study}",
            "number of minima in the set", "h_p: mean ± std over subsets", connect=True),
            f"(b) Saddle of minimum {fixed['index']} vs the size of the minima's set, {study} ({short})")
        section.add_claim(robustness_claim(study, topo, summary, paths, study_config(config, study)))
        if {"vertices_fixed", "sides_fixed"} <= set(paths["triangles"]):
            section.add_claim(regime_claim(study, topo, paths))
    return section


EXPERIMENT = Experiment(NAME, WRNRobustnessConfig, datasets,
                        {"minima": run_minima, "paths": run_paths, "topology": run_topology},
                        report_section)
