"""Index of a CMRxRecon ``MultiCoil`` tree: files, masks, shape groups, 2-D items and the patient split.

Three challenge releases are understood; their folder rules live in :mod:`bundle.data.layout` (one
:class:`~bundle.data.layout.Release` object each), and which release a tree is comes from its folder names
(:func:`detect_layout`). The release is stored per file in :attr:`FileRecord.layout`.

* CMRxRecon2023 (``'2023'``): Cine and Mapping; ``AccFactor04/08/10`` folders of undersampled k-space with the
  mask beside each file; 24 ACS lines.
* CMRxRecon2024 (``'2024'``): six modalities; ``UnderSample_Task{1,2}`` and ``Mask_Task{1,2}`` folders; 16 ACS lines.
* CMRxRecon2025 (``'2025'``): ``<Center>/<Vendor>/<Pxxx>`` below each data folder, ``Mask_TaskAll`` training
  masks, one validation tree per task (``ChallengeData_ValSet/<Task>/MultiCoil``); 20 ACS lines. Patients are
  keyed ``<Center>/<Vendor>/<Pxxx>``: the same ``Pxxx`` under two vendors is two people.

Scanning reads only HDF5 metadata (shapes), never k-space. Shapes are in h5py order ``(nt, nz, nc, ny, nx)`` in
every release; 4-D files (BlackBlood; T1w and T2w in 2025) get ``nt = 1``.

Items are plain JSON-serialisable dicts (a MONAI datalist), one per ``(z, t)`` target (and per mask when
several official masks are selected), consumed by :class:`bundle.data.loading.LoadCMRSliced`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from ..errors import CMRDataError, EmptyDatasetError, MatFileError, MissingKeyError, ShapeError
from .layout import (
    ACS_WIDTHS,
    LAYOUTS,
    RELEASES,
    SPLITS,
    TASKS_2025,
    Release,
    folder_release,
    series_type,
    series_view,
    subdirs,
    tree_release,
)
from .matio import mat_shape, mat_variables
from .raw_index import RAW_SPLIT, is_raw_folder, scan_raw_folder
from .records import RAW_LAYOUT, FileRecord
from .split import (
    load_split,
    patient_split,
    save_split,
    split_by_patient,
    split_by_site,
    split_patients,
)

__all__ = [
    "SPLITS",
    "LAYOUTS",
    "ACS_WIDTHS",
    "DEFAULT_EXCLUDE",
    "DEFAULT_TRIMS",
    "FileRecord",
    "detect_layout",
    "is_raw_dataset",
    "item_acs_width",
    "series_type",
    "series_view",
    "parse_pattern",
    "find_multicoil",
    "find_multicoil_roots",
    "scan_dataset",
    "training_patients",
    "assign_groups",
    "build_items",
    "split_patients",
    "split_by_patient",
    "split_by_site",
    "save_split",
    "load_split",
    "build_datalist",
]

logger = logging.getLogger(__name__)

#: CMRxRecon2024 training files holding only background or unusable data, as ``<patient>_<series>``. Patient
#: ids are numbered per release, so these names say nothing about a CMRxRecon2023 or 2025 tree (no known-bad
#: files have been published for CMRxRecon2025).
DEFAULT_EXCLUDE: tuple[str, ...] = ("P077_aorta_sag", "P105_tagging", "P065_aorta_sag", "P117_aorta_tra")

#: CMRxRecon2024 training files to trim. Frames are the first h5py axis, slices the second; whether the
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
_VALSET_DIR = "ChallengeData_ValSet"


# --------------------------------------------------------------------------------------------------- naming


def parse_pattern(name: str) -> tuple[str, int]:
    """Split a sampling name into pattern and acceleration: ``'ktGaussian8' -> ('ktGaussian', 8)``."""
    m = _PATTERN.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a sampling name like 'Uniform4' or 'ktRadial20'")
    return m["pattern"], int(m["acc"])


# --------------------------------------------------------------------------------------------------- records


def _has_split(folder: Path) -> bool:
    return folder.is_dir() and any((m / s).is_dir() for m in subdirs(folder) for s in SPLITS)


def find_multicoil(root: str | os.PathLike) -> Path:
    """The ``MultiCoil`` folder for ``root``: that folder, its parent ``ChallengeData``, or a folder above.

    For a root with several ``MultiCoil`` trees (a CMRxRecon2025 ``ChallengeData_ValSet``), the first; see
    :func:`find_multicoil_roots` for all of them.
    """
    return find_multicoil_roots(root)[0]


def _task_roots(folder: Path) -> list[Path]:
    """``<Task>/MultiCoil`` trees directly below ``folder`` (a CMRxRecon2025 ``ChallengeData_ValSet``)."""
    if not folder.is_dir():
        return []
    return [t / "MultiCoil" for t in subdirs(folder) if t.name in TASKS_2025 and _has_split(t / "MultiCoil")]


def find_multicoil_roots(root: str | os.PathLike, tasks: Iterable[str] | None = None) -> list[Path]:
    """Every ``MultiCoil`` tree under ``root``, training tree first, then validation tasks in name order.

    ``root`` may be a ``MultiCoil`` folder, ``ChallengeData``, a folder holding ``ChallengeData`` (and, for
    CMRxRecon2025, ``ChallengeData_ValSet``), ``ChallengeData_ValSet`` itself, or one task's folder
    (``ChallengeData_ValSet/TaskR1``). ``tasks`` keeps only those CMRxRecon2025 task trees (the training tree,
    which belongs to no task, is kept).

    Raises:
        EmptyDatasetError: no tree under ``root``, or none of ``tasks``.
    """
    root = Path(os.path.abspath(root))  # items carry absolute paths, valid from any working directory
    if not root.is_dir():
        raise EmptyDatasetError.at(root, "dataset root does not exist or is not a folder")
    found = [c for c in (root / "ChallengeData" / "MultiCoil", root / "MultiCoil", root) if _has_split(c)][:1]
    task_trees = _task_roots(root / _VALSET_DIR) + _task_roots(root)
    if not found and not task_trees:
        raise EmptyDatasetError.at(
            root,
            "no CMRxRecon MultiCoil tree here (expected [ChallengeData/][MultiCoil/]<Modality>/TrainingSet/..., "
            "or ChallengeData_ValSet/<Task>/MultiCoil/...), and no ISMRMRD raw data (*.h5, *.mrd)",
        )
    if tasks is not None:
        wanted = {tasks} if isinstance(tasks, str) else set(tasks)
        unknown = sorted(wanted - set(TASKS_2025))
        if unknown:
            raise ValueError(f"tasks must be among {', '.join(TASKS_2025)}; got {unknown}")
        task_trees = [t for t in task_trees if t.parent.name in wanted]
        in_task = root.name in wanted or root.parent.name in wanted
        if found and found[0].parent.name in TASKS_2025 and not in_task:
            found = []  # root is a task folder that was not asked for
        if not found and not task_trees:
            raise EmptyDatasetError.at(root, f"no tree of task(s) {', '.join(sorted(wanted))} here")
    return found + [t for t in task_trees if t not in found]


def detect_layout(root: str | os.PathLike) -> str:
    """The challenge release of the tree under ``root``: ``'2023'``, ``'2024'`` or ``'2025'`` (folder names only).

    A ``<Modality>/<Split>`` folder with ``AccFactor*`` folders is CMRxRecon2023; ``Mask_TaskAll``,
    ``UnderSample_Task[RS]<k>`` or ``Center###`` folders are CMRxRecon2025; otherwise CMRxRecon2024. A 2023 or
    2024 tree of FullSample folders alone cannot be told apart by its names, so it counts as CMRxRecon2024.

    A folder of scanner raw data (ISMRMRD files, no challenge tree) is ``'ismrmrd'``.

    Raises:
        EmptyDatasetError: no ``MultiCoil`` tree and no raw data under ``root`` (see :func:`find_multicoil_roots`).
    """
    if is_raw_dataset(root):
        return RAW_LAYOUT
    return tree_release(find_multicoil(root))


def is_raw_dataset(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a folder of scanner raw data: ISMRMRD files and no CMRxRecon tree (names only)."""
    try:
        find_multicoil_roots(root)
    except EmptyDatasetError:
        return is_raw_folder(root)
    return False


