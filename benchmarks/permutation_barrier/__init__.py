"""Permutation barrier: weight-space symmetry paper ("Weight-space symmetry in neural network loss
landscapes revisited", ICLR 2020 submission), sections 4.1-4.3 and 5, Figures 2 and 3.

A student starts at a teacher (a global minimum, loss 0). Two hidden neurons l, m are merged:
``ϑ_m = ϑ_l + d·e`` with d going down a log-spaced schedule to 0 and all other parameters
descending to convergence at each d; the output weights are then equalised at constant loss
(a permutation point), and the mirrored half leads to the partner minimum σ_{l⇔m}(θ*). All of
that is :func:`losstopo.permutation.permutation_paths` (the toy's pairs, or the teachers of one width,
descending together); this package only supplies teachers and data.

* Toy (Fig. 2): 2-D standard-normal inputs, teacher 2 -> 5 ReLU -> 1 linear, every pair of the
  five hidden neurons merged (quadratic loss, unnormalised).
* MNIST (Fig. 3): teachers 784 -> H -> H -> 10 (H = 10, 15, 20, 25; several seeds) trained with
  NLL; the two second-layer neurons with the highest cosine similarity are merged; loss
  ``L = <|y - f|^2> / <y_i^2>`` against the teacher's pre-softmax outputs y, and MNIST training
  accuracy along the path.

Claims (report): the barrier (maximum loss along the path) decreases with H; in most cases the
loss rises monotonically up to the permutation point; training accuracy drops only marginally there;
in the toy, the loss at the permutation point differs between neuron pairs (Fig. 2 A vs C).

The modules, one job each: :mod:`.variants` (the toy and the MNIST widths, their data), :mod:`.teachers` (stage
minima), :mod:`.paths` (stage paths: the jobs and their records), :mod:`.topology` (the numbers behind the claims),
:mod:`.claims` and :mod:`.report`.
"""

from __future__ import annotations

from benchmarks.permutation_barrier.paths import PATH_CODE, run_paths
from benchmarks.permutation_barrier.report import report_section
from benchmarks.permutation_barrier.schema import PermutationBarrierConfig
from benchmarks.permutation_barrier.teachers import run_minima
from benchmarks.permutation_barrier.topology import run_topology
from benchmarks.permutation_barrier.variants import NAME, datasets
from losstopo.registry import Experiment

__all__ = ["EXPERIMENT", "NAME", "PATH_CODE", "datasets", "report_section", "run_minima", "run_paths",
           "run_topology"]

EXPERIMENT = Experiment(NAME, PermutationBarrierConfig, datasets,
                        {"minima": run_minima, "paths": run_paths, "topology": run_topology},
                        report_section)
