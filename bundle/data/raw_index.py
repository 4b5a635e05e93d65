"""A folder of scanner raw data (ISMRMRD files) as a dataset: one :class:`FileRecord` per series of every file.

Files are ``*.h5`` and ``*.mrd`` at any depth below the root. The patient is the folder a file sits in (its path
below the root, so that two sites' ``P001`` stay apart), or, for files directly in the root, the XML header's
``subjectInformation.patientID``, else the file's stem. Only headers are read (:mod:`bundle.data.ismrmrd`).

A fully sampled file (every line of the recon matrix in every frame) is a ``'full'`` record: training and
evaluation mask it retrospectively, as CMRxRecon data. A prospectively undersampled file is ``'undersampled'``: the
lines it holds and their mask come from the file itself. Every record has ``split='RawData'`` and
``layout='ismrmrd'``; inference reconstructs every file, whichever kind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py

from ..errors import CMRDataError, EmptyDatasetError
from .formats import FORMATS, is_raw_data_path
from .ismrmrd import is_ismrmrd_file
from .layout import series_type as type_of_series
from .layout import series_view
from .records import RAW_LAYOUT, FileRecord

__all__ = [
    "RAW_SPLIT",
    "RETROSPECTIVE_ACS",
    "retrospective_acs_width",
    "find_raw_files",
    "is_raw_folder",
    "raw_patient",
    "scan_raw_folder",
    "raw_modality",
]

logger = logging.getLogger(__name__)

#: ``FileRecord.split`` of scanner raw data: it comes in no challenge set folder.
RAW_SPLIT = "RawData"
#: ACS width of retrospective masks on fully sampled raw files (:func:`retrospective_acs_width`).
RETROSPECTIVE_ACS = 24


def find_raw_files(root: str | os.PathLike) -> list[Path]:
    """Every ``*.h5`` / ``*.mrd`` file below ``root`` (any depth), sorted; hidden files and folders are left out."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_raw_data_path(name):
                found.append(Path(dirpath) / name)
    return sorted(found)


def _opens_as_hdf5(path: Path) -> bool:
    """Whether h5py opens the file (a truncated or corrupt one does not: the reader then says what is wrong)."""
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def is_raw_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds ISMRMRD files (a ``*.h5``/``*.mrd`` with an ISMRMRD ``dataset`` group)."""
    root = Path(root)
    return root.is_dir() and any(is_ismrmrd_file(p) for p in find_raw_files(root))


def raw_patient(path: Path, root: Path, info: Mapping | None) -> str:
    """The patient key of a raw file (see the module docstring)."""
    folder = path.parent.relative_to(root)
    if folder.parts:
        return folder.as_posix()
    patient_id = (info or {}).get("patient_id")
    return str(patient_id) if patient_id else path.stem


def raw_modality(series: str) -> str:
    """The modality folder a CMRxRecon tree would file a series under: Cine, Mapping, or the series type."""
    kind = type_of_series(series)
    if kind in ("T1map", "T2map"):
        return "Mapping"
    if kind in ("cine", "tagging", "aorta", "flow2d"):
        return "Cine"
    return kind[:1].upper() + kind[1:]


def retrospective_acs_width(ny: int) -> int:
    """ACS lines of the masks drawn on a fully sampled raw file (its own lines say nothing of a protocol):
    24, the Siemens default of GRAPPA reference lines and CMRxRecon2023's, or a quarter of a small matrix."""
    return min(RETROSPECTIVE_ACS, 2 * (ny // 8))


def scan_raw_folder(
    root: str | os.PathLike,
    *,
    on_error: Callable[[CMRDataError], None] | None = None,
    group: str | None = None,
    series_type: str | None = None,
) -> list[FileRecord]:
    """Records of every series of every ISMRMRD file below ``root``, sorted by patient and path.

    Args:
        on_error: a file that cannot be read or is not supported (non-Cartesian, 3-D, corrupt, ...) is passed to
            it as a :class:`~bundle.errors.CMRDataError` and skipped; ``None`` raises on the first.
        group: the HDF5 group to read (``None``: ``dataset``, or the last ``dataset_<n>``).
        series_type: the series type of every file when its names say nothing (``'cine'``, ``'T1map'``, ...).

    Raises:
        EmptyDatasetError: no ISMRMRD file below ``root`` (also with ``on_error``, when none was found at all).
    """
    root = Path(os.path.abspath(root))
    fmt = FORMATS["ismrmrd"]
    records, seen = [], 0
    for path in find_raw_files(root):
        if not is_ismrmrd_file(path) and _opens_as_hdf5(path):
            # e.g. a fastMRI .h5 beside the raw files: readable, but not ISMRMRD
            logger.warning("%s: an HDF5 file without an ISMRMRD 'dataset' group; not raw data, skipped", path)
            continue
        seen += 1
        try:
            volumes = fmt.describe(path, group=group, series_type=series_type)
        except CMRDataError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        for v in volumes:
            nt, nz, nc, ny, nx = v.shape
            records.append(
                FileRecord(
                    path=str(path),
                    kind="full" if v.fully_sampled else "undersampled",
                    split=RAW_SPLIT,
                    task=None,
                    modality=raw_modality(v.series),
                    patient=raw_patient(path, root, v.info),
                    series=v.series,
                    view=series_view(v.series),
                    pattern=None,
                    acceleration=None if v.fully_sampled else v.acceleration,
                    mask_path=None,
                    masks=(),
                    shape=tuple(v.shape),
                    nt=nt,
                    nz=nz,
                    nc=nc,
                    ny=ny,
                    nx=nx,
                    layout=RAW_LAYOUT,
                    format=fmt.name,
                    entry=v.entry,
                    raw_group=v.group,
                    measured_acs=v.acs_width if not v.fully_sampled else retrospective_acs_width(ny),
                )
            )
    if not seen:
        raise EmptyDatasetError.at(root, "no ISMRMRD files (*.h5, *.mrd with a 'dataset' group) found")
    return sorted(records, key=lambda r: (r.patient, r.path, r.entry or ""))
