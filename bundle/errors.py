"""Exceptions for unusable input data.

Every message starts with the offending file so that a user with thousands of files knows which one to
look at. The constructors take a single message (plus keyword extras) because PyTorch re-raises worker
exceptions in the main process by calling ``type(exc)(message)``.
"""

from __future__ import annotations

import os

__all__ = [
    "CMRDataError",
    "MatFileError",
    "MissingKeyError",
    "ShapeError",
    "MaskMismatchError",
    "NonFiniteDataError",
    "EmptySliceError",
    "EmptyDatasetError",
    "UnsafePathError",
]


class CMRDataError(ValueError):
    """A data file, or a dataset tree, cannot be used. ``path`` names it; ``problem`` says why."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, problem: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.problem = problem if problem is not None else message

    @classmethod
    def at(cls, path: str | os.PathLike, problem: str) -> CMRDataError:
        """Build the exception with the standard ``"<path>: <problem>"`` message."""
        return cls(f"{path}: {problem}", path=path, problem=problem)


class MatFileError(CMRDataError):
    """The file is missing, is not a MAT/HDF5 file, or is truncated or corrupt."""


class MissingKeyError(CMRDataError):
    """The expected variable (e.g. ``kspace_full``, ``kus``, ``mask``) is not in the file."""


class ShapeError(CMRDataError):
    """An array has the wrong number of dimensions or an impossible size."""


class MaskMismatchError(CMRDataError):
    """A sampling mask does not fit the k-space it is applied to."""


class NonFiniteDataError(CMRDataError):
    """k-space or an image contains NaN or Inf."""


class EmptySliceError(CMRDataError):
    """A slice holds only zeros, so no target or normalisation exists for it."""


class EmptyDatasetError(CMRDataError):
    """A dataset root holds no usable CMRxRecon2024 files."""


class UnsafePathError(CMRDataError):
    """An output path would escape its folder or overwrite an input."""
