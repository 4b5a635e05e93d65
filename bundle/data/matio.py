"""Reading and writing CMRxRecon ``.mat`` files: MATLAB v7.3 (HDF5, via h5py) and legacy v5 (scipy).

Every array in this module is in **h5py axis order**, the reverse of MATLAB's (``docs/design.md``, "Data format"):

==========================  ===================  ======================
object                      MATLAB dims          h5py / numpy dims here
==========================  ===================  ======================
k-space                     (nx, ny, nc, nz, nt)  (nt, nz, nc, ny, nx)
BlackBlood k-space (4-D)    (nx, ny, nc, nz)      (nz, nc, ny, nx)
Task 1 mask, 2023 mask      (nx, ny)              (ny, nx)
Task 2 mask                 (nx, ny, nt)          (nt, ny, nx)
==========================  ===================  ======================

v5 files come back from scipy in MATLAB order, so their axes are reversed on read (and on write) to make both
formats interchangeable. Complex data is returned as ``complex64`` and real data (masks) as ``float32``.

Every failure is a :class:`~bundle.errors.CMRDataError` subclass whose message starts with the file path.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime

import h5py
import numpy as np
import scipy.io as sio

from ..errors import MatFileError, MissingKeyError, NonFiniteDataError, ShapeError
from ..files import atomic_write

__all__ = [
    "PREFERRED_KEYS",
    "PREFERRED_PATTERNS",
    "is_undersampled_key",
    "read_mat",
    "mat_variables",
    "mat_shape",
    "write_mat",
    "write_mat_v5",
    "MatSliceReader",
]

#: Variable names tried, in order, when no key is given (``docs/design.md``, "Data format").
PREFERRED_KEYS = ("kspace_full", "kspace", "kus", "mask", "img4ranking")

#: Variable name patterns tried, in order, after :data:`PREFERRED_KEYS`: CMRxRecon2023 names its undersampled
#: k-space ``kspace_sub04``/``08``/``10`` and its masks ``mask04``/``08``/``10``, after the acceleration.
PREFERRED_PATTERNS = (re.compile(r"^kspace_sub\d+$"), re.compile(r"^mask\d+$"))

# Variable names of undersampled k-space: ``kus`` (CMRxRecon2024) and ``kspace_sub<NN>`` (CMRxRecon2023).
_UNDERSAMPLED_KEY = re.compile(r"^(kus|kspace_sub\d+)$")

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAT73_MARKER = b"\x00\x02IM"  # header bytes 124-127 of a v7.3 file: version 0x0200, endian marker "IM"
_USERBLOCK = 512
_MATLAB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_REAL_CLASSES = {
    np.dtype(np.float32): "single",
    np.dtype(np.float64): "double",
    **{np.dtype(t): np.dtype(t).name for t in (np.int8, np.int16, np.int32, np.int64)},
    **{np.dtype(t): np.dtype(t).name for t in (np.uint8, np.uint16, np.uint32, np.uint64)},
}
# Same memory layout as complex64 / complex128, so a complex buffer can be viewed as the MATLAB compound and
# HDF5 converts the stored field type (f4 or f8) straight into it, with no intermediate structured array.
_C64_AS_COMPOUND = np.dtype([("real", "<f4"), ("imag", "<f4")])
_C128_AS_COMPOUND = np.dtype([("real", "<f8"), ("imag", "<f8")])
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --------------------------------------------------------------------------------------------------- opening


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise MatFileError.at(path, "no such file")
    if not os.path.isfile(path):
        raise MatFileError.at(path, "not a regular file")


def _looks_like_hdf5(path: str) -> bool:
    """True when the header says v7.3 or an HDF5 superblock signature sits where HDF5 looks for one."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048 + 8)
    except OSError as err:
        raise MatFileError.at(path, f"cannot read the file ({err})") from err
    if head[124:128] == _MAT73_MARKER:
        return True
    return any(head[off : off + 8] == _HDF5_SIGNATURE for off in (0, 512, 1024, 2048))


