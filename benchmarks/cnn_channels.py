"""CNN channel/layer sweep: barcodes paper, section 2.2, Figure 4, Appendix B (Tables 8-10).

CNN-1-32/64/128, CNN-2-32/64 and CNN-3-32 on CIFAR-10; minima trained with Adam + cyclical LR,
every pair joined by an Algorithm 3 path. Claims: saddle heights h_p drop as the channels of one
convolution grow (Fig. 4a), and drop with the parameter count across all six networks, faster when
a layer is added than when channels are (Fig. 4b).

The helpers here (variant labels, rows, data notes, tables) are shared with :mod:`benchmarks.cnn_bn`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from losstopo.barcode_experiment import (barcode_stages, converged_fraction, mean_bar_length, variant_datasets,
                                         zero_length_bars)
from losstopo.minima_stage import Variant
from losstopo.stage_frame import ARTIFACTS, stage_dir
from losstopo.topology_stage import load_topology
from benchmarks import path_methods
from losstopo import plots
from losstopo.config import BarcodeStudyConfig, require, require_distinct
from losstopo.data import REGISTRY
from losstopo.errors import ConfigError
from losstopo.io import load_json
from losstopo.models import build_model, parameter_count
from losstopo.registry import Experiment
from losstopo.provenance import claim_data
from losstopo.report import Claim, Section
from losstopo.evidence import (NULL_DRAWS, linear_null_rate, linear_statistic_test, trend_null_rate,
                               trend_test)
from losstopo.stats import theil_sen_slope

NAME = "cnn_channels"
TITLE = "CNN channels and layers on CIFAR-10 (barcodes paper, section 2.2, Fig. 4)"
CNN_NAME = re.compile(r"cnn-(?P<layers>\d+)-(?P<channels>\d+)(?P<bn>-bn)?\Z")


@dataclass(frozen=True)
class ModelSweepConfig(BarcodeStudyConfig):
    """A barcode experiment over named architectures (barcodes paper, section 2.2)."""

    datasets: list[str] = field(default_factory=lambda: ["cifar10"])
    models: list[str] = field(default_factory=list)

    def validate(self, where: str) -> None:
        super().validate(where)
        require(len(self.models) >= 2, where, "models", "needs at least two architectures to compare")
        require_distinct(self.models, where, "models")
        require_distinct(self.datasets, where, "datasets")


def cnn_labels(dataset: str, model: str) -> dict:
    match = CNN_NAME.match(model)
    if match is None:
        raise ConfigError(f"{model!r} is not a cnn-K-C[-bn] model name")
    if dataset not in REGISTRY:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[dataset]
    return {"conv_layers": int(match["layers"]), "channels": int(match["channels"]), "batch_norm": bool(match["bn"]),
            "parameters": parameter_count(build_model(model, spec.image_shape, spec.n_classes))}


def cnn_variant(dataset: str, model: str) -> Variant:
    return Variant(f"{dataset}-{model}", dataset, model, cnn_labels(dataset, model))


def variants(config: ModelSweepConfig) -> list[Variant]:
    return [cnn_variant(dataset, model) for dataset in config.datasets for model in config.models]


def load_row(experiment: str, variant: Variant, root: Path) -> dict:
    """What the report needs of one network: its labels, minima summary, topology record and h_p."""
    summary = load_json(stage_dir(experiment, "minima", root) / variant.key / "minima.json")["summary"]
    topology = load_topology(experiment, variant.key, root)
    bars = [(float(b), float(d)) for b, d in topology["bars"]]
    return {"variant": variant, "summary": summary, "topology": topology, "bars": bars,
            "minima_losses": [b for b, _ in bars], "heights": [d for _, d in bars if np.isfinite(d)]}


def display_name(variant: Variant) -> str:
    return variant.model.upper()


def accuracy_note(data_kind: str, n_test: int, test_subset: int | None) -> str:
    """Which images a test accuracy was measured on, in words, from the record's counts (the minima's ``n_test``:
    the offline CIFAR-10 has only 1,000); ``test_subset`` None: all test images of the source were used."""
    if data_kind == "offline":
        return f"test accuracy on {'the ' if test_subset is None else ''}{n_test:,} test images of the offline copy"
    if data_kind == "offline-partial":
        return "test accuracy on held-out training images of a partial offline copy, not on the official test set"
    if data_kind == "synthetic":
        return "test accuracy on a SYNTHETIC stand-in; it says nothing about the real dataset"
    return ("test accuracy on the official test set" if test_subset is None else
            f"test accuracy on {n_test:,} images of the official test set")


def training_note(n_train: int, train_subset: int | None, path_subset: int | None) -> str:
    """Which images the minima trained on and the paths were measured on, from the record's count ``n_train``."""
    everything = "all " if train_subset is None or train_subset >= n_train else ""
    paths = f"all {n_train:,}" if path_subset is None or path_subset >= n_train else f"{path_subset:,}"
    return (f"minima trained on {everything}{n_train:,} training images; minima losses L(p) and path maxima "
            f"(saddle heights h_p) measured on {paths} of them")


