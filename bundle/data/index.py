"""Index of a CMRxRecon2024 ``MultiCoil`` tree: files, masks, shape groups, 2-D items and the patient split.

The tree (spec ``data.md`` §1)::

    MultiCoil/<Modality>/TrainingSet/FullSample/Pxxx/<stem>.mat                  kspace_full
    MultiCoil/<Modality>/TrainingSet/Mask_Task{1,2}/Pxxx/<stem>_mask_<P><R>.mat  mask
    MultiCoil/<Modality>/{ValidationSet,TestSet}/UnderSample_Task{1,2}/Pxxx/<stem>_kus_<P><R>.mat  kus
    MultiCoil/<Modality>/{ValidationSet,TestSet}/Mask_Task{1,2}/Pxxx/<stem>_mask_<P><R>.mat

Scanning reads only HDF5 metadata (shapes), never k-space. Shapes are in h5py order
``(nt, nz, nc, ny, nx)``; 4-D BlackBlood files get ``nt = 1``.

Items are plain JSON-serialisable dicts (a MONAI datalist), one per ``(z, t)`` target (and per mask when
several official masks are selected), consumed by :class:`bundle.data.loading.LoadCMRSliced`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..errors import CMRDataError, EmptyDatasetError, MatFileError, MissingKeyError, ShapeError
from .matio import mat_shape

__all__ = [
    "SPLITS",
    "DEFAULT_EXCLUDE",
    "DEFAULT_TRIMS",
    "FileRecord",
    "series_type",
    "series_view",
    "parse_pattern",
    "find_multicoil",
    "scan_dataset",
    "training_patients",
    "assign_groups",
    "build_items",
    "split_patients",
    "split_by_patient",
    "save_split",
    "load_split",
    "build_datalist",
]

logger = logging.getLogger(__name__)

SPLITS = ("TrainingSet", "ValidationSet", "TestSet")

#: Training files holding only background or unusable data (``data.md`` §4), as ``<patient>_<series>``.
DEFAULT_EXCLUDE: tuple[str, ...] = ("P077_aorta_sag", "P105_tagging", "P065_aorta_sag", "P117_aorta_tra")

#: Training files to trim (``data.md`` §4). Frames are the first h5py axis, slices the second; whether the
#: reference meant exactly this is uncertain, so the table is overridable (pass ``{}`` to disable).
DEFAULT_TRIMS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        "P087_tagging": MappingProxyType({"drop_last_frames": 3, "drop_last_slices": 1}),
        "P105_aorta_tra": MappingProxyType({"drop_last_frames": 12}),
        "P109_cine_sax": MappingProxyType({"drop_last_frames": 3}),
        "P100_cine_sax": MappingProxyType({"drop_last_frames": 4, "drop_slices": (1,)}),
    }
)
_TRIM_KEYS = {"drop_last_frames", "drop_last_slices", "drop_slices"}

_PATTERN = re.compile(r"^(?P<pattern>[A-Za-z]+)(?P<acc>\d+)$")
_KUS_NAME = re.compile(r"^(?P<stem>.+?)_kus_(?P<name>[A-Za-z]+\d+)$")
_MASK_NAME = re.compile(r"^(?P<stem>.+?)_mask_(?P<name>[A-Za-z]+\d+)$")
_UNDERSAMPLE_DIR = re.compile(r"^UnderSample_Task(\d+)$")
_MASK_DIR = re.compile(r"^Mask_Task(\d+)$")


# --------------------------------------------------------------------------------------------------- naming


def series_type(name: str | os.PathLike) -> str:
    """``'blackblood'``, ``'mapping'`` or ``'cine'`` (cine-like: cine, aorta, tagging, flow2d) from a file name.

    Only the base name is inspected, case-insensitively, as the official scripts do: it contains ``blackblood``
    -> BlackBlood; ``T1map``/``T2map`` (or the modality name ``mapping``) -> mapping; anything else is cine-like.
    """
    base = os.path.basename(os.fspath(name)).lower()
    if "blackblood" in base:
        return "blackblood"
    if "t1map" in base or "t2map" in base or "mapping" in base:
        return "mapping"
    return "cine"


def series_view(series: str) -> str:
    """Lower-case view of a series: ``cine_sax -> 'sax'``, ``aorta_tra -> 'tra'``, ``T1map -> 't1map'``."""
    return series.rsplit("_", 1)[-1].lower()


def parse_pattern(name: str) -> tuple[str, int]:
    """Split a sampling name into pattern and acceleration: ``'ktGaussian8' -> ('ktGaussian', 8)``."""
    m = _PATTERN.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a sampling name like 'Uniform4' or 'ktRadial20'")
    return m["pattern"], int(m["acc"])


# --------------------------------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One k-space file of the tree. ``shape`` is the h5py-order shape; ``nt == 1`` for 4-D BlackBlood."""

    path: str
    kind: str  # 'full' | 'undersampled'
    split: str  # 'TrainingSet' | 'ValidationSet' | 'TestSet'
    task: int | None
    modality: str
    patient: str
    series: str
    view: str
    pattern: str | None
    acceleration: int | None
    mask_path: str | None
    masks: tuple[tuple[str, str], ...]
    shape: tuple[int, ...]
    nt: int
    nz: int
    nc: int
    ny: int
    nx: int
    group: str | None = None

    @property
    def shape_key(self) -> str:
        return f"{self.series}_{self.ny}x{self.nx}"

    @property
    def name(self) -> str:
        """``<patient>_<series>``, the form used by the known-bad lists."""
        return f"{self.patient}_{self.series}"

    @property
    def series_type(self) -> str:
        return series_type(self.series)


