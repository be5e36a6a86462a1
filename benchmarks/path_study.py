"""Convergence study that fixes the path budget of a profile before any claim is looked at.

For a few depths of the FC sweep, a few pairs of the already trained minima are joined at doubling
step budgets (one run per setting: with a constant learning rate the path after k steps is the
k-step path, so checkpoints of one long run are the shorter runs), with 19 and 37 points and with the
per-point step cap on and off. The chosen budget is the smallest at which, for the profile's own
setting, every path maximum changes by less than ``tolerance`` (relative) when the budget doubles.

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
from benchmarks.stages import ARTIFACTS, DataRequest, job_dataset, path_loss, stage_data, stage_dir
from losstopo import plots
from losstopo.config import load_params
from losstopo.io import save_json
from losstopo.models import build_model
from losstopo.paths import optimize_paths
from losstopo.stacked import StackedModel

DEFAULT_BUDGETS = (250, 500, 1000, 2000, 4000)


def settings(n_points: int, clip_norm: float | None) -> str:
    return f"{n_points} points, cap {'on' if clip_norm is not None else 'off'}"


def chosen_budget(maxima: dict[int, list[float]], tolerance: float) -> int | None:
    """Smallest budget B whose maxima all change by < tolerance (relative) at 2B; None if none does."""
    budgets = sorted(maxima)
    for low, high in zip(budgets, budgets[1:]):
        if high == 2 * low:
            change = np.abs(np.subtract(maxima[high], maxima[low])) / np.abs(maxima[high])
            if np.all(change < tolerance):
                return low
    return None


def study(profile: str, depths: list[int], n_pairs: int, budgets: list[int], tolerance: float,
          root: Path = ARTIFACTS, params_path: str = "params.yaml") -> dict:
    params = load_params(params_path, profile)
    config = params.experiment("fc_depth")
    cfg = config.paths
    data = stage_data(params, ["mnist"])
    runs = [(cfg.n_points, cfg.clip_norm, max(budgets)), (cfg.n_points, None, max(budgets) // 2),
            (2 * cfg.n_points - 1, cfg.clip_norm, max(budgets) // 2)]
    pairs = list(itertools.combinations(range(config.minima.n_minima), 2))[:n_pairs]
    dataset = job_dataset(data, DataRequest("mnist", cfg.train_subset, 0, config.minima.seed))
    by_key = {v.labels["depth"]: v for v in fc_depth.variants(config) if v.dataset == "mnist" and not v.replicate}
    rows = []
    for depth in depths:
        variant = by_key[depth]
        thetas = torch.load(stage_dir("fc_depth", "minima", root) / variant.key / "minima.pt",
                            map_location="cpu", weights_only=True)["thetas"]
        module = build_model(variant.model, dataset.x_train.shape[1:], dataset.n_classes)
        loss_fn = path_loss(StackedModel(module), dataset, cfg)
        starts, ends = thetas[[i for i, _ in pairs]], thetas[[j for _, j in pairs]]
        for n_points, clip_norm, steps in runs:
            started = time.perf_counter()
            results = optimize_paths(
                loss_fn, starts, ends, n_points=n_points, lr=cfg.lr, steps=steps, momentum=cfg.momentum,
                weight_decay=cfg.weight_decay, clip_norm=clip_norm, alphas=cfg.alphas, max_models=cfg.max_models,
                step_rule=cfg.step_rule,
                seed=config.minima.seed, progress=params.runtime.progress,
                description=f"depth {depth}, {settings(n_points, clip_norm)}",
                checkpoints=[b for b in budgets if b < steps])
            rows.append({"depth": depth, "n_points": n_points, "clip_norm": clip_norm, "steps": steps,
                         "seconds": time.perf_counter() - started, "pairs": pairs,
                         "maxima": {b: [r.max_at_steps[b] for r in results] for b in budgets if b <= steps}})
            print(f"depth {depth}, {settings(n_points, clip_norm)}: "
                  + ", ".join(f"{b}: {np.mean(v):.4f}" for b, v in rows[-1]["maxima"].items()), flush=True)
    own = [r for r in rows if r["n_points"] == cfg.n_points and r["clip_norm"] == cfg.clip_norm]
    merged = {b: [m for r in own for m in r["maxima"][b]] for b in budgets}
    return {"profile": profile, "depths": depths, "budgets": budgets, "tolerance": tolerance,
            "path_subset": len(dataset.y_train), "data_source": dataset.source, "runs": rows,
            "rule": f"smallest budget B at which every path maximum of the profile's setting "
                    f"({settings(cfg.n_points, cfg.clip_norm)}) changes by < {tolerance:.0%} at 2B",
            "chosen_steps": chosen_budget(merged, tolerance), "profile_steps": cfg.steps}


def figure(result: dict, path: Path) -> Path:
    data = {}
    for row in result["runs"]:
        label = f"depth {row['depth']}, {settings(row['n_points'], row['clip_norm'])}"
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
    args = parser.parse_args(argv)
    result = study(args.profile, args.depths, args.pairs, sorted(args.budgets), args.tolerance)
    out = stage_dir("fc_depth", "path_study")
    result["figure"] = str(figure(result, out / "path_budget.png"))
    save_json(result, out / "study.json")
    print(f"chosen budget: {result['chosen_steps']} steps ({result['rule']}); profile uses {result['profile_steps']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
