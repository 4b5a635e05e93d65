"""Assemble slice predictions into volumes and write the challenge submission, NIfTI and a PNG preview."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from tqdm import tqdm

from bundle.data.formats import format_named, format_of_path
from bundle.data.layout import release_of_path
from bundle.data.records import volume_source
from bundle.files import discard_partial
from bundle.io.dicom import as_flag
from bundle.io.nifti import axis4_unit, default_frame_time, default_voxel_size, save_nifti
from bundle.io.paths import check_output_dir, derive_output_path, submission_path
from bundle.io.preview import save_preview_png
from bundle.io.submission import save_submission
from bundle.metrics import matlab_shape, run4ranking, series_type
from bundle.workflows.exports import ExtraOutputs
from bundle.workflows.sharding import is_sharded, progress, rank_note

__all__ = ["ReconstructionWriter"]

logger = logging.getLogger(__name__)


def _as_list(values) -> list:
    return values.tolist() if isinstance(values, torch.Tensor) else list(values)


def _has_submission(file: str) -> bool:
    """Whether an input has a challenge submission file (CMRxRecon files do; scanner raw data does not)."""
    fmt = format_of_path(file)
    return fmt is None or fmt.submission


def _scan_geometry(source: Mapping | None, nz: int):
    """``(ScanGeometry or None, scan info or None)`` of a volume, from its file's format."""
    if not source or not source.get("format"):
        return None, None
    fmt = format_named(source["format"])
    options = {"group": source.get("raw_group")}
    geometry = fmt.geometry(source["path"], source.get("entry"), **options)
    if geometry is not None and geometry.nz != nz:
        raise ValueError(f"{source['path']}: geometry of {geometry.nz} slices for a volume of {nz}")
    return geometry, fmt.scan_info(source["path"], source.get("entry"), **options)


def _frame_time(geometry, default: float) -> float:
    """ms between frames: the median step of the scanner's trigger times, when it has them."""
    times = geometry.trigger_times_ms
    if times is None or len(times) < 2:
        return default
    step = float(np.median(np.diff(times)))
    return step if step > 0 else default