def find_multicoil(root: str | os.PathLike) -> Path:
    """The ``MultiCoil`` folder for ``root``: that folder, its parent ``ChallengeData``, or a folder above."""
    root = Path(os.path.abspath(root))  # items carry absolute paths, valid from any working directory
    if not root.is_dir():
        raise EmptyDatasetError.at(root, "dataset root does not exist or is not a folder")
    for cand in (root / "ChallengeData" / "MultiCoil", root / "MultiCoil", root):
        if cand.is_dir() and any((m / s).is_dir() for m in cand.iterdir() if m.is_dir() for s in SPLITS):
            return cand
    raise EmptyDatasetError.at(
        root, "no CMRxRecon2024 MultiCoil tree here (expected [ChallengeData/][MultiCoil/]<Modality>/TrainingSet/...)"
    )


def training_patients(root: str | os.PathLike) -> list[str]:
    """Sorted patient folder names under every ``<Modality>/TrainingSet/FullSample`` (no file is opened)."""
    multicoil = find_multicoil(root)
    found = {
        p.name
        for m in _subdirs(multicoil)
        if (m / "TrainingSet" / "FullSample").is_dir()
        for p in _subdirs(m / "TrainingSet" / "FullSample")
    }
    return sorted(found)


def _mat_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.mat") if p.is_file() and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _official_masks(split_dir: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``(patient, stem) -> [(mask name, path), ...]`` over every ``Mask_Task*`` folder of a split."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for task_dir in sorted(split_dir.iterdir()):
        if not (task_dir.is_dir() and _MASK_DIR.match(task_dir.name)):
            continue
        for patient_dir in _subdirs(task_dir):
            for f in _mat_files(patient_dir):
                m = _MASK_NAME.match(f.stem)
                if m:
                    found.setdefault((patient_dir.name, m["stem"]), []).append((m["name"], str(f)))
    return found


def _kus_to_mask_path(path: Path) -> Path:
    # Substitute on path components only, so a root folder that happens to contain "_kus_" is left alone.
    task_dir = path.parent.parent
    mask_dir = task_dir.parent / task_dir.name.replace("UnderSample_Task", "Mask_Task") / path.parent.name
    return mask_dir / path.name.replace("_kus_", "_mask_")


def _record(path: Path, series: str, **fields) -> FileRecord:
    """A record for ``path``; its shape comes from the file's metadata and ``fields`` fill the rest."""
    shape = tuple(int(n) for n in mat_shape(path))
    if len(shape) not in (4, 5):
        raise ShapeError.at(path, f"k-space must be 5-D (nt, nz, nc, ny, nx) or 4-D (nz, nc, ny, nx); found {shape}")
    nz, nc, ny, nx = shape[-4:]
    return FileRecord(
        path=str(path),
        patient=path.parent.name,
        series=series,
        view=series_view(series),
        shape=shape,
        nt=shape[0] if len(shape) == 5 else 1,
        nz=nz,
        nc=nc,
        ny=ny,
        nx=nx,
        **fields,
    )


