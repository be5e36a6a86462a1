"""The topology stage: a variant's barcode of minima from the paths ``paths.method`` asks for (per pair the lowest
maximum over the path methods), with the digests of the paths it was built from, which the report checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from losstopo import tracking
from losstopo.config import Params, as_dict
from losstopo.errors import ConfigError, LosstopoError
from losstopo.io import load_json, save_json
from losstopo.minima_stage import Variant
from losstopo.paths import at_floor
from losstopo.paths_stage import STAGE_METHOD
from losstopo.stage_frame import ARTIFACTS, prune, require_complete, stage_dir
from losstopo.topology import barcode_of_minima, segment_lengths, to_score

def best_paths(records: dict[str, dict], tolerance: float = 0.01, absolute: float = 0.0) -> dict:
    """Per pair the lowest maximum over the path methods' records (method -> paths.json record, same pairs):
    every path between two minima bounds their minimax value from above, so the lowest one is the best estimate
    of the bar it defines. Returns the pair-wise ``max_loss``, ``method`` (which one defined it) and
    ``relative_change`` of that path, ``converged`` when that path converged and either lies at its floor (the
    higher endpoint's loss, within ``tolerance`` and ``absolute`` as in :func:`path_converged`: nothing can go
    lower) or every other method's path converged too (an unconverged higher path could still end lower), and
    each method's maxima under ``max_loss_by_method``."""
    methods = list(records)
    first = records[methods[0]]
    for method in methods[1:]:
        if [tuple(p) for p in records[method]["pairs"]] != [tuple(p) for p in first["pairs"]]:
            raise ConfigError(f"{first['variant']}: the {method} and {methods[0]} paths join different pairs; "
                              f"rerun both stages")
    maxima = np.array([records[m]["max_loss"] for m in methods], dtype=float)  # (methods, pairs)
    chosen = np.argmin(maxima, axis=0)  # ties: the first method listed
    def pick(key):
        return [records[methods[c]].get(key, [None] * len(chosen))[p] for p, c in enumerate(chosen)]
    return {"max_loss": maxima[chosen, np.arange(len(chosen))].tolist(),
            "method": [methods[c] for c in chosen],
            "converged": [_best_converged(records, methods, methods[c], p, tolerance, absolute)
                          for p, c in enumerate(chosen)],
            "relative_change": pick("relative_change"), "orthogonal_grad_norm": pick("orthogonal_grad_norm"),
            "max_loss_by_method": {m: records[m]["max_loss"] for m in methods},
            "converged_by_method": {m: records[m].get("converged") for m in methods}}


def _best_converged(records: dict[str, dict], methods: list[str], chosen: str, p: int, tolerance: float,
                    absolute: float) -> bool:
    record = records[chosen]
    i, j = record["pairs"][p]
    floor = max(record["minima_losses"][i], record["minima_losses"][j])
    return bool(record["converged"][p] and (at_floor(record["max_loss"][p], floor, tolerance, absolute)
                                            or all(records[m]["converged"][p] for m in methods)))


def method_stages(method: str) -> list[str]:
    """The stages whose paths ``paths.method`` uses (alg3: paths, polychain: curves; best: both)."""
    return [stage for stage, m in STAGE_METHOD.items() if method in (m, "best")]


def paths_digests(experiment: str, key: str, stages: Iterable[str], root: Path = ARTIFACTS) -> dict[str, str]:
    """sha256 of each stage's paths.json of a variant (missing: "missing"); a topology records those it used."""
    digests = {}
    for stage in stages:
        path = stage_dir(experiment, stage, root) / key / "paths.json"
        digests[stage] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    return digests


def load_topology(experiment: str, key: str, root: Path = ARTIFACTS) -> dict:
    """A variant's topology.json, refused (one line) when the paths it was built from have changed since."""
    topology = load_json(stage_dir(experiment, "topology", root) / key / "topology.json")
    recorded = topology.get("paths_digest")
    if recorded is not None and recorded != paths_digests(experiment, key, recorded, root):
        raise LosstopoError(f"{experiment} {key}: the topology is older than its paths (paths.json changed since); "
                            f"run `losstopo stage {experiment} topology` before the report")
    return topology