def _open_hdf5(path: str) -> h5py.File | None:
    """Open ``path`` read-only with h5py; ``None`` when it is not HDF5 at all (then it may be a v5 file)."""
    _check_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if _looks_like_hdf5(path):
            raise MatFileError.at(path, f"truncated or corrupt MATLAB v7.3 (HDF5) file ({err})") from err
        return None


def _v5_whos(path: str) -> list[tuple[str, tuple[int, ...], str]]:
    try:
        return sio.whosmat(path)
    except Exception as err:  # scipy raises many unrelated types (ValueError, TypeError, struct.error, ...)
        raise MatFileError.at(path, f"not a MATLAB .mat file (neither v7.3/HDF5 nor v5): {err}") from err


def _pick_key(path: str, names: Sequence[str], key: str | None, candidates: Sequence[str] | None = None) -> str:
    """Resolve the variable to read. ``candidates`` (default ``names``) are the ones eligible for auto-pick."""
    names = [n for n in names if not n.startswith(("#", "__"))]
    if key is not None:
        if key in names:
            return key
        raise MissingKeyError.at(path, f"no variable {key!r} in the file; variables found: {names}")
    candidates = names if candidates is None else [n for n in candidates if n in names]
    for preferred in PREFERRED_KEYS:
        if preferred in candidates:
            return preferred
    for pattern in PREFERRED_PATTERNS:
        matches = [n for n in candidates if pattern.match(n)]
        if len(matches) == 1:  # several (kspace_sub04 and kspace_sub08) would be a guess: fall through
            return matches[0]
    if len(candidates) == 1:
        return candidates[0]
    raise MissingKeyError.at(
        path,
        f"cannot tell which variable holds the data: none of {list(PREFERRED_KEYS)}, no single "
        f"kspace_sub<NN> or mask<NN>, and found {names}",
    )


def is_undersampled_key(name: str | None) -> bool:
    """True for the variable names of undersampled k-space: ``kus`` (2024) and ``kspace_sub<NN>`` (2023)."""
    return name is not None and _UNDERSAMPLED_KEY.match(name) is not None


def _h5_dataset(f: h5py.File, path: str, key: str | None) -> h5py.Dataset:
    names = list(f.keys())
    datasets = [n for n in names if f.get(n, getclass=True) is h5py.Dataset]
    name = _pick_key(path, names, key, datasets)
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise MatFileError.at(path, f"variable {name!r} is a MATLAB struct or cell, not a numeric array")
    _h5_is_complex(obj, path)  # validates the dtype early
    return obj


def _h5_is_complex(ds: h5py.Dataset, path: str) -> bool:
    dt = ds.dtype
    if dt.names is not None:
        if set(dt.names) == {"real", "imag"} and all(dt[n].kind == "f" for n in dt.names):
            return True
        raise MatFileError.at(path, f"variable {ds.name!r} has an unsupported compound dtype {dt}")
    if dt.kind in "fiub":
        return False
    raise MatFileError.at(path, f"variable {ds.name!r} has an unsupported dtype {dt} (not a numeric array)")


def _h5_read(ds: h5py.Dataset, path: str, out: np.ndarray, sel: tuple | None = None) -> np.ndarray:
    """Read ``ds[sel]`` (all of it for ``None``) into ``out`` (complex64 or float32), converting in HDF5."""
    try:
        if _h5_is_complex(ds, path):
            ds.read_direct(out.view(_C64_AS_COMPOUND), source_sel=sel)
        elif out.dtype.kind == "c" or ds.dtype.kind != "f":
            # bool (an HDF5 enum) and ints do not convert inside HDF5 into this buffer; go through numpy.
            out[...] = ds[() if sel is None else sel]
        else:
            ds.read_direct(out, source_sel=sel)
    except OSError as err:
        raise MatFileError.at(path, f"cannot read {ds.name!r}: truncated or corrupt file ({err})") from err
    return out