def _scan_split(
    split_dir: Path, modality: str, split: str, on_error: Callable[[CMRDataError], None] | None = None
) -> list[FileRecord]:
    """Records of one ``<Modality>/<Split>`` folder: ``FullSample`` and every ``UnderSample_Task*``.

    A file whose metadata cannot be read raises, or is passed to ``on_error`` and skipped when that is given.
    """
    masks = _official_masks(split_dir)
    records = []
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        task_match = _UNDERSAMPLE_DIR.match(sub.name)
        if sub.name != "FullSample" and task_match is None:
            continue  # Mask_Task*, ImgSnapshot, ...
        for patient_dir in _subdirs(sub):
            for f in _mat_files(patient_dir):
                if task_match is None:
                    series, task, pattern, acc, mask_path = f.stem, None, None, None, None
                    found = tuple(masks.get((patient_dir.name, f.stem), ()))
                else:
                    km = _KUS_NAME.match(f.stem)
                    if km is None:
                        logger.warning("%s: not named <stem>_kus_<Pattern><R>.mat; skipped", f)
                        continue
                    series, task, found = km["stem"], int(task_match.group(1)), ()
                    pattern, acc = parse_pattern(km["name"])
                    mask_file = _kus_to_mask_path(f)
                    mask_path = str(mask_file) if mask_file.is_file() else None
                kind = "full" if task is None else "undersampled"
                try:
                    record = _record(
                        f,
                        series,
                        kind=kind,
                        split=split,
                        task=task,
                        modality=modality,
                        pattern=pattern,
                        acceleration=acc,
                        mask_path=mask_path,
                        masks=found,
                    )
                except (MatFileError, MissingKeyError, ShapeError) as err:
                    if on_error is None:
                        raise
                    on_error(err)
                    continue
                records.append(record)
    return records


def scan_dataset(
    root: str | os.PathLike,
    *,
    modalities: Iterable[str] | None = None,
    on_error: Callable[[CMRDataError], None] | None = None,
) -> list[FileRecord]:
    """List every k-space file (full-sample and undersampled) under ``root``, reading shapes from metadata.

    Args:
        root: the ``MultiCoil`` folder, its parent ``ChallengeData``, or a folder holding ``ChallengeData``.
        modalities: keep only these modality folders (case-insensitive), e.g. ``["Cine", "Mapping"]``.
        on_error: tolerant scan. A file whose metadata cannot be read (:class:`MatFileError`,
            :class:`MissingKeyError`, :class:`ShapeError`) is passed to ``on_error`` and skipped instead of
            raising. ``None`` (default) raises on the first such file.

    Returns:
        Records sorted by modality, split, folder, patient and file name, without ``group`` (see
        :func:`assign_groups`). With ``on_error``, empty when every k-space file found was skipped.

    Raises:
        EmptyDatasetError: no tree or no k-space files under ``root`` (also with ``on_error``).
        MatFileError / MissingKeyError / ShapeError: without ``on_error``, a file cannot be read, has no
            pickable variable, or is not 4-D/5-D k-space (names the file).
    """
    multicoil = find_multicoil(root)
    wanted = None if modalities is None else {m.lower() for m in modalities}
    skipped = 0

    def skip(err: CMRDataError) -> None:
        nonlocal skipped
        skipped += 1
        on_error(err)

    records: list[FileRecord] = []
    for modality_dir in _subdirs(multicoil):
        if wanted is not None and modality_dir.name.lower() not in wanted:
            continue
        for split in SPLITS:
            split_dir = modality_dir / split
            if split_dir.is_dir():
                records.extend(_scan_split(split_dir, modality_dir.name, split, skip if on_error else None))
    # Files that exist but were all skipped are data problems (already reported), not an empty dataset.
    if not records and not skipped:
        raise EmptyDatasetError.at(root, "no k-space .mat files (FullSample or UnderSample_Task*) found")
    return records


# --------------------------------------------------------------------------------------------------- groups


def assign_groups(records: Sequence[FileRecord]) -> list[FileRecord]:
    """Name the shape group of every record, for shape-homogeneous batching.

    The group is the series name; a series seen with several ``(ny, nx)`` gets ``f"{series}{ny}"``, or
    ``f"{series}{ny}x{nx}"`` where ``ny`` alone is still ambiguous. On the CMRxRecon2024 training set this
    gives HyperCMR's 11 groups (``cine_sax246``, ``cine_lax168``, ``T1map``, ...).
    """
    shapes: dict[str, set[tuple[int, int]]] = {}
    for r in records:
        shapes.setdefault(r.series, set()).add((r.ny, r.nx))

    def name(r: FileRecord) -> str:
        seen = shapes[r.series]
        if len(seen) == 1:
            return r.series
        if sum(ny == r.ny for ny, _ in seen) == 1:
            return f"{r.series}{r.ny}"
        return f"{r.series}{r.ny}x{r.nx}"

    return [dataclasses.replace(r, group=name(r)) for r in records]


# --------------------------------------------------------------------------------------------------- items


