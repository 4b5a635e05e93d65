"""Outputs the :class:`~bundle.workflows.inference.ReconstructionWriter` adds beside each NIfTI: the JSON sidecar,
the optional DICOM series and the run's ``report.html``. Kept apart from the writer, which only assembles volumes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bundle.files import atomic_write
from bundle.geometry import ScanGeometry
from bundle.io.dicom import DicomSeriesWriter
from bundle.io.nifti import MAPPING_SERIES, series_key
from bundle.io.paths import derive_output_path, relative_input_path
from bundle.io.report import write_inference_report
from bundle.io.sidecar import describe, mapping_times, model_info, parse_sampling, sidecar_path, write_sidecar

__all__ = ["ExtraOutputs", "mask_file_for"]

logger = logging.getLogger(__name__)

_DONE = ".complete"  # written last in a DICOM series folder: the series is whole (used to resume runs)


def mask_file_for(file: str | Path, dataset_dir: str | Path) -> str | None:
    """The CMRxRecon2024 mask of an undersampled file (``UnderSample_Task*`` → ``Mask_Task*``, ``_kus_`` → ``_mask_``),
    relative to ``dataset_dir``, when it exists."""
    path = Path(file)
    parts = list(path.parts)
    for i, part in enumerate(parts):
        if part.startswith("UnderSample_Task"):
            parts[i] = part.replace("UnderSample_", "Mask_")
    mask = Path(*parts).with_name(path.name.replace("_kus_", "_mask_"))
    if mask == path or not mask.is_file():
        return None
    try:
        return mask.resolve().relative_to(Path(dataset_dir).resolve()).as_posix()
    except ValueError:
        return str(mask)


class ExtraOutputs:
    """Sidecars, DICOM series and the HTML index of one inference run.

    Args:
        dataset_dir, output_dir: as in the writer.
        model_path, network: the model the sidecars and DICOM series descriptions name.
        write_dicom: write ``dicom/<relative path>/`` series.
    """

    def __init__(self, dataset_dir, output_dir, model_path=None, network=None, write_dicom: bool = False):
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.model_path = model_path
        self.network = network
        self.write_dicom_series = bool(write_dicom)
        self._model: dict | None = None
        self._dicom = None
        self.rows: dict[str, dict] = {}  # per input file, for report.html

    @property
    def model(self) -> dict:

        if self._model is None:
            self._model = model_info(self.model_path, self.network)
        return self._model

    def dicom_folder(self, file: str) -> Path:

        return derive_output_path(file, self.dataset_dir, self.output_dir / "dicom", new_suffix="")

    def output_paths(self, file: str, with_nifti: bool) -> list[Path]:

        paths = []
        if with_nifti:
            nifti = derive_output_path(file, self.dataset_dir, self.output_dir / "nifti", new_suffix=".nii.gz")
            paths.append(sidecar_path(nifti))
        if self.write_dicom_series:
            paths.append(self.dicom_folder(file) / _DONE)
        return paths

    def describe(
        self,
        file: str,
        series: str,
        meta: Mapping,
        shape: Sequence[int],
        voxel: Sequence[float],
        voxel_override,
        frame_time: float,
        frame_time_override,
        geometry: ScanGeometry | None = None,
        scan_info: Mapping | None = None,
    ) -> dict:
        """Everything the sidecar, the NIfTI ``descrip`` and the DICOM headers say about one reconstructed file.

        With ``geometry`` (raw data) the voxel size is the geometry's (a configured ``voxel_size`` does not apply),
        the frame time the median step of its trigger times unless configured, and ``scan_info`` (see
        :func:`bundle.io.sidecar.scan_keys`) is kept for the sidecar and the DICOM series; ``info["voxel"]`` is then
        what to pass to ``save_nifti``.
        """

        key = series_key(file) or series
        pattern, acceleration = meta.get("pattern") or None, meta.get("acceleration")
        if not pattern or acceleration is None or int(acceleration) < 1:
            pattern, acceleration = parse_sampling(file)
        acceleration = None if acceleration is None else int(acceleration)
        rel = relative_input_path(file, self.dataset_dir)
        from_path = next((p for p in rel.parts if p[:1] == "P" and p[1:].isdigit()), "P000")
        patient = str(meta.get("patient") or (scan_info or {}).get("patient_id") or from_path)
        if len(shape) == 3:
            fourth, step, step_source = None, None, None
        elif key in MAPPING_SERIES:
            fourth, step, step_source = "contrast index", None, None
        else:
            fourth, step = "time", frame_time
            step_source = (
                "configured frame_time"
                if frame_time_override is not None
                else f"nominal default for {key} (bundle.io.nifti.DEFAULT_FRAME_TIMES_MS); the .mat has no timing"
            )
        voxel_source = (
            "configured voxel_size"
            if voxel_override is not None
            else f"nominal default for {key} (bundle.io.nifti.DEFAULT_VOXEL_SIZES); the .mat files carry no spacing"
        )
        if geometry is not None:
            dx, dy = geometry.pixel_spacing
            voxel = (dx, dy, geometry.slice_spacing or geometry.slice_thickness)
            voxel_source = "the raw file's geometry (recon field of view / recon matrix; slice spacing)"
            triggers = geometry.trigger_times_ms
            if fourth == "time" and frame_time_override is None and triggers and len(triggers) == shape[3] > 1:
                step = float(np.median(np.diff(triggers)))
                step_source = "the raw file's trigger times (median step)"
            scan_info = {"raw_file": Path(file).name, **dict(scan_info or {})}
        times = mapping_times(file, key, shape[3]) if fourth == "contrast index" else {}
        return {
            "geometry": geometry,
            "scan_info": scan_info if geometry is not None else None,
            "description": describe("HyperCMR PromptMR", pattern, acceleration),
            "patient": patient,
            "voxel": [float(v) for v in voxel],
            "frame_time": step,
            "times": times,
            "sidecar": dict(
                source=rel.as_posix(),
                modality=str(meta.get("modality") or (rel.parts[-5] if len(rel.parts) >= 5 else "")),
                series=key,
                shape=list(shape),
                pattern=pattern,
                acceleration=acceleration,
                mask_file=mask_file_for(file, self.dataset_dir),
                voxel_size=voxel,
                voxel_size_source=voxel_source,
                frame_time=step,
                frame_time_source=step_source,
                fourth_axis=fourth,
            ),
        }

    def write_sidecar(
        self, nifti_path, info: Mapping, geometry: ScanGeometry | None = None, scan_info: Mapping | None = None
    ) -> Path:
        """The sidecar of ``nifti_path``; ``geometry``/``scan_info`` default to those given to :meth:`describe`."""
        return write_sidecar(
            nifti_path,
            model=self.model,
            description=info["description"],
            extra=info["times"],
            geometry=geometry if geometry is not None else info.get("geometry"),
            scan_info=scan_info if scan_info is not None else info.get("scan_info"),
            **info["sidecar"],
        )

    def write_dicom(
        self, file: str, image, info: Mapping, geometry: ScanGeometry | None = None, scan_info: Mapping | None = None
    ) -> list[Path]:
        """The DICOM series of ``file`` (nothing unless ``write_dicom``); the completion marker is written last.

        ``geometry``/``scan_info`` default to those given to :meth:`describe`.
        """
        if not self.write_dicom_series:
            return []

        if self._dicom is None:
            self._dicom = DicomSeriesWriter()
        folder = self.dicom_folder(file)
        paths = self._dicom.write(
            folder,
            image,
            patient=info["patient"],
            series_description=info["description"],
            voxel_size=info["voxel"],
            frame_time=info["frame_time"],
            series_number=len(self.rows) + 1,
            contrast_times=info["times"],
            geometry=geometry if geometry is not None else info.get("geometry"),
            scan_info=scan_info if scan_info is not None else info.get("scan_info"),
        )
        marker = atomic_write(folder / _DONE, lambda tmp: Path(tmp).write_text(f"{len(paths)} instances\n"))
        return [*paths, marker]

    def note(self, file: str, outputs: Sequence[Path], earlier: bool = False) -> None:
        """Remember ``file``'s outputs for the HTML index (``earlier``: written by a previous, resumed run)."""
        listed = [Path(p).parent if Path(p).name == _DONE else Path(p) for p in outputs]  # a DICOM series: its folder
        self.rows[str(file)] = {"file": str(file), "outputs": listed, "earlier": earlier}

    def write_report(self) -> Path | None:
        """``report.html`` in ``output_dir``: every file of the run (incl. ones done earlier), preview and outputs."""

        rows = [self.rows[file] for file in sorted(self.rows)]
        path = write_inference_report(self.output_dir / "report.html", rows, self.output_dir, self.dataset_dir)
        logger.info("inference report: %s", path)
        return path
