"""CMRxRecon2024 sampling masks (``docs/design.md``, "Masks"), built with NumPy.

Every mask is float32 0/1 in model orientation: ky (phase encode, the undersampled axis) is the **last**
axis. 1-D masks are ``(ny,)``, per-frame line masks ``(nt, ny)`` and full masks ``(nt, nx, ny)``.

The acceleration ``R`` excludes the ACS lines, as in the challenge, so the effective acceleration is lower
than ``R``. The ACS band is MATLAB-centred: ``[ny//2 + ceil(-w/2), ... + w)``, i.e. ``[ny//2 - 8, ny//2 + 8)``
for the default width 16.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from bundle.mri import centered_bounds, is_cartesian_mask, measure_acs_width, rhu

__all__ = [
    "PATTERNS",
    "MAX_ACCELERATION",
    "canonical_pattern",
    "acs_bounds",
    "uniform_mask",
    "kt_uniform_mask",
    "kt_gaussian_mask",
    "radial_beam_count",
    "kt_radial_mask",
    "make_mask",
    "is_cartesian",
    "sampled_fraction",
    "effective_acceleration",
    "measure_acs_width",
    "as_int",
]

#: Official pattern names, as they appear in the challenge file names.
PATTERNS = ("Uniform", "ktUniform", "ktGaussian", "ktRadial")

#: Largest accepted R. The official values stop at 24; beyond ~64 a frame of any known size keeps at most a
#: handful of non-ACS lines, so a larger value is almost certainly a configuration typo.
MAX_ACCELERATION = 64

_ALIASES = {name.lower(): name for name in PATTERNS}
_ALIASES.update({"kt_uniform": "ktUniform", "kt_gaussian": "ktGaussian", "kt_radial": "ktRadial"})


def canonical_pattern(pattern: str) -> str:
    """Official spelling of a pattern name; accepts any case and the ``kt_uniform``-style aliases."""
    if isinstance(pattern, str):
        name = _ALIASES.get(pattern.strip().lower())
        if name is not None:
            return name
    raise ValueError(
        f"unknown sampling pattern {pattern!r}; valid names are {', '.join(PATTERNS)} (any case, or "
        "'kt_uniform', 'kt_gaussian', 'kt_radial')"
    )


def as_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; integral floats are accepted (YAML gives ``4.0``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif math.isfinite(value) and float(value).is_integer():
        out = int(value)
    else:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if out < minimum or (maximum is not None and out > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}, got {value!r}")
    return out


def _check_acceleration(acceleration) -> int:
    return as_int("acceleration", acceleration, 1, MAX_ACCELERATION)


def _check_acs(ny: int, acs_width) -> int:
    acs_width = as_int("acs_width", acs_width, 0)
    if ny <= acs_width:
        raise ValueError(f"ny={ny} must exceed the ACS width {acs_width}")
    return acs_width


def acs_bounds(ny: int, width: int = 16) -> tuple[int, int]:
    """0-based half-open ``[start, stop)`` of the MATLAB-centred ACS band of ``width`` lines out of ``ny``."""
    ny = as_int("ny", ny, 1)
    width = _check_acs(ny, width)
    return centered_bounds(ny, width)


def uniform_mask(ny: int, acceleration: int, acs_width: int = 16, offset: int = 0) -> np.ndarray:
    """Task 1 equispaced mask ``(ny,)``: ``(ky - offset) % R == 0`` or ky in the ACS band.

    ``offset=0`` is the official ``mask(:, 1:R:end) = 1``.
    """
    ny = as_int("ny", ny, 1)
    r = _check_acceleration(acceleration)
    offset = as_int("offset", offset, 0, r - 1)
    lo, hi = acs_bounds(ny, acs_width)
    ky = np.arange(ny)
    mask = (ky - offset) % r == 0
    mask[lo:hi] = True
    return mask.astype(np.float32)


def kt_uniform_mask(
    nt: int, ny: int, acceleration: int, acs_width: int = 16, reference_odd_nt: bool = False
) -> np.ndarray:
    """Task 2 ktUniform mask ``(nt, ny)``: the sheared lattice ``(ky - t) % R == 0`` plus the ACS band.

    With ``reference_odd_nt=True`` and odd ``nt`` the lattice points are moved the way the official generator
    moves them (``docs/design.md``, "ktUniform with odd nt"; derived from a port, not confirmed against an
    official file): a point with ``ky < ny/2`` goes to ``(ky + ny/2, t - 1)``, one with ``ky >= ny/2`` to
    ``(ky - ny/2, t)``, and those that land on ``t = -1`` collapse onto ``(ky=0, t=0)``. Even ``nt`` is unaffected.
    """
    nt = as_int("nt", nt, 1)
    ny = as_int("ny", ny, 1)
    r = _check_acceleration(acceleration)
    lo, hi = acs_bounds(ny, acs_width)
    t, ky = np.meshgrid(np.arange(nt), np.arange(ny), indexing="ij")
    lattice = (ky - t) % r == 0
    if reference_odd_nt and nt % 2 == 1:
        if ny % 2:
            # The generator's ky + ny/2 is not a line index for odd ny; there is nothing faithful to copy.
            raise ValueError(f"reference_odd_nt needs an even ny, got ny={ny}")
        half = ny // 2
        pt, pky = np.nonzero(lattice)
        low = pky < half
        new_t = np.where(low, pt - 1, pt)
        new_ky = np.where(low, pky + half, pky - half)
        collapsed = new_t < 0
        new_t[collapsed] = 0
        new_ky[collapsed] = 0
        lattice = np.zeros_like(lattice)
        lattice[new_t, new_ky] = True
    lattice[:, lo:hi] = True
    return lattice.astype(np.float32)


def _gaussian_weights(ny: int, alpha: float) -> np.ndarray:
    """Line probabilities ``P(ky) ∝ 0.1 + α/(1-α)·exp(-(ky - ny//2)² / σ²)`` with ``σ = ny/5``."""
    sigma = ny / 5.0
    ky = np.arange(ny, dtype=np.float64)
    w = 0.1 + alpha / (1.0 - alpha) * np.exp(-((ky - ny // 2) ** 2) / sigma**2)
    return w / w.sum()


def _place_unique(draws: np.ndarray, ny: int) -> np.ndarray:
    """Boolean ``(ny,)`` holding each draw; a repeated draw moves to the nearest free ky (tie: lower ky).

    Draws are placed in order, so the result is a deterministic function of the draw sequence. With more
    draws than lines the surplus is dropped (every line is then taken).
    """
    taken = np.zeros(ny, dtype=bool)
    for ky in draws.tolist():
        if taken.all():
            break
        if taken[ky]:
            for dist in range(1, ny):
                if ky - dist >= 0 and not taken[ky - dist]:
                    ky -= dist
                    break
                if ky + dist < ny and not taken[ky + dist]:
                    ky += dist
                    break
        taken[ky] = True
    return taken


def kt_gaussian_mask(
    nt: int,
    ny: int,
    acceleration: int,
    rng: np.random.Generator,
    acs_width: int = 16,
    alpha: float = 0.2,
) -> np.ndarray:
    """Task 2 ktGaussian mask ``(nt, ny)``: per frame ``rhu(ny/R)`` distinct Gaussian-weighted lines, plus ACS.

    Each frame draws ``n = rhu(ny/R)`` indices with replacement from ``P(ky) ∝ 0.1 + 0.25·exp(-(ky - ny//2)²/σ²)``,
    ``σ = ny/5`` (0.25 = α/(1-α) for α = 0.2; σ², not 2σ²), then moves duplicates to the nearest empty ky of
    the same frame, so every frame holds exactly ``n`` drawn lines before the ACS band is added. The
    official seed is unknown, so this reproduces the distribution, not the official files.
    """
    nt = as_int("nt", nt, 1)
    ny = as_int("ny", ny, 1)
    r = _check_acceleration(acceleration)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not (isinstance(alpha, numbers.Real) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    lo, hi = acs_bounds(ny, acs_width)
    n = rhu(ny / r)
    p = _gaussian_weights(ny, float(alpha))
    mask = np.zeros((nt, ny), dtype=bool)
    for t in range(nt):
        mask[t] = _place_unique(rng.choice(ny, size=n, p=p), ny)
    mask[:, lo:hi] = True
    return mask.astype(np.float32)


def radial_beam_count(acceleration: int) -> int:
    """Number of beams ``B = floor(180 / (0.6 R))`` of a ktRadial frame (75, 37, 25, 18, 15, 12 for R = 4..24).

    Computed as the exact integer ``300 // R``, which equals the float formula for every integer R in 1..300.
    """
    return 300 // _check_acceleration(acceleration)


def _radial_line(a: int, nx: int, ny: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(rows, cols)`` of the ``nx×ny`` crop hit by the centre line of an ``a×a`` grid rotated by ``theta``.

    Nearest-neighbour inverse mapping: an output pixel is set when rotating it by ``-theta`` about the grid
    centre ``c = (a-1)/2`` lands (rounded half away from zero, as MATLAB) on line row ``rhu(a/2) - 1`` and
    inside the grid. That band is at most ~1.5 pixels thick across the line's main direction, so only five
    candidates per column (or row) are tested instead of the whole crop; the test itself is the full one.
    """
    c = (a - 1) / 2.0
    line_row = rhu(a / 2) - 1
    r0, _ = centered_bounds(a, nx)
    c0, _ = centered_bounds(a, ny)
    cos, sin = math.cos(theta), math.sin(theta)
    offsets = np.arange(-2, 3)
    if abs(cos) >= abs(sin):
        # Mostly horizontal: solve src_row = line_row for the row of each column, test rows around it.
        cols = np.arange(c0, c0 + ny, dtype=np.float64)
        rows = np.floor(c - (c + (cols - c) * sin - line_row) / cos + 0.5)
        rows, cols = (rows[:, None] + offsets).ravel(), np.repeat(cols, offsets.size)
    else:
        rows = np.arange(r0, r0 + nx, dtype=np.float64)
        cols = np.floor(c + (line_row - c + (c - rows) * cos) / sin + 0.5)
        rows, cols = np.repeat(rows, offsets.size), (cols[:, None] + offsets).ravel()
    x, y = cols - c, c - rows  # Cartesian coordinates (x right, y up) about the rotation centre
    src_row = np.floor(c - (-x * sin + y * cos) + 0.5)
    src_col = np.floor(c + (x * cos + y * sin) + 0.5)
    hit = (src_row == line_row) & (src_col >= 0) & (src_col <= a - 1)
    hit &= (rows >= r0) & (rows < r0 + nx) & (cols >= c0) & (cols < c0 + ny)
    return rows[hit].astype(np.int64) - r0, cols[hit].astype(np.int64) - c0


@functools.lru_cache(maxsize=128)
def _kt_radial_packed(nt: int, nx: int, ny: int, r: int, acs_block: int) -> bytes:
    """Bit-packed ``(nt, nx, ny)`` ktRadial mask. It is deterministic, so it is cached like the reference's
    mask bank; packing keeps a full bank (11 shape groups × 6 R) near 15 MB per worker."""
    a = max(nx, ny)
    beams = radial_beam_count(r)
    step = 180.0 / beams
    mask = np.zeros((nt, nx, ny), dtype=bool)
    for t in range(nt):
        for k in range(beams + 1):
            rows, cols = _radial_line(a, nx, ny, math.radians((137.5 * t + k * step) % 360.0))
            mask[t, rows, cols] = True
    (xlo, xhi), (ylo, yhi) = centered_bounds(nx, acs_block), centered_bounds(ny, acs_block)
    mask[:, xlo:xhi, ylo:yhi] = True
    return np.packbits(mask).tobytes()


def kt_radial_mask(nt: int, nx: int, ny: int, acceleration: int, acs_block: int = 16) -> np.ndarray:
    """Task 2 pseudo-radial ktRadial mask ``(nt, nx, ny)``; unlike the Cartesian masks it varies along kx.

    Frame ``t`` ORs ``B + 1`` one-pixel lines at angles ``137.5·t + k·180/B`` (k = 0..B, ``B`` from
    :func:`radial_beam_count`). Each line starts on row ``rhu(a/2)`` (1-based) of an ``a×a`` grid,
    ``a = max(nx, ny)``, is rotated counter-clockwise about the grid centre ``((a-1)/2, (a-1)/2)`` with
    nearest-neighbour inverse mapping (grid size kept), and is centre-cropped to ``nx×ny``. The central
    ``acs_block×acs_block`` block is then set in every frame.

    This is our own rotation, not a bit-exact copy of MATLAB ``imrotate`` (whose pixel rounding near ties is
    not documented well enough to guarantee); single pixels near a line edge may differ from the official
    files. Prefer the official ``Mask_Task2`` files where exactness matters.
    """
    nt = as_int("nt", nt, 1)
    nx = as_int("nx", nx, 1)
    ny = as_int("ny", ny, 1)
    r = _check_acceleration(acceleration)
    acs_block = _check_acs(ny, acs_block)
    if nx < acs_block:
        # kx is fully sampled, so the block only has to fit; ny must exceed it like every other ACS band.
        raise ValueError(f"nx={nx} is smaller than the ACS block {acs_block}")
    packed = np.frombuffer(_kt_radial_packed(nt, nx, ny, r, acs_block), dtype=np.uint8)
    return np.unpackbits(packed, count=nt * nx * ny).reshape(nt, nx, ny).astype(np.float32)


def make_mask(
    pattern: str,
    acceleration: int,
    nt: int,
    nx: int,
    ny: int,
    rng: np.random.Generator | None = None,
    acs_width: int = 16,
    frames: Sequence[int] | None = None,
) -> np.ndarray:
    """Mask ``(nt, nx, ny)`` float32 0/1 of any pattern; Cartesian patterns are constant along kx.

    ``pattern`` is one of :data:`PATTERNS` (any case, or ``kt_uniform``-style). ``rng`` is only used by
    ktGaussian; when it is ``None`` a fresh, unseeded generator is used, so pass one for reproducibility.
    For ktRadial ``acs_width`` is the side of the central ACS block. ``frames`` returns only those frames of
    the series, ``(len(frames), nx, ny)``: the same values as indexing the whole mask, without expanding every
    frame to full size first.
    """
    name = canonical_pattern(pattern)
    nt = as_int("nt", nt, 1)
    nx = as_int("nx", nx, 1)
    ny = as_int("ny", ny, 1)
    pick = slice(None) if frames is None else np.asarray(frames, dtype=np.intp)
    if name == "ktRadial":
        return np.ascontiguousarray(kt_radial_mask(nt, nx, ny, acceleration, acs_block=acs_width)[pick])
    if name == "Uniform":
        lines = np.broadcast_to(uniform_mask(ny, acceleration, acs_width), (nt, ny))
    elif name == "ktUniform":
        lines = kt_uniform_mask(nt, ny, acceleration, acs_width)
    else:
        lines = kt_gaussian_mask(nt, ny, acceleration, np.random.default_rng() if rng is None else rng, acs_width)
    lines = lines[pick]
    return np.ascontiguousarray(np.broadcast_to(lines[:, None, :], (len(lines), nx, ny)), dtype=np.float32)


def is_cartesian(mask, acs_width: int = 16) -> bool:
    """HyperCMR's test for a Cartesian mask ``(..., nx, ny)`` (``docs/design.md``, "Radial ACS").

    True when the ``acs_width`` central ky columns are fully sampled for every kx and every frame; a radial
    mask only fills a central block there. The rule itself is :func:`bundle.mri.is_cartesian_mask`, which
    SensNet applies to batches on the device.
    """
    m = np.asarray(mask)
    if m.ndim < 2:
        raise ValueError(f"mask must have at least 2 dimensions (..., nx, ny), got shape {m.shape}")
    acs_bounds(m.shape[-1], acs_width)  # the same checks as for building a mask
    sampled = torch.from_numpy(np.ascontiguousarray(m != 0)).reshape(1, -1, m.shape[-1])
    return bool(is_cartesian_mask(sampled, acs_width)[0])


def sampled_fraction(mask) -> float:
    """Fraction of sampled points (a Cartesian line mask and its ``(nt, nx, ny)`` expansion agree)."""
    m = np.asarray(mask)
    if m.size == 0:
        raise ValueError("cannot measure an empty mask")
    return float(np.count_nonzero(m) / m.size)


def effective_acceleration(mask) -> float:
    """True acceleration ``1 / sampled_fraction`` including the ACS (``inf`` for an all-zero mask)."""
    frac = sampled_fraction(mask)
    return math.inf if frac == 0 else 1.0 / frac