def training_patients(root: str | os.PathLike) -> list[str]:
    """Sorted patient keys under every ``<Modality>/TrainingSet/FullSample`` (no file is opened).

    2023/2024: ``Pxxx``; 2025: ``<Center>/<Vendor>/<Pxxx>``. A folder of raw data: the patients of its fully
    sampled files (their headers are read, see :mod:`bundle.data.raw_index`).
    """
    if is_raw_dataset(root):
        return sorted({r.patient for r in scan_raw_folder(root, on_error=lambda err: None) if r.kind == "full"})
    found: set[str] = set()
    for multicoil in find_multicoil_roots(root):
        rel = RELEASES[tree_release(multicoil)]
        for m in subdirs(multicoil):
            full = m / "TrainingSet" / "FullSample"
            if full.is_dir():
                found.update(ids["patient"] for ids, _ in rel.patient_folders(full))
    return sorted(found)


def _mat_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.mat") if p.is_file() and not p.name.startswith("."))


def _official_masks(split_dir: Path, rel: Release) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``(patient, series) -> [(mask name, path), ...]`` over the mask folders of a split.

    2024: every ``Mask_Task*/Pxxx/<series>_mask_<P><R>.mat``; 2025 likewise below ``<Center>/<Vendor>``;
    2023: every ``AccFactorXX/Pxxx/<series>_mask.mat``, named ``Uniform<XX>`` (2023 sampling is equispaced).
    """
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for sub in subdirs(split_dir):
        if rel.mask_folder(sub.name) is None:
            continue
        for ids, patient_dir in rel.patient_folders(sub):
            for f in _mat_files(patient_dir):
                named = rel.mask_name(f)
                if named is not None:
                    found.setdefault((ids["patient"], named[0]), []).append((named[1], str(f)))
    return found


def _shape(path: Path, rel: Release, kind: str) -> tuple[int, ...]:
    """h5py-order shape of a file's k-space (metadata only). CMRxRecon2025 files must hold ``kspace`` /
    ``kspace_full`` (full) or ``kus`` (undersampled); other releases pick as :func:`~bundle.data.matio.read_mat`."""
    if not rel.strict_files:
        return tuple(int(n) for n in mat_shape(path))
    names = mat_variables(path)
    wanted = rel.full_keys if kind == "full" else rel.undersampled_keys
    key = next((k for k in wanted if k in names), None)
    if key is None:
        raise MissingKeyError.at(
            path, f"has none of the variables {' / '.join(wanted)} of CMRxRecon2025 k-space; found {sorted(names)}"
        )
    return tuple(int(n) for n in names[key])


def _record(path: Path, series: str, rel: Release, ids: Mapping[str, str], **fields) -> FileRecord:
    """A record for ``path``; its shape comes from the file's metadata and ``fields`` fill the rest."""
    shape = _shape(path, rel, fields["kind"])
    if len(shape) not in (4, 5):
        raise ShapeError.at(path, f"k-space must be 5-D (nt, nz, nc, ny, nx) or 4-D (nz, nc, ny, nx); found {shape}")
    if len(shape) == 4 and rel.strict_files and rel.known_series(series) and series_type(series) != "blackblood":
        raise ShapeError.at(
            path, f"{series} has a time axis in CMRxRecon2025: expected 5-D (nt, nz, nc, ny, nx), found 4-D {shape}"
        )
    nz, nc, ny, nx = shape[-4:]
    rel.warn_unknown_series(series, path)
    return FileRecord(
        path=str(path),
        series=series,
        view=series_view(series),
        shape=shape,
        nt=shape[0] if len(shape) == 5 else 1,
        nz=nz,
        nc=nc,
        ny=ny,
        nx=nx,
        layout=rel.name,
        **ids,
        **fields,
    )


