"""Seaborn figures: barcodes, trends with error bars, loss along paths. Each returns the saved path."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np


@functools.cache
def _pyplot():
    """matplotlib.pyplot (Agg) in seaborn's theme, imported at the first figure: the compute stages import the
    experiments' report code but never draw, and the two libraries took ~1.4 s of each stage process's start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt


def _palette(name: str, n: int) -> list:
    _pyplot()
    import seaborn as sns

    return sns.color_palette(name, n)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    _pyplot().close(fig)
    return path


def barcodes(panels: dict[str, Sequence[tuple[float, float]]], path: Path, title: str, ylabel: str = "loss") -> Path:
    """One panel per barcode; bars sorted by birth, the infinite bar drawn to the top with an arrow."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(2.4 * len(panels) + 0.6, 3.2), sharey=True, squeeze=False)
    top = _barcode_top(panels.values())
    for ax, (name, bars) in zip(axes[0], panels.items()):
        _draw_barcode(ax, bars, top)
        ax.set_title(name)
        ax.set_xlabel("minima (by loss)")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def trend(data: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, xlabel: str,
          ylabel: str, errors: dict[str, Sequence[float]] | None = None, logx: bool = False) -> Path:
    """Lines of y vs x per series, with optional standard-deviation error bars."""
    fig, ax = _pyplot().subplots(figsize=(4.6, 3.4) if len(data) < 5 else (7.5, 4.8))
    for name, (x, y) in data.items():
        err = None if errors is None else errors.get(name)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small" if len(data) < 5 else "x-small")
    return _save(fig, path)


def loss_along_paths(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    fig, ax = _pyplot().subplots(figsize=(5, 3.4))
    for name, (positions, losses) in curves.items():
        ax.plot(positions / max(positions.max(), 1e-12), losses, label=name, lw=1)
    ax.set_xlabel("position along path")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    if len(curves) <= 8:
        ax.legend(fontsize=6)
    return _save(fig, path)


def _barcode_top(bar_sets) -> float:
    finite_tops = [d for bars in bar_sets for _, d in bars if math.isfinite(d)]
    top = max(finite_tops, default=1.0)
    return top + 0.1 * abs(top) + 1e-3


def _draw_barcode(ax, bars: Sequence[tuple[float, float]], top: float) -> None:
    palette = _palette("crest", 3)
    for i, (birth, death) in enumerate(sorted(bars)):
        infinite = not math.isfinite(death)
        ax.vlines(i, birth, top if infinite else death, color=palette[2 if infinite else 1], lw=3)
        ax.plot(i, birth, "o", color=palette[0], ms=3)
        if infinite:
            ax.annotate("", xy=(i, top), xytext=(i, top - 0.05 * abs(top) - 1e-3),
                        arrowprops={"arrowstyle": "->", "color": palette[2]})
    ax.set_xticks([])


def barcode_grid(rows: dict[str, dict[str, Sequence[tuple[float, float]]]], path: Path, title: str,
                 ylabel: str = "loss") -> Path:
    """Barcodes in a grid (one row per group, e.g. without / with BatchNorm) sharing one loss axis."""
    n_cols = max(len(panels) for panels in rows.values())
    fig, axes = _pyplot().subplots(len(rows), n_cols, figsize=(2.4 * n_cols + 0.8, 2.8 * len(rows)), sharey=True,
                             squeeze=False)
    top = _barcode_top(bars for panels in rows.values() for bars in panels.values())
    for r, (row_name, panels) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(panels):
                ax.axis("off")
                continue
            name, bars = list(panels.items())[c]
            _draw_barcode(ax, bars, top)
            ax.set_title(f"{name}")
        axes[r][0].set_ylabel(f"{row_name}\n{ylabel}")
    for ax in axes[-1]:
        ax.set_xlabel("minima (by loss)")
    fig.suptitle(title)
    return _save(fig, path)


def points_trend(data: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, xlabel: str,
                 ylabel: str, log_x: bool = False) -> Path:
    """Every point (e.g. every saddle height h_p) per series, with a line through the mean at each x."""
    fig, ax = _pyplot().subplots(figsize=(4.8, 3.5))
    colors = _palette("deep", max(len(data), 1))
    for color, (name, (x, y)) in zip(colors, data.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        ax.scatter(x, y, s=12, alpha=0.6, color=color)
        levels = np.unique(x)
        ax.plot(levels, [y[x == level].mean() for level in levels], marker="o", color=color, label=name)
    if log_x:
        ax.set_xscale("log")
    return _finish(fig, ax, path, title, xlabel, ylabel)


def _finish(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    """Labels, title and a small legend, then saved."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def grouped_points(panels: dict[str, dict[str, dict[str, Sequence[float]]]], path: Path, title: str) -> Path:
    """Side-by-side groups: panel -> category (x) -> group (colour) -> values; points plus group means."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (panel, categories) in zip(axes[0], panels.items()):
        groups = list(dict.fromkeys(g for values in categories.values() for g in values))
        colors = dict(zip(groups, _palette("deep", max(len(groups), 1))))
        width = 0.7 / max(len(groups), 1)
        for i, values in enumerate(categories.values()):
            for j, group in enumerate(groups):
                y = np.asarray(values.get(group, []), float)
                y = y[np.isfinite(y)]
                x = i - 0.35 + width * (j + 0.5)
                ax.scatter(np.full(len(y), x), y, s=12, alpha=0.6, color=colors[group],
                           label=group if i == 0 else None)
                if len(y):
                    ax.hlines(y.mean(), x - 0.4 * width, x + 0.4 * width, color=colors[group], lw=2)
        ax.set_xticks(range(len(categories)), list(categories))
        ax.set_title(panel)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    fig.suptitle(title)
    return _save(fig, path)


def neuron_configurations(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
                          labels: tuple[str, str] = ("minimum", "permutation point")) -> Path:
    """Per panel: the 2-D incoming weight vectors of a hidden layer as numbered arrows from the
    origin, at two configurations (``(n, 2)`` arrays: blue the first, red the second)."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(3.0 * len(panels) + 0.4, 3.2), squeeze=False)
    colours = ("tab:blue", "tab:red")
    extent = max(float(np.abs(v).max()) for pair in panels.values() for v in pair) * 1.25 + 1e-9
    for ax, (name, configurations) in zip(axes[0], panels.items()):
        for colour, label, vectors in zip(colours, labels, configurations):
            for i, (u, v) in enumerate(np.asarray(vectors)):
                ax.annotate("", xy=(u, v), xytext=(0, 0),
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2, "alpha": 0.8})
                ax.text(u * 1.08, v * 1.08, str(i), color=colour, fontsize=8, ha="center", va="center")
            ax.plot([], [], color=colour, label=label)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("$W_{i,1}$")
    axes[0][0].set_ylabel("$W_{i,2}$")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    return _save(fig, path)