class ReconstructionWriter:
    """Collects ``pred`` images per file and writes each file's outputs as soon as its last slice arrives.

    For every undersampled input ``<dataset_dir>/.../<name>.mat`` it writes, under ``output_dir``:

    * ``submission/Task<k>/<Modality>/<Set>/Task<k>/Pxxx/<name>.mat``: ``img4ranking`` (single, MAT v5), the
      run4Ranking selection and crop of the magnitude volume;
    * ``nifti/<relative path>.nii.gz``: the whole magnitude volume float32, ``(x, y, slice, time)`` for cine-like
      series, ``(x, y, slice, contrast)`` with a unit-less 4th step for mapping, ``(x, y, slice)`` for BlackBlood;
      ``descrip`` names the model and the acceleration;
    * ``nifti/<relative path>.json``: its sidecar (:mod:`bundle.io.sidecar`);
    * ``preview/<relative path>.png``: a montage of the slices, drawn as viewers draw the NIfTI;
    * ``dicom/<relative path>/IM_z###_t###.dcm`` with ``write_dicom`` (:mod:`bundle.io.dicom`);
    * ``report.html`` at the end: every file of the run (and files found done earlier), preview and output paths.

    The prediction is divided by the item's normalisation ``scale`` so outputs are in the input's units.

    Args:
        dataset_dir: root the inputs were found under (output paths mirror paths relative to it).
        output_dir: where to write; must not be inside ``dataset_dir``.
        voxel_size, frame_time: NIfTI spacing overrides; ``None`` uses the per-series defaults of
            :mod:`bundle.io.nifti`.
        write_submission, write_nifti, write_preview: switch each output on or off.
        report: a :class:`~bundle.workflows.handlers.BadDataReport`; a file that cannot be written is recorded
            there and the other files are still written. Without one, the error is raised.
        model_path, network: what the sidecars name as the model (``network.yaml`` beside ``model_path`` and
            its SHA-256, else ``network.network_args``).
        write_dicom, write_html: the DICOM series and the ``report.html`` index.
    """

    def __init__(
        self,
        dataset_dir: str,
        output_dir: str,
        voxel_size=None,
        frame_time: float | None = None,
        write_submission: bool = True,
        write_nifti: bool = True,
        write_preview: bool = True,
        progress: bool = True,
        report=None,
        model_path: str | None = None,
        network=None,
        write_dicom: bool = False,
        write_html: bool = True,
    ):

        check_output_dir(output_dir, dataset_dir)
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.voxel_size = voxel_size
        self.frame_time = frame_time
        self.write_submission = write_submission
        self.write_nifti = write_nifti
        self.write_preview = write_preview
        self.progress = progress
        self.report = report
        self._volumes: dict[str, dict] = {}
        self._failed: set[str] = set()  # files with a bad slice: their remaining slices are ignored
        # Raw files whose slices are no regular stack: no single NIfTI affine exists, so only DICOM states them.
        self._no_nifti: set[str] = set()
        self.written: list[Path] = []

        self.extras = ExtraOutputs(self.dataset_dir, self.output_dir, model_path, network, as_flag(write_dicom))
        self.write_html = as_flag(write_html)

    def output_paths(self, file: str) -> list[Path]:
        """Every output this writer produces for the input ``file`` (with its current switches)."""

        paths = []
        with_nifti = self.write_nifti and file not in self._no_nifti
        if self.write_submission and _has_submission(file):
            paths.append(submission_path(file, self.dataset_dir, self.output_dir / "submission"))
        if with_nifti:
            paths.append(derive_output_path(file, self.dataset_dir, self.output_dir / "nifti", new_suffix=".nii.gz"))
        if self.write_preview:
            paths.append(derive_output_path(file, self.dataset_dir, self.output_dir / "preview", new_suffix=".png"))
        return paths + self.extras.output_paths(file, with_nifti)

    def is_done(self, file: str) -> bool:
        """Whether every output of ``file`` exists. Each is written atomically, so one that exists is complete.

        A file found done is listed in this run's ``report.html`` as written by an earlier run.
        """
        paths = self.output_paths(file)
        done = all(path.is_file() for path in paths)
        if done:
            self.extras.note(file, paths, earlier=True)
        return done

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._check_complete)
        if self.write_html:  # under torchrun, rank 0 writes it for all ranks (sharding.gather_inference)
            engine.add_event_handler(Events.COMPLETED, lambda _: None if is_sharded() else self.extras.write_report())

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        pred = output["pred"][0] if isinstance(output["pred"], (tuple, list)) else output["pred"]
        label = output["label"]
        images = pred.detach().float()[:, 0].cpu().numpy()
        files = _as_list(label["file"])
        zs, ts = _as_list(label["z"]), _as_list(label["t"])
        nzs, nts = _as_list(label["nz"]), _as_list(label["nt"])
        series = _as_list(label["series"])
        scales = label.get("scale")
        scales = _as_list(scales) if scales is not None else [1.0] * len(files)
        bad = _as_list(label["bad"]) if "bad" in label else [""] * len(files)
        # Scanner raw data: the series of a file (entry), its HDF5 group and format, for outputs and geometry.
        raw = {key: _as_list(label[key]) for key in ("entry", "raw_group", "format") if key in label}
        finished = 0  # files completed by this batch (written, or given up): for the all-ranks progress bar
        for i, path in enumerate(files):
            source = {key: values[i] or None for key, values in raw.items()}
            file = volume_source(path, source.get("entry"))
            if file in self._failed:
                continue
            if bad[i]:
                # A slice of this file failed the loader's value checks: nothing is written for the file.
                self._failed.add(file)
                finished += 1
                entry = self._volumes.pop(file, None)
                if entry is not None:
                    entry["bar"].close()
                logger.error("skipping %s; no output written for it", bad[i])
                if self.report is None:
                    raise ValueError(f"{bad[i]}; no output written for it")
                self.report.record(bad[i])
                continue
            entry = self._volumes.get(file)
            if entry is None:
                nz, nt = int(nzs[i]), int(nts[i])
                entry = {
                    "volume": np.zeros(images.shape[1:] + (nz, nt), dtype=np.float32),
                    "filled": np.zeros((nz, nt), dtype=bool),
                    "series": str(series[i]),
                    "meta": {
                        key: _as_list(label[key])[i]
                        for key in ("modality", "patient", "pattern", "acceleration")
                        if key in label
                    },
                    "source": {"path": path, **source},
                    "bar": tqdm(
                        total=nz * nt, desc=Path(file).name, unit="slice", disable=not self.progress or is_sharded()
                    ),
                }
                self._volumes[file] = entry
            entry["volume"][:, :, int(zs[i]), int(ts[i])] = images[i] / float(scales[i])
            entry["filled"][int(zs[i]), int(ts[i])] = True
            entry["bar"].update(1)
            if entry["filled"].all():
                finished += 1
                entry["bar"].close()
                del self._volumes[file]
                try:
                    self._write(file, entry)
                    if self.report is not None:
                        self.report.note_written(file)
                except Exception as err:
                    if self.report is None:
                        raise
                    message = str(err) if str(err).startswith(file) else f"{file}: {err}"
                    logger.error("could not write outputs: %s", message)
                    self.report.record(message)
        progress().update(slices=len(files), files=finished)

    def _write(self, file: str, entry: Mapping) -> None:

        volume = entry["volume"]
        series = entry["series"]
        is_4d = series_type(series) == "blackblood"
        # BlackBlood has no frames: the NIfTI, preview and DICOM get the 3-D (x, y, slice) volume.
        image = volume[:, :, :, 0] if is_4d else volume
        geometry, scan_info = _scan_geometry(entry.get("source"), volume.shape[2])
        voxel = self.voxel_size if self.voxel_size is not None else default_voxel_size(series)
        frame_time = self.frame_time if self.frame_time is not None else default_frame_time(series)
        if geometry is not None:  # the scanner's own spacing and frame times, unless the config sets them
            if self.voxel_size is None:
                voxel = (*geometry.pixel_spacing, geometry.slice_spacing or geometry.slice_thickness)
            if self.frame_time is None:
                frame_time = _frame_time(geometry, frame_time)
        info = self.extras.describe(
            file,
            series,
            entry.get("meta", {}),
            image.shape,
            voxel,
            self.voxel_size,
            frame_time,
            self.frame_time,
            geometry=geometry,
            scan_info=scan_info,
        )
        if not np.isfinite(volume).all():
            raise ValueError(f"{file}: the reconstruction contains NaN or Inf; nothing was written for it")
        if self.write_nifti and geometry is not None and not geometry.is_regular_stack:
            self._no_nifti.add(file)
            logger.warning(
                "%s: its slices are not parallel and equally spaced, so no NIfTI affine can state them; "
                "no NIfTI written (the DICOM series states every slice)",
                file,
            )
        for path in self.output_paths(file):  # a run killed while writing this file left temporary files
            for leftover in discard_partial(path):
                logger.warning("removed %s, half-written by an earlier run that was stopped", leftover)
        if self.write_submission and _has_submission(file):
            path = submission_path(file, self.dataset_dir, self.output_dir / "submission")
            selected = run4ranking(volume[:, :, :, 0] if is_4d else volume, series, coil_combined=True)
            release = release_of_path(file)
            if release is not None and release.matlab_shaped_submission:
                selected = matlab_shape(selected)  # the shape of the GT file, which the 2025 scorer compares
            save_submission(path, selected)
            self.written.append(Path(path))
        if self.write_nifti and file not in self._no_nifti:
            path = derive_output_path(file, self.dataset_dir, self.output_dir / "nifti", new_suffix=".nii.gz")
            unit = axis4_unit(series)
            step = 1.0 if unit == "unknown" else frame_time
            save_nifti(
                path,
                image,
                voxel_size=voxel,
                frame_time=step,
                time_unit=unit,
                description=info["description"],
                geometry=geometry,
            )
            self.written.append(Path(path))
            self.written.append(self.extras.write_sidecar(path, info))
        if self.write_preview:
            path = derive_output_path(file, self.dataset_dir, self.output_dir / "preview", new_suffix=".png")
            save_preview_png(path, image)
            self.written.append(Path(path))
        self.written.extend(self.extras.write_dicom(file, image, info, geometry=geometry, scan_info=scan_info))
        self.extras.note(file, [p for p in self.output_paths(file) if p.is_file()])
        logger.info("wrote outputs of %s%s", file, rank_note())

    def _check_complete(self, engine: Engine) -> None:
        for file, entry in self._volumes.items():
            entry["bar"].close()
            missing = int((~entry["filled"]).sum())
            message = f"{file}: {missing} slice(s) never arrived; no output written for it"
            logger.error(message)
            if self.report is not None:
                self.report.record(message)
