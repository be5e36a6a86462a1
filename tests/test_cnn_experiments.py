"""cnn_channels and cnn_bn end to end on a tiny offline CIFAR-10 copy, and the stats helpers they use."""

import itertools
import json
import math

import mlflow
import numpy as np
import pytest
from tiny import tiny_params
from stores import fresh_store

from losstopo import evidence
from losstopo.evidence import group_test, trend_test

from benchmarks import cnn_bn, cnn_channels
from losstopo.minima_stage import run_minima
from losstopo.paths_stage import run_paths
from losstopo.topology_stage import run_topology
from losstopo.config import resolve
from losstopo.errors import ConfigError
from losstopo.report import finalise, render

N_TRAIN, N_TEST = 64, 32
TINY = tiny_params("cnn_channels", "cnn_bn")
OFFLINE_NOTE = f"test accuracy on the {N_TEST} test images of the offline copy"


# --- stats helpers -------------------------------------------------------------------------------

def test_accuracy_and_training_notes_come_from_the_recorded_counts():
    assert cnn_channels.accuracy_note("offline", 1000, None) == "test accuracy on the 1,000 test images of the offline copy"
    assert cnn_channels.accuracy_note("offline", 200, 200) == "test accuracy on 200 test images of the offline copy"
    assert "SYNTHETIC" in cnn_channels.accuracy_note("synthetic", 32, None)
    assert cnn_channels.accuracy_note("torchvision", 10000, None) == "test accuracy on the official test set"
    assert cnn_channels.accuracy_note("torchvision", 500, 500) == "test accuracy on 500 images of the official test set"
    assert cnn_channels.training_note(50000, None, 256).startswith(
        "minima trained on all 50,000 training images; minima losses L(p) and path maxima (saddle heights h_p) "
        "measured on 256 of them")
    assert cnn_channels.training_note(4000, 4000, None).endswith("measured on all 4,000 of them")
    assert cnn_channels.training_note(4000, 5000, 8000).startswith("minima trained on all 4,000")


# --- both experiments end to end -----------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cnn")
    rng = np.random.default_rng(0)
    (tmp / "data" / "offline").mkdir(parents=True)
    np.savez_compressed(tmp / "data" / "offline" / "cifar10.npz",
                        x_train=rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8),
                        y_train=rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
                        x_test=rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8),
                        y_test=rng.integers(0, 10, N_TEST, dtype=np.uint8))
    raw = json.loads(json.dumps(TINY))
    raw["data"]["root"] = str(tmp / "data")
    params = resolve(raw)
    root = tmp / "artifacts"
    with pytest.MonkeyPatch.context() as patch:  # an isolated MLflow store, as conftest's mlflow_store
        uri = fresh_store(tmp)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(tmp)
        mlflow.set_tracking_uri(uri)
        try:
            for module in (cnn_channels, cnn_bn):
                config = params.experiment(module.NAME)
                for stage in (run_minima, run_paths, run_topology):
                    stage(module.NAME, module.variants(config), config, params, root)
            sections = {m.NAME: m.report_section(params.experiment(m.NAME), tmp / "figures", root)
                        for m in (cnn_channels, cnn_bn)}
        finally:
            mlflow.set_tracking_uri(None)
    return {"tmp": tmp, "root": root, "params": params, "sections": sections}


@pytest.mark.slow
def test_variants_carry_layers_channels_batchnorm_and_parameters(pipeline):
    params = pipeline["params"]
    keys = {v.key: v.labels for v in cnn_channels.variants(params.experiment("cnn_channels"))}
    assert keys["cifar10-cnn-2-4"] == {"conv_layers": 2, "channels": 4, "batch_norm": False,
                                       "parameters": 3 * 4 * 25 + 4 + 4 * 4 * 25 + 4 + 16 * 4 * 10 + 10}
    bn = cnn_bn.variants(params.experiment("cnn_bn"))
    assert [v.key for v in bn] == ["cifar10-cnn-1-4-bn", "cifar10-cnn-2-4-bn", "cifar10-cnn-3-4-bn"]
    assert all(v.labels["batch_norm"] for v in bn)
    assert bn[0].labels["parameters"] == keys["cifar10-cnn-1-4"]["parameters"] + 2 * 4
    assert cnn_bn.counterpart(bn[1]).key == "cifar10-cnn-2-4"
    topo = json.loads((pipeline["root"] / "cnn_bn/topology/cifar10-cnn-3-4-bn/topology.json").read_text())
    assert topo["labels"]["conv_layers"] == 3 and topo["data_kind"] == "offline"
    assert not (pipeline["root"] / "cnn_bn/minima/cifar10-cnn-1-4").exists()  # no non-BN variant retrained


