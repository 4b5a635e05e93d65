"""Validate a CMRxRecon2023/2024 tree before a run: every k-space file, its masks and (optionally) every slab.

The checks mirror what the pipeline would trip over (:func:`~bundle.data.index.scan_dataset`,
:class:`~bundle.data.loading.LoadCMRSliced`), but never raise for a data problem: each one becomes a
:class:`Problem` naming the file, and the slice ``(z, t)`` where there is one. Problem kinds:

==================  ====================================================================================
``unreadable``      missing, not HDF5/MAT, truncated or corrupt (also when only a slab read fails)
``missing_key``     no expected variable (``kspace_full``, ``kus``, ``kspace_sub<NN>``, ``mask``, ``mask<NN>``)
                    and no single one to fall back to
``bad_shape``       k-space not 4-D ``(nz, nc, ny, nx)`` / 5-D ``(nt, nz, nc, ny, nx)``, or an empty axis
``mask_mismatch``   mask is not Task 1 or 2023 ``(ny, nx)`` / Task 2 ``(nt, ny, nx)`` of its k-space
``non_finite``      NaN or Inf in a k-space slab (``z``, ``t`` set) or in a mask
``all_zero_slice``  a k-space slab ``(t, z)`` holds only zeros
``missing_mask``    an undersampled file has no mask file (2024: in the ``Mask_Task*`` folder, 2023:
                    ``<stem>_mask.mat`` beside it); the loader would infer one
==================  ====================================================================================

Problems about a mask file carry the k-space file in ``path`` and the mask file in ``mask``, so a problem
always belongs to one :class:`~bundle.data.index.FileRecord` and :func:`bad_items_filter` drops only the
items that use the bad mask.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import (
    CMRDataError,
    EmptySliceError,
    MaskMismatchError,
    MatFileError,
    MissingKeyError,
    NonFiniteDataError,
    ShapeError,
)
from ..mri import neighbour_frame_indices
from .formats import format_of, raw_options
from .index import FileRecord, scan_dataset
from .matio import MatSliceReader, read_mat

__all__ = [
    "KINDS",
    "FILE_KINDS",
    "SLICE_KINDS",
    "Problem",
    "problem_from_error",
    "check_file",
    "check_dataset",
    "format_problems",
    "bad_items_filter",
]

KINDS = ("unreadable", "missing_key", "bad_shape", "mask_mismatch", "non_finite", "all_zero_slice", "missing_mask")
#: Kinds that make a whole file (or, with ``Problem.mask``, a whole mask) unusable.
FILE_KINDS = frozenset({"unreadable", "missing_key", "bad_shape", "mask_mismatch"})
#: Kinds reported per slab; with ``z``/``t`` unset (a mask, or a capped summary) they count for the whole file.
SLICE_KINDS = frozenset({"non_finite", "all_zero_slice"})

# Most specific first: the first matching class decides the kind.
_ERROR_KINDS: tuple[tuple[type[CMRDataError], str], ...] = (
    (MissingKeyError, "missing_key"),
    (ShapeError, "bad_shape"),
    (MaskMismatchError, "mask_mismatch"),
    (NonFiniteDataError, "non_finite"),
    (EmptySliceError, "all_zero_slice"),
    (MatFileError, "unreadable"),
)
# What h5py / HDF5 / numpy raise on damaged files besides our own errors (CMRDataError is a ValueError).
_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One data problem. ``path`` is the k-space file; ``mask`` the mask file when the problem is about it."""

    path: str
    kind: str
    message: str
    z: int | None = None
    t: int | None = None
    mask: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}; expected one of {KINDS}")


