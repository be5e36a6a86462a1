"""Dataset registry: real torchvision sets, offline `.npz` copies, labelled synthetic stand-ins.

Resolution order for a dataset name (first that applies wins):
1. a data root is given (params ``data.root`` or ``LOSSTOPO_DATA_DIR``): the offline copy
   ``<root>/offline/<file>.npz`` if present (a partial copy only when ``allow_partial``);
2. no root: torchvision, downloading into ``~/.cache/losstopo`` (users with internet);
3. ``allow_synthetic``: a synthetic stand-in of the same shape, labelled as such.
Otherwise a one-line :class:`DataError` names what was expected and where, before any training.
Every loaded :class:`Dataset` carries ``source``, the words the report prints beside its results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from losstopo.errors import DataError

DATA_DIR_ENV = "LOSSTOPO_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    n_classes: int
    torchvision_class: str
    torchvision_split_kw: str  # "train" (bool flag) or "split" (SVHN's "train"/"test")
    offline_files: tuple[str, ...]  # candidates under <root>/offline, complete copies first
    mean: tuple[float, ...]
    std: tuple[float, ...]


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", (1, 28, 28), 10, "MNIST", "train", ("mnist.npz",), (0.1307,), (0.3081,)),
        DatasetSpec(
            "fashion_mnist", (1, 28, 28), 10, "FashionMNIST", "train",
            ("fashion_mnist.npz", "fashion_mnist_partial_train_first2557.npz"), (0.2860,), (0.3530,),
        ),
        DatasetSpec(
            "cifar10", (3, 32, 32), 10, "CIFAR10", "train", ("cifar10.npz", "cifar10_small.npz"),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ),
        DatasetSpec(
            "cifar100", (3, 32, 32), 100, "CIFAR100", "train", ("cifar100.npz",),
            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        ),
        DatasetSpec(
            "svhn", (3, 32, 32), 10, "SVHN", "split", ("svhn.npz",),
            (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        ),
    )
}

# Offline copies that lack a test set: this fraction of the (partial) training images is held out.
PARTIAL_TEST_FRACTION = 0.2


SOURCE_LABELS = {"synthetic": "SYNTHETIC stand-in of {}", "offline-partial": "partial real copy of {}",
                 "offline": "offline real copy of {}", "torchvision": "real {} (torchvision)"}


def source_label(kind: str, name: str) -> str:
    """A data source in a few words (the full provenance is ``Dataset.source``)."""
    return SOURCE_LABELS.get(kind, kind + " {}").format(name)


def title_caveat(kind: str, name: str) -> str:
    """What a figure's title must add about its data: nothing for a complete real set, else its label."""
    return "" if kind in ("offline", "torchvision") else f" [{source_label(kind, name)}]"