def _full_fields(f: Path, patient: str, masks: Mapping[tuple[str, str], list]) -> tuple[str, dict]:
    """``(series, record fields)`` of a ``FullSample`` file, with its official masks."""
    found = tuple(masks.get((patient, f.stem), ()))
    return f.stem, dict(kind="full", task=None, pattern=None, acceleration=None, mask_path=None, masks=found)


def _kus_fields(f: Path, task, rel: Release) -> tuple[str, dict] | None:
    """``UnderSample_<Task>/.../<series>_kus_<P><R>.mat`` (2024, 2025); ``None`` for a misnamed file."""
    km = _KUS_NAME.match(f.stem)
    if km is None:
        logger.warning("%s: not named <series>_kus_<Pattern><R>.mat; skipped", f)
        return None
    pattern, acc = parse_pattern(km["name"])
    mask_file = rel.mask_path(f)
    mask_path = str(mask_file) if mask_file.is_file() else None
    return km["stem"], dict(
        kind="undersampled", task=task, pattern=pattern, acceleration=acc, mask_path=mask_path, masks=()
    )


def _accfactor_fields(f: Path, acceleration: int, rel: Release) -> tuple[str, dict] | None:
    """CMRxRecon2023 ``AccFactorXX/Pxxx/<series>.mat``; ``None`` for ``<series>_mask.mat`` (a mask)."""
    if rel.mask_name(f) is not None:
        return None
    mask_file = rel.mask_path(f)
    mask_path = str(mask_file) if mask_file.is_file() else None
    fields = dict(kind="undersampled", task=None, pattern="Uniform", acceleration=acceleration, mask_path=mask_path)
    return f.stem, {**fields, "masks": ()}


