"""The report's tables: the minima beside the paper's Table 3 / Table 14, the triangles per regime (Fig. 15, 16)
and the robustness of each minimum's bar (Fig. 7), and the number formats they and the claims share."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.cnn_channels import accuracy_note
from losstopo.data import source_label
from losstopo.report import Section

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


def _mean_std(values, scale: float = 1.0, digits: int = 4) -> str:
    values = np.asarray(values, float) * scale
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.{digits}f} ± {std:.{digits}f}"


def fmt(value, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def percent(fraction: float) -> str:
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
                         percent(float(np.mean(tri["converged"]))) if "converged" in tri else ""]
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
                "—" if row["n"] == 0 else f"{row['mean']:.4f} ± {row['std']:.4f}", fmt(row["cv"], 3), row["n"]]
        for entry in robust["per_size"]:
            cell = entry["minima"][p]
            line.append("—" if cell["n"] == 0 else f"{cell['mean']:.4f} ± {cell['std']:.4f} ({cell['n']})")
        rows.append(line)
    section.add_table(header, rows)
