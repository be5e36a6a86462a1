"""The experiment's claims (§4, §5, Fig. 2, 3): the permutation point is a saddle, its loss and the barrier
decrease with H, the loss rises monotonically to it, training accuracy drops only marginally there (unit: one
teacher); and in the toy, the loss at the permutation point differs between neuron pairs (unit: one pair)."""

from __future__ import annotations

import numpy as np

from benchmarks.permutation_barrier.paths import HESSIAN_ITERATIONS
from benchmarks.permutation_barrier.topology import MONOTONE_TOLERANCE
from losstopo.path_maximum import RELATIVE_TOLERANCE
from losstopo.evidence import (NULL_DRAWS, below_threshold_null_rate, below_threshold_test, binomial_null_rate,
                               binomial_test, homogeneity_null_rate, homogeneity_test, interval_trend_null_rate,
                               interval_trend_test, trend_null_rate, trend_test)
from losstopo.report import Claim
from losstopo.stats import theil_sen_slope

BARRIER_EVIDENCE = "§5, Fig. 3A: barrier height decreased with H"
# Two toy pairs' permutation-point losses closer than this fraction of the highest one count as one level
# (Fig. 2 A and B): the experiment's resolution MONOTONE_TOLERANCE reused, not fitted to the toy's levels.
# Fig. 2's "different" levels (A vs C) differ by far more.
LEVEL_RESOLUTION = MONOTONE_TOLERANCE
# A pair's measured error: how much its loss still moves over the last LEVEL_WINDOW-fold of distances
# before d = 0, where the constrained minimum's loss is flat (the permutation point is a critical point).
LEVEL_WINDOW = 10.0


