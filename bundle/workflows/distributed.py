"""torchrun support: process-group set-up and tear-down, the main-rank test, and the parameter layout for DDP.

Every function is a no-op in a single process, so ``configs/train.yaml`` calls them unconditionally and the
DDP overlay only changes what differs (device, network wrapper, sampler shards).

:func:`init_distributed` joins the job's key-value store itself (``torch.distributed.rendezvous``, what
``init_process_group`` would do) and keeps a handle (:func:`rank_store`), starts this rank's heartbeat, and
gives the process group ``dist_timeout_s``. The bundle's own waits (:func:`barrier`, :func:`gather_objects`)
go through that store and give up after the same timeout, naming the rank that died or hung
(:mod:`bundle.workflows.liveness`).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch

from bundle.networks.promptunet import Conv2d
from bundle.workflows.liveness import Heartbeat, beat_interval, store_gather, wait_for_ranks

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "is_main_process",
    "barrier",
    "gather_objects",
    "rank_store",
    "init_distributed",
    "finish_distributed",
    "settle_memory_format",
]

logger = logging.getLogger(__name__)

#: Seconds a rank waits for the others (``dist_timeout_s``) before giving up, naming the missing ranks.
DEFAULT_TIMEOUT_S = 300.0

# This process's handle on the job's store, its heartbeat, its timeout and a count of waits: every rank waits
# at the same points in the same order, so the n-th wait has the same key on every rank.
_STATE: dict = {"store": None, "heartbeat": None, "timeout": DEFAULT_TIMEOUT_S, "waits": 0}


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """Rank 0 of an initialised process group, else from torchrun's ``RANK`` (unset: a single process, main)."""
    if _initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def rank_store():
    """The job's key-value store (a ``torch.distributed.PrefixStore``) joined by :func:`init_distributed`.

    ``None`` without a process group, or when the group was made elsewhere (then the bundle's waits fall back
    to the process group's own collectives).
    """
    return _STATE["store"] if _initialized() else None


def _next_key(kind: str) -> str:
    _STATE["waits"] += 1
    return f"{kind}/{_STATE['waits']}"


def barrier(what: str | None = None, while_waiting=None) -> None:
    """Wait for every rank (when a process group exists); gives up after ``dist_timeout_s`` naming who is missing.

    ``what`` names the wait point in that message; ``while_waiting()`` is called between polls.
    """
    if not _initialized():
        return
    store = rank_store()
    if store is None:
        torch.distributed.barrier()
        return
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    wait_for_ranks(store, _next_key("barrier"), rank, world, _STATE["timeout"], what=what, while_waiting=while_waiting)


def gather_objects(obj, what: str | None = None) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable ``obj``); ``[obj]`` in one process.

    Through the store (:func:`bundle.workflows.liveness.store_gather`): bounded by ``dist_timeout_s`` and
    naming a rank that never sends its part; no backend work is left in flight at exit.
    """
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return [obj]
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    store = rank_store()
    if store is None:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, obj)
        return gathered
    return store_gather(store, _next_key("gather"), obj, rank, world, _STATE["timeout"], what=what)


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Join torchrun's process group (``nccl`` on CUDA, ``gloo`` otherwise) when ``WORLD_SIZE`` is set.

    ``timeout_s`` (``dist_timeout_s`` in the configs, default :data:`DEFAULT_TIMEOUT_S`) bounds every wait on
    another rank: the process group's collectives and the bundle's barriers and gathers. Also selects this
    rank's GPU (``LOCAL_RANK``) and starts its heartbeat. Returns whether a process group is active.
    """
    if _initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    timeout = float(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
    if not timeout > 0:
        raise ValueError(f"dist_timeout_s must be > 0 seconds, got {timeout_s!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    delta = timedelta(seconds=timeout)
    store, rank, world = next(torch.distributed.rendezvous("env://", timeout=delta))
    store.set_timeout(delta)
    # The process group's keys under the prefix init_process_group itself would use; the bundle's beside them.
    group_store = torch.distributed.PrefixStore("default_pg", store)
    torch.distributed.init_process_group(backend=backend, store=group_store, rank=rank, world_size=world, timeout=delta)
    _STATE.update(store=torch.distributed.PrefixStore("hypercmr", store), timeout=timeout, waits=0)
    _STATE["heartbeat"] = Heartbeat(_STATE["store"], rank, beat_interval(timeout)).start()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    logger.info("rank %d of %d (%s, pid %d, dist_timeout_s=%g)", rank, world, backend, os.getpid(), timeout)
    return True


def finish_distributed() -> None:
    """Wait for every rank, stop this rank's heartbeat, then leave the process group (if one exists).

    Destroying the group joins the backend's threads (gloo's) while the interpreter is fully alive; a thread
    of it still running at interpreter shutdown can abort the process.
    """
    if not _initialized():
        return
    barrier("the end of the run")
    heartbeat = _STATE["heartbeat"]
    if heartbeat is not None:
        heartbeat.stop()
    torch.distributed.destroy_process_group()
    _STATE.update(store=None, heartbeat=None, waits=0)


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    """A copy of ``(O, I, kh, kw)`` ``weight`` with explicit channels-last strides.

    ``contiguous(memory_format=channels_last)`` leaves a 1×1 kernel's strides as they are (both layouts hold
    its values in the same order), but autograd returns its gradient with the explicit strides, and DDP
    compares strides, not memory order.
    """
    o, i, kh, kw = weight.shape
    out = torch.empty_strided(weight.shape, (i * kh * kw, 1, kw * i, i), dtype=weight.dtype, device=weight.device)
    return out.copy_(weight)


def settle_memory_format(module: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """Store the 4-D weights channels-last on the CPU, where the U-Net convolutions run channels-last.

    There the convolutions hand oneDNN a channels-last copy of each weight, so the weight's gradient comes back
    channels-last. DDP lays its gradient buckets out like the parameters; a parameter whose gradient has other
    strides costs a copy of that gradient on every step (and PyTorch warns "Grad strides do not match bucket
    view strides"). Settling the layout before DDP wraps the model makes the two agree. Values, state-dict keys
    and results are unchanged. On CUDA nothing is converted (the convolutions keep the input's layout there).
    """

    if torch.device(device).type == "cpu":
        for layer in module.modules():
            if isinstance(layer, Conv2d):  # the convolutions that hand oneDNN a channels-last weight
                layer.weight.data = _channels_last(layer.weight.data)
    return module
