"""ResNet minima of two learning-rate regimes: barcodes paper, section 3, Tables 1, 2, 4, 5, 13, Fig. 5.

Per dataset (CIFAR-10, SVHN): minima of type 1 (constant small LR, S(1e-4)) and type 2 (annealed LR,
S_c10 / S_svhn), each type trained as one stack; then the Algorithm 3 paths between ALL pairs of the
dataset's minima (type 1 - type 1, type 2 - type 2 and the cross pairs: 28 + 28 + 64 for 8 + 8 minima)
in one batched optimisation with Algorithm 4 refinement (distance criterion, T = 1.2); then one
barcode of all the dataset's minima, from the optimised points and the points at alpha in
{0.2, 0.4, 0.6, 0.8} between them (section 3.2).

Claims: type-1 minima generalise worse at near-equal training loss (Tables 1, 2); their saddle
heights h_p are higher (Fig. 5, "always higher"); segment length h_p - L(p) goes with test error.

Data: both types and the paths of a dataset draw their training subsets from ONE permutation (the
type-1 seed), so every subset is a prefix of the same order: the path subset is nested in the training
set of every minimum, and both types see the same images. SVHN has no offline copy: offline runs use
the labelled synthetic stand-in, and every artifact and claim carries the data source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.cnn_channels import accuracy_note, training_note
from benchmarks.resnet_lr_claims import (PAPER_TABLE_NAMES, QUANTITIES, TYPES, claims, minima_table, pair_rows,
                                         parameter_text, schedule_words)
from losstopo.job_data import DataRequest, job_dataset, job_provenance
from losstopo.minima_stage import MinimaTask, Variant, save_minima_metrics, train_variants
from losstopo.paths_stage import PathsTask, optimize_variant_paths, path_schedule
from losstopo.stage_frame import ARTIFACTS, compute_stage, prune, require_complete, stage_dir
from losstopo.topology_stage import path_max_matrix
from losstopo import plots, tracking
from losstopo.config import DataConfig, MinimaConfig, Params, PathConfig, TopologyConfig, as_dict, require
from losstopo.errors import DataError
from losstopo.io import load_json, save_json
from losstopo.registry import Experiment
from losstopo.report import Section
from losstopo.topology import barcode_of_minima, segment_lengths, to_score

NAME = "resnet_lr"
TITLE = "ResNet minima of constant vs annealed learning rate (barcodes paper, section 3, Tables 1, 2, Fig. 5)"


@dataclass(frozen=True)
class LRTypeRuns:
    """One dataset of the ResNet study: minima of type 1 (constant small LR) and type 2 (annealed LR)
    and the paths between all of them (barcodes paper, section 3, Tables 4, 5, 13)."""

    type1: MinimaConfig = field(default_factory=MinimaConfig)
    type2: MinimaConfig = field(default_factory=MinimaConfig)
    paths: PathConfig = field(default_factory=PathConfig)


@dataclass(frozen=True)
class ResNetLRConfig:
    datasets: list[str] = field(default_factory=lambda: ["cifar10", "svhn"])
    model: str = "resnet-t11-code"
    cifar10: LRTypeRuns = field(default_factory=LRTypeRuns)
    svhn: LRTypeRuns = field(default_factory=LRTypeRuns)
    topology: TopologyConfig = field(default_factory=TopologyConfig)

    def validate(self, where: str) -> None:
        require(set(self.datasets) <= {"cifar10", "svhn"}, where, "datasets", "must be among cifar10, svhn")
        for dataset in ("cifar10", "svhn"):  # its paths stage is its own: Algorithm 3 only
            require(self.runs(dataset).paths.method == "alg3", f"{where}.{dataset}.paths", "method",
                    "must be 'alg3' (resnet_lr has no curves stage)")

    def runs(self, dataset: str) -> LRTypeRuns:
        return getattr(self, dataset)


def variants(config: ResNetLRConfig) -> list[Variant]:
    """One stack of minima per (dataset, type)."""
    return [Variant(f"{dataset}-{kind}", dataset, config.model, {"type": int(kind[-1])})
            for dataset in config.datasets for kind in TYPES]


def data_seed(runs: LRTypeRuns) -> int:
    """The subset seed of everything of one dataset (both types, the paths): one permutation, nested subsets."""
    return runs.type1.seed


def pair_kind(type_a: int, type_b: int) -> str:
    return f"{min(type_a, type_b)}-{max(type_a, type_b)}"


# --- stage 1: minima ------------------------------------------------------------------------------

def datasets(config) -> list[str]:
    """The datasets this experiment's stages read (checked by `losstopo validate`)."""
    return list(config.datasets)


