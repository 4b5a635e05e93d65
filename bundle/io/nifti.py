"""NIfTI-1 export of reconstructed magnitude volumes, for viewing by clinicians.

Written with nibabel directly rather than MONAI ``SaveImage``: MONAI 1.6.1 cannot write 2-D NIfTI
(MONAI issue #9068; ``docs/design.md``, "MONAI"), and a 4-D ``(x, y, slice, time)`` cine with a frame time in
``pixdim[4]`` is simplest and exact through nibabel.

Geometry and its limits (read this before measuring anything in a viewer):

* The CMRxRecon2024 ``.mat`` files carry no geometry (no orientation, position or spacing), so the affine
  is a pure scaling ``diag(dx, dy, dz, 1)``: voxel index ``(i, j, k)`` maps to ``(i*dx, j*dy, k*dz)`` mm.
  Array axis 0 (x) is the readout direction of the reconstructed grid (a row of the MATLAB image),
  axis 1 (y) the phase-encode direction, axis 2 the slice index, axis 3 the frame.
* Viewers will label the axes R/A/S; those labels are **not** anatomical. Only distances within a slice
  are meaningful, and only if the voxel size is right.
* The grid is the full reconstructed grid: the 2x readout oversampling is *not* removed here, so ``dx``
  must be the spacing of that grid (FOV including oversampling divided by nx).
* qform and sform codes are set to 1 (scanner) so that readers (ITK, SimpleITK, 3D Slicer) take the
  spacing from the affine instead of falling back to "unknown orientation" defaults; the affine still
  carries spacing only.

With a :class:`~bundle.geometry.ScanGeometry` (raw data that carries geometry) the affine is the scanner's instead:
:meth:`~bundle.geometry.ScanGeometry.affine_ras` (the LPS affine ``[dx·read_dir, dy·phase_dir, dz·slice_dir, first
voxel]`` with x and y negated), in both sform and qform (code 1, scanner). The slice direction is the file's, so the
triple may be left-handed: the qform then has ``qfac = -1`` (``pixdim[0]``), which represents any orthonormal triple
exactly. A stack whose slices are not parallel and equally spaced has no single affine and is refused
(:func:`save_nifti` raises; the DICOM series states every slice on its own).

:data:`DEFAULT_VOXEL_SIZES` and :data:`DEFAULT_FRAME_TIMES_MS` are nominal values for CMRxRecon2024-type
protocols; pass the real values from the scanner headers whenever they are known.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bundle.errors import CMRDataError, NonFiniteDataError, ShapeError
from bundle.files import atomic_write
from bundle.geometry import ScanGeometry

__all__ = [
    "DEFAULT_VOXEL_SIZES",
    "DEFAULT_FRAME_TIMES_MS",
    "MAPPING_SERIES",
    "axis4_unit",
    "series_key",
    "default_voxel_size",
    "default_frame_time",
    "save_nifti",
    "load_nifti",
]

logger = logging.getLogger(__name__)

# Nominal voxel sizes (dx, dy, dz) in mm per series stem. These are typical clinical CMR protocol values
# (in-plane about 1.5 mm; slice thickness 8 mm for cine/aorta/tagging, thinner for mapping), NOT values
# read from CMRxRecon2024 files: the released .mat files contain no spacing. They exist so that an
# exported volume has plausible proportions in a viewer; override them from real headers when known.
# For long-axis and LVOT cines the "slices" are different views, so dz has no geometric meaning there.
DEFAULT_VOXEL_SIZES: dict[str, tuple[float, float, float]] = {
    "cine_sax": (1.5, 1.5, 8.0),
    "cine_lax": (1.5, 1.5, 8.0),
    "cine_lvot": (1.5, 1.5, 8.0),
    "aorta_sag": (1.5, 1.5, 8.0),
    "aorta_tra": (1.5, 1.5, 8.0),
    "tagging": (1.5, 1.5, 8.0),
    "T1map": (1.5, 1.5, 5.0),
    "T2map": (1.5, 1.5, 5.0),
    "flow2d": (1.5, 1.5, 6.0),
    "blackblood": (1.5, 1.5, 8.0),
}

# Nominal time between frames in ms (pixdim[4]). Cine-like series: about 50 ms, the usual temporal
# resolution of segmented bSSFP cine; the true value is RR interval / nt and varies per subject.
# T1map/T2map frames are different inversion/echo preparations, not time points: their 4th axis is the contrast
# index, written with a unit-less step of 1 (time unit "unknown", see MAPPING_SERIES).
DEFAULT_FRAME_TIMES_MS: dict[str, float] = {
    "cine_sax": 50.0,
    "cine_lax": 50.0,
    "cine_lvot": 50.0,
    "aorta_sag": 50.0,
    "aorta_tra": 50.0,
    "tagging": 50.0,
    "T1map": 1.0,
    "T2map": 1.0,
    "flow2d": 50.0,
    "blackblood": 1.0,
}

#: Series whose 4th axis is a contrast index (inversion/echo preparation), not time.
MAPPING_SERIES = frozenset({"T1map", "T2map"})

_FALLBACK_VOXEL_SIZE = (1.5, 1.5, 8.0)
_FALLBACK_FRAME_TIME_MS = 50.0
# "unknown": a 4th axis that is not time (the contrast index of mapping series), with a unit-less step.
_TIME_UNITS = ("msec", "sec", "unknown")


def series_key(series: str | os.PathLike) -> str | None:
    """The series stem (a key of :data:`DEFAULT_VOXEL_SIZES`) named by a stem or file name, else ``None``.

    ``"cine_sax_kus_Uniform10.mat"`` gives ``"cine_sax"``; matching is case-insensitive on the file name.
    """
    name = Path(series).name.lower()
    # Longest first so that a stem that is a prefix of another never wins by accident.
    for key in sorted(DEFAULT_VOXEL_SIZES, key=len, reverse=True):
        if name.startswith(key.lower()):
            return key
    for key in sorted(DEFAULT_VOXEL_SIZES, key=len, reverse=True):
        if key.lower() in name:
            return key
    return None


def default_voxel_size(series: str | os.PathLike) -> tuple[float, float, float]:
    """Nominal ``(dx, dy, dz)`` in mm for a series stem or file name; a generic cine value if unknown."""
    key = series_key(series)
    return DEFAULT_VOXEL_SIZES[key] if key else _FALLBACK_VOXEL_SIZE


def default_frame_time(series: str | os.PathLike) -> float:
    """Nominal frame time in ms for a series stem or file name (1.0 for mapping, whose frames are not times)."""
    key = series_key(series)
    return DEFAULT_FRAME_TIMES_MS[key] if key else _FALLBACK_FRAME_TIME_MS


def axis4_unit(series: str | os.PathLike) -> str:
    """NIfTI unit of the 4th axis: ``"unknown"`` (unit-less contrast index) for mapping series, else ``"msec"``."""
    return "unknown" if series_key(series) in MAPPING_SERIES else "msec"


def _positive(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value}")
    return value


def save_nifti(
    path: str | os.PathLike,
    volume,
    voxel_size: Sequence[float],
    frame_time: float = 1.0,
    time_unit: str = "msec",
    description: str | None = None,
    geometry: ScanGeometry | None = None,
) -> Path:
    """Write a real magnitude volume as NIfTI-1 (``.nii.gz`` or ``.nii``), atomically.

    Args:
        path: destination ending in ``.nii.gz`` (compressed) or ``.nii``.
        volume: real array ``(x, y, slice, time)``; ``(x, y, slice)`` is written as a 3-D image (no time
            axis is invented, e.g. BlackBlood); ``(x, y)`` is written as ``(x, y, 1)``. Stored as float32.
        voxel_size: ``(dx, dy, dz)`` in mm, e.g. :func:`default_voxel_size`.
        frame_time: spacing of the 4th axis in ``time_unit`` (``pixdim[4]``); ignored for 3-D volumes.
        time_unit: ``"msec"``, ``"sec"``, or ``"unknown"`` for a 4th axis that is not time (mapping contrasts).
        description: optional text for the header's ``descrip`` field (at most 80 characters).
        geometry: the scanner geometry of the volume: the affine is then its RAS affine (voxel sizes included;
            ``voxel_size`` is only checked against it). None: the nominal ``diag(dx, dy, dz, 1)``.

    Raises:
        ShapeError: complex input, or not 2- to 4-D, or a volume that does not fit ``geometry``.
        CMRDataError: ``geometry`` is not a regular stack (no single affine places its slices).
        NonFiniteDataError: NaN or Inf values.
    """
    dest = Path(path)
    if not (dest.name.endswith(".nii.gz") or dest.suffix == ".nii"):
        raise ValueError(f"{dest}: a NIfTI file name must end in .nii.gz or .nii")
    if time_unit not in _TIME_UNITS:
        raise ValueError(f"time_unit must be one of {_TIME_UNITS}, got {time_unit!r}")
    if len(voxel_size) != 3:
        raise ValueError(f"voxel_size must be (dx, dy, dz), got {tuple(voxel_size)}")
    dx, dy, dz = (_positive(v, "each voxel size") for v in voxel_size)
    frame_time = _positive(frame_time, "frame_time")

    data = np.asarray(volume)
    if np.iscomplexobj(data):
        raise ShapeError.at(dest, "NIfTI export takes a real magnitude volume, not complex data")
    if not 2 <= data.ndim <= 4:
        raise ShapeError.at(dest, f"expected (x, y[, slice[, time]]), got shape {data.shape}")
    if data.ndim == 2:
        data = data[:, :, None]
    data = data.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise NonFiniteDataError.at(dest, f"volume has {bad} NaN/Inf value(s); refusing to export it")

    affine = np.diag([dx, dy, dz, 1.0]) if geometry is None else _scanner_affine(dest, data.shape, geometry)
    if geometry is not None and not np.allclose(np.linalg.norm(affine[:3, :3], axis=0), (dx, dy, dz), rtol=1e-3):
        logger.warning(
            "%s: voxel size %s replaced by the file's geometry %s",
            dest,
            (dx, dy, dz),
            tuple(round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0)),
        )
    img = nib.Nifti1Image(data, affine)
    header = img.header
    header.set_data_dtype(np.float32)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    header.set_xyzt_units("mm", None if time_unit == "unknown" else time_unit)
    if data.ndim == 4:
        pixdim = header["pixdim"].copy()
        pixdim[4] = frame_time
        header["pixdim"] = pixdim
    if description:
        header["descrip"] = description.encode("ascii", "replace")[:80]

    return atomic_write(dest, lambda tmp: nib.save(img, tmp))


def _scanner_affine(dest: Path, shape: tuple[int, ...], geometry: ScanGeometry) -> np.ndarray:
    """The RAS affine of ``geometry`` for a volume of ``shape``, or a clear refusal naming ``dest``."""
    if tuple(shape[:2]) != tuple(geometry.matrix) or shape[2] != geometry.nz:
        raise ShapeError.at(
            dest, f"volume {shape} does not fit its geometry (matrix {geometry.matrix}, {geometry.nz} slices)"
        )
    if not geometry.is_regular_stack:
        raise CMRDataError.at(
            dest,
            f"the {geometry.nz} slices are not parallel and equally spaced, so no single NIfTI affine places them; "
            "no NIfTI is written for this file (the DICOM series places every slice)",
        )
    return geometry.affine_ras()


def load_nifti(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file with nibabel (``img.get_fdata(dtype=np.float32)`` gives the array)."""
    return nib.load(path)