def _file_fields(sub: Path, rel: Release, masks: Mapping) -> Callable[[Path, str], tuple[str, dict] | None] | None:
    """How to describe the files of one sub-folder of a split, or ``None`` for folders holding no k-space."""
    if sub.name == "FullSample":
        return lambda f, patient: _full_fields(f, patient, masks)
    task = rel.undersampled_folder(sub.name)
    if task is None:
        return None  # Mask_*, ImgSnapshot, ...
    if rel.name == "2023":
        return lambda f, patient: _accfactor_fields(f, task, rel)
    return lambda f, patient: _kus_fields(f, task, rel)


def _scan_split(
    split_dir: Path,
    modality: str,
    split: str,
    on_error: Callable[[CMRDataError], None] | None = None,
    tree_layout: str = "2024",
) -> list[FileRecord]:
    """Records of one ``<Modality>/<Split>`` folder: ``FullSample`` and the undersampled folders.

    A full-sample file takes the release its split folder's siblings name, else ``tree_layout``. A file whose
    metadata cannot be read raises, or is passed to ``on_error`` and skipped when that is given.
    """
    rel = RELEASES[folder_release(split_dir) or tree_layout]
    masks = _official_masks(split_dir, rel)
    records = []
    for sub in subdirs(split_dir):
        describe = _file_fields(sub, rel, masks)
        if describe is None:
            continue
        for ids, patient_dir in rel.patient_folders(sub):
            for f in _mat_files(patient_dir):
                try:
                    described = describe(f, ids["patient"])
                    if described is None:
                        continue
                    series, fields = described
                    record = _record(f, series, rel, ids, split=split, modality=modality, **fields)
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
    tasks: Iterable[str] | None = None,
    raw_data: Mapping | None = None,
) -> list[FileRecord]:
    """List every k-space file (full-sample and undersampled) under ``root``, reading shapes from metadata.

    A folder of scanner raw data (ISMRMRD files, :func:`is_raw_dataset`) gives one record per series of every file
    (:func:`bundle.data.raw_index.scan_raw_folder`, with the ``group`` and ``series_type`` of ``raw_data``).

    The CMRxRecon2023, 2024 and 2025 layouts are read (see :mod:`bundle.data.layout`); each record says which in
    ``layout``. ``<series>_mask.mat`` files of 2023 are masks, never k-space records; ``_info.csv`` files of
    2025 are never read.

    Args:
        root: any folder :func:`find_multicoil_roots` accepts.
        modalities: keep only these modality folders (case-insensitive), e.g. ``["Cine", "Mapping"]``.
        on_error: tolerant scan. A file whose metadata cannot be read (:class:`MatFileError`,
            :class:`MissingKeyError`, :class:`ShapeError`) is passed to ``on_error`` and skipped instead of
            raising. ``None`` (default) raises on the first such file.
        tasks: CMRxRecon2025 validation/test tasks to read (``['TaskR1']`` ...); ``None`` reads every tree.

    Returns:
        Records sorted by tree, modality, split, folder, patient and file name, without ``group`` (see
        :func:`assign_groups`). CMRxRecon2023 undersampled records have ``task=None``, ``pattern='Uniform'``
        and the acceleration of their ``AccFactorXX`` folder. With ``on_error``, empty when every k-space file
        found was skipped.

    Raises:
        EmptyDatasetError: no tree or no k-space files under ``root`` (also with ``on_error``).
        MatFileError / MissingKeyError / ShapeError: without ``on_error``, a file cannot be read, has no
            pickable variable, or is not 4-D/5-D k-space (names the file).
    """
    wanted = None if modalities is None else {m.lower() for m in modalities}
    if is_raw_dataset(root):
        options = {k: v for k, v in dict(raw_data or {}).items() if k in ("group", "series_type")}
        records = scan_raw_folder(root, on_error=on_error, **options)
        return [r for r in records if wanted is None or r.modality.lower() in wanted]
    skipped = 0

    def skip(err: CMRDataError) -> None:
        nonlocal skipped
        skipped += 1
        on_error(err)

    records: list[FileRecord] = []
    for multicoil in find_multicoil_roots(root, tasks):
        tree_layout = tree_release(multicoil)
        rel = RELEASES[tree_layout]
        for modality_dir in subdirs(multicoil):
            if wanted is not None and modality_dir.name.lower() not in wanted:
                continue
            if modality_dir.name not in rel.modalities:
                logger.warning(
                    "%s: modality folder not known in CMRxRecon%s; its files are indexed", modality_dir, rel.name
                )
            for split in SPLITS:
                split_dir = modality_dir / split
                if split_dir.is_dir():
                    found = _scan_split(split_dir, modality_dir.name, split, skip if on_error else None, tree_layout)
                    records.extend(found)
    # Files that exist but were all skipped are data problems (already reported), not an empty dataset.
    if not records and not skipped:
        raise EmptyDatasetError.at(root, "no k-space .mat files (FullSample, UnderSample_* or AccFactor*) found")
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


