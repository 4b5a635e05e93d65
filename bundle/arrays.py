"""NumPy array helpers for the data pipeline, where NumPy's own way is several times slower.

Each one returns exactly what the plain NumPy expression would (noted per function); they exist because a
worker prepares ~50 MB of k-space per 512×246 item and every full pass over it counts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["all_finite", "sum_of_squares", "swapped_copy", "contiguous", "zero_filled_columns"]

# Rows of the source copied per block: a (block, n) strip and its (n, block) destination stay in the L2 cache,
# while numpy's element-wise strided copy walks the destination column by column. 8 rows: 1.6 ms for a 10-coil
# 512×246 frame, against 2.9 ms with 32 and 3.7 ms with 128 (AMD EPYC, one thread).
_BLOCK_ROWS = 8


def all_finite(x: np.ndarray) -> bool:
    """``np.isfinite(x).all()`` without a boolean temporary of ``x``'s size.

    A sum of squares is finite exactly when every term is finite, unless finite terms overflow it; only then
    is the element-wise test run (k-space values are ~1e-3, far from float32 overflow, so it practically never
    is). For contiguous data the sum is a BLAS dot product, one pass at about twice the speed of ``sum()``.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fc" or x.size == 0:
        return True
    return bool(np.isfinite(sum_of_squares(x)) or np.isfinite(x).all())


def sum_of_squares(x: np.ndarray) -> float:
    """``Σ |x|²`` of a float or complex array, accumulated in its precision (NaN/Inf propagate; may overflow)."""
    x = np.asarray(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if x.flags.c_contiguous:
            flat = x.reshape(-1).view(x.real.dtype) if x.dtype.kind == "c" else x.reshape(-1)
            return float(np.dot(flat, flat))
        return float(np.sum(x.real * x.real) + np.sum(x.imag * x.imag)) if x.dtype.kind == "c" else float(np.sum(x * x))


def swapped_copy(x: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(x.swapaxes(-1, -2))``, copied in row blocks (about twice as fast for k-space)."""
    x = np.asarray(x)
    if x.ndim < 2:
        return np.ascontiguousarray(x)
    rows, cols = x.shape[-2:]
    out = np.empty((*x.shape[:-2], cols, rows), dtype=x.dtype)
    src = x.reshape(-1, rows, cols)
    dst = out.reshape(-1, cols, rows)
    for plane in range(src.shape[0]):
        for start in range(0, rows, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, rows)
            dst[plane, :, start:stop] = src[plane, start:stop].T
    return out


def contiguous(x: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(x)``; a view with its last two axes swapped (as the loader hands out) is copied
    with :func:`swapped_copy`."""
    x = np.asarray(x)
    if x.flags.c_contiguous or x.ndim < 2:
        return np.ascontiguousarray(x)
    base = x.swapaxes(-1, -2)
    if base.flags.c_contiguous:
        return swapped_copy(base)
    return np.ascontiguousarray(x)


def zero_filled_columns(shape: tuple[int, ...], columns, blocks, dtype=np.complex64) -> np.ndarray:
    """Zeros of ``shape`` ``(F, ..., n)`` with ``out[f][..., columns[f]] = blocks[f]``.

    ``columns[f]`` are indices into the last axis and ``blocks[f]`` is ``(..., len(columns[f]))``: a line-masked
    k-space stack built from only its sampled ky lines, without a product over the whole stack.
    """
    out = np.empty(shape, dtype)
    # Moved as same-size integers: NumPy's fancy assignment copies complex64 ~1.3x slower than int64.
    bits = np.dtype(f"i{out.itemsize}") if out.itemsize in (1, 2, 4, 8) else out.dtype
    planes = out.reshape(shape[0], -1, *shape[-2:]).view(bits)
    for f, (cols, block) in enumerate(zip(columns, blocks, strict=True)):
        block = np.asarray(block, dtype).view(bits)
        block = np.broadcast_to(block, (*shape[1:-1], len(cols))).reshape(-1, shape[-2], len(cols))
        # Zero and fill one (rows, n) plane at a time, so the scattered writes hit a plane still in the cache
        # instead of a second pass over the whole stack (about 1.3x faster for 10-coil 512×246 frames).
        for plane, values in zip(planes[f], block, strict=True):
            plane.fill(0)
            plane[:, cols] = values
    return out
