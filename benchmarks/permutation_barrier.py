"""Permutation barrier: weight-space symmetry paper ("Weight-space symmetry in neural network loss
landscapes revisited", ICLR 2020 submission), sections 4.1-4.3 and 5, Figures 2 and 3.

A student starts at a teacher (a global minimum, loss 0). Two hidden neurons l, m are merged:
``ϑ_m = ϑ_l + d·e`` with d going down a log-spaced schedule to 0 and all other parameters
descending to convergence at each d; the output weights are then equalised at constant loss
(a permutation point), and the mirrored half leads to the partner minimum σ_{l⇔m}(θ*). All of
that is :func:`losstopo.permutation.permutation_paths` (the toy's pairs, or the teachers of one width,
descending together); this module only supplies teachers and data.

* Toy (Fig. 2): 2-D standard-normal inputs, teacher 2 -> 5 ReLU -> 1 linear, every pair of the
  five hidden neurons merged (quadratic loss, unnormalised).
* MNIST (Fig. 3): teachers 784 -> H -> H -> 10 (H = 10, 15, 20, 25; several seeds) trained with
  NLL; the two second-layer neurons with the highest cosine similarity are merged; loss
  ``L = <|y - f|^2> / <y_i^2>`` against the teacher's pre-softmax outputs y, and MNIST training
  accuracy along the path.

Claims (report): the barrier (maximum loss along the path) decreases with H; in most cases the
loss rises monotonically up to the permutation point; training accuracy drops only marginally there;
in the toy, the loss at the permutation point differs between neuron pairs (Fig. 2 A vs C).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from losstopo.stages import (ARTIFACTS, TRAINING_CODE, DataRequest, MinimaJob, compute_stage, job_dataset,
                             job_provenance, minima_job, require_complete, resolve_device, stage_dir, tensor_digest)
from losstopo import plots, tracking
from losstopo.codeversion import module_version
from losstopo.config import (ConvergenceConfig, DataConfig, MinimaConfig, MNISTTeachersConfig, Params,
                             PermutationBarrierConfig, ToyConfig, as_dict, content_hash)
from losstopo.data import Dataset
from losstopo.descent import halved
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.hessian import extreme_eigenvalues
from losstopo.io import load_json, save_json, save_torch
from losstopo.permutation import (Convergence, InputWhitening, MLPParams, PermutationPath, QuadraticLoss,
                                  incoming_cosine_similarity, incoming_vectors, merge_candidates, permutation_paths,
                                  quadratic_loss)
from losstopo.provenance import toy_provenance
from losstopo.registry import Experiment
from losstopo.report import Claim, Section
from losstopo.evidence import (NULL_DRAWS, below_threshold_null_rate, below_threshold_test, binomial_null_rate,
                               binomial_test, homogeneity_null_rate, homogeneity_test, trend_null_rate, trend_test)
from losstopo.stats import bootstrap_ci, theil_sen_slope

NAME = "permutation_barrier"
HESSIAN_ITERATIONS = 60  # Lanczos steps for the extreme eigenvalues at each permutation point
TITLE = "Permutation barrier (weight-space symmetry paper, Fig. 2, 3)"

TOY_KEY = "toy"
TOY_LAYER = 1  # the toy's only hidden layer
MNIST_LAYER = 2  # "two neurons ... in the second hidden layer" (§5)
TEACHER_SEED = 0  # teacher k of every width trains from seed TEACHER_SEED + k (and its own minibatch order)
TOY_DTYPE = torch.float64  # the toy is tiny: double precision costs nothing
# MNIST paths run in the teachers' float32: the loss noise floor (~1e-13) is far below the barriers
# (>= 1e-7 in our runs) and float32 halves the CPU cost of the descent.
MNIST_DTYPE = torch.float32
# A first half counts as rising monotonically if no step goes down by more than this fraction of
# the path's barrier: smaller dips are invisible on Fig. 3A and within the descent's convergence noise.
MONOTONE_TOLERANCE = 0.01
# "Decreases only marginally" (Fig. 3B), made testable: a drop below 1 percentage point of
# training accuracy -- our reading of Fig. 3B, whose curves stay within about a point of the teacher.
ACCURACY_DROP_THRESHOLD_PP = 1.0
# Two toy pairs' permutation-point losses closer than this fraction of the highest one count as one level
# (Fig. 2 A and B): the module's resolution MONOTONE_TOLERANCE reused, not fitted to the toy's levels.
# Fig. 2's "different" levels (A vs C) differ by far more.
LEVEL_RESOLUTION = MONOTONE_TOLERANCE
# A pair's measured error: how much its loss still moves over the last LEVEL_WINDOW-fold of distances
# before d = 0, where the constrained minimum's loss is flat (the permutation point is a critical point).
LEVEL_WINDOW = 10.0

PATH_CODE = module_version("losstopo.permutation", "losstopo.descent", "losstopo.hessian")  # in path addresses

def mnist_key(width: int) -> str:
    return f"mnist-H{width}"


def variant_keys(config: PermutationBarrierConfig) -> list[str]:
    return [TOY_KEY] + [mnist_key(h) for h in config.mnist.widths]


def toy_source(cfg: ToyConfig) -> str:
    return (f"synthetic toy (the paper's own setup): {cfg.n_inputs} standard-normal 2-D inputs, "
            f"teacher 2-{cfg.hidden}-1 drawn with seed {cfg.seed}")


def toy_data(cfg: ToyConfig) -> dict:
    """The toy's provenance (its records' ``data``): its label is :func:`toy_source`."""
    return toy_provenance(TOY_KEY, toy_source(cfg), cfg.n_inputs).as_dict()


def _done(path: Path, address: str) -> dict | None:
    """The saved record at ``path`` if it was made with the same settings (content address)."""
    if path.is_file():
        record = load_json(path)
        if record.get("address") == address:
            return record
    return None


# ---------------------------------------------------------------- teachers

def draw_toy_teacher(cfg: ToyConfig) -> tuple[MLPParams, torch.Tensor]:
    """The Fig. 2 teacher 2 -> ``hidden`` ReLU -> 1 linear and its inputs, all from ``cfg.seed``.

    The paper does not give the teacher's weights; ours are spread like its Fig. 2: neuron i's
    incoming weight vector points at angle ``2π(i + u_i/2)/hidden`` (``u_i ~ U(-1/2, 1/2)``: distinct,
    well separated directions) with length ``U(0.5, 1.5)``; biases ``N(0, 0.5²)``; output weights
    ``±U(0.5, 1.5)`` with random signs; output bias 0. Inputs: ``n_inputs`` draws of N(0, I_2).
    """
    generator = torch.Generator().manual_seed(cfg.seed)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=TOY_DTYPE)

    inputs = torch.randn(cfg.n_inputs, 2, generator=generator, dtype=TOY_DTYPE)
    angles = 2 * math.pi * (torch.arange(cfg.hidden, dtype=TOY_DTYPE) + (uniform(cfg.hidden) - 0.5) / 2) / cfg.hidden
    lengths = 0.5 + uniform(cfg.hidden)
    w1 = lengths[:, None] * torch.stack([angles.cos(), angles.sin()], dim=1)
    b1 = 0.5 * torch.randn(cfg.hidden, generator=generator, dtype=TOY_DTYPE)
    signs = torch.where(uniform(cfg.hidden) < 0.5, -1.0, 1.0).to(TOY_DTYPE)
    w2 = (signs * (0.5 + uniform(cfg.hidden)))[None, :]
    b2 = torch.zeros(1, dtype=TOY_DTYPE)
    return MLPParams([w1, w2], [b1, b2]), inputs


def teacher_minima_config(cfg: MNISTTeachersConfig) -> MinimaConfig:
    """Teacher training as a :class:`MinimaConfig`: Adam at the constant rate ``lr`` (lr_base = lr_max)
    for ``epochs`` epochs on NLL (the patience rule never fires: patience = epochs), best epoch kept."""
    return MinimaConfig(n_minima=cfg.n_seeds, seed=TEACHER_SEED, batch_size=cfg.batch_size, lr_base=cfg.lr,
                        lr_max=cfg.lr, cycle_epochs=1.0, max_epochs=cfg.epochs, patience=cfg.epochs,
                        min_improvement=0.0, train_subset=cfg.train_subset, test_subset=None)


def teachers_from_thetas(thetas: torch.Tensor, layer_sizes: list[int]) -> list[MLPParams]:
    """Rows of the stacked (K, d) tensor as MLPParams (flat order = ``named_parameters`` of fc-2-H)."""
    return [MLPParams.from_flat(theta.clone(), tuple(layer_sizes), flatten_input=True) for theta in thetas]


def own_outputs_loss(teachers: list[MLPParams], inputs: torch.Tensor, normalise: bool) -> QuadraticLoss:
    """Problem b's quadratic loss against teacher b's own (pre-softmax) outputs: 0 at the teacher."""
    with torch.no_grad():
        targets = torch.stack([teacher.forward(inputs) for teacher in teachers])
    return quadratic_loss(inputs, targets, normalise=normalise)


def teacher_request(cfg: MNISTTeachersConfig) -> DataRequest:
    return DataRequest("mnist", cfg.train_subset, None, TEACHER_SEED)


def path_request(cfg: MNISTTeachersConfig) -> DataRequest:
    """Same seed as the teachers' subset: the path inputs are nested in their training images."""
    return DataRequest("mnist", cfg.path_subset, 0, TEACHER_SEED)


