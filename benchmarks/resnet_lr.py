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

from pathlib import Path

import numpy as np
import torch

from benchmarks.cnn_channels import accuracy_note, training_note
from losstopo.stages import (ARTIFACTS, DataRequest, MinimaTask, PathsTask, Variant, prune, compute_stage,
                             job_dataset, job_provenance, optimize_variant_paths, path_max_matrix, path_schedule,
                             converged_fraction, require_complete, save_minima_metrics, stage_dir, train_variants,
                             zero_length_bars)
from losstopo import plots, tracking
from losstopo.config import DataConfig, LRTypeRuns, Params, ResNetLRConfig, as_dict
from losstopo.errors import DataError
from losstopo.io import load_json, save_json
from losstopo.models import build_model, parameter_count
from losstopo.registry import Experiment
from losstopo.report import Claim, Section
from losstopo.evidence import NULL_DRAWS, group_null_rate, group_test, trend_null_rate, trend_test
from losstopo.topology import barcode_of_minima, segment_lengths, to_score

NAME = "resnet_lr"
TITLE = "ResNet minima of constant vs annealed learning rate (barcodes paper, section 3, Tables 1, 2, Fig. 5)"
TYPES = ("type1", "type2")
TYPE_NAMES = {"type1": "type 1 (constant small LR)", "type2": "type 2 (annealed LR)"}
QUANTITIES = ("train_loss", "test_loss", "train_acc", "test_acc")  # rows of Tables 1, 2

# The paper's minima characteristics, (mean, std) over 8 minima; accuracies in %.
PAPER_TABLES = {
    "cifar10": {  # Table 1: CIFAR10 minima characteristics
        "type1": {"train_loss": (0.009, 1e-3), "test_loss": (1.74, 0.058), "train_acc": (99.97, 0.02),
                  "test_acc": (67.41, 0.93)},
        "type2": {"train_loss": (0.002, 1e-4), "test_loss": (1.32, 0.033), "train_acc": (99.99, 0.01),
                  "test_acc": (75.74, 0.64)},
    },
    "svhn": {  # Table 2: SVHN minima characteristics
        "type1": {"train_loss": (0.008, 1e-3), "test_loss": (0.53, 0.025), "train_acc": (99.98, 0.01),
                  "test_acc": (88.12, 0.40)},
        "type2": {"train_loss": (0.001, 1e-4), "test_loss": (0.42, 0.015), "train_acc": (99.99, 0.01),
                  "test_acc": (93.29, 0.19)},
    },
}
PAPER_TABLE_NAMES = {"cifar10": "Table 1", "svhn": "Table 2"}
PAPER_PARAMETERS = "195K"  # section 3.2: "ResNet-like architecture with 195k trainable parameters, see Table 11"
IMAGE_SHAPE, N_CLASSES = (3, 32, 32), 10  # CIFAR-10 and SVHN alike


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

def _mean_std(values, scale: float = 1.0, digits: int = 4) -> str:
    values = np.asarray(values, float) * scale
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.{digits}f} ± {std:.{digits}f}"


def _paper(quantity: str, value: tuple[float, float]) -> str:
    """As printed in Tables 1, 2: losses 0.009 ± 1e-3, 1.74 ± 0.058; accuracies 67.41 ± 0.93."""
    mean, std = value
    if quantity == "train_loss":
        return f"{mean:.3f} ± {std:g}"
    if quantity == "test_loss":
        return f"{mean:.2f} ± {std:.3f}"
    return f"{mean:.2f} ± {std:.2f}"