def problem_from_error(err: BaseException, *, path: str | None = None, mask: str | None = None, **where) -> Problem:
    """The :class:`Problem` for an exception; ``path`` defaults to the file the error names.

    :class:`CMRDataError` subclasses map to their kind (``MatFileError -> 'unreadable'`` ...); any other error
    (a raw h5py ``OSError``, ...) is ``'unreadable'`` with its type and text as the message.
    """
    if isinstance(err, CMRDataError):
        kind = next((k for cls, k in _ERROR_KINDS if isinstance(err, cls)), "unreadable")
        message = err.problem
        path = path or err.path
    else:
        kind, message = "unreadable", f"{type(err).__name__}: {err}"
    if mask is not None:
        message = f"mask file {mask}: {message}"
    return Problem(path=str(path), kind=kind, message=message, mask=mask, **where)


# --------------------------------------------------------------------------------------------------- one file


def _check_header(record: FileRecord, reader: MatSliceReader) -> list[Problem]:
    """Open the file and check its k-space dimensions (metadata only)."""
    try:
        shape = reader.shape  # opens the file, picks the variable, checks 4-D/5-D
    except _READ_ERRORS as err:
        return [problem_from_error(err, path=record.path)]
    if min(shape) < 1:
        return [Problem(record.path, "bad_shape", f"k-space has an empty axis: shape {shape}")]
    if shape != tuple(record.shape):
        return [Problem(record.path, "bad_shape", f"k-space shape {shape} differs from the scanned {record.shape}")]
    return []


def _expected_mask_shapes(task: int | str | None, nt: int, ny: int, nx: int) -> list[tuple[int, ...]]:
    # The 2024 folder (Mask_Task1 / Mask_Task2) says which form the mask must take; other folders (a 2023
    # AccFactor folder, whose masks are (ny, nx); 2025 masks, (nt, ny, nx), or (ny, nx) for 4-D series) accept
    # both forms, as the loader does.
    return {1: [(ny, nx)], 2: [(nt, ny, nx)]}.get(task, [(ny, nx), (nt, ny, nx)])


def _mask_origin(record: FileRecord, task: int | None) -> str:
    """How the mismatch message names the mask's kind: ``Task 1``, ``Task 2``, a 2023 mask, or either task."""
    if isinstance(task, int):
        return f"Task {task}"
    if record.layout == "2025":
        return f"a CMRxRecon2025 mask ({task})" if task else "a CMRxRecon2025 mask"
    return "a CMRxRecon2023 mask" if record.layout == "2023" else "Task 1 or 2"


def _check_mask(record: FileRecord, mask_path: str) -> list[Problem]:
    """Read one mask file (small) and check that it fits the record's k-space and is finite."""
    try:
        mask = read_mat(mask_path)
    except _READ_ERRORS as err:
        return [problem_from_error(err, path=record.path, mask=mask_path)]
    nt, ny, nx = record.nt, record.ny, record.nx
    task = record.release.mask_task(mask_path)
    expected = _expected_mask_shapes(task, nt, ny, nx)
    if mask.shape not in expected:
        forms = " or ".join(str(s) for s in expected)
        return [
            Problem(
                record.path,
                "mask_mismatch",
                f"mask file {mask_path}: shape {mask.shape} does not fit k-space of shape {record.shape}; "
                f"expected {forms} for {_mask_origin(record, task)}",
                mask=mask_path,
            )
        ]
    if not np.isfinite(mask).all():
        return [Problem(record.path, "non_finite", f"mask file {mask_path}: contains NaN or Inf", mask=mask_path)]
    return []


def _check_masks(record: FileRecord) -> list[Problem]:
    if record.release is None:  # raw data: the file holds its own lines, and its scan checked them
        return []
    if record.kind == "undersampled":
        if record.mask_path is None:
            expected = record.release.mask_path(record.path)
            return [Problem(record.path, "missing_mask", f"no mask file {expected}", mask=None)]
        return _check_mask(record, record.mask_path)
    return [p for _, mask_path in record.masks for p in _check_mask(record, mask_path)]


