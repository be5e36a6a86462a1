"""The wrn_robustness stages end to end on tiny synthetic settings (barcodes paper, section 4, Appendix I)."""

import json
import math
from itertools import combinations

import numpy as np
import pytest
import torch
from tiny import WRN_EVAL_POINTS, WRN_TRIANGLE_RESOLUTION, tiny_params
from conftest import resolve_tiny
from executors import use_pickling_executor
from stores import fresh_store

from benchmarks import wrn_robustness as wr
from benchmarks.wrn_robustness.jobs import _eval_loss
from benchmarks.wrn_robustness.study import STUDIES, study_config
from losstopo import data
from losstopo.config import resolve
from losstopo.job_data import DataRequest, job_dataset, stage_data
from losstopo.models import build_model
from losstopo.stacked import StackedModel

N_EVAL, RESOLUTION = WRN_EVAL_POINTS, WRN_TRIANGLE_RESOLUTION
TINY = tiny_params("wrn_robustness")
N_MINIMA = {"wrn": 3, "lenet": 4}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import mlflow

    tmp = tmp_path_factory.mktemp("wrn_robustness")
    (tmp / "data" / "offline").mkdir(parents=True)
    raw = json.loads(json.dumps(TINY))
    raw["data"]["root"] = str(tmp / "data")
    params = resolve(raw)
    config = params.experiment("wrn_robustness")
    root = tmp / "artifacts"
    uri = fresh_store(tmp)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.chdir(tmp)
        for name in ("cifar100", "fashion_mnist"):  # small stand-ins: generating the full-size ones takes ~20 s
            patch.setitem(data.SYNTHETIC_SIZES, name, (512, 128))
        mlflow.set_tracking_uri(uri)
        wr.run_minima(config, params, root)
        wr.run_paths(config, params, root)
        wr.run_topology(config, params, root)
        section = wr.report_section(config, tmp / "figures", root)
        yield {"params": params, "config": config, "root": root, "tmp": tmp, "section": section}
        mlflow.set_tracking_uri(None)


