"""How a slice of the exported NIfTI looks in a standard viewer, so that every picture this bundle draws matches it.

The NIfTI written by :func:`bundle.io.nifti.save_nifti` has the affine ``diag(dx, dy, dz, 1)``: array axis 0
points to +x, axis 1 to +y and axis 2 to +z of the NIfTI world, whose axes viewers call R(ight), A(nterior)
and S(uperior). ITK-SNAP and 3D Slicer draw an axial (x-y) slice in radiological convention: the patient's
right (+x) on the **left** of the screen and anterior (+y) at the **top**. So a displayed slice is the array
slice transposed (axis 1 runs down the screen, axis 0 across it) and flipped both ways:

``display[r, c] = slice[nx - 1 - c, ny - 1 - r]`` for an ``(nx, ny)`` slice, i.e. an ``(ny, nx)`` picture.

Voxel ``(0, 0)`` therefore appears in the bottom-right corner. The R/A/S labels a viewer shows are not
anatomical: the CMRxRecon ``.mat`` files carry no scanner geometry, so only the in-plane picture (and distances,
given the right voxel size) is meaningful.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_display", "display_box"]


def to_display(image):
    """``(..., nx, ny)`` array slices → ``(..., ny, nx)`` pictures as ITK-SNAP/3D Slicer show them (see above)."""
    arr = np.asarray(image)
    if arr.ndim < 2:
        raise ValueError(f"to_display needs at least 2 axes (nx, ny), got shape {arr.shape}")
    return np.swapaxes(arr, -1, -2)[..., ::-1, ::-1]


def display_box(bounds: tuple[tuple[int, int], tuple[int, int]], shape: tuple[int, int]):
    """Array bounds ``((r0, r1), (c0, c1))`` over ``(nx, ny)`` → the same box in display ``(top, bottom, left, right)``.

    Half-open like the array bounds: rows ``top:bottom`` and columns ``left:right`` of the displayed picture.
    """
    (x0, x1), (y0, y1) = bounds
    nx, ny = shape
    return ny - y1, ny - y0, nx - x1, nx - x0
