import numpy as np
import pytest
import torch

from losstopo.data import DATA_DIR_ENV, load_dataset
from losstopo.errors import DataError


def _write_npz(root, name, **arrays):
    (root / "offline").mkdir(parents=True, exist_ok=True)
    np.savez(root / "offline" / name, **arrays)


def test_offline_copy_is_read_and_normalised(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = np.arange(20) % 10
    _write_npz(tmp_path, "mnist.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    data = load_dataset("mnist", root=tmp_path)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (5, 1, 28, 28)
    assert data.source_kind == "offline" and "mnist.npz" in data.source
    expected = (x[3].astype(np.float32) / 255 - 0.1307) / 0.3081
    assert np.allclose(data.x_train[3, 0].numpy(), expected, atol=1e-6)
    assert data.y_train.dtype == torch.int64


def test_environment_variable_points_at_the_copy(tmp_path, monkeypatch):
    x = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    _write_npz(tmp_path, "cifar10.npz", x_train=x, y_train=np.zeros(4, int), x_test=x, y_test=np.zeros(4, int))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    data = load_dataset("cifar10")
    assert data.x_train.shape == (4, 3, 32, 32)


def test_wrong_shape_is_a_one_line_error_naming_file_and_expectation(tmp_path):
    x = np.zeros((4, 28, 27), dtype=np.uint8)
    _write_npz(tmp_path, "mnist.npz", x_train=x, y_train=np.zeros(4, int), x_test=x, y_test=np.zeros(4, int))
    with pytest.raises(DataError) as error:
        load_dataset("mnist", root=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "mnist.npz" in message and "(N, 28, 28)" in message


def test_unknown_name_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mnsit'; known: cifar10"):
        load_dataset("mnsit", root=tmp_path)
    (tmp_path / "offline").mkdir()
    with pytest.raises(DataError, match=r"no offline copy of svhn in the offline folder \(expected svhn.npz\)"):
        load_dataset("svhn", root=tmp_path)


def test_partial_copy_needs_permission_then_is_split_and_labelled(tmp_path):
    x = np.zeros((100, 28, 28), dtype=np.uint8)
    _write_npz(tmp_path, "fashion_mnist_partial_train_first2557.npz", x_train=x, y_train=np.arange(100) % 10)
    with pytest.raises(DataError, match=r"only a partial copy of fashion_mnist .*\(data.allow_partial: false\)"):
        load_dataset("fashion_mnist", root=tmp_path)
    data = load_dataset("fashion_mnist", root=tmp_path, allow_partial=True)
    assert (len(data.y_train), len(data.y_test)) == (80, 20)
    assert data.source_kind == "offline-partial" and "partial" in data.source


def test_synthetic_stand_in_only_when_allowed_and_always_labelled(tmp_path):
    (tmp_path / "offline").mkdir()
    data = load_dataset("svhn", root=tmp_path, allow_synthetic=True)
    assert data.source_kind == "synthetic" and data.source.startswith("SYNTHETIC stand-in of svhn")
    assert data.x_train.shape[1:] == (3, 32, 32) and int(data.y_train.max()) < 10


def test_subset_is_deterministic_and_nested(shared_data):
    data = load_dataset("mnist", root=shared_data)
    small, large = data.subset(100, 10, seed=3), data.subset(400, 10, seed=3)
    assert torch.equal(small.x_train, large.x_train[:100])
    assert torch.equal(small.y_train, data.subset(100, 10, seed=3).y_train)
    # random, as documented: the first 100 of a seeded permutation of all training images, not the file's first 100
    chosen = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(3))[:100]
    assert torch.equal(small.x_train, data.x_train[chosen])
    assert not torch.equal(small.x_train, data.x_train[:100])
    assert not torch.equal(small.x_train, data.subset(100, 10, seed=4).x_train)


def test_synthetic_prefixes_are_stable_so_subsets_stay_nested(tmp_path):
    (tmp_path / "offline").mkdir()
    small = load_dataset("svhn", root=tmp_path, allow_synthetic=True, synthetic_sizes=(3000, 10))
    large = load_dataset("svhn", root=tmp_path, allow_synthetic=True, synthetic_sizes=(5000, 20))
    assert (len(small.y_train), len(large.y_train)) == (3000, 5000)
    assert torch.equal(small.x_train, large.x_train[:3000]) and torch.equal(small.y_test, large.y_test[:10])
    assert torch.equal(large.subset(100, 5, seed=9).x_train, small.subset(100, 5, seed=1).x_train)
    assert len(set(large.y_train[:3000].tolist())) == 10  # all classes present, labels drawn at random


def test_figure_titles_name_their_data_unless_it_is_the_complete_real_set():
    from losstopo.data import source_label, title_caveat

    assert title_caveat("offline", "mnist") == "" and title_caveat("torchvision", "mnist") == ""
    assert title_caveat("offline-partial", "fashion_mnist") == " [partial real copy of fashion_mnist]"
    assert title_caveat("synthetic", "cifar100") == " [SYNTHETIC stand-in of cifar100]"
    assert source_label("offline", "cifar10") == "offline real copy of cifar10"


@pytest.mark.parametrize("value", ["", "/no/such/folder"])
def test_a_data_dir_variable_set_to_nothing_or_a_wrong_folder_is_an_error(monkeypatch, value):
    from losstopo.data import resolve_root
    from losstopo.errors import DataError

    monkeypatch.setenv(DATA_DIR_ENV, value)
    with pytest.raises(DataError, match=f"{DATA_DIR_ENV}='{value}' is set but is not a folder"):
        resolve_root("../shared/data")  # even where data.root would win


def test_a_stage_uses_stand_ins_only_for_the_datasets_named_and_says_so(tmp_path, capsys):
    from losstopo.job_data import stage_data
    from losstopo.config import resolve

    (tmp_path / "offline").mkdir()
    params = resolve({"data": {"root": str(tmp_path), "allow_synthetic": ["svhn"]}})
    stage_data(params, ["svhn"])
    assert "SYNTHETIC stand-ins (no offline copy; data.allow_synthetic names them): svhn" in capsys.readouterr().err
    with pytest.raises(DataError, match="mnist"):  # missing, and not named: an error, not a stand-in
        stage_data(params, ["svhn", "mnist"])
