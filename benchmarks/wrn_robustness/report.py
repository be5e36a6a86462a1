"""The experiment's section of the report: per study the scale and data, the minima table, the barcodes,
curves and triangles (Fig. 6, 15, 16), the robustness of the barcode (Fig. 7) and the claims."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.wrn_robustness.claims import claim_convergence, regime_claim, robustness_claim
from benchmarks.wrn_robustness.schema import WRNRobustnessConfig
from benchmarks.wrn_robustness.study import NAME, study_config
from benchmarks.wrn_robustness.tables import (PAPER_FIGURES, PAPER_MODELS, PAPER_TABLE_NAMES, minima_table,
                                              robustness_table, scale_words, short_source, triangle_table)
from losstopo import plots
from losstopo.data import title_caveat
from losstopo.io import load_json
from losstopo.report import Section
from losstopo.stage_frame import ARTIFACTS, stage_dir

TITLE = ("Random-point curves, triangles and barcode robustness (barcodes paper, section 4, Tables 3, 14, "
         "Fig. 6, 7, 15, 16)")


def report_section(config: WRNRobustnessConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    section = Section(TITLE)
    section.add_text(
        "Curves: a polygonal chain with one bend between every pair of minima, trained with a random t per "
        "minibatch (Garipov et al. 2018) under the minima's schedule (Appendix C: Table 6 for the WRN, Table 7 for "
        "LeNet); each curve's value is the maximum of its loss on an even t grid. Triangles over every triple of "
        "minima (Appendix I): *sides_fixed* keeps the trained curves as sides and trains only the centre O (Fig. 15); "
        "*vertices_fixed* trains the side centres D, E, F and O (Fig. 16). Losses are the mean cross-entropy on the "
        "curves' training images, BatchNorm statistics recomputed for every evaluated parameter vector. The "
        "1-saddle barcode (Fig. 6b) is the dimension-1 persistence of the complex of minima (their loss), curves "
        "(their maximum) and triangles (their maximum), Algorithm 2; for one triangle it is Appendix I's segment "
        "from the maximum of its sides to its own maximum.")
    minima_root, paths_root = stage_dir(NAME, "minima", root), stage_dir(NAME, "paths", root)
    topology_root = stage_dir(NAME, "topology", root)
    for study in config.studies:
        summary = load_json(minima_root / study / "minima.json")["summary"]
        paths = load_json(paths_root / study / "paths.json")
        topo = load_json(topology_root / study / "topology.json")
        source = topo["data_source"]
        short, caveat = short_source(topo), title_caveat(topo["data_kind"], topo["dataset"])
        lines = [f"### {study}: {summary['model']} on {summary['dataset']} (paper: {PAPER_MODELS[study]}; "
                 f"{PAPER_FIGURES[study]})",
                 f"Data: **{source}**.",
                 f"- Scale: {scale_words(summary, paths)}.",
                 f"- Curves: {len(paths['pairs'])} {paths['kind']} curves, {paths['curve_epochs']} epochs = "
                 f"{paths['curve_steps']} steps of batch {paths['curve_batch_size']} on {paths['n_curve_samples']:,} "
                 f"training images (a prefix of the minima's {paths['minima_n_train']:,}"
                 f"{'; crop+flip, as the minima' if paths.get('curve_augment') else ''}), evaluated at "
                 f"{len(paths['t'])} points; triangles: {len(paths['triples'])} per regime, "
                 + ", ".join(f"{r} {t['epochs']} epochs ({t['steps']} steps, trains {t['trainable']}), "
                             f"grid of resolution {t['resolution']}" for r, t in paths["triangles"].items())
                 + ".",
                 "- Converged (maximum after 80% of the steps vs after all): "
                 + claim_convergence({"curves": paths.get("curve_converged")}
                                     | {f"{r} triangles": t.get("converged") for r, t in paths["triangles"].items()})[1]
                 + f"; rule: {paths.get('convergence_rule', 'not recorded')}."]
        if summary["data_kind"] == "synthetic":
            lines.append(f"- **Real {summary['dataset']} was not available: minima, curves and barcodes are on the "
                         f"labelled SYNTHETIC stand-in (class templates plus noise); they say nothing about "
                         f"{PAPER_TABLE_NAMES[study]}.**")
        elif summary["data_kind"] == "offline-partial":
            lines.append("- **Partial real copy: the test rows are held-out training images, not the official "
                         "test set.**")
        section.add_text("\n\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
        section.add_text(f"Minima characteristics ({PAPER_TABLE_NAMES[study]}; mean ± std, ours: sample std over "
                         f"our minima; ours at the scale stated on each row):")
        minima_table(section, study, summary, paths, study_config(config, study).minima.test_subset)

        flat = sum(1 for b, d in topo["bars"] if math.isfinite(d) and d <= b)
        if flat:
            section.add_text(f"**{flat} of {len(topo['bars']) - 1} finite bars have zero length (h_p = L(p)): the "
                             f"lowest curve to a lower minimum never rises above this minimum's loss, i.e. these "
                             f"points are not separated from lower minima by any barrier at this scale (at ci the "
                             f"minima are far from converged, and training the curves lowers the loss further).**")
        section.add_text(f"Barcode of minima: TO-score **{topo['to_score']:.4f}** (Algorithm 1), "
                         f"{topo['to_score_persistence']:.4f} (exact graph persistence). 1-saddle barcode: "
                         + "; ".join(f"{r}: {len(s['bars_1'])} bar(s), index-1 TO-score {s['to_score_1']:.4f}"
                                     for r, s in topo["saddles"].items()) + ".")
        section.add_figure(plots.barcodes({"Algorithm 1": topo["bars"], "graph persistence": topo["bars_persistence"]},
                                          figures / f"wrn_robustness_barcode_{study}.png",
                                          f"Barcode of minima, {summary['model']} (Fig. 6a){caveat}"),
                           f"Barcode of minima, {study} (Fig. 6a; {short})")
        if topo["saddles"]:
            section.add_figure(plots.barcodes({r: s["bars_1"] for r, s in topo["saddles"].items()},
                                              figures / f"wrn_robustness_saddles_{study}.png",
                                              f"1-saddle barcode, {summary['model']} (Fig. 6b){caveat}"),
                               f"1-saddle barcode per triangle regime, {study} (Fig. 6b; {short})")
        t = np.asarray(paths["t"], float)
        section.add_figure(plots.loss_along_paths({f"{i}-{j}": (t, np.asarray(losses, float))
                                                   for (i, j), losses in zip(paths["pairs"], paths["curve_losses"])},
                                                  figures / f"wrn_robustness_curves_{study}.png",
                                                  f"Loss along the trained curves, {summary['model']}{caveat}"),
                           f"Training loss along each curve, {study} ({short})")
        section.add_text(f"Triangle maxima per regime ({'Fig. 15' if study == 'wrn' else 'Fig. 16'}; sides are "
                         f"the curves in sides_fixed, retrained polychains in vertices_fixed; 'Appendix I bar' uses the "
                         f"curves' maxima for the sides):")
        triangle_table(section, topo, paths)
        for regime, tri in paths["triangles"].items():
            worst = int(np.argmax(tri["max"]))
            section.add_figure(plots.triangle_losses(
                np.asarray(tri["grid"], float), np.asarray(tri["losses"][worst], float),
                figures / f"wrn_robustness_triangle_{study}_{regime}.png",
                f"{summary['model']}, {regime}, triangle {tuple(paths['triples'][worst])}{caveat}",
                tuple(f"{v} = {m}" for v, m in zip("ABC", paths["triples"][worst]))),
                f"Loss over the highest triangle (vertices A, B, C = minima), {regime}, {study} "
                f"({'Fig. 15' if study == 'wrn' else 'Fig. 16'}; {short})")

        robust = topo["robustness"]
        section.add_text(f"Robustness (Fig. 7): the bar of each minimum recomputed (Algorithm 1) on every subset of "
                         f"the {robust['n_minima']} minima of sizes {robust['sizes']}; std over all subsets "
                         f"(population std of the complete enumeration).")
        robustness_table(section, topo)
        finite = [row for row in robust["per_minimum"] if row["n"] > 0]
        section.add_figure(plots.mean_std_points(
            {study: ([row["minimum"] for row in finite], [row["mean"] for row in finite],
                     [row["std"] for row in finite])},
            figures / f"wrn_robustness_fig7a_{study}.png", f"Saddle h_p over subsets of minima (Fig. 7a), {study}",
            "minimum", "h_p: mean ± std over subsets"),
            f"(a) Mean and std of each minimum's saddle over all choices of the minima's set, {study} ({short})")
        fixed = robust["fixed_minimum"]
        by_size = [row for row in fixed["by_size"] if row["n"] > 0]
        section.add_figure(plots.mean_std_points(
            {f"minimum {fixed['index']}": ([row["size"] for row in by_size], [row["mean"] for row in by_size],
                                           [row["std"] for row in by_size])},
            figures / f"wrn_robustness_fig7b_{study}.png", f"Fixed minimum vs set size (Fig. 7b), {study}",
            "number of minima in the set", "h_p: mean ± std over subsets", connect=True),
            f"(b) Saddle of minimum {fixed['index']} vs the size of the minima's set, {study} ({short})")
        section.add_claim(robustness_claim(study, topo, summary, paths, study_config(config, study)))
        if {"vertices_fixed", "sides_fixed"} <= set(paths["triangles"]):
            section.add_claim(regime_claim(study, topo, paths))
    return section
