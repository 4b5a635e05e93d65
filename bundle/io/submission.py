"""Challenge submission files: one MAT v5 file per undersampled input, variable ``img4ranking``.

Why MAT v5 (``scipy.io.savemat``) and not v7.3/HDF5 (docs/design.md, "Data format"): the evaluator first tries
``scipy.io.loadmat``, which reads v5 in MATLAB axis order; only on failure does it fall back to h5py, which
reports the axes reversed and is *not* transposed back, so a v7.3 submission would be scored with its axes
swapped. MATLAB's ``load`` reads v5 as well.

The array handed in is the already-selected ``img4ranking`` from ``bundle.metrics.run4ranking``: real,
coil-combined magnitude, MATLAB order ``(sx, sy, nz_sel, nt_sel)`` (BlackBlood: ``(sx, sy, nz_sel)``).
This module only validates and writes it; it never crops or reorders.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from bundle.data.matio import write_mat_v5
from bundle.errors import MatFileError, MissingKeyError, NonFiniteDataError, ShapeError

__all__ = ["SUBMISSION_KEY", "save_submission", "load_submission"]

SUBMISSION_KEY = "img4ranking"


def _validated(path: str | os.PathLike, img4ranking) -> np.ndarray:
    arr = np.asarray(img4ranking)
    if np.iscomplexobj(arr):
        raise ShapeError.at(path, "img4ranking must be a real magnitude image (coil-combined RSS), not complex")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ShapeError.at(path, f"img4ranking must be numeric, got dtype {arr.dtype}")
    if not 2 <= arr.ndim <= 4:
        raise ShapeError.at(
            path, f"img4ranking must be (sx, sy[, nz_sel[, nt_sel]]) in MATLAB order, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ShapeError.at(path, f"img4ranking is empty (shape {arr.shape})")
    arr = arr.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise NonFiniteDataError.at(
            path, f"img4ranking has {bad} NaN/Inf value(s) out of {arr.size}; refusing to write a submission"
        )
    return arr


def save_submission(path: str | os.PathLike, img4ranking) -> Path:
    """Write ``img4ranking`` (float32, shape kept as given) to a MAT v5 file at ``path``, atomically.

    Args:
        path: destination ``.mat`` file (see :func:`bundle.io.paths.submission_path`).
        img4ranking: real array in MATLAB axis order, ``(sx, sy, nz_sel, nt_sel)`` or ``(sx, sy, nz_sel)``;
            cast to single precision as the challenge requires.

    Raises:
        ShapeError: complex, non-numeric, empty, or not 2- to 4-D.
        NonFiniteDataError: any NaN or Inf (the challenge metrics would silently become NaN).
    """
    dest = Path(path)
    if dest.suffix != ".mat":
        raise ValueError(f"{dest}: a submission file must end in .mat")
    arr = _validated(dest, img4ranking)

    # The one v5 writer of the bundle; it takes h5py (reversed) axis order and reverses it back on disk.
    write_mat_v5(dest, **{SUBMISSION_KEY: arr.T})
    return dest


def load_submission(path: str | os.PathLike) -> np.ndarray:
    """Read ``img4ranking`` back from a submission file (MATLAB axis order, as written).

    Raises:
        MatFileError: not a readable MAT v4/v5 file (e.g. v7.3/HDF5, which a submission must not be).
        MissingKeyError: no ``img4ranking`` variable.
    """
    try:
        contents = scipy.io.loadmat(path)
    except (NotImplementedError, ValueError, OSError, scipy.io.matlab.MatReadError) as exc:
        raise MatFileError.at(path, f"cannot be read as a MAT v5 submission file: {exc}") from exc
    if SUBMISSION_KEY not in contents:
        names = sorted(k for k in contents if not k.startswith("__"))
        raise MissingKeyError.at(path, f"has no variable {SUBMISSION_KEY!r} (found {names})")
    return contents[SUBMISSION_KEY]
