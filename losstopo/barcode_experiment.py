"""A barcode experiment (minima -> paths and curves -> topology) from its variants, and the summaries of its
stages' records that the reports read."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from losstopo.config import Params
from losstopo.minima_stage import Variant, run_minima
from losstopo.paths_stage import run_curves, run_paths
from losstopo.topology_stage import run_topology

def barcode_stages(experiment: str, variants: Callable[[Any], list[Variant]]) -> dict[str, Callable[[Any, Params], None]]:
    """The four stages of a barcode experiment (minima, paths, curves, topology: the runners above), each a
    ``(config, params)`` callable run on ``variants(config)``; what its :class:`~losstopo.registry.Experiment` lists."""
    def stage(runner):
        def run(config, params: Params) -> None:
            runner(experiment, variants(config), config, params)
        run.__name__ = runner.__name__
        return run
    return {"minima": stage(run_minima), "paths": stage(run_paths), "curves": stage(run_curves),
            "topology": stage(run_topology)}


def variant_datasets(variants: Callable[[Any], list[Variant]]) -> Callable[[Any], list[str]]:
    """The datasets a barcode experiment's stages read: its variants' (what ``losstopo validate`` checks)."""
    def datasets(config) -> list[str]:
        return [v.dataset for v in variants(config)]
    return datasets


def converged_fraction(minima: list[dict], topologies: list[dict]) -> tuple[float, str]:
    """The smaller of the fractions of minima (patience rule) and of paths (their rule) that converged;
    NaN when the paths' convergence was not recorded."""
    minima_flags = [flag for m in minima for flag in m["converged"]]
    path_flags = [flag for t in topologies for flag in (t.get("paths_converged") or [float("nan")])]
    fm, fp = float(np.mean(minima_flags)), float(np.mean(path_flags))
    return min(fm, fp), f"minima {sum(minima_flags)}/{len(minima_flags)} converged, paths {fp:.0%}"


def zero_length_bars(bars) -> int:
    """Finite bars with h_p = L(p): no path to a lower minimum rose above the minimum itself."""
    return sum(1 for birth, death in bars if np.isfinite(death) and death - birth <= 1e-12)


def mean_bar_length(bars) -> float:
    """Mean h_p - L(p) over the finite bars (NaN when there is none)."""
    lengths = [death - birth for birth, death in bars if np.isfinite(death)]
    return float(np.mean(lengths)) if lengths else float("nan")
