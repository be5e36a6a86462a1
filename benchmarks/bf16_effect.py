"""What bf16 path steps do to the FC barcodes: a profile's Algorithm 3 paths of some variants, optimised once
with fp32 steps and once with bf16 steps (autocast on the minibatch losses only; every reported maximum and the
minima's losses are evaluated in fp32 in both), compared maximum by maximum and bar by bar, with the wall time of
each. With ``--training``, what bf16 training steps (``minima.mixed_precision_cpu``) do to the minima instead: a
variant's minima trained twice from the same seeds, fp32 and bf16 steps, their final training losses (fp32)
compared minimum by minimum.

    python -m benchmarks.bf16_effect --profile cpu --variants mnist-fc-4-32
    python -m benchmarks.bf16_effect --profile cpu --variants mnist-fc-4-32 --training --max-epochs 3

Writes ``artifacts/fc_depth/bf16_effect/<variant>.json`` (``<variant>-training.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import numpy as np
import torch

from benchmarks import fc_depth
from benchmarks.path_study import largest_relative_difference
from losstopo.job_data import DataRequest, job_dataset, stage_data
from losstopo.minima_stage import MinimaJob, Variant, minima_job, replicate_config
from losstopo.paths_stage import PathsJob, merge_path_jobs, paths_job
from losstopo.stage_frame import ARTIFACTS, stage_dir
from losstopo.topology_stage import path_max_matrix
from losstopo.config import load_params
from losstopo.errors import LosstopoError
from losstopo.io import save_json
from losstopo.stacked import fast_bf16
from losstopo.topology import barcode_of_minima, to_score
from losstopo.train import MinimaResult

PRECISIONS = {"fp32": False, "bf16": True}


def bars_differ(first, second, resolution: float) -> list[int]:
    """Minima whose bar (birth or death) differs by more than ``resolution`` between two barcodes."""
    return [k for k, ((b1, d1), (b2, d2)) in enumerate(zip(first, second))
            if abs(b1 - b2) > resolution or (np.isfinite(d1) != np.isfinite(d2))
            or (np.isfinite(d1) and abs(d1 - d2) > resolution)]


def bf16_variant(config: fc_depth.FCDepthConfig, profile: str, key: str) -> Variant:
    variants = {v.key: v for v in fc_depth.variants(config)}
    if key not in variants:
        raise LosstopoError(f"no fc_depth variant {key!r} at profile {profile!r}; one of {', '.join(variants)}")
    if not fast_bf16(torch.device("cpu")):
        raise LosstopoError("this CPU has no fast bf16 (AMX or AVX512-BF16): the bf16 steps would not be taken")
    return variants[key]


def compare(profile: str, key: str, params_path: str = "params.yaml", root=ARTIFACTS) -> dict:
    params = load_params(params_path, profile)
    config = params.experiment("fc_depth")
    variant = bf16_variant(config, profile, key)
    data = stage_data(params, [variant.dataset])
    thetas = torch.load(stage_dir("fc_depth", "minima", root) / key / "minima.pt", map_location="cpu",
                        weights_only=True)["thetas"]
    pairs = tuple(itertools.combinations(range(len(thetas)), 2))
    request = DataRequest(variant.dataset, config.paths.train_subset, 0, config.minima.seed)
    records, walls = {}, {}
    for precision, bf16 in PRECISIONS.items():
        cfg = dataclasses.replace(config.paths, mixed_precision=bf16)
        job = PathsJob(key, variant.model, data, request, cfg, pairs, config.minima.seed, "cpu",
                       params.runtime.progress, f"{key} paths, {precision} steps")
        started = time.perf_counter()
        records[precision] = {"pairs": list(pairs), **merge_path_jobs(len(thetas), [paths_job({key: thetas}, job)])}
        walls[precision] = time.perf_counter() - started
    resolution, steps = config.paths.converge_abs, config.paths.steps
    bars = {p: barcode_of_minima(r["minima_losses"], path_max_matrix(r), config.topology.method)
            for p, r in records.items()}
    return {"profile": profile, "variant": key, "pairs": len(pairs), "steps": steps,
            "threads": torch.get_num_threads(), "wall_s": walls,
            "max_loss": {p: r["max_loss"] for p, r in records.items()},
            "largest_relative_difference": largest_relative_difference({steps: records["fp32"]["max_loss"]},
                                                                       {steps: records["bf16"]["max_loss"]}),
            "largest_absolute_difference": float(np.max(np.abs(np.subtract(records["bf16"]["max_loss"],
                                                                           records["fp32"]["max_loss"])))),
            "bars": bars, "to_score": {p: to_score(b) for p, b in bars.items()}, "resolution": resolution,
            "bars_changed": bars_differ(bars["fp32"], bars["bf16"], resolution)}


def compare_training(profile: str, key: str, max_epochs: int | None = None, params_path: str = "params.yaml") -> dict:
    """The variant's minima as its minima stage trains them (``max_epochs``: a shorter cap), once per precision."""
    params = load_params(params_path, profile)
    config = params.experiment("fc_depth")
    variant = bf16_variant(config, profile, key)
    minima = config.minima_for(variant.dataset)
    request = DataRequest(variant.dataset, minima.train_subset, minima.test_subset, minima.seed)
    minima = dataclasses.replace(replicate_config(minima, variant), max_epochs=max_epochs or minima.max_epochs)
    data = stage_data(params, [variant.dataset])
    job_dataset(data, request)  # loaded once, outside the timings
    results, walls = {}, {}
    for precision, bf16 in PRECISIONS.items():
        job = MinimaJob(variant.model, data, request, dataclasses.replace(minima, mixed_precision_cpu=bf16), "cpu",
                        None, params.runtime.progress, f"{key} minima, {precision} steps")
        started = time.perf_counter()
        results[precision] = minima_job(None, job)["result"]
        walls[precision] = time.perf_counter() - started
    return {"profile": profile, "variant": key, "max_epochs": minima.max_epochs, "threads": torch.get_num_threads(),
            "wall_s": walls, **training_differences(results["fp32"], results["bf16"])}