def _mask_task(record: FileRecord, mask_path: str) -> int | str | None:
    """The task of an official mask file from its folder (2024 ``Mask_Task<k>``: k; 2025: ``'TaskAll'`` ...)."""
    return record.release.mask_task(mask_path)


def _known_bad(value, default, what: str) -> tuple[object, bool]:
    """``(table, for 2024 records only)`` from an ``exclude``/``trims`` argument.

    ``'auto'`` is the built-in CMRxRecon2024 table, applied to 2024-layout records only (2023 patient ids are
    another numbering); any other value applies to every record.
    """
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{what} must be 'auto', None or a table of '<patient>_<series>' names, not {value!r}")
        return default, True
    return value, False


def _curated(record: FileRecord, only_2024: bool) -> bool:
    # Validation/test ids are a different numbering from the training ids the known-bad lists name.
    return record.split == "TrainingSet" and (not only_2024 or record.layout == "2024")


def _layout_keys(record: FileRecord) -> dict:
    """``layout`` and ``acs_width`` item keys (and ``center``, ``vendor`` for CMRxRecon2025), except for 2024.

    CMRxRecon2024 items keep their original key set (saved datalists and callers compare it); read their
    ACS width with :func:`item_acs_width`.
    """
    if record.layout == "2024":
        return {}
    keys = {"layout": record.layout, "acs_width": record.acs_width}
    if record.layout == RAW_LAYOUT:
        keys.update(format=record.format, entry=record.entry, raw_group=record.raw_group)
    if record.layout == "2025":
        keys.update(center=record.center, vendor=record.vendor)
    return keys


