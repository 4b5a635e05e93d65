"""Files written safely: atomic replacement, durable renames, the usual permissions.

The ground floor of the bundle (like :mod:`bundle.errors`, :mod:`bundle.arrays` and :mod:`bundle.mri`): it imports
nothing of the bundle but its errors, and every writer above it (MAT, NIfTI, PNG, DICOM, JSON, checkpoints) goes
through :func:`atomic_write`, so a crash or a full disk never leaves a half-written file under its final name.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from bundle.errors import UnsafePathError

__all__ = ["atomic_write", "partial_files", "discard_partial"]

_UMASK_LOCK = threading.Lock()


@functools.cache
def _umask() -> int:
    """The process umask, read once. mkstemp creates files with mode 0600; finished outputs get the usual
    umask-based mode so that colleagues (e.g. clinicians reading the NIfTI files) can open them."""
    try:  # Linux reports it without changing it
        status = Path("/proc/self/status").read_text()
        found = re.search(r"^Umask:\s*([0-7]+)", status, re.MULTILINE)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and set it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Not possible on every platform/file system; best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files that :func:`atomic_write` left beside ``path`` when its process was killed mid-write."""
    dest = Path(path)
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp*") if p.is_file())


def discard_partial(path: str | os.PathLike) -> list[Path]:
    """Remove the :func:`partial_files` of ``path`` (half-written by a killed run); returns those removed.

    Call it only from the process that is about to write ``path`` (no other writer of it is running then).
    """
    removed = partial_files(path)
    for leftover in removed:
        leftover.unlink(missing_ok=True)
    return removed


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object]) -> Path:
    """Write a file atomically: ``write_fn(tmp)`` writes a temporary file, which then replaces ``path``.

    The temporary file sits in the destination folder (so ``os.replace`` is an atomic rename on the same
    file system) and keeps the destination's suffixes (``.nii.gz``, ``.png``, ``.mat``) because the
    writers pick the format from the name. It is flushed to disk before the rename. If ``write_fn``
    raises, the temporary file is removed and an existing file at ``path`` is left untouched.
    Missing parent folders are created. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    dest = Path(path)
    if dest.is_dir():
        raise UnsafePathError.at(dest, "is a folder; refusing to replace it with a file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes[-2:]) if dest.name.endswith(".nii.gz") else dest.suffix
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        mode = (dest.stat().st_mode & 0o777) if dest.exists() else (0o666 & ~_umask())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return dest
