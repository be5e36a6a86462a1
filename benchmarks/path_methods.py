"""The report's view of ``paths.method: best``: both path methods' maxima side by side, which one defined
each bar, and what the barcode would have been with either alone (issue: the lowest path per pair)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from losstopo.paths_stage import STAGE_METHOD
from losstopo.stage_frame import ARTIFACTS, stage_timing
from losstopo import plots
from losstopo.report import Section


def compared(topologies: list[dict]) -> bool:
    """Whether these topologies were built from more than one path method."""
    return any(len(t.get("path_max_by_method") or {}) > 1 for t in topologies)


def add_if_compared(section: Section, experiment: str, names: list[str], topologies: list[dict], figures: Path,
                    dataset: str, caveat: str = "", root: Path = ARTIFACTS) -> None:
    """:func:`add_comparison` for one dataset of an experiment, when its topologies used both path methods."""
    if not compared(topologies):
        return
    seconds = {method: timing["wall_s"] for stage, method in STAGE_METHOD.items()
               if (timing := stage_timing(experiment, stage, root)) is not None}
    add_comparison(section, names, topologies, seconds, figures / f"{experiment}_path_methods_{dataset}.png",
                   f"Path maxima by method, {dataset}{caveat}")


def add_comparison(section: Section, names: list[str], topologies: list[dict], path_seconds: dict[str, float],
                   figure: Path, title: str) -> None:
    """A table per variant (each method's mean path maximum and TO-score, the pairs each method defined, their
    convergence) and a scatter of every pair's maxima; ``path_seconds``: each method's stage wall time."""
    methods = list(topologies[0]["path_max_by_method"])
    section.add_text(
        "Paths by two methods (`paths.method: best`): every path between two minima bounds their minimax value "
        "from above, so each bar uses the lower of the two maxima. Stage wall time: "
        + ", ".join(f"{m} {path_seconds[m] / 60:.1f} min" if m in path_seconds else f"{m} not recorded"
                    for m in methods) + ".")
    section.add_table(
        ["variant"] + [f"mean max, {m}" for m in methods] + [f"TO-score, {m} alone" for m in methods]
        + ["TO-score, best", "bars' paths by method"] + [f"{m} converged" for m in methods],
        [[name] + [f"{np.mean(t['path_max_by_method'][m]):.4f}" for m in methods]
         + [f"{t['to_score_by_method'][m]:.4f}" for m in methods] + [f"{t['to_score']:.4f}",
                                                                      _chosen_counts(t["path_method"], methods)]
         + [_converged_words(t["paths_converged_by_method"][m]) for m in methods]
         for name, t in zip(names, topologies)])
    if len(methods) == 2:
        x_method, y_method = methods
        data = {name: (t["path_max_by_method"][x_method], t["path_max_by_method"][y_method])
                for name, t in zip(names, topologies)}
        section.add_figure(plots.paired_scatter(data, figure, title, f"path maximum, {x_method}",
                                                f"path maximum, {y_method}"),
                           f"Every pair's path maximum by both methods ({y_method} below the diagonal: lower)")


def words(topologies: list[dict]) -> str:
    """For a claim's note: which path method defined how many bars (empty for one method)."""
    if not compared(topologies):
        return ""
    chosen = [m for t in topologies for m in t["path_method"]]
    methods = list(topologies[0]["path_max_by_method"])
    return f" (paths.method best: each pair's lower maximum; {_chosen_counts(chosen, methods)} pairs)"


def _chosen_counts(chosen: list[str], methods: list[str]) -> str:
    return ", ".join(f"{m} {chosen.count(m)}/{len(chosen)}" for m in methods)


def _converged_words(flags: list[bool] | None) -> str:
    return "not recorded" if flags is None else f"{sum(flags)}/{len(flags)}"
