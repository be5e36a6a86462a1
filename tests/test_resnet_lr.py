"""resnet_lr end to end on tiny synthetic settings (both datasets, both LR types), and its stats helper."""

import json
import math

import mlflow
import numpy as np
import pytest
from tiny import RESNET_MINIMA, RESNET_POINTS, tiny_params
from conftest import resolve_tiny
from executors import run_minima_and_paths_both_ways
from stores import fresh_store

from benchmarks import resnet_lr, resnet_lr_claims
from losstopo import data as data_module
from losstopo.config import resolve
from losstopo import evidence
from losstopo.evidence import group_test, trend_test
from losstopo.report import finalise, render

N_MINIMA, N_POINTS = RESNET_MINIMA, RESNET_POINTS  # per type; per path
TINY = tiny_params("resnet_lr")
N_PATHS = math.comb(2 * N_MINIMA, 2)


# --- the three stages and the report section ------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resnet_lr")
    (tmp / "data" / "offline").mkdir(parents=True)  # no offline copies: both sets fall back to stand-ins
    raw = json.loads(json.dumps(TINY))
    raw["data"]["root"] = str(tmp / "data")
    params = resolve(raw)
    config = params.experiment("resnet_lr")
    root = tmp / "artifacts"
    with pytest.MonkeyPatch.context() as patch:  # an isolated MLflow store, as conftest's mlflow_store
        patch.setattr(data_module, "SYNTHETIC_SIZES", {"cifar10": (64, 32), "svhn": (64, 32)})
        uri = fresh_store(tmp)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(tmp)
        mlflow.set_tracking_uri(uri)
        try:
            for stage in (resnet_lr.run_minima, resnet_lr.run_paths, resnet_lr.run_topology):
                stage(config, params, root)
            # The report reads only what DVC gives its stage (minima, topology), not the paths.
            hidden = root / "resnet_lr" / "paths"
            hidden.rename(tmp / "paths-hidden")
            section = resnet_lr.report_section(config, tmp / "figures", root)
            (tmp / "paths-hidden").rename(hidden)
            runs = mlflow.search_runs(experiment_names=["resnet_lr"])
        finally:
            mlflow.set_tracking_uri(None)
    return {"tmp": tmp, "root": root, "config": config, "section": section, "runs": runs}


def _json(pipeline, *parts):
    return json.loads(pipeline["root"].joinpath("resnet_lr", *parts).read_text())


@pytest.mark.slow
def test_two_types_of_minima_per_dataset(pipeline):
    for dataset in ("cifar10", "svhn"):
        for kind, seed in (("type1", 0), ("type2", 100)):
            summary = _json(pipeline, "minima", f"{dataset}-{kind}", "minima.json")["summary"]
            assert summary["type"] == kind and len(summary["test_acc"]) == N_MINIMA
            assert summary["seeds"] == [seed + k for k in range(N_MINIMA)]
            assert summary["data_seed"] == 0 and summary["n_train"] == 32 and summary["n_test"] == 16
            assert len(summary["history"]) == 2  # per-epoch training losses of the fixed budget
            assert summary["data_source"].startswith(f"SYNTHETIC stand-in of {dataset}")
    metrics = _json(pipeline, "minima_metrics.json")
    assert set(metrics) == {f"{d}-{k}" for d in ("cifar10", "svhn") for k in ("type1", "type2")}


@pytest.mark.slow
def test_paths_join_all_pairs_and_end_at_the_minima(pipeline):
    for dataset in ("cifar10", "svhn"):
        record = _json(pipeline, "paths", dataset, "paths.json")
        n = 2 * N_MINIMA
        assert record["types"] == [1] * N_MINIMA + [2] * N_MINIMA
        assert [tuple(p) for p in record["pairs"]] == [(i, j) for i in range(n) for j in range(i + 1, n)]
        assert len(record["max_loss"]) == N_PATHS
        assert sorted(record["pair_kinds"]) == sorted(["1-1"] * 1 + ["2-2"] * 1 + ["1-2"] * 4)
        assert record["path_subset_nested"] and record["n_path_samples"] == 16 and record["steps"] == 3
        assert record["data_source"].startswith(f"SYNTHETIC stand-in of {dataset}")
        assert max(record["endpoint_error"]) == 0.0  # first and last points are exactly the two minima
        losses = record["minima_losses"]
        for (i, j), dense, top in zip(record["pairs"], record["dense_losses"], record["max_loss"]):
            assert dense[0] == pytest.approx(losses[i], rel=1e-5, abs=1e-6)
            assert dense[-1] == pytest.approx(losses[j], rel=1e-5, abs=1e-6)
            assert top == pytest.approx(max(dense)) and top >= max(losses[i], losses[j]) - 1e-6
        # Algorithm 4 at epoch 2: with 3 points the distance criterion (1.5 > T = 1.2) inserts two points.
        assert all(n_points == N_POINTS + 2 for n_points in record["n_points"])
        for positions, n_points in zip(record["positions"], record["n_points"]):
            # the points plus alpha = .2, .4, .6, .8 at least (adaptive probes and the refined maximum add more)
            fixed = {i + a for i in range(n_points - 1) for a in (0.0, 0.2, 0.4, 0.6, 0.8)} | {n_points - 1}
            assert all(min(abs(np.asarray(positions) - f)) < 1e-9 for f in fixed)


