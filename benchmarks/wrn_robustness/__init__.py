"""Random-point curves, triangles and the robustness of the barcode: barcodes paper, section 4, Table 3,
Fig. 6, 7, Appendix A (Tables 6, 7), Appendix C and Appendix I (Table 14, Fig. 15, 16).

Two studies, each a stack of minima trained with SGD and the Garipov schedule (Table 6 / Table 7):

- ``wrn``: WideResNet-16-10 on CIFAR-100 (section 4, Table 3, Fig. 6, 7, 15); offline there is no
  CIFAR-100, so reduced profiles use the labelled SYNTHETIC stand-in (and a narrower WRN);
- ``lenet``: LeNet on Fashion-MNIST (Appendix I, Table 14, Fig. 16); offline only a partial real
  copy (2,557 images) exists.

Paths stage: a polygonal chain with one bend between every pair of minima, the pairs of a job
(``curves.pairs_per_job``; default all) trained in one batch with a random t per minibatch (Garipov
et al. 2018) under the minima's schedule (Appendix C); dense evaluation gives each curve's maximum.
Then, once the curves are done, a triangle over every triple of minima in each regime of Appendix I
(``curves.triangles_per_job`` per job): ``sides_fixed`` keeps the trained curves as the sides (their
bends are the side centres D = AB, E = BC, F = CA) and trains only the centre O; ``vertices_fixed``
trains D, E, F and O. Convergence is measured, not assumed: each curve and triangle is also evaluated
after 80% of its steps, and its maximum counts as converged by the rule of the optimised paths
(:func:`losstopo.paths.path_converged`; floor: the highest loss of its minima).

Topology stage: the barcode of minima (Fig. 6a, Algorithm 1), the 1-saddle barcode of the complex of
minima, curves and triangles (Fig. 6b, Algorithm 2), and the robustness of the minima barcode to the
choice and number of minima (Fig. 7): the bar of each minimum recomputed on every subset of minima.

Loss everywhere in this package is the mean cross-entropy on the curves' training subset (nested in the minima's
training set); BatchNorm normalises with the statistics of the evaluated batch, recomputed for every
parameter vector (see :mod:`losstopo.stacked`), which is "BN statistics recomputed at each evaluated t".

The modules, one job each: :mod:`.study` (the studies and their settings), :mod:`.minima`, :mod:`.jobs` and
:mod:`.paths` (the curves and triangles: what a worker computes, and the stage that schedules and records it),
:mod:`.topology` (barcodes and robustness, with :mod:`losstopo.saddles` and :mod:`losstopo.robustness`), and the
report: :mod:`.tables`, :mod:`.claims`, :mod:`.report`.
"""

from __future__ import annotations

from benchmarks.wrn_robustness.minima import run_minima
from benchmarks.wrn_robustness.paths import run_paths
from benchmarks.wrn_robustness.report import report_section
from benchmarks.wrn_robustness.schema import WRNRobustnessConfig
from benchmarks.wrn_robustness.study import NAME, datasets
from benchmarks.wrn_robustness.topology import run_topology
from losstopo.registry import Experiment

__all__ = ["EXPERIMENT", "NAME", "datasets", "report_section", "run_minima", "run_paths", "run_topology"]

EXPERIMENT = Experiment(NAME, WRNRobustnessConfig, datasets,
                        {"minima": run_minima, "paths": run_paths, "topology": run_topology},
                        report_section)
