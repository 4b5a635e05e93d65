"""Exceptions for unusable input data and model files, and how they end a command-line run.

Every message starts with the offending file so that a user with thousands of files knows which one to
look at. The constructors take a single message (plus keyword extras) because PyTorch re-raises worker
exceptions in the main process by calling ``type(exc)(message)``.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "BundleError",
    "CheckpointError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "OutputDirError",
    "RunStateError",
    "RankLostError",
    "CMRDataError",
    "MatFileError",
    "MissingKeyError",
    "ShapeError",
    "MaskMismatchError",
    "NonFiniteDataError",
    "EmptySliceError",
    "EmptyDatasetError",
    "UnsafePathError",
    "RawDataError",
    "find_bundle_error",
    "install_excepthook",
]


class BundleError(ValueError):
    """An input (data file, dataset tree, model file) cannot be used. ``path`` names it; ``problem`` says why;
    ``sample`` (e.g. ``"z=3, t=0"``) is the slice of the file it is about, when the problem names one."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        problem: str | None = None,
        sample: str | None = None,
    ):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.problem = problem if problem is not None else message
        self.sample = sample

    @classmethod
    def at(cls, path: str | os.PathLike, problem: str, *, sample: str | None = None) -> BundleError:
        """Build the exception with the standard ``"<path>: <problem>"`` message (``problem`` already names
        ``sample`` when one is given)."""
        return cls(f"{path}: {problem}", path=path, problem=problem, sample=sample)


class CMRDataError(BundleError):
    """A data file, or a dataset tree, cannot be used."""


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


class RawDataError(CMRDataError):
    """A scanner raw-data file (ISMRMRD) cannot be read, or holds data the bundle does not support."""


class CheckpointError(BundleError):
    """A model file is missing, unreadable, or not a PromptMR checkpoint in a known format."""


class UnsafeCheckpointError(CheckpointError):
    """A model file needs arbitrary pickled Python objects to load, so it is not loaded at all."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the configured network (other keys or shapes)."""


class OutputDirError(BundleError):
    """An output folder cannot be created or written (found before any work is done)."""


class RunStateError(BundleError):
    """Checkpoints or a patient split on disk belong to another dataset or network than this run's."""


class RankLostError(BundleError):
    """Under torchrun, another rank died or hung: ``ranks`` are those that never arrived where this one waited."""

    def __init__(self, message: str, *, ranks=(), **kwargs):
        super().__init__(message, **kwargs)
        self.ranks = list(ranks)


# --------------------------------------------------------------------------------------------------- CLI


def _chain(exc: BaseException | None):
    """``exc``, then its causes (``raise ... from``) and contexts, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def find_bundle_error(exc: BaseException | None, kind: type[BundleError] = BundleError) -> BundleError | None:
    """The first ``kind`` error in ``exc``'s chain of causes (``raise ... from``) and contexts, or ``None``."""
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _summary_error(exc: BaseException | None) -> BaseException | None:
    """An error in the chain that is an expected outcome with its own summary (``summary_only = True``)."""
    return next((e for e in _chain(exc) if getattr(e, "summary_only", False)), None)


def _excepthook(exc_type, exc, tb, previous=sys.excepthook) -> None:
    summary = _summary_error(exc)
    if summary is not None:  # e.g. a run that wrote most outputs and skipped bad files: no traceback
        print(f"\n{summary}", file=sys.stderr)
        return
    previous(exc_type, exc, tb)
    # MONAI re-raises every failure inside a config expression as "RuntimeError: Failed to evaluate ...", so the
    # bundle's own message would sit dozens of lines above the end of the trace. Repeat it as the last line.
    error = find_bundle_error(exc)
    if error is not None and error is not exc:
        print(f"\nerror: {error}", file=sys.stderr)


def install_excepthook() -> None:
    """Make an uncaught :class:`BundleError` the last line of the trace, once per process."""
    if getattr(sys.excepthook, "__name__", "") != _excepthook.__name__:
        sys.excepthook = _excepthook
