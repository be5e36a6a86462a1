"""The experiment's claims: the barcode is robust to the choice of minima (section 4, Fig. 7), and trainable side
centres give lower triangles (Appendix I, Fig. 16 vs 15); each gated on the convergence of what it reads."""

from __future__ import annotations

import numpy as np

from benchmarks.wrn_robustness.schema import TriangleStudyConfig
from benchmarks.wrn_robustness.tables import fmt, percent
from losstopo.evidence import NULL_DRAWS, below_threshold_null_rate, below_threshold_test
from losstopo.report import Claim
from losstopo.robustness import ROBUSTNESS_DRAWS, ROBUSTNESS_NULL_DRAWS, robustness_null_rate
from losstopo.stats import TestResult


def claim_convergence(groups: dict[str, list[bool] | None]) -> tuple[float, str]:
    """The fraction of a claim's inputs (all groups together) that met their convergence rule, and the count
    per group in words; a group is None where its artefact predates the measurement, which makes it NaN."""
    flags, words = [], []
    for name, group in groups.items():
        flags += [float("nan")] if group is None else list(group)
        words.append(f"{name} not recorded" if group is None else f"{name} {sum(group)}/{len(group)}")
    return float(np.mean(flags)), ", ".join(words)


def minima_converged(summary: dict, patience: int | None, converge_abs: float) -> list[bool]:
    """The minima's recorded rule (patience, or for a fixed budget a loss that moved < 1% over the last 20% of
    epochs), or, for a fixed budget, a loss that moved by <= ``converge_abs`` nats over those epochs: the study's
    resolution, the one its curves and triangles are measured at (near zero loss 1% is below the epochs' noise)."""
    history = summary.get("history") or []
    if patience is not None or converge_abs <= 0 or len(history) < 2:
        return list(summary["converged"])
    earlier, last = history[int(round(0.8 * len(history))) - 1]["train_loss"], history[-1]["train_loss"]
    return [bool(flag) or abs(b - a) <= converge_abs for flag, a, b in zip(summary["converged"], earlier, last)]


def minima_rule_words(patience: int | None, converge_abs: float) -> str:
    if patience is not None:
        return f"minima: stopped by the patience rule ({patience} epochs)"
    resolution = f" or by <= {converge_abs:g} nats" if converge_abs > 0 else ""
    return f"minima: loss moved < 1%{resolution} over the last 20% of epochs"


def robustness_convergence(summary: dict, paths: dict, minima_flags: list[bool] | None = None) -> tuple[float, str]:
    """The robustness claim's inputs: the minima (``minima_flags``, by default their recorded rule) and the
    curves (maxima rule)."""
    flags = summary["converged"] if minima_flags is None else minima_flags
    return claim_convergence({"minima": flags, "curves": paths.get("curve_converged")})


def regime_convergence(paths: dict) -> tuple[float, str]:
    """The regime claim's inputs: both regimes' triangles, and the curves (the sides of sides_fixed)."""
    return claim_convergence({f"{regime} triangles": paths["triangles"][regime].get("converged")
                              for regime in ("vertices_fixed", "sides_fixed")}
                             | {"curves (the sides_fixed sides)": paths.get("curve_converged")})


