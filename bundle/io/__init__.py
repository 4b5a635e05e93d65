"""Output side of the bundle: safe paths, atomic writes, challenge submissions, NIfTI export and previews.

* :mod:`bundle.io.paths`: mirrored output paths, the submission layout, refusal to write into the
  dataset or over an input, and :func:`atomic_write` used by every writer below.
* :mod:`bundle.io.submission`: ``img4ranking`` as MAT v5 (the format the challenge evaluator reads).
* :mod:`bundle.io.nifti`: 4-D ``(x, y, slice, time)`` float32 NIfTI for viewers.
* :mod:`bundle.io.preview`: 8-bit PNG montages for a quick look.
"""

from __future__ import annotations

from bundle.io.nifti import (
    DEFAULT_FRAME_TIMES_MS,
    DEFAULT_VOXEL_SIZES,
    default_frame_time,
    default_voxel_size,
    load_nifti,
    save_nifti,
    series_key,
)
from bundle.io.paths import (
    EVALUATION_SETS,
    KNOWN_MODALITIES,
    atomic_write,
    check_output_dir,
    derive_output_path,
    ensure_not_input,
    relative_input_path,
    submission_path,
)
from bundle.io.preview import montage, save_preview_png
from bundle.io.submission import SUBMISSION_KEY, load_submission, save_submission

__all__ = [
    "DEFAULT_FRAME_TIMES_MS",
    "DEFAULT_VOXEL_SIZES",
    "EVALUATION_SETS",
    "KNOWN_MODALITIES",
    "SUBMISSION_KEY",
    "atomic_write",
    "check_output_dir",
    "default_frame_time",
    "default_voxel_size",
    "derive_output_path",
    "ensure_not_input",
    "load_nifti",
    "load_submission",
    "montage",
    "relative_input_path",
    "save_nifti",
    "save_preview_png",
    "save_submission",
    "series_key",
    "submission_path",
]
