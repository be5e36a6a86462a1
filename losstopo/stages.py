"""What the older experiment modules import from here: the stage modules' names, until those modules import them
from where they live (stage_frame, job_data, minima_stage, paths_stage, topology_stage)."""

from losstopo.job_data import DataRequest, job_dataset, job_provenance
from losstopo.minima_stage import TRAINING_CODE, MinimaJob, MinimaTask, Variant, minima_job, train_variants
from losstopo.paths_stage import pair_chunks, tensor_digest
from losstopo.stage_frame import ARTIFACTS, compute_stage, prune, require_complete, resolve_device, stage_dir
from losstopo.topology_stage import path_max_matrix

__all__ = ["ARTIFACTS", "TRAINING_CODE", "DataRequest", "MinimaJob", "MinimaTask", "Variant", "compute_stage",
           "job_dataset", "job_provenance", "minima_job", "pair_chunks", "path_max_matrix", "prune", "require_complete",
           "resolve_device", "stage_dir", "tensor_digest", "train_variants"]
