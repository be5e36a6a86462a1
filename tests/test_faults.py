"""Fault injection: stages killed with SIGKILL at chosen points (after a job's result is cached, while the stage
record is written), corrupted outputs and a diverging learning rate, each through the command line as a user meets
it. Asserted: the next stage refuses in one line, the rerun recovers, and the recovered outputs are identical to an
uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from stores import fresh_store
from tiny import tiny_params

pytestmark = pytest.mark.slow

# Runs the CLI with a fault: SIGKILL the process after the n-th job result is cached ("job n"), or when the stage
# record is about to be written ("record"): the two ends of a stage's writes.
KILLER = """
import os, signal, sys
point, argv = sys.argv[1], sys.argv[2:]
import losstopo.executor as executor
import losstopo.io as io
if point.startswith("job"):
    limit, seen, put = int(point[3:]), [0], executor.JobCache.put
    def killing_put(self, address, value):
        put(self, address, value)
        seen[0] += 1
        if seen[0] >= limit:
            os.kill(os.getpid(), signal.SIGKILL)
    executor.JobCache.put = killing_put
elif point == "record":
    import losstopo.stage_frame as stage_frame
    save = stage_frame.save_json
    def killing_save(obj, path, *args, **kwargs):
        if os.path.basename(str(path)) == "stage.json":
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, path, *args, **kwargs)
    stage_frame.save_json = killing_save
from losstopo.cli import main
sys.exit(main(argv))
"""
TIMING_KEYS = {"wall_s", "seconds", "train_seconds", "elapsed_s", "started", "finished"}
# Every CLI call here generates its synthetic stand-in anew: SVHN's (73,257 images) took ~8 s a call and CIFAR-100's
# ~5 s on an AVX2 EPYC, MNIST's ~1 s. The faults do not depend on the dataset, and LeNet's jobs are the WRN's kinds.
CHEAP = {"fc_depth": {"datasets": ["mnist"]}, "wrn_robustness": {"studies": ["lenet"]}}


def _workdir(tmp_path: Path, name: str, experiment: str = "fc_depth", **paths) -> Path:
    work = tmp_path / name
    (work / "data" / "offline").mkdir(parents=True)
    raw = tiny_params(experiment)
    raw["data"]["root"] = str(work / "data")
    raw[experiment] |= CHEAP.get(experiment, {})
    if paths:
        raw[experiment]["paths"] |= paths
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    fresh_store(work)
    return work


def _stage(work: Path, stage: str, fault: str | None = None, experiment: str = "fc_depth") -> subprocess.CompletedProcess:
    argv = ["stage", experiment, stage, "--params", "params.yaml"]
    command = [sys.executable, "-c", KILLER, fault, *argv] if fault else [sys.executable, "-m", "losstopo.cli", *argv]
    # One thread a process: the uninterrupted reference runs beside the faulted run (_uninterrupted), and two
    # processes of two OpenMP threads each on two cores spin-wait for each other.
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "LOSSTOPO_EXECUTOR": "local",
                        "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)


def _uninterrupted(work: Path, experiment: str = "fc_depth") -> Future:
    """The minima and paths stages run without a fault, in the background: each CLI call here is mostly process
    start-up on one core, so the reference and the faulted run share the machine's two."""
    pool = ThreadPoolExecutor(1)
    calls = pool.submit(lambda: [_stage(work, stage, experiment=experiment) for stage in ("minima", "paths")])
    pool.shutdown(wait=False)  # its thread ends with the calls; the caller waits on the result
    return calls


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-2000:]