def _mnist_training_address(cfg: MNISTTeachersConfig, width: int, source: str) -> str:
    training = {k: getattr(cfg, k) for k in ("n_seeds", "epochs", "lr", "batch_size", "train_subset")}
    return content_hash(TRAINING_CODE, "fc-2", width, TEACHER_SEED, training, source)


def _minima_toy(cfg: ToyConfig, out: Path) -> dict:
    address = content_hash(module_version("losstopo.permutation"), "toy-teacher-v1", cfg.n_inputs, cfg.hidden, cfg.seed)
    done = _done(out / "minima.json", address)
    if done is not None:
        return done["summary"]
    teacher, inputs = draw_toy_teacher(cfg)
    with tracking.variant_run(TOY_KEY, data_source=toy_source(cfg), params=as_dict(cfg)):
        save_torch({"teacher": teacher.flat(), "layer_sizes": list(teacher.layer_sizes), "inputs": inputs,
                    "address": address}, out / "teacher.pt")
        summary = {"variant": TOY_KEY, "layer_sizes": list(teacher.layer_sizes), "data_source": toy_source(cfg),
                   "data": toy_data(cfg),
                   "incoming_vectors": incoming_vectors(teacher, TOY_LAYER).tolist(),
                   "output_weights": teacher.weights[1][0].tolist()}
        save_json({"address": address, "summary": summary}, out / "minima.json")
    return summary


def _teacher_job(cfg: MNISTTeachersConfig, width: int, address: str, data: DataConfig, params: Params,
                 out: Path) -> Job:
    """All seeds of width ``width`` trained stacked in one job (resuming from its epoch checkpoint)."""
    checkpoint = out / f"checkpoint-{address}.pt"
    spec = MinimaJob(f"fc-2-{width}", data, teacher_request(cfg), teacher_minima_config(cfg), params.runtime.device,
                     str(checkpoint.resolve()), params.runtime.progress, mnist_key(width))
    return Job(job_address(minima_job, "teachers", address, dataclasses.replace(spec, checkpoint=None, progress=False)), spec)


def _save_teachers(cfg: MNISTTeachersConfig, width: int, address: str, dataset: Dataset, provenance: dict,
                   output: dict, out: Path) -> dict:
    """teachers.pt, minima.json and the MLflow run of one width from its job's result."""
    key, model, result = mnist_key(width), f"fc-2-{width}", output["result"]
    with tracking.variant_run(key, data_source=dataset.source, params={"model": model, "H": width}):
        for record in result.history:
            tracking.log_metrics({f"train_loss_s{k}": v for k, v in enumerate(record["train_loss"])},
                                 step=record["epoch"])
        tracking.log_metrics({f"s{k}_{name}": getattr(result, name)[k]
                              for k in range(cfg.n_seeds) for name in ("train_acc", "test_acc", "train_loss")})
        layer_sizes = [int(np.prod(dataset.x_train.shape[1:])), width, width, dataset.n_classes]
        save_torch({"thetas": result.thetas, "layer_sizes": layer_sizes, "seeds": result.seeds,
                    "data_source": dataset.source, "address": address}, out / "teachers.pt")
        summary = {"variant": key, "H": width, "model": model, "layer_sizes": layer_sizes,
                   "data_source": dataset.source, "data_kind": dataset.source_kind, "data": provenance,
                   "n_train": len(dataset.y_train), **result.summary()}
        save_json({"address": address, "summary": summary}, out / "minima.json")
    return summary


