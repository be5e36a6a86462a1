"""Stage paths: the permutation paths (sections 4.1-4.3, 5), as jobs: every pair of the toy teacher's hidden
neurons, and per MNIST teacher its most cosine-similar pair of layer 2 (with the accuracy along the path and the
curvature at the permutation point); then each variant's record."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.permutation_barrier.schema import ConvergenceConfig, MNISTTeachersConfig, PermutationBarrierConfig
from benchmarks.permutation_barrier.teachers import own_outputs_loss, teachers_from_thetas
from benchmarks.permutation_barrier.variants import (MNIST_DTYPE, MNIST_LAYER, NAME, TOY_KEY, TOY_LAYER, mnist_key,
                                                     path_request, saved_record, toy_data, toy_source, variant_keys)
from losstopo import tracking
from losstopo.codeversion import module_version
from losstopo.config import DataConfig, Params, as_dict, content_hash
from losstopo.data import Dataset
from losstopo.descent import halved
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.hessian import extreme_eigenvalues
from losstopo.io import load_json, save_json, save_torch, tensor_digest
from losstopo.job_data import DataRequest, job_dataset, job_provenance
from losstopo.path_maximum import certify_maxima
from losstopo.permutation import (Convergence, InputWhitening, MLPParams, PermutationPath, QuadraticLoss,
                                  incoming_cosine_similarity, incoming_vectors, merge_candidates, permutation_paths,
                                  quadratic_loss)
from losstopo.stage_frame import ARTIFACTS, compute_stage, resolve_device, stage_dir

# in path addresses
PATH_CODE = module_version("losstopo.permutation", "losstopo.descent", "losstopo.hessian", "losstopo.path_maximum")
HESSIAN_ITERATIONS = 60  # Lanczos steps for the extreme eigenvalues at each permutation point


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
    if saved_record(out / "paths.json", address) is not None:
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
    refine_budget: int | None = None  # certify each path's maximum (losstopo.path_maximum); None: not refined
    max_refinements: int = 10
    half_budget: bool = False  # only the convergence check: the same paths descended at half the budget


def mnist_path_job(shared: dict[int, torch.Tensor], job: MnistPathJob) -> list[dict]:
    """Per teacher: the path's record (loss of §5 against the teacher's outputs, MNIST accuracy along it)
    and its permutation point (flat, on the CPU); with ``job.half_budget``, only the losses of the same path
    descended at half the budget (:func:`losstopo.descent.halved`), which measure its convergence. The two are
    separate jobs, so that neither waits for the other and an interrupted stage loses less (each resumes inside:
    its descents save their state in the job's scratch, losstopo.resume)."""
    device = resolve_device(job.device)
    dataset = job_dataset(job.data, job.request, device)
    inputs, labels = dataset.x_train.to(MNIST_DTYPE).flatten(1), dataset.y_train
    teachers = teachers_from_thetas(shared[job.width].to(device, MNIST_DTYPE), list(job.layer_sizes))
    loss_fn = own_outputs_loss(teachers, inputs, normalise=True)  # L of §5 against each teacher's outputs y
    pairs = [merge_candidates(teacher, MNIST_LAYER) for teacher in teachers]
    whitening = None if job.whiten_ridge is None else InputWhitening.fit(inputs, job.whiten_ridge)
    rule = halved(job.rule) if job.half_budget else job.rule
    paths = permutation_paths(teachers, MNIST_LAYER, pairs, loss_fn, job.n_steps, job.final_ratio, rule,
                              whitening=whitening)
    if job.half_budget:
        return [{"half_budget_losses": path.losses.tolist()} for path in paths]
    maxima = ([None] * len(paths) if job.refine_budget is None else
              certify_maxima([path.merge for path in paths], loss_fn, job.refine_budget, job.rule,
                             job.max_refinements, whitening=whitening))
    outputs = []
    for teacher, (l, m), path, maximum in zip(teachers, pairs, paths, maxima):
        record = path_record(path) | ({} if maximum is None else maximum.record()) | {
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


def _mnist_path_jobs(cfg: MNISTTeachersConfig, width: int, address: str, saved: dict, data: DataConfig,
                     rule: Convergence, device: str) -> list[Job]:
    """One width's two jobs: its paths, and the same paths at half the budget."""
    spec = MnistPathJob(width, tuple(saved["layer_sizes"]), data, path_request(cfg), cfg.n_steps, cfg.final_ratio,
                        rule, device, cfg.whiten_ridge, cfg.refine_budget, cfg.max_refinements)
    return [Job(job_address(mnist_path_job, "mnist-paths", address, job, tensor_digest(saved["thetas"])), job)
            for job in (spec, dataclasses.replace(spec, half_budget=True))]


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


def width_rule(cfg: MNISTTeachersConfig, rule: Convergence, width: int) -> Convergence:
    """The descent rule of width ``width``'s paths: ``rule`` with that width's budget at d = 0."""
    return dataclasses.replace(rule, final_max_iter=cfg.final_budget(width))


def mnist_paths_address(cfg: MNISTTeachersConfig, rule: Convergence, teachers_address: str, source: str) -> str:
    """The address of one width's paths: its teachers and every setting its descent reads (``rule`` already
    that width's, :func:`width_rule`), so that a setting of another width leaves it valid."""
    return content_hash(PATH_CODE, teachers_address, cfg.path_subset, cfg.n_steps, cfg.final_ratio, rule,
                        cfg.whiten_ridge, str(MNIST_DTYPE), source,
                        *(() if cfg.refine_budget is None else (cfg.refine_budget, cfg.max_refinements)))


def _paths_mnist(config: PermutationBarrierConfig, minima_root: Path, out_root: Path, data: DataConfig,
                 rule: Convergence, executor: Executor, cache: JobCache, params: Params) -> None:
    """Two jobs per width (its teachers' paths descended together, and the same at half the budget), the widest
    first (the longest jobs start first when workers share them); a width already done with the same settings is
    skipped."""
    cfg = config.mnist
    dataset = job_dataset(data, path_request(cfg))
    todo, shared, jobs = [], {}, []
    for width in sorted(cfg.widths, reverse=True):
        rule_at_width = width_rule(cfg, rule, width)
        saved = torch.load(minima_root / mnist_key(width) / "teachers.pt", map_location="cpu", weights_only=True)
        address = mnist_paths_address(cfg, rule_at_width, saved["address"], dataset.source)
        if saved_record(out_root / mnist_key(width) / "paths.json", address) is None:
            todo.append((width, address, saved))
            shared[width] = saved["thetas"]
            jobs += _mnist_path_jobs(cfg, width, address, saved, data, rule_at_width, params.runtime.device)
    outputs = executor.map(mnist_path_job, jobs, shared=shared, cache=cache, description=f"{NAME} MNIST paths",
                           progress=params.runtime.progress)
    for (width, address, saved), paths, half_budget in zip(todo, outputs[::2], outputs[1::2]):
        mine = [path | {"record": path["record"] | check} for path, check in zip(paths, half_budget)]
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
