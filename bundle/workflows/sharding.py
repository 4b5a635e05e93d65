"""Sharded inference and evaluation under torchrun: which rank does which file, one progress bar, one report.

``configs/multi_gpu_inference.yaml`` switches these on; in a single process (no process group, or a world of
one) every function here is a no-op and the workflows behave as without the overlay.

* **Inference** splits the *files* to reconstruct: :func:`balanced_split` assigns them by size (largest first,
  each to the rank with the fewest bytes so far, ties by path and rank), so that the ranks finish together and
  each file is read, reconstructed and written by exactly one rank. A file's slices are batched exactly as in
  one process (the sampler runs locally on the rank's files), so every output is bit-identical.
* **Evaluation** keeps the shape-group sampler's own sharding of *batches* (the batches are those of one
  process, dealt round-robin; :class:`~bundle.workflows.ChallengeMetric` gathers and de-duplicates the rows), so
  ``metrics.json`` is that of one process.
* At the end :func:`gather_inference` (inference) and :meth:`BadDataReport.gather` (both) collect the per-rank
  results: rank 0 writes ``report.html``, ``skipped_files.json`` and the summary, and every rank ends with the
  same exit status.
* :class:`ShardProgress` draws one bar on rank 0 that counts the files of all ranks (files done / total and
  slices per second), through the job's key-value store (:func:`~bundle.workflows.distributed.rank_store`).
* Every wait on the other ranks (the split, the end of the work, the gathers) gives up after ``dist_timeout_s``,
  or as soon as a missing rank stops its heartbeat, naming that rank (:mod:`bundle.workflows.liveness`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from bundle.workflows.distributed import barrier, gather_objects, init_distributed, rank_store

__all__ = [
    "balanced_split",
    "is_sharded",
    "world_and_rank",
    "rank_device",
    "rank_note",
    "shard_files",
    "ShardProgress",
    "progress",
    "gather_inference",
    "gather_objects",
]

logger = logging.getLogger(__name__)


def world_and_rank() -> tuple[int, int]:
    """``(world size, global rank)`` of the process group, ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def is_sharded() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return world_and_rank()[0] > 1


def rank_note() -> str:
    """``" (rank r)"`` under torchrun with several ranks, else ``""``: appended to per-file log lines."""
    world, rank = world_and_rank()
    return f" (rank {rank})" if world > 1 else ""