@pytest.mark.slow
def test_barcodes_and_segment_lengths(pipeline):
    for dataset in ("cifar10", "svhn"):
        topo = _json(pipeline, "topology", dataset, "topology.json")
        paths = _json(pipeline, "paths", dataset, "paths.json")
        assert len(topo["bars"]) == 2 * N_MINIMA and sum(math.isinf(d) for _, d in topo["bars"]) == 1
        assert [b for b, _ in topo["bars"]] == pytest.approx(paths["minima_losses"])
        assert topo["segment_lengths"] == pytest.approx([d - b for b, d in topo["bars"]])
        assert all(s >= -1e-6 for s in topo["segment_lengths"] if math.isfinite(s))
        assert topo["types"] == paths["types"] and topo["method"] == "paper"
        assert topo["data_source"].startswith(f"SYNTHETIC stand-in of {dataset}")
    assert set(_json(pipeline, "topology_metrics.json")) == {"cifar10", "svhn"}


@pytest.mark.slow
def test_report_section_tables_figures_and_claims(pipeline):
    section = pipeline["section"]
    assert len(section.claims) == 6  # three per dataset
    finalise(section.claims)
    for claim, dataset in zip(section.claims, ["cifar10"] * 3 + ["svhn"] * 3):
        assert dataset in claim.claim and claim.data_source.startswith(f"SYNTHETIC stand-in of {dataset}")
        assert claim.profile == "tiny" and claim.verdict in evidence.VERDICTS and claim.unit == "minimum"
    for claim in section.claims[0::3] + section.claims[1::3]:  # the two type comparisons state the premise
        assert claim.premise_ok is not None and "near-equal" in claim.premise
        assert 0 <= claim.result.p_value <= 1
    tests = [c.result.test for c in section.claims[:3]]
    assert "Mann-Whitney" in tests[0] and "type 2 > type 1" in tests[0]
    assert "Mann-Whitney" in tests[1] and "type 1 > type 2" in tests[1]
    assert "Kendall" in tests[2] and "increasing" in tests[2]
    assert section.claims[0].result.n == 2 * N_MINIMA and section.claims[1].result.n == 2 * N_MINIMA - 1
    assert "training loss" in section.claims[0].premise
    for k, dataset in enumerate(("cifar10", "svhn")):
        _assert_claims_recomputed(pipeline, dataset, section.claims[3 * k:3 * k + 3])
    text = "\n".join(section.blocks)
    assert "67.41 ± 0.93" in text and "75.74 ± 0.64" in text and "93.29 ± 0.19" in text  # Tables 1 and 2
    assert "195,210" in text and "232,138" in text and "195K" in text
    assert "| type 1 - type 2 | 4 |" in text and "| type 1 - type 1 | 1 |" in text
    assert "SVHN is not available offline" in text and "SYNTHETIC" in text
    for dataset in ("cifar10", "svhn"):
        for name in (f"resnet_lr_segments_{dataset}.png", f"resnet_lr_barcodes_{dataset}.png"):
            assert (pipeline["tmp"] / "figures" / name).stat().st_size > 1000
    md = render([section], pipeline["tmp"] / "report", pipeline["tmp"] / "figures", "# test")
    assert "Barriers h_p - L(p) of type-1 minima" in md.read_text()


