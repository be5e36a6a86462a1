"""FC depth sweep: barcodes paper, section 2.1, Figures 2 and 3, Appendix H (Figure 13).

Fully connected ReLU networks with 2, 3, 4, 6 and 8 hidden layers of 32 units on MNIST and
Fashion-MNIST; ten minima each (Adam + cyclical LR), every pair joined by an Algorithm 3 path.
Claim: barcodes and the TO-score get lower as the network gets deeper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.stages import ARTIFACTS, Variant, stage_dir
from losstopo import plots
from losstopo.config import FCDepthConfig
from losstopo.io import load_json
from losstopo.report import Claim, Section
from losstopo.stats import theil_sen_slope, trend_test, verdict

EXPERIMENT = "fc_depth"
TITLE = "FC depth sweep (barcodes paper, Fig. 2, 3, 13)"


def variants(config: FCDepthConfig) -> list[Variant]:
    return [Variant(f"{dataset}-fc-{depth}-{config.width}", dataset, f"fc-{depth}-{config.width}",
                    {"depth": depth, "width": config.width})
            for dataset in config.datasets for depth in config.depths]


def report_section(config: FCDepthConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    minima_root, topology_root = stage_dir(EXPERIMENT, "minima", root), stage_dir(EXPERIMENT, "topology", root)
    for dataset in config.datasets:
        rows = [(v, load_json(topology_root / v.key / "topology.json"),
                 load_json(minima_root / v.key / "minima.json")["summary"])
                for v in variants(config) if v.dataset == dataset]
        depths = [v.labels["depth"] for v, _, _ in rows]
        source = rows[0][1]["data_source"]
        section.add_text(f"### {dataset}\n\nData: **{source}**.")
        section.add_table(
            ["depth", "train loss (mean)", "test acc (mean)", "converged", "TO-score", "TO-score (persistence)",
             "mean path max", "mean straight-segment max"],
            [[d, f"{np.mean(m['train_loss']):.4f}", f"{np.mean(m['test_acc']):.4f}",
              f"{sum(m['converged'])}/{len(m['converged'])}", f"{t['to_score']:.4f}",
              f"{t['to_score_persistence']:.4f}", f"{np.mean(t['path_max']):.4f}", f"{np.mean(t['straight_max']):.4f}"]
             for d, (_, t, m) in zip(depths, rows)],
        )
        section.add_figure(plots.barcodes({f"{d} layers": t["bars"] for d, (_, t, _) in zip(depths, rows)},
                                          figures / f"fc_depth_barcodes_{dataset}.png",
                                          f"Barcodes of minima, {dataset} (Fig. 2)"), f"Barcodes, {dataset} (Fig. 2)")
        to_scores = [t["to_score"] for _, t, _ in rows]
        section.add_figure(plots.trend({dataset: (depths, to_scores)}, figures / f"fc_depth_to_score_{dataset}.png",
                                       f"TO-score vs depth, {dataset} (Fig. 3)", "hidden layers", "TO-score"),
                           f"TO-score vs depth, {dataset} (Fig. 3)")
        section.add_figure(plots.trend({dataset: (depths, [np.mean(t["path_max"]) for _, t, _ in rows])},
                                       figures / f"fc_depth_path_max_{dataset}.png",
                                       f"Path maxima, mean ± std, {dataset} (Fig. 13)", "hidden layers", "max loss on path",
                                       errors={dataset: [np.std(t["path_max"]) for _, t, _ in rows]}),
                           f"Error bars of path maxima, {dataset} (Fig. 13)")
        to_test = trend_test(depths, to_scores)
        section.add_claim(Claim(
            f"TO-score decreases with depth ({dataset})", "Fig. 3: monotone decrease over 2-8 layers",
            to_test, verdict(to_test), source, rows[0][1]["profile"],
            note=f"Theil-Sen slope {theil_sen_slope(depths, to_scores):.4g} per layer"))
        bar_depths = [d for d, (_, t, _) in zip(depths, rows) for _, death in t["bars"] if np.isfinite(death)]
        heights = [death for _, t, _ in rows for _, death in t["bars"] if np.isfinite(death)]
        height_test = trend_test(bar_depths, heights)
        section.add_claim(Claim(
            f"Barcode heights h_p decrease with depth ({dataset})", "Fig. 2: bars lower for deeper networks",
            height_test, verdict(height_test), source, rows[0][1]["profile"],
            note=f"{len(heights)} finite bars; Theil-Sen slope {theil_sen_slope(bar_depths, heights):.4g} per layer"))
    return section
