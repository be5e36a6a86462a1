"""MLflow conventions that matter when something went wrong: an unreachable server, a killed stage's run."""

import socket

import pytest

from losstopo import tracking
from losstopo.errors import LosstopoError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def test_an_unreachable_tracking_server_is_one_line_before_any_work(monkeypatch):
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(LosstopoError, match=f"the MLflow tracking server {uri} does not answer .*LOSSTOPO_TRACKING=off"):
        with tracking.stage_run("e", "minima", profile="p", device="cpu", params={}):
            raise AssertionError("the stage must not start")
    tracking.check_server("sqlite:///x.db")  # a local store needs no server


def test_a_run_left_running_by_a_killed_stage_is_marked_killed_at_the_next_start(mlflow_store, capsys):
    import mlflow

    mlflow.set_experiment("e")
    killed = mlflow.start_run(run_name="minima [p]", tags={"stage": "e_minima"}).info.run_id
    mlflow.end_run(status="RUNNING")  # what a kill -9 leaves behind
    other = mlflow.start_run(run_name="paths [p]", tags={"stage": "e_paths"}).info.run_id
    mlflow.end_run(status="RUNNING")
    with tracking.stage_run("e", "minima", profile="p", device="cpu", params={}):
        pass
    assert mlflow.get_run(killed).info.status == "KILLED"
    assert mlflow.get_run(other).info.status == "RUNNING"  # another stage's run is not this stage's to close
    assert "1 MLflow run(s) left RUNNING by a killed process marked KILLED" in capsys.readouterr().out


def test_the_commit_tag_marks_changed_code_not_a_changed_profile(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "params.yaml").write_text("profile: paper\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.chdir(tmp_path)
    assert not tracking.git_commit().endswith("-dirty")
    (tmp_path / "params.yaml").write_text("profile: ci\n")  # what `losstopo repro --profile ci` does
    assert not tracking.git_commit().endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert tracking.git_commit().endswith("-dirty")


@pytest.mark.slow  # runs stages (pipeline test)
def test_two_first_time_stages_at_once_share_one_new_store(tmp_path):
    import subprocess
    import sys

    script = """
import sys
from losstopo import tracking
with tracking.stage_run("e", sys.argv[1], profile="p", device="cpu", params={}):
    tracking.log_metrics({"x": 1.0})
print("ok")
"""
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    procs = [subprocess.Popen([sys.executable, "-c", script, stage], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for stage in ("minima", "paths", "topology")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert len(mlflow.search_runs(experiment_names=["e"], output_format="list")) == 3


def test_the_report_names_the_run_that_wrote_the_outputs_and_flags_a_run_cache_restore(mlflow_store):
    from losstopo.reporting import producing_run

    runs = []
    for _ in range(2):
        with tracking.stage_run("e", "paths", profile="p", device="cpu", params={}) as run:
            runs.append(run.info.run_id)
            with tracking.variant_run("v"):  # a nested variant run, newer than its stage run, with its tags
                pass
    with tracking.stage_run("e", "minima", profile="p", device="cpu", params={}):
        pass  # another stage's newer run does not count
    assert tracking.newest_stage_run("e", "paths") == runs[1]
    assert producing_run("e", "paths", {"mlflow_run_id": runs[1]}) == f"`{runs[1][:8]}`"
    restored = producing_run("e", "paths", {"mlflow_run_id": runs[0]})  # DVC put back the first run's outputs
    assert restored.startswith(f"`{runs[0][:8]}` (not the newest run, `{runs[1][:8]}`") and "run cache" in restored
    assert producing_run("e", "paths", {}) == "not recorded"