def _minima_mnist(cfg: MNISTTeachersConfig, data: DataConfig, params: Params, out_root: Path, executor: Executor,
                  cache: JobCache) -> dict[int, dict]:
    """The teachers' summaries by width; the widths already trained with the same settings are skipped."""
    dataset = job_dataset(data, teacher_request(cfg))
    summaries, todo = {}, []
    for width in cfg.widths:
        address = _mnist_training_address(cfg, width, dataset.source)
        done = _done(out_root / mnist_key(width) / "minima.json", address)
        if done is not None:
            summaries[width] = done["summary"]
        else:
            todo.append((width, address))
    jobs = [_teacher_job(cfg, width, address, data, params, out_root / mnist_key(width)) for width, address in todo]
    outputs = executor.map(minima_job, jobs, cache=cache, description=f"{NAME} teachers",
                           progress=params.runtime.progress)
    for (width, address), output in zip(todo, outputs):
        summaries[width] = _save_teachers(cfg, width, address, dataset,
                                          job_provenance(data, teacher_request(cfg)).as_dict(), output,
                                          out_root / mnist_key(width))
    return summaries


def datasets(config) -> list[str]:
    """The datasets this experiment's stages read (checked by `losstopo validate`)."""
    return ["mnist"]  # the toy teacher needs no dataset


def run_minima(config: PermutationBarrierConfig, params: Params, root: Path = ARTIFACTS) -> None:
    """The toy teacher and the MNIST teachers of every width (all seeds of one width trained stacked)."""
    out_root = stage_dir(NAME, "minima", root)
    logged = {"data": as_dict(params.data), "toy": as_dict(config.toy), "mnist": as_dict(config.mnist)}
    with compute_stage(params, NAME, "minima", ["mnist"], logged, root,
                       keep=set(variant_keys(config))) as (data, executor, cache):
        toy = _minima_toy(config.toy, out_root / TOY_KEY)
        summary = {TOY_KEY: {"data_source": toy["data_source"]}}
        teachers = _minima_mnist(config.mnist, data, params, out_root, executor, cache)
        for width in config.mnist.widths:
            summary[mnist_key(width)] = {key: teachers[width][key] for key in
                                         ("H", "data_source", "train_acc", "test_acc", "train_loss", "n_train")}
        save_json(summary, out_root / "summary.json")


# ---------------------------------------------------------------- paths

def convergence_rule(cfg: ConvergenceConfig) -> Convergence:
    """params' convergence section as the library's rule (fields it lacks keep their defaults)."""
    known = {f.name for f in dataclasses.fields(Convergence)}
    return Convergence(**{k: v for k, v in as_dict(cfg).items() if k in known})


def path_record(path: PermutationPath) -> dict:
    """The numbers of one permutation path worth keeping (not its parameters)."""
    merge = path.merge
    return {"layer": merge.layer, "pair": [merge.l, merge.m], "losses": path.losses.tolist(),
            "distances": path.distances.tolist(), "permutation_index": path.permutation_index,
            "merge_points": len(merge.params), "iterations": merge.iterations, "converged": merge.converged,
            "barrier": float(path.losses.max()), "permutation_loss": float(path.losses[path.permutation_index])} | (
        {} if merge.final_half_loss is None else {"final_half_loss": merge.final_half_loss})


def accuracy_along(path: PermutationPath, inputs: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Classification accuracy (argmax of the outputs vs the true labels) at every point of the path."""
    with torch.no_grad():
        return [float((p.forward(inputs).argmax(dim=1) == labels).double().mean()) for p in path.params]


def active_fraction(params: MLPParams, layer: int, inputs: torch.Tensor) -> torch.Tensor:
    """(n_k,): the fraction of inputs on which each neuron of hidden layer k is active (pre-activation > 0).

    A pair of neurons dead on every input merges at no cost (barrier 0); the report counts such paths.
    """
    with torch.no_grad():
        h = inputs.flatten(1) if params.flatten_input else inputs
        for k in range(1, layer + 1):
            pre = torch.nn.functional.linear(h, params.weights[k - 1], params.biases[k - 1])
            h = torch.relu(pre)
        return (pre > 0).double().mean(dim=0)


@dataclass(frozen=True)
class ToyPathJob:
    """The permutation paths of pairs of the toy teacher's hidden neurons, descended together (teacher and
    inputs in ``shared``)."""

    pairs: tuple[tuple[int, int], ...]
    n_steps: int
    final_ratio: float
    rule: Convergence


def toy_path_job(shared: dict, job: ToyPathJob) -> list[dict]:
    """Each path's record, with the incoming vectors at the minimum and at the permutation point."""
    teacher = MLPParams.from_flat(shared["teacher"].clone(), tuple(shared["layer_sizes"]))
    inputs = shared["inputs"]
    with torch.no_grad():
        targets = teacher.forward(inputs)
    loss_fn = quadratic_loss(inputs, targets)  # the toy's plain quadratic loss (Fig. 2), shared by every pair
    paths = permutation_paths([teacher] * len(job.pairs), TOY_LAYER, list(job.pairs), loss_fn, job.n_steps,
                              job.final_ratio, job.rule)
    return [path_record(path) | {
        "start_vectors": incoming_vectors(teacher, TOY_LAYER).tolist(),
        "permutation_vectors": incoming_vectors(path.params[path.permutation_index], TOY_LAYER).tolist()}
        for path in paths]


def _paths_toy(config: PermutationBarrierConfig, minima: Path, out: Path, rule: Convergence, executor: Executor,
               cache: JobCache, progress: bool) -> None:
    cfg = config.toy
    saved = torch.load(minima / "teacher.pt", map_location="cpu", weights_only=True)  # the toy is faster on the CPU
    address = content_hash(PATH_CODE, saved["address"], cfg.n_steps, cfg.final_ratio, rule)
    if _done(out / "paths.json", address) is not None:
        return
    pairs = tuple(itertools.combinations(range(cfg.hidden), 2))
    spec = ToyPathJob(pairs, cfg.n_steps, cfg.final_ratio, rule)
    (records,) = executor.map(toy_path_job, [Job(job_address(toy_path_job, "toy-paths", address, spec), spec)],
                              shared={k: saved[k] for k in ("teacher", "layer_sizes", "inputs")}, cache=cache,
                              description=f"{NAME} toy paths", progress=progress, gpu=False)
    with tracking.variant_run(TOY_KEY, data_source=toy_source(cfg)):
        for (l, m), record in zip(pairs, records):
            tracking.log_metrics({f"barrier_{l}_{m}": record["barrier"],
                                  f"permutation_loss_{l}_{m}": record["permutation_loss"]})
        save_json({"address": address, "variant": TOY_KEY, "data_source": toy_source(cfg), "data": toy_data(cfg),
                   "paths": records}, out / "paths.json")


@dataclass(frozen=True)
class MnistPathJob:
    """The permutation paths of all teachers of width ``width`` (``shared[width]``: their stacked parameters),
    descended together: in each, the most cosine-similar pair of layer 2 merged."""

    width: int
    layer_sizes: tuple[int, ...]
    data: DataConfig
    request: DataRequest
    n_steps: int
    final_ratio: float
    rule: Convergence
    device: str
    whiten_ridge: float | None = None


