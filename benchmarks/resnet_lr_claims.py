"""The ResNet study's reading of the paper (section 3, Tables 1, 2, 11): the paper's minima characteristics beside
ours, the network's size beside Table 11's, and the claims tested on our minima and joint barcode."""

from __future__ import annotations

import numpy as np

from losstopo.evidence import NULL_DRAWS, group_null_rate, group_test, trend_null_rate, trend_test
from losstopo.models import build_model, parameter_count
from losstopo.report import Claim, Section
from losstopo.barcode_experiment import converged_fraction, zero_length_bars

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


def schedule_words(cfg) -> str:
    lr = (f"S({cfg.lr_max:g})" if cfg.lr_max == cfg.lr_base or cfg.m2 == 0
          else f"S({cfg.m1:g}, {cfg.m2:g}, {cfg.lr_max:g}, {cfg.lr_base:g})")
    return f"{cfg.n_minima} minima, {cfg.optimizer.upper()} momentum {cfg.momentum:g}, {lr}, {cfg.max_epochs} epochs, batch {cfg.batch_size}"


def pair_rows(topo: dict) -> list[list]:
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