def variant_paths(experiment: str, key: str, method: str, root: Path = ARTIFACTS) -> tuple[dict[str, dict],
                                                                                           dict[str, str]]:
    """The paths.json records ``paths.method`` asks for, by path method, and the sha256 of each file by stage
    (what :func:`load_topology` checks later)."""
    records, digests = {}, {}
    for stage in method_stages(method):
        path = stage_dir(experiment, stage, root) / key / "paths.json"
        if not path.is_file():
            raise LosstopoError(f"{experiment} topology: {path} is missing (paths.method {method!r} needs the "
                                f"{stage} stage's output); run `losstopo stage {experiment} {stage}` first")
        content = path.read_bytes()
        record = json.loads(content)
        records[record.get("method", STAGE_METHOD[stage])] = record
        digests[stage] = hashlib.sha256(content).hexdigest()
    return records, digests


def path_max_matrix(record: dict, key: str = "max_loss") -> np.ndarray:
    """(n, n) symmetric matrix of ``record[key]`` over ``record["pairs"]``; NaN where no pair was joined."""
    n = len(record["minima_losses"])
    matrix = np.full((n, n), np.nan)
    for (i, j), value in zip(record["pairs"], record[key]):
        matrix[i, j] = matrix[j, i] = value
    return matrix


def run_topology(experiment: str, variants: list[Variant], config, params: Params, root: Path = ARTIFACTS) -> None:
    for stage in method_stages(config.paths.method):
        require_complete(experiment, stage, root)
    out_root = stage_dir(experiment, "topology", root)
    metrics = {}
    all_records = {v.key: variant_paths(experiment, v.key, config.paths.method, root) for v in variants}
    prune(out_root, {v.key for v in variants})  # only now: every variant's paths were read
    with tracking.stage_run(experiment, "topology", profile=params.profile, device="cpu",
                            params={"topology": as_dict(config.topology)}):
        for variant in variants:
            records, digests = all_records[variant.key]
            record = next(iter(records.values()))
            combined = best_paths(records, config.paths.converge_tol, config.paths.converge_abs)
            losses, matrix = record["minima_losses"], path_max_matrix({**record, **combined})
            bars = {method: barcode_of_minima(losses, matrix, method) for method in ("paper", "persistence")}
            chosen = bars[config.topology.method]
            by_method = {m: to_score(barcode_of_minima(losses, path_max_matrix(r), config.topology.method))
                         for m, r in records.items()}
            result = {
                "variant": variant.key, "labels": variant.labels, "data_source": record["data_source"],
                "data_kind": record["data_kind"], "data": record.get("data"),  # None: paths from before it was recorded
                "method": config.topology.method, "bars": chosen,
                "bars_paper": bars["paper"], "bars_persistence": bars["persistence"],
                "to_score": to_score(chosen), "to_score_persistence": to_score(bars["persistence"]),
                "segment_lengths": segment_lengths(chosen), "path_max": combined["max_loss"],
                "straight_max": record["straight_max_loss"], "profile": params.profile,
                "paths_converged": combined["converged"], "paths_relative_change": combined["relative_change"],
                "orthogonal_grad_norm": combined["orthogonal_grad_norm"],
                "path_method": combined["method"], "path_max_by_method": combined["max_loss_by_method"],
                "paths_converged_by_method": combined["converged_by_method"], "to_score_by_method": by_method,
                "paths_digest": digests,
            }
            out = out_root / variant.key / "topology.json"
            save_json(result, out)
            with tracking.variant_run(variant.key, data_source=record["data_source"]):
                tracking.log_metrics({"to_score": result["to_score"],
                                      "to_score_persistence": result["to_score_persistence"]}
                                     | {f"bar_{k}_death": d for k, (_, d) in enumerate(chosen) if np.isfinite(d)})
                tracking.log_artifact(out)
            metrics[variant.key] = {"to_score": result["to_score"]}
        save_json(metrics, stage_dir(experiment, "topology_metrics.json", root))
