"""Seaborn figures: barcodes, trends with error bars, loss along paths. Each returns the saved path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def barcodes(panels: dict[str, Sequence[tuple[float, float]]], path: Path, title: str, ylabel: str = "loss") -> Path:
    """One panel per barcode; bars sorted by birth, the infinite bar drawn to the top with an arrow."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels) + 0.6, 3.2), sharey=True, squeeze=False)
    finite_tops = [d for bars in panels.values() for _, d in bars if math.isfinite(d)]
    top = max(finite_tops, default=1.0)
    top = top + 0.1 * abs(top) + 1e-3
    palette = sns.color_palette("crest", 3)
    for ax, (name, bars) in zip(axes[0], panels.items()):
        for i, (birth, death) in enumerate(sorted(bars)):
            infinite = not math.isfinite(death)
            ax.vlines(i, birth, top if infinite else death, color=palette[2 if infinite else 1], lw=3)
            ax.plot(i, birth, "o", color=palette[0], ms=3)
            if infinite:
                ax.annotate("", xy=(i, top), xytext=(i, top - 0.05 * abs(top) - 1e-3),
                            arrowprops={"arrowstyle": "->", "color": palette[2]})
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_xlabel("minima (by loss)")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def trend(data: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, xlabel: str,
          ylabel: str, errors: dict[str, Sequence[float]] | None = None) -> Path:
    """Lines of y vs x per series, with optional standard-deviation error bars."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for name, (x, y) in data.items():
        err = None if errors is None else errors.get(name)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def loss_along_paths(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, (positions, losses) in curves.items():
        ax.plot(positions / max(positions.max(), 1e-12), losses, label=name, lw=1)
    ax.set_xlabel("position along path")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    if len(curves) <= 8:
        ax.legend(fontsize=6)
    return _save(fig, path)
