"""DICOM export for clinical viewers and PACS: one MR Image Storage series per reconstructed file.

Each ``(slice, frame)`` image becomes one single-frame instance, 16-bit unsigned with a rescale slope (and an
intercept when the volume has negative values) chosen per series so the whole range fits; stored value
``v`` means ``v * RescaleSlope + RescaleIntercept`` in the NIfTI's units, so the two agree within one slope.

Geometry matches the NIfTI affine ``diag(dx, dy, dz, 1)`` (RAS world). DICOM patient coordinates are LPS, so
``(x, y, z)`` RAS is ``(-x, -y, z)``. Pixels are stored as the picture a viewer shows of the NIfTI
(:mod:`bundle.io.orientation`: ``ny`` rows by ``nx`` columns, R on the left, A at the top), which makes
``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]`` (rows run along +L, columns along +P), ``PixelSpacing =
[dy, dx]`` (between rows, between columns) and the first stored pixel the voxel ``(nx-1, ny-1, k)``, whose LPS
position is ``(-(nx-1)dx, -(ny-1)dy, k dz)``. As in the NIfTI, none of this is scanner geometry.

With a :class:`~bundle.geometry.ScanGeometry` (raw data that carries it) the series sits in the scanner's patient
coordinates instead: pixel ``(row r, column c)`` is voxel ``(x=c, y=r)`` (the slice transposed, no flip), so
``ImageOrientationPatient = read_dir + phase_dir`` (along a row, i.e. with the column index, runs ``read_dir``),
``ImagePositionPatient`` is the centre of voxel ``(0, 0)`` of each slice, ``PixelSpacing = [dy, dx]``,
``SliceLocation = position · slice_dir``, ``TriggerTime`` the physiology time stamps and the scan attributes
(TR, TE, TI, flip angle, field strength, PatientPosition, ProtocolName) come from ``scan_info``. ``Manufacturer``
stays this bundle (it made the derived images); the scanner's vendor is in the NIfTI sidecar (``docs/outputs.md``).

Identifiers: new Study/Series/SOP/Frame-of-Reference UIDs on every run (one study per patient and run); the
only patient identifier is the dataset's ``Pxxx`` (as PatientID and PatientName); no dates, names or
institutions are written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bundle.errors import ShapeError
from bundle.files import atomic_write
from bundle.geometry import ScanGeometry
from bundle.io.orientation import to_display
from bundle.io.sidecar import NOT_FOR_DIAGNOSIS

__all__ = [
    "MR_IMAGE_STORAGE",
    "DicomSeriesWriter",
    "as_flag",
    "instance_name",
    "rescale",
    "scan_attributes",
    "series_description",
]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_MAX = 65535


def as_flag(value) -> bool:
    """A command-line switch as a bool: ``True``/``False``, or ``true``/``false``/``1``/``0``/``yes``/``no`` text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "none", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def instance_name(z: int, t: int) -> str:
    """File name of the instance of slice ``z``, frame ``t`` inside a series folder."""
    return f"IM_z{z:03d}_t{t:03d}.dcm"


def rescale(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(uint16 stored values, slope, intercept)`` with ``stored * slope + intercept ≈ volume`` (error ≤ slope/2)."""
    lo = min(0.0, float(volume.min()))
    hi = float(volume.max())
    slope = (hi - lo) / _MAX if hi > lo else 1.0
    stored = np.clip(np.round((volume - lo) / slope), 0, _MAX).astype(np.uint16)
    return stored, slope, lo


def _ds(value: float) -> str:
    """A Decimal String (at most 16 characters) close to ``value``."""
    for digits in range(10, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.3e}"


def series_description(description: str, scan_description: str | None = None, limit: int = 64) -> str:
    """SeriesDescription: the scan's own description (shortened first) and that this is an AI reconstruction.

    ``("HyperCMR PromptMR recon, Uniform x8", "CINE_SAX")`` gives ``"CINE_SAX (AI: HyperCMR PromptMR recon, Uniform
    x8)"``; without a scan description it is ``description`` (cut at ``limit`` characters, as before).
    """
    scan = " ".join(str(scan_description or "").split())
    if not scan:
        return description[:limit]
    ai = f" (AI: {description})"
    room = max(8, limit - len(ai))
    return (scan[:room] + ai)[:limit]


def _per_frame(value, t: int, nt: int) -> float | None:
    """A scalar, or the ``t``-th of a list with one value per frame; None otherwise."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return float(value[t]) if len(value) == nt else None
    return float(value)