def minima_table(section: Section, dataset: str, summaries: dict[str, dict]) -> None:
    """Tables 1 / 2: ours (mean ± sample std over our minima) beside the paper's."""
    paper = PAPER_TABLES.get(dataset)
    header = ["quantity"] + [h for kind in TYPES for h in (f"{TYPE_NAMES[kind]}: ours (n={len(summaries[kind]['train_loss'])})",
                                                           f"{TYPE_NAMES[kind]}: paper")]
    labels = {"train_loss": "train loss", "test_loss": "test loss", "train_acc": "train acc, %", "test_acc": "test acc, %"}
    rows = []
    for q in QUANTITIES:
        scale, digits = (100.0, 2) if q.endswith("acc") else (1.0, 4)
        row = [labels[q]]
        for kind in TYPES:
            row += [_mean_std(summaries[kind][q], scale, digits),
                    _paper(q, paper[kind][q]) if paper else "—"]
        rows.append(row)
    section.add_table(header, rows)


def parameter_text(model: str) -> str:
    count = parameter_count(build_model(model, IMAGE_SHAPE, N_CLASSES))
    printed = parameter_count(build_model("resnet-t11", IMAGE_SHAPE, N_CLASSES))
    code = parameter_count(build_model("resnet-t11-code", IMAGE_SHAPE, N_CLASSES))
    return (f"Model `{model}`: **{count:,} parameters**; the paper: **{PAPER_PARAMETERS}** (section 3.2, Table 11). "
            f"Table 11 as printed (`resnet-t11`) has {printed:,} parameters; the authors' code (`resnet-t11-code`) has "
            f"no convolution in x6 (the last stage goes MaxPool -> residual block) and a ReLU after each residual sum, "
            f"giving {code:,} = the paper's 195K. Both end with MaxPool, BatchNorm(64), global average pooling and "
            f"Linear(64, 10); BatchNorm normalises with the statistics of the evaluated batch, for every point on a path.")


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
        lines.append(f"- Training: type 1 {_schedule_words(runs.type1)}; type 2 {_schedule_words(runs.type2)}.")
        section.add_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
        section.add_text(f"Minima characteristics, {dataset} ({PAPER_TABLE_NAMES.get(dataset, '')}; mean ± std; "
                         f"ours: sample std over our minima):")
        minima_table(section, dataset, summaries)
        section.add_table(["pairs", "paths", "mean path max", "min path max", "points per path (after Algorithm 4)"],
                          _pair_rows(topo))
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


def _schedule_words(cfg) -> str:
    lr = (f"S({cfg.lr_max:g})" if cfg.lr_max == cfg.lr_base or cfg.m2 == 0
          else f"S({cfg.m1:g}, {cfg.m2:g}, {cfg.lr_max:g}, {cfg.lr_base:g})")
    return f"{cfg.n_minima} minima, {cfg.optimizer.upper()} momentum {cfg.momentum:g}, {lr}, {cfg.max_epochs} epochs, batch {cfg.batch_size}"


def _pair_rows(topo: dict) -> list[list]:
    rows = []
    for kind, label in (("1-1", "type 1 - type 1"), ("2-2", "type 2 - type 2"), ("1-2", "type 1 - type 2")):
        maxima = [m for m, k in zip(topo["path_max"], topo["pair_kinds"]) if k == kind]
        points = [n for n, k in zip(topo["n_points"], topo["pair_kinds"]) if k == kind]
        if maxima:
            rows.append([label, len(maxima), f"{np.mean(maxima):.4f}", f"{np.min(maxima):.4f}",
                         f"{np.min(points)}-{np.max(points)}"])
    return rows


PREMISE_MAX_LOSS = 0.05  # "near-zero" training loss of both types (our reading of Tables 1, 2)
PREMISE_MAX_GAP = 0.02  # "near-equal": the two types' mean training losses differ by at most this


