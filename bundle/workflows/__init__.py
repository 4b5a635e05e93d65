"""Workflow components named by the bundle configs: sampler, dataset, batch preparation, handlers."""

from bundle.mri import zero_filled_image

from .batch import META_KEYS, PackReconSampled, PrepareReconBatch
from .checkpoint import (
    AtomicCheckpointSaver,
    BestModelSaver,
    EpochModelSaver,
    ResumeFromCheckpoint,
    RNGState,
    TrainerScaler,
    atomic_torch_save,
    checkpoint_state,
    checkpoints_newest_first,
    latest_checkpoint,
    newest_readable_checkpoint,
    save_model,
    unwrap_model,
)
from .dataset import ReconDataset, find_data_error
from .distributed import barrier, finish_distributed, init_distributed, is_main_process, settle_memory_format
from .eval_report import EvalReportWriter
from .handlers import (
    BadDataReport,
    NonFiniteLossError,
    SamplerEpochHandler,
    SkippedDataError,
    StepGuard,
    TrainingScalars,
    is_stepping_iteration,
    log_every,
)
from .inference import ReconstructionWriter
from .precision import AutocastInferer, Precision, cpu_has_native_bf16, resolve_precision
from .runstate import MANIFEST_NAME, RunState, check_writable
from .sampler import HYPERCMR_GROUP_ORDER, ShapeGroupBatchSampler, group_batches
from .setup import (
    configure_cudnn,
    inference_datalist,
    keep_freed_memory,
    prepare_dataset,
    resolve_metric_release,
    worker_init,
)
from .sharding import ShardProgress, balanced_split, gather_inference, is_sharded, rank_device, shard_files
from .ssdu_validation import EarlyStopOnMetric, HeldOutLinesMetric, ReferenceImageMetric, lower_is_better
from .tb_images import ReconImageWriter
from .validation import ChallengeMetric, MetricsTableWriter, select_ranking_items, validation_items

__all__ = [
    "validation_items",
    "checkpoint_state",
    "resolve_metric_release",
    "META_KEYS",
    "PackReconSampled",
    "PrepareReconBatch",
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "EpochModelSaver",
    "ResumeFromCheckpoint",
    "RNGState",
    "TrainerScaler",
    "atomic_torch_save",
    "latest_checkpoint",
    "newest_readable_checkpoint",
    "checkpoints_newest_first",
    "save_model",
    "unwrap_model",
    "ReconDataset",
    "find_data_error",
    "barrier",
    "finish_distributed",
    "init_distributed",
    "is_main_process",
    "settle_memory_format",
    "BadDataReport",
    "NonFiniteLossError",
    "SamplerEpochHandler",
    "SkippedDataError",
    "StepGuard",
    "TrainingScalars",
    "is_stepping_iteration",
    "log_every",
    "ReconstructionWriter",
    "AutocastInferer",
    "Precision",
    "cpu_has_native_bf16",
    "resolve_precision",
    "EvalReportWriter",
    "prepare_dataset",
    "configure_cudnn",
    "worker_init",
    "keep_freed_memory",
    "MANIFEST_NAME",
    "RunState",
    "check_writable",
    "inference_datalist",
    "ShardProgress",
    "balanced_split",
    "gather_inference",
    "is_sharded",
    "rank_device",
    "shard_files",
    "HYPERCMR_GROUP_ORDER",
    "ShapeGroupBatchSampler",
    "group_batches",
    "ChallengeMetric",
    "HeldOutLinesMetric",
    "EarlyStopOnMetric",
    "ReferenceImageMetric",
    "lower_is_better",
    "MetricsTableWriter",
    "ReconImageWriter",
    "select_ranking_items",
    "zero_filled_image",
]
