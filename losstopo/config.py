"""Typed parameters: ``params.yaml`` with its active profile merged in, validated up front.

``params.yaml`` holds the paper-scale settings at top level and named reduced profiles under
``profiles``; the key ``profile`` picks one, whose sections override (never copy) the defaults.
Unknown keys, wrong types and out-of-range values raise a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from losstopo import registry
from losstopo.errors import ConfigError
from losstopo.paths import SAMPLES, STEP_RULES

PATH_METHODS = ("alg3", "polychain", "best")


class ExperimentNotInProfile(ConfigError):
    """The active profile's ``experiments`` list leaves this experiment out."""


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # offline copies (<root>/offline/*.npz); None: torchvision download
    allow_partial: bool = False  # accept an offline copy with only part of the training images
    # a labelled synthetic stand-in for these datasets when they are missing (e.g. [svhn, cifar100]); a dataset
    # not named must be there. true: any missing dataset (quick tests only: a missing MNIST would pass silently)
    allow_synthetic: bool | list[str] = False

    def __post_init__(self):
        if isinstance(self.allow_synthetic, list):  # hashable: data settings key the per-process data cache
            object.__setattr__(self, "allow_synthetic", tuple(self.allow_synthetic))

    def allows_synthetic(self, name: str) -> bool:
        return self.allow_synthetic is True or (not isinstance(self.allow_synthetic, bool)
                                                and name in self.allow_synthetic)

    def validate(self, where: str) -> None:
        from losstopo.data import REGISTRY

        if not isinstance(self.allow_synthetic, bool):
            unknown = sorted(set(self.allow_synthetic) - set(REGISTRY))
            require(not unknown, where, "allow_synthetic",
                    f"names unknown dataset(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True

    def validate(self, where: str) -> None:
        require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, where, "device",
                f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


EXECUTORS = ("local", "ray")
SETTINGS_SECTIONS = ("data", "runtime", "executor", "ray")  # params.yaml's top-level sections besides experiments'


@dataclass(frozen=True)
class RayConfig:
    """Used when ``executor: ray`` (see :mod:`losstopo.executor`)."""

    address: str | None = None  # None: start Ray on this machine (or RAY_ADDRESS); "auto"; "host:6379"
    cpus_per_job: float = 1.0
    gpus_per_job: float | None = None  # None: 1 when the cluster has GPUs, else 0; 0.5 shares a GPU
    max_retries: int = 3  # retries of a job whose worker died
    log_to_driver: bool = False  # show the workers' output (progress bars) in this terminal

    def validate(self, where: str) -> None:
        require(self.cpus_per_job > 0, where, "cpus_per_job", "must be > 0")
        require(self.gpus_per_job is None or self.gpus_per_job >= 0, where, "gpus_per_job", "must be >= 0")
        require(self.max_retries >= 0, where, "max_retries", "must be >= 0")


@dataclass(frozen=True)
class MinimaConfig:
    n_minima: int = 10
    seed: int = 0
    batch_size: int = 256
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2 coefficient ("||theta||_2" column of Tables 4-7)
    schedule: str = "cyclic"  # cyclic (Smith 2015) | piecewise (S of Appendix A) | garipov (Table 6)
    lr_base: float = 1e-4  # cyclic: lower bound; piecewise: lr_min; garipov: unused
    lr_max: float = 3e-3  # cyclic: upper bound; piecewise: lr_max; garipov: lr_base
    cycle_epochs: float = 4.0  # cyclic: length of one up-and-down cycle
    m1: float = 0.0  # piecewise: lr_max until epoch m1, linear to lr_base at epoch m2
    m2: float = 0.0
    max_epochs: int = 200
    patience: int | None = 10  # epochs without relative improvement > min_improvement; None: all epochs
    min_improvement: float = 1e-3
    min_improvement_abs: float = 0.0  # ... plus this absolute amount (a loss near zero improves by tiny relative steps)
    train_subset: int | None = None
    test_subset: int | None = None
    augment: bool = False  # random crop (pad 4) + horizontal flip, done on the device per batch
    eval_batch_size: int = 10000  # images per batched loss evaluation (lower it for big nets on small GPUs)
    mixed_precision: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    # bf16 autocast training steps on a CPU with fast bf16 (AMX or AVX512-BF16); off by default because it changes
    # the minima. The losses and the per-epoch evaluation (patience rule, accuracies) stay fp32 either way
    mixed_precision_cpu: bool = False
    channels_last: bool = False  # NHWC convolutions on CUDA, one model after another (big conv nets)

    def validate(self, where: str) -> None:
        require(2 <= self.n_minima <= 1000, where, "n_minima",
                "must be between 2 (a barcode needs two minima) and 1000 (replicates' seeds are 1000 apart)")
        require(0 < self.lr_base <= self.lr_max, where, "lr_base", "must satisfy 0 < lr_base <= lr_max")
        require(self.max_epochs >= 1 and (self.patience is None or self.patience >= 1), where, "max_epochs",
                "max_epochs and patience must be >= 1")
        require(self.optimizer in ("adam", "sgd"), where, "optimizer", "must be 'adam' or 'sgd'")
        require(0 <= self.min_improvement < 1 and self.min_improvement_abs >= 0, where, "min_improvement",
                "min_improvement must be in [0, 1) and min_improvement_abs >= 0")
        require(self.schedule in ("cyclic", "piecewise", "garipov"), where, "schedule",
                "must be 'cyclic', 'piecewise' or 'garipov'")
        require(0 <= self.m1 <= self.m2, where, "m1", "must satisfy 0 <= m1 <= m2")
        require_positive(self, where, "batch_size", "eval_batch_size", "train_subset", "test_subset", "cycle_epochs")


@dataclass(frozen=True)
class PathConfig:
    n_points: int = 19  # section 3.1
    lr: float = 0.05
    steps: int = 1000
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0  # cap on each point's step direction (ours; see paths.optimize_paths)
    batch_size: int | None = None  # None: full-batch gradients on the path subset
    train_subset: int | None = 10000  # training images the path loss is measured on
    alphas: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    max_models: int = 512  # path points per batched evaluation
    epochs: float | None = None  # if set, steps = epochs * (minibatches per pass over the subset)
    schedule: str = "constant"  # constant (lr) | piecewise: S(m1, m2, lr, lr_min) over epochs (Table 13)
    lr_min: float = 0.0
    m1: float = 0.0
    m2: float = 0.0
    refine_every_epochs: float | None = None  # Algorithm 4 every so many epochs (paper: 25); None: off
    refine_criterion: str = "distance"  # distance | loss
    refine_threshold: float = 1.2  # T of Algorithm 4
    pairs_per_job: int | None = None  # pairs per job (the unit an executor schedules); None: one job per variant
    mixed_precision: bool = False  # bf16 autocast for the path steps on CUDA and AMX CPUs; reported losses stay fp32
    converge_tol: float = 0.01  # converged: the last 20% of steps moved the path maximum by <= this (relative)
    converge_abs: float = 0.0  # ... or by <= this (loss units): the resolution below which maxima are not told apart
    step_rule: str = "sgd"  # sgd (Algorithm 3) | normalized: lr is a fraction of the path's spacing per step
    sample: str = "points"  # points (Algorithm 3) | segments: gradients at a random point of each segment
    # which paths define the bars: alg3 (Algorithm 3, the paper's) | polychain (one-bend curves of Garipov et
    # al., the `curves` stage) | best (both; per pair the lower maximum: every path is an upper bound on the
    # minimax value that defines the barcode)
    method: str = "alg3"
    curve_steps: int | None = None  # polychain: SGD steps on minibatches of the path subset (None: ``steps``)
    curve_lr: float = 0.05  # polychain: SGD learning rate, Garipov et al.'s schedule over the steps
    curve_momentum: float = 0.9
    curve_weight_decay: float = 0.0  # 0.5 * wd * ||w(t)||^2 at each sampled point (Garipov et al.'s meaning)

    def validate(self, where: str) -> None:
        require(self.n_points >= 3, where, "n_points", "must be >= 3")
        require(0 < self.converge_tol < 1, where, "converge_tol", "must lie strictly between 0 and 1 (relative)")
        require(self.converge_abs >= 0, where, "converge_abs", "must be >= 0")
        require(self.step_rule in STEP_RULES, where, "step_rule", f"must be one of {STEP_RULES}")
        require(self.sample in SAMPLES, where, "sample", f"must be one of {SAMPLES}")
        require(self.lr > 0 and self.steps >= 0, where, "lr", "lr must be > 0 and steps >= 0")
        require(self.schedule in ("constant", "piecewise"), where, "schedule", "must be 'constant' or 'piecewise'")
        require(self.refine_criterion in ("distance", "loss"), where, "refine_criterion",
                "must be 'distance' or 'loss'")
        require(all(0 < a < 1 for a in self.alphas), where, "alphas", "must lie strictly between 0 and 1")
        require(self.pairs_per_job is None or self.pairs_per_job >= 1, where, "pairs_per_job", "must be >= 1")
        require(self.method in PATH_METHODS, where, "method", f"must be one of {PATH_METHODS}")
        require(self.curve_lr > 0 and self.curve_momentum >= 0 and self.curve_weight_decay >= 0, where, "curve_lr",
                "curve_lr must be > 0, curve_momentum and curve_weight_decay >= 0")
        require_positive(self, where, "batch_size", "train_subset", "max_models", "epochs", "curve_steps")


@dataclass(frozen=True)
class TopologyConfig:
    method: str = "paper"  # paper (Algorithm 1) | persistence (exact graph persistence)

    def validate(self, where: str) -> None:
        require(self.method in ("paper", "persistence"), where, "method", "must be 'paper' or 'persistence'")


@dataclass(frozen=True)
class BarcodeStudyConfig:
    """The three stage settings every barcode-of-minima experiment has."""

    minima: MinimaConfig = field(default_factory=MinimaConfig)
    paths: PathConfig = field(default_factory=PathConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    # minima settings that differ for one dataset, e.g. {fashion_mnist: {max_epochs: 3000}}: a small partial
    # copy needs more epochs for the same number of steps; the other datasets' minima keep their settings
    minima_by_dataset: dict[str, dict] = field(default_factory=dict)

    def minima_for(self, dataset: str, where: str = "minima_by_dataset") -> MinimaConfig:
        """The minima settings of ``dataset``: ``minima`` with that dataset's overrides."""
        overrides = self.minima_by_dataset.get(dataset)
        if not overrides:
            return self.minima
        if not isinstance(overrides, dict):
            raise ConfigError(f"params: {where}.{dataset} must be a mapping of minima settings")
        return build(MinimaConfig, {**as_dict(self.minima), **overrides}, f"{where}.{dataset}")

    def validate(self, where: str) -> None:
        for dataset in self.minima_by_dataset:
            self.minima_for(dataset, f"{where}.minima_by_dataset")


@dataclass(frozen=True)
class Params:
    profile: str
    data: DataConfig
    runtime: RuntimeConfig
    experiments: dict[str, Any]
    executor: str = "local"  # local | ray: where the independent jobs of a stage run
    ray: RayConfig = RayConfig()

    def experiment(self, name: str):
        if name not in self.experiments:
            registry.experiment(name)  # an unknown name: one line naming the known experiments
            raise ExperimentNotInProfile(f"experiment {name!r} is not run at profile {self.profile!r}")
        return self.experiments[name]


def require(ok: bool, where: str, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params: {where}.{key} {message}")


def require_positive(obj, where: str, *names: str) -> None:
    """Sizes and counts: each named setting is > 0, or null where null means "all" (the type allows None)."""
    for name in names:
        value = getattr(obj, name)
        require(value is None or value > 0, where, name, f"must be > 0, got {value!r}")


def require_distinct(values: list, where: str, key: str) -> None:
    """A list of variants: non-empty, no value twice (it would be trained twice)."""
    require(len(values) > 0, where, key, "must not be empty")
    repeated = sorted({v for v in values if values.count(v) > 1})
    require(not repeated, where, key, f"lists {repeated[0] if repeated else ''!r} more than once")


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build(cls, raw: Any, where: str):
    """A dataclass from a dict, checking keys and scalar types recursively."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"params: unknown key {where}.{unknown[0]}; allowed: {', '.join(sorted(names))}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build(hint, value, f"{where}.{name}")
        else:
            values[name] = _checked_scalar(value, hint, f"{where}.{name}")
    obj = cls(**values)
    for name in names - set(raw):
        sub = getattr(obj, name)
        if dataclasses.is_dataclass(sub) and hasattr(sub, "validate"):
            sub.validate(f"{where}.{name}")
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def _checked_scalar(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        for member in members[:-1]:  # the first member the value fits; the last one's error otherwise
            try:
                return _checked_scalar(value, member, key)
            except ConfigError:
                pass
        hint = members[-1]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict:
        key_type = args[0] if args else str
        if not isinstance(value, dict) or not all(isinstance(k, key_type) and not isinstance(k, bool) for k in value):
            raise ConfigError(f"params: {key} must be a mapping with {key_type.__name__} keys, got {value!r}")
        return {k: _checked_scalar(v, args[1], f"{key}.{k}") if args[1] is not dict else v
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"params: {key} must be a list, got {value!r}")
        return [_checked_scalar(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise ConfigError(f"params: {key} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def load_params(path: str | Path = "params.yaml", profile: str | None = None, only: str | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"params file {str(path)!r} is not valid YAML{where}: {problem}") from None
    return resolve(raw, profile, only)


def resolve(raw: dict, profile: str | None = None, only: str | None = None) -> Params:
    """The settings of profile ``profile`` (default: the one params.yaml names), every experiment's section read
    with the dataclass its module registers (losstopo.registry). ``only``: read that experiment's section alone,
    importing no other experiment's module (a stage; ``losstopo validate``, the first DVC stage, checks them all)."""
    profiles = raw.get("profiles") or {}
    active = profile or raw.get("profile", "paper")
    if active != "paper" and active not in profiles:
        raise ConfigError(f"params: unknown profile {active!r}; allowed: paper, {', '.join(sorted(profiles))}")
    merged = deep_merge({k: v for k, v in raw.items() if k not in ("profiles", "profile")}, profiles.get(active, {}))
    chosen = merged.pop("experiments", None)  # a profile may run only some experiments
    if only is None:
        known = registry.experiments()
        _check_sections(merged, chosen, active, set(known))
    else:
        known = {only: registry.experiment(only)}
    executor = merged.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(f"params: executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    experiments = {name: build(experiment.config, merged[name], name) for name, experiment in known.items()
                   if name in merged and (chosen is None or name in chosen)}
    return Params(active, build(DataConfig, merged.get("data"), "data"),
                  build(RuntimeConfig, merged.get("runtime"), "runtime"), experiments,
                  executor, build(RayConfig, merged.get("ray"), "ray"))


def _check_sections(merged: dict, chosen: Any, active: str, known: set[str]) -> None:
    """The profile's experiments list and every top-level section name a known experiment (or a setting)."""
    names = ", ".join(sorted(known))
    if chosen is not None and (not isinstance(chosen, list) or not chosen or not set(chosen) <= known):
        raise ConfigError(f"params: profiles.{active}.experiments must be a non-empty list of {names}; got {chosen!r}")
    unknown = sorted(set(merged) - {*SETTINGS_SECTIONS, *known})
    if unknown:
        raise ConfigError(f"params: unknown section {unknown[0]!r}; allowed: {', '.join(SETTINGS_SECTIONS)}, {names}")


def set_profile(path: str | Path, profile: str) -> None:
    """Rewrites only the ``profile:`` line of params.yaml, keeping its comments, so DVC sees the switch."""
    path = Path(path)
    text = path.read_text()
    resolve(yaml.safe_load(text) or {}, profile)  # validates the name before anything is written
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("profile:"):
            comment = line[line.index("#"):].rstrip("\n") if "#" in line else ""
            lines[i] = f"profile: {profile}" + (f"  {comment}" if comment else "") + "\n"
            break
    else:
        lines.insert(0, f"profile: {profile}\n")
    from losstopo.io import save_text

    save_text("".join(lines), path)


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def content_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able settings: the address of outputs made with them."""
    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