def scan_attributes(scan_info: Mapping | None, t: int, nt: int) -> dict[str, str]:
    """DICOM attributes of frame ``t`` (of ``nt``) from the raw file's ``scan_info`` (times in ms, angles in degrees).

    ``TE_ms`` and ``TI_ms`` may be one value per frame (multi-echo, inversion series); an absent or ``None`` key
    writes nothing.
    """
    info = dict(scan_info or {})
    attrs: dict[str, str] = {}
    for key, tag in (
        ("TR_ms", "RepetitionTime"),
        ("TE_ms", "EchoTime"),
        ("TI_ms", "InversionTime"),
        ("flip_angle_deg", "FlipAngle"),
        ("field_strength_T", "MagneticFieldStrength"),
    ):
        value = _per_frame(info.get(key), t, nt)
        if value is not None and np.isfinite(value):
            attrs[tag] = _ds(value)
    for key, tag in (("protocol_name", "ProtocolName"), ("patient_position", "PatientPosition")):
        if info.get(key):
            attrs[tag] = str(info[key])[:64]
    return attrs


class DicomSeriesWriter:
    """Writes DICOM series; keeps one StudyInstanceUID per patient for the lifetime of the writer (one run)."""

    def __init__(self):
        self._studies: dict[str, str] = {}

    def study_uid(self, patient: str) -> str:
        from pydicom.uid import generate_uid

        return self._studies.setdefault(patient, generate_uid())

    def write(
        self,
        folder: str | os.PathLike,
        volume,
        *,
        patient: str,
        series_description: str,
        voxel_size,
        frame_time: float | None,
        series_number: int = 1,
        contrast_times: Mapping[str, list] | None = None,
        geometry: ScanGeometry | None = None,
        scan_info: Mapping | None = None,
    ) -> list[Path]:
        """Write ``volume`` ``(nx, ny, nz[, nt])`` real as ``folder/IM_z###_t###.dcm``; returns the paths in order.

        Args:
            patient: the dataset's ``Pxxx`` (the only identifier written).
            series_description: names the model and the acceleration (at most 64 characters are kept).
            voxel_size: ``(dx, dy, dz)`` mm, as in the NIfTI.
            frame_time: ms between frames of a cine (TriggerTime ``t * frame_time``); ``None`` when the 4th
                axis is not time (mapping contrasts): then no trigger time is written.
            contrast_times: optional ``{"InversionTime": [s, ...]}`` or ``{"EchoTime": [...]}`` per frame (s),
                written in ms to the matching DICOM attribute.
            geometry: the patient geometry of the raw file; None (CMRxRecon) keeps the nominal grid above, and then
                ``scan_info`` is not used either.
            scan_info: the raw file's scan attributes (``TR_ms``, ``TE_ms``, ``TI_ms``, ``flip_angle_deg``,
                ``field_strength_T``, ``patient_position``, ``protocol_name``, ``series_description``, and
                optionally ``frame_of_reference_uid``: the scanner's, so that viewers link the series to its images).
        """
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        data = np.asarray(volume, dtype=np.float32)
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim != 4 or np.iscomplexobj(data):
            raise ShapeError.at(folder, f"DICOM export takes a real (nx, ny, nz[, nt]) volume, got {data.shape}")
        nx, ny, nz, nt = data.shape
        dx, dy, dz = (float(v) for v in voxel_size)
        if geometry is not None:
            if tuple(geometry.matrix) != (nx, ny) or geometry.nz != nz:
                raise ShapeError.at(
                    folder,
                    f"volume {data.shape} does not fit its geometry (matrix {geometry.matrix}, {geometry.nz} slices)",
                )
            dx, dy = geometry.pixel_spacing
            dz = geometry.slice_thickness
            series_description = series_description_of(series_description, scan_info)
        stored, slope, intercept = rescale(data)
        series_uid = generate_uid()
        frame_uid = str((scan_info or {}).get("frame_of_reference_uid") or "") if geometry is not None else ""
        frame_uid = frame_uid or generate_uid()
        study_uid = self.study_uid(patient)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for z in range(nz):
            for t in range(nt):
                sop_uid = generate_uid()
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
                meta.MediaStorageSOPInstanceUID = sop_uid
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = Dataset()
                ds.file_meta = meta
                ds.SOPClassUID = MR_IMAGE_STORAGE
                ds.SOPInstanceUID = sop_uid
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.FrameOfReferenceUID = frame_uid
                ds.Modality = "MR"
                ds.PatientName = patient
                ds.PatientID = patient
                ds.PatientBirthDate = ""
                ds.PatientSex = ""
                ds.StudyID = ""
                ds.StudyDate = ""
                ds.StudyTime = ""
                ds.AccessionNumber = ""
                ds.ReferringPhysicianName = ""
                ds.Manufacturer = "HyperCMR MONAI bundle"
                ds.SeriesDescription = series_description[:64]
                ds.SeriesNumber = int(series_number)
                ds.InstanceNumber = z * nt + t + 1
                ds.ImageType = ["DERIVED", "SECONDARY"]
                ds.ImageComments = NOT_FOR_DIAGNOSIS
                ds.BurnedInAnnotation = "NO"
                # MR Image module: the sequence is unknown here (type 2 attributes left empty), 2-D acquisitions.
                ds.ScanningSequence = "RM"
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.EchoTime = ""
                ds.RepetitionTime = ""
                ds.EchoTrainLength = ""
                ds.PixelSpacing = [_ds(dy), _ds(dx)]
                ds.SliceThickness = _ds(dz)
                ds.PositionReferenceIndicator = ""
                ds.TemporalPositionIdentifier = t + 1
                ds.NumberOfTemporalPositions = nt
                if geometry is None:
                    ds.SpacingBetweenSlices = _ds(dz)
                    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
                    ds.ImagePositionPatient = [_ds(-(nx - 1) * dx), _ds(-(ny - 1) * dy), _ds(z * dz)]
                    ds.SliceLocation = _ds(z * dz)
                else:
                    _place(ds, geometry, z)
                trigger = _trigger_time(geometry, frame_time, t, nt)
                if trigger is not None:
                    ds.TriggerTime = _ds(trigger)
                for key, values in (contrast_times or {}).items():
                    if key in ("InversionTime", "EchoTime") and len(values) == nt:
                        setattr(ds, key, _ds(float(values[t]) * 1000.0))
                if geometry is not None:
                    for key, value in scan_attributes(scan_info, t, nt).items():
                        if not (key == "PatientPosition" and geometry.patient_position):  # the geometry's wins
                            setattr(ds, key, value)
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows, ds.Columns = ny, nx
                ds.BitsAllocated = 16
                ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 0
                ds.RescaleSlope = _ds(slope)
                ds.RescaleIntercept = _ds(intercept)
                ds.RescaleType = "US"
                # Scanner geometry: rows along phase_dir, columns along read_dir, as stated by IOP (no flips).
                slice_ = stored[:, :, z, t]
                picture = np.ascontiguousarray(to_display(slice_) if geometry is None else slice_.T)
                ds.PixelData = picture.astype("<u2").tobytes()
                path = folder / instance_name(z, t)
                atomic_write(path, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True))
                paths.append(path)
        return paths