def _memory_map(ds: h5py.Dataset, path: str) -> np.ndarray | None:
    """Read-only ``np.memmap`` of a contiguous complex64 dataset's bytes, or None when it is stored otherwise."""
    if ds.dtype != _C64_AS_COMPOUND or ds.chunks is not None or ds.size == 0:
        return None
    offset = ds.id.get_offset()
    if offset is None:  # contiguous but never written (no storage allocated)
        return None
    end = offset + ds.size * _C64_AS_COMPOUND.itemsize
    size = os.path.getsize(path)
    if size < end:
        raise MatFileError.at(
            path, f"truncated file: {ds.name!r} needs bytes up to {end}, but the file has {size} bytes"
        )
    return np.memmap(path, dtype=np.dtype("<c8"), mode="r", offset=offset, shape=tuple(ds.shape))


def _check_finite(arr: np.ndarray, path: str, what: str) -> None:
    if not np.isfinite(arr).all():
        raise NonFiniteDataError.at(path, f"{what} contains NaN or Inf")


# --------------------------------------------------------------------------------------------------- reading


def read_mat(path: str | os.PathLike, key: str | None = None, *, check_finite: bool = False) -> np.ndarray:
    """Read one variable of a ``.mat`` file (v7.3 or v5) as a numpy array in h5py axis order.

    Args:
        path: the ``.mat`` file.
        key: the variable name. ``None`` picks it: names starting with ``#`` are ignored, then the first of
            ``kspace_full, kspace, kus, mask, img4ranking`` that exists, then the only ``kspace_sub<NN>`` or the only
            ``mask<NN>`` (CMRxRecon2023 names), else the only dataset in the file.
        check_finite: raise :class:`NonFiniteDataError` when the data holds NaN or Inf.

    Returns:
        ``complex64`` for complex data, ``float32`` for real data, e.g. k-space ``(nt, nz, nc, ny, nx)``,
        BlackBlood ``(nz, nc, ny, nx)``, masks ``(ny, nx)`` or ``(nt, ny, nx)``.

    Raises:
        MatFileError: missing, unreadable, non-MAT, truncated or corrupt file.
        MissingKeyError: ``key`` is absent, or no single data variable can be picked.
        NonFiniteDataError: ``check_finite`` and the data holds NaN or Inf.
    """
    path = os.fspath(path)
    f = _open_hdf5(path)
    if f is None:
        arr = _read_v5(path, key)
    else:
        with f:
            ds = _h5_dataset(f, path, key)
            dtype = np.complex64 if _h5_is_complex(ds, path) else np.float32
            arr = _h5_read(ds, path, np.empty(ds.shape, dtype))
    if check_finite:
        _check_finite(arr, path, "the data")
    return arr


def _read_v5(path: str, key: str | None) -> np.ndarray:
    name = _pick_key(path, [w[0] for w in _v5_whos(path)], key)
    try:
        arr = sio.loadmat(path, variable_names=[name])[name]
    except Exception as err:
        raise MatFileError.at(path, f"cannot read variable {name!r} from this v5 file: {err}") from err
    if arr.dtype.kind == "c":
        arr = arr.astype(np.complex64, copy=False)
    elif arr.dtype.kind in "fiub":
        arr = arr.astype(np.float32, copy=False)
    else:
        raise MatFileError.at(path, f"variable {name!r} is not a numeric array (dtype {arr.dtype})")
    # scipy hands back MATLAB order; reversing the axes gives the h5py order of the same file saved as v7.3.
    return np.ascontiguousarray(arr.transpose())


