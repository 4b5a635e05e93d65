"""Batch sampler that never mixes image shapes in one batch (MONAI has no bucket sampler).

HyperCMR trains the shape groups one after another inside each epoch (paper, Algorithm 1), each with its own
batch size. This sampler reproduces that order (``group_order="paper"``) or shuffles all batches of all groups
together (``"shuffle"``). It is also the DDP sampler: every rank gets the same number of batches, sharded
round-robin per group, and the order is a pure function of ``(seed, epoch)``, so all ranks agree without
communication.

It yields lists of ``(epoch, index)`` pairs: the dataset derives each item's random state from that pair, which
keeps augmentation identical whatever the number of workers, and after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["HYPERCMR_GROUP_ORDER", "ShapeGroupBatchSampler", "group_batches"]

# Group order of the HyperCMR training loop (docs/design.md, "Data format", shape groups); groups found in the
# data but not listed here (other sizes, unseen series) follow in sorted order.
HYPERCMR_GROUP_ORDER = (
    "aorta_sag",
    "aorta_tra",
    "cine_lax204",
    "cine_lax168",
    "cine_sax246",
    "cine_sax162",
    "cine_sax204",
    "cine_lvot",
    "T1map",
    "T2map",
    "tagging",
)


def _ordered_groups(names: Sequence[str], preferred: Sequence[str]) -> list[str]:
    present = set(names)
    head = [g for g in preferred if g in present]
    return head + sorted(present - set(head))


def group_batches(
    groups: Sequence[str],
    batch_sizes: Mapping[str, int],
    default_batch_size: int,
    *,
    shuffle: bool,
    rng: np.random.Generator,
    drop_last: bool = False,
) -> dict[str, list[list[int]]]:
    """Split item indices into per-group batches. ``groups[i]`` is the group of item ``i``."""
    members: dict[str, list[int]] = {}
    for index, name in enumerate(groups):
        members.setdefault(name, []).append(index)
    batches: dict[str, list[list[int]]] = {}
    for name in sorted(members):
        indices = np.asarray(members[name])
        if shuffle:
            indices = indices[rng.permutation(len(indices))]
        size = int(batch_sizes.get(name, default_batch_size))
        if size < 1:
            raise ValueError(f"batch size of group {name!r} must be >= 1, got {size}")
        chunks = [indices[i : i + size].tolist() for i in range(0, len(indices), size)]
        if drop_last and chunks and len(chunks[-1]) < size:
            chunks.pop()
        batches[name] = chunks
    return batches


class ShapeGroupBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shape-homogeneous batches with per-group batch sizes; DDP-aware and resumable.

    Args:
        groups: the shape-group key of every dataset item (``item["group"]``), or the items themselves.
        batch_size: batch size of groups not named in ``group_batch_sizes``.
        group_batch_sizes: per-group batch sizes, e.g. ``{"cine_sax246": 1, "T2map": 4}``.
        group_order: ``"paper"`` (groups one after another in HyperCMR's order) or ``"shuffle"`` (all batches
            of all groups in a random order).
        shuffle: shuffle items inside each group (and, with ``"shuffle"``, the batch order) every epoch.
        drop_last: drop each group's last incomplete batch.
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        epoch_fraction: use only this fraction of every group's batches per epoch, a different seeded subset each
            epoch (HyperCMR's Task 2 trains on half the data per epoch); 1.0 uses everything.
        num_replicas, rank: DDP world size and rank; taken from ``torch.distributed`` when initialised.
    """

    def __init__(
        self,
        groups: Sequence[str] | Sequence[Mapping],
        batch_size: int = 1,
        group_batch_sizes: Mapping[str, int] | None = None,
        group_order: str = "paper",
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        epoch_fraction: float = 1.0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        keys = [g["group"] if isinstance(g, Mapping) else str(g) for g in groups]
        if not keys:
            raise ValueError("ShapeGroupBatchSampler needs at least one item")
        if not 0.0 < float(epoch_fraction) <= 1.0:
            raise ValueError(f"epoch_fraction must be in (0, 1], got {epoch_fraction}")
        if group_order not in ("paper", "shuffle"):
            raise ValueError(f"group_order must be 'paper' or 'shuffle', got {group_order!r}")
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside a world of {num_replicas}")
        self.groups = keys
        self.batch_size = int(batch_size)
        self.group_batch_sizes = dict(group_batch_sizes or {})
        self.group_order = group_order
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch_fraction = float(epoch_fraction)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0
        self._length = len(self._epoch_batches(0))

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (0-based) and restart from its first batch."""
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, batch_position: int) -> None:
        """Skip the first ``batch_position`` batches of the current epoch (used when resuming mid-epoch)."""
        if not 0 <= batch_position <= self._length:
            raise ValueError(f"start position {batch_position} is outside an epoch of {self._length} batches")
        self.start = int(batch_position)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: Mapping) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.start = int(state["start"])

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        per_group = group_batches(
            self.groups,
            self.group_batch_sizes,
            self.batch_size,
            shuffle=self.shuffle,
            rng=rng,
            drop_last=self.drop_last,
        )
        sharded: dict[str, list[list[int]]] = {}
        for name, batches in per_group.items():
            if not batches:
                continue
            if self.epoch_fraction < 1.0:
                keep = max(1, round(len(batches) * self.epoch_fraction))
                batches = [batches[i] for i in sorted(rng.permutation(len(batches))[:keep])]
            # Pad by repetition so every rank gets the same number of batches from every group.
            padded = batches + batches[: (-len(batches)) % self.num_replicas]
            while len(padded) % self.num_replicas:
                padded = padded + batches
            sharded[name] = padded[self.rank :: self.num_replicas]
        if self.group_order == "paper":
            order = _ordered_groups(list(sharded), HYPERCMR_GROUP_ORDER)
            return [b for name in order for b in sharded[name]]
        flat = [b for name in sorted(sharded) for b in sharded[name]]
        if self.shuffle:
            flat = [flat[i] for i in rng.permutation(len(flat))]
        return flat

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self._epoch_batches(self.epoch)
        start, self.start = self.start, 0
        for batch in batches[start:]:
            yield [(self.epoch, i) for i in batch]

    def __len__(self) -> int:
        return self._length
