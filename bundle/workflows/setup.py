"""Run set-up helpers called from the configs."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from bundle.data import make_demo_dataset
from bundle.data.checks import check_file
from bundle.data.formats import is_raw_data_path
from bundle.data.index import assign_groups, build_items, detect_layout, scan_dataset
from bundle.data.raw_index import RAW_SPLIT, is_raw_folder
from bundle.errors import CMRDataError, EmptyDatasetError
from bundle.metrics import METRIC_CHOICES
from bundle.workflows.sharding import is_sharded, progress, shard_files

__all__ = [
    "prepare_dataset",
    "inference_datalist",
    "configure_cudnn",
    "worker_init",
    "resolve_metric_release",
]

logger = logging.getLogger(__name__)


def _has_mat_files(root: Path) -> bool:
    """Whether ``root`` holds k-space files: CMRxRecon ``.mat`` files, or scanner raw data (ISMRMRD)."""
    return root.is_dir() and (any(root.rglob("*.mat")) or is_raw_folder(root))


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    demo_dir: str | os.PathLike | None = None,
    demo_size: str | float = "small",
    demo_seed: int = 0,
) -> str:
    """Return ``dataset_dir``, generating the synthetic demo tree there first if it is the demo path and empty.

    A real dataset path is never written to: when it holds no ``.mat`` files this raises
    :class:`~bundle.errors.EmptyDatasetError` instead.
    """
    root = Path(dataset_dir)
    if _has_mat_files(root):
        return str(root)
    is_demo = demo_dir is not None and root.resolve() == Path(demo_dir).resolve()
    if not is_demo:
        if not root.is_dir():
            raise EmptyDatasetError.at(
                root, "the dataset folder does not exist; point dataset_dir at a CMRxRecon2023 or 2024 download"
            )
        raise EmptyDatasetError.at(root, "no .mat files found; point dataset_dir at a CMRxRecon2023 or 2024 download")
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    # Under DDP only rank 0 writes the tree; the other ranks wait for it.
    if not distributed or dist.get_rank() == 0:
        logger.warning("demo dataset not found at %s: generating it now (size=%s, seed=%s)", root, demo_size, demo_seed)
        make_demo_dataset(root, seed=demo_seed, size=demo_size)
    if distributed:
        dist.barrier()
    return str(root)


def inference_datalist(
    dataset_dir: str | os.PathLike,
    report=None,
    modalities=None,
    check_values: bool = True,
    splits=("ValidationSet", "TestSet"),
    skip=None,
    tasks=None,
    shard: bool = False,
    raw_data=None,
) -> list[dict]:
    """Slice items of every undersampled file under ``dataset_dir`` that passes validation.

    ``splits`` names the set folders to reconstruct (CMRxRecon2023 trees also hold undersampled TrainingSet
    files); ``None`` takes every undersampled file. ``skip(path) -> bool`` leaves out files before they are
    checked, e.g. :meth:`~bundle.workflows.inference.ReconstructionWriter.is_done` to resume an interrupted run;
    the number left out is logged, and an empty list is returned when nothing is left to do. ``tasks`` keeps the
    CMRxRecon2025 task trees named (``['TaskR1']``; ``None``: every tree under ``dataset_dir``).

    ``shard`` (torchrun, ``configs/multi_gpu_inference.yaml``): after ``skip``, keep only this rank's share of the
    files (:func:`bundle.workflows.sharding.shard_files`, balanced by size) and check only those; a rank left
    with nothing to do returns an empty list. A no-op in a single process.

    Each file is checked first (:func:`bundle.data.checks.check_file`): a bad file is logged, recorded in
    ``report`` (a :class:`~bundle.workflows.handlers.BadDataReport`) and left out, so the others are still
    reconstructed and the run can exit non-zero at the end.
    """

    def reject(message: str) -> None:
        logger.error("skipping %s", message)
        if report is None:
            raise CMRDataError(message)
        report.record(message)

    def on_scan_error(err) -> None:
        # Only undersampled inputs matter here (2024: UnderSample_Task*, 2023: AccFactor*); a broken
        # fully sampled training file is not this run's problem.
        where = str(getattr(err, "path", "") or err)
        if "UnderSample_Task" in where or "AccFactor" in where or is_raw_data_path(where):
            reject(str(err))

    records = scan_dataset(dataset_dir, modalities=modalities, on_error=on_scan_error, tasks=tasks, raw_data=raw_data)
    # Scanner raw data: every file is reconstructed from the lines it holds, fully sampled ones too.
    records = [dataclasses.replace(r, kind="undersampled") if r.split == RAW_SPLIT else r for r in records]
    todo, good, done = [], [], 0
    for record in records:
        if record.kind != "undersampled" or (splits is not None and record.split not in (*splits, RAW_SPLIT)):
            continue
        if skip is not None and skip(record.source):
            done += 1
            continue
        todo.append(record)
    sharded = bool(shard) and is_sharded() and bool(todo)  # nothing at all to do: as in one process
    if sharded:
        mine = set(shard_files([str(r.path) for r in todo]))
        todo = [r for r in todo if str(r.path) in mine]
    for record in todo:
        # A missing mask file is not fatal: the loader infers the mask from the zero-filled k-space lines.
        problems = [p for p in check_file(record, check_values=check_values) if p.kind != "missing_mask"]
        if problems:
            where = lambda p: "" if p.z is None else f" (z={p.z}, t={p.t})"  # noqa: E731
            reject(f"{record.path}: " + "; ".join(f"{p.message}{where(p)}" for p in problems))
            continue
        good.append(record)
    if sharded:
        progress().start(len(good))
    if done:
        logger.warning(
            "skipping %d file(s) whose outputs all exist already (--skip_existing false redoes them); %d to do",
            done,
            len(good),
        )
        if not good:
            return []
    if sharded and not good:  # this rank's files are all bad, or it got none; the others still run
        return []
    if not good:
        raise EmptyDatasetError.at(
            dataset_dir, "no usable undersampled files (UnderSample_Task* or AccFactor*) to reconstruct"
        )
    return build_items(assign_groups(good), exclude=(), trims={})


def resolve_metric_release(metric_release: str | int, dataset_dir: str | os.PathLike) -> str:
    """The metric to score with: ``metric_release`` itself (``'max'``, ``'2023'``, ``'2024'``, ``'2025'``), or for
    ``'auto'`` the release of the tree under ``dataset_dir`` (:func:`bundle.data.index.detect_layout`), so that
    numbers on 2024 and 2025 data compare with their leaderboards."""

    value = str(metric_release)
    if value == "auto":
        value = detect_layout(dataset_dir)
        if value not in METRIC_CHOICES:  # scanner raw data belongs to no challenge: the paper's per-image max rule
            logger.info("scoring %s (%s data) with the per-image max normalisation", dataset_dir, value)
            return "max"
        logger.info("scoring with the official CMRxRecon%s metric (the release of %s)", value, dataset_dir)
    if value not in METRIC_CHOICES:
        raise ValueError(f"metric_release must be 'auto' or one of {', '.join(METRIC_CHOICES)}, got {metric_release!r}")
    return value


def configure_cudnn(deterministic: bool = False) -> bool:
    """cuDNN autotuning on CUDA unless ``deterministic``; returns whether it is on.

    MONAI's ``set_determinism`` turns autotuning off and deterministic algorithms on, which costs speed on every
    convolution shape; with fixed shape groups the autotuner's one-time search pays off within a few batches.
    """
    import torch

    benchmark = torch.cuda.is_available() and not deterministic
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = bool(deterministic)
    if torch.cuda.is_available():
        logger.info("cuDNN autotuning %s (deterministic=%s)", "on" if benchmark else "off", deterministic)
    return benchmark


_THREAD_LIMITS = []  # keeps the BLAS limit of a DataLoader worker alive for the worker's lifetime


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` reuse freed memory instead of returning it to the kernel (``mallopt``).

    A 512×246 item allocates several 10–50 MB arrays. glibc serves each of those with a fresh ``mmap`` whose
    pages the kernel faults in and zeroes on first touch, and ``munmap``s it when freed: for the loader's slab
    read that costs three times the read itself. With mmap off and trimming off, a worker's heap settles at
    its peak and every later item reuses it. Returns False where ``mallopt`` is missing (not glibc).
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_max = -1, -4
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch and one BLAS thread per worker, freed memory kept for reuse
    (:func:`keep_freed_memory`), then MONAI's worker seeding.

    Workers are processes of their own; each inheriting the main process's thread count oversubscribes the cores.
    """
    import torch
    from monai.data.utils import worker_init_fn
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    _THREAD_LIMITS.append(threadpool_limits(limits=1))
    keep_freed_memory()
    worker_init_fn(worker_id)
