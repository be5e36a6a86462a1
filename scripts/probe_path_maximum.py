"""Probe: certify the maxima of MNIST permutation paths by refinement (:mod:`losstopo.path_maximum`). A script, not
part of the packages.

For the chosen teachers of the committed profile's minima stage (``artifacts/permutation_barrier/minima``), run the
merge path exactly as the paths stage's job does (:func:`benchmarks.permutation_barrier.mnist_path_job`: the loss of
§5 against the teacher's own outputs on the profile's ``path_subset`` images, the most cosine-similar pair of layer
2, whitened descent, the profile's convergence rule and ``final_max_iter``), then refine its maximum with
``--budget`` iterations per refined point (two halves) and at most ``--max-refinements`` refinements. One thread.

    PYTHONPATH=. python scripts/probe_path_maximum.py --width 10 --teachers 0 [--profile cpu] [--budget 4000]

Prints per teacher: the path maximum before and after, where, whether certified, refinements, seconds; with
``--out``, the same as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from benchmarks.permutation_barrier.paths import convergence_rule
from benchmarks.permutation_barrier.teachers import own_outputs_loss, teachers_from_thetas
from benchmarks.permutation_barrier.variants import MNIST_DTYPE, MNIST_LAYER, mnist_key, path_request
from losstopo.config import load_params
from losstopo.path_maximum import certify_maxima
from losstopo.permutation import InputWhitening, merge_candidates, permutation_paths
from losstopo.job_data import job_dataset, stage_data
from losstopo.stage_frame import ARTIFACTS, stage_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--teachers", type=int, nargs="+", required=True, help="teacher indices of that width")
    parser.add_argument("--budget", type=int, default=4000, help="iterations per refined point (two halves)")
    parser.add_argument("--max-refinements", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    params = load_params("params.yaml", args.profile)
    config = params.experiments["permutation_barrier"]
    cfg = config.mnist
    rule = dataclasses.replace(convergence_rule(config.convergence), final_max_iter=cfg.final_max_iter)
    minima = stage_dir("permutation_barrier", "minima", ARTIFACTS) / mnist_key(args.width)
    saved = torch.load(minima / "teachers.pt", map_location="cpu", weights_only=True)
    committed_file = stage_dir("permutation_barrier", "paths", ARTIFACTS) / mnist_key(args.width) / "paths.json"
    committed = json.loads(committed_file.read_text())["paths"] if committed_file.is_file() else None

    dataset = job_dataset(stage_data(params, ["mnist"]), path_request(cfg))
    inputs = dataset.x_train.to(MNIST_DTYPE).flatten(1)
    teachers = teachers_from_thetas(saved["thetas"][args.teachers].to(MNIST_DTYPE), list(saved["layer_sizes"]))
    loss_fn = own_outputs_loss(teachers, inputs, normalise=True)
    pairs = [merge_candidates(teacher, MNIST_LAYER) for teacher in teachers]
    whitening = None if cfg.whiten_ridge is None else InputWhitening.fit(inputs, cfg.whiten_ridge)
    print(f"H = {args.width}, teachers {args.teachers}, pairs {pairs}, {len(inputs)} inputs, {cfg.n_steps} steps, "
          f"rule {rule}", flush=True)

    start = time.perf_counter()
    paths = permutation_paths(teachers, MNIST_LAYER, pairs, loss_fn, cfg.n_steps, cfg.final_ratio, rule,
                              whitening=whitening)
    path_s = time.perf_counter() - start
    print(f"paths: {path_s:.0f} s", flush=True)
    start = time.perf_counter()
    maxima = certify_maxima([path.merge for path in paths], loss_fn, args.budget, rule, args.max_refinements,
                            whitening=whitening)
    refine_s = time.perf_counter() - start
    print(f"refinement: {refine_s:.0f} s (all teachers, batched)", flush=True)

    rows = []
    for k, path, maximum in zip(args.teachers, paths, maxima):
        merge = path.merge
        before = float(merge.losses.max())
        rows.append({
            "H": args.width, "teacher": k, "pair": list(pairs[len(rows)]),
            "committed_barrier": committed[k]["barrier"] if committed else None,
            "max_before": before, "argmax_before": int(merge.losses.argmax()), "max_after": maximum.value,
            "argmax_after": maximum.index, "n_points": len(merge.losses), "certified": maximum.certified,
            "refinements": len(maximum.refined), "refined": maximum.refined, "iterations": maximum.iterations,
            "permutation_loss": float(merge.losses[-1]), "final_half_loss": merge.final_half_loss,
            "point_converged": maximum.converged.get(len(merge.losses) - 1),
            "path_s": path_s, "refine_s": refine_s, **maximum.record()})
        row = rows[-1]
        print(f"H = {args.width} teacher {k}: max before {before:.5g} (point {row['argmax_before']}, committed "
              f"{row['committed_barrier']}), after {maximum.value:.5g} (point {maximum.index}; "
              f"{(before - maximum.value) / before:.1%} lower), certified {maximum.certified}, bracketed "
              f"{maximum.bracketed} (lower bound {maximum.lower:.5g}), "
              f"{len(maximum.refined)} refinements {maximum.refined}, {maximum.iterations} iterations; "
              f"loss at d = 0 {row['permutation_loss']:.5g} (converged {row['point_converged']})", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
