"""Stage 1: the minima of every study, a stack trained with SGD and the Garipov schedule (Tables 6, 7)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.wrn_robustness.schema import WRNRobustnessConfig
from benchmarks.wrn_robustness.study import NAME, datasets, study_config
from losstopo.config import Params, as_dict
from losstopo.job_data import DataRequest
from losstopo.minima_stage import MinimaTask, Variant, train_variants
from losstopo.stage_frame import ARTIFACTS, compute_stage, stage_dir


def run_minima(config: WRNRobustnessConfig, params: Params, root: Path = ARTIFACTS) -> None:
    out_root = stage_dir(NAME, "minima", root)
    stage_params = {"data": as_dict(params.data),
                    **{s: {"dataset": study_config(config, s).dataset, "model": study_config(config, s).model,
                           "minima": as_dict(study_config(config, s).minima)} for s in config.studies}}
    with compute_stage(params, NAME, "minima", datasets(config), stage_params, root,
                       keep=set(config.studies)) as (data, executor, cache):
        tasks = []
        for study in config.studies:
            sc = study_config(config, study)
            cfg = sc.minima
            tasks.append(MinimaTask(Variant(study, sc.dataset, sc.model),
                                    DataRequest(sc.dataset, cfg.train_subset, cfg.test_subset, cfg.seed), cfg,
                                    out_root / study,
                                    extra={"study": study, "max_epochs": cfg.max_epochs, "batch_size": cfg.batch_size,
                                           "lr": cfg.lr_max, "weight_decay": cfg.weight_decay,
                                           "augment": cfg.augment, "profile": params.profile}))
        train_variants(tasks, params, data, executor, cache, f"{NAME} minima")