def mnist_path_job(shared: dict[int, torch.Tensor], job: MnistPathJob) -> list[dict]:
    """Per teacher: the path's record (loss of §5 against the teacher's outputs, MNIST accuracy along it)
    and its permutation point (flat, on the CPU)."""
    device = resolve_device(job.device)
    dataset = job_dataset(job.data, job.request, device)
    inputs, labels = dataset.x_train.to(MNIST_DTYPE).flatten(1), dataset.y_train
    teachers = teachers_from_thetas(shared[job.width].to(device, MNIST_DTYPE), list(job.layer_sizes))
    loss_fn = own_outputs_loss(teachers, inputs, normalise=True)  # L of §5 against each teacher's outputs y
    pairs = [merge_candidates(teacher, MNIST_LAYER) for teacher in teachers]
    whitening = None if job.whiten_ridge is None else InputWhitening.fit(inputs, job.whiten_ridge)
    paths, half_budget = (permutation_paths(teachers, MNIST_LAYER, pairs, loss_fn, job.n_steps, job.final_ratio, rule,
                                            whitening=whitening)
                          for rule in (job.rule, halved(job.rule)))
    outputs = []
    for teacher, (l, m), path, check in zip(teachers, pairs, paths, half_budget):
        record = path_record(path) | {
            "half_budget_losses": check.losses.tolist(),
            "cosine_similarity": float(incoming_cosine_similarity(teacher, MNIST_LAYER)[l, m]),
            "active_fraction": active_fraction(teacher, MNIST_LAYER, inputs)[[l, m]].tolist(),
            "accuracy": accuracy_along(path, inputs, labels)}
        record["accuracy_drop"] = record["accuracy"][0] - record["accuracy"][path.permutation_index]
        record |= curvature_at(path.params[path.permutation_index].flat(), list(job.layer_sizes), loss_fn,
                               len(outputs))
        outputs.append({"record": record, "point": path.params[path.permutation_index].flat().cpu()})
    return outputs


def curvature_at(point: torch.Tensor, layer_sizes: list[int], loss_fn: QuadraticLoss, problem: int) -> dict:
    """Is the permutation point a saddle (section 4)? Extreme Hessian eigenvalues of the teacher's loss L
    there (Lanczos, :mod:`losstopo.hessian`) and the gradient norm (near 0 at a critical point)."""
    index = torch.tensor([problem], device=point.device)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return loss_fn(MLPParams.from_flat(theta.unsqueeze(0), tuple(layer_sizes), flatten_input=True), index)[0]

    eig = extreme_eigenvalues(loss, point.detach(), iterations=HESSIAN_ITERATIONS)
    return {"hessian_min_eigenvalue": eig.smallest, "hessian_max_eigenvalue": eig.largest,
            "gradient_norm_at_permutation_point": eig.gradient_norm, "saddle": eig.is_saddle}


def _mnist_path_job(cfg: MNISTTeachersConfig, width: int, address: str, saved: dict, data: DataConfig,
                    rule: Convergence, device: str) -> Job:
    spec = MnistPathJob(width, tuple(saved["layer_sizes"]), data, path_request(cfg), cfg.n_steps, cfg.final_ratio,
                        rule, device, cfg.whiten_ridge)
    return Job(job_address(mnist_path_job, "mnist-paths", address, spec, tensor_digest(saved["thetas"])), spec)


def _save_mnist_paths(width: int, address: str, saved: dict, outputs: list[dict], dataset: Dataset,
                      provenance: dict, minima: Path, out: Path) -> None:
    """paths.json, permutation_points.pt and the MLflow run of one width, in teacher order."""
    teacher_summary = load_json(minima / "minima.json")["summary"]
    records = []
    with tracking.variant_run(mnist_key(width), data_source=dataset.source):
        for k, output in enumerate(outputs):
            record = output["record"] | {"H": width, "seed": saved["seeds"][k],
                                         "teacher_train_acc": teacher_summary["train_acc"][k],
                                         "teacher_test_acc": teacher_summary["test_acc"][k]}
            records.append(record)
            tracking.log_metrics({f"barrier_s{k}": record["barrier"],
                                  f"permutation_loss_s{k}": record["permutation_loss"],
                                  f"accuracy_drop_s{k}": record["accuracy_drop"]})
        save_torch({"permutation_points": torch.stack([output["point"] for output in outputs]),
                    "layer_sizes": saved["layer_sizes"]}, out / "permutation_points.pt")
        save_json({"address": address, "variant": mnist_key(width), "data_source": dataset.source, "data": provenance,
                   "n_path_samples": len(dataset.y_train), "dtype": str(MNIST_DTYPE), "paths": records},
                  out / "paths.json")


def _paths_mnist(config: PermutationBarrierConfig, minima_root: Path, out_root: Path, data: DataConfig,
                 rule: Convergence, executor: Executor, cache: JobCache, params: Params) -> None:
    """One job per width (its teachers' paths descended together); a width already done with the same settings
    is skipped."""
    cfg = config.mnist
    rule = dataclasses.replace(rule, final_max_iter=cfg.final_max_iter)
    dataset = job_dataset(data, path_request(cfg))
    todo, shared, jobs = [], {}, []
    for width in cfg.widths:
        saved = torch.load(minima_root / mnist_key(width) / "teachers.pt", map_location="cpu", weights_only=True)
        address = content_hash(PATH_CODE, saved["address"], cfg.path_subset, cfg.n_steps, cfg.final_ratio, rule,
                               cfg.whiten_ridge, str(MNIST_DTYPE), dataset.source)
        if _done(out_root / mnist_key(width) / "paths.json", address) is None:
            todo.append((width, address, saved))
            shared[width] = saved["thetas"]
            jobs.append(_mnist_path_job(cfg, width, address, saved, data, rule, params.runtime.device))
    outputs = executor.map(mnist_path_job, jobs, shared=shared, cache=cache, description=f"{NAME} MNIST paths",
                           progress=params.runtime.progress)
    for (width, address, saved), mine in zip(todo, outputs):
        _save_mnist_paths(width, address, saved, mine, dataset, job_provenance(data, path_request(cfg)).as_dict(),
                          minima_root / mnist_key(width), out_root / mnist_key(width))