def mat_variables(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Names and h5py-order shapes of the numeric variables of a ``.mat`` file, from metadata only."""
    path = os.fspath(path)
    f = _open_hdf5(path)
    if f is None:
        return {name: tuple(reversed(shape)) for name, shape, _ in _v5_whos(path) if not name.startswith("__")}
    with f:
        return {n: tuple(f[n].shape) for n in f if not n.startswith("#") and f.get(n, getclass=True) is h5py.Dataset}


def mat_shape(path: str | os.PathLike, key: str | None = None) -> tuple[int, ...]:
    """h5py-order shape of the variable :func:`read_mat` would read, without reading any data."""
    path = os.fspath(path)
    f = _open_hdf5(path)
    if f is None:
        whos = _v5_whos(path)
        name = _pick_key(path, [w[0] for w in whos], key)
        return next(tuple(reversed(shape)) for n, shape, _ in whos if n == name)
    with f:
        return tuple(_h5_dataset(f, path, key).shape)


# --------------------------------------------------------------------------------------------------- writing


def _checked_arrays(path: str, arrays: dict[str, object]) -> dict[str, np.ndarray]:
    if not arrays:
        raise ValueError(f"{path}: nothing to write; pass at least one array as name=array")
    out = {}
    for name, value in arrays.items():
        if not _MATLAB_NAME.match(name):
            raise ValueError(f"{path}: {name!r} is not a valid MATLAB variable name")
        arr = np.asarray(value)
        if arr.size == 0:
            raise ValueError(f"{path}: variable {name!r} is empty; MATLAB empties are not supported")
        if arr.dtype.kind not in "cb" and arr.dtype not in _REAL_CLASSES:
            raise TypeError(f"{path}: variable {name!r} has dtype {arr.dtype}, which has no MATLAB class here")
        # MATLAB arrays are at least 2-D; a 1-D h5py-order vector of n becomes MATLAB's n x 1 column.
        out[name] = np.atleast_2d(arr)
    return out


def _atomic_write(path: str, write) -> None:
    """Run ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path`` (one writer for all)."""

    atomic_write(path, lambda tmp: write(os.fspath(tmp)))


def _mat73_header() -> bytes:
    """The 128-byte text header MATLAB puts in the userblock of a v7.3 file (``docs/design.md``, "Data format")."""
    now = datetime.now()
    created = f"{_DAYS[now.weekday()]} {_MONTHS[now.month - 1]} {now.day:02d} {now:%H:%M:%S} {now.year}"
    platform = {"win32": "PCWIN64", "darwin": "MACI64"}.get(sys.platform, "GLNXA64")
    text = f"MATLAB 7.3 MAT-file, Platform: {platform}, Created on: {created} HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + _MAT73_MARKER


def write_mat(path: str | os.PathLike, /, **arrays) -> None:
    """Write a genuine MATLAB v7.3 file holding ``arrays`` (name = array), each given in h5py order.

    Each array is stored as-is, so MATLAB, ``mat73`` and ``hdf5storage`` see the reversed shape, e.g.
    ``kspace_full=(nt, nz, nc, ny, nx)`` is ``(nx, ny, nc, nz, nt)`` in MATLAB. complex64/complex128 become the
    ``{real, imag}`` compound of float32/float64 (class ``single``/``double``); bool becomes uint8 with class
    ``logical``. Parent folders are created; the file appears atomically (temp file + ``os.replace``).
    """
    path = os.fspath(path)
    checked = _checked_arrays(path, arrays)

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w", userblock_size=_USERBLOCK) as f:
            for name, arr in checked.items():
                int_decode = None
                if arr.dtype.kind == "c":
                    if arr.dtype == np.complex64:
                        data, cls = np.ascontiguousarray(arr).view(_C64_AS_COMPOUND), "single"
                    else:
                        data, cls = np.ascontiguousarray(arr, np.complex128).view(_C128_AS_COMPOUND), "double"
                elif arr.dtype.kind == "b":
                    data, cls, int_decode = arr.astype(np.uint8), "logical", 1
                else:
                    data, cls = arr, _REAL_CLASSES[arr.dtype]
                ds = f.create_dataset(name, data=data)
                ds.attrs["MATLAB_class"] = np.bytes_(cls)
                if int_decode is not None:
                    ds.attrs["MATLAB_int_decode"] = np.int32(int_decode)
        # h5py leaves the userblock zeroed; MATLAB (and scipy's version sniffing) need the text header there.
        with open(tmp, "r+b") as fh:
            fh.write(_mat73_header())

    _atomic_write(path, write)


def write_mat_v5(path: str | os.PathLike, /, **arrays) -> None:
    """Write a MATLAB v5 file (``scipy.io.savemat``) holding ``arrays``, each given in h5py order.

    The axes are reversed before saving so that the file has the MATLAB order and :func:`read_mat` returns
    exactly the arrays given (as complex64/float32). Submissions (``img4ranking``,
    :func:`bundle.io.submission.save_submission`) are written here: the official evaluator transposes only what
    scipy can read. Uncompressed, because float images barely compress and plain v5 is the most widely read
    form. v5 cannot hold a variable over 2 GiB.
    """
    path = os.fspath(path)
    checked = {name: arr.transpose() for name, arr in _checked_arrays(path, arrays).items()}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object stops scipy from appending ".mat" to the temp name
            sio.savemat(fh, checked, format="5", oned_as="column", do_compression=False)

    _atomic_write(path, write)


# --------------------------------------------------------------------------------------------------- slabs


class MatSliceReader:
    """Lazy per-slab access to a k-space ``.mat`` file that never reads the whole volume (v7.3 files).

    The file is opened on first use **in the current process**; pickling drops the handle, so a reader built
    in the main process can be sent to DataLoader workers, each of which opens its own. A reader used across
    ``fork`` reopens in the child. Legacy v5 files cannot be sliced on disk, so they are loaded whole once on
    first use (they are small: v5 caps variables at 2 GiB).

    Shapes are in h5py order: ``shape`` is ``(nt, nz, nc, ny, nx)``, or ``(nz, nc, ny, nx)`` for 4-D
    BlackBlood files, which report ``nt == 1`` and accept only ``t == 0``.

    A complex64 dataset stored contiguously (not chunked, so not compressed) is read through a read-only
    memory map of its bytes: the HDF5 library costs more per call than the copy itself (a 10-coil 512×246
    slab: 0.30 ms mapped against 0.51 ms through h5py; 58 of its 246 ky rows: 0.08 ms against 0.67 ms), and
    :meth:`read_rows` of only the sampled lines pays off only with a cheap gather. The file's size is checked
    against the dataset's extent when the map is made, so a truncated file still gets :class:`MatFileError`.
    Chunked, compressed, float64 and real datasets go through h5py, and so does everything with
    ``memory_map=False``: on a network file system where page-sized faults are slower than one large read.
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None, memory_map: bool = True):
        self.path = os.fspath(path)
        self._key_arg = key
        self.memory_map = bool(memory_map)
        self._reset()

    def _reset(self) -> None:
        self._file: h5py.File | None = None
        self._ds: h5py.Dataset | None = None
        self._array: np.ndarray | None = None
        self._mapped: np.ndarray | None = None
        self._pid: int | None = None
        self._key: str | None = None
        self._shape: tuple[int, ...] | None = None
        self._is_complex = False

    def _ensure_open(self) -> None:
        if self._pid == os.getpid():
            return
        # Never reuse a handle inherited through fork: the HDF5 state belongs to the parent.
        self._reset()
        f = _open_hdf5(self.path)
        if f is None:
            arr = _read_v5(self.path, self._key_arg)
            self._key = _pick_key(self.path, [w[0] for w in _v5_whos(self.path)], self._key_arg)
            self._shape, self._is_complex = arr.shape, arr.dtype.kind == "c"
            self._array = arr.astype(np.complex64, copy=False)
        else:
            try:
                ds = _h5_dataset(f, self.path, self._key_arg)
            except BaseException:
                f.close()
                raise
            self._file, self._ds = f, ds
            self._key, self._shape, self._is_complex = (
                ds.name.lstrip("/"),
                tuple(ds.shape),
                _h5_is_complex(ds, self.path),
            )
            try:
                self._mapped = _memory_map(ds, self.path) if self.memory_map else None
            except BaseException:
                f.close()
                raise
        if len(self._shape) not in (4, 5):
            shape = self._shape
            self.close()
            raise ShapeError.at(
                self.path, f"k-space must be 5-D (nt, nz, nc, ny, nx) or 4-D (nz, nc, ny, nx); found shape {shape}"
            )
        self._pid = os.getpid()

    # ----------------------------------------------------------------------------------------- metadata

    @property
    def key(self) -> str:
        self._ensure_open()
        return self._key

    @property
    def shape(self) -> tuple[int, ...]:
        """Stored shape in h5py order (4-D or 5-D)."""
        self._ensure_open()
        return self._shape

    @property
    def is_complex(self) -> bool:
        self._ensure_open()
        return self._is_complex

    @property
    def nt(self) -> int:
        return self.shape[0] if len(self.shape) == 5 else 1

    @property
    def nz(self) -> int:
        return self.shape[-4]

    @property
    def nc(self) -> int:
        return self.shape[-3]

    @property
    def ny(self) -> int:
        return self.shape[-2]

    @property
    def nx(self) -> int:
        return self.shape[-1]

    # ----------------------------------------------------------------------------------------- reading

    def _selection(self, t: int, z: int) -> tuple:
        t, z = operator.index(t), operator.index(z)
        if not (0 <= t < self.nt and 0 <= z < self.nz):
            raise ShapeError.at(
                self.path, f"slab (t={t}, z={z}) is outside k-space of shape {self.shape} (nt={self.nt}, nz={self.nz})"
            )
        return (t, z) if len(self.shape) == 5 else (z,)

    def _read_into(self, out: np.ndarray, t: int, z: int) -> None:
        sel = self._selection(t, z)
        if self._mapped is not None:
            out[...] = self._mapped[sel]
        elif self._array is not None:
            out[...] = self._array[sel]
        else:
            _h5_read(self._ds, self.path, out, sel)

    def read_rows(self, t: int, z: int, rows: Sequence[int]) -> np.ndarray:
        """ky rows ``rows`` of frame ``t``, slice ``z``: ``(nc, len(rows), nx)`` complex64.

        What a line mask samples of the slab, without reading the rest (from the memory map or a v5 array; an
        h5py dataset reads the whole slab, which is faster than an HDF5 selection of scattered rows).
        """
        self._ensure_open()
        sel = self._selection(t, z)
        rows = np.asarray(rows, dtype=np.intp)
        if rows.size and (rows.min() < 0 or rows.max() >= self.ny):
            raise ShapeError.at(self.path, f"ky rows {rows.min()}..{rows.max()} are outside ny={self.ny}")
        source = self._mapped if self._mapped is not None else self._array
        if source is not None:
            return np.take(source[sel], rows, axis=-2).astype(np.complex64, copy=False)
        return np.take(self.read_slab(t, z), rows, axis=-2)

    def read_slab(self, t: int, z: int) -> np.ndarray:
        """Coil k-space of frame ``t``, slice ``z``: ``(nc, ny, nx)`` complex64."""
        self._ensure_open()
        out = np.empty(self.shape[-3:], np.complex64)
        self._read_into(out, t, z)
        return out

    def read_frames(self, z: int, frames: Sequence[int]) -> np.ndarray:
        """Frames ``frames`` of slice ``z``: ``(len(frames), nc, ny, nx)`` complex64.

        Each distinct frame is read from disk once; repeats (``[2, 2, 0, 1, 1]`` for nt=3) are copies.
        """
        self._ensure_open()
        frames = [operator.index(t) for t in frames]
        out = np.empty((len(frames), *self.shape[-3:]), np.complex64)
        first: dict[int, int] = {}
        for i, t in enumerate(frames):
            if t in first:
                out[i] = out[first[t]]
            else:
                self._read_into(out[i], t, z)
                first[t] = i
        return out

    # ----------------------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Close the file handle (if any). The reader reopens on next use."""
        if self._file is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                self._file.close()
        self._reset()

    def __enter__(self) -> MatSliceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # h5py handles cannot be pickled; the receiving process opens its own on first use.
        return {"path": self.path, "_key_arg": self._key_arg, "memory_map": self.memory_map}

    def __setstate__(self, state: dict) -> None:
        self.path, self._key_arg = state["path"], state["_key_arg"]
        self.memory_map = state.get("memory_map", True)
        self._reset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, key={self._key_arg!r})"
