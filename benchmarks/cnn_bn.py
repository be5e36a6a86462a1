"""BatchNorm comparison: barcodes paper, section 2.2, Figure 8.

CNN-1/2/3 with BatchNorm before each activation, against the same networks without it. Only the
-bn networks are trained here; their counterparts without BatchNorm are cnn_channels' networks
(``artifacts/cnn_channels``), so both experiments should run under the same profile and data.
Claim: with BatchNorm both the minima losses L(p) and the saddle heights h_p are lower, at every depth.

BatchNorm layers normalise with the statistics of the evaluated batch, recomputed for every
parameter vector on a path (see :mod:`losstopo.stacked`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import cnn_channels
from benchmarks import path_methods
from benchmarks.cnn_channels import ModelSweepConfig, cnn_variant, display_name, load_row, network_table, training_note
from losstopo.barcode_experiment import (barcode_stages, converged_fraction, mean_bar_length, variant_datasets,
                                         zero_length_bars)
from losstopo.minima_stage import Variant
from losstopo.stage_frame import ARTIFACTS, stage_dir
from losstopo import plots
from losstopo.errors import ConfigError
from losstopo.registry import Experiment
from losstopo.provenance import claim_data
from losstopo.report import Claim, Section
from losstopo.evidence import NULL_DRAWS, group_null_rate, group_test

NAME = "cnn_bn"
COUNTERPARTS = cnn_channels.NAME
TITLE = "BatchNorm and CNN barcodes on CIFAR-10 (barcodes paper, section 2.2, Fig. 8)"
QUANTITIES = {"minima_losses": "minima losses L(p)", "heights": "saddle heights h_p"}  # the figure's panels


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
    """Per network pair: rows without / with BN. Returns the comparisons and notes on pairs that could
    not be made (counterpart missing)."""
    comparisons, missing = [], []
    for dataset in config.datasets:
        for variant in (v for v in variants(config) if v.dataset == dataset):
            plain = counterpart(variant)
            if not (stage_dir(COUNTERPARTS, "topology", root) / plain.key / "topology.json").is_file():
                missing.append(f"{display_name(variant)}: no {plain.key} in {stage_dir(COUNTERPARTS, 'topology', root)} "
                               f"(add {plain.model} to cnn_channels.models and run its stages)")
                continue
            comparisons.append({"dataset": dataset, "plain": load_row(COUNTERPARTS, plain, root),
                                "bn": load_row(NAME, variant, root)})
    return comparisons, missing


def bn_claims(pair: dict, dataset: str, source: str, profile: str) -> list[Claim]:
    """Minima losses: one value per minimum (independent training runs), labels permuted over minima.
    Barriers: one value per network (the mean bar length of its barcode), so one network against one."""
    depth = pair["bn"]["variant"].labels["conv_layers"]
    plain, bn = pair["plain"], pair["bn"]
    names = f"{display_name(plain['variant'])} vs {display_name(bn['variant'])}"
    paper = "Fig. 8: with BN both minima and saddle points are lower at every depth, clearest for CNN-3"
    minima_converged = float(np.mean(plain["summary"]["converged"] + bn["summary"]["converged"]))
    a, b = plain["minima_losses"], bn["minima_losses"]
    claims = [Claim(f"BatchNorm lowers the minima losses L(p) of CNN-{depth} ({dataset})", paper,
                    group_test(a, b, ("no BN", "BN")), source, profile, "minimum", minima_converged,
                    group_null_rate(len(a), len(b)), f"{len(a)} + {len(b)} i.i.d. minima, {NULL_DRAWS} draws",
                    data=claim_data([plain["summary"], bn["summary"]]),
                    note=f"{names}; medians {np.median(a):.4f} vs {np.median(b):.4f}.")]
    converged, words = converged_fraction([plain["summary"], bn["summary"]], [plain["topology"], bn["topology"]])
    lengths = [mean_bar_length(plain["bars"]), mean_bar_length(bn["bars"])]
    claims.append(Claim(f"BatchNorm lowers the barriers h_p - L(p) of CNN-{depth} ({dataset})", paper,
                        group_test(lengths[:1], lengths[1:], ("no BN", "BN")), source, profile, "network", converged,
                        group_null_rate(1, 1), f"1 + 1 i.i.d. networks, {NULL_DRAWS} draws",
                        data=claim_data([plain["topology"], bn["topology"]]),
                        note=f"{names}; {words}; mean bar lengths {lengths[0]:.4g} vs {lengths[1]:.4g}; zero-length "
                             f"bars {zero_length_bars(plain['bars'])} vs {zero_length_bars(bn['bars'])}."))
    return claims


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
        "evaluated batch, recomputed for every parameter vector on a path (`losstopo.stacked`). Tests: permutation "
        "tests of Mann-Whitney U (no BN > BN) per depth: minima losses over minima, barriers over networks.")
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
                         + training_note(pairs[0]["bn"]["summary"]["n_train"], config.minima.train_subset,
                                         config.paths.train_subset) + f" (BN networks). Profile: {profile}.")
        extra = [f"- {display_name(p['bn']['variant'])} vs {display_name(p['plain']['variant'])}: {', '.join(notes)}"
                 for p in pairs if (notes := _comparability(p["plain"], p["bn"]))]
        network_table(section, rows, config.minima.test_subset, extra)
        bn_rows = [p["bn"] for p in pairs]  # the BN networks are this experiment's; the others cnn_channels'
        path_methods.add_if_compared(section, NAME, [r["variant"].key for r in bn_rows],
                                     [r["topology"] for r in bn_rows], figures, dataset, root=root)
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
            for claim in bn_claims(p, dataset, source, profile):
                section.add_claim(claim)
    return section


EXPERIMENT = Experiment(NAME, ModelSweepConfig, variant_datasets(variants), barcode_stages(NAME, variants),
                        report_section)
