"""The frame every compute stage runs in: its output folder, the device, the MLflow stage run, the cache of
finished jobs, the record that makes its outputs one unit (checked by the stages that read them), and the pruning
of variants a profile no longer runs."""

from __future__ import annotations

import hashlib
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch

from losstopo import tracking
from losstopo.config import DataConfig, Params
from losstopo.errors import ConfigError, LosstopoError
from losstopo.executor import Executor, JobCache, make_executor
from losstopo.io import load_json, remove_orphans, save_json
from losstopo.job_data import stage_data
from losstopo.machine import cpu_description

ARTIFACTS = Path("artifacts")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"params: runtime.device is {name!r}, but this machine's torch sees "
                          f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA device(s); "
                          f"use auto or cpu")
    return device


STAGE_TIMING = "stage.json"  # in a compute stage's output folder: its wall time and where it ran
NOT_RUN = "NOT_RUN.json"  # in a stage's output folder: why it computed nothing


def stage_dir(experiment: str, stage: str, root: Path = ARTIFACTS) -> Path:
    return root / experiment / stage


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` but the stage record itself, by path relative to it."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != STAGE_TIMING}


def require_complete(experiment: str, stage: str, root: Path = ARTIFACTS) -> None:
    """A compute stage's outputs are one unit: its record (STAGE_TIMING) is removed when a run starts writing and
    written, naming every file's sha256, when it ends. Raises, naming the stage to rerun, when the record is missing
    (the last run stopped half way) or a file differs from it; a record without file hashes (written before they
    were kept) is trusted as it is."""
    directory = stage_dir(experiment, stage, root)
    rerun = f"run it (dvc repro, or python -m losstopo.cli stage {experiment} {stage})"
    if (directory / NOT_RUN).is_file():
        return
    if not (directory / STAGE_TIMING).is_file():
        raise LosstopoError(f"{experiment} {stage}: no finished run of this stage (never run, or its last run stopped "
                            f"half way); {rerun}")
    recorded = load_json(directory / STAGE_TIMING).get("files")
    if recorded is None:
        return
    found = file_digests(directory)
    changed = sorted(name for name in recorded.keys() | found.keys() if recorded.get(name) != found.get(name))
    if changed:
        raise LosstopoError(f"{experiment} {stage}: {changed[0]} is not what the stage wrote"
                            + (f" (and {len(changed) - 1} more file(s))" if len(changed) > 1 else "") + f"; {rerun}")


def stage_timing(experiment: str, stage: str, root: Path = ARTIFACTS) -> dict | None:
    """A compute stage's STAGE_TIMING record (wall time, where it ran), or None if it has none."""
    path = stage_dir(experiment, stage, root) / STAGE_TIMING
    return load_json(path) if path.is_file() else None


@contextmanager
def compute_stage(params: Params, experiment: str, stage: str, datasets: Iterable[str], logged: dict,
                  root: Path = ARTIFACTS, keep: set[str] | None = None,
                  inputs: Iterable[str] = ()) -> Iterator[tuple[DataConfig, Executor, JobCache]]:
    """The frame of a compute stage: checks every dataset it needs, opens its MLflow stage run (logging
    ``logged``) and yields the data settings for its jobs, the executor chosen in params (or on the command
    line) and the stage's cache of finished jobs. The cache is cleared once the stage's outputs are written;
    a stage that raises keeps it, so that a rerun does only the unfinished jobs. ``keep``: the variant folders
    to keep in the stage's output; the others are removed, but only after every dataset has been checked.
    ``inputs``: the experiment's stages whose outputs this one reads, each checked complete first
    (:func:`require_complete`); this stage's own record goes before it writes and comes back, with every file's
    hash, when it ends."""
    started = time.perf_counter()
    for upstream in inputs:
        require_complete(experiment, upstream, root)
    orphans = remove_orphans(stage_dir(experiment, stage, root))
    if orphans:
        print(f"{experiment} {stage}: removed {len(orphans)} unfinished write(s) of a killed run, e.g. {orphans[0].name}")
    data = stage_data(params, datasets)
    if keep is not None:
        prune(stage_dir(experiment, stage, root), keep)
    executor, cache = make_executor(params.executor, params.ray), JobCache(root / ".jobs" / experiment / stage)
    device = str(resolve_device(params.runtime.device))
    record = stage_dir(experiment, stage, root) / STAGE_TIMING
    record.unlink(missing_ok=True)  # from here until the end, the outputs are not a finished unit
    with tracking.stage_run(experiment, stage, profile=params.profile, device=device, params=logged) as run:
        yield data, executor, cache
        wall = time.perf_counter() - started
        tracking.log_metrics({"stage_wall_s": wall})
    save_json({"experiment": experiment, "stage": stage, "profile": params.profile, "device": device,
               "executor": executor.name, "threads": torch.get_num_threads(), "cpu": cpu_description(), "wall_s": wall,
               "cpus_per_job": params.ray.cpus_per_job if executor.name == "ray" else None,
               "note": "this invocation only: jobs finished by an interrupted earlier one came from its cache",
               "mlflow_run_id": None if run is None else run.info.run_id,
               "files": file_digests(stage_dir(experiment, stage, root))}, record)
    cache.clear()


def prune(directory: Path, keep: set[str]) -> None:
    """Removes the folders in ``directory`` not named in ``keep`` (variants a profile no longer runs)."""
    if directory.is_dir():
        for child in directory.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)
