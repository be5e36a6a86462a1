"""The fc_depth stages end to end on tiny synthetic settings, and what they leave in MLflow."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import math
import numpy as np
import pytest
from tiny import tiny_params
from conftest import resolve_tiny
import requests

from benchmarks import fc_depth
from losstopo.minima_stage import run_minima
from losstopo.paths_stage import run_paths
from losstopo.topology_stage import run_topology
from losstopo.errors import TrainingDiverged
from losstopo.evidence import at_resolution, trend_test

TINY = tiny_params("fc_depth")


@pytest.fixture
def tiny_params(tmp_path, mlflow_store):
    return resolve_tiny(TINY, tmp_path)


def _run_all(params, root):
    config = params.experiment("fc_depth")
    variants = fc_depth.variants(config)
    for stage in (run_minima, run_paths, run_topology):
        stage("fc_depth", variants, config, params, root)
    return config, variants


def test_stages_write_barcodes_and_report_section(tiny_params, tmp_path):
    root = tmp_path / "artifacts"
    config, variants = _run_all(tiny_params, root)
    topo = json.loads((root / "fc_depth/topology/svhn-fc-2-8/topology.json").read_text())
    assert len(topo["bars"]) == 3 and sum(math.isinf(d) for _, d in topo["bars"]) == 1
    assert topo["data_source"].startswith("SYNTHETIC stand-in of svhn")
    metrics = json.loads((root / "fc_depth/topology_metrics.json").read_text())
    assert set(metrics) == {"svhn-fc-1-8", "svhn-fc-2-8"}
    paths = json.loads((root / "fc_depth/paths/svhn-fc-2-8/paths.json").read_text())
    assert len(paths["converged"]) == 3 and all(isinstance(c, bool) for c in paths["converged"])
    assert paths["converged"] == [c <= 0.01 for c in paths["relative_change"]]  # the default converge_tol
    assert topo["paths_converged"] == paths["converged"]
    section = fc_depth.report_section(config, tmp_path / "figures", root)
    assert len(section.claims) == 3 and all(c.data_source.startswith("SYNTHETIC") for c in section.claims)
    assert all(c.unit == "set of minima" and c.result.n == 2 for c in section.claims)  # one barcode per depth
    assert all(c.result.min_attainable_p == 0.5 for c in section.claims)  # 2 sets: underpowered by design
    _assert_fc_depth_claims_recomputed(section.claims, config, variants, root)
    assert (tmp_path / "figures" / "fc_depth_barcodes_svhn.png").stat().st_size > 1000


def _fc_depth_claim_values(topology: dict) -> dict[str, float]:
    """A set of minima's values in the depth claims, from its barcode alone: the TO-score in closed form
    (max (h_p - L(p)) / 2 over the finite bars), the mean saddle height h_p and the mean bar length."""
    finite = [(b, d) for b, d in topology["bars"] if math.isfinite(d)]
    return {"TO-score": max([(d - b) / 2 for b, d in finite], default=0.0),
            "Saddle heights": float(np.mean([d for _, d in finite])),
            "Barriers": float(np.mean([d - b for b, d in finite]))}


def _assert_fc_depth_claims_recomputed(claims, config, variants, root):
    """Each depth claim is the decreasing trend test of its value over the depths, at the paths' resolution.
    With two depths the test sees only the order of the two values; the note's Theil-Sen slope sees the values."""
    shallow, deep = [_fc_depth_claim_values(json.loads((root / f"fc_depth/topology/{v.key}/topology.json").read_text()))
                     for v in variants]
    depths = [v.labels["depth"] for v in variants]
    assert [c.claim.split(" ")[0] for c in claims] == ["TO-score", "Saddle", "Barriers"]
    for claim, name in zip(claims, ("TO-score", "Saddle heights", "Barriers")):
        values = [shallow[name], deep[name]]
        want = trend_test(depths, at_resolution(values, config.paths.converge_abs), "decreasing")
        assert want.statistic != 0, f"{name}: tied values, so the order of the depths is not checked"
        assert (claim.result.statistic, claim.result.p_value) == (want.statistic, pytest.approx(want.p_value))
        slope = (values[1] - values[0]) / (depths[1] - depths[0])  # the median of the one pairwise slope
        assert f"Theil-Sen slope {slope:.4g} per layer" in claim.note


