"""JSON sidecars beside every exported NIfTI: what the file is, how it was made and how far to trust its geometry.

Keys follow BIDS where BIDS has one (``Modality``, ``SeriesDescription``, ``ParallelReductionFactorInPlane``,
``InversionTime``, ``EchoTime`` in seconds, ``ImageComments``); the rest are this bundle's own and are described in
``docs/schema/nifti_sidecar.schema.json``, against which every sidecar is validated before it is written.

For raw data that carries geometry the sidecar also names the scanner and the scan (:func:`scan_keys`: BIDS
``Manufacturer``, ``ManufacturersModelName``, ``MagneticFieldStrength``, ``RepetitionTime``/``EchoTime``/
``InversionTime`` in seconds, ``FlipAngle``, ``PatientPosition``, ``ProtocolName``; this bundle's ``RawFile``,
``ScanSeriesDescription``) and the geometry itself (``Geometry: "scanner"``, ``ScanGeometry``). CMRxRecon sidecars
are unchanged.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from bundle.files import atomic_write
from bundle.geometry import ScanGeometry
from bundle.networks.pretrained import NETWORK_OVERLAY_NAME, read_network_overlay

__all__ = [
    "NOT_FOR_DIAGNOSIS",
    "SCANNER_GEOMETRY_NOTE",
    "SIDECAR_SCHEMA",
    "bundle_version",
    "describe",
    "file_sha256",
    "mapping_times",
    "model_info",
    "parse_sampling",
    "scan_keys",
    "sidecar_path",
    "validate_sidecar",
    "write_sidecar",
]

#: The statement every exported image carries (NIfTI sidecar, DICOM ImageComments).
NOT_FOR_DIAGNOSIS = "AI reconstruction from undersampled k-space; not for diagnostic use"

_REPO = Path(__file__).resolve().parents[2]
SIDECAR_SCHEMA = _REPO / "docs" / "schema" / "nifti_sidecar.schema.json"
_SAMPLING = re.compile(r"_kus_(?P<pattern>[A-Za-z]+?)(?P<acc>\d+)$")


def parse_sampling(file: str | os.PathLike) -> tuple[str | None, int | None]:
    """``(pattern, acceleration)`` of an undersampled file: ``cine_sax_kus_ktUniform8.mat`` → ``("ktUniform", 8)``.

    ``(None, None)`` when the name does not say (e.g. CMRxRecon2023 files, whose acceleration is their folder).
    """
    match = _SAMPLING.search(Path(file).name.removesuffix(".mat"))
    if match:
        return match["pattern"], int(match["acc"])
    folder = re.fullmatch(r"AccFactor(\d+)", Path(file).parent.parent.name)
    return ("Uniform", int(folder[1])) if folder else (None, None)


def describe(model: str, pattern: str | None, acceleration: int | None, limit: int = 64) -> str:
    """Short text naming the model and the acceleration, e.g. ``"HyperCMR PromptMR recon, ktUniform x8"``."""
    sampling = f"{pattern or 'unknown mask'} x{acceleration}" if acceleration else "unknown acceleration"
    return f"{model} recon, {sampling}"[:limit]


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (cached per path, size and modification time: a checkpoint is hashed once per run)."""
    stat = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def bundle_version() -> str:
    """``version`` of ``configs/metadata.json`` (``"unknown"`` when the bundle is installed without configs)."""
    try:
        return str(json.loads((_REPO / "configs" / "metadata.json").read_text())["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def model_info(model_path: str | os.PathLike | None, network=None) -> dict:
    """``Model`` block: the PromptMR arguments and the checkpoint's SHA-256.

    The arguments come from ``network.yaml`` beside the checkpoint when it exists (they describe the weights),
    else from ``network.network_args`` (the configured network); the SHA-256 is ``None`` without a checkpoint file.
    """

    args, source = None, None
    path = Path(model_path) if model_path else None
    if path is not None and path.with_name(NETWORK_OVERLAY_NAME).is_file():
        args, source = read_network_overlay(path.with_name(NETWORK_OVERLAY_NAME)), NETWORK_OVERLAY_NAME
    elif network is not None and hasattr(network, "network_args"):
        args, source = dict(network.network_args), "configured network_def"
    has_file = path is not None and path.is_file()
    return {
        "Name": "HyperCMR PromptMR",
        "Checkpoint": str(path) if path is not None else None,
        "CheckpointSHA256": file_sha256(path) if has_file else None,
        "NetworkArguments": args,
        "NetworkArgumentsSource": source,
    }


def mapping_times(file: str | os.PathLike, series: str, frames: int) -> dict:
    """BIDS ``InversionTime`` (T1map) or ``EchoTime`` (T2map) in seconds per contrast, if the dataset has them.

    CMRxRecon2023 mapping folders hold ``<series>.csv`` beside the ``.mat`` (a header, then one time in ms per
    frame); CMRxRecon2024 files carry none, and then nothing is added. A file with another number of times than
    frames is ignored rather than attached to the wrong images.
    """
    key = {"T1map": "InversionTime", "T2map": "EchoTime"}.get(series)
    table = Path(file).parent / f"{series}.csv"
    if key is None or not table.is_file():
        return {}
    with open(table, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    try:
        times_ms = [float(row[0]) for row in rows[1:]]
    except ValueError:
        return {}
    if len(times_ms) != frames:
        return {}
    return {key: [t / 1000.0 for t in times_ms], f"{key}Source": table.name}


#: GeometryNote of outputs placed in the scanner's patient coordinates.
SCANNER_GEOMETRY_NOTE = (
    "scanner geometry from the raw file: the affine places every voxel in the patient (NIfTI RAS; DICOM LPS)"
)
_NOMINAL_GEOMETRY_NOTE = "no scanner geometry in the source data: R/A/S axis labels are not anatomical"


def _seconds(value_ms):
    """ms → s for a number or a list of numbers (None stays None)."""
    if value_ms is None:
        return None
    if isinstance(value_ms, (list, tuple)):
        return [float(v) / 1000.0 for v in value_ms]
    return float(value_ms) / 1000.0


def scan_keys(scan_info: Mapping | None) -> dict:
    """Sidecar keys (BIDS names and units where BIDS has them) of the raw file's ``scan_info``; absent keys left out.

    ``scan_info`` keys: ``vendor``, ``model``, ``field_strength_T``, ``TR_ms``, ``TE_ms``, ``TI_ms`` (ms, a number or
    one per frame), ``flip_angle_deg``, ``patient_position``, ``protocol_name``, ``series_description``, ``raw_file``.
    """
    info = dict(scan_info or {})
    keys = {
        "Manufacturer": info.get("vendor"),
        "ManufacturersModelName": info.get("model"),
        "MagneticFieldStrength": info.get("field_strength_T"),
        "RepetitionTime": _seconds(info.get("TR_ms")),
        "EchoTime": _seconds(info.get("TE_ms")),
        "InversionTime": _seconds(info.get("TI_ms")),
        "FlipAngle": info.get("flip_angle_deg"),
        "PatientPosition": info.get("patient_position"),
        "ProtocolName": info.get("protocol_name"),
        "ScanSeriesDescription": info.get("series_description"),
        "RawFile": info.get("raw_file"),
    }
    numbers = ("MagneticFieldStrength", "FlipAngle")
    return {k: (float(v) if k in numbers else v) for k, v in keys.items() if v is not None and v != ""}


def sidecar_path(nifti_path: str | os.PathLike) -> Path:
    """``x.nii.gz`` / ``x.nii`` → ``x.json``."""
    path = Path(nifti_path)
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    return path.with_name(stem + ".json")


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SIDECAR_SCHEMA.read_text())


def validate_sidecar(data: Mapping, where: str | os.PathLike = "sidecar") -> None:
    """Raise ``ValueError`` naming ``where`` and the first problem if ``data`` does not fit the schema."""
    import jsonschema

    try:
        jsonschema.validate(dict(data), _schema())
    except jsonschema.ValidationError as err:
        location = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"{where}: sidecar does not fit {SIDECAR_SCHEMA.name} at {location}: {err.message}") from err


def write_sidecar(
    nifti_path: str | os.PathLike,
    *,
    source: str,
    modality: str,
    series: str,
    shape: Sequence[int],
    pattern: str | None,
    acceleration: int | None,
    mask_file: str | None,
    voxel_size: Sequence[float],
    voxel_size_source: str,
    frame_time: float | None,
    frame_time_source: str | None,
    fourth_axis: str | None,
    model: Mapping,
    description: str,
    extra: Mapping | None = None,
    geometry: ScanGeometry | None = None,
    scan_info: Mapping | None = None,
) -> Path:
    """Validate and write the JSON sidecar of ``nifti_path`` (atomically); returns its path.

    ``geometry`` (raw data that carries it) adds ``Geometry: "scanner"``, the geometry record and the ``scan_info``
    keys (:func:`scan_keys`); without it the sidecar is as for CMRxRecon files (nominal geometry, no scan keys).
    """
    data = {
        "Modality": "MR",
        "SeriesDescription": description,
        "Series": series,
        "DatasetModality": modality,
        "SourceFile": source,
        "ImageShape": [int(n) for n in shape],
        "FourthAxis": fourth_axis,
        "MaskPattern": pattern,
        "ParallelReductionFactorInPlane": acceleration,
        "MaskFile": mask_file,
        "VoxelSize": [float(v) for v in voxel_size],
        "VoxelSizeUnits": "mm",
        "VoxelSizeSource": voxel_size_source,
        "FrameTime": None if frame_time is None else float(frame_time),
        "FrameTimeUnits": None if frame_time is None else "ms",
        "FrameTimeSource": frame_time_source,
        "GeometryNote": _NOMINAL_GEOMETRY_NOTE if geometry is None else SCANNER_GEOMETRY_NOTE,
        "Model": dict(model),
        "BundleVersion": bundle_version(),
        "ImageComments": NOT_FOR_DIAGNOSIS,
    }
    if geometry is not None:
        # Through JSON: the record's tuples become the lists the schema checks.
        record = json.loads(json.dumps(geometry.to_dict()))
        data.update(scan_keys(scan_info), Geometry="scanner", ScanGeometry=record)
        if geometry.patient_position:
            data["PatientPosition"] = geometry.patient_position
    data.update(dict(extra) if extra else {})
    dest = sidecar_path(nifti_path)
    validate_sidecar(data, dest)
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(dest, lambda tmp: Path(tmp).write_text(text))
