"""torchrun support: process-group set-up and tear-down, the main-rank test, and the parameter layout for DDP.

Every function is a no-op in a single process, so ``configs/train.yaml`` calls them unconditionally and the
DDP overlay only changes what differs (device, network wrapper, sampler shards).
"""

from __future__ import annotations

import logging
import os

import torch

from bundle.networks.promptunet import Conv2d

__all__ = ["is_main_process", "barrier", "init_distributed", "finish_distributed", "settle_memory_format"]

logger = logging.getLogger(__name__)


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """Rank 0 of an initialised process group, else from torchrun's ``RANK`` (unset: a single process, main)."""
    if _initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """``torch.distributed.barrier()`` when a process group exists."""
    if _initialized():
        torch.distributed.barrier()


def init_distributed(backend: str | None = None) -> bool:
    """Join torchrun's process group (``nccl`` on CUDA, ``gloo`` otherwise) when ``WORLD_SIZE`` is set.

    Also selects this rank's GPU (``LOCAL_RANK``). Returns whether a process group is active.
    """
    if _initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    logger.info("rank %d of %d (%s)", torch.distributed.get_rank(), torch.distributed.get_world_size(), backend)
    return True


def finish_distributed() -> None:
    """Wait for every rank, then leave the process group (if one exists)."""
    if _initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


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
