"""The `ci` paths stage of fc_depth (three of its variants) on a real two-node Ray cluster on 127.0.0.1 (a head
started with `ray start --head` and a second node joined with `ray start --address`), with one worker process
killed mid-job: the stage still finishes, and its files equal the local executor's."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from benchmarks import fc_depth  # noqa: E402
from losstopo.config import load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head and a second node on 127.0.0.1, in a temp dir of their own: the teardown stops only their processes
    (found by that dir), never a Ray that a stage beside the tests is running (``ray stop`` would stop every one)."""
    port = free_port()
    # Ray >= 2.5x enables token authentication for `ray start --head`; a cluster on 127.0.0.1 needs none
    # (the driver's default is disabled).
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    common = ["--num-cpus", "1", "--disable-usage-stats", "--temp-dir", temp_dir]
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--include-dashboard", "false", *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", *common],
                       check=True, env=env, capture_output=True, timeout=120)
        yield Cluster(f"127.0.0.1:{port}", temp_dir)
    finally:
        for proc in cluster_processes(temp_dir):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class Cluster:
    address: str
    temp_dir: str

    def owns(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` is one of this cluster's processes or a worker of one of them."""
        return any(self.temp_dir in " ".join(p.cmdline()) for p in [proc, *proc.parents()])


def cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """The processes whose command line names ``temp_dir`` (GCS, raylets, monitors) and their children (workers)."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
    return list(found.values())


class WorkerKiller(threading.Thread):
    """Kills (SIGKILL) the first worker of ``cluster`` seen running a job for at least ``after`` seconds."""

    def __init__(self, cluster: Cluster, after: float = 1.5):
        super().__init__(daemon=True)
        self.cluster, self.after, self.killed, self.stop = cluster, after, None, threading.Event()

    def run(self):
        while not self.stop.is_set() and self.killed is None:
            for proc in psutil.process_iter(["cmdline", "create_time"]):
                title = " ".join(proc.info["cmdline"] or [])
                if title.startswith("ray::_call"):
                    time.sleep(self.after)
                    try:
                        if not " ".join(proc.cmdline()).startswith("ray::_call") or not self.cluster.owns(proc):
                            continue  # its job finished meanwhile, or another Ray's worker
                        proc.send_signal(signal.SIGKILL)
                        self.killed = proc.pid
                    except psutil.NoSuchProcess:
                        continue
                    break
            time.sleep(0.2)


def stage_command(workdir: Path, stage: str, *options: str) -> str:
    """``losstopo stage fc_depth STAGE --profile ci`` in its own process, as ``dvc repro`` runs it."""
    done = subprocess.run([sys.executable, "-m", "losstopo.cli", "stage", fc_depth.NAME, stage, "--profile", "ci",
                           *options], cwd=workdir, capture_output=True, text=True, timeout=3600)  # catches a hang only
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def ci_workdir(path: Path, shared_data: Path) -> Path:
    """A working directory with the repository's params.yaml, its data root made absolute, the ci profile's
    fc_depth cut to three MNIST depths, 5 epochs of minima and 30 path steps: three path jobs of seconds for two
    single-CPU nodes, one of them killed (all ten variants at the ci settings took ~6 of the test suite's 22
    minutes on an AVX2 EPYC)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["root"] = str(shared_data)
    ci = raw["profiles"]["ci"]["fc_depth"]
    ci |= {"datasets": ["mnist"], "depths": [2, 3, 4], "minima": ci["minima"] | {"max_epochs": 5},
           "paths": ci["paths"] | {"steps": 30}}
    path.mkdir(parents=True)
    (path / "params.yaml").write_text(yaml.safe_dump(raw))
    return path


def test_ci_paths_on_a_two_node_ray_cluster_survive_a_killed_worker(two_node_cluster, shared_data, tmp_path,
                                                                     mlflow_store, monkeypatch):
    local, remote = ci_workdir(tmp_path / "local", shared_data), ci_workdir(tmp_path / "ray", shared_data)
    monkeypatch.delenv("LOSSTOPO_EXECUTOR", raising=False)
    stage_command(local, "minima")
    minima = Path("artifacts") / fc_depth.NAME / "minima"
    shutil.copytree(local / minima, remote / minima)
    stage_command(local, "paths")

    killer = WorkerKiller(two_node_cluster)
    killer.start()
    try:
        output = stage_command(remote, "paths", "--executor", "ray", "--ray-address", two_node_cluster.address)
    finally:
        killer.stop.set()
        killer.join()
    assert alive_nodes(two_node_cluster.address) == 2
    assert killer.killed is not None, "no Ray worker was seen running a job"
    assert "will be retried" in output  # Ray's report that the killed worker's job was resubmitted

    variants = fc_depth.variants(load_params(local / "params.yaml", "ci").experiment(fc_depth.NAME))
    # Equal up to float32 rounding: a Ray worker runs on 1 thread, the local stage on 2, and the one-GEMM first
    # layer of a stacked MLP sums in a thread-dependent order (~1e-7 relative).
    for variant in variants:
        name = f"artifacts/{fc_depth.NAME}/paths/{variant.key}/paths.json"
        assert_close(json.loads((remote / name).read_text()), json.loads((local / name).read_text()), name)
    metrics = f"artifacts/{fc_depth.NAME}/paths_metrics.json"
    assert_close(json.loads((remote / metrics).read_text()), json.loads((local / metrics).read_text()), metrics)
    assert not list((remote / "artifacts" / ".jobs").rglob("*.pt"))
    local_runs, ray_runs = logged_path_metrics()
    assert len(ray_runs) == len(local_runs) == len(variants)
    assert_close(ray_runs, local_runs, "logged metrics")


def assert_close(got, expected, where: str, rel: float = 1e-5) -> None:
    """The same JSON-like structure, floats equal to ``rel`` (relative; absolute 1e-9 near zero)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_close(got[key], expected[key], f"{where}[{key!r}]", rel)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for k, (a, b) in enumerate(zip(got, expected)):
            assert_close(a, b, f"{where}[{k}]", rel)
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert isinstance(got, (int, float)) and (got == expected or math.isclose(got, expected, rel_tol=rel, abs_tol=1e-9)), \
            f"{where}: {got} != {expected}"
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def alive_nodes(address: str) -> int:
    script = f"import ray; ray.init(address={address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def logged_path_metrics() -> list[dict]:
    """Per fc_depth paths stage run (oldest first): {variant: {metric: value}} of its nested variant runs."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[fc_depth.NAME], filter_string="tags.stage = 'fc_depth_paths'")
    children = runs[runs["tags.variant"].notna()]
    metric_columns = [c for c in runs.columns if c.startswith("metrics.")]
    stages_in_order = runs[runs["tags.variant"].isna()].sort_values("start_time")["run_id"]
    return [{row["tags.variant"]: {c: row[c] for c in metric_columns if row[c] == row[c]}
             for _, row in children[children["tags.mlflow.parentRunId"] == parent].iterrows()}
            for parent in stages_in_order]  # the job cache is cleared once the stage's files are written
