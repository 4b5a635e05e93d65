"""Core MRI maths shared by the data pipeline, the networks, the losses and the metrics.

Conventions (also in ``docs/README.md``):

* k-space and coil images are complex tensors whose last two axes are ``(nx, ny)``: readout, then
  phase encode. ``ny`` is the undersampled axis.
* ``fft2c``/``ifft2c`` are centred and orthonormal over the last two axes:
  ``image = fftshift(ifft2(ifftshift(k)))``.
* ``rhu`` is MATLAB ``round`` (half away from zero); Python's ``round`` is half-to-even and differs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "zero_filled_image",
    "measure_acs_width",
    "rhu",
    "centered_bounds",
    "centered_window",
    "is_cartesian_mask",
    "roi_size",
    "roi_bounds",
    "crop_roi",
    "fft2c",
    "ifft2c",
    "fft2c_np",
    "ifft2c_np",
    "rss",
    "rss_np",
    "neighbour_frame_indices",
]


def rhu(x: float) -> int:
    """MATLAB ``round``: round half away from zero."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def centered_bounds(n: int, size: int) -> tuple[int, int]:
    """0-based half-open ``[start, start + size)`` of MATLAB's centred crop/pad of ``size`` out of ``n``.

    start = floor(n/2) + ceil(-size/2). Used for the ACS band and the challenge ROI.
    """
    if size > n or size < 0:
        raise ValueError(f"cannot take a centred window of {size} out of {n}")
    start = n // 2 + math.ceil(-size / 2)
    return start, start + size


def centered_window(n: int, size: int, device: torch.device) -> torch.Tensor:
    """Bool ``(n,)`` marking :func:`centered_bounds` ``(n, size)``; a ``size`` above ``n`` marks the whole axis."""
    start, stop = centered_bounds(n, min(size, n))
    idx = torch.arange(n, device=device)
    return (idx >= start) & (idx < stop)


def is_cartesian_mask(mask: torch.Tensor, acs_size: int = 16) -> torch.Tensor:
    """HyperCMR's mask-type rule: ``(B,)`` bool, True where the central ``acs_size`` ky columns are fully sampled.

    ``mask`` is ``(B, ..., ny)`` bool; the check covers every kx row and frame present. A radial mask fills only
    a central block there (``docs/design.md``, "Radial ACS").
    """
    cols = centered_window(mask.shape[-1], acs_size, mask.device)
    return (mask | ~cols).flatten(1).all(dim=1)


def roi_size(nx: int, ny: int) -> tuple[int, int]:
    """Challenge ROI ``(rhu(nx/3), rhu(ny/2))``."""
    return rhu(nx / 3), rhu(ny / 2)