def data_notes(rows: list[dict], test_subset: int | None) -> str:
    """One line per distinct data source: where the data came from and what the test accuracy means."""
    seen = {}
    for row in rows:
        s = row["summary"]
        seen.setdefault((s["data_kind"], s["data_source"], s["n_test"]), None)
    return "\n".join(f"- † data: **{source}**; {accuracy_note(kind, n_test, test_subset)}."
                      for kind, source, n_test in seen)


def network_table(section: Section, rows: list[dict], test_subset: int | None, extra: list[str] | None = None) -> None:
    header = ["network", "conv layers", "channels", "BatchNorm", "parameters", "train loss (mean)",
              "test acc (mean)†", "converged", "TO-score", "mean L(p)", "mean h_p", "finite bars"]
    table = []
    for row in rows:
        labels, s, t = row["variant"].labels, row["summary"], row["topology"]
        table.append([display_name(row["variant"]), labels["conv_layers"], labels["channels"],
                      "yes" if labels["batch_norm"] else "no", f"{labels['parameters']:,}",
                      f"{np.mean(s['train_loss']):.4f}", f"{np.mean(s['test_acc']):.4f}",
                      f"{sum(s['converged'])}/{len(s['converged'])}", f"{t['to_score']:.4f}",
                      f"{np.mean(row['minima_losses']):.4f}",
                      f"{np.mean(row['heights']):.4f}" if row["heights"] else "n/a", len(row["heights"])])
    section.add_table(header, table)
    section.add_text(data_notes(rows, test_subset) + ("\n" + "\n".join(extra) if extra else ""))


def claim_source(rows: list[dict]) -> str:
    return "; ".join(dict.fromkeys(row["topology"]["data_source"] for row in rows))


def claim_profile(rows: list[dict]) -> str:
    return ", ".join(dict.fromkeys(str(row["topology"]["profile"]) for row in rows))


def family_slopes(rows: list[dict]) -> tuple[dict[int, float | None], dict[int, float | None]]:
    """Theil-Sen slopes of h_p vs log10(parameters): within each family (same number of conv layers,
    channels vary) and across families at fixed channels (a layer added). None: fewer than 2 networks."""

    def slope(group: list[dict]) -> float | None:
        x = [np.log10(r["variant"].labels["parameters"]) for r in group for _ in r["heights"]]
        y = [h for r in group for h in r["heights"]]
        return theil_sen_slope(x, y) if len({r["variant"].labels["parameters"] for r in group if r["heights"]}) >= 2 \
            else None

    by_layers, by_channels = defaultdict(list), defaultdict(list)
    for row in rows:
        by_layers[row["variant"].labels["conv_layers"]].append(row)
        by_channels[row["variant"].labels["channels"]].append(row)
    return ({k: slope(g) for k, g in sorted(by_layers.items())},
            {c: slope(g) for c, g in sorted(by_channels.items())
             if len({r["variant"].labels["conv_layers"] for r in g}) >= 2})


