"""The experiment's section of the report: the settings, the toy's neuron configurations and losses (Fig. 2), the
MNIST losses, accuracies and barriers per width (Fig. 3), and the claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.permutation_barrier.claims import (bounds_words, mnist_claims, own_budget_words, resolution_words,
                                                   toy_level_claim)
from benchmarks.permutation_barrier.schema import PermutationBarrierConfig
from benchmarks.permutation_barrier.topology import MONOTONE_TOLERANCE
from benchmarks.permutation_barrier.variants import NAME
from losstopo import plots
from losstopo.io import load_json
from losstopo.path_maximum import RELATIVE_TOLERANCE
from losstopo.report import Section
from losstopo.stage_frame import ARTIFACTS, stage_dir

TITLE = "Permutation barrier (weight-space symmetry paper, Fig. 2, 3)"


def _toy_panels(paths: list[dict]) -> list[dict]:
    """Up to three pairs as in Fig. 2 A-C: the lowest, a middle and the highest permutation-point loss."""
    ordered = sorted(paths, key=lambda p: p["permutation_loss"])
    picks = sorted({0, len(ordered) // 2, len(ordered) - 1})
    return [ordered[i] for i in picks]


def report_section(config: PermutationBarrierConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    summary = load_json(stage_dir(NAME, "topology", root) / "summary.json")
    settings, toy_paths, mnist = summary["settings"], summary["toy"]["paths"], summary["mnist"]
    section = Section(TITLE)
    conv = settings["convergence"]
    section.add_text(
        f"Data: **{summary['data_source']}** (MNIST, {settings['n_path_samples']} training images for the path loss "
        f"and accuracy); toy: **{summary['toy_source']}**. Profile **{summary['profile']}**. "
        f"Distances: toy {settings['toy']['n_steps']}, MNIST {settings['mnist']['n_steps']} log-spaced steps down to "
        f"{settings['mnist']['final_ratio']:g} of the initial distance, then d = 0; at each step {conv['method']} "
        f"descent until |ΔL| <= {conv['rel_tol']:g}·|L| + {conv['abs_tol']:g} or |∇L| <= {conv['grad_tol']:g}, at most "
        f"{conv['max_iter']} iterations"
        + (f" (MNIST at d = 0, the permutation point: {settings['mnist']['final_max_iter']}"
           f"{own_budget_words(summary)} in two halves without the relative rule)"
           if settings["mnist"].get("final_max_iter") else "")
        + f". MNIST paths in {settings['mnist_dtype']}. The barrier is the maximum loss "
        f"along the whole path (start, merge, equalisation, mirrored half)"
        + (f"; on MNIST, certified by refinement: the step at the maximum is descended again "
           f"({settings['mnist']['refine_budget']:,} L-BFGS iterations in two halves) and replaced by the result, "
           f"until the maximum lies at a converged step or within {RELATIVE_TOLERANCE:.0%} of the highest converged "
           f"step's loss (then the converged path's maximum is bracketed between the two), at most "
           f"{settings['mnist']['max_refinements']} "
           f"times a path" if settings["mnist"].get("refine_budget") else "")
        + f". *Converged steps* is the fraction of "
        f"distance steps whose descent met the rule within {conv['max_iter']} iterations (toy), or (MNIST) whose loss "
        f"moved by at most {MONOTONE_TOLERANCE:g} x the path's barrier when the whole path was descended again with "
        f"half the iterations per step (a descent that creeps meets a per-iteration rule long before its loss "
        f"settles): where it is low the points are not at their constrained minima, which inflates the barrier and "
        f"breaks monotone rises for lack of iterations, not of the landscape. Each claim is gated on what it reads: "
        f"the monotone rise on every step, the path maximum on the maximum, the saddle, the accuracy drop and the "
        f"loss at the permutation point on the permutation point (each within {MONOTONE_TOLERANCE:g} of itself"
        f"{resolution_words(summary)} when the budgets are halved). "
        + (f"MNIST descents in whitened input coordinates (ridge {settings['mnist']['whiten_ridge']:g} x the mean "
           f"eigenvalue of the pixels' covariance): the same networks and losses, a better-conditioned descent."
           if settings["mnist"].get("whiten_ridge") else ""))

    panels = _toy_panels(toy_paths)
    section.add_figure(plots.neuron_configurations(
        {f"pair {p['pair'][0]}⇔{p['pair'][1]}, L = {p['permutation_loss']:.3g}":
         (np.asarray(p["start_vectors"])[:, :2], np.asarray(p["permutation_vectors"])[:, :2]) for p in panels},
        figures / "permutation_barrier_toy_configurations.png", "Toy: incoming weights W_i at the minimum and at "
        "the permutation point (Fig. 2, top)"), "Toy: hidden weight vectors at the minimum (blue) and at the "
        "permutation point (red) for three pairs (Fig. 2 top; biases not drawn)")
    section.add_figure(plots.curves_vs_distance(
        {f"{p['pair'][0]}⇔{p['pair'][1]}": [(p["curve_distances"], p["curve_losses"])] for p in toy_paths},
        figures / "permutation_barrier_toy_loss.png", "Toy: loss along the merge, every pair (Fig. 2, bottom)",
        "quadratic loss L"), "Toy: loss vs distance of the merged neurons, all pairs (Fig. 2 bottom; d = 0 not drawn)")
    section.add_table(["pair", "barrier", "loss at permutation point", "monotone rise", "converged steps"],
                      [[f"{p['pair'][0]}⇔{p['pair'][1]}", f"{p['barrier']:.4g}", f"{p['permutation_loss']:.4g}",
                        "yes" if p["monotone"] else "no", f"{p['converged_fraction']:.0%}"] for p in toy_paths])

    by_width = {f"H = {h}": [p for p in mnist["paths"] if p["H"] == int(h)] for h in mnist["per_H"]}
    section.add_figure(plots.curves_vs_distance(
        {name: [(p["curve_distances"], p["curve_losses"]) for p in rows] for name, rows in by_width.items()},
        figures / "permutation_barrier_mnist_loss.png", "MNIST: student loss along the merge (Fig. 3A)",
        "L = <|y - f|²> / <y²>"), "MNIST: loss vs distance, one curve per teacher (Fig. 3A; d = 0 not drawn)")
    section.add_figure(plots.curves_vs_distance(
        {name: [(p["curve_distances"], p["curve_accuracy"]) for p in rows] for name, rows in by_width.items()},
        figures / "permutation_barrier_mnist_accuracy.png", "MNIST: training accuracy along the merge (Fig. 3B)",
        "training accuracy"), "MNIST: training accuracy vs distance, one curve per teacher (Fig. 3B)")
    widths = [int(h) for h in mnist["per_H"]]
    section.add_figure(plots.trend(
        {"MNIST": (widths, [v["barrier_mean"] for v in mnist["per_H"].values()])},
        figures / "permutation_barrier_barrier_vs_H.png", "Barrier vs H, mean ± std", "H (neurons per hidden layer)",
        "barrier", errors={"MNIST": [v["barrier_std"] for v in mnist["per_H"].values()]}),
        "Barrier vs hidden width H, mean ± sample std over teachers")
    bounded = all(p.get("barrier_bounds") for p in mnist["paths"])
    section.add_table(
        ["H", "teachers", "teacher train acc", "barrier (mean ± std)", "loss at permutation point", "monotone rise",
         "accuracy drop (pp, mean)", "converged steps", "maxima converged"]
        + (["maximum's bounds (mean lower .. upper)", "lower bound from a converged point"] if bounded else []),
        [[h, v["n_paths"], f"{v['teacher_train_acc_mean']:.4f}", f"{v['barrier_mean']:.3g} ± {v['barrier_std']:.2g}",
          f"{v['permutation_loss_mean']:.3g}", f"{v['n_monotone']}/{v['n_paths']}",
          f"{100 * v['accuracy_drop_mean']:.3f}", f"{v['converged_fraction']:.0%}",
          f"{v['n_barrier_converged']}/{v['n_paths']}"]
         + ([bounds_words(v["barrier_bounds_mean"]), f"{v['n_barrier_bounded']}/{v['n_paths']}"] if bounded else [])
         for h, v in mnist["per_H"].items()])
    if mnist.get("n_dead_pairs"):
        section.add_text(f"{mnist['n_dead_pairs']} of {mnist['n_paths']} merged pairs (the most cosine-similar of "
                         "layer 2) were inactive on every path input: their merge costs nothing (barrier 0).")
    for claim in mnist_claims(summary) + [toy_level_claim(summary)]:
        section.add_claim(claim)
    return section

