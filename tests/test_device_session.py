"""The one-call GPU session (benchmarks.perf.device_session) and bringing its files home (device_ingest)."""

import json
import sys
import tarfile
import time

import pytest
from tiny import tiny_params
import yaml

from benchmarks.perf import device_ingest, device_session
from benchmarks.perf.device_session import Session, Step, pack_artifacts, run_step, seconds_needed


def test_an_experiment_needs_both_stages_projected_with_margin_and_overhead():
    projected = {("a", "minima"): 10, ("a", "paths"): 20, ("d", "minima"): 1}
    assert seconds_needed(projected, "a", margin=2, overhead_s=10) == 2 * 30 + 2 * 10
    assert seconds_needed(projected, "d", margin=2) is None  # no paths projection
    assert seconds_needed(projected, "e", margin=2) is None


def test_the_plan_ignores_stages_the_projection_left_untimed(tmp_path):
    rows = [{"experiment": "a", "stage": "minima", "seconds": 1.0, "bound": "exact"},
            {"experiment": "a", "stage": "paths", "seconds": 0.0, "bound": "untimed"}]
    (tmp_path / "p.json").write_text(json.dumps({"stages": rows}))
    projected = device_session.projected_seconds(tmp_path / "p.json")
    assert projected == {("a", "minima"): 1.0}
    assert seconds_needed(projected, "a", 1.5) is None


def test_a_step_that_outruns_the_budget_is_killed_with_its_children(tmp_path):
    session = Session(budget_s=4)  # long enough for two interpreters to start on a loaded machine
    child = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(child)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(60)")
    with open(tmp_path / "log", "w") as log:
        start = time.monotonic()
        step = run_step(session, Step("sleeper", [sys.executable, "-c", code]), log, {}, reserve_s=0)
    assert step.status == "timed out" and time.monotonic() - start < 60  # the budget stopped it, not the 60 s sleep
    assert "started" in (tmp_path / "log").read_text()
    deadline = time.monotonic() + 30
    while _running(int(child.read_text())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(int(child.read_text()))  # the whole process group went
    with open(tmp_path / "log", "w") as log:  # a step's own cap
        step = run_step(Session(60), Step("capped", [sys.executable, "-c", code]), log, {}, reserve_s=0, max_s=2)
    assert step.status == "timed out" and step.why == "killed after 2 s"
    with open(tmp_path / "log", "w") as log:  # nothing left: the next step does not start
        assert run_step(session, Step("next", [sys.executable, "-c", "pass"]), log, {}).status == "skipped"


def _running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended


def test_a_failing_step_is_recorded_with_its_exit_status(tmp_path):
    with open(tmp_path / "log", "w") as log:
        step = run_step(Session(60), Step("fails", [sys.executable, "-c", "raise SystemExit(3)"]), log, {}, 0)
    assert (step.status, step.returncode) == ("failed", 3)


def test_pack_leaves_checkpoints_out(tmp_path):
    (tmp_path / "artifacts/e1/minima/v").mkdir(parents=True)
    (tmp_path / "artifacts/e1/minima/v/minima.json").write_text("{}")
    (tmp_path / "artifacts/e1/minima/v/minimum_0.pt").write_bytes(b"x" * 100)
    packed = pack_artifacts(tmp_path / "artifacts", ["e1", "e2"], tmp_path / "a.tgz")
    assert packed == ["e1"]
    with tarfile.open(tmp_path / "a.tgz") as tar:
        files = sorted(n for n in tar.getnames() if n.endswith((".json", ".pt")))
    assert files == ["artifacts/e1/minima/v/minima.json"]


TINY = tiny_params("fc_depth", "cnn_channels")


@pytest.mark.slow
def test_session_then_ingest_end_to_end(tmp_path, monkeypatch):
    """A session on tiny settings (CPU, synthetic data): projections, fc_depth stages, packed outputs;
    then the files brought home give topology, a partial report naming what was left out, and the claims."""
    (tmp_path / "data" / "offline").mkdir(parents=True)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY))
    device = tmp_path / "device"
    device.mkdir()
    monkeypatch.chdir(device)
    out = tmp_path / "out"
    code = device_session.main(["--out", str(out), "--budget-s", "400", "--params", str(params), "--profile", "tiny",
                                "--data-root", str(tmp_path / "data"), "--skip", "benchmarks",
                                "--experiments", "fc_depth"])
    session = json.loads((out / "session.json").read_text())
    assert code == 0, session
    assert [s["name"] for s in session["steps"]] == ["projection tiny", "projection paper", "fc_depth minima",
                                                     "fc_depth paths"]
    assert session["experiments_done"] == ["fc_depth"]
    assert {p.name for p in out.iterdir()} == {"session.json", "session.log", "projection-tiny.json",
                                               "projection-paper.json", "artifacts.tgz"}
    assert (device / "artifacts/fc_depth/minima").is_dir()  # the stages ran where the session was started

    # planned from an earlier projection: an experiment that does not fit is skipped, the next one runs
    rows = [{"experiment": e, "stage": st, "seconds": sec, "bound": "exact"}
            for e, sec in (("cnn_channels", 1e6), ("fc_depth", 1.0)) for st in ("minima", "paths")]
    (tmp_path / "earlier.json").write_text(json.dumps({"stages": rows}))
    assert device_session.main(["--out", str(tmp_path / "again"), "--budget-s", "300", "--params", str(params),
                                "--profile", "tiny", "--data-root", str(tmp_path / "data"),
                                "--skip", "benchmarks", "projections", "--projection", str(tmp_path / "earlier.json"),
                                "--experiments", "cnn_channels", "fc_depth"]) == 0
    again = json.loads((tmp_path / "again" / "session.json").read_text())
    assert [(s["name"], s["status"]) for s in again["steps"]] == [
        ("cnn_channels stages", "skipped"), ("fc_depth minima", "ok"), ("fc_depth paths", "ok")]
    assert "needs ~" in again["steps"][0]["why"] and again["experiments_done"] == ["fc_depth"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    perf = tmp_path / "perf"
    perf.mkdir()
    home = tmp_path / "home"
    assert device_ingest.main([str(out), "--workdir", str(home), "--params", str(params), "--tag", "test",
                               "--perf-dir", str(perf)]) == 0
    assert {p.name for p in perf.iterdir()} == {"projection-tiny-test.json", "projection-paper-test.json"}
    topology = json.loads((home / "artifacts/fc_depth/topology/svhn-fc-2-8/topology.json").read_text())
    assert len(topology["bars"]) == 3
    report = (home / "reports/tiny/report.md").read_text()
    assert "Partial report" in report and "cnn_channels" in report.split("## Claims")[0]
    assert "TO-score decreases with depth (svhn)" in device_ingest.claims_table(report)


def test_ingest_says_what_is_wrong_with_a_folder_that_is_not_a_session(tmp_path, capsys):
    assert device_ingest.main([str(tmp_path)]) == 2
    assert "session.json" in capsys.readouterr().err