def rank_device(timeout_s: float | None = None) -> torch.device:
    """Join torchrun's process group (when ``WORLD_SIZE`` is set) and return this rank's device.

    ``cuda:<LOCAL_RANK>`` on GPUs (the rank's index on its node, not its global rank), else the CPU. The overlay
    sets ``device`` to this, so the process group exists before the datalist and the sampler are built.
    ``timeout_s``: ``dist_timeout_s``, see :func:`~bundle.workflows.distributed.init_distributed`.
    """
    init_distributed(timeout_s=timeout_s)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def balanced_split(sizes: Sequence[tuple[str, int]], world: int) -> list[list[str]]:
    """Deal ``(name, size)`` entries to ``world`` ranks so that their total sizes are close.

    Largest first, each to the rank with the smallest total so far (ties: the lower rank); equal sizes go in
    name order. A pure function of its input, so every rank computes the same split without communication.
    Returns, per rank, its names in name order.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    names = [name for name, _ in sizes]
    if len(set(names)) != len(names):
        raise ValueError("balanced_split: duplicate names")
    loads = [0] * world
    shards: list[list[str]] = [[] for _ in range(world)]
    for name, size in sorted(sizes, key=lambda entry: (-int(entry[1]), entry[0])):
        rank = min(range(world), key=lambda r: (loads[r], r))
        shards[rank].append(name)
        loads[rank] += int(size)
    return [sorted(shard) for shard in shards]


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # checked (and reported) by the rank that gets it


def shard_files(paths: Sequence[str]) -> list[str]:
    """This rank's share of ``paths`` (:func:`balanced_split` by file size); all of them in one process.

    Waits for every rank first: each rank has decided which files are still to do (``skip_existing``) before any
    rank starts writing, so they all split the same list. Logs the rank's file count and bytes.
    """
    world, rank = world_and_rank()
    if world == 1:
        return list(paths)
    barrier("the split of the files")
    sizes = [(str(p), _size(str(p))) for p in paths]
    shards = balanced_split(sizes, world)
    by_name = dict(sizes)
    mine = set(shards[rank])
    nbytes = sum(by_name[p] for p in mine)
    logger.info("rank %d of %d: %d of %d file(s), %.1f MB", rank, world, len(mine), len(paths), nbytes / 1e6)
    return [p for p in paths if str(p) in mine]


class ShardProgress:
    """One progress bar, on rank 0, for the files of every rank: ``files done / total`` and slices per second.

    Ranks add their counts to the job's key-value store (one ``add`` per batch); rank 0 reads the totals
    whenever it finishes a batch, and at the end (:meth:`finish`) keeps drawing until every rank is done (or
    one is lost: then it raises naming it). Without a process group nothing is counted (the writer's per-file
    bars are used instead).
    """

    def __init__(self, prefix: str = "shard_progress"):
        self.prefix = prefix
        self.bar = None
        self.start_time: float | None = None
        self._store = None

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def _add(self, name: str, value: int) -> int:
        return int(self._store.add(self._key(name), int(value)))

    def start(self, own_files: int) -> None:
        """Register this rank's number of files (called once the files are dealt)."""
        if not is_sharded() or rank_store() is None:
            return
        self._store = rank_store()
        self.start_time = time.monotonic()
        self._add("total", own_files)
        if world_and_rank()[1] == 0:
            self.bar = tqdm(total=0, unit="file", desc="all ranks", dynamic_ncols=True)

    def update(self, slices: int = 0, files: int = 0) -> None:
        """Count ``slices`` reconstructed and ``files`` finished (written or skipped) on this rank."""
        if self._store is None:
            return
        if slices:
            self._add("slices", slices)
        if files:
            self._add("files", files)
        self._draw()

    def _draw(self) -> None:
        if self.bar is None:
            return
        files, slices, total = (self._add(name, 0) for name in ("files", "slices", "total"))
        elapsed = max(time.monotonic() - (self.start_time or time.monotonic()), 1e-9)
        self.bar.total = max(total, files)
        self.bar.n = files
        self.bar.set_postfix_str(f"{slices / elapsed:.2f} slice/s", refresh=False)
        self.bar.refresh()

    def finish(self) -> None:
        """Mark this rank done and wait for the others (rank 0 keeps the bar moving meanwhile).

        Raises :class:`~bundle.errors.RankLostError` naming a rank that never finishes (dead or hung).
        """
        if self._store is None:
            return
        try:
            barrier("the end of the reconstruction", while_waiting=self._draw)
        finally:
            if self.bar is not None:
                self._draw()
                self.bar.close()
            self._store = None


_PROGRESS = ShardProgress()


def progress() -> ShardProgress:
    """The process's :class:`ShardProgress` (one per run)."""
    return _PROGRESS


def gather_inference(writer, report, write_html: Callable[[], object] | None = None) -> None:
    """End of a sharded inference: gather per-file results, rank 0 writes ``report.html``; no-op in one process.

    Every rank's writer rows (files written, or found done by an earlier run) and bad-data records are
    gathered: rank 0 writes ``report.html`` with all files, and the bad-data report of every rank holds every
    rank's records, so ``raise_if_any`` gives the same exit status everywhere and only rank 0 writes
    ``skipped_files.json`` and the summary.
    """
    if not is_sharded():
        return
    progress().finish()
    extras = writer.extras
    shards = gather_objects({str(k): dict(v) for k, v in extras.rows.items()}, "the files written")
    if world_and_rank()[1] == 0:
        merged: dict[str, dict] = {}
        for rows in shards:
            for file, row in rows.items():
                # A file written by this run wins over the same file noted as done by an earlier one.
                if file not in merged or (merged[file]["earlier"] and not row["earlier"]):
                    merged[file] = row
        extras.rows = {file: {**row, "outputs": [Path(p) for p in row["outputs"]]} for file, row in merged.items()}
        if writer.write_html:
            (write_html or extras.write_report)()
    report.gather()