def run_minima(config: ResNetLRConfig, params: Params, root: Path = ARTIFACTS) -> None:
    out_root = stage_dir(NAME, "minima", root)
    all_variants = variants(config)
    stage_params = {"data": as_dict(params.data), "model": config.model,
                    **{f"{d}.{kind}": as_dict(getattr(config.runs(d), kind)) for d in config.datasets for kind in TYPES}}
    with compute_stage(params, NAME, "minima", config.datasets, stage_params, root,
                       keep={v.key for v in all_variants}) as (data, executor, cache):
        tasks = []
        for variant in all_variants:
            runs = config.runs(variant.dataset)
            kind = f"type{variant.labels['type']}"
            cfg, seed = getattr(runs, kind), data_seed(runs)
            tasks.append(MinimaTask(variant, DataRequest(variant.dataset, cfg.train_subset, cfg.test_subset, seed), cfg,
                                    out_root / variant.key, address_parts=(kind, seed),
                                    extra={"type": kind, "data_seed": seed}))
        summary = train_variants(tasks, params, data, executor, cache, f"{NAME} minima")
        save_minima_metrics(summary, stage_dir(NAME, "minima_metrics.json", root))


# --- stage 2: paths between all pairs -------------------------------------------------------------

def _load_minima(dataset: str, root: Path) -> tuple[torch.Tensor, list[dict]]:
    """All minima of a dataset on the CPU, type 1 first: (n, d) weights and one summary per type."""
    thetas, summaries = [], []
    for kind in TYPES:
        out = stage_dir(NAME, "minima", root) / f"{dataset}-{kind}"
        thetas.append(torch.load(out / "minima.pt", map_location="cpu", weights_only=True)["thetas"])
        summaries.append(load_json(out / "minima.json")["summary"])
    return torch.cat(thetas), summaries


def _paths_task(config: ResNetLRConfig, name: str, data: DataConfig, root: Path) -> tuple[PathsTask, list[dict]]:
    """One dataset's paths between all its minima, after checking they were trained on the paths' data."""
    runs = config.runs(name)
    cfg, seed = runs.paths, data_seed(runs)
    thetas, summaries = _load_minima(name, root)
    # The minima's seed: the path subset is a prefix of the permutation their training sets come from.
    request = DataRequest(name, cfg.train_subset, 0, seed)
    source = job_dataset(data, request).source
    trained_on = {s["data_source"] for s in summaries}
    if trained_on != {source}:
        raise DataError(f"{NAME} {name}: the minima were trained on {sorted(trained_on)} but the paths "
                        f"would use {source!r}; rerun the minima stage")
    return PathsTask(name, config.model, thetas, request, cfg, seed), summaries


def run_paths(config: ResNetLRConfig, params: Params, root: Path = ARTIFACTS) -> None:
    out_root = stage_dir(NAME, "paths", root)
    metrics = {}
    logged = {"data": as_dict(params.data), **{f"{d}.paths": as_dict(config.runs(d).paths) for d in config.datasets}}
    with compute_stage(params, NAME, "paths", config.datasets, logged, root,
                       keep=set(config.datasets), inputs=["minima"]) as (data, executor, cache):
        prepared = [_paths_task(config, name, data, root) for name in config.datasets]
        tasks = [task for task, _ in prepared]
        results = optimize_variant_paths(tasks, params, data, executor, cache, f"{NAME} paths")
        for task, minima in prepared:
            dataset = job_dataset(data, task.request)
            schedule = path_schedule(task.config, len(dataset.y_train))
            record = _paths_record(config, task, minima, results[task.key], dataset, schedule["steps"])
            record["data"] = job_provenance(data, task.request).as_dict()
            save_json(record, out_root / task.key / "paths.json")
            _log_paths(record, schedule)
            metrics[task.key] = _paths_metrics(record)
        save_json(metrics, stage_dir(NAME, "paths_metrics.json", root))