def network_trend_claim(name: str, paper_words: str, rows: list[dict], x: list[float], source: str,
                        profile: str) -> Claim:
    """A trend over networks (one value each: the mean bar length h_p - L(p) of its barcode), tested by
    permuting whole networks over x."""
    lengths = [mean_bar_length(r["bars"]) for r in rows]
    converged, words = converged_fraction([r["summary"] for r in rows], [r["topology"] for r in rows])
    zero = ", ".join(f"{display_name(r['variant'])} {zero_length_bars(r['bars'])}/{len(r['bars']) - 1}" for r in rows)
    return Claim(name, paper_words, trend_test(x, lengths, "decreasing"), source, profile, "network", converged,
                 trend_null_rate(x), f"per-network values i.i.d. (exchangeable over the {len(x)} networks), "
                 f"{NULL_DRAWS} draws", data=claim_data(r["topology"] for r in rows),
                 note=f"{words}; zero-length bars (h_p = L(p)) per network: {zero}; mean bar length per network: "
                      + ", ".join(f"{v:.4g}" for v in lengths) + ".")


def slope_weights(rows: list[dict], by: str) -> np.ndarray:
    """w with w . v = the mean over groups (rows sharing the label ``by``, at least two parameter counts)
    of the least-squares slope of v against log10(parameters) within the group; 0 where no group."""
    x = np.log10([r["variant"].labels["parameters"] for r in rows])
    groups = defaultdict(list)
    for n, r in enumerate(rows):
        groups[r["variant"].labels[by]].append(n)
    groups = [g for g in groups.values() if np.ptp(x[g]) > 0]
    weights = np.zeros(len(rows))
    for g in groups:
        centred = x[g] - x[g].mean()
        weights[g] += centred / (centred @ centred) / len(groups)
    return weights


def interaction_claim(rows: list[dict], dataset: str, source: str, profile: str) -> Claim | None:
    """Fig. 4b: h_p - L(p) falls faster with parameters when a conv layer is added (slope across families at
    fixed channels) than when the channels of one layer grow (slope within a family). None: the networks
    leave one of the two slopes undefined."""
    across, within = slope_weights(rows, "channels"), slope_weights(rows, "conv_layers")
    if not across.any() or not within.any():
        return None
    weights = across - within
    lengths = [mean_bar_length(r["bars"]) for r in rows]
    converged, words = converged_fraction([r["summary"] for r in rows], [r["topology"] for r in rows])
    return Claim(
        f"Barriers fall faster with parameters when a conv layer is added than when channels grow ({dataset})",
        "Fig. 4b: 'the decrease is more rapid when a convolutional layer is added'",
        linear_statistic_test(lengths, weights, "permutation test of slope(across families) - slope(within "
                              "families) of h_p - L(p) vs log10(parameters), one-sided (< 0)", "slope difference"),
        source, profile, "network", converged, linear_null_rate(weights),
        f"per-network values i.i.d. over the {len(rows)} networks, {NULL_DRAWS} draws",
        data=claim_data(r["topology"] for r in rows),
        note=f"{words}; slopes are least-squares, averaged over the families (within) and over the channel "
             f"counts with two or more layer counts (across).")


def _fmt_slope(value: float | None) -> str:
    return "n/a (one network)" if value is None else f"{value:.4g}"


