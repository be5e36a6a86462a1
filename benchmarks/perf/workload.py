"""What each stage of a profile computes, counted from params.yaml: timed operations x how many calls.

A stage's work is a list of :class:`Work` items, each one :class:`Op` (one call of a library
function at the stage's shapes: a stacked training step, a stacked gradient, a stacked loss
evaluation, one descent iteration of a permutation path) and the number of times the stage calls
it. The counts follow the stages' own code paths (``train_minima``, ``optimize_paths`` through
``path_schedule``, the curve/triangle jobs, ``merge_neurons_batch``); the batched evaluators split work
into chunks of ``inner`` models and ``images`` samples that run one after another, so an Op is one
such chunk and the count is the number of chunks.

``bound`` says what the count is: ``exact``; ``upper`` where a stopping rule may end earlier (the
patience rule of minima training, the convergence rule of permutation descents: counted at their
maxima); ``lower`` where Algorithm 4 adds path points during optimisation (counted at ``n_points``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

from benchmarks import cnn_bn, cnn_channels, fc_depth, resnet_lr
from benchmarks import permutation_barrier as perm
from benchmarks import wrn_robustness as wrn
from benchmarks.stages import pair_chunks, path_schedule
from losstopo.config import DataConfig, MinimaConfig, Params, PathConfig
from losstopo.data import SYNTHETIC_SIZES, load_dataset
from losstopo.paths import convergence_checkpoint, dense_positions
from losstopo.permutation import Convergence
from losstopo.stacked import DatasetLoss

# The defaults the stages' DatasetLoss runs with (paths and minima training construct it without them).
LOSS_DEFAULTS = DatasetLoss.__init__.__kwdefaults__
INNER_MODELS, CHUNK_IMAGES = LOSS_DEFAULTS["max_models"], LOSS_DEFAULTS["chunk_size"]

Sizes = Callable[[str, "int | None", str], int]  # (dataset, subset, "train" | "test") -> images


@dataclass(frozen=True)
class Op:
    """One timed call. ``kind``: train (one stacked optimiser step of ``models`` minima, each on its own
    batch of ``images``), grad (loss and gradient of ``models`` parameter vectors on ``images`` shared
    samples), eval (the loss only), descent (one batched iteration of ``models`` permutation-path descents on
    ``images`` inputs; ``model`` names the network, ``rule`` the descent)."""

    kind: str
    model: str
    dataset: str
    models: int
    images: int
    minima: MinimaConfig | None = None  # train: optimiser, augmentation, precision, layout
    bf16: bool = False  # grad/eval: bf16 autocast on CUDA (curve jobs; path steps with paths.mixed_precision)
    rule: Convergence | None = None  # descent


@dataclass(frozen=True)
class Work:
    experiment: str
    stage: str
    what: str
    op: Op
    calls: float
    bound: str = "exact"  # exact | upper | lower


def full_sizes(dataset: str, subset: int | None, split: str) -> int:
    """Images a stage uses of a complete dataset: ``subset`` of the real set's size (capped by it)."""
    full = SYNTHETIC_SIZES[dataset][0 if split == "train" else 1]
    return full if subset is None else min(subset, full)


def loaded_sizes(data: DataConfig) -> Sizes:
    """Images a stage uses of the copies ``data`` resolves to here (a partial offline copy has fewer)."""
    loaded: dict[str, tuple[int, int]] = {}

    def sizes(dataset: str, subset: int | None, split: str) -> int:
        if dataset not in loaded:
            copy = load_dataset(dataset, root=data.root, allow_partial=data.allow_partial,
                                allow_synthetic=data.allows_synthetic(dataset))
            loaded[dataset] = (len(copy.y_train), len(copy.y_test))
        available = loaded[dataset][0 if split == "train" else 1]
        return available if subset is None else min(subset, available)

    return sizes


def chunked(models: int, images: int, inner: int = INNER_MODELS, chunk: int = CHUNK_IMAGES) -> tuple[int, int, int]:
    """A batched evaluation of ``models`` vectors on ``images`` samples as (models per chunk, images per
    chunk, number of chunks)."""
    per_models, per_images = min(models, inner), min(images, chunk)
    return per_models, per_images, math.ceil(models / inner) * math.ceil(images / chunk)


def _eval_work(experiment: str, stage: str, what: str, model: str, dataset: str, models: int, images: int,
               calls: float, bound: str = "exact", inner: int = INNER_MODELS, chunk: int = CHUNK_IMAGES,
               bf16: bool = False, kind: str = "eval") -> Work:
    per_models, per_images, chunks = chunked(models, images, inner, chunk)
    return Work(experiment, stage, what, Op(kind, model, dataset, per_models, per_images, bf16=bf16),
                calls * chunks, bound)