def _load(run, stage, study, name):
    return json.loads((run["root"] / "wrn_robustness" / stage / study / name).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_one_curve_per_pair_and_one_triangle_per_triple_and_regime(run, study):
    paths = _load(run, "paths", study, "paths.json")
    n = N_MINIMA[study]
    assert len(paths["minima_losses"]) == n
    assert [tuple(p) for p in paths["pairs"]] == list(combinations(range(n), 2))
    assert np.asarray(paths["curve_losses"]).shape == (math.comb(n, 2), N_EVAL)
    assert [tuple(t) for t in paths["triples"]] == list(combinations(range(n), 3))
    assert set(paths["triangles"]) == {"vertices_fixed", "sides_fixed"}
    for tri in paths["triangles"].values():
        assert len(tri["max"]) == math.comb(n, 3)
        assert np.asarray(tri["losses"]).shape == (math.comb(n, 3), (RESOLUTION + 1) * (RESOLUTION + 2) // 2)
    assert paths["curve_steps"] == 2 and paths["triangles"]["sides_fixed"]["steps"] == 2  # 1 epoch of 64 / 32
    # Convergence measured after round(0.8 * 2) = 2 steps: the final maxima, so nothing moved.
    assert paths["curve_max_at_checkpoint"] == pytest.approx(paths["curve_max"])
    assert paths["curve_converged"] == [True] * math.comb(n, 2) and "highest loss" in paths["convergence_rule"]
    for tri in paths["triangles"].values():
        assert tri["max_at_checkpoint"] == pytest.approx(tri["max"]) and tri["converged"] == [True] * math.comb(n, 3)


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_curves_start_and_end_at_their_minima(run, study):
    paths = _load(run, "paths", study, "paths.json")
    losses, curves = paths["minima_losses"], np.asarray(paths["curve_losses"])
    for (i, j), row in zip(paths["pairs"], curves):
        assert row[0] == pytest.approx(losses[i], rel=1e-5)
        assert row[-1] == pytest.approx(losses[j], rel=1e-5)
    straight = _straight_segment_losses(run, study, paths)
    assert straight[:, [0, -1]] == pytest.approx(curves[:, [0, -1]], rel=1e-5)  # the same loss: ends at the minima
    # The curves were trained: every bend moved off its segment's midpoint, so inside the curve the loss differs
    # (by >= 3e-5 relative after the tiny run's two steps; an untrained curve gives the segment's, up to fp32 noise).
    moved = np.abs(curves[:, 1:-1] - straight[:, 1:-1]).max(axis=1) / straight[:, 1:-1].max(axis=1)
    assert np.all(moved > 1e-6), moved


def _straight_segment_losses(run, study: str, paths: dict) -> np.ndarray:
    """The stage's evaluation loss (the curves' training subset, no augmentation, BatchNorm over the whole subset) on
    the straight segment (1 - t) theta_i + t theta_j of every pair at the curves' t: an untrained curve's losses."""
    sc = study_config(run["config"], study)
    dataset = job_dataset(stage_data(run["params"], [sc.dataset]),
                          DataRequest(sc.dataset, sc.curves.train_subset, 0, sc.minima.seed))
    loss = _eval_loss(StackedModel(build_model(sc.model, dataset.x_train.shape[1:], dataset.n_classes)),
                      dataset.x_train, dataset.y_train)
    thetas = torch.load(run["root"] / "wrn_robustness/minima" / study / "minima.pt", weights_only=True)["thetas"]
    t = torch.tensor(paths["t"], dtype=thetas.dtype)[:, None]
    with torch.no_grad():
        return np.array([loss((1 - t) * thetas[i] + t * thetas[j]).numpy() for i, j in paths["pairs"]])


def _side_mismatch(paths: dict, regime: str) -> float:
    """Largest relative difference between the loss on a triangle's sides and on the curves of the same pairs."""
    curves = {tuple(p): np.asarray(c) for p, c in zip(paths["pairs"], paths["curve_losses"])}
    tri = paths["triangles"][regime]
    grid, steps = np.asarray(tri["grid"]), np.rint(np.asarray(tri["grid"]) * RESOLUTION).astype(int)
    mismatch = 0.0
    for (i, j, k), losses in zip(paths["triples"], np.asarray(tri["losses"])):
        # Side AB from A to B is the curve (i, j); BC is (j, k); CA from C to A is the curve (i, k) backwards.
        for (first, second), curve in (((0, 1), curves[(i, j)]), ((1, 2), curves[(j, k)]), ((0, 2), curves[(i, k)])):
            opposite = 3 - first - second
            for s in range(RESOLUTION + 1):
                row = np.flatnonzero((steps[:, opposite] == 0) & (steps[:, second] == s))[0]
                assert grid[row, first] == pytest.approx(1 - s / RESOLUTION)
                mismatch = max(mismatch, abs(losses[row] - curve[s]) / abs(curve[s]))
    return mismatch


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_sides_fixed_triangles_have_the_trained_curves_as_sides(run, study):
    paths = _load(run, "paths", study, "paths.json")
    curves = {tuple(p): np.asarray(c) for p, c in zip(paths["pairs"], paths["curve_losses"])}
    for regime in ("sides_fixed", "vertices_fixed"):
        tri = paths["triangles"][regime]
        mismatch = _side_mismatch(paths, regime)
        if regime == "sides_fixed":
            assert mismatch < 1e-4
            assert np.asarray(tri["side_max"]).max(axis=1) == pytest.approx(
                [max(curves[(i, j)].max(), curves[(j, k)].max(), curves[(i, k)].max())
                 for i, j, k in paths["triples"]], rel=1e-4)
        else:  # the side centres were retrained: the sides are other chains (vertices still shared)
            assert mismatch > 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_one_bars_follow_the_appendix_i_rule(run, study):
    # After one epoch nearly every triangle's maximum lies on its sides (no finite bar), so the branches below
    # compare little; test_wrn_topology_hand.py checks the same rules on a complex with known 1-bars.
    paths = _load(run, "paths", study, "paths.json")
    topo = _load(run, "topology", study, "topology.json")
    losses = paths["minima_losses"]
    edge = {tuple(p): max(m, losses[p[0]], losses[p[1]]) for p, m in zip(paths["pairs"], paths["curve_max"])}
    for regime, tri in paths["triangles"].items():
        bars = [tuple(b) for b in topo["saddles"][regime]["bars_1"]]
        expected_single = []
        for (i, j, k), top in zip(paths["triples"], tri["max"]):
            birth = max(edge[(i, j)], edge[(j, k)], edge[(i, k)])
            expected_single.append((birth, top) if top > birth else None)
        stored = topo["saddles"][regime]["appendix_i_bars"]
        assert [b is None for b in stored] == [b is None for b in expected_single]
        for got, want in zip(stored, expected_single):
            if want is not None:
                assert tuple(got) == pytest.approx(want)
        if regime == "vertices_fixed":  # the complex of the triangles' own sides (Fig. 16)
            own = [max(m, losses[a], losses[b]) for (i, j, k), sides in zip(paths["triples"], tri["side_max"])
                   for (a, b), m in zip(((i, j), (j, k), (i, k)), sides)]
            for birth, death in bars:
                assert min(abs(birth - v) for v in own) < 1e-9
                assert death == math.inf or min(abs(death - t) for t in tri["max"]) < 1e-9
        elif len(paths["triples"]) == 1:  # one triangle: the complex's 1-barcode IS Appendix I's segment
            assert bars == ([] if expected_single[0] is None else [pytest.approx(expected_single[0])])
        else:  # several triangles: every bar is born at a curve's value and dies at a triangle's value
            for birth, death in bars:
                assert birth < death
                assert min(abs(birth - v) for v in edge.values()) < 1e-9
                assert min(abs(death - max(t, *[edge[e] for e in combinations(tr, 2)]))
                           for tr, t in zip(map(tuple, paths["triples"]), tri["max"])) < 1e-9
            assert len(bars) <= math.comb(len(losses), 2) - (len(losses) - 1)  # independent cycles of K_n
        assert topo["saddles"][regime]["to_score_1"] == pytest.approx(max([(d - b) / 2 for b, d in bars], default=0))


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_robustness_tables(run, study):
    topo = _load(run, "topology", study, "topology.json")
    robust = topo["robustness"]
    n = N_MINIMA[study]
    assert robust["sizes"] == [s for s in (2, 3, 4, 5) if s <= n]
    assert len(robust["per_minimum"]) == n and all(len(e["minima"]) == n for e in robust["per_size"])
    losses = topo["minima_losses"]
    for entry, values in zip(robust["per_size"], robust["values"]):
        size = entry["size"]
        for p, (cell, hs) in enumerate(zip(entry["minima"], values["minima"])):
            # Subsets of this size that contain p and at least one lower minimum give p a finite bar.
            lower = sum(losses[q] < losses[p] for q in range(n))
            expected = math.comb(n - 1, size - 1) - math.comb(n - 1 - lower, size - 1)
            assert cell["n"] == len(hs) == expected
            if hs:
                assert cell["mean"] == pytest.approx(np.mean(hs)) and cell["std"] == pytest.approx(np.std(hs))
        if size == n:  # the full set: one barcode, the Algorithm 1 bars themselves
            assert [h[0] if h else math.inf for h in values["minima"]] == pytest.approx([d for _, d in topo["bars"]])
    fixed = robust["fixed_minimum"]
    assert fixed["index"] == min(3, n - 1) and [r["size"] for r in fixed["by_size"]] == robust["sizes"]
    assert all(pt["size"] < n for pt in robust["trend_points"])
    metrics = json.loads((run["root"] / "wrn_robustness" / "topology_metrics.json").read_text())
    assert metrics[study]["to_score"] == pytest.approx(topo["to_score"]) and "mean_cv" in metrics[study]


@pytest.mark.slow
def test_data_sources_are_carried_through_every_stage(run):
    for study, name in (("wrn", "cifar100"), ("lenet", "fashion_mnist")):
        minima = _load(run, "minima", study, "minima.json")["summary"]
        assert minima["data_source"].startswith(f"SYNTHETIC stand-in of {name}")
        assert _load(run, "paths", study, "paths.json")["data_source"] == minima["data_source"]
        assert _load(run, "topology", study, "topology.json")["data_source"] == minima["data_source"]
        assert len(minima["train_loss"]) == N_MINIMA[study]
        assert _load(run, "paths", study, "paths.json")["curve_augment"] == (study == "wrn")  # as the minima


@pytest.mark.slow
def test_report_section_tables_claims_and_figures(run):
    section = run["section"]
    text = "\n".join(section.blocks)
    for value in ("0.0072 ± 0.0007", "77.9280 ± 0.2665", "0.1596 ± 0.0050", "90.7725 ± 0.2987"):
        assert value in text  # Tables 3 and 14 beside ours
    assert "`wrn-10-1`" in text and "`lenet`" in text and "SYNTHETIC stand-in of cifar100" in text
    assert len(section.claims) == 4  # per study: robustness, and triangles of both regimes compared
    regimes = [c for c in section.claims if "trainable side centres" in c.claim]
    assert len(regimes) == 2 and all(c.unit.startswith("set of minima") and c.result.n == 1 for c in regimes)
    by_study = {("wrn" if "wrn-10-1" in c.claim else "lenet"): c for c in section.claims if c not in regimes}
    for claim in section.claims:  # measured over the minima and curves, or both regimes' triangles and curves
        assert 0 <= claim.converged_fraction <= 1 and 0 <= claim.null_rate <= 0.2 and "Converged: " in claim.note
    for study, claim in by_study.items():
        minima, paths = _load(run, "minima", study, "minima.json")["summary"], _load(run, "paths", study, "paths.json")
        flags = minima["converged"] + paths["curve_converged"]
        assert claim.converged_fraction == pytest.approx(np.mean(flags))
    assert "Converged (maximum after 80% of the steps" in text and "sides_fixed: converged" in text
    for claim in by_study.values():
        assert "barriers shuffled over pairs" in claim.claim and "Monte Carlo" in claim.result.test
    robust = _load(run, "topology", "lenet", "topology.json")["robustness"]
    assert by_study["lenet"].result.statistic == pytest.approx(robust["mean_cv"])
    assert all(c.data_source.startswith("SYNTHETIC") for c in section.claims)
    for figure in section.figures:
        assert figure.is_file() and figure.stat().st_size > 1000
    names = {f.name for f in section.figures}
    for study in STUDIES:
        assert {f"wrn_robustness_barcode_{study}.png", f"wrn_robustness_saddles_{study}.png",
                f"wrn_robustness_fig7a_{study}.png", f"wrn_robustness_fig7b_{study}.png",
                f"wrn_robustness_curves_{study}.png"} <= names


@pytest.mark.slow
def test_mlflow_runs_carry_stage_tags_data_sources_and_metrics(run):
    import mlflow

    runs = mlflow.search_runs(experiment_names=["wrn_robustness"])
    stages = set(runs["tags.stage"])
    assert {"wrn_robustness_minima", "wrn_robustness_paths", "wrn_robustness_topology"} <= stages
    variants = runs[runs["tags.variant"].notna()]
    assert len(variants) == 6 and all(s.startswith("SYNTHETIC") for s in variants["tags.data_source"])
    paths = variants[variants["tags.stage"] == "wrn_robustness_paths"]
    assert paths["metrics.curve_0_1_max"].notna().all() and paths["metrics.triangle_sides_fixed_0_1_2_max"].notna().all()
    assert paths["metrics.curve_converged_fraction"].notna().all()
    assert paths["metrics.triangle_vertices_fixed_converged_fraction"].notna().all()
    topo = variants[variants["tags.stage"] == "wrn_robustness_topology"]
    assert (topo["metrics.to_score"] >= 0).all() and topo["metrics.to_score_1_sides_fixed"].notna().all()


@pytest.mark.slow
def test_finished_work_is_not_redone(run):
    params, config, root = run["params"], run["config"], run["root"]
    files = [root / "wrn_robustness/minima/wrn/minima.pt", root / "wrn_robustness/paths/lenet/paths.json"]
    stamps = [f.stat().st_mtime_ns for f in files]
    wr.run_minima(config, params, root)
    wr.run_paths(config, params, root)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def _minima_and_paths(params, root) -> dict:
    config = params.experiment("wrn_robustness")
    wr.run_minima(config, params, root)
    wr.run_paths(config, params, root)
    return {(stage, study): json.loads((root / "wrn_robustness" / stage / study / name).read_text())
            for stage, name in (("minima", "minima.json"), ("paths", "paths.json")) for study in STUDIES}


@pytest.mark.slow
def test_stages_write_the_same_outputs_whichever_executor_runs_the_jobs(tmp_path, mlflow_store, monkeypatch):
    raw = json.loads(json.dumps(TINY))
    for study in STUDIES:  # uneven chunks: wrn 3 pairs -> 2 + 1, lenet 4 triples -> 3 + 1
        raw["wrn_robustness"][study]["curves"] |= {"pairs_per_job": 2, "triangles_per_job": 3}
    params = resolve_tiny(raw, tmp_path)
    for name in ("cifar100", "fashion_mnist"):
        monkeypatch.setitem(data.SYNTHETIC_SIZES, name, (64, 32))
    local = _minima_and_paths(params, tmp_path / "local")
    executor = use_pickling_executor(monkeypatch)  # jobs pickled and run in reverse order
    remote = _minima_and_paths(params, tmp_path / "pickling")
    assert executor.calls == 2 + (2 + 3) + 2 * (1 + 2)  # minima; curves of wrn, lenet; triangles per regime
    assert local == remote
    for study in STUDIES:
        paths = local[("paths", study)]
        assert np.asarray(paths["curve_losses"]).shape == (math.comb(N_MINIMA[study], 2), N_EVAL)
        assert len(paths["triangles"]["vertices_fixed"]["max"]) == math.comb(N_MINIMA[study], 3)
        assert _side_mismatch(paths, "sides_fixed") < 1e-4  # each triangle job got the bends of its own sides
    assert not list((tmp_path / "pickling" / ".jobs").rglob("*.pt"))  # job caches cleared


def test_the_regime_claim_is_tested_over_sets_of_minima_not_over_the_triangles_of_one_set():
    """10/10 triangles lower, every input converged: still one set of minima (its triangles share vertices and
    sides), which no test can make significant: underpowered, with the triangles' count in the note."""
    from benchmarks.wrn_robustness.claims import regime_claim
    from losstopo.report import finalise

    lower, higher = np.linspace(0.010, 0.019, 10), np.linspace(0.011, 0.025, 10)
    paths = {"triangles": {"vertices_fixed": {"max": lower.tolist(), "converged": [True] * 10},
                           "sides_fixed": {"max": higher.tolist(), "converged": [True] * 10}},
             "curve_converged": [True] * 10, "convergence_rule": "a rule"}
    topo = {"model": "lenet", "data_source": "offline copy", "profile": "cpu"}
    claim = regime_claim("lenet", topo, paths)
    assert claim.unit.startswith("set of minima") and claim.result.n == 1 and claim.converged_fraction == 1.0
    assert claim.result.min_attainable_p == 0.5 and claim.result.statistic == pytest.approx(np.mean(lower - higher))
    assert "lower with trainable side centres in 10/10" in claim.note
    finalise([claim])
    assert claim.verdict == "underpowered"
