"""Slice dataset with per-item random state and a bad-data policy.

MONAI's ``Dataset`` applies the transforms with one shared random stream, so the masks an item gets depend on
the worker count and on everything drawn before it. Here each item's transforms are seeded from
``(seed, epoch, index)``: training is reproducible with any number of workers and resumes exactly mid-epoch.

With ``on_bad_data="skip"`` an unreadable item (see :mod:`bundle.errors`) is replaced by the next good item of
the same shape group, so batch shapes and the epoch length never change; the replaced item is reported in the
sample's ``skipped`` field and the :class:`~bundle.workflows.handlers.BadDataReport` handler counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from monai.transforms import Randomizable, apply_transform
from torch.utils.data import Dataset

from bundle.errors import CMRDataError, find_bundle_error

__all__ = ["ReconDataset", "find_data_error"]

logger = logging.getLogger(__name__)


def find_data_error(err: BaseException) -> CMRDataError | None:
    """The :class:`CMRDataError` behind ``err``: MONAI wraps transform errors in ``RuntimeError``."""
    return find_bundle_error(err, CMRDataError)


class ReconDataset(Dataset):
    """Map-style dataset over 2-D slice items.

    Args:
        data: datalist of item dicts (see :func:`bundle.data.build_datalist`); each carries ``group``.
        transform: a callable (usually a MONAI ``Compose``) applied to a shallow copy of the item.
        seed: base seed of every item's random state.
        on_bad_data: ``"raise"`` stops with the file's error; ``"skip"`` substitutes another item of the group.
        max_substitutions: how many neighbours to try before giving up on a whole group.
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Callable | None = None,
        seed: int = 0,
        on_bad_data: str = "raise",
        max_substitutions: int = 16,
    ):
        if on_bad_data not in ("raise", "skip"):
            raise ValueError(f"on_bad_data must be 'raise' or 'skip', got {on_bad_data!r}")
        self.data = list(data)
        self.transform = transform
        self.seed = int(seed)
        self.on_bad_data = on_bad_data
        self.max_substitutions = int(max_substitutions)
        self._group_members: dict[str, list[int]] = {}
        self._position: list[int] = []
        for i, item in enumerate(self.data):
            members = self._group_members.setdefault(str(item.get("group", "")), [])
            self._position.append(len(members))
            members.append(i)
        self._known_bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.data)

    def _load(self, epoch: int, index: int) -> dict:
        item = dict(self.data[index])
        if self.transform is None:
            return item
        if isinstance(self.transform, Randomizable):
            seed = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
            self.transform.set_random_state(seed=int(seed))
        return apply_transform(self.transform, item)

    def _describe(self, index: int, err: CMRDataError) -> str:
        item = self.data[index]
        message = str(err)
        return message if "z=" in message else f"{message} (z={item.get('z')}, t={item.get('t')})"

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        skipped: list[str] = []
        members = self._group_members[str(self.data[index].get("group", ""))]
        position = self._position[index]
        for attempt in range(min(self.max_substitutions, len(members))):
            candidate = members[(position + attempt) % len(members)]
            if candidate in self._known_bad:
                continue
            try:
                sample = self._load(epoch, candidate)
            except Exception as err:  # noqa: BLE001 - only data errors are handled, the rest re-raised
                data_err = find_data_error(err)
                if data_err is None:
                    raise
                if self.on_bad_data == "raise":
                    raise data_err from err
                self._known_bad.add(candidate)
                message = self._describe(candidate, data_err)
                logger.warning("skipping bad item: %s", message)
                skipped.append(message)
                continue
            sample["skipped"] = "\n".join(skipped)
            return sample
        shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise CMRDataError(
            f"no usable item in group {self.data[index].get('group')!r} near index {index} "
            f"after {len(skipped)} bad item(s): {shown or 'none'}",
            path=self.data[index].get("file"),
        )
