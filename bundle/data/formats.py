"""The k-space file formats the bundle reads, behind one small interface.

A format answers three questions about a file, and the index, the loader, the checks and the writers ask only
these, never which format a file is:

* **what it holds**: :meth:`KspaceFormat.describe`, one :class:`VolumeInfo` per volume (headers only);
* **one slice with its neighbour frames**: :meth:`KspaceFormat.open` returns a slice reader with the interface of
  :class:`~bundle.data.matio.MatSliceReader` (``shape``, ``nt``, ``nz``, ``nc``, ``ny``, ``nx``, ``key``, ``path``,
  ``read_frames``, ``read_slab``, ``read_rows``, ``close``), file order ``(nc, ny, nx)`` complex64 slabs;
* **where it is in the patient**: :meth:`KspaceFormat.geometry`, a :class:`~bundle.geometry.ScanGeometry` or None,
  and :meth:`KspaceFormat.scan_info` (vendor, field strength, TR, TE, ... for sidecars and DICOM) or None.

Two formats exist: CMRxRecon MATLAB files (``'mat'``, no geometry) and scanner raw data in ISMRMRD / MRD v1 HDF5
(``'ismrmrd'``), the idea of MRpro's single ``KData`` for every vendor. Items and records name their format in
``format`` (absent: ``'mat'``), a file of several series its ``entry``, and a raw file its HDF5 ``raw_group``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping

import numpy as np

from ..errors import ShapeError
from ..geometry import ScanGeometry
from . import ismrmrd as raw
from .matio import MatSliceReader, mat_shape
from .raw_cache import CachedRawReader, resolve_cache_dir

__all__ = [
    "VolumeInfo",
    "KspaceFormat",
    "MatFormat",
    "IsmrmrdFormat",
    "FORMATS",
    "format_named",
    "format_of_path",
    "format_of",
    "is_raw_data_path",
]


@dataclasses.dataclass(frozen=True)
class VolumeInfo:
    """What one volume of a file holds (headers only).

    ``shape`` is file order ``(nt, nz, nc, ny, nx)`` (``nt = 1`` for 4-D files). ``acquired`` is the ``(nt, ny, nx)``
    0/1 mask of the samples a prospectively undersampled file holds, None for CMRxRecon files (their masks are
    separate files). ``padded`` marks k-space that is zero by design (partial Fourier, asymmetric echo).
    """

    path: str
    shape: tuple[int, int, int, int, int]
    entry: str | None = None
    group: str | None = None
    series: str | None = None
    fully_sampled: bool | None = None
    acceleration: int | None = None
    acs_width: int | None = None
    acquired: np.ndarray | None = None
    padded: np.ndarray | None = None
    geometry: ScanGeometry | None = None
    info: Mapping | None = None


class KspaceFormat:
    """One file format: see the module docstring."""

    name = ""
    suffixes: tuple[str, ...] = ()
    #: whether its files have a challenge submission file (img4ranking) among the inference outputs
    submission = False

    def claims(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is a file of this format (by name; cheap)."""
        return os.fspath(path).lower().endswith(self.suffixes)

    def describe(self, path: str | os.PathLike, **options) -> list[VolumeInfo]:
        raise NotImplementedError

    def open(self, path: str | os.PathLike, entry: str | None = None, **options):
        raise NotImplementedError

    def volume(self, path: str | os.PathLike, entry: str | None = None, **options) -> VolumeInfo:
        """The :class:`VolumeInfo` of one entry of a file."""
        found = self.describe(path, **options)
        for v in found:
            if v.entry == entry:
                return v
        names = ", ".join(repr(v.entry) for v in found)
        raise ShapeError.at(path, f"holds no series {entry!r} (its series: {names})")

    def geometry(self, path: str | os.PathLike, entry: str | None = None, **options) -> ScanGeometry | None:
        return self.volume(path, entry, **options).geometry

    def scan_info(self, path: str | os.PathLike, entry: str | None = None, **options) -> Mapping | None:
        return self.volume(path, entry, **options).info

    def padded(self, path: str | os.PathLike, entry: str | None = None, **options) -> np.ndarray | None:
        """``(ny, nx)`` bool k-space that is zero by design (partial Fourier, asymmetric echo), or None."""
        return self.volume(path, entry, **options).padded

    def acquired(self, path: str | os.PathLike, entry: str | None = None, **options) -> np.ndarray | None:
        """``(nt, ny, nx)`` mask of the samples the file holds, or None when the format stores masks apart."""
        return self.volume(path, entry, **options).acquired


