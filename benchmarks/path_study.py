"""Convergence study that fixes the path budget of a profile before any claim is looked at.

For a few depths of the FC sweep, a few pairs of the already trained minima are joined at doubling
step budgets (one run per setting: with a constant learning rate the path after k steps is the
k-step path, so checkpoints of one long run are the shorter runs), with 19 and 37 points and with the
per-point step cap on and off (with ``step_rule: normalized`` the cap is not used, so there is no
cap-off run), and, where bf16 is fast (CUDA, AMX CPUs), with bf16 steps beside the fp32 ones. The chosen
budget is the smallest at which, for the profile's own setting, every path maximum changes by less than
``tolerance`` (relative) when the budget doubles.

    python -m benchmarks.path_study --profile cpu [--depths 2 4 8] [--pairs 2] [--budgets 250 ... 4000]

Writes ``artifacts/fc_depth/path_study/study.json`` and its figure, and prints the chosen budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import fc_depth
from losstopo.job_data import DataRequest, job_dataset, job_provenance, stage_data
from losstopo.paths_stage import path_loss
from losstopo.stage_frame import ARTIFACTS, stage_dir
from losstopo import plots
from losstopo.config import load_params
from losstopo.io import save_json
from losstopo.models import build_model
from losstopo.paths import evaluate_in_chunks, optimize_paths, path_converged
from losstopo.schedules import piecewise_linear_lr
from losstopo.stacked import StackedModel, fast_bf16

DEFAULT_BUDGETS = (250, 500, 1000, 2000, 4000)


@dataclasses.dataclass(frozen=True)
class StudyRun:
    n_points: int
    clip_norm: float | None
    steps: int
    bf16: bool = False


def settings(n_points: int, clip_norm: float | None, bf16: bool = False, step_rule: str = "sgd") -> str:
    cap = "normalized steps" if step_rule == "normalized" else f"cap {'on' if clip_norm is not None else 'off'}"
    return f"{n_points} points, {cap}{', bf16 steps' if bf16 else ''}"


def study_runs(n_points: int, clip_norm: float | None, step_rule: str, longest: int, bf16: bool) -> list[StudyRun]:
    """The profile's own setting over all budgets; 2n-1 points, cap off (where the rule uses the cap) and
    bf16 steps (where they are fast) up to half of it."""
    runs = [StudyRun(n_points, clip_norm, longest), StudyRun(2 * n_points - 1, clip_norm, longest // 2)]
    if step_rule != "normalized" and clip_norm is not None:
        runs.append(StudyRun(n_points, None, longest // 2))
    if bf16:
        runs.append(StudyRun(n_points, clip_norm, longest // 2, bf16=True))
    return runs


def decaying_lr(lr: float, steps: int):
    """``lr`` for the first half of ``steps``, then linearly to 0 at the end: the stage's
    ``schedule: piecewise`` with m1 = steps / 2, m2 = steps (in steps), lr_min 0."""
    return lambda step: piecewise_linear_lr(step, 1, steps / 2, steps, lr, 0.0)


def largest_relative_difference(reference: dict[int, list[float]], other: dict[int, list[float]]) -> float:
    """max over shared budgets and paths of |other - reference| / |reference|."""
    return max(float(np.max(np.abs(np.subtract(other[b], reference[b])) / np.abs(reference[b])))
               for b in other if b in reference)


def chosen_budget(maxima: dict[int, list[float]], tolerance: float, floors: list[float] | None = None) -> int | None:
    """Smallest budget B whose maxima all change by < tolerance (relative) at 2B, or already lie within
    tolerance of their floor (``floors``: each path's higher endpoint loss, see paths.path_converged);
    None if none does."""
    budgets = sorted(maxima)
    floors = floors if floors is not None else [0.0] * len(maxima[budgets[0]])
    for low in budgets:
        # without a measured doubling, only the floor can say a maximum is converged
        change = (np.abs(np.subtract(maxima[2 * low], maxima[low])) / np.abs(maxima[2 * low]) if 2 * low in maxima
                  else np.full(len(floors), np.inf))
        if all(path_converged(c, m, f, tolerance) for c, m, f in zip(change, maxima[low], floors)):
            return low
    return None


def study(profile: str, depths: list[int], n_pairs: int, budgets: list[int], tolerance: float,
          root: Path = ARTIFACTS, params_path: str = "params.yaml", lr: float | None = None,
          own_only: bool = False, decay: bool = False) -> dict:
    """``lr`` overrides the profile's step size (a candidate setting); ``own_only`` runs the profile's own
    setting alone (no 2n-1 points, cap-off or bf16 runs); ``decay``: every budget B its own run with
    :func:`decaying_lr` (minibatch noise is annealed away instead of setting a floor under the maxima)."""
    params = load_params(params_path, profile)
    config = params.experiment("fc_depth")
    cfg = config.paths if lr is None else dataclasses.replace(config.paths, lr=lr)
    data = stage_data(params, ["mnist"])
    bf16 = fast_bf16(torch.device("cpu"))
    runs = study_runs(cfg.n_points, cfg.clip_norm, cfg.step_rule, max(budgets), bf16)[:1 if own_only else None]
    pairs = list(itertools.combinations(range(config.minima.n_minima), 2))[:n_pairs]
    request = DataRequest("mnist", cfg.train_subset, 0, config.minima.seed)
    dataset, provenance = job_dataset(data, request), job_provenance(data, request)
    by_key = {v.labels["depth"]: v for v in fc_depth.variants(config) if v.dataset == "mnist" and not v.replicate}
    rows, floors = [], {}
    for depth in depths:
        variant = by_key[depth]
        thetas = torch.load(stage_dir("fc_depth", "minima", root) / variant.key / "minima.pt",
                            map_location="cpu", weights_only=True)["thetas"]
        module = build_model(variant.model, dataset.x_train.shape[1:], dataset.n_classes)
        starts, ends = thetas[[i for i, _ in pairs]], thetas[[j for _, j in pairs]]
        end_losses = evaluate_in_chunks(path_loss(StackedModel(module), dataset, cfg), torch.cat([starts, ends]),
                                        cfg.max_models).view(2, -1)
        floors[depth] = end_losses.max(dim=0).values.tolist()
        for run in runs:
            loss_fn = path_loss(StackedModel(module), dataset, dataclasses.replace(cfg, mixed_precision=run.bf16))
            label = settings(run.n_points, run.clip_norm, run.bf16, cfg.step_rule)
            started = time.perf_counter()

            def optimise(steps: int, checkpoints: list[int]) -> list:
                return optimize_paths(
                    loss_fn, starts, ends, n_points=run.n_points, lr=decaying_lr(cfg.lr, steps) if decay else cfg.lr,
                    steps=steps, momentum=cfg.momentum, weight_decay=cfg.weight_decay, clip_norm=run.clip_norm,
                    alphas=cfg.alphas, max_models=cfg.max_models, step_rule=cfg.step_rule, sample=cfg.sample,
                    seed=config.minima.seed,
                    progress=params.runtime.progress, description=f"depth {depth}, {label}, {steps} steps",
                    checkpoints=checkpoints)

            if decay:  # a schedule that depends on the budget: one run per budget
                maxima = {b: [r.max_loss for r in optimise(b, [])] for b in budgets if b <= run.steps}
            else:  # constant lr: checkpoints of one run are the shorter runs
                results = optimise(run.steps, [b for b in budgets if b < run.steps])
                maxima = {b: [r.max_at_steps[b] for r in results] for b in budgets if b <= run.steps}
            rows.append({"depth": depth, **dataclasses.asdict(run), "label": label,
                         "seconds": time.perf_counter() - started, "pairs": pairs, "maxima": maxima})
            print(f"depth {depth}, {label}: "
                  + ", ".join(f"{b}: {np.mean(v):.4f}" for b, v in rows[-1]["maxima"].items()), flush=True)
    own = [r for r in rows if r["n_points"] == cfg.n_points and r["clip_norm"] == cfg.clip_norm and not r["bf16"]]
    merged = {b: [m for r in own for m in r["maxima"][b]] for b in budgets}
    merged_floors = [f for r in own for f in floors[r["depth"]]]
    bf16_rows = {r["depth"]: r for r in rows if r["bf16"]}
    bf16_difference = {depth: largest_relative_difference(own_row["maxima"], bf16_rows[depth]["maxima"])
                       for own_row in own for depth in [own_row["depth"]] if depth in bf16_rows}
    return {"step_rule": cfg.step_rule, "sample": cfg.sample, "lr": cfg.lr, "momentum": cfg.momentum,
            "schedule": "lr to B/2, then linear to 0 at B (one run per budget B)" if decay else "constant",
            "bf16_largest_relative_difference": bf16_difference,
            "profile": profile, "depths": depths, "budgets": budgets, "tolerance": tolerance,
            "path_subset": len(dataset.y_train), "data_source": dataset.source, "data": provenance.as_dict(),
            "runs": rows,
            "rule": f"smallest budget B at which every path maximum of the profile's setting "
                    f"({settings(cfg.n_points, cfg.clip_norm, step_rule=cfg.step_rule)}) changes by "
                    f"< {tolerance:.0%} at 2B or lies within {tolerance:.0%} of its floor (the higher endpoint's loss)",
            "chosen_steps": chosen_budget(merged, tolerance, merged_floors), "floors": floors, "profile_steps": cfg.steps}


def figure(result: dict, path: Path) -> Path:
    data = {}
    for row in result["runs"]:
        label = f"depth {row['depth']}, {row['label']}"
        budgets = sorted(int(b) for b in row["maxima"])
        data[label] = (budgets, [float(np.mean(row["maxima"][b])) for b in budgets])
    return plots.trend(data, path, f"Path maximum vs step budget, MNIST ({result['profile']} profile)",
                       "optimisation steps", "mean path maximum", logx=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(DEFAULT_BUDGETS))
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=None, help="a candidate step size instead of the profile's")
    parser.add_argument("--own-only", action="store_true", help="only the profile's own setting (n points, fp32)")
    parser.add_argument("--decay", action="store_true", help="one run per budget, lr decaying to 0 over its second half")
    args = parser.parse_args(argv)
    result = study(args.profile, args.depths, args.pairs, sorted(args.budgets), args.tolerance, lr=args.lr,
                   own_only=args.own_only, decay=args.decay)
    out = stage_dir("fc_depth", "path_study")
    suffix = ("" if args.lr is None else f"-lr{args.lr:g}") + ("-decay" if args.decay else "")
    result["figure"] = str(figure(result, out / f"path_budget{suffix}.png"))
    save_json(result, out / f"study{suffix}.json")
    print(f"chosen budget: {result['chosen_steps']} steps ({result['rule']}); profile uses {result['profile_steps']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