def training_differences(fp32: MinimaResult, bf16: MinimaResult) -> dict:
    """Per minimum, each run's final training loss (evaluated in fp32 at the returned weights), test accuracy and
    best epoch; per run, the epochs run; the largest relative difference of the training losses."""
    runs = {"fp32": fp32, "bf16": bf16}
    return {"train_loss": {p: r.train_loss for p, r in runs.items()},
            "test_acc": {p: r.test_acc for p, r in runs.items()},
            "largest_relative_difference": largest_relative_difference({0: fp32.train_loss}, {0: bf16.train_loss}),
            "epochs_run": {p: len(r.history) for p, r in runs.items()},
            "best_epoch": {p: r.epochs for p, r in runs.items()}}


def report_paths(key: str, profile: str) -> None:
    result = compare(profile, key)
    save_json(result, stage_dir("fc_depth", "bf16_effect") / f"{key}.json")
    print(f"{key}: path maxima differ by at most {result['largest_relative_difference']:.2%} "
          f"({result['largest_absolute_difference']:.2g} nats); bars changed beyond {result['resolution']:g}: "
          f"{result['bars_changed'] or 'none'}; TO-score fp32 {result['to_score']['fp32']:.4g}, bf16 "
          f"{result['to_score']['bf16']:.4g}; wall fp32 {result['wall_s']['fp32']:.0f} s, bf16 "
          f"{result['wall_s']['bf16']:.0f} s")


def report_training(key: str, profile: str, max_epochs: int | None) -> None:
    result = compare_training(profile, key, max_epochs)
    save_json(result, stage_dir("fc_depth", "bf16_effect") / f"{key}-training.json")
    losses = ", ".join(f"{a:.4g}/{b:.4g}" for a, b in zip(result["train_loss"]["fp32"], result["train_loss"]["bf16"]))
    print(f"{key}: final training losses fp32/bf16 {losses}: differ by at most "
          f"{result['largest_relative_difference']:.2%}; epochs fp32 {result['epochs_run']['fp32']}, bf16 "
          f"{result['epochs_run']['bf16']}; wall fp32 {result['wall_s']['fp32']:.0f} s, bf16 "
          f"{result['wall_s']['bf16']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--variants", nargs="+", default=["mnist-fc-4-32"])
    parser.add_argument("--training", action="store_true", help="bf16 training steps instead of path steps")
    parser.add_argument("--max-epochs", type=int, default=None, help="--training: cap on the epochs (default: the "
                                                                     "profile's minima.max_epochs)")
    args = parser.parse_args(argv)
    for key in args.variants:
        if args.training:
            report_training(key, args.profile, args.max_epochs)
        else:
            report_paths(key, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