def _paths_record(config: ResNetLRConfig, task: PathsTask, summaries: list[dict], result: dict, dataset,
                  steps: int) -> dict:
    """paths.json of one dataset: the merged paths of all pairs with their types and the minima's characteristics."""
    types = [int(kind[-1]) for s, kind in zip(summaries, TYPES) for _ in s["train_loss"]]
    pairs = result["pairs"]
    return {
        "dataset": task.key, "model": config.model, "data_source": dataset.source, "data_kind": dataset.source_kind,
        "data_seed": task.seed, "n_path_samples": len(dataset.y_train),
        "path_subset_nested": len(dataset.y_train) <= min(s["n_train"] for s in summaries),
        "steps": steps, "types": types,
        **{f"minima_{q}": [v for s in summaries for v in s[q]] for q in QUANTITIES},
        "minima_losses": result["minima_losses"], "pairs": pairs,
        "pair_kinds": [pair_kind(types[i], types[j]) for i, j in pairs],
        **{key: result[key] for key in ("max_loss", "argmax_position", "n_points", "endpoint_error", "positions",
                                        "dense_losses", "history", "relative_change", "orthogonal_grad_norm")},
        "converged": [bool(c <= task.config.converge_tol) for c in result["relative_change"]],
    }


def _log_paths(record: dict, schedule: dict) -> None:
    """One nested MLflow run per dataset: each path's maximum and size, and the mean interior maximum
    over training (one history entry per ``record_every`` steps)."""
    pairs = record["pairs"]
    with tracking.variant_run(record["dataset"], data_source=record["data_source"],
                              params={"n_minima": len(record["minima_losses"]), "n_paths": len(pairs),
                                      "n_path_samples": record["n_path_samples"]}):
        tracking.log_metrics({f"path_{i}_{j}_max": m for (i, j), m in zip(pairs, record["max_loss"])}
                             | {f"path_{i}_{j}_points": n for (i, j), n in zip(pairs, record["n_points"])})
        for index, values in enumerate(zip(*record["history"])):
            tracking.log_metrics({"mean_interior_max": float(np.mean(values))},
                                 step=min(index * schedule["record_every"], schedule["steps"] - 1))


def _paths_metrics(record: dict) -> dict:
    by_kind = {kind: [m for m, k in zip(record["max_loss"], record["pair_kinds"]) if k == kind]
               for kind in ("1-1", "2-2", "1-2")}
    return ({f"mean_path_max_{kind}": float(np.mean(v)) for kind, v in by_kind.items() if v}
            | {"n_paths": len(record["pairs"]), "data_source": record["data_source"]})


# --- stage 3: barcodes -----------------------------------------------------------------------------

def run_topology(config: ResNetLRConfig, params: Params, root: Path = ARTIFACTS) -> None:
    require_complete(NAME, "paths", root)
    out_root = stage_dir(NAME, "topology", root)
    prune(out_root, set(config.datasets))
    metrics = {}
    with tracking.stage_run(NAME, "topology", profile=params.profile, device="cpu",
                            params={"topology": as_dict(config.topology)}):
        for name in config.datasets:
            record = load_json(stage_dir(NAME, "paths", root) / name / "paths.json")
            losses, matrix = record["minima_losses"], path_max_matrix(record)
            bars = {method: barcode_of_minima(losses, matrix, method) for method in ("paper", "persistence")}
            chosen = bars[config.topology.method]
            lengths = segment_lengths(chosen)
            types = record["types"]
            result = {
                "dataset": name, "data_source": record["data_source"], "data_kind": record["data_kind"],
                "data": record.get("data"), "method": config.topology.method, "bars": chosen,
                "bars_paper": bars["paper"],
                "bars_persistence": bars["persistence"], "to_score": to_score(chosen),
                "to_score_persistence": to_score(bars["persistence"]), "segment_lengths": lengths, "types": types,
                "heights": [d for _, d in chosen], "test_acc": record["minima_test_acc"],
                "test_error": [1 - a for a in record["minima_test_acc"]], "train_loss": record["minima_train_loss"],
                "path_max": record["max_loss"], "pair_kinds": record["pair_kinds"], "n_points": record["n_points"],
                "n_path_samples": record["n_path_samples"], "profile": params.profile,
                "paths_converged": record.get("converged"),
            }
            out = out_root / name / "topology.json"
            save_json(result, out)
            finite = {t: [s for s, k in zip(lengths, types) if k == t and np.isfinite(s)] for t in (1, 2)}
            with tracking.variant_run(name, data_source=record["data_source"]):
                tracking.log_metrics({"to_score": result["to_score"],
                                      "to_score_persistence": result["to_score_persistence"]}
                                     | {f"bar_{k}_death": d for k, (_, d) in enumerate(chosen) if np.isfinite(d)}
                                     | {f"segment_{k}": s for k, s in enumerate(lengths) if np.isfinite(s)})
                tracking.log_artifact(out)
            metrics[name] = {"to_score": result["to_score"], "data_source": record["data_source"],
                             **{f"mean_segment_type{t}": float(np.mean(v)) for t, v in finite.items() if v}}
        save_json(metrics, stage_dir(NAME, "topology_metrics.json", root))


