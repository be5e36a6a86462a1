"""The `ci` paths stage of fc_depth on a real two-node Ray cluster on 127.0.0.1 (a head started with
`ray start --head` and a second node joined with `ray start --address`), with one worker process
killed mid-job: the stage still finishes, and its files equal the local executor's."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from benchmarks import fc_depth, stages  # noqa: E402
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
    port = free_port()
    # Ray >= 2.5x enables token authentication for `ray start --head`; a cluster on 127.0.0.1 needs none
    # (the driver's default is disabled).
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--include-dashboard", "false", *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", *common],
                       check=True, env=env, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


class WorkerKiller(threading.Thread):
    """Kills (SIGKILL) the first Ray worker process seen running a job for at least ``after`` seconds."""

    def __init__(self, after: float = 1.5):
        super().__init__(daemon=True)
        self.after, self.killed, self.stop = after, None, threading.Event()

    def run(self):
        while not self.stop.is_set() and self.killed is None:
            for proc in psutil.process_iter(["cmdline", "create_time"]):
                title = " ".join(proc.info["cmdline"] or [])
                if title.startswith("ray::_call"):
                    time.sleep(self.after)
                    try:
                        proc.send_signal(signal.SIGKILL)
                        self.killed = proc.pid
                    except psutil.NoSuchProcess:
                        continue
                    break
            time.sleep(0.2)


def ci_params(shared_data):
    params = load_params(REPO / "params.yaml", "ci")
    return dataclasses.replace(params, data=dataclasses.replace(params.data, root=str(shared_data)))


def test_ci_paths_on_a_two_node_ray_cluster_survive_a_killed_worker(two_node_cluster, shared_data, tmp_path,
                                                                     mlflow_store, monkeypatch):
    params = ci_params(shared_data)
    config = params.experiment(fc_depth.EXPERIMENT)
    variants = fc_depth.variants(config)
    local, remote = tmp_path / "local", tmp_path / "ray"
    monkeypatch.delenv("LOSSTOPO_EXECUTOR", raising=False)
    stages.run_minima(fc_depth.EXPERIMENT, variants, config, params, root=local)
    shutil.copytree(local / fc_depth.EXPERIMENT / "minima", remote / fc_depth.EXPERIMENT / "minima")
    stages.run_paths(fc_depth.EXPERIMENT, variants, config, params, root=local)

    monkeypatch.setenv("LOSSTOPO_EXECUTOR", "ray")
    monkeypatch.setenv("LOSSTOPO_RAY_ADDRESS", two_node_cluster)
    killer = WorkerKiller()
    killer.start()
    try:
        stages.run_paths(fc_depth.EXPERIMENT, variants, config, params, root=remote)
    finally:
        killer.stop.set()
        killer.join()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    assert killer.killed is not None, "no Ray worker was seen running a job"

    for variant in variants:
        name = f"{fc_depth.EXPERIMENT}/paths/{variant.key}/paths.json"
        assert (remote / name).read_text() == (local / name).read_text(), name
    metrics = f"{fc_depth.EXPERIMENT}/paths_metrics.json"
    assert (remote / metrics).read_text() == (local / metrics).read_text()
    assert not list((remote / ".jobs").rglob("*.pt"))  # the job cache is cleared once the stage's files are written