def report_section(config: ModelSweepConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    section.add_text(
        "CNN-K-C: K convolutions (5x5) of C channels, max-pooling to 4x4, one linear layer (Tables 8-10; "
        "CNN-3 keeps C channels in every layer). h_p is the height of the bar of minimum p: the lowest "
        "maximum of the loss over the optimised paths to lower minima (Algorithm 1).")
    for dataset in config.datasets:
        rows = sorted([load_row(NAME, v, root) for v in variants(config) if v.dataset == dataset],
                      key=lambda r: r["variant"].labels["parameters"])
        source, profile = claim_source(rows), claim_profile(rows)
        section.add_text(f"### {dataset}\n\nData: **{source}**; "
                         + training_note(rows[0]["summary"]["n_train"], config.minima.train_subset,
                                         config.paths.train_subset) + f". Profile: {profile}.")
        network_table(section, rows, config.minima.test_subset)
        path_methods.add_if_compared(section, NAME, [r["variant"].key for r in rows],
                                     [r["topology"] for r in rows], figures, dataset, root=root)

        # Fig. 4a: one convolution, more channels.
        single = sorted([r for r in rows if r["variant"].labels["conv_layers"] == 1
                         and not r["variant"].labels["batch_norm"]], key=lambda r: r["variant"].labels["channels"])
        if len({r["variant"].labels["channels"] for r in single}) >= 2:
            section.add_figure(
                plots.barcodes({f"{display_name(r['variant'])}": r["bars"] for r in single},
                               figures / f"cnn_channels_barcodes_channels_{dataset}.png",
                               f"Barcodes, one conv layer, {dataset} (Fig. 4a)"),
                f"Barcodes of CNN-1-C as C grows, {dataset} (Fig. 4a)")
            channels = [r["variant"].labels["channels"] for r in single for _ in r["heights"]]
            heights = [h for r in single for h in r["heights"]]
            section.add_figure(
                plots.points_trend({"CNN-1": (channels, heights)},
                                   figures / f"cnn_channels_heights_vs_channels_{dataset}.png",
                                   f"Saddle heights h_p vs channels, {dataset} (Fig. 4a)", "channels (log scale)",
                                   "h_p", log_x=True),
                f"Saddle heights of every minimum of CNN-1-C, line through the means, {dataset} (Fig. 4a)")
            section.add_claim(network_trend_claim(
                f"Barriers h_p - L(p) decrease as channels grow in one conv layer ({dataset})",
                "Fig. 4a: monotonic decrease of h_p over CNN-1-32/64/128", single,
                [r["variant"].labels["channels"] for r in single], source, profile))
        else:
            section.add_text(f"No channel claim for {dataset}: fewer than two CNN-1 widths in `cnn_channels.models`.")

        # Fig. 4b: all networks by parameter count.
        section.add_figure(
            plots.barcodes({f"{display_name(r['variant'])}\n{r['variant'].labels['parameters']:,} p.": r["bars"]
                            for r in rows},
                           figures / f"cnn_channels_barcodes_parameters_{dataset}.png",
                           f"Barcodes sorted by parameter count, {dataset} (Fig. 4b)"),
            f"Barcodes of all networks sorted by parameter count, {dataset} (Fig. 4b)")
        by_family = defaultdict(lambda: ([], []))
        for r in rows:
            xs, ys = by_family[f"{r['variant'].labels['conv_layers']} conv layer(s)"]
            xs += [r["variant"].labels["parameters"]] * len(r["heights"])
            ys += r["heights"]
        section.add_figure(
            plots.points_trend(dict(by_family), figures / f"cnn_channels_heights_vs_parameters_{dataset}.png",
                               f"Saddle heights h_p vs parameters, {dataset} (Fig. 4b)", "parameters (log scale)",
                               "h_p", log_x=True),
            f"Saddle heights vs parameter count, one colour per number of conv layers, {dataset} (Fig. 4b)")
        within, across = family_slopes(rows)
        slope_note = ("Theil-Sen slope of h_p vs log10(parameters), within each family (channels grow): "
                      + "; ".join(f"{k} conv layer(s): {_fmt_slope(s)}" for k, s in within.items())
                      + ". Across families at fixed channels (a layer added): "
                      + ("; ".join(f"C={c}: {_fmt_slope(s)}" for c, s in across.items()) or "n/a")
                      + ". 'More steeply when a layer is added' = the across-family slope is more negative than "
                        "the within-family ones (tested below as a difference of slopes).")
        section.add_claim(network_trend_claim(
            f"Barriers h_p - L(p) decrease with parameter count across all {len(rows)} networks ({dataset})",
            "Fig. 4b: h_p drops with parameters, more rapidly when a conv layer is added", rows,
            [r["variant"].labels["parameters"] for r in rows], source, profile))
        interaction = interaction_claim(rows, dataset, source, profile)
        if interaction is not None:
            section.add_claim(interaction)
        section.add_text(slope_note)
    return section


EXPERIMENT = Experiment(NAME, ModelSweepConfig, variant_datasets(variants), barcode_stages(NAME, variants),
                        report_section)
