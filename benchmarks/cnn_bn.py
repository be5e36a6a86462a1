"""BatchNorm comparison: barcodes paper, section 2.2, Figure 8.

CNN-1/2/3 with BatchNorm before each activation, against the same networks without it. Only the
-bn networks are trained here; their counterparts without BatchNorm are cnn_channels' networks
(``artifacts/cnn_channels``), so both experiments should run under the same profile and data.
Claim: with BatchNorm both the minima losses L(p) and the saddle heights h_p are lower, at every depth.

BatchNorm layers normalise with the statistics of the evaluated batch, recomputed for every
parameter vector on a path (see :mod:`losstopo.stacked`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from benchmarks import cnn_channels
from benchmarks.cnn_channels import cnn_variant, display_name, load_row, network_table, training_note
from benchmarks.stages import ARTIFACTS, Variant, stage_dir
from losstopo import plots
from losstopo.config import ModelSweepConfig
from losstopo.errors import ConfigError
from losstopo.report import Claim, Section
from losstopo.stats import group_test, holm, verdict

EXPERIMENT = "cnn_bn"
COUNTERPARTS = cnn_channels.EXPERIMENT
TITLE = "BatchNorm and CNN barcodes on CIFAR-10 (barcodes paper, section 2.2, Fig. 8)"
QUANTITIES = {"minima_losses": "minima losses L(p)", "heights": "saddle heights h_p"}


def variants(config: ModelSweepConfig) -> list[Variant]:
    plain = [m for m in config.models if not m.endswith("-bn")]
    if plain:
        raise ConfigError(f"cnn_bn.models must be -bn networks (their counterparts come from cnn_channels), "
                          f"got {', '.join(plain)}")
    return [cnn_variant(dataset, model) for dataset in config.datasets for model in config.models]


def counterpart(variant: Variant) -> Variant:
    """The same network without BatchNorm, trained by cnn_channels."""
    return cnn_variant(variant.dataset, variant.model.removesuffix("-bn"))


def bn_comparison(config: ModelSweepConfig, root: Path = ARTIFACTS) -> tuple[list[dict], list[str]]:
    """Per network pair: rows without / with BN and one-sided Mann-Whitney tests (no BN > BN) of the
    minima losses and the saddle heights, with Holm-adjusted p-values over all tests of a dataset.

    Returns the comparisons and notes on pairs that could not be made (counterpart missing).
    """
    comparisons, missing = [], []
    for dataset in config.datasets:
        tests = []
        for variant in (v for v in variants(config) if v.dataset == dataset):
            plain = counterpart(variant)
            if not (stage_dir(COUNTERPARTS, "topology", root) / plain.key / "topology.json").is_file():
                missing.append(f"{display_name(variant)}: no {plain.key} in {stage_dir(COUNTERPARTS, 'topology', root)} "
                               f"(add {plain.model} to cnn_channels.models and run its stages)")
                continue
            pair = {"dataset": dataset, "plain": load_row(COUNTERPARTS, plain, root),
                    "bn": load_row(EXPERIMENT, variant, root), "tests": {}}
            for key in QUANTITIES:
                pair["tests"][key] = {"raw": group_test(pair["plain"][key], pair["bn"][key], ("no BN", "BN"))}
                tests.append(pair["tests"][key])
            comparisons.append(pair)
        for test, adjusted in zip(tests, holm([t["raw"].p_value for t in tests])):
            test["holm_p"] = adjusted
            test["adjusted"] = dataclasses.replace(test["raw"], p_value=adjusted,
                                                   test=f"{test['raw'].test}, Holm over {len(tests)}")
    return comparisons, missing


def _comparability(plain: dict, bn: dict) -> list[str]:
    notes = []
    if plain["topology"]["profile"] != bn["topology"]["profile"]:
        notes.append(f"profiles differ ({plain['topology']['profile']} vs {bn['topology']['profile']})")
    if plain["summary"]["data_source"] != bn["summary"]["data_source"]:
        notes.append("data sources differ")
    if len(plain["bars"]) != len(bn["bars"]):
        notes.append(f"numbers of minima differ ({len(plain['bars'])} vs {len(bn['bars'])})")
    return notes


def report_section(config: ModelSweepConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    section.add_text(
        "Networks with BatchNorm before each activation against the same networks without it (read from "
        "`artifacts/cnn_channels`). Minima losses are the births L(p) of the bars (loss of each minimum on the "
        "path subset), saddle heights the finite deaths h_p. BatchNorm normalises with the statistics of the "
        "evaluated batch, recomputed for every parameter vector on a path (`losstopo.stacked`). Tests: one-sided "
        "Mann-Whitney U (no BN > BN) per depth and quantity, p-values Holm-adjusted over all tests of a dataset.")
    comparisons, missing = bn_comparison(config, root)
    if missing:
        section.add_text("**Missing counterparts, not compared:**\n\n" + "\n".join(f"- {m}" for m in missing))
    for dataset in config.datasets:
        pairs = sorted([p for p in comparisons if p["dataset"] == dataset],
                       key=lambda p: p["bn"]["variant"].labels["conv_layers"])
        if not pairs:
            continue
        rows = [row for p in pairs for row in (p["plain"], p["bn"])]
        source, profile = cnn_channels.claim_source(rows), cnn_channels.claim_profile(rows)
        section.add_text(f"### {dataset}\n\nData: **{source}**; "
                         + training_note(pairs[0]["bn"]["summary"]["data_source"], config.minima.train_subset,
                                         config.paths.train_subset) + f" (BN networks). Profile: {profile}.")
        extra = [f"- {display_name(p['bn']['variant'])} vs {display_name(p['plain']['variant'])}: {', '.join(notes)}"
                 for p in pairs if (notes := _comparability(p["plain"], p["bn"]))]
        network_table(section, rows, config.minima.test_subset, extra)
        section.add_figure(
            plots.barcode_grid(
                {"without BatchNorm": {display_name(p["plain"]["variant"]): p["plain"]["bars"] for p in pairs},
                 "with BatchNorm": {display_name(p["bn"]["variant"]): p["bn"]["bars"] for p in pairs}},
                figures / f"cnn_bn_barcodes_{dataset}.png", f"Barcodes without / with BatchNorm, {dataset} (Fig. 8)"),
            f"Barcodes without (top) and with (bottom) BatchNorm, {dataset} (Fig. 8)")
        section.add_figure(
            plots.grouped_points(
                {label: {f"CNN-{p['bn']['variant'].labels['conv_layers']}": {"no BN": p["plain"][key], "BN": p["bn"][key]}
                         for p in pairs} for key, label in QUANTITIES.items()},
                figures / f"cnn_bn_losses_{dataset}.png", f"Minima losses and saddle heights, {dataset} (Fig. 8)"),
            f"Minima losses and saddle heights without / with BatchNorm, means as bars, {dataset} (Fig. 8)")
        for p in pairs:
            depth = p["bn"]["variant"].labels["conv_layers"]
            for key, label in QUANTITIES.items():
                test = p["tests"][key]
                a, b = p["plain"][key], p["bn"][key]
                section.add_claim(Claim(
                    f"BatchNorm lowers the {label} of CNN-{depth} ({dataset})",
                    "Fig. 8: with BN both minima and saddle points are lower at every depth, clearest for CNN-3",
                    test["adjusted"], verdict(test["adjusted"]), source, profile,
                    note=(f"{display_name(p['plain']['variant'])} vs {display_name(p['bn']['variant'])}; raw p="
                          f"{test['raw'].p_value:.3g}, Holm-adjusted p={test['holm_p']:.3g}; n={len(a)} vs {len(b)}; "
                          f"medians {np.median(a) if a else float('nan'):.4f} vs {np.median(b) if b else float('nan'):.4f}")))
    return section