def run_paths(config: PermutationBarrierConfig, params: Params, root: Path = ARTIFACTS) -> None:
    """Toy: every pair of hidden neurons; MNIST: per teacher, the most cosine-similar pair of layer 2."""
    out_root, minima_root = stage_dir(NAME, "paths", root), stage_dir(NAME, "minima", root)
    rule = convergence_rule(config.convergence)
    logged = {"data": as_dict(params.data), "toy": as_dict(config.toy), "mnist": as_dict(config.mnist),
              "convergence": dataclasses.asdict(rule), "mnist_dtype": str(MNIST_DTYPE)}
    with compute_stage(params, NAME, "paths", ["mnist"], logged, root,
                       keep=set(variant_keys(config)), inputs=["minima"]) as (data, executor, cache):
        _paths_toy(config, minima_root / TOY_KEY, out_root / TOY_KEY, rule, executor, cache, params.runtime.progress)
        _paths_mnist(config, minima_root, out_root, data, rule, executor, cache, params)


# ---------------------------------------------------------------- topology: the numbers behind the claims

def monotone_rise(losses, permutation_index: int, tolerance: float = MONOTONE_TOLERANCE) -> bool:
    """True if the loss never goes down by more than ``tolerance`` x (max loss of the first half)
    between consecutive points from the minimum (index 0) up to the permutation point."""
    half = np.asarray(losses[:permutation_index + 1], float)
    scale = float(half.max()) if half.size else 0.0
    if scale <= 0:
        return True
    return bool(np.all(np.diff(half) >= -tolerance * scale))


def converged_fraction(record: dict) -> float:
    """The fraction of a path's descent steps that converged. MNIST (``half_budget_losses``): the path descended
    again with half the iterations per step, a step is converged when halving its budget moved its loss by at most
    MONOTONE_TOLERANCE x the path's barrier (the claims' resolution) -- measured on the quantity the claims use, since
    a slowly creeping descent meets a per-iteration rule long before its loss settles. Otherwise (the toy): the
    fraction of steps whose descent met the rule."""
    steps = range(1, record["merge_points"])
    if "half_budget_losses" in record:
        full, half = record["losses"], record["half_budget_losses"]
        return float(np.mean([abs(full[i] - half[i]) <= MONOTONE_TOLERANCE * record["barrier"] for i in steps]))
    return float(np.mean([record["converged"][i] for i in steps])) if len(steps) else 1.0


def moved_within(full: float, half: float, scale: float) -> bool:
    """Whether halving the descent budget moved a loss by at most MONOTONE_TOLERANCE x ``scale``."""
    return abs(full - half) <= MONOTONE_TOLERANCE * scale


def permutation_point_converged(record: dict) -> bool:
    """The permutation point's loss (where the saddle, accuracy and loss-at-saddle claims read) is converged: the
    second half of its own descent's budget (``final_half_loss``) moved it by at most MONOTONE_TOLERANCE of itself;
    without a final budget, halving the budget of every descent did; without a half-budget run, its descent met the
    rule."""
    index = record["permutation_index"]
    if "final_half_loss" in record:
        return moved_within(record["losses"][index], record["final_half_loss"], record["losses"][index])
    if "half_budget_losses" in record:
        return moved_within(record["losses"][index], record["half_budget_losses"][index], record["losses"][index])
    return bool(record["converged"][record["merge_points"] - 1])


def barrier_converged(record: dict) -> bool:
    """The path's maximum is converged: halving the budget moved it by at most MONOTONE_TOLERANCE of itself (without a
    half-budget run: the descent of the step where it lies met the rule)."""
    if "half_budget_losses" in record:
        return moved_within(max(record["losses"]), max(record["half_budget_losses"]), record["barrier"])
    return bool(record["converged"][int(np.argmax(record["losses"][:record["merge_points"]]))])


def summarise_path(record: dict) -> dict:
    """One path's barrier, monotone rise, where its maximum lies, and the curves of the merge."""
    index, merge = record["permutation_index"], record["merge_points"]
    out = {"pair": record["pair"], "barrier": record["barrier"], "permutation_loss": record["permutation_loss"],
           "monotone": monotone_rise(record["losses"], index),
           "barrier_at_permutation_point": record["permutation_loss"] >= (1 - MONOTONE_TOLERANCE) * record["barrier"],
           "converged_fraction": converged_fraction(record), "half_budget": "half_budget_losses" in record,
           "permutation_point_converged": permutation_point_converged(record),
           "barrier_converged": barrier_converged(record),
           "start_loss": record["losses"][0], "end_loss": record["losses"][-1],
           "curve_distances": record["distances"][:merge], "curve_losses": record["losses"][:merge]}
    if "accuracy" in record:
        out |= {"H": record["H"], "seed": record["seed"], "cosine_similarity": record["cosine_similarity"],
                "active_fraction": record["active_fraction"], "dead_pair": max(record["active_fraction"]) == 0.0,
                "accuracy_start": record["accuracy"][0], "accuracy_permutation": record["accuracy"][index],
                "accuracy_drop": record["accuracy_drop"],
                "accuracy_max_drop": record["accuracy"][0] - min(record["accuracy"]),
                "teacher_train_acc": record["teacher_train_acc"], "teacher_test_acc": record["teacher_test_acc"],
                "curve_accuracy": record["accuracy"][:merge],
                **{k: record.get(k) for k in ("hessian_min_eigenvalue", "hessian_max_eigenvalue",
                                              "gradient_norm_at_permutation_point", "saddle")}}
    else:
        out |= {"start_vectors": record["start_vectors"], "permutation_vectors": record["permutation_vectors"]}
    return out


