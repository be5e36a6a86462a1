"""Stage 3: per study, the barcode of minima (Fig. 6a, Algorithm 1), the 1-saddle barcode of the complex of minima,
curves and triangles in each regime (Fig. 6b, Algorithm 2, Appendix I) and the robustness of the barcode of minima
to the choice and number of minima (Fig. 7) with its test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.wrn_robustness.schema import WRNRobustnessConfig
from benchmarks.wrn_robustness.study import NAME
from losstopo import tracking
from losstopo.config import Params
from losstopo.io import load_json, save_json
from losstopo.robustness import robustness_summary, robustness_test
from losstopo.saddles import appendix_i_bar, edge_filtration, saddle_to_score
from losstopo.stage_frame import ARTIFACTS, prune, require_complete, stage_dir
from losstopo.topology import barcode_of_minima, higher_barcodes, own_sides_barcodes, to_score
from losstopo.topology_stage import path_max_matrix

OWN_SIDES = [(0, 1), (1, 2), (0, 2)]  # a triangle's sides AB, BC, CA on its vertices A, B, C = 0, 1, 2


def curve_max_matrix(record: dict) -> np.ndarray:
    return path_max_matrix(record, "curve_max")


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
            edges = edge_filtration(losses, record["pairs"], record["curve_max"])
            saddles = {}
            for regime, tri in record["triangles"].items():
                triangle_max = {tuple(t): m for t, m in zip(record["triples"], tri["max"])}
                # vertices_fixed triangles retrained their sides: the complex is built on those, not on the curves
                complex_bars = (own_sides_barcodes(losses, list(zip(map(tuple, record["triples"]), tri["side_max"],
                                                                    tri["max"])))
                                if regime == "vertices_fixed" else higher_barcodes(losses, edges, triangle_max))
                per_triangle = [appendix_i_bar(t, edges, m) for t, m in triangle_max.items()]
                # each triangle on its own sides AB, BC, CA (side_max's order), its vertices renumbered 0, 1, 2
                own = [appendix_i_bar((0, 1, 2), edge_filtration([losses[v] for v in triple], OWN_SIDES, s), m)
                       for triple, s, m in zip(record["triples"], tri["side_max"], tri["max"])]
                saddles[regime] = {"bars_0": complex_bars[0], "bars_1": complex_bars[1],
                                   "to_score_1": saddle_to_score(complex_bars[1]),
                                   "appendix_i_bars": per_triangle, "own_side_bars": own}
            robust = robustness_summary(losses, matrix, config.subset_sizes, config.fixed_minimum)
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