def curves_vs_distance(groups: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path, title: str,
                       ylabel: str, xlabel: str = "distance d between the merged neurons") -> Path:
    """Curves y(d) on a log-d axis, inverted so that the path (d decreasing) runs left to right;
    one colour per group (e.g. per hidden width), one line per curve, points with d <= 0 omitted."""
    fig, ax = _pyplot().subplots(figsize=(5.2, 3.6))
    palette = _palette("viridis", max(len(groups), 1))
    for colour, (name, curves) in zip(palette, groups.items()):
        for k, (d, y) in enumerate(curves):
            d, y = np.asarray(d, float), np.asarray(y, float)
            keep = d > 0
            ax.plot(d[keep], y[keep], color=colour, lw=1, alpha=0.8, label=name if k == 0 else None)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(xlabel + " (path runs left to right)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(groups) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, path)


def grouped_segment_lengths(panels: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str,
                            group_names: tuple[str, str] = ("group 1", "group 2"),
                            ylabel: str = "segment length $h_p - L(p)$") -> Path:
    """Per panel: one bar per minimum, the first group left of a red divider and the second right of it
    (barcodes paper, Fig. 5). An infinite segment (the global minimum) is drawn hatched to the top, marked ∞."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.4, 3.4), squeeze=False)
    colors = _palette("deep", 2)
    for ax, (name, (first, second)) in zip(axes[0], panels.items()):
        values = [float(v) for v in first] + [float(v) for v in second]
        finite = [v for v in values if math.isfinite(v)]
        top = max(finite, default=1.0)
        top = top + 0.15 * abs(top) + 1e-6
        for i, value in enumerate(values):
            color = colors[0] if i < len(first) else colors[1]
            if math.isfinite(value):
                ax.bar(i, value, color=color, width=0.8)
            else:
                ax.bar(i, top, color="none", edgecolor=color, hatch="//", width=0.8)
                ax.text(i, top, "∞", ha="center", va="bottom", fontsize=9)
        ax.axvline(len(first) - 0.5, color="red", lw=1.5)
        ax.set_ylim(0, top * 1.12)
        ax.set_xticks(range(len(values)), [str(i) for i in range(len(values))], fontsize=7)
        ax.set_xlabel(f"minimum  (left: {group_names[0]}; right: {group_names[1]})", fontsize=8)
        ax.set_title(name)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def mean_std_points(data: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], path: Path,
                    title: str, xlabel: str, ylabel: str, connect: bool = False) -> Path:
    """Per series: a mean with a ± std error bar at each x (e.g. each minimum, or each set size);
    markers only unless ``connect`` (x is then an ordered quantity)."""
    fig, ax = _pyplot().subplots(figsize=(4.6, 3.4))
    for name, (x, mean, std) in data.items():
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, linestyle="-" if connect else "none", label=name)
    ticks = sorted({float(v) for x, _, _ in data.values() for v in x})
    if ticks and all(t.is_integer() for t in ticks):
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if data:
        ax.legend(fontsize=7)
    return _save(fig, path)


def triangle_losses(grid: np.ndarray, losses: np.ndarray, path: Path, title: str,
                    labels: tuple[str, str, str] = ("A", "B", "C")) -> Path:
    """Loss over a triangle model: barycentric grid points (m, 3) of vertices A, B, C and their losses (m,),
    drawn on an equilateral triangle (Fig. 15, 16)."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    xy = np.asarray(grid, float) @ corners
    fig, ax = _pyplot().subplots(figsize=(4.2, 3.6))
    import matplotlib.tri as mtri

    shading = ax.tricontourf(mtri.Triangulation(xy[:, 0], xy[:, 1]), np.asarray(losses, float), levels=14,
                             cmap="viridis")
    ax.scatter(xy[:, 0], xy[:, 1], s=4, color="white", alpha=0.6)
    for (u, v), label in zip(corners, labels):
        ax.annotate(label, (u, v), textcoords="offset points", xytext=(0, 6 if v > 0 else -12), ha="center")
    fig.colorbar(shading, ax=ax, label="loss")
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9, pad=18)
    return _save(fig, path)


def paired_scatter(data: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, xlabel: str,
                   ylabel: str) -> Path:
    """One point per item (e.g. one pair of minima joined by two path methods), x against y, log-log, with the
    diagonal y = x: points below it are lower on the y method."""
    fig, ax = _pyplot().subplots(figsize=(4.8, 4.2))
    values = [v for x, y in data.values() for v in (*x, *y) if np.isfinite(v) and v > 0]
    low, high = (min(values), max(values)) if values else (1e-3, 1.0)
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="y = x")
    for color, (name, (x, y)) in zip(_palette("deep", max(len(data), 1)), data.items()):
        ax.scatter(x, y, s=14, alpha=0.7, color=color, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return _finish(fig, ax, path, title, xlabel, ylabel)