def mnist_claims(summary: dict) -> list[Claim]:
    """Unit: one teacher (its own training run and its own permutation path), 24 at the paper's design."""
    paths, source, profile = summary["mnist"]["paths"], summary["data_source"], summary["profile"]
    widths = [p["H"] for p in paths]
    barriers = [p["barrier"] for p in paths]
    per_h = summary["mnist"]["per_H"]
    n_paths = summary["mnist"]["n_paths"]
    monotone_test = binomial_test(summary["mnist"]["n_monotone"], n_paths)
    drops_pp = [100 * p["accuracy_drop"] for p in paths]
    threshold = summary["accuracy_drop_threshold_pp"]
    drop_test = below_threshold_test(drops_pp, threshold)
    low, high = summary["mnist"]["accuracy_drop_ci_pp"]
    permutation_losses = [p["permutation_loss"] for p in paths]
    point_test = trend_test(widths, permutation_losses, "decreasing")
    halving = all(p.get("half_budget") for p in paths)
    slack = resolution_words(summary)
    converged = float(np.mean([p["converged_fraction"] for p in paths]))
    steps = (f"{converged:.0%} of the descent steps converged (halving their iteration budget moved their loss by "
             f"<= {MONOTONE_TOLERANCE:g} x the path's barrier{slack})" if halving
             else f"{converged:.0%} of the descent steps met the convergence rule")
    at_point = float(np.mean([p["permutation_point_converged"] for p in paths]))
    polished = summary["settings"]["mnist"].get("final_max_iter")
    point_words = (f"{at_point:.0%} of the permutation points converged (the second half of their own descent at "
                   f"d = 0, {polished // 2:,} of its {polished:,} L-BFGS iterations{own_budget_words(summary)}, "
                   f"moved their loss by <= {MONOTONE_TOLERANCE:g} of itself{slack})" if polished else
                   f"{at_point:.0%} of the permutation points converged (halving every descent's budget moved their "
                   f"loss by <= {MONOTONE_TOLERANCE:g} of itself{slack})" if halving
                   else f"{at_point:.0%} of the permutation points' descents met the convergence rule")
    at_barrier = float(np.mean([p["barrier_converged"] for p in paths]))
    refined = all(p.get("barrier_refined") for p in paths)
    settings = summary["settings"]["mnist"]
    barrier_words = (f"{at_barrier:.0%} of the path maxima converged (certified by refinement: the argmax step "
                     f"descended again, {settings.get('refine_budget'):,} L-BFGS iterations in two halves, at most "
                     f"{settings.get('max_refinements')} times a path, until the converged maximum is bracketed "
                     f"within {RELATIVE_TOLERANCE:g} of it; "
                     f"{sum(p['refinements'] for p in paths)} refinements in all)" if refined else
                     f"{at_barrier:.0%} of the path maxima converged (halving every descent's budget moved them by "
                     f"<= {MONOTONE_TOLERANCE:g} of themselves{slack})" if halving
                     else f"{at_barrier:.0%} of the path maxima's descents met the convergence rule")
    barrier_claim = (bounded_barrier_claim(paths, widths, summary, barrier_words) if refined else
                     Claim("Barrier (max loss on the path) decreases with H", BARRIER_EVIDENCE,
                           trend_test(widths, barriers, "decreasing"), source, profile, "teacher", at_barrier,
                           trend_null_rate(widths),
                           f"barriers i.i.d. over teachers (exchangeable across H) at this design, {NULL_DRAWS} draws",
                           data=summary.get("data"), note=f"{barrier_words}; {len(paths)} paths; mean barrier per H: "
                           + ", ".join(f"{h}: {v['barrier_mean']:.3g}" for h, v in per_h.items())
                           + f"; Theil-Sen slope {theil_sen_slope(widths, barriers):.3g} per neuron."))
    claims = []
    if all(p.get("saddle") is not None for p in paths):
        n_saddles = sum(p["saddle"] for p in paths)
        eigenvalues = [p["hessian_min_eigenvalue"] for p in paths]
        claims.append(Claim(
            "The permutation point is a saddle (negative smallest Hessian eigenvalue) in most cases",
            "§4: permutation points are saddles, connected by 'saddle lines'", binomial_test(n_saddles, n_paths),
            source, profile, "teacher", at_point, binomial_null_rate(n_paths),
            f"each point a saddle with probability 1/2, independently, {NULL_DRAWS} draws",
            data=summary.get("data"),
            note=f"{point_words}; {n_saddles}/{n_paths} with a negative smallest eigenvalue beyond rounding ({HESSIAN_ITERATIONS} "
                 f"Lanczos steps on Hessian-vector products of L); smallest eigenvalues from {min(eigenvalues):.3g} to "
                 f"{max(eigenvalues):.3g}; gradient norm there up to "
                 f"{max(p['gradient_norm_at_permutation_point'] for p in paths):.3g}."))
    return claims + [
        Claim("The loss at the permutation point decreases with H",
              "§5, Fig. 3A: 'the barrier height (loss at saddle) decreased with the number H of hidden neurons'",
              point_test, source, profile, "teacher", at_point, trend_null_rate(widths),
              f"permutation-point losses i.i.d. over teachers (exchangeable across H) at this design, {NULL_DRAWS} draws",
              data=summary.get("data"),
              note=f"{point_words}; {len(paths)} paths; mean loss at the permutation point per H: "
                   + ", ".join(f"{h}: {v['permutation_loss_mean']:.3g}" for h, v in per_h.items())
                   + f"; Theil-Sen slope {theil_sen_slope(widths, permutation_losses):.3g} per neuron."),
        barrier_claim,
        Claim("In most cases the loss rises monotonically up to the permutation point",
              "§5, Fig. 3A: 'in most cases the loss increased monotonically until the permutation point'",
              monotone_test, source, profile, "teacher", converged, binomial_null_rate(n_paths),
              f"each path monotone with probability 1/2, independently, {NULL_DRAWS} draws",
              data=summary.get("data"),
              note=f"{steps}; {summary['mnist']['n_monotone']}/{n_paths} paths; monotone = no step down by "
                   f"more than {summary['monotone_tolerance']:g} x the path's barrier"
                   + ("; the permutation point's own, longer descent ends below the unconverged steps just before "
                      "it, so the count compares unequal budgets until every step converges." if polished else ".")),
        Claim("Training accuracy drops only marginally at the permutation point",
              "§5, Fig. 3B: accuracy 'decreases only marginally'", drop_test, source, profile, "teacher",
              at_point, below_threshold_null_rate(len(drops_pp), threshold),
              f"drops symmetric about the {threshold:g} pp threshold (normal), {NULL_DRAWS} draws",
              data=summary.get("data"),
              note=f"{point_words}; drop in percentage points, threshold {threshold:g} pp (our reading of "
                   f"'marginal'); mean {summary['mnist']['accuracy_drop_mean_pp']:.3f} pp (95% bootstrap CI "
                   f"{low:.3f} to {high:.3f}), max {summary['mnist']['accuracy_drop_max_pp']:.3f} pp."),
    ]


def bounded_barrier_claim(paths: list[dict], widths: list[int], summary: dict, barrier_words: str) -> Claim:
    """The barrier trend tested on each refined path's bounds of its converged maximum (``barrier_bounds``): a
    verdict that holds for every value the converged maxima can take inside them, so it needs the bounds measured
    (each lower bound from a converged point), not every maximum converged."""
    lower, upper = (np.asarray([p["barrier_bounds"][i] for p in paths], float) for i in (0, 1))
    bounded = float(np.mean([p["barrier_bounded"] for p in paths]))
    return Claim(
        "Barrier (max loss on the path) decreases with H", BARRIER_EVIDENCE,
        interval_trend_test(widths, lower, upper, "decreasing"), summary["data_source"], summary["profile"],
        "teacher", bounded, interval_trend_null_rate(widths),
        f"barriers i.i.d. standard normal over teachers (exchangeable across H), each known within |N(0, 0.1)| below "
        f"and above it, at this design, {NULL_DRAWS} draws", data=summary.get("data"),
        note=f"tested on bounds of each converged maximum: {bounded:.0%} of the paths have a lower bound from a "
             f"converged point (the largest loss of a point whose descent converged, less {RELATIVE_TOLERANCE:g} of "
             f"it); the upper bound is the refined maximum (continued descent only lowers a step's loss); each pair "
             f"of teachers counts with its least favourable order within the bounds. {barrier_words}; "
             f"{len(paths)} paths; bounds per H (mean lower .. mean upper): "
             + ", ".join(f"{h}: {bounds_words(v['barrier_bounds_mean'])}" for h, v in summary["mnist"]["per_H"].items())
             + f"; Theil-Sen slope of the upper bounds {theil_sen_slope(widths, upper):.3g} per neuron.")


