"""k-space operations on one sample: masking, ACS extraction, coil compression, normalisation, targets.

Shapes follow model orientation (ky last): a k-space stack is ``(F, C, nx, ny)`` complex64 with ``F``
stacked neighbour frames and ``C`` coils; a mask stack is ``(F, nx, ny)`` float32 0/1. Functions accept NumPy
arrays, and torch tensors where stated, and return the same kind.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from bundle.arrays import swapped_copy, zero_filled_columns
from bundle.errors import EmptySliceError, MaskMismatchError, NonFiniteDataError, ShapeError
from bundle.mri import centered_bounds, ifft2c, ifft2c_np, rss, rss_np
from bundle.transforms.masks import is_cartesian

__all__ = [
    "NORMALIZATION_MODES",
    "undersample",
    "sampled_lines",
    "extract_acs",
    "acs_window",
    "coil_compression_matrix",
    "apply_coil_compression",
    "coil_compress",
    "normalization_scale",
    "normalize",
    "denormalize",
    "centre_frame_target",
]

NORMALIZATION_MODES = ("none", "max_zf", "percentile_zf")


def _fail(error: type, file: str | os.PathLike | None, problem: str):
    return error.at(file, problem) if file is not None else error(problem)


def undersample(kspace, mask, file: str | os.PathLike | None = None):
    """``kspace ⊙ mask`` with the mask broadcast over coils.

    ``kspace`` is ``(F, C, nx, ny)``; ``mask`` is ``(F, nx, ny)`` (one per frame) or ``(nx, ny)`` (shared).
    NumPy or torch; the result keeps the k-space dtype. A mask that does not fit raises
    :class:`~bundle.errors.MaskMismatchError` (a ``ValueError``), naming ``file`` when given.
    """
    if kspace.ndim != 4:
        raise _fail(ShapeError, file, f"k-space must be (F, C, nx, ny), got shape {tuple(kspace.shape)}")
    fits = mask.ndim in (2, 3) and tuple(mask.shape[-2:]) == tuple(kspace.shape[-2:])
    if mask.ndim == 3:
        fits = fits and mask.shape[0] == kspace.shape[0]
    if not fits:
        raise _fail(
            MaskMismatchError,
            file,
            f"mask of shape {tuple(mask.shape)} does not fit k-space of shape {tuple(kspace.shape)} "
            "(expected (F, nx, ny) or (nx, ny))",
        )
    if isinstance(kspace, torch.Tensor):
        m = torch.as_tensor(mask, device=kspace.device).to(kspace.real.dtype)
        m = m.unsqueeze(-3) if m.ndim == 3 else m
        return kspace * m
    # Cast so that a float64 mask (MATLAB double) does not promote complex64 k-space to complex128.
    m = np.asarray(mask).astype(np.real(kspace).dtype, copy=False)
    lines = sampled_lines(m)
    if lines is not None:
        return _copy_lines(kspace, lines)
    m = m[:, None] if m.ndim == 3 else m
    return np.multiply(kspace, m, out=np.empty(kspace.shape, np.result_type(kspace, m)))


def sampled_lines(mask: np.ndarray) -> np.ndarray | None:
    """``(F|1, ny)`` bool when the 0/1 ``mask`` ``(F, nx, ny)`` or ``(nx, ny)`` samples whole ky lines, else None."""
    m = mask if mask.ndim == 3 else mask[None]
    first = m[:, 0, :]
    if not ((first == 0) | (first == 1)).all() or not (m == first[:, None, :]).all():
        return None
    return first == 1


def _copy_lines(kspace: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """``kspace ⊙ mask`` for a line mask: zeros, then the sampled ky lines copied in (a fraction 1/R of the data).

    Same values as the product (up to the sign of zero), but it touches only the sampled lines of a stack
    that may be a transposed view of the file's order, and writes a C-contiguous result.
    """
    columns = [np.flatnonzero(lines[f if lines.shape[0] > 1 else 0]) for f in range(kspace.shape[0])]
    return zero_filled_columns(kspace.shape, columns, [k[..., cols] for k, cols in zip(kspace, columns)], kspace.dtype)


def extract_acs(kspace, mask_or_width=16, *, radial: bool | None = None, acs_width: int = 16):
    """Calibration k-space: ``kspace (..., nx, ny)`` with everything outside the ACS region set to zero.

    ``mask_or_width`` is either the ACS width (an int; Cartesian unless ``radial=True``) or the sampling
    mask ``(..., nx, ny)``, which then only decides the mask type when ``radial`` is None
    (:func:`~bundle.transforms.masks.is_cartesian`) while the width stays ``acs_width``: a width inferred
    from a random mask can exceed the true 16 lines (``docs/design.md``, "Inferred ACS width"). Cartesian keeps
    the MATLAB-centred ky band for every kx; radial keeps the central ``width×width`` block. NumPy or torch.
    """
    window = acs_window(kspace.shape, mask_or_width, radial=radial, acs_width=acs_width)
    out = torch.zeros_like(kspace) if isinstance(kspace, torch.Tensor) else np.zeros_like(kspace)
    out[window] = kspace[window]
    return out


def acs_window(shape, mask_or_width=16, *, radial: bool | None = None, acs_width: int = 16) -> tuple:
    """Index ``(..., kx slice, ky slice)`` of the ACS region of k-space of ``shape (..., nx, ny)``.

    The rules of :func:`extract_acs`; ``kspace[acs_window(...)]`` is the calibration data without the zeros
    around it (a view).
    """
    if isinstance(mask_or_width, (int, np.integer)) and not isinstance(mask_or_width, bool):
        width = int(mask_or_width)
        radial = bool(radial)
    else:
        width = acs_width
        if radial is None:
            mask = mask_or_width.cpu().numpy() if isinstance(mask_or_width, torch.Tensor) else mask_or_width
            radial = not is_cartesian(mask, acs_width)
    nx, ny = shape[-2:]
    ys = slice(*centered_bounds(ny, width))
    xs = slice(*centered_bounds(nx, width)) if radial else slice(None)
    return (Ellipsis, xs, ys)


def coil_compression_matrix(calib: np.ndarray, num_coils: int) -> np.ndarray:
    """SVD coil-compression matrix ``(num_coils, C)`` complex64 from calibration data ``calib (C, ...)``.

    The rows are the conjugated top left-singular vectors of the ``(C, samples)`` matrix ``A``, so the virtual
    coils are ordered by captured energy. They are computed as the top eigenvectors of the ``C x C`` matrix
    ``A A^H`` (the same subspace as an SVD of ``A``, without touching the samples twice: about 20x faster on a
    whole frame with 20 coils). Each vector's phase is fixed so that its largest entry is real and positive, so
    the result does not depend on the LAPACK build. Zero samples add nothing, so zero-filled k-space works, but
    passing only the calibration region (:func:`acs_window`) is faster.
    """
    calib = np.asarray(calib)
    if calib.ndim < 2:
        raise ShapeError(f"calibration data must be (C, ...), got shape {calib.shape}")
    c = calib.shape[0]
    if not 1 <= num_coils <= c:
        raise ValueError(f"num_coils must be in [1, {c}], got {num_coils}")
    a = calib.reshape(c, -1)
    a = a.astype(np.complex128, copy=False)
    gram = a @ a.conj().T
    _, vectors = np.linalg.eigh(gram)  # ascending eigenvalues
    top = vectors[:, ::-1][:, :num_coils]
    peak = top[np.argmax(np.abs(top), axis=0), np.arange(num_coils)]
    top = top * (np.abs(peak) / np.where(peak == 0, 1, peak))
    return np.ascontiguousarray(top.conj().T).astype(np.complex64)


def apply_coil_compression(kspace: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Virtual coils ``(F, V, nx, ny)`` = ``matrix (V, C)`` applied to every frame of ``kspace (F, C, nx, ny)``."""
    if kspace.ndim != 4 or matrix.ndim != 2 or matrix.shape[1] != kspace.shape[1]:
        raise ShapeError(f"cannot apply a {matrix.shape} compression to k-space of shape {kspace.shape}")
    f, c = kspace.shape[:2]
    # One batched GEMM over (C, nx*ny) per frame: 2-3x faster than the equivalent einsum.
    out = (matrix @ kspace.reshape(f, c, -1)).reshape(f, matrix.shape[0], *kspace.shape[2:])
    return out.astype(kspace.dtype, copy=False)