def test_a_stage_reads_only_complete_inputs(tiny_params, tmp_path):
    """A compute stage's record names every file's hash: an interrupted run (no record) or a changed file stops the
    next stage with one line naming the stage to rerun; a clean rerun makes the unit whole again."""
    from losstopo.stage_frame import require_complete
    from losstopo.errors import LosstopoError

    root = tmp_path / "artifacts"
    config, variants = _run_all(tiny_params, root)
    record = json.loads((root / "fc_depth/minima/stage.json").read_text())
    assert "svhn-fc-2-8/minima.pt" in record["files"] and "stage.json" not in record["files"]
    for stage in ("minima", "paths"):
        require_complete("fc_depth", stage, root)
    minima_json = root / "fc_depth/minima/svhn-fc-2-8/minima.json"
    minima_json.write_text(minima_json.read_text() + " ")
    with pytest.raises(LosstopoError, match=r"fc_depth minima: svhn-fc-2-8/minima.json is not what the stage wrote"):
        run_paths("fc_depth", variants, config, tiny_params, root)
    (root / "fc_depth/paths/stage.json").unlink()  # as a run killed half way leaves it
    with pytest.raises(LosstopoError, match="fc_depth paths: no finished run of this stage"):
        run_topology("fc_depth", variants, config, tiny_params, root)
    run_minima("fc_depth", variants, config, tiny_params, root)  # retrains nothing, records the files again
    run_paths("fc_depth", variants, config, tiny_params, root)
    require_complete("fc_depth", "paths", root)


def test_stages_run_without_mlflow_when_tracking_is_off(tiny_params, tmp_path, monkeypatch):
    """LOSSTOPO_TRACKING=off: a machine without MLflow (a lent GPU) runs the stages; nothing is logged."""
    import mlflow

    monkeypatch.setenv("LOSSTOPO_TRACKING", "off")
    with monkeypatch.context() as blocked:
        blocked.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
        _run_all(tiny_params, tmp_path / "artifacts")
    assert (tmp_path / "artifacts/fc_depth/topology/svhn-fc-2-8/topology.json").is_file()
    assert len(mlflow.search_runs(search_all_experiments=True)) == 0


def test_finished_variants_are_not_retrained(tiny_params, tmp_path):
    root = tmp_path / "artifacts"
    config, variants = _run_all(tiny_params, root)
    minima_file = root / "fc_depth/minima/svhn-fc-1-8/minima.pt"
    stamp = minima_file.stat().st_mtime_ns
    run_minima("fc_depth", variants, config, tiny_params, root)
    assert minima_file.stat().st_mtime_ns == stamp


