"""The patient split: seeded and patient-level, or leave-site-out (CMRxRecon2025 centres and vendors), and its file.

A patient is on one side only, across every modality: the same person is never trained on and validated on.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch.distributed as dist

from ..errors import CMRDataError
from ..files import atomic_write
from .layout import site_of

__all__ = [
    "split_patients",
    "split_by_patient",
    "split_by_site",
    "patient_split",
    "save_split",
    "load_split",
]

logger = logging.getLogger(__name__)


def _patient_of(x) -> str:
    return x["patient"] if isinstance(x, Mapping) else x.patient


def split_patients(patients: Iterable[str], val_fraction: float = 0.2, seed: int = 42) -> tuple[list[str], list[str]]:
    """Seeded patient-level split: ``(train ids, val ids)``, both sorted.

    The sorted unique ids are permuted with ``np.random.default_rng(seed)``; the first
    ``round(val_fraction * n)`` go to validation. With ``0 < val_fraction < 1`` training keeps at least one
    patient (so a single patient gives ``([p], [])``) and, from two patients on, validation gets at least one.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    ids = sorted(set(patients))
    n = len(ids)
    n_val = math.floor(val_fraction * n + 0.5)
    if n >= 1 and 0.0 < val_fraction < 1.0:
        n_val = min(max(n_val, 1 if n >= 2 else 0), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(ids[i] for i in order[:n_val])
    val_set = set(val)
    return [p for p in ids if p not in val_set], val


def split_by_patient(items_or_records: Sequence, val_fraction: float = 0.2, seed: int = 42) -> tuple[list, list]:
    """Partition items (dicts) or records by patient into ``(train, val)``; no patient is on both sides.

    One global split over all modalities (a patient id names the same volunteer in every modality).
    """
    _, val_ids = split_patients((_patient_of(x) for x in items_or_records), val_fraction, seed)
    val_ids = set(val_ids)
    train = [x for x in items_or_records if _patient_of(x) not in val_ids]
    val = [x for x in items_or_records if _patient_of(x) in val_ids]
    return train, val


def _warn_overlap(path: str | os.PathLike, both: set[str]) -> None:
    logger.warning(
        "%s: patients %s are in both the train and the val split; the validation is then not independent of "
        "training (allow_overlap=True)",
        path,
        sorted(both),
    )


def save_split(
    path: str | os.PathLike, train_patients: Iterable[str], val_patients: Iterable[str], allow_overlap: bool = False
) -> None:
    """Write a patient split as JSON ``{"train": [...], "val": [...]}``.

    A patient on both sides is refused (``ValueError``) unless ``allow_overlap``, e.g. to fine-tune and
    monitor on a site's only patients; that is then logged as a warning, since such a validation is not
    independent of training.
    """
    train, val = sorted(set(train_patients)), sorted(set(val_patients))
    both = set(train) & set(val)
    if both and not allow_overlap:
        raise ValueError(f"{path}: patients on both sides of the split: {sorted(both)} (pass allow_overlap=True)")
    if both:
        _warn_overlap(path, both)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"train": train, "val": val}, indent=1) + "\n"
    # Atomic, so that a reader (another DDP rank, a crash) never sees a half-written split.
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_split(path: str | os.PathLike, allow_overlap: bool = False) -> tuple[list[str], list[str]]:
    """Read a split written by :func:`save_split`: ``(train patients, val patients)``.

    Patients on both sides raise :class:`CMRDataError` unless ``allow_overlap`` (then a warning is logged).
    """
    try:
        data = json.loads(Path(path).read_text())
        train, val = [str(p) for p in data["train"]], [str(p) for p in data["val"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CMRDataError.at(path, f"not a patient split file ({err})") from err
    both = set(train) & set(val)
    if both and not allow_overlap:
        raise CMRDataError.at(path, f"patients on both sides of the split: {sorted(both)} (pass allow_overlap=True)")
    if both:
        _warn_overlap(path, both)
    return train, val


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def split_by_site(
    patients: Iterable[str], val_centers: Iterable[str] | None = None, val_vendors: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """Leave-site-out split of CMRxRecon2025 patient keys: ``(train ids, val ids)``, both sorted.

    A patient whose centre is in ``val_centers`` or whose vendor folder is in ``val_vendors`` goes to validation,
    every other to training. Names that match no patient raise ``ValueError`` (a typo must not silently give an
    empty validation set).
    """
    ids = sorted(set(patients))
    centers, vendors = set(val_centers or ()), set(val_vendors or ())
    sites = {p: site_of(p) for p in ids}
    if any(site == (None, None) for site in sites.values()):
        raise ValueError("val_centers / val_vendors need CMRxRecon2025 patients (<Center>/<Vendor>/<Pxxx>)")
    unknown = sorted((centers - {c for c, _ in sites.values()}) | (vendors - {v for _, v in sites.values()}))
    if unknown:
        known = sorted({c for c, _ in sites.values()} | {v for _, v in sites.values()})
        raise ValueError(f"no training patient is in centre/vendor {unknown}; the tree has {known}")
    val = [p for p in ids if sites[p][0] in centers or sites[p][1] in vendors]
    val_set = set(val)
    return [p for p in ids if p not in val_set], val


def patient_split(
    patients: Iterable[str],
    split_file: str | os.PathLike | None,
    val_fraction: float,
    seed: int,
    allow_overlap: bool,
    distributed: bool | None = None,
    val_centers: Iterable[str] | None = None,
    val_vendors: Iterable[str] | None = None,
) -> tuple[list[str], list[str]]:
    """``(train ids, val ids)`` of ``patients`` (every training patient of the dataset): loaded from
    ``split_file`` when it exists, else computed (and saved there).

    With ``val_centers`` / ``val_vendors`` the split is a leave-site-out one (:func:`split_by_site`), computed
    every time; an existing ``split_file`` must then hold the same split. Under ``torch.distributed`` global rank 0
    alone reads or writes the file and sends the split to every rank (other nodes may not see the file yet, or at
    all).
    """
    distributed = _distributed() if distributed is None else distributed
    if distributed and split_file is not None:
        box = [None]
        if dist.get_rank() == 0:
            box = [
                patient_split(patients, split_file, val_fraction, seed, allow_overlap, False, val_centers, val_vendors)
            ]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    patients = sorted(set(patients))
    by_site = bool(val_centers or val_vendors)
    if by_site:
        computed = split_by_site(patients, val_centers, val_vendors)
    if split_file is not None and os.path.exists(split_file):
        train_ids, val_ids = load_split(split_file, allow_overlap=allow_overlap)
        if by_site and (sorted(train_ids), sorted(val_ids)) != computed:
            raise CMRDataError.at(
                split_file,
                "holds another split than val_centers/val_vendors give; start fresh with --resume false "
                "(the old split is moved aside) or use another --output_dir",
            )
        unknown = sorted(set(patients) - set(train_ids) - set(val_ids))
        if unknown:
            # Never drop patients silently: a split of another dataset must not decide this run's data.
            raise CMRDataError.at(
                split_file,
                f"does not list {len(unknown)} training patient(s) of the dataset ({', '.join(unknown[:5])}"
                f"{', ...' if len(unknown) > 5 else ''}); it belongs to another dataset. Start fresh with "
                "--resume false (the old split is moved aside) or use another --output_dir",
            )
        return train_ids, val_ids
    train_ids, val_ids = computed if by_site else split_patients(patients, val_fraction, seed)
    if split_file is not None:
        save_split(split_file, train_ids, val_ids)
    return train_ids, val_ids