def coil_compress(kspace: np.ndarray, num_coils: int, calib: np.ndarray | None = None) -> np.ndarray:
    """SVD coil compression of ``kspace (F, C, nx, ny)`` to ``(F, num_coils, nx, ny)`` (NumPy).

    One matrix, applied identically to every frame so the temporal neighbours stay consistent, is computed
    from ``calib (C, ...)``; by default that is the whole centre frame ``kspace[F // 2]``. Returned unchanged
    when ``C <= num_coils``. Compression is linear per pixel, so it commutes with masking.
    """
    if kspace.ndim != 4:
        raise ShapeError(f"k-space must be (F, C, nx, ny), got shape {kspace.shape}")
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    if kspace.shape[1] <= num_coils:
        return kspace
    calib = kspace[kspace.shape[0] // 2] if calib is None else calib
    return apply_coil_compression(kspace, coil_compression_matrix(calib, num_coils))


def _zero_filled_centre(kspace_masked) -> np.ndarray:
    """RSS image ``(nx, ny)`` of the zero-filled centre frame of ``(F, C, nx, ny)`` (float32 NumPy)."""
    centre = kspace_masked[kspace_masked.shape[0] // 2]
    if isinstance(centre, torch.Tensor):
        return rss(ifft2c(centre), dim=0).cpu().numpy()
    return rss_np(ifft2c_np(centre), axis=0).astype(np.float32)


def normalization_scale(kspace_masked, mode: str = "none", file: str | os.PathLike | None = None) -> float:
    """Per-sample scale for ``kspace_masked (F, C, nx, ny)``, rounded to the nearest power of two.

    ``none``: 1. ``max_zf``: 1 / max of the RSS zero-filled image of the centre frame. ``percentile_zf``:
    1 / its 99.5th percentile (NumPy linear interpolation), less sensitive to a single bright pixel.
    Zero data raise :class:`~bundle.errors.EmptySliceError`; NaN/Inf raise
    :class:`~bundle.errors.NonFiniteDataError`.
    """
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"unknown normalisation mode {mode!r}; valid modes are {', '.join(NORMALIZATION_MODES)}")
    if mode == "none":
        return 1.0
    if kspace_masked.ndim != 4:
        raise _fail(ShapeError, file, f"k-space must be (F, C, nx, ny), got shape {tuple(kspace_masked.shape)}")
    image = _zero_filled_centre(kspace_masked)
    if not np.all(np.isfinite(image)):
        raise _fail(NonFiniteDataError, file, "the zero-filled centre frame contains NaN or Inf")
    ref = float(image.max()) if mode == "max_zf" else float(np.percentile(image, 99.5))
    if not ref > 0:
        raise _fail(EmptySliceError, file, f"the zero-filled centre frame is all zero; no {mode} scale exists")
    # A power of two only changes the float exponent, so x * s and (x * s) / s are exact (barring overflow
    # or subnormals, far from k-space values of ~1e-9..1e-2): normalise -> denormalise is bit-exact and
    # the scaled RSS target equals the RSS of the scaled k-space to the last bit.
    return float(2.0 ** round(-math.log2(ref)))


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    return scale


def normalize(x, scale: float):
    """``x * scale`` for a NumPy array or torch tensor, keeping its dtype."""
    scale = _check_scale(scale)
    if isinstance(x, torch.Tensor):
        return x * scale
    return (np.asarray(x) * np.asarray(scale, dtype=np.real(x).dtype)).astype(x.dtype, copy=False)


def denormalize(x, scale: float):
    """Undo :func:`normalize`: ``x / scale`` (exact when ``scale`` is a power of two)."""
    scale = _check_scale(scale)
    if isinstance(x, torch.Tensor):
        return x / scale
    return (np.asarray(x) / np.asarray(scale, dtype=np.real(x).dtype)).astype(x.dtype, copy=False)


def centre_frame_target(kspace_full):
    """Training target of ``kspace_full (F, C, nx, ny)``: the centre frame ``F // 2`` only.

    Returns ``(image (1, nx, ny) float32, kspace_centre (C, nx, ny) complex64)`` where ``image`` is the RSS
    of ``ifft2c`` of the centre frame. NumPy or torch (same kind out).
    """
    if kspace_full.ndim != 4:
        raise ShapeError(f"k-space must be (F, C, nx, ny), got shape {tuple(kspace_full.shape)}")
    centre = kspace_full[kspace_full.shape[0] // 2]
    if isinstance(centre, torch.Tensor):
        centre = centre.to(torch.complex64)
        return rss(ifft2c(centre), dim=0).unsqueeze(0).to(torch.float32), centre
    centre = np.asarray(centre, dtype=np.complex64)
    # The loader may hand out a transposed view: transform in the file's order and transpose only the image.
    stored = centre.swapaxes(-1, -2)
    transposed = not centre.flags.c_contiguous and stored.flags.c_contiguous
    source = stored if transposed else np.ascontiguousarray(centre)
    # |ifft2c(x)| = fftshift(|ifft2(x)|): the ifftshift before the FFT is a roll in k-space, i.e. a linear phase
    # on the image, which the magnitude drops; the fftshift after it commutes with the magnitude. So the two
    # complex shifts become one shift of the real image.
    coils = np.fft.ifft2(source, norm="ortho")
    # Σ_c (re² + im²), coil by coil in place: the same additions in the same order as ``(...).sum(0)`` (so the
    # same bits), without two stack-sized temporaries.
    power = coils[0].real * coils[0].real
    power += coils[0].imag * coils[0].imag
    for coil in coils[1:]:
        term = coil.real * coil.real
        term += coil.imag * coil.imag
        power += term
    image = np.fft.fftshift(np.sqrt(power, out=power))
    if transposed:
        return np.ascontiguousarray(image.T, dtype=np.float32)[None], swapped_copy(stored)
    return image.astype(np.float32, copy=False)[None], source