def roi_bounds(nx: int, ny: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Row and column bounds of the challenge ROI for an ``(nx, ny)`` image."""
    sx, sy = roi_size(nx, ny)
    return centered_bounds(nx, sx), centered_bounds(ny, sy)


def crop_roi(x, axes: tuple[int, int] = (-2, -1)):
    """Centre-crop two axes ``(nx, ny)`` of a tensor or array to the challenge ROI (the last two by default).

    ``axes=(0, 1)`` crops MATLAB-order volumes ``(nx, ny, ...)`` as ``run4Ranking`` does.
    """
    ax, ay = (a % x.ndim for a in axes)
    (r0, r1), (c0, c1) = roi_bounds(x.shape[ax], x.shape[ay])
    index = [slice(None)] * x.ndim
    index[ax], index[ay] = slice(r0, r1), slice(c0, c1)
    return x[tuple(index)]


def _checkerboard(h: int, w: int, device: torch.device) -> torch.Tensor:
    """``(-1)^(i + j)`` as a float32 ``(h, w)`` tensor."""
    i = torch.arange(h, device=device).unsqueeze(1)
    j = torch.arange(w, device=device).unsqueeze(0)
    return (1 - 2 * ((i + j) % 2)).to(torch.float32)


def _centred_fft2(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``fftshift(F(ifftshift(x)))`` over the last two axes, ``F`` the orthonormal (inverse) 2-D FFT.

    For even ``(h, w)`` both shifts are a roll by half the size, i.e. a ``(-1)^n`` modulation on the other side
    of the transform, so ``fft2c(x) = c·s ⊙ F(s ⊙ x)`` with ``s = (-1)^(i+j)`` and ``c = (-1)^(h/2 + w/2)`` (the
    same for the inverse). Two multiplications by ±1 (exact) replace the two 2-axis rolls (four full copies) in the
    forward and again in the backward pass: 1.2x on a cascade's coil transforms (``docs/benchmarks.md``). Results
    agree with the shift form to FFT rounding (bit for bit at power-of-two sizes). Odd sizes keep the shifts.
    """
    h, w = x.shape[-2], x.shape[-1]
    if h % 2 == 0 and w % 2 == 0:
        s = _checkerboard(h, w, x.device)
        c = -1.0 if (h // 2 + w // 2) % 2 else 1.0
        y = x * s
        y = torch.fft.ifft2(y, norm="ortho") if inverse else torch.fft.fft2(y, norm="ortho")
        return y * (s * c)
    y = torch.fft.ifftshift(x, dim=(-2, -1))
    y = torch.fft.ifft2(y, norm="ortho") if inverse else torch.fft.fft2(y, norm="ortho")
    return torch.fft.fftshift(y, dim=(-2, -1))


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes of a complex tensor ``(..., nx, ny)``."""
    return _centred_fft2(x, inverse=False)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT over the last two axes of a complex tensor ``(..., nx, ny)``."""
    return _centred_fft2(x, inverse=True)


def fft2c_np(x: np.ndarray, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """NumPy twin of :func:`fft2c` over ``axes``."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def ifft2c_np(x: np.ndarray, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """NumPy twin of :func:`ifft2c` over ``axes``."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def rss(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)`` of a complex (or real) tensor.

    Where every coil is zero the result is 0 with a zero gradient: a plain ``sqrt`` has an infinite derivative
    at 0, which turns the gradient into NaN. ``torch.linalg.vector_norm`` has no such NaN either, but its
    values differ from this sum in the last bit for about a third of the pixels, and every stored result of the
    bundle (validation SSIM, submissions, NIfTI) was computed with this sum.
    """
    power = (x.real.square() + x.imag.square()).sum(dim) if x.is_complex() else x.square().sum(dim)
    nonzero = power > 0
    root = torch.sqrt(torch.where(nonzero, power, torch.ones_like(power)))
    return torch.where(nonzero, root, torch.zeros_like(power))


def rss_np(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """NumPy twin of :func:`rss`."""
    return np.sqrt((np.abs(x) ** 2).sum(axis))


def neighbour_frame_indices(t: int, nt: int, num_adj: int = 5) -> list[int]:
    """Frame indices stacked around target frame ``t`` of a series with ``nt`` frames.

    Circular wrap for ``nt >= num_adj``; for short series the span shrinks to ``floor(nt/2)`` on each side
    and the edge frames are replicated (nt=3 gives ``[t-1, t-1, t, t+1, t+1]`` mod 3; nt=1 gives all
    zeros). Centre entry is always ``t``.
    """
    if nt < 1:
        raise ValueError(f"a series needs at least one frame, got nt={nt}")
    if not 0 <= t < nt:
        raise ValueError(f"frame {t} is outside a series of {nt} frames")
    if num_adj < 1 or num_adj % 2 == 0:
        raise ValueError(f"num_adj must be a positive odd number, got {num_adj}")
    half = num_adj // 2
    lo = max(-half, -(nt // 2))
    hi = min(half, nt // 2)
    idx = [(t + d) % nt for d in range(lo, hi + 1)]
    return [idx[0]] * (lo + half) + idx + [idx[-1]] * (half - hi)


def zero_filled_image(masked_kspace: torch.Tensor, num_adj_frames: int) -> torch.Tensor:
    """RSS of the centre frame of ``(B, F*C, H, W)`` complex masked k-space → ``(B, 1, H, W)``."""
    coils = masked_kspace.shape[1] // num_adj_frames
    centre = num_adj_frames // 2
    k = masked_kspace[:, centre * coils : (centre + 1) * coils]
    return rss(ifft2c(k.to(torch.complex64)), dim=1).unsqueeze(1)


def _centre_run(sampled: np.ndarray, centre: int) -> int:
    """Length of the run of True values of a 1-D array that contains index ``centre`` (0 when it is False)."""
    if not sampled[centre]:
        return 0
    lo, hi = centre, centre
    while lo > 0 and sampled[lo - 1]:
        lo -= 1
    while hi < len(sampled) - 1 and sampled[hi + 1]:
        hi += 1
    return hi - lo + 1


def measure_acs_width(mask) -> int:
    """ACS width of an official mask, measured as the challenge's own reader does.

    ``mask`` is in file (h5py) order, ``(ny, nx)`` or ``(nt, ny, nx)``; a ky line counts only when it is sampled
    for every kx in every frame. The width is the number of contiguous such lines around the centre line
    ``ceil(ny/2)`` (MATLAB's 1-based index; ``readData.m`` of the CMRxRecon2025 demo code). A radial mask samples
    not whole lines; its width is then the side of the largest square around the centre sampled in every frame
    (the 20×20 block of CMRxRecon2025's radial masks; spokes through the centre do not widen a square).
    """
    m = np.asarray(mask) != 0
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"a mask is (ny, nx) or (nt, ny, nx), got shape {m.shape}")
    every = m.all(axis=0)  # (ny, nx): sampled in every frame
    ny, nx = every.shape
    cy = math.ceil(ny / 2) - 1
    if (m == m[:, :, :1]).all():  # Cartesian: every frame samples whole ky lines
        return _centre_run(every[:, 0], cy)
    # Grow a square placed as the generator places its ACS block (0-based from n//2 - side//2) while it stays
    # fully sampled.
    side = 0
    while side < min(ny, nx):
        lo_y, lo_x = ny // 2 - (side + 1) // 2, nx // 2 - (side + 1) // 2
        if not every[lo_y : lo_y + side + 1, lo_x : lo_x + side + 1].all():
            break
        side += 1
    return side