def bounds_words(bounds: list[float]) -> str:
    """A mean lower and upper bound of the converged maxima, as the report and the claim's note print them."""
    return f"{bounds[0]:.3g} .. {bounds[1]:.3g}"


def resolution_words(summary: dict) -> str:
    """The absolute slack of the convergence rules (the descent's absolute tolerance), as words; none: empty."""
    resolution = summary.get("loss_resolution") or 0.0
    return f" + {resolution:g} nats, the descent's absolute tolerance" if resolution > 0 else ""


def own_budget_words(summary: dict) -> str:
    """The widths whose descent at d = 0 had its own budget (``final_max_iter_by_width``), as words."""
    own = summary["settings"]["mnist"].get("final_max_iter_by_width") or {}
    return "".join(f"; H = {width}: {budget:,}" for width, budget in sorted(own.items(), key=lambda kv: int(kv[0])))


def level_error(path: dict, rel_tol: float, abs_tol: float, window: float = LEVEL_WINDOW) -> float:
    """The measurement error of a toy pair's permutation-point loss: the range of its loss over the merge
    points with d <= window x the smallest positive d (d = 0 included), or the convergence rule's
    tolerance at that loss, whichever is larger."""
    distances, losses = np.asarray(path["curve_distances"], float), np.asarray(path["curve_losses"], float)
    positive = distances[1:][distances[1:] > 0]
    tail = losses[1:][distances[1:] <= window * positive.min()] if positive.size else losses[-1:]
    return max(float(np.ptp(tail)), rel_tol * abs(path["permutation_loss"]) + abs_tol)


def distinct_levels(values, resolution: float) -> int:
    """Groups of the sorted values split where consecutive values differ by more than ``resolution``."""
    return 1 + int(np.sum(np.diff(np.sort(np.asarray(values, float))) > resolution)) if len(values) else 0


def toy_level_claim(summary: dict) -> Claim:
    """Fig. 2: the loss at the permutation point depends on the pair merged. Unit: one pair's descent (one
    teacher, as in Fig. 2); null: one level, each pair measured with its own descent's error."""
    paths, conv = summary["toy"]["paths"], summary["settings"]["convergence"]
    losses = [p["permutation_loss"] for p in paths]
    errors = [level_error(p, conv["rel_tol"], conv["abs_tol"]) for p in paths]
    result = homogeneity_test(losses, errors, LEVEL_RESOLUTION)
    converged = float(np.mean([p["converged_fraction"] for p in paths]))
    top = max(abs(v) for v in losses)
    sd = np.maximum(errors, LEVEL_RESOLUTION * top)
    spread = float(np.ptp(losses))
    # distribution-free: a range r under one level needs some |error_i| >= r/2 (Chebyshev, union over pairs)
    chebyshev = min(1.0, float(np.sum(4 * sd ** 2)) / spread ** 2) if spread > 0 else 1.0
    pairs = sorted(paths, key=lambda p: p["permutation_loss"])
    return Claim(
        "Toy: the loss at the permutation point differs between neuron pairs",
        "Fig. 2 and §4.2: the loss at the permutation point can be the same (A, B) or different (A, C) "
        "depending on the pair merged", result, summary["toy_source"], summary["profile"], "pair (its own descent)",
        converged, homogeneity_null_rate(errors, float(np.mean(losses)), LEVEL_RESOLUTION),
        f"all pairs' permutation-point losses equal, each measured with an independent Gaussian error of SD "
        f"max(its measured error, {LEVEL_RESOLUTION:g} x the highest loss), {NULL_DRAWS} draws",
        data=summary.get("toy_data"),
        note=f"{converged:.0%} of the toy's descent steps met the convergence rule; losses at the permutation "
             f"point from {pairs[0]['permutation_loss']:.4g} (pair {pairs[0]['pair'][0]}⇔{pairs[0]['pair'][1]}) to "
             f"{pairs[-1]['permutation_loss']:.4g} (pair {pairs[-1]['pair'][0]}⇔{pairs[-1]['pair'][1]}), "
             f"{distinct_levels(losses, LEVEL_RESOLUTION * top)} distinct levels at the resolution "
             f"{LEVEL_RESOLUTION:g} x the highest loss ({LEVEL_RESOLUTION * top:.2g}). A pair's error SD is the larger "
             f"of that resolution and its measured error: the range of its loss over the last {LEVEL_WINDOW:g}-fold "
             f"of distances before d = 0 (or the rule's tolerance), at most {max(errors):.2g}. The {len(paths)} "
             f"descents are separate problems, so their errors are independent; their true levels share one "
             f"teacher, which the null (one level) does not need. The test concerns this teacher's levels at these "
             f"path settings (a pair may land on another level at other settings: another minimum of the smaller "
             f"network), not teachers in general. The p-value assumes Gaussian errors; with only the error SDs "
             f"(Chebyshev over the pairs) p <= {chebyshev:.2g}.")