def claims(dataset: str, topo: dict, summaries: dict[str, dict], source: str, profile: str,
           test_note: str) -> list[Claim]:
    """Unit: one minimum (an independent training run). Tests permute the type labels over the minima;
    the saddle tests read the one joint barcode, which is valid under that null (label exchangeability)."""
    paper = PAPER_TABLES.get(dataset)
    table = PAPER_TABLE_NAMES.get(dataset, "the paper's table")
    acc = {kind: summaries[kind]["test_acc"] for kind in TYPES}
    loss = {kind: summaries[kind]["train_loss"] for kind in TYPES}
    means = {kind: float(np.mean(loss[kind])) for kind in TYPES}
    premise_ok = max(means.values()) <= PREMISE_MAX_LOSS and abs(means["type1"] - means["type2"]) <= PREMISE_MAX_GAP
    premise = (f"near-zero, near-equal training loss of both types (both means <= {PREMISE_MAX_LOSS:g}, gap <= "
               f"{PREMISE_MAX_GAP:g}; measured {means['type1']:.4g} vs {means['type2']:.4g})")
    converged, words = converged_fraction([summaries[kind] for kind in TYPES], [topo])
    n1, n2 = len(acc["type1"]), len(acc["type2"])
    null_rate = group_null_rate(n2, n1)
    null_words = f"{n1} + {n2} i.i.d. minima (type labels exchangeable), {NULL_DRAWS} draws"
    paper_words = (f"{table}: test acc {paper['type1']['test_acc'][0]}% vs {paper['type2']['test_acc'][0]}% at train loss "
                   f"{paper['type1']['train_loss'][0]} vs {paper['type2']['train_loss'][0]}") if paper else table
    out = [Claim(
        f"Type-1 minima (constant small LR) generalise worse than type-2 (annealed) at near-equal training loss ({dataset})",
        paper_words, group_test(acc["type2"], acc["type1"], ("type 2", "type 1")), source, profile, "minimum",
        converged, null_rate, null_words, premise, premise_ok, data=summaries["type1"].get("data"),
        note=(f"{words}; test acc {100 * np.mean(acc['type1']):.2f}% vs {100 * np.mean(acc['type2']):.2f}%; "
              f"{test_note}"))]
    types = topo["types"]
    lengths = np.asarray(topo["segment_lengths"], float)
    global_min = [k for k, h in enumerate(topo["heights"]) if not np.isfinite(h)]
    out.append(Claim(
        f"Barriers h_p - L(p) of type-1 minima are higher than those of type-2 ({dataset})",
        "section 3.2, Fig. 5: loss at the saddles of type-1 minima always higher",
        group_test([h for h, t in zip(lengths, types) if t == 1], [h for h, t in zip(lengths, types) if t == 2],
                   ("type 1", "type 2")), source, profile, "minimum", converged,
        group_null_rate(sum(t == 1 for t in types) - (types[global_min[0]] == 1 if global_min else 0),
                        sum(t == 2 for t in types) - (types[global_min[0]] == 2 if global_min else 0)),
        null_words, premise, premise_ok, data=topo.get("data"),
        note=(f"{words}; joint barcode ({topo['method']}) of {len(lengths)} minima, {len(topo['path_max'])} paths; "
              f"global minimum (type {types[global_min[0]] if global_min else '?'}, infinite bar) excluded; "
              f"zero-length bars: {zero_length_bars(topo['bars'])}.")))
    errors = np.asarray(topo["test_error"], float)
    finite = np.isfinite(lengths)
    out.append(Claim(
        f"Segment length h_p - L(p) correlates with test error across all minima ({dataset})",
        "section 3: segment height is correlated with the generalisation error (Fig. 5 with Tables 1, 2)",
        trend_test(lengths[finite], errors[finite], "increasing"), source, profile, "minimum", converged,
        trend_null_rate(lengths[finite], "increasing"),
        f"test errors i.i.d. over the {int(finite.sum())} minima with a finite segment, {NULL_DRAWS} draws",
        data=topo.get("data"), note=f"{words}; {int(finite.sum())} finite segments; {test_note}"))
    return out


EXPERIMENT = Experiment(NAME, ResNetLRConfig, datasets,
                        {"minima": run_minima, "paths": run_paths, "topology": run_topology},
                        report_section)
