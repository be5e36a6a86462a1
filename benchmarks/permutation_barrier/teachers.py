"""Stage minima: the toy teacher (Fig. 2), drawn, and the MNIST teachers of every width (Fig. 3), trained (all
seeds of one width stacked in one job); and the teachers as the library's MLPs with their own quadratic loss."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from benchmarks.permutation_barrier.schema import MNISTTeachersConfig, PermutationBarrierConfig, ToyConfig
from benchmarks.permutation_barrier.variants import (NAME, TEACHER_SEED, TOY_DTYPE, TOY_KEY, TOY_LAYER, mnist_key,
                                                     saved_record, teacher_request, toy_data, toy_source,
                                                     variant_keys)
from losstopo import tracking
from losstopo.codeversion import module_version
from losstopo.config import DataConfig, MinimaConfig, Params, as_dict, content_hash
from losstopo.data import Dataset
from losstopo.executor import Executor, Job, JobCache, job_address
from losstopo.io import save_json, save_torch
from losstopo.job_data import job_dataset, job_provenance
from losstopo.minima_stage import TRAINING_CODE, MinimaJob, minima_job
from losstopo.permutation import MLPParams, QuadraticLoss, incoming_vectors, quadratic_loss
from losstopo.stage_frame import ARTIFACTS, compute_stage, stage_dir


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


def _mnist_training_address(cfg: MNISTTeachersConfig, width: int, source: str) -> str:
    training = {k: getattr(cfg, k) for k in ("n_seeds", "epochs", "lr", "batch_size", "train_subset")}
    return content_hash(TRAINING_CODE, "fc-2", width, TEACHER_SEED, training, source)


def _minima_toy(cfg: ToyConfig, out: Path) -> dict:
    address = content_hash(module_version("losstopo.permutation"), "toy-teacher-v1", cfg.n_inputs, cfg.hidden, cfg.seed)
    done = saved_record(out / "minima.json", address)
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
        done = saved_record(out_root / mnist_key(width) / "minima.json", address)
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