def item_acs_width(item: Mapping) -> int:
    """ACS lines of an item's official masks: its ``acs_width`` key, else that of its release (2024: 16)."""
    if item.get("acs_width") is not None:
        return int(item["acs_width"])
    return ACS_WIDTHS[item.get("layout") or "2024"]


def build_items(
    records: Sequence[FileRecord],
    *,
    exclude: Iterable[str] | str | None = "auto",
    trims: Mapping[str, Mapping[str, object]] | str | None = "auto",
    mask_names: str | Sequence[str] | None = None,
) -> list[dict]:
    """Expand records into 2-D items, one per ``(z, t)`` (times each selected mask for full-sample files).

    Args:
        records: from :func:`scan_dataset`; groups are assigned over ``records`` if they lack them.
        exclude: ``<patient>_<series>`` names of TrainingSet files to drop; ``None`` or empty drops none.
            ``'auto'`` (default) drops :data:`DEFAULT_EXCLUDE` from CMRxRecon2024 records only: the list names
            2024 training files, and 2023 patient ids are a different numbering. Validation/test files are
            never dropped, for the same reason.
        trims: ``<patient>_<series> -> {drop_last_frames, drop_last_slices, drop_slices}`` for TrainingSet
            files; ``None`` or empty trims none; ``'auto'`` (default) is :data:`DEFAULT_TRIMS` for
            CMRxRecon2024 records only. A trimmed file's item ``nt`` is the number of frames kept, so
            neighbour stacking never reaches the dropped frames.
        mask_names: for full-sample files, ``None`` (no mask: the training pipeline makes its own), ``'all'``
            or names such as ``['Uniform4', 'ktGaussian8']`` of official masks (one item per mask; the
            AccFactor masks of a 2023 training patient are ``Uniform4``, ``Uniform8``, ``Uniform10``).
            Undersampled files always carry their own mask file (or ``None`` when it is missing).

    Returns:
        Dicts with keys ``file, mask_file, mask_name, z, t, nt, nz, nc, nx, ny, modality, series, view, patient,
        acceleration, pattern, task, group, shape_key, kind, split``; items of CMRxRecon2023 and 2025 records also
        have ``layout`` and ``acs_width`` (24, 20), and 2025 items ``center`` and ``vendor``.
    """
    if any(r.group is None for r in records):
        records = assign_groups(records)
    exclude, exclude_2024_only = _known_bad(exclude, DEFAULT_EXCLUDE, "exclude")
    trims, trims_2024_only = _known_bad(trims, DEFAULT_TRIMS, "trims")
    exclude, trims = set(exclude or ()), trims or {}
    items: list[dict] = []
    for r in records:
        if _curated(r, exclude_2024_only) and r.name in exclude:
            logger.info("%s: excluded (known-bad list)", r.path)
            continue
        nt, slices = _kept_indices(r, trims.get(r.name) if _curated(r, trims_2024_only) else None)
        if nt == 0 or not slices:
            logger.warning("%s: trim leaves no frames or slices; file skipped", r.path)
            continue
        for mask_name, mask_file in _mask_choices(r, mask_names):
            pattern, acc, task = r.pattern, r.acceleration, r.task
            if mask_name is not None:
                (pattern, acc), task = parse_pattern(mask_name), _mask_task(r, mask_file)
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
                **_layout_keys(r),
            }
            items.extend({**base, "z": z, "t": t} for z in slices for t in range(nt))
    return items


# --------------------------------------------------------------------------------------------------- datalist


def _check_splits(splits: Iterable[str]) -> set[str]:
    chosen = {splits} if isinstance(splits, str) else set(splits)
    unknown = sorted(chosen - set(SPLITS))
    if unknown:
        raise ValueError(f"splits must be names among {', '.join(SPLITS)}; got {unknown}")
    return chosen