def series_description_of(description: str, scan_info: Mapping | None) -> str:
    """:func:`series_description` with the scan's ``series_description`` (or ``protocol_name``) of ``scan_info``."""
    info = scan_info or {}
    return series_description(description, info.get("series_description") or info.get("protocol_name"))


def _place(ds, geometry: ScanGeometry, z: int) -> None:
    """Image Plane attributes of slice ``z`` in patient (LPS) coordinates."""
    s = geometry.slices[z]
    ds.ImageOrientationPatient = [_ds(v) for v in (*s.read_dir, *s.phase_dir)]
    ds.ImagePositionPatient = [_ds(v) for v in geometry.first_voxel_lps(z)]
    ds.SliceLocation = _ds(s.location)
    if geometry.slice_spacing is not None:
        ds.SpacingBetweenSlices = _ds(geometry.slice_spacing)
    if geometry.patient_position:
        ds.PatientPosition = geometry.patient_position


def _trigger_time(geometry: ScanGeometry | None, frame_time: float | None, t: int, nt: int) -> float | None:
    """TriggerTime (ms) of frame ``t``: the raw time stamps when there is one per frame, else ``t·frame_time``."""
    times = geometry.trigger_times_ms if geometry is not None else None
    if times is not None and len(times) == nt:
        return float(times[t])
    return None if frame_time is None else t * float(frame_time)