def minima_work(experiment: str, what: str, model: str, dataset: str, cfg: MinimaConfig, sizes: Sizes) -> list[Work]:
    """``train_minima``: per epoch, one stacked step per batch and the full training loss of every minimum;
    at the end training and test loss and accuracy."""
    n_train, n_test = sizes(dataset, cfg.train_subset, "train"), sizes(dataset, cfg.test_subset, "test")
    bound = "exact" if cfg.patience is None or cfg.patience >= cfg.max_epochs else "upper"
    epochs, batches = cfg.max_epochs, max(n_train // cfg.batch_size, 1)
    k, chunk = cfg.n_minima, cfg.eval_batch_size
    return [
        Work(experiment, "minima", f"{what}: {k} minima x {epochs} epochs x {batches} steps",
             Op("train", model, dataset, k, cfg.batch_size, minima=cfg), epochs * batches, bound),
        _eval_work(experiment, "minima", f"{what}: training loss after each epoch", model, dataset, k, n_train,
                   epochs, bound, chunk=chunk),
        _eval_work(experiment, "minima", f"{what}: final training loss and accuracy", model, dataset, k,
                   n_train, 2, chunk=chunk),
        _eval_work(experiment, "minima", f"{what}: final test loss and accuracy", model, dataset, k, n_test, 2,
                   chunk=chunk),
    ]


def paths_work(experiment: str, what: str, model: str, dataset: str, cfg: PathConfig, n_minima: int,
               sizes: Sizes, cuda: bool = False) -> list[Work]:
    """``paths_job`` per chunk of pairs: Algorithm 3 steps on all interior points, the dense evaluation at
    80% of the steps (the convergence rule), the orthogonal gradient at the end, then the dense evaluation
    of the optimised and the straight paths and of the end points. Counted at the paper's fixed probes:
    the adaptive probes of long segments and the refinement of each maximum (data-dependent, at most
    ``paths.MAX_REFINEMENTS`` rounds of two points a path) come on top, so every count is a lower bound."""
    n_images = sizes(dataset, cfg.train_subset, "train")
    batch = n_images if cfg.batch_size is None else min(cfg.batch_size, n_images)
    steps = path_schedule(cfg, n_images)["steps"]
    bound = "lower"
    inner = cfg.max_models  # stages.path_loss
    dense = len(dense_positions(cfg.n_points, cfg.alphas))
    works = []
    for pairs in pair_chunks(n_minima, cfg.pairs_per_job):
        points = len(pairs) * (cfg.n_points - 2)
        ends = len({k for pair in pairs for k in pair})
        works.append(_eval_work(experiment, "paths", f"{what}: {len(pairs)} paths x {steps} steps", model, dataset,
                                points, batch, steps, bound, inner, bf16=cuda and cfg.mixed_precision, kind="grad"))
        works.append(_eval_work(experiment, "paths", f"{what}: orthogonal gradient at the highest points", model,
                                dataset, points, n_images, 1, bound, inner, kind="grad"))
        checkpoint = [("optimised paths at 80% of the steps", len(pairs) * dense)] if 0 < convergence_checkpoint(steps) < steps else []
        for label, models in (*checkpoint, ("optimised paths", len(pairs) * dense), ("straight paths", len(pairs) * dense),
                              ("end points", ends)):
            works.append(_eval_work(experiment, "paths", f"{what}: dense evaluation of the {label}", model, dataset,
                                    models, n_images, 1, bound, inner))
    return works


def curves_work(experiment: str, what: str, model: str, dataset: str, study, sizes: Sizes, cuda: bool) -> list[Work]:
    """``curves_job`` and ``triangles_job`` of one study (one job each, as with ``*_per_job: null``)."""
    cfg, n_minima = study.curves, study.minima.n_minima
    n_images = sizes(dataset, cfg.train_subset, "train")
    batches = max(n_images // cfg.batch_size, 1)
    batch = min(cfg.batch_size, n_images)  # a batch as large as the subset is the whole subset
    bf16 = cuda and study.minima.mixed_precision
    n_curves = math.comb(n_minima, 2)
    n_triangles = math.comb(n_minima, 3)
    grid = (cfg.triangle_resolution + 1) * (cfg.triangle_resolution + 2) // 2
    shape = {"inner": wrn.EVAL_MODELS, "chunk": wrn.EVAL_CHUNK}
    works = [
        _eval_work(experiment, "paths", f"{what}: {n_curves} curves x {cfg.epochs * batches} steps", model, dataset,
                   n_curves, batch, cfg.epochs * batches, bf16=bf16, kind="grad", **shape),
        _eval_work(experiment, "paths", f"{what}: curves on {cfg.n_eval} points", model, dataset,
                   n_curves * cfg.n_eval, n_images, 1, **shape),
        _eval_work(experiment, "paths", f"{what}: loss and accuracy of the minima", model, dataset,
                   n_minima, n_images, 2, **shape),
    ]
    for regime in cfg.triangle_regimes:
        steps = cfg.triangle_epochs * batches
        works += [
            _eval_work(experiment, "paths", f"{what}: {n_triangles} triangles ({regime}) x {steps} steps", model,
                       dataset, n_triangles, batch, steps, bf16=bf16, kind="grad", **shape),
            _eval_work(experiment, "paths", f"{what}: triangles ({regime}) on {grid} grid points", model, dataset,
                       n_triangles * grid, n_images, 1, **shape),
        ]
    return works


def toy_model(hidden: int) -> str:
    """The name an Op gives the toy teacher 2 -> ``hidden`` -> 1 (dataset "toy")."""
    return f"toy-{hidden}"


def toy_hidden(model: str) -> int:
    return int(model.removeprefix("toy-"))


def descent_work(experiment: str, what: str, model: str, dataset: str, n_paths: int, n_steps: int, n_inputs: int,
                 rule: Convergence) -> Work:
    """``merge_neurons_batch``: the ``n_paths`` paths descend together, ``n_steps`` descents (the distances after
    the first, then d = 0) of at most ``rule.max_iter`` batched iterations each."""
    return Work(experiment, "paths", f"{what}: {n_paths} paths together x {n_steps} distances x <= {rule.max_iter} "
                f"iterations", Op("descent", model, dataset, n_paths, n_inputs, rule=rule), n_steps * rule.max_iter,
                "upper")


def barcode_study_work(experiment: str, config, variants, sizes: Sizes, cuda: bool) -> list[Work]:
    works = []
    for v in variants:
        works += minima_work(experiment, v.key, v.model, v.dataset, config.minima, sizes)
        works += paths_work(experiment, v.key, v.model, v.dataset, config.paths, config.minima.n_minima, sizes, cuda)
    return works


def resnet_work(config, sizes: Sizes, cuda: bool) -> list[Work]:
    works = []
    for dataset in config.datasets:
        runs = config.runs(dataset)
        for kind in resnet_lr.TYPES:
            works += minima_work(resnet_lr.EXPERIMENT, f"{dataset}-{kind}", config.model, dataset,
                                 getattr(runs, kind), sizes)
        n_minima = runs.type1.n_minima + runs.type2.n_minima  # paths join the minima of both types
        works += paths_work(resnet_lr.EXPERIMENT, dataset, config.model, dataset, runs.paths, n_minima, sizes, cuda)
    return works


def wrn_work(config, sizes: Sizes, cuda: bool) -> list[Work]:
    works = []
    for name in wrn.STUDIES:
        study = wrn.study_config(config, name)
        works += minima_work(wrn.EXPERIMENT, name, study.model, study.dataset, study.minima, sizes)
        works += curves_work(wrn.EXPERIMENT, name, study.model, study.dataset, study, sizes, cuda)
    return works


def permutation_work(config, sizes: Sizes) -> list[Work]:
    cfg, rule = config.mnist, perm.convergence_rule(config.convergence)
    works = []
    for width in cfg.widths:
        works += minima_work(perm.EXPERIMENT, f"teachers H={width}", f"fc-2-{width}", "mnist",
                             perm.teacher_minima_config(cfg), sizes)
        works.append(descent_work(perm.EXPERIMENT, f"H={width}", f"fc-2-{width}", "mnist", cfg.n_seeds, cfg.n_steps,
                                  sizes("mnist", cfg.path_subset, "train"), rule))
    toy = config.toy
    works.append(descent_work(perm.EXPERIMENT, "toy", toy_model(toy.hidden), "toy", math.comb(toy.hidden, 2),
                              toy.n_steps, toy.n_inputs, rule))
    return works


def profile_work(params: Params, sizes: Sizes = full_sizes, cuda: bool = False,
                 experiments: list[str] | None = None) -> list[Work]:
    """Every compute stage's work under ``params`` (topology and report take seconds and are left out)."""
    builders = {
        "fc_depth": lambda c: barcode_study_work("fc_depth", c, fc_depth.variants(c), sizes, cuda),
        "cnn_channels": lambda c: barcode_study_work("cnn_channels", c, cnn_channels.variants(c), sizes, cuda),
        "cnn_bn": lambda c: barcode_study_work("cnn_bn", c, cnn_bn.variants(c), sizes, cuda),
        "resnet_lr": lambda c: resnet_work(c, sizes, cuda),
        "wrn_robustness": lambda c: wrn_work(c, sizes, cuda),
        "permutation_barrier": lambda c: permutation_work(c, sizes),
    }
    names = experiments or [name for name in builders if name in params.experiments]
    return list(itertools.chain.from_iterable(builders[name](params.experiments[name]) for name in names))