def _kept_indices(record: FileRecord, trim: Mapping[str, object] | None) -> tuple[int, list[int]]:
    """``(frames kept, slices kept)`` after a trim; the kept frames are always ``0 .. nt_kept-1``."""
    if not trim:
        return record.nt, list(range(record.nz))
    unknown = set(trim) - _TRIM_KEYS
    if unknown:
        raise ValueError(f"trim for {record.name} has unknown keys {sorted(unknown)}; allowed: {sorted(_TRIM_KEYS)}")
    nt = max(record.nt - int(trim.get("drop_last_frames", 0)), 0)
    nz = max(record.nz - int(trim.get("drop_last_slices", 0)), 0)
    dropped = {int(z) for z in trim.get("drop_slices", ())}
    return nt, [z for z in range(nz) if z not in dropped]


def _mask_choices(record: FileRecord, mask_names: str | Sequence[str] | None) -> list[tuple[str | None, str | None]]:
    if record.kind == "undersampled":
        return [(None, record.mask_path)]
    if mask_names is None:
        return [(None, None)]
    if isinstance(mask_names, str):
        if mask_names != "all":
            raise ValueError(f"mask_names must be None, 'all' or a list of names like ['Uniform4'], not {mask_names!r}")
        return list(record.masks)
    available = dict(record.masks)
    missing = [n for n in mask_names if n not in available]
    if missing:
        logger.warning("%s: no official mask %s; those items are skipped", record.path, missing)
    return [(n, available[n]) for n in mask_names if n in available]


def _mask_task(mask_path: str) -> int | None:
    m = _MASK_DIR.match(Path(mask_path).parent.parent.name)
    return int(m.group(1)) if m else None


def build_items(
    records: Sequence[FileRecord],
    *,
    exclude: Iterable[str] | None = DEFAULT_EXCLUDE,
    trims: Mapping[str, Mapping[str, object]] | None = DEFAULT_TRIMS,
    mask_names: str | Sequence[str] | None = None,
) -> list[dict]:
    """Expand records into 2-D items, one per ``(z, t)`` (times each selected mask for full-sample files).

    Args:
        records: from :func:`scan_dataset`; groups are assigned over ``records`` if they lack them.
        exclude: ``<patient>_<series>`` names of TrainingSet files to drop; ``None`` or empty drops none.
            Validation/test files are never dropped: their patient ids are a different numbering.
        trims: ``<patient>_<series> -> {drop_last_frames, drop_last_slices, drop_slices}`` for TrainingSet
            files; ``None`` or empty trims none. A trimmed file's item ``nt`` is the number of frames kept,
            so neighbour stacking never reaches the dropped frames.
        mask_names: for full-sample files, ``None`` (no mask: the training pipeline makes its own), ``'all'``
            or names such as ``['Uniform4', 'ktGaussian8']`` of official masks (one item per mask).
            Undersampled files always carry their own mask file (or ``None`` when it is missing).

    Returns:
        Dicts with keys ``file, mask_file, mask_name, z, t, nt, nz, nc, nx, ny, modality, series, view, patient,
        acceleration, pattern, task, group, shape_key, kind, split``.
    """
    if any(r.group is None for r in records):
        records = assign_groups(records)
    exclude, trims = set(exclude or ()), trims or {}
    items: list[dict] = []
    for r in records:
        curated = r.split == "TrainingSet"
        if curated and r.name in exclude:
            logger.info("%s: excluded (known-bad list)", r.path)
            continue
        nt, slices = _kept_indices(r, trims.get(r.name) if curated else None)
        if nt == 0 or not slices:
            logger.warning("%s: trim leaves no frames or slices; file skipped", r.path)
            continue
        for mask_name, mask_file in _mask_choices(r, mask_names):
            pattern, acc, task = r.pattern, r.acceleration, r.task
            if mask_name is not None:
                (pattern, acc), task = parse_pattern(mask_name), _mask_task(mask_file)
            base = {
                "file": r.path,
                "mask_file": mask_file,
                "mask_name": mask_name,
                "nt": nt,
                "nz": r.nz,
                "nc": r.nc,
                "nx": r.nx,
                "ny": r.ny,
                "modality": r.modality,
                "series": r.series,
                "view": r.view,
                "patient": r.patient,
                "acceleration": acc,
                "pattern": pattern,
                "task": task,
                "group": r.group,
                "shape_key": r.shape_key,
                "kind": r.kind,
                "split": r.split,
            }
            items.extend({**base, "z": z, "t": t} for z in slices for t in range(nt))
    return items


# --------------------------------------------------------------------------------------------------- split