def _std(values) -> float:
    """Sample standard deviation (ddof = 1); 0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise_widths(paths: list[dict], widths: list[int]) -> dict:
    per_width = {}
    for width in widths:
        rows = [p for p in paths if p["H"] == width]
        barriers = [p["barrier"] for p in rows]
        per_width[str(width)] = {
            "n_paths": len(rows), "barrier_mean": float(np.mean(barriers)), "barrier_std": _std(barriers),
            "permutation_loss_mean": float(np.mean([p["permutation_loss"] for p in rows])),
            "n_monotone": int(sum(p["monotone"] for p in rows)),
            "accuracy_drop_mean": float(np.mean([p["accuracy_drop"] for p in rows])),
            "teacher_train_acc_mean": float(np.mean([p["teacher_train_acc"] for p in rows])),
            "converged_fraction": float(np.mean([p["converged_fraction"] for p in rows])),
        }
    return per_width


def run_topology(config: PermutationBarrierConfig, params: Params, root: Path = ARTIFACTS) -> None:
    """summary.json (everything the report draws and tests) and topology_metrics.json (headline numbers)."""
    require_complete(NAME, "paths", root)
    paths_root = stage_dir(NAME, "paths", root)
    toy = load_json(paths_root / TOY_KEY / "paths.json")
    mnist_records = [load_json(paths_root / mnist_key(w) / "paths.json") for w in config.mnist.widths]
    mnist_paths = [summarise_path(r) for variant in mnist_records for r in variant["paths"]]
    drops_pp = [100 * p["accuracy_drop"] for p in mnist_paths]
    n_monotone = int(sum(p["monotone"] for p in mnist_paths))
    summary = {
        "profile": params.profile, "data_source": mnist_records[0]["data_source"], "toy_source": toy["data_source"],
        "data": mnist_records[0].get("data"), "toy_data": toy.get("data"),  # None: paths from before they were recorded
        "monotone_tolerance": MONOTONE_TOLERANCE, "accuracy_drop_threshold_pp": ACCURACY_DROP_THRESHOLD_PP,
        "settings": {"toy": as_dict(config.toy), "mnist": as_dict(config.mnist),
                     "convergence": as_dict(config.convergence), "mnist_dtype": mnist_records[0]["dtype"],
                     "n_path_samples": mnist_records[0]["n_path_samples"]},
        "toy": {"paths": [summarise_path(r) for r in toy["paths"]]},
        "mnist": {"paths": mnist_paths, "per_H": summarise_widths(mnist_paths, config.mnist.widths),
                  "n_paths": len(mnist_paths), "n_monotone": n_monotone,
                  "n_dead_pairs": int(sum(p["dead_pair"] for p in mnist_paths)),
                  "monotone_fraction": n_monotone / len(mnist_paths),
                  "accuracy_drop_mean_pp": float(np.mean(drops_pp)), "accuracy_drop_max_pp": float(np.max(drops_pp)),
                  "accuracy_drop_ci_pp": list(bootstrap_ci(drops_pp))},
    }
    metrics = {f"barrier_mean_H{w}": summary["mnist"]["per_H"][str(w)]["barrier_mean"] for w in config.mnist.widths}
    metrics |= {"monotone_fraction": summary["mnist"]["monotone_fraction"],
                "accuracy_drop_mean_pp": summary["mnist"]["accuracy_drop_mean_pp"],
                "accuracy_drop_max_pp": summary["mnist"]["accuracy_drop_max_pp"],
                "toy_barrier_min": min(p["barrier"] for p in summary["toy"]["paths"]),
                "toy_barrier_max": max(p["barrier"] for p in summary["toy"]["paths"])}
    out = stage_dir(NAME, "topology", root) / "summary.json"
    with tracking.stage_run(NAME, "topology", profile=params.profile, device="cpu",
                            params={"monotone_tolerance": MONOTONE_TOLERANCE,
                                    "accuracy_drop_threshold_pp": ACCURACY_DROP_THRESHOLD_PP}):
        save_json(summary, out)
        save_json(metrics, stage_dir(NAME, "topology_metrics.json", root))
        tracking.set_tags({"data_source": summary["data_source"]})
        tracking.log_metrics(metrics)
        tracking.log_artifact(out)


# ---------------------------------------------------------------- report

def _toy_panels(paths: list[dict]) -> list[dict]:
    """Up to three pairs as in Fig. 2 A-C: the lowest, a middle and the highest permutation-point loss."""
    ordered = sorted(paths, key=lambda p: p["permutation_loss"])
    picks = sorted({0, len(ordered) // 2, len(ordered) - 1})
    return [ordered[i] for i in picks]


def _claims(summary: dict) -> list[Claim]:
    """Unit: one teacher (its own training run and its own permutation path), 24 at the paper's design."""
    paths, source, profile = summary["mnist"]["paths"], summary["data_source"], summary["profile"]
    widths = [p["H"] for p in paths]
    barriers = [p["barrier"] for p in paths]
    per_h = summary["mnist"]["per_H"]
    n_paths = summary["mnist"]["n_paths"]
    barrier_test = trend_test(widths, barriers, "decreasing")
    monotone_test = binomial_test(summary["mnist"]["n_monotone"], n_paths)
    drops_pp = [100 * p["accuracy_drop"] for p in paths]
    threshold = summary["accuracy_drop_threshold_pp"]
    drop_test = below_threshold_test(drops_pp, threshold)
    low, high = summary["mnist"]["accuracy_drop_ci_pp"]
    permutation_losses = [p["permutation_loss"] for p in paths]
    point_test = trend_test(widths, permutation_losses, "decreasing")
    halving = all(p.get("half_budget") for p in paths)
    converged = float(np.mean([p["converged_fraction"] for p in paths]))
    steps = (f"{converged:.0%} of the descent steps converged (halving their iteration budget moved their loss by "
             f"<= {MONOTONE_TOLERANCE:g} x the path's barrier)" if halving
             else f"{converged:.0%} of the descent steps met the convergence rule")
    at_point = float(np.mean([p["permutation_point_converged"] for p in paths]))
    polished = summary["settings"]["mnist"].get("final_max_iter")
    point_words = (f"{at_point:.0%} of the permutation points converged (the second half of their own descent at "
                   f"d = 0, {polished // 2:,} of its {polished:,} L-BFGS iterations, moved their loss by <= "
                   f"{MONOTONE_TOLERANCE:g} of itself)" if polished else
                   f"{at_point:.0%} of the permutation points converged (halving every descent's budget moved their "
                   f"loss by <= {MONOTONE_TOLERANCE:g} of itself)" if halving
                   else f"{at_point:.0%} of the permutation points' descents met the convergence rule")
    at_barrier = float(np.mean([p["barrier_converged"] for p in paths]))
    barrier_words = (f"{at_barrier:.0%} of the path maxima converged (halving every descent's budget moved them by "
                     f"<= {MONOTONE_TOLERANCE:g} of themselves)" if halving
                     else f"{at_barrier:.0%} of the path maxima's descents met the convergence rule")
    claims = []
    if all(p.get("saddle") is not None for p in paths):
        n_saddles = sum(p["saddle"] for p in paths)
        eigenvalues = [p["hessian_min_eigenvalue"] for p in paths]
        claims.append(Claim(
            "The permutation point is a saddle (negative smallest Hessian eigenvalue) in most cases",
            "§4: permutation points are saddles, connected by 'saddle lines'", binomial_test(n_saddles, n_paths),
            source, profile, "teacher", at_point, binomial_null_rate(n_paths),
            f"each point a saddle with probability 1/2, independently, {NULL_DRAWS} draws",
            data=summary.get("data"),
            note=f"{point_words}; {n_saddles}/{n_paths} with a negative smallest eigenvalue beyond rounding ({HESSIAN_ITERATIONS} "
                 f"Lanczos steps on Hessian-vector products of L); smallest eigenvalues from {min(eigenvalues):.3g} to "
                 f"{max(eigenvalues):.3g}; gradient norm there up to "
                 f"{max(p['gradient_norm_at_permutation_point'] for p in paths):.3g}."))
    return claims + [
        Claim("The loss at the permutation point decreases with H",
              "§5, Fig. 3A: 'the barrier height (loss at saddle) decreased with the number H of hidden neurons'",
              point_test, source, profile, "teacher", at_point, trend_null_rate(widths),
              f"permutation-point losses i.i.d. over teachers (exchangeable across H) at this design, {NULL_DRAWS} draws",
              data=summary.get("data"),
              note=f"{point_words}; {len(paths)} paths; mean loss at the permutation point per H: "
                   + ", ".join(f"{h}: {v['permutation_loss_mean']:.3g}" for h, v in per_h.items())
                   + f"; Theil-Sen slope {theil_sen_slope(widths, permutation_losses):.3g} per neuron."),
        Claim("Barrier (max loss on the path) decreases with H", "§5, Fig. 3A: barrier height decreased with H",
              barrier_test, source, profile, "teacher", at_barrier, trend_null_rate(widths),
              f"barriers i.i.d. over teachers (exchangeable across H) at this design, {NULL_DRAWS} draws",
              data=summary.get("data"), note=f"{barrier_words}; {len(paths)} paths; mean barrier per H: "
                   + ", ".join(f"{h}: {v['barrier_mean']:.3g}" for h, v in per_h.items())
                   + f"; Theil-Sen slope {theil_sen_slope(widths, barriers):.3g} per neuron."),
        Claim("In most cases the loss rises monotonically up to the permutation point",
              "§5, Fig. 3A: 'in most cases the loss increased monotonically until the permutation point'",
              monotone_test, source, profile, "teacher", converged, binomial_null_rate(n_paths),
              f"each path monotone with probability 1/2, independently, {NULL_DRAWS} draws",
              data=summary.get("data"),
              note=f"{steps}; {summary['mnist']['n_monotone']}/{n_paths} paths; monotone = no step down by "
                   f"more than {summary['monotone_tolerance']:g} x the path's barrier"
                   + ("; the permutation point's own, longer descent ends below the unconverged steps just before "
                      "it, so the count compares unequal budgets until every step converges." if polished else ".")),
        Claim("Training accuracy drops only marginally at the permutation point",
              "§5, Fig. 3B: accuracy 'decreases only marginally'", drop_test, source, profile, "teacher",
              at_point, below_threshold_null_rate(len(drops_pp), threshold),
              f"drops symmetric about the {threshold:g} pp threshold (normal), {NULL_DRAWS} draws",
              data=summary.get("data"),
              note=f"{point_words}; drop in percentage points, threshold {threshold:g} pp (our reading of "
                   f"'marginal'); mean {summary['mnist']['accuracy_drop_mean_pp']:.3f} pp (95% bootstrap CI "
                   f"{low:.3f} to {high:.3f}), max {summary['mnist']['accuracy_drop_max_pp']:.3f} pp."),
    ]