def _error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("losstopo: error")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return lines[0]


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _outputs(work: Path, experiment: str = "fc_depth") -> dict:
    """Every output file of the minima and paths stages: JSON without wall times, tensors as tensors."""
    found = {}
    for stage in ("minima", "paths"):
        for path in sorted((work / "artifacts" / experiment / stage).rglob("*")):
            name = str(path.relative_to(work / "artifacts"))
            if path.suffix == ".json" and path.name != "stage.json":
                found[name] = _without_timing(json.loads(path.read_text()))
            elif path.suffix == ".pt":
                found[name] = torch.load(path, weights_only=True)
    return found


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_killed_stages_refuse_downstream_then_recover_to_the_uninterrupted_outputs(tmp_path):
    reference = _workdir(tmp_path, "reference")
    uninterrupted_run = _uninterrupted(reference)

    work = _workdir(tmp_path, "killed")
    killed = _stage(work, "minima", "job1")  # one variant's minima cached, nothing written yet
    assert killed.returncode == -9
    assert "no finished run of this stage" in _error_line(_stage(work, "paths"))
    at_record = _stage(work, "minima", "record")  # every output written (job 1 from the cache), killed at the record
    assert at_record.returncode == -9 and "2/2 jobs done" in at_record.stderr
    assert (work / "artifacts/fc_depth/minima/mnist-fc-2-8/minima.pt").is_file()
    assert not (work / "artifacts/fc_depth/minima/stage.json").exists()
    assert "fc_depth minima: no finished run" in _error_line(_stage(work, "paths"))
    _ok(_stage(work, "minima"))
    assert _stage(work, "paths", "job1").returncode == -9
    _ok(_stage(work, "paths"))
    assert not list((work / "artifacts").rglob(".*.tmp"))  # no half-written file left anywhere
    for done in uninterrupted_run.result():
        _ok(done)
    recovered, uninterrupted = _outputs(work), _outputs(reference)
    assert recovered.keys() == uninterrupted.keys() and len(recovered) >= 6
    assert all(_same(recovered[name], uninterrupted[name]) for name in recovered), \
        [name for name in recovered if not _same(recovered[name], uninterrupted[name])]

    # a corrupted output: random bytes in a minima file stop the next stage with one line
    weights = work / "artifacts/fc_depth/minima/mnist-fc-2-8/minima.pt"
    weights.write_bytes(os.urandom(weights.stat().st_size))
    assert "mnist-fc-2-8/minima.pt is not what the stage wrote" in _error_line(_stage(work, "paths"))


def test_a_diverging_path_learning_rate_stops_with_one_line_naming_the_setting(tmp_path):
    work = _workdir(tmp_path, "diverging", lr=1.0e6, step_rule="sgd")
    _ok(_stage(work, "minima"))
    line = _error_line(_stage(work, "paths"))
    assert "paths.lr" in line and "fc_depth" in line
    assert not (work / "artifacts/fc_depth/paths/stage.json").exists()  # nothing finished is claimed


@pytest.mark.parametrize("experiment, weights", [
    ("permutation_barrier", "minima/mnist-H4/teachers.pt"),
    ("wrn_robustness", "minima/lenet/minima.pt"),
])
def test_killed_stages_of_the_other_experiments_recover_to_the_uninterrupted_outputs(tmp_path, experiment, weights):
    """The same faults through the two experiments whose stages are not fc_depth's: their own job kinds (teachers,
    permutation paths; LeNet/WRN minima, curves, triangles) and persisted outputs."""
    reference = _workdir(tmp_path, "reference", experiment)
    uninterrupted_run = _uninterrupted(reference, experiment)

    work = _workdir(tmp_path, "killed", experiment)
    for stage in ("minima", "paths"):
        assert _stage(work, stage, "job1", experiment).returncode == -9
        _ok(_stage(work, stage, experiment=experiment))
    assert not list((work / "artifacts").rglob(".*.tmp"))
    for done in uninterrupted_run.result():
        _ok(done)
    recovered, uninterrupted = _outputs(work, experiment), _outputs(reference, experiment)
    assert recovered.keys() == uninterrupted.keys() and len(recovered) >= 3
    assert all(_same(recovered[name], uninterrupted[name]) for name in recovered), \
        [name for name in recovered if not _same(recovered[name], uninterrupted[name])]

    damaged = work / "artifacts" / experiment / weights
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    assert f"{weights.split('/', 1)[1]} is not what the stage wrote" in _error_line(_stage(work, "paths", experiment=experiment))
