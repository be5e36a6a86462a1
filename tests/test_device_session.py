"""The one-call GPU session (scripts/gpu_session.py run) and bringing its files home (ingest).

No wall time is read: the session's clock is a fake one that the steps themselves move forward."""

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from tiny import tiny_params
import yaml

from losstopo.stage_frame import STAGE_TIMING, file_digests, require_complete

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_session.py"
spec = importlib.util.spec_from_file_location("gpu_session", SCRIPT)
gpu_session = sys.modules["gpu_session"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(gpu_session)
Session, Step, run_step = gpu_session.Session, gpu_session.Step, gpu_session.run_step


def test_the_stages_of_an_experiment_come_from_dvc_yaml_in_its_order_without_topology():
    assert gpu_session.compute_stages("fc_depth") == ["minima", "paths", "curves"]
    assert gpu_session.compute_stages("permutation_barrier") == ["minima", "paths"]


def test_a_step_that_outruns_the_budget_is_killed_with_its_children(tmp_path):
    child = tmp_path / "child.pid"
    # the clock stands still until the step has started its child, then jumps past any limit
    clock = lambda: 1e9 if child.exists() else 0.0  # noqa: E731
    code = ("import os, subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"print('started', flush=True); open({str(child)!r} + '.tmp', 'w').write(str(c.pid)); "
            f"os.replace({str(child)!r} + '.tmp', {str(child)!r}); time.sleep(600)")
    session = Session(budget_s=4, clock=clock)
    with open(tmp_path / "log", "w") as log:
        step = run_step(session, Step("sleeper", [sys.executable, "-c", code]), log, {}, reserve_s=0)
    assert (step.status, step.why) == ("timed out", "killed after 4 s")  # the budget stopped it
    assert "started" in (tmp_path / "log").read_text()
    deadline = time.monotonic() + 30
    while _running(int(child.read_text())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(int(child.read_text()))  # the whole process group went
    with open(tmp_path / "log", "w") as log:  # nothing left: the next step does not start
        assert run_step(session, Step("next", [sys.executable, "-c", "pass"]), log, {}).status == "skipped"
    child.unlink()
    with open(tmp_path / "log", "w") as log:  # a step's own cap
        step = run_step(Session(60, clock), Step("capped", [sys.executable, "-c", code]), log, {}, reserve_s=0, max_s=2)
    assert (step.status, step.why) == ("timed out", "killed after 2 s")


def _running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended


def test_the_budget_stops_the_session_before_a_stage_and_a_failed_stage_stops_its_experiment(tmp_path, monkeypatch):
    """Fake steps that each take 100 s of the session's clock: benchmarks, then cnn_bn (its minima fail: its other
    stages are not tried), then fc_depth minima and paths; 240 + 20 s reserve leaves 20 s, under a stage's 30."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params("fc_depth", "cnn_bn")))

    def fake(name, fails=False):
        return [sys.executable, "-c", f"import pathlib; p = pathlib.Path({name!r}); p.mkdir(parents=True); "
                                      f"(p / 'out.json').write_text('{{}}'); "
                                      + ("raise SystemExit(3)" if fails else "(p / 'took-100-s').touch()")]

    monkeypatch.setattr(gpu_session, "benchmarks_argv", lambda python, out, *_: fake(str(out / "bench")))
    monkeypatch.setattr(gpu_session, "stage_argv", lambda python, experiment, stage, profile, params: fake(
        f"artifacts/{experiment}/{stage}", fails=experiment == "cnn_bn"))
    clock = lambda: 100.0 * len(list(tmp_path.rglob("took-100-s")))  # noqa: E731
    out = tmp_path / "out"
    code = gpu_session.main(["run", "--out", str(out), "--budget-s", "340", "--params", "params.yaml",
                             "--profile", "tiny", "--experiments", "cnn_bn", "fc_depth"], clock=clock)
    session = json.loads((out / "session.json").read_text())
    assert [(s["name"], s["status"]) for s in session["steps"]] == [
        ("benchmarks", "ok"), ("cnn_bn minima", "failed"), ("cnn_bn paths", "skipped"), ("cnn_bn curves", "skipped"),
        ("fc_depth minima", "ok"), ("fc_depth paths", "ok"), ("fc_depth curves", "skipped")]
    assert session["steps"][2]["why"] == "cnn_bn minima did not finish"
    assert session["steps"][6]["why"] == "budget spent (20 s left)"
    assert session["experiments_done"] == [] and "fc_depth curves" in session["not_run"]
    assert code == 1  # a stage failed
    with tarfile.open(out / "artifacts.tgz") as tar:  # the finished stages only
        assert sorted(n for n in tar.getnames() if n.endswith(".json")) == [
            "artifacts/fc_depth/minima/out.json", "artifacts/fc_depth/paths/out.json"]


def test_pack_then_ingest_puts_the_paths_where_topology_finds_them_complete(tmp_path, monkeypatch):
    """A fabricated session: fc_depth's minima (weights left out of the pack) and paths (with a .pt of their own,
    kept: the paths stage's record names it); ingest unpacks them into the workdir, whose paths stage passes the
    check topology makes, then runs topology and the report there."""
    device = tmp_path / "device" / "artifacts"
    minima, paths = device / "fc_depth/minima/v", device / "fc_depth/paths/v"
    for folder in (minima, paths):
        folder.mkdir(parents=True)
    (minima / "minima.json").write_text("{}")
    (minima / "minima.pt").write_bytes(b"x" * 100)
    (minima / "checkpoint-ab.pt").write_bytes(b"x" * 100)
    (paths / "paths.json").write_text('{"max_loss": [0.5]}')
    (paths / "points.pt").write_bytes(b"y" * 100)
    (device / "fc_depth/paths_metrics.json").write_text("{}")
    record = {"files": file_digests(device / "fc_depth/paths")}
    (device / "fc_depth/paths" / STAGE_TIMING).write_text(json.dumps(record))
    out = tmp_path / "out"
    out.mkdir()
    gpu_session.pack_artifacts(device, [("fc_depth", "minima"), ("fc_depth", "paths")], out / "artifacts.tgz")
    (out / "session.json").write_text(json.dumps({"profile": "tiny", "experiments_done": ["fc_depth"],
                                                  "not_run": ["cnn_bn minima"]}))
    (out / "results.json").write_text('{"results": []}')

    calls = []
    monkeypatch.setattr(gpu_session, "run_here", lambda argv, workdir: calls.append((argv, workdir)))
    (tmp_path / "home").mkdir()
    report = tmp_path / "home/reports/tiny/report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# Report\n\n## Claims\n\n| claim | holds |\n\n## Figures\n")
    assert gpu_session.main(["ingest", str(out), "--workdir", str(tmp_path / "home"), "--params", "p.yaml",
                             "--tag", "test", "--perf-dir", str(tmp_path)]) == 0
    home = tmp_path / "home" / "artifacts"
    require_complete("fc_depth", "paths", home)  # what topology checks first
    assert (home / "fc_depth/paths/v/points.pt").is_file() and (home / "fc_depth/paths_metrics.json").is_file()
    assert sorted(p.name for p in (home / "fc_depth/minima/v").iterdir()) == ["minima.json"]
    assert json.loads((tmp_path / "results-test.json").read_text()) == {"results": []}
    params = str(Path("p.yaml").resolve())
    assert calls == [(["stage", "fc_depth", "topology", "--profile", "tiny", "--params", params], tmp_path / "home"),
                     (["report", "--profile", "tiny", "--params", params, "--experiments", "fc_depth"],
                      tmp_path / "home")]


def test_ingest_says_what_is_wrong_with_a_folder_that_is_not_a_session(tmp_path, capsys):
    assert gpu_session.main(["ingest", str(tmp_path)]) == 2
    assert "session.json" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "--help"], ["ingest", "--help"]])
def test_the_script_runs_on_a_machine_without_mlflow_or_gudhi(argv):
    """The GPU machine has torch but neither MLflow nor gudhi; the script is started from anywhere."""
    code = ("import runpy, sys; sys.modules.update(mlflow=None, gudhi=None); "
            f"sys.argv = [{str(SCRIPT)!r}, *{argv!r}]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0 and "usage: gpu_session.py" in done.stdout, done.stderr