def test_divergence_marks_the_mlflow_run_failed(tiny_params, tmp_path, monkeypatch):
    import mlflow
    import losstopo.train as train

    def diverge(loss, seeds, epoch, config, n_classes):
        raise TrainingDiverged("minimum 0 (seed 0) diverged at epoch 1: training loss nan")

    monkeypatch.setattr(train, "_stop_if_diverged", diverge)
    config = tiny_params.experiment("fc_depth")
    with pytest.raises(TrainingDiverged):
        run_minima("fc_depth", fc_depth.variants(config), config, tiny_params, tmp_path / "artifacts")
    runs = mlflow.search_runs(experiment_names=["fc_depth"])
    assert set(runs["status"]) == {"FAILED"}
    assert not (tmp_path / "artifacts/fc_depth/minima/svhn-fc-1-8/minima.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_logged_runs_are_readable_through_the_mlflow_server_rest_api(tiny_params, tmp_path, mlflow_store,
                                                                      monkeypatch):
    import mlflow

    from losstopo.reporting import build_report

    mlflow.MlflowClient().search_experiments()  # the store's tables exist before the server opens it too
    port = _free_port()
    server = subprocess.Popen(  # starting it takes ~20 s: meanwhile the stages run and the report is written
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", mlflow_store, "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _run_all(tiny_params, tmp_path / "artifacts")
        monkeypatch.chdir(tmp_path)  # the report reads artifacts/ of the working directory
        build_report(tiny_params, tmp_path / "reports" / "tiny", ["fc_depth"])
        for _ in range(240):
            try:
                if requests.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 120 s")
        experiments = requests.post(f"{base}/api/2.0/mlflow/experiments/search", json={"max_results": 100}).json()
        ids = {e["name"]: e["experiment_id"] for e in experiments["experiments"]}
        assert "fc_depth" in ids and "report" in ids
        kinds = {e["name"]: {t["key"]: t["value"] for t in e.get("tags", [])}.get("mlflow.experimentKind")
                 for e in experiments["experiments"]}
        assert kinds["fc_depth"] == kinds["report"] == "custom_model_development"  # the UI's training view
        report_run = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                                   json={"experiment_ids": [ids["report"]]}).json()["runs"][0]
        listed = requests.get(f"{base}/api/2.0/mlflow/artifacts/list",
                              params={"run_id": report_run["info"]["run_id"]}).json()["files"]
        assert {"claims_table.json", "report.html", "metrics.json"} <= {f["path"] for f in listed}
        runs = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                             json={"experiment_ids": [ids["fc_depth"]], "max_results": 1000}).json()["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        stages = {t.get("stage") for t in tags}
        assert {"fc_depth_minima", "fc_depth_paths", "fc_depth_topology"} <= stages
        assert all(t.get("profile") == "tiny" and t.get("git_commit") for t in tags)
        topo = [r for r, t in zip(runs, tags) if t.get("stage") == "fc_depth_topology" and t.get("variant")]
        assert len(topo) == 2
        for run in topo:
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert metrics["to_score"] >= 0
            assert {t["key"]: t["value"] for t in run["data"]["tags"]}["data_source"].startswith("SYNTHETIC")
        minima = [r for r, t in zip(runs, tags) if t.get("stage") == "fc_depth_minima" and t.get("variant")]
        keys = {m["key"] for m in minima[0]["data"]["metrics"]}
        assert {"m0_train_loss", "m0_test_acc", "train_loss_m0", "lr"} <= keys
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_path_schedule_converts_paper_epochs_to_steps():
    from losstopo.paths_stage import path_schedule
    from losstopo.config import PathConfig

    # Table 13, CIFAR-10: batch 150, S_oc10 = S(270, 300, 2e-3, 1.25e-4) over 300 epochs, refinement every 25.
    cfg = PathConfig(batch_size=150, epochs=300, schedule="piecewise", lr=2e-3, lr_min=1.25e-4, m1=270, m2=300,
                     refine_every_epochs=25)
    plan = path_schedule(cfg, n_samples=1500)  # 10 steps per epoch
    assert plan["steps"] == 3000 and plan["refinement"].every == 250
    assert plan["lr"](2700) == pytest.approx(2e-3) and plan["lr"](3000) == pytest.approx(1.25e-4)
    assert path_schedule(PathConfig(steps=7), n_samples=100) == {"steps": 7, "lr": 0.05, "refinement": None,
                                                                 "record_every": 1}


def test_a_missing_dataset_stops_the_stage_before_any_training(tmp_path, mlflow_store):
    from losstopo.errors import DataError

    (tmp_path / "data" / "offline").mkdir(parents=True)
    x = np.zeros((64, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "data" / "offline" / "mnist.npz", x_train=x, y_train=np.arange(64) % 10, x_test=x,
             y_test=np.arange(64) % 10)
    raw = json.loads(json.dumps(TINY))
    raw["fc_depth"]["datasets"] = ["mnist", "fashion_mnist"]  # mnist is there, fashion_mnist is not
    raw["profiles"]["tiny"]["data"] = {"root": str(tmp_path / "data"), "allow_synthetic": False}
    params = __import__("losstopo.config", fromlist=["resolve"]).resolve(raw)
    config = params.experiment("fc_depth")
    with pytest.raises(DataError, match="no offline copy of fashion_mnist"):
        run_minima("fc_depth", fc_depth.variants(config), config, params, tmp_path / "artifacts")
    assert not list((tmp_path / "artifacts").rglob("minima.pt"))  # mnist was not trained first


def test_an_interrupted_paths_stage_reruns_only_unfinished_jobs(tiny_params, tmp_path, monkeypatch):
    """A job that fails leaves no paths.json; the rerun does only the jobs that had not finished, and its
    outputs equal those of an uninterrupted run. Jobs are pickled and run out of order, as on Ray."""
    import dataclasses
    import shutil

    from executors import use_pickling_executor

    import losstopo.paths_stage as paths_stage

    config = tiny_params.experiment("fc_depth")
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, pairs_per_job=1))
    variants = fc_depth.variants(config)
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    run_minima("fc_depth", variants, config, tiny_params, clean)
    shutil.copytree(clean / "fc_depth/minima", broken / "fc_depth/minima")
    run_paths("fc_depth", variants, config, tiny_params, clean)

    executor = use_pickling_executor(monkeypatch)
    real_optimize, calls = paths_stage.optimize_paths, []

    def fails_on_the_fourth_job(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("worker lost")
        return real_optimize(*args, **kwargs)

    monkeypatch.setattr(paths_stage, "optimize_paths", fails_on_the_fourth_job)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_paths("fc_depth", variants, config, tiny_params, broken)
    assert not list((broken / "fc_depth/paths").rglob("paths.json"))  # nothing half-written
    assert len(list((broken / ".jobs").rglob("*.pt"))) == 3

    monkeypatch.setattr(paths_stage, "optimize_paths", real_optimize)
    executor.calls = 0
    run_paths("fc_depth", variants, config, tiny_params, broken)
    assert executor.calls == 2 * 3 - 3  # 2 variants x 3 pairs, 3 finished before the failure
    for variant in variants:
        name = f"fc_depth/paths/{variant.key}/paths.json"
        assert (broken / name).read_text() == (clean / name).read_text()
    assert not list((broken / ".jobs").rglob("*.pt"))


def test_the_report_preamble_sums_the_recorded_stage_wall_times(tmp_path):
    from losstopo.reporting import stage_times
    from losstopo.io import save_json

    save_json({"wall_s": 90.0, "device": "cpu", "threads": 2, "executor": "local"},
              tmp_path / "fc_depth" / "minima" / "stage.json")
    save_json({"wall_s": 30.0, "device": "cpu", "threads": 1, "executor": "ray"},
              tmp_path / "fc_depth" / "paths" / "stage.json")
    text = stage_times(["fc_depth", "permutation_barrier"], tmp_path)
    assert "**2.0 min** over 2 of 4 stages" in text
    assert "| fc_depth | minima | 1.5 min | cpu, 2 threads, local executor |" in text
    assert "| permutation_barrier | paths | not recorded |  |" in text
    assert "resumed" not in text.split("not counted")[1]  # no output files at all: nothing from earlier runs


def test_a_resumed_stage_says_how_many_outputs_came_from_earlier_runs(tmp_path):
    """A stage that kept finished variants (their settings unchanged) records its own invocation's wall time only:
    the table says so, counting the output files older than that invocation."""
    import os

    from losstopo.io import save_json
    from losstopo.reporting import stage_times

    paths = tmp_path / "permutation_barrier" / "paths"
    for name in ("mnist-H10/paths.json", "mnist-H25/paths.json", "toy/paths.json"):
        (paths / name).parent.mkdir(parents=True, exist_ok=True)
        (paths / name).write_text("{}")
    save_json({"wall_s": 600.0, "device": "cpu", "threads": 2, "executor": "local"}, paths / "stage.json")
    now = os.stat(paths / "stage.json").st_mtime
    os.utime(paths / "mnist-H10/paths.json", (now - 3600, now - 3600))  # written an hour before this run began
    text = stage_times(["permutation_barrier"], tmp_path)
    assert "| permutation_barrier | paths | 10.0 min (resumed: 1 of 3 output files from earlier runs) |" in text
    os.utime(paths / "mnist-H10/paths.json", (now - 60, now - 60))  # written during this run
    assert "resumed:" not in stage_times(["permutation_barrier"], tmp_path)


def test_stage_timing_records_the_executor_that_ran_the_jobs_not_the_params_default(tiny_params, tmp_path,
                                                                                     monkeypatch):
    import losstopo.stage_frame as stage_frame
    from losstopo.reporting import where_words
    from losstopo.executor import LocalExecutor
    from losstopo.io import load_json
    from losstopo.machine import cpu_description

    class FakeRay(LocalExecutor):  # what LOSSTOPO_EXECUTOR=ray makes, without starting Ray
        name = "ray"

    monkeypatch.setattr(stage_frame, "make_executor", lambda kind, config: FakeRay())
    monkeypatch.setenv("LOSSTOPO_TRACKING", "off")
    params = tiny_params
    assert params.executor == "local"
    with stage_frame.compute_stage(params, "fc_depth", "paths", [], {}, tmp_path):
        pass
    timing = load_json(tmp_path / "fc_depth" / "paths" / stage_frame.STAGE_TIMING)
    assert timing["executor"] == "ray" and timing["cpus_per_job"] == params.ray.cpus_per_job
    assert timing["cpu"] == cpu_description()  # the machine the stage ran on
    assert where_words(timing) == f"cpu ({cpu_description()}), ray executor, {params.ray.cpus_per_job:g} CPU per job"


@pytest.mark.slow
def test_best_of_both_path_methods_defines_each_bar_and_the_report_shows_both(tiny_params, tmp_path):
    import dataclasses

    from losstopo.paths_stage import run_curves

    root = tmp_path / "artifacts"
    config = tiny_params.experiment("fc_depth")
    variants = fc_depth.variants(config)
    run_curves("fc_depth", variants, config, tiny_params, root)  # method alg3: no curves requested
    assert "alg3" in json.loads((root / "fc_depth/curves/NOT_RUN.json").read_text())["not_run"]
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, method="best", curve_steps=20))
    for stage in (run_minima, run_paths, run_curves, run_topology):
        stage("fc_depth", variants, config, tiny_params, root)
    assert not (root / "fc_depth/curves/NOT_RUN.json").exists()
    for variant in variants:
        alg3 = json.loads((root / f"fc_depth/paths/{variant.key}/paths.json").read_text())
        curves = json.loads((root / f"fc_depth/curves/{variant.key}/paths.json").read_text())
        topo = json.loads((root / f"fc_depth/topology/{variant.key}/topology.json").read_text())
        assert alg3["method"] == "alg3" and curves["method"] == "polychain"
        assert topo["path_max"] == [min(a, c) for a, c in zip(alg3["max_loss"], curves["max_loss"])]
        assert topo["path_method"] == ["alg3" if a <= c else "polychain"
                                       for a, c in zip(alg3["max_loss"], curves["max_loss"])]
        assert set(topo["to_score_by_method"]) == {"alg3", "polychain"}
        assert topo["to_score"] <= min(topo["to_score_by_method"].values()) + 1e-12
    section = fc_depth.report_section(config, tmp_path / "figures", root)
    text = "\n".join(str(block) for block in section.blocks)
    assert "TO-score, polychain alone" in text and "bars' paths by method" in text
    assert (tmp_path / "figures" / "fc_depth_path_methods_svhn.png").stat().st_size > 1000