def level_error(path: dict, rel_tol: float, abs_tol: float, window: float = LEVEL_WINDOW) -> float:
    """The measurement error of a toy pair's permutation-point loss: the range of its loss over the merge
    points with d <= window x the smallest positive d (d = 0 included), or the convergence rule's
    tolerance at that loss, whichever is larger."""
    distances, losses = np.asarray(path["curve_distances"], float), np.asarray(path["curve_losses"], float)
    positive = distances[1:][distances[1:] > 0]
    tail = losses[1:][distances[1:] <= window * positive.min()] if positive.size else losses[-1:]
    return max(float(np.ptp(tail)), rel_tol * abs(path["permutation_loss"]) + abs_tol)


def distinct_levels(values, resolution: float) -> int:
    """Groups of the sorted values split where consecutive values differ by more than ``resolution``."""
    return 1 + int(np.sum(np.diff(np.sort(np.asarray(values, float))) > resolution)) if len(values) else 0


def _toy_level_claim(summary: dict) -> Claim:
    """Fig. 2: the loss at the permutation point depends on the pair merged. Unit: one pair's descent (one
    teacher, as in Fig. 2); null: one level, each pair measured with its own descent's error."""
    paths, conv = summary["toy"]["paths"], summary["settings"]["convergence"]
    losses = [p["permutation_loss"] for p in paths]
    errors = [level_error(p, conv["rel_tol"], conv["abs_tol"]) for p in paths]
    result = homogeneity_test(losses, errors, LEVEL_RESOLUTION)
    converged = float(np.mean([p["converged_fraction"] for p in paths]))
    top = max(abs(v) for v in losses)
    sd = np.maximum(errors, LEVEL_RESOLUTION * top)
    spread = float(np.ptp(losses))
    # distribution-free: a range r under one level needs some |error_i| >= r/2 (Chebyshev, union over pairs)
    chebyshev = min(1.0, float(np.sum(4 * sd ** 2)) / spread ** 2) if spread > 0 else 1.0
    pairs = sorted(paths, key=lambda p: p["permutation_loss"])
    return Claim(
        "Toy: the loss at the permutation point differs between neuron pairs",
        "Fig. 2 and §4.2: the loss at the permutation point can be the same (A, B) or different (A, C) "
        "depending on the pair merged", result, summary["toy_source"], summary["profile"], "pair (its own descent)",
        converged, homogeneity_null_rate(errors, float(np.mean(losses)), LEVEL_RESOLUTION),
        f"all pairs' permutation-point losses equal, each measured with an independent Gaussian error of SD "
        f"max(its measured error, {LEVEL_RESOLUTION:g} x the highest loss), {NULL_DRAWS} draws",
        data=summary.get("toy_data"),
        note=f"{converged:.0%} of the toy's descent steps met the convergence rule; losses at the permutation "
             f"point from {pairs[0]['permutation_loss']:.4g} (pair {pairs[0]['pair'][0]}⇔{pairs[0]['pair'][1]}) to "
             f"{pairs[-1]['permutation_loss']:.4g} (pair {pairs[-1]['pair'][0]}⇔{pairs[-1]['pair'][1]}), "
             f"{distinct_levels(losses, LEVEL_RESOLUTION * top)} distinct levels at the resolution "
             f"{LEVEL_RESOLUTION:g} x the highest loss ({LEVEL_RESOLUTION * top:.2g}). A pair's error SD is the larger "
             f"of that resolution and its measured error: the range of its loss over the last {LEVEL_WINDOW:g}-fold "
             f"of distances before d = 0 (or the rule's tolerance), at most {max(errors):.2g}. The {len(paths)} "
             f"descents are separate problems, so their errors are independent; their true levels share one "
             f"teacher, which the null (one level) does not need. The test concerns this teacher's levels at these "
             f"path settings (a pair may land on another level at other settings: another minimum of the smaller "
             f"network), not teachers in general. The p-value assumes Gaussian errors; with only the error SDs "
             f"(Chebyshev over the pairs) p <= {chebyshev:.2g}.")