def _assert_claims_recomputed(pipeline, dataset, claims):
    """A dataset's three claims from the stored minima summaries and joint barcode: test accuracy of type 2
    against type 1, the bar lengths h_p - L(p) of type 1 against type 2, and bar length against test error."""
    acc = {kind: _json(pipeline, "minima", f"{dataset}-{kind}", "minima.json")["summary"]["test_acc"]
           for kind in ("type1", "type2")}
    types = np.array([1] * len(acc["type1"]) + [2] * len(acc["type2"]))  # the joint barcode lists type 1 first
    lengths = np.array([d - b for b, d in _json(pipeline, "topology", dataset, "topology.json")["bars"]])
    errors = 1 - np.array(acc["type1"] + acc["type2"])
    finite = np.isfinite(lengths)  # the global minimum's bar is infinite
    expected = [group_test(acc["type2"], acc["type1"]), group_test(lengths[types == 1], lengths[types == 2]),
                trend_test(lengths[finite], errors[finite], "increasing")]
    for claim, want in zip(claims, expected):
        assert (claim.result.statistic, claim.result.p_value) == (want.statistic, pytest.approx(want.p_value))


def test_minima_table_puts_ours_beside_the_papers():
    from losstopo.report import Section

    section = Section("t")
    summary = {"train_loss": [0.01, 0.03], "test_loss": [1.0, 2.0], "train_acc": [1.0, 0.99], "test_acc": [0.6, 0.7]}
    resnet_lr_claims.minima_table(section, "cifar10", {"type1": summary, "type2": summary})
    table = section.blocks[0]
    assert "| test acc, % | 65.00 ± 7.07 | 67.41 ± 0.93 | 65.00 ± 7.07 | 75.74 ± 0.64 |" in table
    assert "0.0200 ± 0.0141 | 0.009 ± 0.001" in table and "| 1.74 ± 0.058 |" in table
    section = Section("t")
    resnet_lr_claims.minima_table(section, "svhn", {"type1": summary, "type2": summary})
    assert "| 88.12 ± 0.40 |" in section.blocks[0] and "| 0.001 ± 0.0001 |" in section.blocks[0]


@pytest.mark.slow
def test_mlflow_runs_per_stage_and_variant(pipeline):
    runs = pipeline["runs"]
    assert set(runs["status"]) == {"FINISHED"}
    stages = runs["tags.stage"].tolist()
    for stage in ("minima", "paths", "topology"):
        assert f"resnet_lr_{stage}" in stages
    minima = runs[(runs["tags.stage"] == "resnet_lr_minima") & runs["tags.variant"].notna()]
    assert set(minima["tags.variant"]) == {"cifar10-type1", "cifar10-type2", "svhn-type1", "svhn-type2"}
    assert all(s.startswith("SYNTHETIC") for s in minima["tags.data_source"])
    assert minima["metrics.m1_test_acc"].notna().all() and minima["metrics.train_loss_m0"].notna().all()
    paths = runs[(runs["tags.stage"] == "resnet_lr_paths") & runs["tags.variant"].notna()]
    assert set(paths["tags.variant"]) == {"cifar10", "svhn"}
    assert paths[f"metrics.path_0_{2 * N_MINIMA - 1}_max"].notna().all()


# --- executors ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_stages_write_the_same_outputs_whichever_executor_runs_the_jobs(tmp_path, mlflow_store, monkeypatch):
    raw = json.loads(json.dumps(TINY))
    raw["resnet_lr"]["datasets"] = ["cifar10"]
    raw["resnet_lr"]["cifar10"]["paths"]["pairs_per_job"] = 1
    params = resolve_tiny(raw, tmp_path)
    monkeypatch.setattr(data_module, "SYNTHETIC_SIZES", {"cifar10": (64, 32)})
    local, remote, executor = run_minima_and_paths_both_ways(resnet_lr, params, tmp_path, monkeypatch)
    assert executor.calls == 2 + N_PATHS  # one minima job per type, one paths job per pair
    for kind in ("type1", "type2"):
        name = f"minima/cifar10-{kind}/minima.json"
        assert json.loads((local / name).read_text()) == json.loads((remote / name).read_text())
    paths = [json.loads((base / "paths/cifar10/paths.json").read_text()) for base in (local, remote)]
    assert paths[0] == paths[1] and len(paths[0]["max_loss"]) == N_PATHS
    assert max(paths[0]["endpoint_error"]) == 0.0
    assert not list((tmp_path / "pickling" / ".jobs").rglob("*.pt"))  # job caches cleared