def build_datalist(
    root: str | os.PathLike,
    *,
    subset: str = "train",
    val_fraction: float = 0.2,
    seed: int = 42,
    mask_names: str | Sequence[str] | None = None,
    exclude: Iterable[str] | str | None = "auto",
    trims: Mapping[str, Mapping[str, object]] | str | None = "auto",
    modalities: Iterable[str] | None = None,
    splits: Iterable[str] | None = None,
    max_items: int | None = None,
    split_file: str | os.PathLike | None = None,
    split_allow_overlap: bool = False,
    allow_empty: bool = False,
    on_error: Callable[[CMRDataError], None] | None = None,
    val_centers: Iterable[str] | None = None,
    val_vendors: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    raw_data: Mapping | None = None,
) -> list[dict]:
    """Scan ``root`` and return the items of one subset, ready for a MONAI ``Dataset``.

    ``root`` may also be a folder of scanner raw data (ISMRMRD): its fully sampled files are split by patient for
    ``train``/``val`` as TrainingSet files are, its undersampled files are the ``undersampled`` subset;
    ``raw_data`` holds the reader's ``group`` and ``series_type`` (:func:`scan_dataset`).

    Args:
        subset: ``'train'`` / ``'val'``: TrainingSet full-sample files split by patient; ``'all'``: every
            full-sample file; ``'undersampled'``: every undersampled file (2024: ValidationSet/TestSet ``kus``
            files; 2023: the ``AccFactor*`` files of every set, TrainingSet included).
        val_fraction, seed: the patient split (:func:`split_patients`), used when ``split_file`` is not given
            or does not exist yet.
        exclude, trims: known-bad files, as in :func:`build_items` (``'auto'``: the CMRxRecon2024 tables, for
            2024-layout files only).
        splits: keep only files of these split folders, e.g. ``['ValidationSet']`` (default: all).
        split_file: JSON patient split. Loaded when it exists (patients it does not list are left out, with a
            warning); otherwise computed and written there.
        split_allow_overlap: accept a split file with patients on both sides (a warning is logged).
        allow_empty: for ``subset='val'`` only: when the split has no validation patients (a single patient,
            ``val_fraction=0``, an empty ``val`` list), return ``[]`` with an info line instead of raising.
        max_items: keep only the first ``max_items`` items (smoke tests).
        on_error: skip files whose metadata cannot be read, passing each error here (see :func:`scan_dataset`).
        val_centers, val_vendors: CMRxRecon2025 leave-site-out validation: every patient of these centres
            (``Center005``) or vendor folders (``Siemens_30T_Vida``) is on the validation side, every other on the
            training side (:func:`split_by_site`); ``val_fraction`` and ``seed`` are then not used.
        tasks: CMRxRecon2025 task trees to read (see :func:`scan_dataset`).

    Groups are assigned over all files of the subset's kind, so ``train`` and ``val`` share group names.

    Raises:
        EmptyDatasetError: no files to split, or the subset has no items (see ``allow_empty``).
    """
    if subset not in ("train", "val", "all", "undersampled"):
        raise ValueError(f"subset must be 'train', 'val', 'all' or 'undersampled', not {subset!r}")
    kind = "undersampled" if subset == "undersampled" else "full"
    scanned = scan_dataset(root, modalities=modalities, on_error=on_error, tasks=tasks, raw_data=raw_data)
    records = assign_groups([r for r in scanned if r.kind == kind])
    if splits is not None:
        chosen = _check_splits(splits)
        records = [r for r in records if r.split in chosen]
    if subset in ("train", "val"):
        records = [r for r in records if r.split in ("TrainingSet", RAW_SPLIT)]
        if not records:
            raise EmptyDatasetError.at(root, "no TrainingSet/FullSample files (or fully sampled raw files) to split")
        # Split over every training patient of every modality, so that a modality filter cannot change it.
        train_ids, val_ids = patient_split(
            training_patients(root), split_file, val_fraction, seed, split_allow_overlap, None, val_centers, val_vendors
        )
        if subset == "val" and not val_ids and allow_empty:
            logger.info("%s: the patient split has no validation patients; the 'val' subset is empty", root)
            return []
        keep = set(train_ids if subset == "train" else val_ids)
        records = [r for r in records if r.patient in keep]
    items = build_items(records, exclude=exclude, trims=trims, mask_names=mask_names)
    if max_items is not None:
        items = items[: int(max_items)]
    if not items:
        raise EmptyDatasetError.at(root, f"subset {subset!r} has no items")
    return items