def report_section(config: PermutationBarrierConfig, figures: Path, root: Path = ARTIFACTS) -> Section:
    summary = load_json(stage_dir(NAME, "topology", root) / "summary.json")
    settings, toy_paths, mnist = summary["settings"], summary["toy"]["paths"], summary["mnist"]
    section = Section(TITLE)
    conv = settings["convergence"]
    section.add_text(
        f"Data: **{summary['data_source']}** (MNIST, {settings['n_path_samples']} training images for the path loss "
        f"and accuracy); toy: **{summary['toy_source']}**. Profile **{summary['profile']}**. "
        f"Distances: toy {settings['toy']['n_steps']}, MNIST {settings['mnist']['n_steps']} log-spaced steps down to "
        f"{settings['mnist']['final_ratio']:g} of the initial distance, then d = 0; at each step {conv['method']} "
        f"descent until |ΔL| <= {conv['rel_tol']:g}·|L| + {conv['abs_tol']:g} or |∇L| <= {conv['grad_tol']:g}, at most "
        f"{conv['max_iter']} iterations"
        + (f" (MNIST at d = 0, the permutation point: {settings['mnist']['final_max_iter']} in two halves without the "
           f"relative rule)" if settings["mnist"].get("final_max_iter") else "")
        + f". MNIST paths in {settings['mnist_dtype']}. The barrier is the maximum loss "
        f"along the whole path (start, merge, equalisation, mirrored half). *Converged steps* is the fraction of "
        f"distance steps whose descent met the rule within {conv['max_iter']} iterations (toy), or (MNIST) whose loss "
        f"moved by at most {MONOTONE_TOLERANCE:g} x the path's barrier when the whole path was descended again with "
        f"half the iterations per step (a descent that creeps meets a per-iteration rule long before its loss "
        f"settles): where it is low the points are not at their constrained minima, which inflates the barrier and "
        f"breaks monotone rises for lack of iterations, not of the landscape. Each claim is gated on what it reads: "
        f"the monotone rise on every step, the path maximum on the maximum, the saddle, the accuracy drop and the "
        f"loss at the permutation point on the permutation point (each within {MONOTONE_TOLERANCE:g} of itself "
        f"when the budgets are halved). "
        + (f"MNIST descents in whitened input coordinates (ridge {settings['mnist']['whiten_ridge']:g} x the mean "
           f"eigenvalue of the pixels' covariance): the same networks and losses, a better-conditioned descent."
           if settings["mnist"].get("whiten_ridge") else ""))

    panels = _toy_panels(toy_paths)
    section.add_figure(plots.neuron_configurations(
        {f"pair {p['pair'][0]}⇔{p['pair'][1]}, L = {p['permutation_loss']:.3g}":
         (np.asarray(p["start_vectors"])[:, :2], np.asarray(p["permutation_vectors"])[:, :2]) for p in panels},
        figures / "permutation_barrier_toy_configurations.png", "Toy: incoming weights W_i at the minimum and at "
        "the permutation point (Fig. 2, top)"), "Toy: hidden weight vectors at the minimum (blue) and at the "
        "permutation point (red) for three pairs (Fig. 2 top; biases not drawn)")
    section.add_figure(plots.curves_vs_distance(
        {f"{p['pair'][0]}⇔{p['pair'][1]}": [(p["curve_distances"], p["curve_losses"])] for p in toy_paths},
        figures / "permutation_barrier_toy_loss.png", "Toy: loss along the merge, every pair (Fig. 2, bottom)",
        "quadratic loss L"), "Toy: loss vs distance of the merged neurons, all pairs (Fig. 2 bottom; d = 0 not drawn)")
    section.add_table(["pair", "barrier", "loss at permutation point", "monotone rise", "converged steps"],
                      [[f"{p['pair'][0]}⇔{p['pair'][1]}", f"{p['barrier']:.4g}", f"{p['permutation_loss']:.4g}",
                        "yes" if p["monotone"] else "no", f"{p['converged_fraction']:.0%}"] for p in toy_paths])

    by_width = {f"H = {h}": [p for p in mnist["paths"] if p["H"] == int(h)] for h in mnist["per_H"]}
    section.add_figure(plots.curves_vs_distance(
        {name: [(p["curve_distances"], p["curve_losses"]) for p in rows] for name, rows in by_width.items()},
        figures / "permutation_barrier_mnist_loss.png", "MNIST: student loss along the merge (Fig. 3A)",
        "L = <|y - f|²> / <y²>"), "MNIST: loss vs distance, one curve per teacher (Fig. 3A; d = 0 not drawn)")
    section.add_figure(plots.curves_vs_distance(
        {name: [(p["curve_distances"], p["curve_accuracy"]) for p in rows] for name, rows in by_width.items()},
        figures / "permutation_barrier_mnist_accuracy.png", "MNIST: training accuracy along the merge (Fig. 3B)",
        "training accuracy"), "MNIST: training accuracy vs distance, one curve per teacher (Fig. 3B)")
    widths = [int(h) for h in mnist["per_H"]]
    section.add_figure(plots.trend(
        {"MNIST": (widths, [v["barrier_mean"] for v in mnist["per_H"].values()])},
        figures / "permutation_barrier_barrier_vs_H.png", "Barrier vs H, mean ± std", "H (neurons per hidden layer)",
        "barrier", errors={"MNIST": [v["barrier_std"] for v in mnist["per_H"].values()]}),
        "Barrier vs hidden width H, mean ± sample std over teachers")
    section.add_table(
        ["H", "teachers", "teacher train acc", "barrier (mean ± std)", "loss at permutation point", "monotone rise",
         "accuracy drop (pp, mean)", "converged steps"],
        [[h, v["n_paths"], f"{v['teacher_train_acc_mean']:.4f}", f"{v['barrier_mean']:.3g} ± {v['barrier_std']:.2g}",
          f"{v['permutation_loss_mean']:.3g}", f"{v['n_monotone']}/{v['n_paths']}",
          f"{100 * v['accuracy_drop_mean']:.3f}", f"{v['converged_fraction']:.0%}"] for h, v in mnist["per_H"].items()])
    if mnist.get("n_dead_pairs"):
        section.add_text(f"{mnist['n_dead_pairs']} of {mnist['n_paths']} merged pairs (the most cosine-similar of "
                         "layer 2) were inactive on every path input: their merge costs nothing (barrier 0).")
    for claim in _claims(summary) + [_toy_level_claim(summary)]:
        section.add_claim(claim)
    return section


EXPERIMENT = Experiment(NAME, PermutationBarrierConfig, datasets,
                        {"minima": run_minima, "paths": run_paths, "topology": run_topology},
                        report_section)
