"""Where the voxels of a reconstruction sit in the patient: the geometry record of scanner raw data.

Ground floor: numpy only, nothing of the bundle. Readers of formats that carry geometry (ISMRMRD) build a
:class:`ScanGeometry`; the NIfTI and DICOM writers ask it for affines and positions. CMRxRecon ``.mat`` files carry
none, and their outputs keep the nominal ``diag(dx, dy, dz)`` grid (``bundle/io/orientation.py``).

Conventions (``docs/design.md``, "Patient geometry"):

* Patient coordinates are DICOM/ISMRMRD **LPS** in millimetres (x to the patient's left, y to posterior, z to head).
* A reconstructed slice is ``(nx, ny)`` in model orientation: array axis 0 runs along ``read_dir`` (the readout,
  after oversampling removal), axis 1 along ``phase_dir`` (``kspace_encode_step_1``).
* The FOV centre ``position`` of a slice lies on voxel ``(nx // 2, ny // 2)``: the centred FFT puts the k-space
  phase origin there, so voxel ``(i, j)`` is at ``position + (i - nx//2)·dx·read_dir + (j - ny//2)·dy·phase_dir``
  (the same as Gadgetron's ``position − FOV/2`` for the first voxel when ``n`` is even).
* Slices are ordered by ``position · slice_dir`` ascending; ``slice_dir`` is taken as written in the file, never as
  ``read_dir × phase_dir`` (the triple may be left-handed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["LPS_TO_RAS", "SliceGeometry", "ScanGeometry"]

#: Left-multiply an LPS affine by this to get NIfTI's RAS world.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

Vector = tuple[float, float, float]


def _vector(values: Sequence[float], what: str) -> Vector:
    v = tuple(float(x) for x in values)
    if len(v) != 3 or not all(np.isfinite(v)):
        raise ValueError(f"{what} must be 3 finite numbers, got {values!r}")
    return v  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """One 2-D slice: FOV centre ``position`` and the unit directions of its axes, all LPS (mm)."""

    position: Vector
    read_dir: Vector
    phase_dir: Vector
    slice_dir: Vector

    def __post_init__(self):
        for name in ("position", "read_dir", "phase_dir", "slice_dir"):
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        for name in ("read_dir", "phase_dir", "slice_dir"):
            norm = float(np.linalg.norm(getattr(self, name)))
            if not 0.99 < norm < 1.01:
                raise ValueError(f"{name} must be a unit vector, got {getattr(self, name)} (norm {norm:.4f})")

    @property
    def location(self) -> float:
        """Signed distance of the slice along its own ``slice_dir`` (mm): the sort key of a stack."""
        return float(np.dot(self.position, self.slice_dir))


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """Patient geometry of a reconstructed ``(nx, ny, nz[, nt])`` volume.

    Attributes:
        matrix: ``(nx, ny)`` of the reconstruction (the recon matrix of the raw file).
        fov_mm: ``(fov_x, fov_y, thickness)``: the recon field of view and the slice thickness.
        slices: one :class:`SliceGeometry` per ``z``, in array order (ascending ``location``).
        patient_position: DICOM PatientPosition (``'HFS'``, ``'FFS'``, ...) or None.
        trigger_times_ms: per frame ``t``, the cardiac trigger time (ms), or None.
    """

    matrix: tuple[int, int]
    fov_mm: Vector
    slices: tuple[SliceGeometry, ...]
    patient_position: str | None = None
    trigger_times_ms: tuple[float, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "matrix", tuple(int(n) for n in self.matrix))
        object.__setattr__(self, "fov_mm", _vector(self.fov_mm, "fov_mm"))
        object.__setattr__(self, "slices", tuple(self.slices))
        if len(self.matrix) != 2 or min(self.matrix) < 1:
            raise ValueError(f"matrix must be (nx, ny) positive, got {self.matrix}")
        if not self.slices:
            raise ValueError("a ScanGeometry needs at least one slice")
        if self.trigger_times_ms is not None:
            object.__setattr__(self, "trigger_times_ms", tuple(float(t) for t in self.trigger_times_ms))

    @property
    def nz(self) -> int:
        return len(self.slices)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """``(dx, dy)`` mm: recon FOV over recon matrix along the readout and the phase direction."""
        (nx, ny), (fx, fy, _) = self.matrix, self.fov_mm
        return fx / nx, fy / ny

    @property
    def slice_thickness(self) -> float:
        return self.fov_mm[2]

    @property
    def slice_spacing(self) -> float | None:
        """Centre-to-centre distance of neighbouring slices (mm); None for one slice or an irregular stack."""
        if self.nz < 2 or not self.is_regular_stack:
            return None
        return float(np.linalg.norm(np.subtract(self.slices[1].position, self.slices[0].position)))

    @property
    def is_regular_stack(self) -> bool:
        """Whether the slices are parallel, share their in-plane axes and are equally spaced along ``slice_dir``.

        Only such a stack has one affine (NIfTI); DICOM states every slice on its own either way.
        """
        first = self.slices[0]
        axes = np.array([first.read_dir, first.phase_dir, first.slice_dir])
        for s in self.slices[1:]:
            if not np.allclose([s.read_dir, s.phase_dir, s.slice_dir], axes, atol=1e-4):
                return False
        if self.nz < 2:
            return True
        steps = np.diff([s.position for s in self.slices], axis=0)
        step = steps[0]
        # Every step the same vector, and that vector along slice_dir (no in-plane shift between slices).
        same = np.allclose(steps, step, atol=1e-3 * max(1.0, float(np.linalg.norm(step))))
        along = np.allclose(step, np.dot(step, first.slice_dir) * np.asarray(first.slice_dir), atol=1e-3)
        return bool(same and along and np.dot(step, first.slice_dir) > 0)

    def voxel_lps(self, i: float, j: float, k: int) -> np.ndarray:
        """LPS position (mm) of the centre of voxel ``(i, j)`` of slice ``k``."""
        s = self.slices[k]
        (nx, ny), (dx, dy) = self.matrix, self.pixel_spacing
        return (
            np.asarray(s.position)
            + (i - nx // 2) * dx * np.asarray(s.read_dir)
            + (j - ny // 2) * dy * np.asarray(s.phase_dir)
        )

    def first_voxel_lps(self, k: int) -> np.ndarray:
        """DICOM ImagePositionPatient of slice ``k``: the centre of voxel ``(0, 0)``."""
        return self.voxel_lps(0, 0, k)

    def affine_lps(self) -> np.ndarray:
        """4x4 affine from voxel index ``(i, j, k)`` to LPS mm; needs a regular stack (see above).

        The third column is ``spacing · slice_dir`` as written in the file (thickness for a single slice).
        """
        if not self.is_regular_stack:
            raise ValueError("the slices are not a regular stack (parallel, equally spaced): no single affine exists")
        s = self.slices[0]
        dx, dy = self.pixel_spacing
        dz = self.slice_spacing or self.slice_thickness
        affine = np.eye(4)
        affine[:3, 0] = dx * np.asarray(s.read_dir)
        affine[:3, 1] = dy * np.asarray(s.phase_dir)
        affine[:3, 2] = dz * np.asarray(s.slice_dir)
        affine[:3, 3] = self.first_voxel_lps(0)
        return affine

    def affine_ras(self) -> np.ndarray:
        """The NIfTI affine: :meth:`affine_lps` with x and y negated (LPS to RAS)."""
        return LPS_TO_RAS @ self.affine_lps()

    def subset(self, slices: Sequence[int]) -> ScanGeometry:
        """The geometry of the slices ``slices`` only (in that order)."""
        return dataclasses.replace(self, slices=tuple(self.slices[k] for k in slices))

    def to_dict(self) -> dict:
        """JSON-ready form (sidecars, datalists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScanGeometry:
        slices = tuple(SliceGeometry(**s) for s in data["slices"])
        return cls(**{**data, "slices": slices})