def test_cnn_bn_refuses_networks_without_batchnorm():
    raw = {"cnn_bn": {"models": ["cnn-1-4", "cnn-1-4-bn"]}}
    with pytest.raises(ConfigError, match="-bn"):
        cnn_bn.variants(resolve(raw).experiment("cnn_bn"))


def _check_claim(claim):
    if not claim.verdict:  # verdicts are set for a whole report at once
        finalise([claim])
    r = claim.result
    assert 0.0 <= r.p_value <= 1.0
    assert claim.verdict in evidence.VERDICTS and claim.unit in ("network", "minimum")
    assert claim.data_source.startswith("offline copy cifar10.npz") and claim.profile == "tiny"
    assert claim.claim and claim.paper_evidence and r.n >= 1


def _parameters(layers: int, channels: int) -> int:
    """CNN-K-C on 3x32x32 images (Tables 8-10): K 5x5 convolutions of C channels, pooled to 4x4, Linear(16 C, 10)."""
    conv = (3 * 25 + 1) * channels + (layers - 1) * (channels * 25 + 1) * channels
    return conv + 16 * channels * 10 + 10


def _barcode(pipeline, experiment: str, model: str) -> dict:
    """A network's minima losses L(p) (the births of its bars) and mean bar length h_p - L(p) (finite bars)."""
    topology = pipeline["root"] / experiment / "topology" / f"cifar10-{model}" / "topology.json"
    bars = json.loads(topology.read_text())["bars"]
    return {"births": [b for b, _ in bars], "length": float(np.mean([d - b for b, d in bars if math.isfinite(d)]))}


def _slope_difference(lengths: dict, log_parameters: dict) -> float:
    """Fig. 4b's statistic on the tiny design: the least-squares slope of the bar length against log10(parameters)
    over the networks of 4 channels (a layer added) minus the slope within CNN-1 (its two widths)."""
    across = np.polyfit([log_parameters[m] for m in ("cnn-1-4", "cnn-2-4", "cnn-3-4")],
                        [lengths[m] for m in ("cnn-1-4", "cnn-2-4", "cnn-3-4")], 1)[0]
    within = (lengths["cnn-1-8"] - lengths["cnn-1-4"]) / (log_parameters["cnn-1-8"] - log_parameters["cnn-1-4"])
    return float(across - within)


def _assert_channel_claims_recomputed(pipeline, claims):
    """The channel and parameter trends of the bar lengths, and the slope difference with its exact p over all
    24 assignments of the four networks' values (smaller is the claimed direction)."""
    models = ["cnn-1-4", "cnn-1-8", "cnn-2-4", "cnn-3-4"]
    lengths = {m: _barcode(pipeline, "cnn_channels", m)["length"] for m in models}
    parameters = {m: _parameters(int(m.split("-")[1]), int(m.split("-")[2])) for m in models}
    channels, by_parameters, interaction = claims
    expected = [(channels, trend_test([4, 8], [lengths["cnn-1-4"], lengths["cnn-1-8"]], "decreasing")),
                (by_parameters, trend_test([parameters[m] for m in models], [lengths[m] for m in models],
                                           "decreasing"))]
    for claim, want in expected:
        assert (claim.result.statistic, claim.result.p_value) == (want.statistic, pytest.approx(want.p_value))
    log_parameters = {m: np.log10(p) for m, p in parameters.items()}
    observed = _slope_difference(lengths, log_parameters)
    relabelled = [_slope_difference(dict(zip(models, values)), log_parameters)
                  for values in itertools.permutations(lengths.values())]
    assert interaction.result.statistic == pytest.approx(observed, rel=1e-9, abs=1e-12)
    assert interaction.result.p_value == pytest.approx(np.mean([s <= observed + 1e-12 for s in relabelled]))


def _assert_bn_claims_recomputed(pipeline, claims):
    """Per depth, no BN against BN: the minima losses over the minima, the mean bar lengths network against network."""
    for depth, (minima, barriers) in zip((1, 2, 3), zip(claims[0::2], claims[1::2])):
        plain = _barcode(pipeline, "cnn_channels", f"cnn-{depth}-4")
        bn = _barcode(pipeline, "cnn_bn", f"cnn-{depth}-4-bn")
        for claim, want in ((minima, group_test(plain["births"], bn["births"])),
                            (barriers, group_test([plain["length"]], [bn["length"]]))):
            assert f"CNN-{depth}" in claim.claim
            assert (claim.result.statistic, claim.result.p_value) == (want.statistic, pytest.approx(want.p_value))