@dataclass(frozen=True)
class Dataset:
    """A whole dataset as normalised tensors: x (N, C, H, W) float32, y (N,) int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    source: str  # human-readable provenance, printed in the report
    source_kind: str  # "torchvision" | "offline" | "offline-partial" | "synthetic"
    iid_order: bool = False  # samples in i.i.d. order (synthetic): the first n are a random subset

    def to(self, device: torch.device | str) -> "Dataset":
        return replace(
            self,
            x_train=self.x_train.to(device), y_train=self.y_train.to(device),
            x_test=self.x_test.to(device), y_test=self.y_test.to(device),
        )

    def subset(self, n_train: int | None, n_test: int | None, seed: int = 0) -> "Dataset":
        """A class-agnostic random subset, the same for every run with the same seed; with one seed,
        a smaller subset is always nested in a larger one."""
        gen = torch.Generator().manual_seed(seed)

        def take(x, y, n):
            if n is None or n >= len(y):
                return x, y
            if self.iid_order:
                return x[:n], y[:n]
            idx = torch.randperm(len(y), generator=gen)[:n].to(y.device)
            return x[idx], y[idx]

        x_train, y_train = take(self.x_train, self.y_train, n_train)
        x_test, y_test = take(self.x_test, self.y_test, n_test)
        return replace(self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def resolve_root(root: str | os.PathLike | None) -> Path | None:
    """The params key wins over the environment variable; relative paths are taken from the cwd. The variable,
    when set, must name a folder: set but empty or wrong is an error, never silently ignored."""
    env = os.environ.get(DATA_DIR_ENV)
    if env is not None and not (env.strip() and Path(env).expanduser().is_dir()):
        raise DataError(f"{DATA_DIR_ENV}={env!r} is set but is not a folder: unset it, or point it at the data root "
                        f"(the folder that holds offline/)")
    value = root if root not in (None, "") else env
    return Path(value).expanduser() if value else None


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    allow_partial: bool = False,
    allow_synthetic: bool = False,
    download: bool = True,
    synthetic_sizes: tuple[int | None, int | None] = (None, None),
) -> Dataset:
    """``synthetic_sizes`` caps (train, test) images of a synthetic stand-in (None: the real set's size):
    its first n images are the same whatever the cap, so subsets stay nested across stages."""
    spec, data_root, offline_file = _locate(name, root, allow_partial)
    if offline_file is not None:
        return _load_offline(spec, offline_file)
    if data_root is not None:
        reason = _missing_offline(spec, data_root)
    else:
        try:
            return _load_torchvision(spec, Path.home() / ".cache" / "losstopo", download)
        except Exception as error:  # no internet, no files: fall through to the stand-in or the error
            reason = f"torchvision could not load {name} ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if allow_synthetic:
        full_train, full_test = SYNTHETIC_SIZES[spec.name]
        cap_train, cap_test = synthetic_sizes
        sizes = (min(full_train, cap_train or full_train), min(full_test, cap_test or full_test))
        return synthetic_dataset(spec, reason=reason, sizes=sizes)
    raise _unavailable(reason)


def check_available(name: str, *, root: str | os.PathLike | None = None, allow_partial: bool = False,
                    allow_synthetic: bool = False) -> bool:
    """Raises the DataError that :func:`load_dataset` would raise for a missing offline copy, without
    reading any images: stages call it for all their datasets before training anything. Returns whether
    the dataset will be a synthetic stand-in. (Without a data root, torchvision's download can only be
    tried by loading.)"""
    spec, data_root, offline_file = _locate(name, root, allow_partial)
    if offline_file is None and data_root is not None:
        if not allow_synthetic:
            raise _unavailable(_missing_offline(spec, data_root))
        return True
    return False


def _locate(name: str, root, allow_partial: bool) -> tuple[DatasetSpec, Path | None, Path | None]:
    """(spec, data root or None, the offline file to read or None); unknown names and roots raise."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    data_root = resolve_root(root)
    if data_root is None:
        return spec, None, None
    if not data_root.is_dir():
        raise DataError(f"data root {str(data_root)!r} is not a directory (set data.root or {DATA_DIR_ENV})")
    for file_name in spec.offline_files:
        path = data_root / "offline" / file_name
        if path.is_file() and (allow_partial or "x_test" in np.load(path).files):  # npz: reads the index only
            return spec, data_root, path
    return spec, data_root, None


def _missing_offline(spec: DatasetSpec, data_root: Path) -> str:
    """Why no offline copy is used, in words that name no machine's paths (they end up in data-source labels
    of committed reports)."""
    partial = [f for f in spec.offline_files if (data_root / "offline" / f).is_file()]
    if partial:  # present but skipped by _locate: partial copies need data.allow_partial
        return (f"only a partial copy of {spec.name} is in the offline folder ({partial[0]}), "
                f"which this profile does not allow (data.allow_partial: false)")
    return f"no offline copy of {spec.name} in the offline folder (expected {' or '.join(spec.offline_files)})"


def _unavailable(reason: str) -> DataError:
    return DataError(f"{reason}; point data.root or {DATA_DIR_ENV} at a copy, or allow the synthetic stand-in")


def _load_offline(spec: DatasetSpec, path: Path) -> Dataset:
    arrays = np.load(path)
    partial = "x_test" not in arrays.files
    x_train, y_train = _checked_split(spec, path, arrays, "train")
    if partial:
        n_test = int(round(PARTIAL_TEST_FRACTION * len(y_train)))
        x_test, y_test = x_train[-n_test:], y_train[-n_test:]
        x_train, y_train = x_train[:-n_test], y_train[:-n_test]
        source = (f"offline partial copy {path.name}: {len(y_train) + n_test} real training images, "
                  f"split {len(y_train)} train / {n_test} held-out test")
    else:
        x_test, y_test = _checked_split(spec, path, arrays, "test")
        source = f"offline copy {path.name} ({len(y_train)} train / {len(y_test)} test real images)"
    return Dataset(
        spec.name, _normalise(spec, x_train), y_train, _normalise(spec, x_test), y_test,
        spec.n_classes, source, "offline-partial" if partial else "offline",
    )


def _checked_split(spec: DatasetSpec, path: Path, arrays, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x_key, y_key = f"x_{split}", f"y_{split}"
    missing = [k for k in (x_key, y_key) if k not in arrays.files]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; expected keys x_train, y_train, x_test, y_test")
    return _checked_arrays(spec, f"{path}:{x_key}", arrays[x_key], arrays[y_key])


def _checked_arrays(spec: DatasetSpec, where: str, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, H, W) or (N, H, W, C) and labels (N,) -> tensors (N, C, H, W) uint8, (N,) int64."""
    channels, height, width = spec.image_shape
    expected = (height, width) if channels == 1 else (height, width, channels)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected or x.dtype != np.uint8:
        raise DataError(f"{where}: images have shape {x.shape} {x.dtype}, expected (N, {', '.join(map(str, expected))}) uint8")
    if y.shape != (len(x),) or (y.size and (y.min() < 0 or y.max() >= spec.n_classes)):
        raise DataError(f"{where}: expected {len(x)} labels in [0, {spec.n_classes}), got shape {y.shape}")
    x_chw = x[:, None] if channels == 1 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x_chw)), torch.from_numpy(y.astype(np.int64))


def _normalise(spec: DatasetSpec, x_uint8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x_uint8.float() / 255.0 - mean) / std


def _load_torchvision(spec: DatasetSpec, cache: Path, download: bool) -> Dataset:
    from losstopo.torchvision_compat import import_torchvision

    datasets = import_torchvision().datasets
    cls = getattr(datasets, spec.torchvision_class)

    def split(train: bool):
        kw = {"train": train} if spec.torchvision_split_kw == "train" else {"split": "train" if train else "test"}
        ds = cls(root=str(cache), download=download, **kw)
        x = np.asarray(ds.data)
        y = np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels)
        if x.ndim == 4 and x.shape[1] == 3:  # SVHN stores CHW
            x = x.transpose(0, 2, 3, 1)
        return _checked_arrays(spec, f"torchvision {spec.torchvision_class} in {cache}", x, y)

    x_train, y_train = split(True)
    x_test, y_test = split(False)
    return Dataset(
        spec.name, _normalise(spec, x_train), y_train, _normalise(spec, x_test), y_test,
        spec.n_classes, f"torchvision {spec.torchvision_class} (real, {len(y_train)} train / {len(y_test)} test)",
        "torchvision",
    )


# Sizes of the stand-ins: the real sets' sizes, so that a synthetic run costs what a real one would.
SYNTHETIC_SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000),
                   "cifar100": (50000, 10000), "svhn": (73257, 26032)}


SYNTHETIC_CHUNK = 2048  # images drawn per seeded chunk: the first n images never depend on the total
SYNTHETIC_GENERATOR = "v2"  # part of the source label, so outputs addressed by it change with the generator


def synthetic_dataset(spec: DatasetSpec, *, reason: str, seed: int = 0, sizes: tuple[int, int] | None = None) -> Dataset:
    """Class templates (smooth random images) plus pixel noise: learnable, but not the real task.

    Never silently substituted: its ``source`` says ``SYNTHETIC stand-in`` and why.
    """
    n_train, n_test = sizes or SYNTHETIC_SIZES[spec.name]
    channels, height, width = spec.image_shape
    coarse = torch.rand(spec.n_classes, channels, height // 4, width // 4, generator=torch.Generator().manual_seed(seed))
    templates = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)

    def draw(n, split):
        xs, ys = [], []
        for chunk in range(-(-n // SYNTHETIC_CHUNK)):
            gen = torch.Generator().manual_seed(1_000_003 * seed + 7_919 * split + chunk)
            m = min(SYNTHETIC_CHUNK, n - chunk * SYNTHETIC_CHUNK)
            # Full-size draws, then the prefix: the random stream never depends on m.
            y = torch.randint(spec.n_classes, (SYNTHETIC_CHUNK,), generator=gen)[:m]
            noise = 0.35 * torch.randn(SYNTHETIC_CHUNK, channels, height, width, generator=gen)[:m]
            xs.append(((templates[y] + noise).clamp(0, 1) * 255).round().to(torch.uint8))
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    x_train, y_train = draw(n_train, 1)
    x_test, y_test = draw(n_test, 2)
    return Dataset(
        spec.name, _normalise(spec, x_train), y_train, _normalise(spec, x_test), y_test, spec.n_classes,
        f"SYNTHETIC stand-in of {spec.name} (generator {SYNTHETIC_GENERATOR}; real data unavailable: {reason})",
        "synthetic", iid_order=True,
    )
