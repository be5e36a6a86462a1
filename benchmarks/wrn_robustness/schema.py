"""The settings of the wrn_robustness experiment (``wrn_robustness`` in params.yaml): its two studies, their
minima and their curves and triangles."""

from __future__ import annotations

from dataclasses import dataclass, field

from losstopo.config import MinimaConfig, require


@dataclass(frozen=True)
class CurveConfig:
    """Curves and triangles trained with random points (section 4; Table 6 schedule, Appendix I)."""

    kind: str = "polychain"  # polychain (one bend, section 4) | bezier
    epochs: int = 200  # "the same training procedure as for the minima" (Appendix C)
    lr: float = 0.03  # Garipov schedule base rate (Table 6)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    train_subset: int | None = None
    n_eval: int = 61  # evaluation points along a curve
    triangle_epochs: int = 200
    triangle_resolution: int = 12  # barycentric grid for the triangle maximum
    triangle_regimes: list[str] = field(default_factory=lambda: ["vertices_fixed", "sides_fixed"])
    pairs_per_job: int | None = None  # curves per job (the unit an executor schedules); None: one job per study
    triangles_per_job: int | None = None  # triangles per job, per regime; None: one job per study and regime
    converge_tol: float = 0.01  # converged: the last 20% of steps moved a curve/triangle maximum by <= this (relative)
    converge_abs: float = 0.0  # ... or by <= this (loss units): the resolution below which maxima are not told apart

    def validate(self, where: str) -> None:
        require(self.kind in ("polychain", "bezier"), where, "kind", "must be 'polychain' or 'bezier'")
        require(0 < self.converge_tol < 1, where, "converge_tol", "must lie strictly between 0 and 1 (relative)")
        require(self.converge_abs >= 0, where, "converge_abs", "must be >= 0")
        require(set(self.triangle_regimes) <= {"vertices_fixed", "sides_fixed"}, where, "triangle_regimes",
                "must be among vertices_fixed, sides_fixed")
        require(self.pairs_per_job is None or self.pairs_per_job >= 1, where, "pairs_per_job", "must be >= 1")
        require(self.triangles_per_job is None or self.triangles_per_job >= 1, where, "triangles_per_job",
                "must be >= 1")


@dataclass(frozen=True)
class TriangleStudyConfig:
    dataset: str = "cifar100"
    model: str = "wrn-16-10"
    minima: MinimaConfig = field(default_factory=MinimaConfig)
    curves: CurveConfig = field(default_factory=CurveConfig)


@dataclass(frozen=True)
class WRNRobustnessConfig:
    wrn: TriangleStudyConfig = field(default_factory=TriangleStudyConfig)
    lenet: TriangleStudyConfig = field(default_factory=TriangleStudyConfig)
    subset_sizes: list[int] = field(default_factory=lambda: [2, 3, 4, 5])  # Fig. 7
    fixed_minimum: int = 4  # Fig. 7b: "minimum 4"
    studies: list[str] = field(default_factory=lambda: ["wrn", "lenet"])  # which of the two studies run

    def validate(self, where: str) -> None:
        require(len(self.studies) > 0 and len(set(self.studies)) == len(self.studies)
                and set(self.studies) <= {"wrn", "lenet"}, where, "studies",
                "must be a non-empty list of distinct names among wrn, lenet")
