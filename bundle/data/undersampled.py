"""Datalists of undersampled files for self-supervised training (no fully sampled k-space needed).

Every undersampled file with its mask is usable: the ``kus`` files of any set of CMRxRecon2024/2025 (TrainingSet,
ValidationSet, TestSet, every 2025 task tree) and the ``AccFactor*`` files of CMRxRecon2023. A tree without any
``FullSample`` folder is valid. The split is by person, as for supervised training: TrainingSet patients keep their
key (``P001``; ``<Center>/<Vendor>/<Pxxx>`` in 2025), so a tree that also holds the fully sampled files splits the
same patients the same way; patients of other sets are another numbering and are keyed ``<patient>@<Set>``.
``split.json`` lists those keys.

The masks are checked before any training step (:func:`check_ssdu_masks`): a file without its mask, a mask that
is not Cartesian, a mask with no ACS lines, and a mask too sparse for Λ (training) or Γ (validation) each stop the
run with one message naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import MapTransform

from ..errors import CMRDataError, EmptyDatasetError
from ..transforms.kspace import centre_frame_target
from ..transforms.ssdu import (
    DEFAULT_GAMMA_FRACTION,
    DEFAULT_RHO,
    MIN_ACS_LINES,
    holdout_lines,
    protected_lines,
    split_lines,
)
from .formats import format_of, raw_options
from .index import assign_groups, build_items, find_multicoil, scan_dataset
from .layout import tree_release
from .loading import LoadCMRSliced
from .matio import read_mat, write_mat
from .raw_index import RAW_SPLIT
from .split import patient_split

__all__ = [
    "person_key",
    "undersampled_datalist",
    "check_ssdu_masks",
    "acquisition_density",
    "repeat_items",
    "LoadReferenced",
    "derive_undersampled_tree",
    "select_file",
]

logger = logging.getLogger(__name__)


def person_key(patient: str, split: str) -> str:
    """The split key of a patient: ``patient`` in the TrainingSet and in a folder of scanner raw data,
    ``<patient>@<Set>`` in the challenge's other sets (another numbering)."""
    return patient if split in ("TrainingSet", RAW_SPLIT) else f"{patient}@{split}"


def _reference_map(records) -> dict[tuple, object]:
    """``(modality, set, patient, series) -> record`` of the fully sampled files."""
    return {(r.modality, r.split, r.patient, r.series): r for r in records if r.kind == "full"}


def undersampled_datalist(
    root: str | os.PathLike,
    *,
    subset: str = "train",
    val_fraction: float = 0.2,
    seed: int = 42,
    split_file: str | os.PathLike | None = None,
    split_allow_overlap: bool = False,
    allow_empty: bool = False,
    splits: Iterable[str] | None = None,
    modalities: Iterable[str] | None = None,
    exclude: Iterable[str] | str | None = "auto",
    trims: Mapping | str | None = "auto",
    mask_names=None,
    on_error: Callable[[CMRDataError], None] | None = None,
    val_centers: Iterable[str] | None = None,
    val_vendors: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    references: bool = True,
    max_items: int | None = None,
    raw_data: Mapping | None = None,
) -> list[dict]:
    """Items (as :func:`bundle.data.build_datalist`) of the undersampled files of one side of the person split.

    Args:
        subset: ``'train'``, ``'val'`` or ``'all'`` (every undersampled file, e.g. scan-specific training).
        splits: keep only files of these set folders (default: every set).
        references: give an item ``reference_file`` when the tree holds the fully sampled file of the same patient,
            series and shape (image metrics at validation; :class:`LoadReferenced`). Training never reads it.
        mask_names: must be ``None`` (undersampled files carry their own mask).
        Others: as :func:`bundle.data.build_datalist`.

    Raises:
        EmptyDatasetError: the tree has no undersampled files (or only fully sampled ones), or the subset is empty
            (``allow_empty`` returns ``[]`` for an empty ``'val'``).
        CMRDataError: an undersampled file without its mask file.
    """
    if subset not in ("train", "val", "all"):
        raise ValueError(f"subset must be 'train', 'val' or 'all', not {subset!r}")
    if mask_names is not None:
        raise ValueError(
            "official_masks does not apply to self-supervised training: undersampled files carry their mask"
        )
    records = scan_dataset(root, on_error=on_error, tasks=tasks, raw_data=raw_data)
    chosen = None if splits is None else ({splits} if isinstance(splits, str) else set(splits))
    und = [r for r in records if r.kind == "undersampled" and (chosen is None or r.split in chosen)]
    if not und:
        n_full = sum(r.kind == "full" for r in records)
        raise EmptyDatasetError.at(
            root,
            f"no undersampled files (UnderSample_*/<series>_kus_*.mat or AccFactor*/) "
            f"{'in ' + ', '.join(sorted(chosen)) + ' ' if chosen else ''}for self-supervised training; the tree holds "
            f"{n_full} fully sampled file(s): train those with configs/train.yaml alone",
        )
    for r in und:
        if r.release is None:  # scanner raw data: the file holds its own lines (its format says which)
            continue
        if not r.mask_path or not os.path.isfile(r.mask_path):
            raise CMRDataError.at(
                r.path,
                "undersampled file without its mask file (expected "
                f"{r.release.mask_path(r.path)}); self-supervised training needs the acquisition mask",
            )
    und = assign_groups(und)  # over every undersampled file, so train and val share group names
    persons = sorted({person_key(r.patient, r.split) for r in und})
    if subset != "all":
        train_ids, val_ids = patient_split(
            persons, split_file, val_fraction, seed, split_allow_overlap, None, val_centers, val_vendors
        )
        if subset == "val" and not val_ids and allow_empty:
            logger.info("%s: the patient split has no validation patients; the 'val' subset is empty", root)
            return []
        keep = set(train_ids if subset == "train" else val_ids)
        und = [r for r in und if person_key(r.patient, r.split) in keep]
    if modalities is not None:
        wanted = {m.lower() for m in modalities}
        und = [r for r in und if r.modality.lower() in wanted]
    items = build_items(und, exclude=exclude, trims=trims)
    if references:
        refs = _reference_map(records)
        for item in items:
            ref = refs.get((item["modality"], item["split"], item["patient"], item["series"]))
            if (
                ref is not None
                and (ref.nz, ref.ny, ref.nx) == (item["nz"], item["ny"], item["nx"])
                and ref.nt >= item["nt"]
            ):
                item["reference_file"] = ref.path
    if max_items is not None:
        items = items[: int(max_items)]
    if not items:
        raise EmptyDatasetError.at(root, f"self-supervised subset {subset!r} has no items")
    return items


