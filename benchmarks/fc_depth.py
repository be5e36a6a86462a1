"""FC depth sweep: barcodes paper, section 2.1, Figures 2 and 3, Appendix H (Figure 13).

Fully connected ReLU networks with 2, 3, 4, 6 and 8 hidden layers of 32 units on MNIST and
Fashion-MNIST; ten minima each (Adam + cyclical LR), every pair joined by an Algorithm 3 path.
Claim: barcodes and the TO-score get lower as the network gets deeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import path_methods
from losstopo.barcode_experiment import barcode_stages, converged_fraction, variant_datasets, zero_length_bars
from losstopo.minima_stage import Variant
from losstopo.stage_frame import ARTIFACTS, stage_dir
from losstopo.topology_stage import load_topology
from losstopo import plots
from losstopo.config import BarcodeStudyConfig, require, require_distinct, require_positive
from losstopo.data import title_caveat
from losstopo.io import load_json
from losstopo.registry import Experiment
from losstopo.provenance import claim_data
from losstopo.report import Claim, Section
from losstopo.evidence import NULL_DRAWS, at_resolution, trend_null_rate, trend_test
from losstopo.stats import theil_sen_slope

NAME = "fc_depth"
TITLE = "FC depth sweep (barcodes paper, Fig. 2, 3, 13)"


@dataclass(frozen=True)
class FCDepthConfig(BarcodeStudyConfig):
    datasets: list[str] = field(default_factory=lambda: ["mnist", "fashion_mnist"])
    depths: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    width: int = 32
    replicates: int = 1  # independent sets of minima per depth (seeds offset by REPLICATE_SEED_STRIDE)

    def validate(self, where: str) -> None:
        super().validate(where)
        require(len(self.depths) >= 2, where, "depths", "a depth trend needs at least two depths")
        require_distinct(self.depths, where, "depths")
        require(min(self.depths) >= 1, where, "depths", "must all be >= 1 (hidden layers)")
        require_distinct(self.datasets, where, "datasets")
        require_positive(self, where, "width")
        require(self.replicates >= 1, where, "replicates", "must be >= 1")


def variants(config: FCDepthConfig) -> list[Variant]:
    """One variant per dataset, depth and replicate; replicate r > 0 is an independent set of minima
    (its own seeds) under the key suffix ``-r<r>``, so that the depth trend has replicated networks."""
    return [Variant(f"{dataset}-fc-{depth}-{config.width}" + (f"-r{r}" if r else ""), dataset,
                    f"fc-{depth}-{config.width}", {"depth": depth, "width": config.width, "replicate": r},
                    replicate=r)
            for dataset in config.datasets for depth in config.depths for r in range(config.replicates)]


def report_section(config: FCDepthConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    section.add_text(
        "Unit of analysis: one **set of minima** (one barcode) per depth and replicate; replicates are "
        "independent sets of minima (their own seeds). The depth trends are permutation tests that move whole "
        "sets across depths; the bars of one barcode are never counted as independent samples.")
    minima_root = stage_dir(NAME, "minima", root)
    for dataset in config.datasets:
        rows = [(v, load_topology(NAME, v.key, root),
                 load_json(minima_root / v.key / "minima.json")["summary"])
                for v in variants(config) if v.dataset == dataset]
        depths = [v.labels["depth"] for v, _, _ in rows]
        source, profile = rows[0][1]["data_source"], rows[0][1]["profile"]
        caveat = title_caveat(rows[0][1]["data_kind"], dataset)
        section.add_text(f"### {dataset}\n\nData: **{source}**.")
        section.add_table(
            ["depth", "replicate", "train loss (mean)", "test acc (mean)", "minima converged", "paths converged",
             "TO-score", "TO-score (persistence)", "zero-length bars", "mean path max", "mean straight-segment max"],
            [[d, v.replicate, f"{np.mean(m['train_loss']):.4f}", f"{np.mean(m['test_acc']):.4f}",
              f"{sum(m['converged'])}/{len(m['converged'])}",
              "not recorded" if t.get("paths_converged") is None
              else f"{sum(t['paths_converged'])}/{len(t['paths_converged'])}",
              f"{t['to_score']:.4f}", f"{t['to_score_persistence']:.4f}",
              f"{zero_length_bars(t['bars'])}/{len(t['bars']) - 1}", f"{np.mean(t['path_max']):.4f}",
              f"{np.mean(t['straight_max']):.4f}"]
             for d, (v, t, m) in zip(depths, rows)],
        )
        path_methods.add_if_compared(section, NAME, [v.key for v, _, _ in rows], [t for _, t, _ in rows],
                                     figures, dataset, caveat, root)
        first = [(d, t) for d, (v, t, _) in zip(depths, rows) if not v.replicate]
        section.add_figure(plots.barcodes({f"{d} layers": t["bars"] for d, t in first},
                                          figures / f"fc_depth_barcodes_{dataset}.png",
                                          f"Barcodes of minima, {dataset} (Fig. 2){caveat}"), f"Barcodes, {dataset} (Fig. 2)")
        to_scores = [t["to_score"] for _, t, _ in rows]
        by_replicate = {f"replicate {r}": ([d for d, (v, _, _) in zip(depths, rows) if v.replicate == r],
                                           [s for s, (v, _, _) in zip(to_scores, rows) if v.replicate == r])
                        for r in range(config.replicates)}
        section.add_figure(plots.trend(by_replicate, figures / f"fc_depth_to_score_{dataset}.png",
                                       f"TO-score vs depth, {dataset} (Fig. 3){caveat}", "hidden layers", "TO-score"),
                           f"TO-score vs depth, {dataset}, one line per replicate (Fig. 3)")
        section.add_figure(plots.trend({dataset: (depths, [np.mean(t["path_max"]) for _, t, _ in rows])},
                                       figures / f"fc_depth_path_max_{dataset}.png",
                                       f"Path maxima, mean ± std, {dataset} (Fig. 13){caveat}", "hidden layers", "max loss on path",
                                       errors={dataset: [np.std(t["path_max"]) for _, t, _ in rows]}),
                           f"Error bars of path maxima, {dataset} (Fig. 13)")
        converged, convergence_words = converged_fraction([m for _, _, m in rows], [t for _, t, _ in rows])
        null = trend_null_rate(depths)
        null_words = (f"per-set values i.i.d. (exchangeable over depths) at this design ({len(depths)} sets, "
                      f"{config.replicates} per depth), {NULL_DRAWS} draws")
        heights = [float(np.mean([death for _, death in t["bars"] if np.isfinite(death)])) for _, t, _ in rows]
        lengths = [float(np.mean([death - birth for birth, death in t["bars"] if np.isfinite(death)]))
                   for _, t, _ in rows]
        for name, evidence_words, values in (
                (f"TO-score decreases with depth ({dataset})", "Fig. 3: monotone decrease over 2-8 layers", to_scores),
                (f"Saddle heights h_p (mean per set of minima) decrease with depth ({dataset})",
                 "Fig. 2: bars lower for deeper networks", heights),
                (f"Barriers h_p - L(p) (mean bar length per set of minima) decrease with depth ({dataset})",
                 "Fig. 2, 3: shorter bars for deeper networks", lengths)):
            resolution = config.paths.converge_abs
            resolved = at_resolution(values, resolution)
            result = trend_test(depths, resolved, "decreasing")
            rounding = (f"; tested at the paths' resolution of {resolution:g} nats (values rounded to its multiples: "
                        f"smaller differences are ties; {len(np.unique(resolved))} distinct value(s) among "
                        f"{len(resolved)})" if resolution else "")
            section.add_claim(Claim(
                name, evidence_words, result, source, profile, "set of minima", converged, null, null_words,
                data=claim_data(t for _, t, _ in rows),
                note=f"{convergence_words}{path_methods.words([t for _, t, _ in rows])}; Theil-Sen slope "
                     f"{theil_sen_slope(depths, values):.4g} per layer{rounding}."))
    return section


EXPERIMENT = Experiment(NAME, FCDepthConfig, variant_datasets(variants), barcode_stages(NAME, variants),
                        report_section)
