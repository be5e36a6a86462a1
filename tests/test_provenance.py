"""Data provenance as fields: the same label as the loader's ``Dataset.source`` for every kind of source, no machine
path in the fields, and the fields carried from the stage records into a report's claims.json."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import resolve_tiny
from tiny import tiny_params

from benchmarks import fc_depth
from losstopo import torchvision_compat
from losstopo.data import REGISTRY, _load_torchvision, load_dataset
from losstopo.provenance import DataProvenance, claim_data, provenance_of, short_data, toy_provenance
from losstopo.report import Claim, render
from losstopo.minima_stage import run_minima
from losstopo.paths_stage import run_paths
from losstopo.topology_stage import run_topology
from losstopo.stats import TestResult as Result


def _write_npz(root, name, **arrays):
    (root / "offline").mkdir(exist_ok=True)
    np.savez(root / "offline" / name, **arrays)


def _no_machine_path(fields: dict, root) -> None:
    for value in fields.values():
        if isinstance(value, str):
            assert not value.startswith("/") and str(root) not in value and os.sep not in value, value


class _FakeMNIST:
    def __init__(self, root, download, train):
        n = 6 if train else 4
        self.data, self.targets = np.zeros((n, 28, 28), np.uint8), np.arange(n) % 10


def test_labels_are_the_loaders_words_for_every_kind(tmp_path, monkeypatch):
    _write_npz(tmp_path, "mnist.npz", x_train=np.zeros((30, 28, 28), np.uint8), y_train=np.arange(30) % 10,
               x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10))
    _write_npz(tmp_path, "fashion_mnist_partial_train_first2557.npz", x_train=np.zeros((100, 28, 28), np.uint8),
               y_train=np.arange(100) % 10)
    offline = load_dataset("mnist", root=tmp_path)
    partial = load_dataset("fashion_mnist", root=tmp_path, allow_partial=True)
    synthetic = load_dataset("svhn", root=tmp_path, allow_synthetic=True, synthetic_sizes=(40, 20))
    monkeypatch.setattr(torchvision_compat, "import_torchvision",
                        lambda: SimpleNamespace(datasets=SimpleNamespace(MNIST=_FakeMNIST)))
    real = _load_torchvision(REGISTRY["mnist"], tmp_path / "cache", download=False)
    expected = {
        "offline": (offline, "offline copy mnist.npz (30 train / 10 test real images)", "mnist.npz"),
        "partial": (partial, "offline partial copy fashion_mnist_partial_train_first2557.npz: 100 real training "
                             "images, split 80 train / 20 held-out test", "fashion_mnist_partial_train_first2557.npz"),
        "synthetic": (synthetic, synthetic.source, None),
        "real": (real, "torchvision MNIST (real, 6 train / 4 test)", None),
    }
    for kind, (dataset, label, file) in expected.items():
        provenance = provenance_of(dataset, 5, None)
        assert provenance.kind == kind and provenance.file == file and provenance.dataset == dataset.name
        assert provenance.label() == dataset.source == label
        assert (provenance.n_train, provenance.n_test) == (5, len(dataset.y_test))  # the images a result used
        fields = provenance.as_dict()
        assert DataProvenance(**fields) == provenance and json.loads(json.dumps(fields)) == fields
        _no_machine_path(fields, tmp_path)
    reason = provenance_of(synthetic).note  # why the stand-in: in the fields, without the data root's path
    assert reason == "no offline copy of svhn in the offline folder (expected svhn.npz)"
    assert synthetic.source.startswith("SYNTHETIC stand-in of svhn (generator ") and synthetic.source.endswith(
        f"real data unavailable: {reason})")
    assert provenance_of(partial).source_train == 80 and provenance_of(offline).source_test == 10
    toy = toy_provenance("toy", "synthetic toy (test)", 200)
    assert toy.label() == "synthetic toy (test)" and toy.as_dict()["kind"] == "toy"


def test_claim_data_is_one_provenance_a_list_or_not_recorded():
    a, b = (toy_provenance("toy", "a", 10).as_dict(), toy_provenance("toy", "b", 10).as_dict())
    assert claim_data([{"data": a}, {"data": dict(a)}]) == a
    assert claim_data([{"data": a}, {"data": b}]) == [a, b]
    assert claim_data([{"data": a}, {}]) is None  # a record from before the field
    result = Result("t", 0.0, 0.5, 0.0, "effect", 2, 0.5, 0.5)
    claim = Claim("c", "paper", result, "label", "test", "unit", 1.0, 0.05, "null")
    assert claim.as_dict()["data"] == "not recorded" and claim.as_dict()["data_source"] == "label"


@pytest.fixture
def tiny(tmp_path, mlflow_store):
    return resolve_tiny(tiny_params("fc_depth"), tmp_path)


def test_claims_json_carries_the_records_provenance(tiny, tmp_path):
    root = tmp_path / "artifacts"
    config = tiny.experiment("fc_depth")
    variants = fc_depth.variants(config)
    for stage in (run_minima, run_paths, run_topology):
        stage("fc_depth", variants, config, tiny, root)
    minima = json.loads((root / "fc_depth/minima/svhn-fc-2-8/minima.json").read_text())["summary"]
    assert minima["data"]["kind"] == "synthetic" and minima["data"]["dataset"] == "svhn"
    assert (minima["data"]["n_train"], minima["data"]["n_test"]) == (minima["n_train"], minima["n_test"]) == (
        config.minima.train_subset, config.minima.test_subset)
    topo = json.loads((root / "fc_depth/topology/svhn-fc-2-8/topology.json").read_text())
    assert topo["data"] == json.loads((root / "fc_depth/paths/svhn-fc-2-8/paths.json").read_text())["data"]
    section = fc_depth.report_section(config, tmp_path / "figures", root)
    out = tmp_path / "report"
    out.mkdir()
    render([section], out, tmp_path / "figures", "")
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) == 3
    for claim in claims:
        data = claim["data"]
        assert data["kind"] == "synthetic" and data["dataset"] == "svhn" and data["file"] is None
        assert (data["n_train"], data["n_test"]) == (config.paths.train_subset, 0)  # the barcodes' path-loss images
        assert DataProvenance(**data).label() == claim["data_source"] == topo["data_source"]
        _no_machine_path(data, tmp_path)


def test_short_labels_come_from_the_fields_not_the_label():
    offline = DataProvenance("offline", "mnist", "mnist.npz", 60000, 10000, 60000, 10000)
    partial = DataProvenance("partial", "fashion_mnist", "fm.npz", 2046, 511, 2046, 511)
    synthetic = DataProvenance("synthetic", "cifar100", n_train=500, n_test=100, note="no copy", generator="v1")
    assert offline.short() == "mnist, offline copy, 60,000 train"
    assert short_data(partial.as_dict(), "unused") == "fashion_mnist, PARTIAL copy, 2,046 train"
    assert short_data([offline.as_dict(), synthetic.as_dict()], "unused") == \
        "mnist, offline copy, 60,000 train; cifar100, SYNTHETIC stand-in, 500 train"
    assert short_data(None, "the label") == "the label"
    assert DataProvenance.from_dict(offline.as_dict() | {"added_later": 1}) == offline