@pytest.mark.slow
def test_channel_section_claims_tables_and_figures(pipeline):
    section = pipeline["sections"]["cnn_channels"]
    assert len(section.claims) == 3
    for claim in section.claims:
        _check_claim(claim)
        assert claim.unit == "network" and 0 <= claim.null_rate <= 0.1
    channels, parameters, interaction = section.claims
    for claim in (channels, parameters):
        assert claim.result.test.startswith("permutation test of Kendall's S, one-sided (decreasing)")
    # 4 networks: within CNN-1 (4 -> 8 channels), across at 4 channels (1, 2, 3 layers)
    # two of the 24 orderings reach the smallest statistic (two networks carry equal weights)
    assert "conv layer is added" in interaction.claim and interaction.result.min_attainable_p == pytest.approx(2 / 24)
    assert "channels" in channels.claim and channels.result.n == 2  # one value per network: cnn-1-4, cnn-1-8
    # two networks: one of 2 orderings, or, when their values tie (tau 0), none that could reject
    assert channels.result.min_attainable_p == pytest.approx(0.5) or \
        (channels.result.min_attainable_p == 1.0 and channels.result.effect_size == 0)
    assert "parameter count" in parameters.claim and parameters.result.n == 4
    _assert_channel_claims_recomputed(pipeline, section.claims)
    assert "zero-length bars" in parameters.note
    assert "3 conv layer(s): n/a" in "\n".join(section.blocks)
    text = "\n".join(section.blocks)
    assert OFFLINE_NOTE in text and "CNN-3-4" in text and "mean h_p" in text
    for name in ("barcodes_channels", "heights_vs_channels", "barcodes_parameters", "heights_vs_parameters"):
        figure = pipeline["tmp"] / "figures" / f"cnn_channels_{name}_cifar10.png"
        assert figure in section.figures and figure.stat().st_size > 1000


@pytest.mark.slow
def test_batchnorm_section_tests_minima_over_minima_and_barriers_over_networks(pipeline):
    section = pipeline["sections"]["cnn_bn"]
    config = pipeline["params"].experiment("cnn_bn")
    comparisons, missing = cnn_bn.bn_comparison(config, pipeline["root"])
    assert missing == [] and len(comparisons) == 3 and len(section.claims) == 6
    for k, claim in enumerate(section.claims):
        _check_claim(claim)
        assert "Mann-Whitney" in claim.result.test
        if k % 2 == 0:  # minima losses: 3 + 3 minima, C(6, 3) labellings
            assert claim.unit == "minimum" and claim.result.min_attainable_p == pytest.approx(1 / 20)
        else:  # barriers: one network against one, which no outcome could make significant (1 when they tie)
            assert claim.unit == "network" and (claim.result.min_attainable_p == pytest.approx(0.5) or (
                claim.result.min_attainable_p == 1.0 and claim.result.effect_size == 0))
    _assert_bn_claims_recomputed(pipeline, section.claims)
    for p in comparisons:  # the groups are the barcodes' births and finite deaths
        assert len(p["plain"]["minima_losses"]) == 3 and len(p["bn"]["heights"]) == 2
        assert p["plain"]["variant"].labels["batch_norm"] is False and p["bn"]["variant"].labels["batch_norm"] is True
    text = "\n".join(section.blocks)
    assert OFFLINE_NOTE in text and "CNN-2-4-BN" in text
    for name in ("barcodes", "losses"):
        figure = pipeline["tmp"] / "figures" / f"cnn_bn_{name}_cifar10.png"
        assert figure in section.figures and figure.stat().st_size > 1000
    out = pipeline["tmp"] / "report"
    md = render(list(pipeline["sections"].values()), out, pipeline["tmp"] / "figures", "# test").read_text()
    claims = json.loads((out / "claims.json").read_text())
    assert md.count("BatchNorm lowers") == 2 * 6 and len(claims) == 9  # claims table row + details per claim
    assert all(c["verdict"] in evidence.VERDICTS and "Holm over" in c["adjustment"] for c in claims)


@pytest.mark.slow
def test_missing_counterpart_is_reported_not_compared(pipeline):
    raw = json.loads(json.dumps(TINY))
    raw["data"]["root"] = str(pipeline["tmp"] / "data")
    raw["cnn_bn"]["models"] = ["cnn-1-4-bn", "cnn-1-16-bn"]
    comparisons, missing = cnn_bn.bn_comparison(resolve(raw).experiment("cnn_bn"), pipeline["root"])
    assert len(comparisons) == 1 and len(missing) == 1 and "cnn-1-16" in missing[0]