def _patient_of(x) -> str:
    return x["patient"] if isinstance(x, Mapping) else x.patient


def split_patients(patients: Iterable[str], val_fraction: float = 0.2, seed: int = 42) -> tuple[list[str], list[str]]:
    """Seeded patient-level split: ``(train ids, val ids)``, both sorted.

    The sorted unique ids are permuted with ``np.random.default_rng(seed)``; the first
    ``round(val_fraction * n)`` go to validation. With at least two patients and ``0 < val_fraction < 1``
    each side gets at least one.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    ids = sorted(set(patients))
    n = len(ids)
    n_val = math.floor(val_fraction * n + 0.5)
    if n >= 2 and 0.0 < val_fraction < 1.0:
        n_val = min(max(n_val, 1), n - 1)
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


def save_split(path: str | os.PathLike, train_patients: Iterable[str], val_patients: Iterable[str]) -> None:
    """Write a patient split as JSON ``{"train": [...], "val": [...]}``."""
    train, val = sorted(set(train_patients)), sorted(set(val_patients))
    both = set(train) & set(val)
    if both:
        raise ValueError(f"patients on both sides of the split: {sorted(both)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": train, "val": val}, indent=1) + "\n")


def load_split(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read a split written by :func:`save_split`: ``(train patients, val patients)``."""
    try:
        data = json.loads(Path(path).read_text())
        train, val = [str(p) for p in data["train"]], [str(p) for p in data["val"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CMRDataError.at(path, f"not a patient split file ({err})") from err
    if set(train) & set(val):
        raise CMRDataError.at(path, f"patients on both sides of the split: {sorted(set(train) & set(val))}")
    return train, val


# --------------------------------------------------------------------------------------------------- datalist


def build_datalist(
    root: str | os.PathLike,
    *,
    subset: str = "train",
    val_fraction: float = 0.2,
    seed: int = 42,
    mask_names: str | Sequence[str] | None = None,
    exclude: Iterable[str] | None = DEFAULT_EXCLUDE,
    trims: Mapping[str, Mapping[str, object]] | None = DEFAULT_TRIMS,
    modalities: Iterable[str] | None = None,
    max_items: int | None = None,
    split_file: str | os.PathLike | None = None,
    on_error: Callable[[CMRDataError], None] | None = None,
) -> list[dict]:
    """Scan ``root`` and return the items of one subset, ready for a MONAI ``Dataset``.

    Args:
        subset: ``'train'`` / ``'val'``: TrainingSet full-sample files split by patient; ``'all'``: every
            full-sample file; ``'undersampled'``: every ValidationSet/TestSet ``kus`` file.
        val_fraction, seed: the patient split (:func:`split_patients`), used when ``split_file`` is not given
            or does not exist yet.
        split_file: JSON patient split. Loaded when it exists (patients it does not list are left out, with a
            warning); otherwise computed and written there.
        max_items: keep only the first ``max_items`` items (smoke tests).
        on_error: skip files whose metadata cannot be read, passing each error here (see :func:`scan_dataset`).

    Groups are assigned over all files of the subset's kind, so ``train`` and ``val`` share group names.
    """
    if subset not in ("train", "val", "all", "undersampled"):
        raise ValueError(f"subset must be 'train', 'val', 'all' or 'undersampled', not {subset!r}")
    kind = "undersampled" if subset == "undersampled" else "full"
    records = assign_groups([r for r in scan_dataset(root, modalities=modalities, on_error=on_error) if r.kind == kind])
    if subset in ("train", "val"):
        records = [r for r in records if r.split == "TrainingSet"]
        if not records:
            raise EmptyDatasetError.at(root, "no TrainingSet/FullSample files to split")
        # Split over every training patient of every modality, so that a modality filter cannot change it.
        patients = training_patients(root)
        if split_file is not None and os.path.exists(split_file):
            train_ids, val_ids = load_split(split_file)
            unknown = sorted(set(patients) - set(train_ids) - set(val_ids))
            if unknown:
                logger.warning("%s: patients not in the split are left out: %s", split_file, unknown)
        else:
            train_ids, val_ids = split_patients(patients, val_fraction, seed)
            if split_file is not None:
                save_split(split_file, train_ids, val_ids)
        keep = set(train_ids if subset == "train" else val_ids)
        records = [r for r in records if r.patient in keep]
    items = build_items(records, exclude=exclude, trims=trims, mask_names=mask_names)
    if max_items is not None:
        items = items[: int(max_items)]
    if not items:
        raise EmptyDatasetError.at(root, f"subset {subset!r} has no items")
    return items