def _cap(path: str, found: list[Problem], limit: int | None) -> list[Problem]:
    """Keep the first ``limit`` slab problems; summarise the rest per kind (with ``z``/``t`` unset)."""
    if limit is None or len(found) <= limit:
        return found
    kept, rest = found[:limit], found[limit:]
    words = {"non_finite": "with NaN or Inf", "all_zero_slice": "holding only zeros"}
    for kind in sorted({p.kind for p in rest}):
        n = sum(p.kind == kind for p in rest)
        kept.append(Problem(path, kind, f"{n} more slabs {words[kind]} (not listed; {limit} listed above)"))
    return kept


def _check_values(record: FileRecord, reader: MatSliceReader, limit: int | None) -> list[Problem]:
    """Read slab by slab ``(nc, ny, nx)``, never the whole volume; report NaN/Inf and all-zero slabs."""
    found: list[Problem] = []
    for t in range(reader.nt):
        for z in range(reader.nz):
            try:
                slab = reader.read_slab(t, z)
            except _READ_ERRORS as err:
                # A damaged file (truncated, bad chunk) usually fails on every later slab too: stop here.
                return [*_cap(record.path, found, limit), problem_from_error(err, path=record.path, z=z, t=t)]
            if not np.isfinite(slab).all():
                found.append(Problem(record.path, "non_finite", "k-space contains NaN or Inf", z=z, t=t))
            elif not slab.any():
                found.append(Problem(record.path, "all_zero_slice", "k-space slab is all zeros", z=z, t=t))
    return _cap(record.path, found, limit)


def check_file(record: FileRecord, *, check_values: bool = True, max_slice_problems: int | None = 20) -> list[Problem]:
    """Every problem of one k-space file and its mask file(s); never raises for a data problem.

    Args:
        record: from :func:`~bundle.data.index.scan_dataset`.
        check_values: also read every ``(t, z)`` slab (one at a time) for NaN/Inf and all-zero slabs.
        max_slice_problems: list at most this many slab problems, then one summary problem per kind with
            ``z``/``t`` unset (``None``: list all).

    Returns:
        Problems in the order found; empty when the file is fine. An unreadable or misshapen file stops the
        checks there (its masks cannot be fitted).
    """
    item = dataclasses.asdict(record)
    try:
        reader = format_of(item).open(record.path, record.entry, **raw_options(item))
    except _READ_ERRORS as err:
        return [problem_from_error(err, path=record.path)]
    try:
        problems = _check_header(record, reader)
        if problems:
            return problems
        problems = _check_masks(record)
        if check_values:
            problems += _check_values(record, reader, max_slice_problems)
        return problems
    finally:
        reader.close()


# --------------------------------------------------------------------------------------------------- dataset


def check_dataset(
    root: str | os.PathLike,
    *,
    check_values: bool = True,
    modalities: Iterable[str] | None = None,
    progress: bool = False,
    max_slice_problems: int | None = 20,
    raw_data: Mapping | None = None,
) -> tuple[list[FileRecord], list[Problem]]:
    """Check every k-space file under ``root``: ``(records without problems, all problems)``.

    ``raw_data`` holds the ``group`` and ``series_type`` options of a folder of ISMRMRD files (see
    :func:`~bundle.data.index.scan_dataset`). Files whose metadata cannot be read are reported by the tolerant
    scan; every other file goes through :func:`check_file`. ``progress`` prints one line per file to stderr.

    Raises:
        EmptyDatasetError: ``root`` is missing or holds no k-space files (a usage error, not a data problem).
    """
    problems: list[Problem] = []
    records = scan_dataset(
        root, modalities=modalities, on_error=lambda err: problems.append(problem_from_error(err)), raw_data=raw_data
    )
    good: list[FileRecord] = []
    for i, record in enumerate(records, 1):
        if progress:
            print(f"[{i}/{len(records)}] {record.path}", file=sys.stderr, flush=True)
        found = check_file(record, check_values=check_values, max_slice_problems=max_slice_problems)
        problems.extend(found)
        if not found:
            good.append(record)
    return good, problems