def test_a_misspelled_dataset_or_missing_paths_delete_nothing(tiny_params, tmp_path):
    import dataclasses

    from losstopo.errors import DataError, LosstopoError

    root = tmp_path / "artifacts"
    config = tiny_params.experiment("fc_depth")
    variants = fc_depth.variants(config)
    kept = [root / "fc_depth" / stage / v.key / "kept.txt" for stage in ("minima", "topology") for v in variants]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("finished work")
    typo = dataclasses.replace(config, datasets=["fashion_mnsit"])
    with pytest.raises(DataError, match="fashion_mnsit"):
        run_minima("fc_depth", fc_depth.variants(typo), typo, tiny_params, root)
    with pytest.raises(LosstopoError, match="fc_depth paths: no finished run of this stage"):
        run_topology("fc_depth", variants, config, tiny_params, root)
    assert all(path.read_text() == "finished work" for path in kept)


def test_minima_made_by_other_training_code_are_retrained_not_kept(tiny_params, tmp_path, monkeypatch):
    from executors import use_pickling_executor

    import losstopo.minima_stage as minima_stage

    root = tmp_path / "artifacts"
    config = tiny_params.experiment("fc_depth")
    variants = fc_depth.variants(config)
    executor = use_pickling_executor(monkeypatch)
    run_minima("fc_depth", variants, config, tiny_params, root)
    assert executor.calls == len(variants)
    run_minima("fc_depth", variants, config, tiny_params, root)  # same code: every variant is skipped
    assert executor.calls == len(variants)
    monkeypatch.setattr(minima_stage, "TRAINING_CODE", "another version of losstopo.train")
    run_minima("fc_depth", variants, config, tiny_params, root)
    assert executor.calls == 2 * len(variants)


def test_the_report_refuses_a_topology_older_than_its_paths(tiny_params, tmp_path):
    from losstopo.errors import LosstopoError

    root = tmp_path / "artifacts"
    config, variants = _run_all(tiny_params, root)
    fc_depth.report_section(config, tmp_path / "figures", root)  # fresh: fine
    path = root / "fc_depth/paths" / variants[0].key / "paths.json"
    path.write_text(path.read_text().replace('"variant"', '"variant" ', 1))  # the paths stage wrote again
    with pytest.raises(LosstopoError, match="older than its paths"):
        fc_depth.report_section(config, tmp_path / "figures", root)