def _item_masks(items: Sequence[Mapping]) -> dict[tuple[str, str], tuple[str, np.ndarray]]:
    """``{(group, source): (file named in messages, (F, ny) bool lines)}`` of the items' masks: a mask file, or
    the lines a raw file holds (its format's ``acquired``)."""
    found: dict[tuple[str, str], tuple[str, np.ndarray]] = {}
    for item in items:
        if item.get("mask_file"):
            key = (str(item.get("group", "")), str(item["mask_file"]))
            if key not in found:
                found[key] = (key[1], _file_lines(key[1]))
        elif item.get("format"):
            source = f"{item['file']}::{item.get('entry') or ''}"
            key = (str(item.get("group", "")), source)
            if key not in found:
                acquired = format_of(item).acquired(item["file"], item.get("entry"), **raw_options(item))
                if acquired is not None:
                    found[key] = (str(item["file"]), np.asarray(acquired).max(axis=-1) != 0)  # (nt, ny, nx) -> lines
    return found


def _file_lines(mask_file: str) -> np.ndarray:
    """``(F, ny)`` bool acquired lines of a mask file (h5py order ``(ny, nx)`` or ``(nt, ny, nx)``)."""
    m = np.asarray(read_mat(mask_file, check_finite=True)) != 0
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3 or not (m == m[:, :, :1]).all():
        raise CMRDataError.at(
            mask_file,
            f"not a Cartesian line mask (shape {m.shape}); self-supervised splitting supports line masks only",
        )
    return m[:, :, 0]


def check_ssdu_masks(
    items: Sequence[Mapping],
    role: str = "train",
    rho: float = DEFAULT_RHO,
    gamma_fraction: float = DEFAULT_GAMMA_FRACTION,
    min_acs_lines: int = MIN_ACS_LINES,
    holdout: bool = False,
) -> list[dict]:
    """Check every mask of ``items`` before training; returns the items unchanged (for use inside a config).

    ``role='train'``: Λ must be non-empty (and Γ too with ``holdout``); ``role='val'``: Γ must be non-empty.

    Raises:
        CMRDataError: naming the mask file: not a line mask, no ACS lines, Λ or Γ would be empty.
    """
    if role not in ("train", "val"):
        raise ValueError(f"role must be 'train' or 'val', got {role!r}")
    rng = np.random.RandomState(0)  # only the sizes matter here
    masks = {name: lines for name, lines in _item_masks(items).values()}
    for mask_file, file_lines in sorted(masks.items()):
        for lines in {tuple(row) for row in file_lines}:
            lines = np.asarray(lines, dtype=bool)
            try:
                protected = protected_lines(lines, None, min_acs_lines)
                gamma = holdout_lines(lines, protected, gamma_fraction, rng) if role == "val" or holdout else None
                if role == "train":
                    split_lines(lines, protected, rho, rng, exclude=gamma)
            except ValueError as err:
                raise CMRDataError.at(mask_file, str(err)) from err
    return [dict(i) for i in items]