class MatFormat(KspaceFormat):
    """CMRxRecon MATLAB files (v7.3 HDF5 or v5): k-space only, no geometry; masks are separate files."""

    name = "mat"
    suffixes = (".mat",)
    submission = True

    def describe(self, path, **options) -> list[VolumeInfo]:
        shape = tuple(int(n) for n in mat_shape(path, options.get("key")))
        if len(shape) == 4:
            shape = (1, *shape)
        return [VolumeInfo(path=os.fspath(path), shape=shape)]

    def open(self, path, entry=None, *, memory_map: bool = True, **options) -> MatSliceReader:
        return MatSliceReader(path, memory_map=memory_map)

    def geometry(self, path, entry=None, **options) -> None:
        return None

    def scan_info(self, path, entry=None, **options) -> None:
        return None

    def acquired(self, path, entry=None, **options) -> None:
        return None

    def padded(self, path, entry=None, **options) -> None:
        return None


@functools.lru_cache(maxsize=64)
def _raw_series(path: str, size: int, mtime_ns: int, group: str | None, series_type: str | None) -> tuple:
    # Keyed on size and mtime so that a file rewritten in place is read again.
    return tuple(raw.scan_raw_file(path, group=group, series_type=series_type))


def _file_key(path) -> tuple[str, int, int]:
    """``(absolute path, size, mtime_ns)``: the caches below see a rewritten file as a new one."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _raw_volumes(path: str, size: int, mtime_ns: int, group: str | None, series_type: str | None) -> tuple:
    return tuple(
        VolumeInfo(
            path=s.path,
            shape=tuple(s.shape),
            entry=s.entry,
            group=s.group,
            series=s.name,
            fully_sampled=s.fully_sampled,
            acceleration=s.acceleration,
            acs_width=s.acs_width,
            acquired=s.mask,
            padded=s.padded,
            geometry=s.geometry,
            info={**s.info, "encoded_matrix": tuple(s.encoded)},
        )
        for s in _raw_series(path, size, mtime_ns, group, series_type)
    )


class IsmrmrdFormat(KspaceFormat):
    """Scanner raw data, ISMRMRD / MRD v1 HDF5 (:mod:`bundle.data.ismrmrd`): geometry of every readout."""

    name = "ismrmrd"
    suffixes = raw.RAW_SUFFIXES

    def series(self, path, *, group: str | None = None, series_type: str | None = None) -> tuple:
        """The :class:`~bundle.data.ismrmrd.RawSeries` of a file (headers read once per process and file)."""
        return _raw_series(*_file_key(path), group, series_type)

    def _series(self, path, entry, group=None, series_type=None):
        for s in self.series(path, group=group, series_type=series_type):
            if s.entry == entry:
                return s
        names = ", ".join(repr(s.entry) for s in self.series(path, group=group, series_type=series_type))
        raise ShapeError.at(path, f"holds no series {entry!r} (its series: {names})")

    def describe(self, path, *, group: str | None = None, series_type: str | None = None, **options):
        # Built once per file (the loader asks for an item's acquired lines and padding on every read).
        return list(_raw_volumes(*_file_key(path), group, series_type))

    def open(
        self, path, entry=None, *, group=None, series_type=None, prewhiten: bool = True, cache_dir=None, **options
    ):
        """A reader of one series; with ``cache_dir`` (``'auto'``: the user cache) through the decoded-k-space
        cache of :mod:`bundle.data.raw_cache`, which reads slices at the cost of a ``.mat`` file."""
        series = self._series(path, entry, group, series_type)
        folder = resolve_cache_dir(cache_dir)
        if folder is None:
            return raw.RawSliceReader(series, prewhiten=prewhiten)
        return CachedRawReader(series, cache_dir=folder, prewhiten=prewhiten)


FORMATS: Mapping[str, KspaceFormat] = {f.name: f for f in (MatFormat(), IsmrmrdFormat())}


def format_named(name: str | None) -> KspaceFormat:
    """The format called ``name`` (``None``: ``'mat'``, the CMRxRecon files)."""
    key = name or "mat"
    if key not in FORMATS:
        raise ValueError(f"unknown k-space format {name!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[key]


def format_of_path(path: str | os.PathLike) -> KspaceFormat | None:
    """The format whose file names ``path`` has, or None."""
    return next((f for f in FORMATS.values() if f.claims(path)), None)


def is_raw_data_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like scanner raw data (``*.h5``, ``*.mrd``)."""
    return FORMATS["ismrmrd"].claims(path)


def format_of(item: Mapping) -> KspaceFormat:
    """The format of an item or record dict (its ``format`` key; absent: ``'mat'``)."""
    return format_named(item.get("format"))


def raw_options(item: Mapping) -> dict:
    """The reader options an item carries for its format (the HDF5 group and forced series type of raw data)."""
    return {"group": item.get("raw_group"), "series_type": item.get("raw_series_type")}