# --- report -----------------------------------------------------------------------------------------

def report_section(config: ResNetLRConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    section.add_text(parameter_text(config.model))
    minima_root, topology_root = stage_dir(NAME, "minima", root), stage_dir(NAME, "topology", root)
    for dataset in config.datasets:
        runs = config.runs(dataset)
        summaries = {kind: load_json(minima_root / f"{dataset}-{kind}" / "minima.json")["summary"] for kind in TYPES}
        topo = load_json(topology_root / dataset / "topology.json")
        source, kind_of_data, profile = topo["data_source"], topo["data_kind"], topo["profile"]
        n_test = summaries["type1"]["n_test"]
        test_note = accuracy_note(kind_of_data, n_test, runs.type1.test_subset)
        lines = [f"### {dataset}", f"Data: **{source}**.",
                 f"- {training_note(summaries['type1']['n_train'], runs.type1.train_subset, topo['n_path_samples'])} "
                 f"(one permutation, seed {summaries['type1']['data_seed']}: the path subset is nested in every "
                 f"minimum's training set, and both types see the same images).",
                 f"- {test_note}."]
        if kind_of_data == "synthetic":
            why = "SVHN is not available offline" if dataset == "svhn" else f"real {dataset} was not available"
            lines.append(f"- **{why}: these minima, paths and barcodes are on the labelled SYNTHETIC stand-in "
                         f"(class templates plus noise), so they say nothing about the paper's "
                         f"{PAPER_TABLE_NAMES.get(dataset, 'table')}.**")
        if dataset == "cifar10" and kind_of_data == "offline":
            lines.append("- The offline CIFAR-10 copy holds only the first 1,000 of the 10,000 official test images; "
                         "the paper's Table 1 test values are on all 10,000.")
        lines.append(f"- Training: type 1 {schedule_words(runs.type1)}; type 2 {schedule_words(runs.type2)}.")
        section.add_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
        section.add_text(f"Minima characteristics, {dataset} ({PAPER_TABLE_NAMES.get(dataset, '')}; mean ± std; "
                         f"ours: sample std over our minima):")
        minima_table(section, dataset, summaries)
        section.add_table(["pairs", "paths", "mean path max", "min path max", "points per path (after Algorithm 4)"],
                          pair_rows(topo))
        types, lengths = topo["types"], topo["segment_lengths"]
        figure = plots.grouped_segment_lengths(
            {dataset: ([s for s, t in zip(lengths, types) if t == 1], [s for s, t in zip(lengths, types) if t == 2])},
            figures / f"resnet_lr_segments_{dataset}.png",
            f"Segment lengths h_p - L(p), {dataset} (Fig. 5)", ("type 1: small LR", "type 2: annealed LR"))
        section.add_figure(figure, f"Segment lengths per minimum, {dataset}: type 1 left of the red line, "
                                   f"type 2 right (Fig. 5; {source})")
        section.add_figure(plots.barcodes({"type 1": [b for b, t in zip(topo["bars"], types) if t == 1],
                                           "type 2": [b for b, t in zip(topo["bars"], types) if t == 2]},
                                          figures / f"resnet_lr_barcodes_{dataset}.png",
                                          f"Barcode of all minima of {dataset}, split by type"),
                           f"Bars [L(p), h_p] of the joint barcode, {dataset}")
        for claim in claims(dataset, topo, summaries, source, profile, test_note):
            section.add_claim(claim)
    return section


EXPERIMENT = Experiment(NAME, ResNetLRConfig, datasets,
                        {"minima": run_minima, "paths": run_paths, "topology": run_topology},
                        report_section)