def acquisition_density(items: Sequence[Mapping]) -> dict[str, list[float]]:
    """``{group: P per ky line}``: the fraction of the items' mask files (and frames) acquiring each line.

    P of the Millard–Chiew weight (:func:`bundle.transforms.ssdu.millard_chiew_weight`), in model orientation.
    """
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for (group, _), (name, file_lines) in _item_masks(items).items():
        lines = file_lines.astype(np.float64)
        key = (group, name)
        if group in sums and sums[group].shape != lines.shape[1:]:
            raise CMRDataError.at(
                key[1], f"group {group!r} mixes masks of {sums[group].shape[0]} and {lines.shape[1]} lines"
            )
        sums[group] = sums.get(group, 0.0) + lines.sum(axis=0)
        counts[group] = counts.get(group, 0) + lines.shape[0]
    return {g: (sums[g] / counts[g]).tolist() for g in sorted(sums)}


def repeat_items(items: Sequence[Mapping], times: int) -> list[dict]:
    """Each item ``times`` times in a row (multi-mask SSDU: each copy gets its own Θ/Λ split every epoch)."""
    if int(times) < 1:
        raise ValueError(f"splits per sample must be at least 1, got {times}")
    return [dict(item) for item in items for _ in range(int(times))]


class LoadReferenced(MapTransform):
    """Load the fully sampled centre frame of ``reference_file`` (when the item has one) as the image target.

    Sets ``target`` ``(1, nx, ny)`` float32 and ``kspace_target`` ``(C, nx, ny)`` complex64 (as
    :class:`~bundle.transforms.MakeTargetd`); items without a reference pass unchanged.
    """

    def __init__(self, reference_key: str = "reference_file"):
        super().__init__(keys=(reference_key,), allow_missing_keys=True)
        self.reference_key = reference_key
        self.loader = LoadCMRSliced(num_adj_frames=1)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        ref = d.get(self.reference_key)
        if not ref:
            return d
        item = {"file": ref, "z": d["z"], "t": d["t"], "nt": d.get("nt"), "kind": "full"}
        loaded = self.loader(item)
        d["target"], d["kspace_target"] = centre_frame_target(loaded["kspace_full"])
        return d


def derive_undersampled_tree(
    source: str | os.PathLike, out: str | os.PathLike, patterns: Sequence[str] = ("Uniform",)
) -> list[str]:
    """Write, for every TrainingSet ``FullSample`` file of a CMRxRecon2024 tree and each of its official Task 1/2
    masks of ``patterns``, ``UnderSample_Task<k>/Pxxx/<series>_kus_<P><R>.mat`` (k-space ⊙ mask, ``kus``) and the
    mask, under ``out/ChallengeData/MultiCoil``: a tree of undersampled files alone (no ``FullSample`` folder), as a
    site without fully sampled scans has. Returns the k-space files written.
    """
    source_root = find_multicoil(source)
    if tree_release(source_root) != "2024":
        raise ValueError(f"{source}: derive_undersampled_tree writes the CMRxRecon2024 layout; the tree is not one")
    target = Path(out) / "ChallengeData" / "MultiCoil"
    written = []
    for r in scan_dataset(source):
        if r.kind != "full" or r.split != "TrainingSet":
            continue
        full = None
        for name, mask_file in r.masks:
            if not any(name.startswith(p) and name[len(p) :].isdigit() for p in patterns):
                continue
            full = read_mat(r.path) if full is None else full
            mask = np.asarray(read_mat(mask_file))
            m = mask.astype(np.float32)
            kus = (full * (m[:, None, None] if m.ndim == 3 else m)).astype(np.complex64)
            rel = Path(mask_file).relative_to(source_root)  # <Mod>/TrainingSet/Mask_Task<k>/Pxxx/<s>_mask_<n>.mat
            mod, split, mask_dir, patient = rel.parts[:4]
            kus_dir = target / mod / split / mask_dir.replace("Mask_Task", "UnderSample_Task") / patient
            kus_path = kus_dir / rel.name.replace("_mask_", "_kus_")
            write_mat(kus_path, kus=kus)
            write_mat(target / rel, mask=mask)
            written.append(str(kus_path))
    if not written:
        raise EmptyDatasetError.at(source, f"no TrainingSet file with an official {'/'.join(patterns)} mask")
    return written


def select_file(items: Sequence[Mapping], path: str | os.PathLike) -> list[dict]:
    """The items of one k-space file (scan-specific training).

    Raises:
        EmptyDatasetError: no item of ``path`` (names the file).
    """
    wanted = os.path.abspath(os.fspath(path))
    chosen = [dict(i) for i in items if os.path.abspath(i["file"]) == wanted]
    if not chosen:
        raise EmptyDatasetError.at(path, "no undersampled item of this file in the dataset (is it below dataset_dir?)")
    return chosen
