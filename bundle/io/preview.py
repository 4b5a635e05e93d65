"""Quick-look PNG montages of reconstructions (8-bit grayscale), for eyeballing results, not for reading.

Layout: for a 4-D volume ``(nx, ny, nz, nt)`` each row is a slice and each column one of the first
frames; for a stack ``(N, nx, ny)`` the images fill a near-square grid in order. Each tile is an ``(nx, ny)``
array slice drawn the way ITK-SNAP and 3D Slicer draw the exported NIfTI (:mod:`bundle.io.orientation`):
an ``(ny, nx)`` picture, enlarged by a whole-number factor (nearest neighbour, so pixels stay sharp) until
its long side is at least ``min_tile`` pixels. The whole montage shares one window,
``[0 or 0.5th percentile, 99.5th percentile]`` of the shown pixels, so slices stay comparable and a few
bright pixels do not wash out the image.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.errors import ShapeError
from bundle.files import atomic_write
from bundle.io.orientation import to_display

__all__ = ["montage", "save_preview_png", "window", "to_uint8", "enlarge"]

_GAP = 2  # black pixels between tiles


def _tiles(volume: np.ndarray, max_tiles: int, max_frames: int) -> tuple[np.ndarray, int]:
    """Pick the images to show. Returns ``(tiles (K, H, W), number of columns)``."""
    if volume.ndim == 2:
        return volume[None], 1
    if volume.ndim == 3:
        stack = volume[:max_tiles]
        return stack, math.ceil(math.sqrt(len(stack)))
    nx, ny, nz, nt = volume.shape
    cols = max(1, min(nt, max_frames, max_tiles))
    rows = max(1, min(nz, max_tiles // cols))
    # Spread the shown slices over the whole stack rather than taking the first few.
    slices = np.unique(np.linspace(0, nz - 1, rows).round().astype(int))
    tiles = volume[:, :, slices, :cols]  # (nx, ny, rows, cols)
    return np.ascontiguousarray(tiles.transpose(2, 3, 0, 1).reshape(-1, nx, ny)), cols


def window(images) -> tuple[float, float]:
    """Display window ``(lo, hi)`` shared by ``images``: 0 (or the 0.5th percentile if negative) to the 99.5th."""
    arr = np.nan_to_num(np.asarray(images, dtype=np.float32))
    lo = 0.0 if arr.min() >= 0 else float(np.percentile(arr, 0.5))
    hi = float(np.percentile(arr, 99.5))
    if hi <= lo:
        hi = lo + 1.0  # flat image: avoid dividing by zero, show it black
    return lo, hi


def to_uint8(images, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` to ``[0, 255]`` (clipped; NaN/Inf shown black)."""
    arr = np.nan_to_num(np.asarray(images, dtype=np.float32))
    return (np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def enlarge(images, min_size: int):
    """Repeat pixels of ``(..., H, W)`` by the smallest whole factor that makes ``max(H, W) >= min_size``."""
    arr = np.asarray(images)
    factor = max(1, math.ceil(min_size / max(arr.shape[-2:])))
    return arr.repeat(factor, axis=-2).repeat(factor, axis=-1) if factor > 1 else arr


def montage(volume, max_tiles: int = 36, max_frames: int = 3, min_tile: int = 128) -> np.ndarray:
    """8-bit grayscale montage of ``volume``.

    Args:
        volume: ``(nx, ny, nz, nt)`` volume, ``(nx, ny, nz)`` volume (one tile per slice), or one ``(nx, ny)``
            slice. Complex values are shown as magnitude; NaN/Inf are shown as black.
        max_tiles: upper bound on the number of images in the montage.
        max_frames: for 4-D input, how many of the first frames to show per slice.
        min_tile: each tile is enlarged by a whole factor ``f`` until its long side is at least this.

    Returns:
        uint8 array ``(rows*f*ny + (rows-1)*gap, cols*f*nx + (cols-1)*gap)``.
    """
    arr = np.asarray(volume)
    if not 2 <= arr.ndim <= 4 or arr.size == 0:
        raise ShapeError(f"preview takes (nx, ny, nz, nt), (N, H, W) or (H, W); got shape {arr.shape}")
    if max_tiles < 1 or max_frames < 1:
        raise ValueError("max_tiles and max_frames must be at least 1")
    if arr.ndim == 3:
        arr = np.moveaxis(arr, 2, 0)  # (nx, ny, nz) -> (nz, nx, ny): one tile per slice
    tiles, cols = _tiles(arr, max_tiles, max_frames)
    tiles = np.nan_to_num(np.abs(tiles) if np.iscomplexobj(tiles) else tiles.astype(np.float32, copy=False))
    scaled = enlarge(to_uint8(to_display(tiles), *window(tiles)), min_tile)
    k, h, w = scaled.shape
    rows = math.ceil(k / cols)
    canvas = np.zeros((rows * h + (rows - 1) * _GAP, cols * w + (cols - 1) * _GAP), dtype=np.uint8)
    for idx in range(k):
        r, c = divmod(idx, cols)
        top, left = r * (h + _GAP), c * (w + _GAP)
        canvas[top : top + h, left : left + w] = scaled[idx]
    return canvas


def save_preview_png(
    path: str | os.PathLike, volume, max_tiles: int = 36, max_frames: int = 3, min_tile: int = 128
) -> Path:
    """Write :func:`montage` of ``volume`` as an 8-bit grayscale (mode ``"L"``) PNG at ``path``, atomically."""
    dest = Path(path)
    if dest.suffix.lower() != ".png":
        raise ValueError(f"{dest}: a preview file name must end in .png")
    image = Image.fromarray(montage(volume, max_tiles=max_tiles, max_frames=max_frames, min_tile=min_tile))
    return atomic_write(dest, lambda tmp: image.save(tmp, format="PNG"))