def robustness_claim(study: str, topo: dict, summary: dict, paths: dict, study_cfg: TriangleStudyConfig) -> Claim:
    robust = topo["robustness"]
    fixed = robust["fixed_minimum"]
    fixed_words = "; ".join(f"size {row['size']}: std {fmt(row['std'])}, CV {fmt(row['cv'], 3)} (n={row['n']})"
                            for row in fixed["by_size"])
    raw = robust.get("permutation_test")
    result = (TestResult(**{k: (float("nan") if v is None else v) for k, v in raw.items()}) if raw
              else TestResult("not computed (topology older than this test)", float("nan"), float("nan"),
                              float("nan"), "", 0, float("nan"), 1.0))
    patience, resolution = study_cfg.minima.patience, study_cfg.curves.converge_abs
    converged, convergence_words = robustness_convergence(summary, paths,
                                                          minima_converged(summary, patience, resolution))
    note = (f"Restated (the old test, 'spread shrinks with subset size', holds by construction on random path "
            f"maxima): the observed mean CV of h_p over all subsets of sizes {robust['sizes']} against the same "
            f"barriers (curve maximum minus its higher minimum's loss) shuffled over the pairs ({ROBUSTNESS_DRAWS} "
            f"shuffles). Converged: {convergence_words} "
            f"({percent(converged)} of the inputs; {minima_rule_words(patience, resolution)}; curves: "
            f"{paths.get('convergence_rule', 'not recorded')}). Mean CV by size: "
            + ", ".join(f"{r['size']}: {fmt(r['mean_cv'], 3)}" for r in robust["mean_cv_by_size"])
            + f". Fixed minimum {fixed['index']}"
            + (" (the global minimum of this set: no finite bar)" if fixed["is_global_minimum"] else "")
            + (f" (requested {fixed['requested']}, clamped to the {robust['n_minima']} minima)"
               if fixed["requested"] != fixed["index"] else "")
            + f": {fixed_words}.")
    return Claim(f"The barcode is robust to the choice of minima: h_p varies less over subsets of minima than "
                 f"with the same barriers shuffled over pairs ({study}: {topo['model']})",
                 "section 4, Fig. 7: 'the barcode is a rather robust characteristic ... in terms of both the set "
                 "of learned minima and the number of minima'", result, topo["data_source"], topo["profile"],
                 "set of minima (pairs relabelled)", converged,
                 robustness_null_rate(robust["n_minima"], tuple(robust["sizes"])),
                 f"random minima losses, each pair's barrier drawn i.i.d. (exponential) above its higher minimum "
                 f"(no structure), {ROBUSTNESS_NULL_DRAWS} draws of the test with 99 shuffles", data=topo.get("data"),
                 note=note)


def regime_claim(study: str, topo: dict, paths: dict) -> Claim:
    """Fig. 16 vs 15: triangles whose side centres train (vertices_fixed) end lower than triangles on the
    fixed curves (sides_fixed). Paired by triangle, but tested over sets of minima: the triangles of one set are
    not independent (any two of the 10 triangles of 5 minima share a vertex, and in sides_fixed each trained curve
    is a side of 3 of them), so the unit is the set -- its triangles' mean paired difference -- and a study with
    one set cannot reach p < 0.05 (``underpowered``); five independent sets could (0.5^5 = 0.031)."""
    low, high = paths["triangles"]["vertices_fixed"]["max"], paths["triangles"]["sides_fixed"]["max"]
    differences = np.subtract(low, high)
    per_set = [float(np.mean(differences))]  # one set of minima per study
    converged, convergence_words = regime_convergence(paths)
    return Claim(f"Triangles with trainable side centres are lower than triangles on fixed sides ({study}: "
                 f"{topo['model']})", "Appendix I, Fig. 16 vs Fig. 15: trainable side centres give lower triangles",
                 below_threshold_test(per_set, 0.0), topo["data_source"], topo["profile"],
                 "set of minima (its triangles' mean paired difference)", converged,
                 below_threshold_null_rate(len(per_set)),
                 f"per-set mean differences symmetric about 0, {NULL_DRAWS} draws", data=topo.get("data"),
                 note=f"{len(per_set)} set of minima, {len(differences)} triangles: lower with trainable side "
                      f"centres in {int(np.sum(differences < 0))}/{len(differences)} (mean paired difference "
                      f"{np.mean(differences):.4g}, from {np.min(differences):.4g} to {np.max(differences):.4g}); "
                      f"the triangles share vertices and sides, so they are not independent units. Converged: "
                      f"{convergence_words} ({percent(converged)} of the inputs; "
                      f"{paths.get('convergence_rule', 'rule not recorded')}).")