def _shown_path(path: str, root: str | None) -> str:
    if root is None:
        return path
    base = os.path.abspath(root)
    full = os.path.abspath(path)
    inside = os.path.commonpath([base, full]) == base
    return os.path.relpath(full, base) if inside else path


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_problems(
    problems: Sequence[Problem], *, root: str | os.PathLike | None = None, n_ok: int | None = None
) -> str:
    """Fixed-width table ``KIND  FILE  Z  T  MESSAGE`` and a summary line.

    Args:
        root: show files relative to this folder (files outside it keep their full path).
        n_ok: number of files without problems, for the summary (``"...; K files OK"``).
    """
    root = None if root is None else os.fspath(root)
    ok = "" if n_ok is None else f"; {_plural(n_ok, 'file')} OK"
    if not problems:
        return f"No problems found{ok}."
    header = ("KIND", "FILE", "Z", "T", "MESSAGE")
    rows = [
        (
            p.kind,
            _shown_path(p.path, root),
            "-" if p.z is None else str(p.z),
            "-" if p.t is None else str(p.t),
            p.message,
        )
        for p in problems
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]  # the message column is not padded
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(r[:4], widths)), r[4]]).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in [*widths, len(header[4])]))
    n_files = len({p.path for p in problems})
    lines.append(f"{_plural(len(problems), 'problem')} in {_plural(n_files, 'file')}{ok}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- items


def bad_items_filter(problems: Iterable[Problem], *, num_adj_frames: int = 1) -> Callable[[Mapping], bool]:
    """A predicate ``is_bad(item)`` over :func:`~bundle.data.index.build_items` dicts, to drop them up front.

    An item is bad when its ``file`` has a file-level problem (``unreadable``, ``missing_key``, ``bad_shape``,
    ``mask_mismatch``, or a slab kind without ``z``/``t``, i.e. a capped summary), when its ``mask_file`` is a
    mask with a problem, or when its target slab ``(z, t)`` is non-finite or all zeros. ``missing_mask`` drops
    nothing: the loader infers the mask from the k-space.

    Args:
        num_adj_frames: the loader's neighbour stack (odd). Above 1, an item is also bad when any frame it
            loads around ``t`` (same ``z``, the item's ``nt``) is non-finite, since the loader checks them all.
    """
    bad_files: set[str] = set()
    bad_masks: set[str] = set()
    bad_targets: set[tuple[str, int, int]] = set()  # (file, z, t): non-finite or all-zero target
    non_finite: dict[tuple[str, int], set[int]] = {}  # (file, z) -> non-finite frames
    for p in problems:
        if p.kind == "missing_mask":
            continue
        if p.mask is not None:
            bad_masks.add(p.mask)
        elif p.kind in SLICE_KINDS and p.z is not None and p.t is not None:
            bad_targets.add((p.path, p.z, p.t))
            if p.kind == "non_finite":
                non_finite.setdefault((p.path, p.z), set()).add(p.t)
        else:
            bad_files.add(p.path)

    frames_of = None
    if num_adj_frames > 1 and non_finite:

        def frames_of(t: int, nt: int) -> list[int]:
            return neighbour_frame_indices(t, nt, num_adj_frames)

    def is_bad(item: Mapping) -> bool:
        path, z, t = os.fspath(item["file"]), int(item["z"]), int(item["t"])
        if path in bad_files or (path, z, t) in bad_targets:
            return True
        mask_file = item.get("mask_file")
        if mask_file is not None and os.fspath(mask_file) in bad_masks:
            return True
        if frames_of is not None and (path, z) in non_finite:
            if not item.get("nt"):
                return True  # frame count unknown: any non-finite frame of this slice may be stacked
            return not non_finite[(path, z)].isdisjoint(frames_of(t, int(item["nt"])))
        return False

    return is_bad
