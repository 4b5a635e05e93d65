"""Quick-look PNG montages of reconstructions (8-bit grayscale), for eyeballing results, not for reading.

Layout: for a 4-D volume ``(nx, ny, nz, nt)`` each row is a slice and each column one of the first
frames; for a stack ``(N, H, W)`` the images fill a near-square grid in order. Each tile is shown as the
array is indexed (axis 0 down the page), with no flipping. The whole montage shares one window,
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
from bundle.io.paths import atomic_write

__all__ = ["montage", "save_preview_png"]

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


def montage(volume, max_tiles: int = 36, max_frames: int = 3) -> np.ndarray:
    """8-bit grayscale montage of ``volume``.

    Args:
        volume: ``(nx, ny, nz, nt)`` volume, ``(N, H, W)`` image stack, or one ``(H, W)`` image. Complex
            values are shown as magnitude; NaN/Inf are shown as black.
        max_tiles: upper bound on the number of images in the montage.
        max_frames: for 4-D input, how many of the first frames to show per slice.

    Returns:
        uint8 array ``(rows*H + (rows-1)*gap, cols*W + (cols-1)*gap)``.
    """
    arr = np.asarray(volume)
    if not 2 <= arr.ndim <= 4 or arr.size == 0:
        raise ShapeError(f"preview takes (nx, ny, nz, nt), (N, H, W) or (H, W); got shape {arr.shape}")
    if max_tiles < 1 or max_frames < 1:
        raise ValueError("max_tiles and max_frames must be at least 1")
    tiles, cols = _tiles(arr, max_tiles, max_frames)
    tiles = np.nan_to_num(np.abs(tiles) if np.iscomplexobj(tiles) else tiles.astype(np.float32, copy=False))
    lo = 0.0 if tiles.min() >= 0 else float(np.percentile(tiles, 0.5))
    hi = float(np.percentile(tiles, 99.5))
    if hi <= lo:
        hi = lo + 1.0  # flat image: avoid dividing by zero, show it black
    scaled = np.clip((tiles - lo) / (hi - lo), 0.0, 1.0) * 255.0
    k, h, w = scaled.shape
    rows = math.ceil(k / cols)
    canvas = np.zeros((rows * h + (rows - 1) * _GAP, cols * w + (cols - 1) * _GAP), dtype=np.uint8)
    for idx in range(k):
        r, c = divmod(idx, cols)
        top, left = r * (h + _GAP), c * (w + _GAP)
        canvas[top : top + h, left : left + w] = scaled[idx].round().astype(np.uint8)
    return canvas


def save_preview_png(path: str | os.PathLike, volume, max_tiles: int = 36, max_frames: int = 3) -> Path:
    """Write :func:`montage` of ``volume`` as an 8-bit grayscale (mode ``"L"``) PNG at ``path``, atomically."""
    dest = Path(path)
    if dest.suffix.lower() != ".png":
        raise ValueError(f"{dest}: a preview file name must end in .png")
    image = Image.fromarray(montage(volume, max_tiles=max_tiles, max_frames=max_frames))
    return atomic_write(dest, lambda tmp: image.save(tmp, format="PNG"))
