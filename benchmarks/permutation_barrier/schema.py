"""The settings of the permutation_barrier experiment (``permutation_barrier`` in params.yaml): the toy teacher,
the MNIST teachers and the descent's convergence rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from losstopo.config import require, require_distinct, require_positive


@dataclass(frozen=True)
class ConvergenceConfig:
    """The rule for "descend until convergence" (weight-space symmetry paper, section 4.2)."""

    method: str = "lbfgs"  # gd | adam | lbfgs (full batch)
    lr: float = 1.0  # step size for gd/adam; L-BFGS's initial step
    max_iter: int = 200  # iterations per distance step
    grad_tol: float = 1e-9  # converged when the gradient norm falls below this ...
    rel_tol: float = 1e-9  # ... or the last `window` iterations changed the loss by <= rel_tol*|L| + abs_tol
    abs_tol: float = 0.0
    window: int = 1

    def validate(self, where: str) -> None:
        require(self.method in ("gd", "adam", "lbfgs"), where, "method", "must be gd, adam or lbfgs")
        require(self.max_iter >= 1, where, "max_iter", "must be >= 1")
        require(self.window >= 1, where, "window", "must be >= 1")


@dataclass(frozen=True)
class ToyConfig:
    """2-D toy of Fig. 2: teacher 2 -> hidden -> 1 (ReLU, linear output), student started at the teacher."""

    n_inputs: int = 1000
    hidden: int = 5
    n_steps: int = 200  # log-spaced distances from d0 to d0 * final_ratio
    final_ratio: float = 1.0e-4
    seed: int = 0

    def validate(self, where: str) -> None:
        require(self.hidden >= 2, where, "hidden", "must be >= 2 (two neurons are merged)")
        require_positive(self, where, "n_inputs")
        merge_schedule(self, where)


def merge_schedule(cfg, where: str) -> None:
    require(cfg.n_steps >= 2, where, "n_steps", "must be >= 2")
    require(0 < cfg.final_ratio < 1, where, "final_ratio", "must lie strictly between 0 and 1")


@dataclass(frozen=True)
class MNISTTeachersConfig:
    """MNIST study of Fig. 3: teachers 784 -> H -> H -> 10, merging two second-layer neurons."""

    widths: list[int] = field(default_factory=lambda: [10, 15, 20, 25])
    n_seeds: int = 6
    epochs: int = 30
    lr: float = 1.0e-3
    batch_size: int = 128
    train_subset: int | None = None  # MNIST images the teachers train on
    path_subset: int | None = 10000  # inputs on which the student loss L is measured along the path
    n_steps: int = 100
    final_ratio: float = 1.0e-4
    # descend in whitened input coordinates (ridge x the mean eigenvalue added to the pixels' covariance): the
    # same networks and losses, a better-conditioned descent; null: raw pixels
    whiten_ridge: float | None = None
    # iterations of the descent at d = 0 (the permutation point, where the saddle, accuracy and loss-at-saddle
    # claims read), in two halves: the second half's change is the point's convergence; null: a step like the others
    final_max_iter: int | None = None
    # a width's own d = 0 budget where final_max_iter did not converge its points (the budget doubles by the
    # convergence rule); the other widths keep final_max_iter, and their finished paths stay valid
    final_max_iter_by_width: dict[int, int] = field(default_factory=dict)
    # certify each path's maximum by refining its argmax step (losstopo.path_maximum): L-BFGS iterations per
    # refinement (two halves) and at most max_refinements a path; null: the maximum's convergence is judged by
    # descending the whole path again at half the budget, as every step's
    refine_budget: int | None = None
    max_refinements: int = 10

    def final_budget(self, width: int) -> int | None:
        """The d = 0 descent's iterations at hidden width ``width``."""
        return self.final_max_iter_by_width.get(width, self.final_max_iter)

    def validate(self, where: str) -> None:
        require_distinct(self.widths, where, "widths")
        require_positive(self, where, "whiten_ridge", "final_max_iter", "max_refinements")
        require(self.refine_budget is None or self.refine_budget >= 2, where, "refine_budget",
                "must be >= 2 (two halves) or null")
        require(self.final_max_iter is None or self.final_max_iter >= 2, where, "final_max_iter",
                "must be >= 2 (two halves) or null")
        require(min(self.widths) >= 2, where, "widths", "must all be >= 2 (two neurons are merged)")
        require(self.final_max_iter is not None or not self.final_max_iter_by_width, where, "final_max_iter_by_width",
                "needs final_max_iter (the other widths' budget)")
        for width, budget in self.final_max_iter_by_width.items():
            require(width in self.widths, where, "final_max_iter_by_width", f"names width {width}, not in widths")
            require(isinstance(budget, int) and budget >= 2, where, "final_max_iter_by_width",
                    f"budget of H = {width} must be an integer >= 2 (two halves)")
        require_positive(self, where, "n_seeds", "epochs", "lr", "batch_size", "train_subset", "path_subset")
        merge_schedule(self, where)


@dataclass(frozen=True)
class PermutationBarrierConfig:
    toy: ToyConfig = field(default_factory=ToyConfig)
    mnist: MNISTTeachersConfig = field(default_factory=MNISTTeachersConfig)
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
