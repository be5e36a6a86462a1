"""MLflow conventions: one experiment per paper experiment, one run per stage, nested runs per variant.

With ``MLFLOW_TRACKING_URI`` unset MLflow uses its embedded default store (``sqlite:///mlflow.db``
in the working directory, artifacts under ``./mlruns``): no server is needed to log.
Every run carries the tags ``git_commit``, ``stage``, ``profile``, ``device`` and, where a
dataset is involved, ``data_source``; a run whose stage raises ends with status FAILED.
MLflow is imported on first use, so code that never logs (the speed benchmarks) runs where it is
not installed. ``LOSSTOPO_TRACKING=off`` turns logging off altogether, for compute-only machines
without MLflow (a lent GPU): the stages then write their artefacts only, and say so once.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from losstopo.errors import LosstopoError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
warnings.filterwarnings("ignore", message=".*noload.*")  # SQLAlchemy 2.1 deprecation inside MLflow's store

TRACKING_ENV = "LOSSTOPO_TRACKING"

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3 opens experiments by this tag in its training or GenAI view


def enabled() -> bool:
    return os.environ.get(TRACKING_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _mlflow():
    import mlflow

    return mlflow


def git_commit() -> str:
    """HEAD, with "-dirty" when the code differs from it: tracked Python files (settings are logged as params,
    and choosing a profile edits params.yaml, which does not make the code dirty)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=10).stdout.splitlines()
        dirty = any(line[3:].strip().endswith(".py") for line in changed)
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


SERVER_TIMEOUT_S = 5.0  # a tracking server that does not answer its health check within this is unreachable


def check_server(uri: str | None = None) -> None:
    """One line, at once, if the tracking URI is an HTTP server that does not answer (MLflow itself would retry
    for minutes and end in a long traceback)."""
    uri = uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        raise LosstopoError(f"the MLflow tracking server {uri} does not answer ({getattr(error, 'reason', error)}); "
                            f"start it, point MLFLOW_TRACKING_URI elsewhere, or run with {TRACKING_ENV}=off") from None


@contextmanager
def store_lock() -> Iterator[None]:
    """An exclusive file lock beside a local sqlite tracking store (none for a server: it serialises itself)."""
    uri = _mlflow().get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def close_stale_runs(experiment: str, stage: str) -> int:
    """Mark the runs of this stage that a killed process left RUNNING as KILLED; returns how many."""
    mlflow = _mlflow()
    stale = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                               filter_string=f"tags.stage = '{experiment}_{stage}' and attributes.status = 'RUNNING'")
    client = mlflow.tracking.MlflowClient()
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(stale)


def newest_stage_run(experiment: str, stage: str) -> str | None:
    """The id of the newest finished run of this stage in the tracking store (a stage run, not one of its nested
    variant runs, which carry the same tags), or None (tracking off, none yet)."""
    if not enabled():
        return None
    runs = _mlflow().search_runs(experiment_names=[experiment], output_format="list",
                                 filter_string=f"tags.stage = '{experiment}_{stage}' and attributes.status = 'FINISHED'",
                                 order_by=["attributes.start_time DESC"])
    return next((run.info.run_id for run in runs if "mlflow.parentRunId" not in run.data.tags), None)


@contextmanager
def stage_run(experiment: str, stage: str, *, profile: str, device: str, params: dict) -> Iterator[Any]:
    if not enabled():
        print(f"{experiment} {stage}: MLflow tracking is off ({TRACKING_ENV}=off); results go to artifacts/ only")
        yield None
        return
    check_server()
    mlflow = _mlflow()
    with store_lock():  # two first-time stages would race on creating the sqlite schema and the experiment
        mlflow.set_experiment(experiment)
    mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, "custom_model_development")  # the UI's training view, not GenAI
    if killed := close_stale_runs(experiment, stage):
        print(f"{experiment} {stage}: {killed} MLflow run(s) left RUNNING by a killed process marked KILLED")
    tags = {"git_commit": git_commit(), "stage": f"{experiment}_{stage}", "profile": profile, "device": device}
    with mlflow.start_run(run_name=f"{stage} [{profile}]", tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten("", params).items()})
        yield run


@contextmanager
def variant_run(variant: str, *, data_source: str | None = None, params: dict | None = None) -> Iterator[Any]:
    if not enabled():
        yield None
        return
    mlflow = _mlflow()
    parent = mlflow.active_run()
    tags = dict(parent.data.tags) if parent else {}
    tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    tags["variant"] = variant
    if data_source:
        tags["data_source"] = data_source
    with mlflow.start_run(run_name=variant, nested=True, tags=tags) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten("", params).items()})
        yield run


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    if clean and enabled():
        _mlflow().log_metrics(clean, step=step)


def log_artifact(path: str | os.PathLike, folder: str | None = None) -> None:
    if enabled():
        _mlflow().log_artifact(str(path), artifact_path=folder)


def log_table(columns: dict[str, list], artifact_file: str) -> None:
    """A table (column name -> values) as an MLflow table artifact, shown as a table in the UI."""
    if enabled():
        _mlflow().log_table(data=columns, artifact_file=artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    if enabled():
        _mlflow().set_tags(tags)
