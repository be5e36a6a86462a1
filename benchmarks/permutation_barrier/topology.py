"""Stage topology: the numbers behind the claims, per path (barrier, monotone rise, convergence of what each claim
reads) and per MNIST width, in summary.json and topology_metrics.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.permutation_barrier.schema import PermutationBarrierConfig
from benchmarks.permutation_barrier.variants import NAME, TOY_KEY, mnist_key
from losstopo import tracking
from losstopo.config import Params, as_dict
from losstopo.io import load_json, save_json
from losstopo.path_maximum import RELATIVE_TOLERANCE, moved_within
from losstopo.stage_frame import ARTIFACTS, require_complete, stage_dir
from losstopo.stats import bootstrap_ci

# A first half counts as rising monotonically if no step goes down by more than this fraction of
# the path's barrier: smaller dips are invisible on Fig. 3A and within the descent's convergence noise.
MONOTONE_TOLERANCE = 0.01
# "Decreases only marginally" (Fig. 3B), made testable: a drop below 1 percentage point of
# training accuracy -- our reading of Fig. 3B, whose curves stay within about a point of the teacher.
ACCURACY_DROP_THRESHOLD_PP = 1.0


def monotone_rise(losses, permutation_index: int, tolerance: float = MONOTONE_TOLERANCE) -> bool:
    """True if the loss never goes down by more than ``tolerance`` x (max loss of the first half)
    between consecutive points from the minimum (index 0) up to the permutation point."""
    half = np.asarray(losses[:permutation_index + 1], float)
    scale = float(half.max()) if half.size else 0.0
    if scale <= 0:
        return True
    return bool(np.all(np.diff(half) >= -tolerance * scale))


def converged_fraction(record: dict, resolution: float = 0.0) -> float:
    """The fraction of a path's descent steps that converged. MNIST (``half_budget_losses``): the path descended
    again with half the iterations per step, a step is converged when halving its budget moved its loss by at most
    MONOTONE_TOLERANCE x the path's barrier (the claims' resolution) -- measured on the quantity the claims use, since
    a slowly creeping descent meets a per-iteration rule long before its loss settles; a move of at most
    ``resolution`` (the descent's absolute tolerance) counts as none. Otherwise (the toy): the fraction of steps
    whose descent met the rule."""
    steps = range(1, record["merge_points"])
    if "half_budget_losses" in record:
        full, half = record["losses"], record["half_budget_losses"]
        return float(np.mean([moved_within(full[i], half[i], MONOTONE_TOLERANCE, record["barrier"], resolution)
                              for i in steps]))
    return float(np.mean([record["converged"][i] for i in steps])) if len(steps) else 1.0


def permutation_point_converged(record: dict, resolution: float = 0.0) -> bool:
    """The permutation point's loss (where the saddle, accuracy and loss-at-saddle claims read) is converged: the
    second half of its own descent's budget (``final_half_loss``) moved it by at most MONOTONE_TOLERANCE of itself;
    without a final budget, halving the budget of every descent did; without a half-budget run, its descent met the
    rule. A move of at most ``resolution`` counts as none (:func:`moved_within`)."""
    index = record["permutation_index"]
    if "final_half_loss" in record:
        return moved_within(record["losses"][index], record["final_half_loss"], MONOTONE_TOLERANCE,
                            resolution=resolution)
    if "half_budget_losses" in record:
        return moved_within(record["losses"][index], record["half_budget_losses"][index], MONOTONE_TOLERANCE,
                            resolution=resolution)
    return bool(record["converged"][record["merge_points"] - 1])


def barrier(record: dict) -> float:
    """The path's maximum: certified by refinement where the paths stage refined it (``certified_maximum``: never
    above the uniform-budget path's), else the uniform-budget path's."""
    return record.get("certified_maximum", record["barrier"])


def barrier_converged(record: dict, resolution: float = 0.0) -> bool:
    """The path's maximum is converged: refined, its bracket (the converged maximum lies between the largest loss of a
    converged step and it) is within the refinement's tolerance of it; else halving the budget moved it by at most
    MONOTONE_TOLERANCE of itself (without a half-budget run: the descent of the step where it lies met the rule)."""
    if "maximum_bracketed" in record:
        return bool(record["maximum_bracketed"])
    if "half_budget_losses" in record:
        return moved_within(max(record["losses"]), max(record["half_budget_losses"]), MONOTONE_TOLERANCE,
                            record["barrier"], resolution)
    return bool(record["converged"][int(np.argmax(record["losses"][:record["merge_points"]]))])


def barrier_bounds(record: dict) -> tuple[float, float] | None:
    """Where the converged maximum of a refined path lies: above the largest loss of a converged point (less the
    refinement's tolerance, within which that point's own descent may still move) and below the certified maximum
    (a descent only lowers a step's loss); None for a path without refinement."""
    if "maximum_lower_bound" not in record:
        return None
    return max(0.0, record["maximum_lower_bound"] * (1 - RELATIVE_TOLERANCE)), record["certified_maximum"]


def barrier_bounded(record: dict) -> bool:
    """The lower bound of the maximum comes from a point whose descent converged beyond the exact start."""
    return "maximum_lower_bound" in record and record["maximum_lower_bound"] > record["losses"][0]


def summarise_path(record: dict, resolution: float = 0.0) -> dict:
    """One path's barrier, monotone rise, where its maximum lies, and the curves of the merge; a loss that moved
    by at most ``resolution`` counts as converged."""
    index, merge = record["permutation_index"], record["merge_points"]
    height = barrier(record)
    out = {"pair": record["pair"], "barrier": height, "permutation_loss": record["permutation_loss"],
           "monotone": monotone_rise(record["losses"], index),
           "barrier_at_permutation_point": record["permutation_loss"] >= (1 - MONOTONE_TOLERANCE) * height,
           "barrier_refined": "certified_maximum" in record, "uniform_budget_barrier": record["barrier"],
           "refinements": len(record.get("refined", [])),
           "converged_fraction": converged_fraction(record, resolution),
           "half_budget": "half_budget_losses" in record,
           "permutation_point_converged": permutation_point_converged(record, resolution),
           "barrier_converged": barrier_converged(record, resolution),
           "barrier_bounds": barrier_bounds(record), "barrier_bounded": barrier_bounded(record),
           "start_loss": record["losses"][0], "end_loss": record["losses"][-1],
           "curve_distances": record["distances"][:merge], "curve_losses": record["losses"][:merge]}
    if "accuracy" in record:
        out |= {"H": record["H"], "seed": record["seed"], "cosine_similarity": record["cosine_similarity"],
                "active_fraction": record["active_fraction"], "dead_pair": max(record["active_fraction"]) == 0.0,
                "accuracy_start": record["accuracy"][0], "accuracy_permutation": record["accuracy"][index],
                "accuracy_drop": record["accuracy_drop"],
                "accuracy_max_drop": record["accuracy"][0] - min(record["accuracy"]),
                "teacher_train_acc": record["teacher_train_acc"], "teacher_test_acc": record["teacher_test_acc"],
                "curve_accuracy": record["accuracy"][:merge],
                **{k: record.get(k) for k in ("hessian_min_eigenvalue", "hessian_max_eigenvalue",
                                              "gradient_norm_at_permutation_point", "saddle")}}
    else:
        out |= {"start_vectors": record["start_vectors"], "permutation_vectors": record["permutation_vectors"]}
    return out


def _std(values) -> float:
    """Sample standard deviation (ddof = 1); 0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise_widths(paths: list[dict], widths: list[int]) -> dict:
    per_width = {}
    for width in widths:
        rows = [p for p in paths if p["H"] == width]
        barriers = [p["barrier"] for p in rows]
        per_width[str(width)] = {
            "n_paths": len(rows), "barrier_mean": float(np.mean(barriers)), "barrier_std": _std(barriers),
            "permutation_loss_mean": float(np.mean([p["permutation_loss"] for p in rows])),
            "n_monotone": int(sum(p["monotone"] for p in rows)),
            "n_barrier_converged": int(sum(p["barrier_converged"] for p in rows)),
            "n_barrier_bounded": int(sum(p["barrier_bounded"] for p in rows)),
            # mean lower and upper bound of the converged maxima (None unless every path was refined)
            "barrier_bounds_mean": (None if any(p["barrier_bounds"] is None for p in rows) else
                                    np.mean([p["barrier_bounds"] for p in rows], axis=0).tolist()),
            "accuracy_drop_mean": float(np.mean([p["accuracy_drop"] for p in rows])),
            "teacher_train_acc_mean": float(np.mean([p["teacher_train_acc"] for p in rows])),
            "converged_fraction": float(np.mean([p["converged_fraction"] for p in rows])),
        }
    return per_width


def run_topology(config: PermutationBarrierConfig, params: Params, root: Path = ARTIFACTS) -> None:
    """summary.json (everything the report draws and tests) and topology_metrics.json (headline numbers)."""
    require_complete(NAME, "paths", root)
    paths_root = stage_dir(NAME, "paths", root)
    toy = load_json(paths_root / TOY_KEY / "paths.json")
    mnist_records = [load_json(paths_root / mnist_key(w) / "paths.json") for w in config.mnist.widths]
    resolution = config.convergence.abs_tol  # the descent's own "no change" in nats
    mnist_paths = [summarise_path(r, resolution) for variant in mnist_records for r in variant["paths"]]
    drops_pp = [100 * p["accuracy_drop"] for p in mnist_paths]
    n_monotone = int(sum(p["monotone"] for p in mnist_paths))
    summary = {
        "profile": params.profile, "data_source": mnist_records[0]["data_source"], "toy_source": toy["data_source"],
        "data": mnist_records[0].get("data"), "toy_data": toy.get("data"),  # None: paths from before they were recorded
        "monotone_tolerance": MONOTONE_TOLERANCE, "loss_resolution": resolution,
        "accuracy_drop_threshold_pp": ACCURACY_DROP_THRESHOLD_PP,
        "settings": {"toy": as_dict(config.toy), "mnist": as_dict(config.mnist),
                     "convergence": as_dict(config.convergence), "mnist_dtype": mnist_records[0]["dtype"],
                     "n_path_samples": mnist_records[0]["n_path_samples"]},
        "toy": {"paths": [summarise_path(r) for r in toy["paths"]]},
        "mnist": {"paths": mnist_paths, "per_H": summarise_widths(mnist_paths, config.mnist.widths),
                  "n_paths": len(mnist_paths), "n_monotone": n_monotone,
                  "n_dead_pairs": int(sum(p["dead_pair"] for p in mnist_paths)),
                  "monotone_fraction": n_monotone / len(mnist_paths),
                  "accuracy_drop_mean_pp": float(np.mean(drops_pp)), "accuracy_drop_max_pp": float(np.max(drops_pp)),
                  "accuracy_drop_ci_pp": list(bootstrap_ci(drops_pp))},
    }
    metrics = {f"barrier_mean_H{w}": summary["mnist"]["per_H"][str(w)]["barrier_mean"] for w in config.mnist.widths}
    metrics |= {"monotone_fraction": summary["mnist"]["monotone_fraction"],
                "accuracy_drop_mean_pp": summary["mnist"]["accuracy_drop_mean_pp"],
                "accuracy_drop_max_pp": summary["mnist"]["accuracy_drop_max_pp"],
                "toy_barrier_min": min(p["barrier"] for p in summary["toy"]["paths"]),
                "toy_barrier_max": max(p["barrier"] for p in summary["toy"]["paths"])}
    out = stage_dir(NAME, "topology", root) / "summary.json"
    with tracking.stage_run(NAME, "topology", profile=params.profile, device="cpu",
                            params={"monotone_tolerance": MONOTONE_TOLERANCE,
                                    "accuracy_drop_threshold_pp": ACCURACY_DROP_THRESHOLD_PP}):
        save_json(summary, out)
        save_json(metrics, stage_dir(NAME, "topology_metrics.json", root))
        tracking.set_tags({"data_source": summary["data_source"]})
        tracking.log_metrics(metrics)
        tracking.log_artifact(out)
