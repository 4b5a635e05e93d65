"""Processed k-space of scanner raw data, decoded once per file into a memory-mapped cache.

Reading one slice of an ISMRMRD file costs what no ``.mat`` slab does: the readouts are variable-length HDF5
records, and each one is prewhitened and Fourier-transformed twice to remove the readout oversampling. Training
visits every slice many times per epoch, and inference reads each frame as a neighbour of up to five items. So the
first read of a series decodes all of it (:class:`~bundle.data.ismrmrd.RawSliceReader`, slice by slice) into
``<cache_dir>/<key>.npy``, ``(nt, nz, nc, ny, nx)`` complex64, and every later read is a memory-mapped copy, as for
a ``.mat`` file. The key hashes the file's absolute path, size and modification time, the HDF5 group, the series
and the processing options, so an edited file or another option is decoded anew; the values are those of the raw
reader, bit for bit. The cache is never inside the input file's folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import RawDataError
from .ismrmrd import RawSeries, RawSliceReader

__all__ = ["CACHE_VERSION", "default_cache_dir", "resolve_cache_dir", "CachedRawReader"]

logger = logging.getLogger(__name__)

#: Bumped whenever the raw reader's processing changes, so that old cache files are never read.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$HYPERCMR_CACHE/raw``, else ``$XDG_CACHE_HOME/hypercmr/raw``, else ``~/.cache/hypercmr/raw``."""
    if os.environ.get("HYPERCMR_CACHE"):
        return Path(os.environ["HYPERCMR_CACHE"]) / "raw"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hypercmr" / "raw"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """``'auto'``: :func:`default_cache_dir`; ``None``/``''``: no cache (every read decodes); else the folder."""
    if cache_dir is None or str(cache_dir) in ("", "none", "None"):
        return None
    return default_cache_dir() if str(cache_dir) == "auto" else Path(cache_dir)


def _key(series: RawSeries, prewhiten: bool) -> str:
    st = os.stat(series.path)
    fields = [os.path.abspath(series.path), st.st_size, st.st_mtime_ns, series.group, series.entry]
    fields += [bool(prewhiten), list(series.shape), CACHE_VERSION]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]


class CachedRawReader:
    """:class:`~bundle.data.matio.MatSliceReader`-compatible reader of one raw series through the cache.

    Same values as :class:`~bundle.data.ismrmrd.RawSliceReader` (file order ``(nc, ny, nx)`` complex64 slabs);
    pickling keeps only the series and options (a DataLoader worker maps the cache file itself).
    """

    is_complex = True

    def __init__(self, series: RawSeries, *, cache_dir: str | os.PathLike, prewhiten: bool = True):
        self.series = series
        self.path = series.path
        self.prewhiten = bool(prewhiten)
        self.cache_dir = Path(cache_dir)
        self.shape = tuple(series.shape)
        folder = Path(os.path.abspath(series.path)).parent
        cache = Path(os.path.abspath(self.cache_dir))
        if cache == folder or folder in cache.parents:
            raise RawDataError.at(
                series.path, f"the raw-data cache {cache} is inside the input's folder; nothing is written there"
            )
        self._array: np.ndarray | None = None
        self._raw: RawSliceReader | None = None

    key = property(lambda self: f"{self.series.group}/{self.series.entry or 'data'}")
    nt = property(lambda self: self.shape[0])
    nz = property(lambda self: self.shape[1])
    nc = property(lambda self: self.shape[2])
    ny = property(lambda self: self.shape[3])
    nx = property(lambda self: self.shape[4])

    @property
    def cache_file(self) -> Path:
        return self.cache_dir / f"{_key(self.series, self.prewhiten)}.npy"

    def _raw_reader(self) -> RawSliceReader:
        if self._raw is None:
            self._raw = RawSliceReader(self.series, prewhiten=self.prewhiten)
        return self._raw

    def _decode(self, target: Path) -> None:
        """Decode every slice into ``target`` (written under a temporary name, then renamed: never half a file)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
        reader = self._raw_reader()
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.complex64, shape=self.shape)
            frames = list(range(self.nt))
            for z in range(self.nz):
                out[:, z] = reader.read_frames(z, frames)
            out.flush()
            del out
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        logger.info("decoded %s (%s) into the raw-data cache %s", self.path, self.key, target)

    def _ensure(self) -> np.ndarray:
        if self._array is None:
            target = self.cache_file
            if not target.is_file():
                self._decode(target)
            array = np.load(target, mmap_mode="r")
            if array.shape != self.shape or array.dtype != np.complex64:  # another writer's file, or damage
                self._decode(target)
                array = np.load(target, mmap_mode="r")
            self._array = array
        return self._array

    def read_frames(self, z: int, frames: Sequence[int]) -> np.ndarray:
        """``(len(frames), nc, ny, nx)`` complex64 of slice ``z``."""
        self._check(z, frames)
        return np.ascontiguousarray(self._ensure()[list(frames), z])

    def read_slab(self, t: int, z: int) -> np.ndarray:
        return self.read_frames(z, [t])[0]

    def read_rows(self, t: int, z: int, rows: Sequence[int]) -> np.ndarray:
        """ky rows ``rows`` of frame ``t``, slice ``z``: ``(nc, len(rows), nx)`` complex64."""
        self._check(z, [t])
        return np.take(self._ensure()[t, z], np.asarray(rows, dtype=np.intp), axis=-2)

    def calibration(self, z: int) -> np.ndarray | None:
        return self._raw_reader().calibration(z)

    def _check(self, z: int, frames: Sequence[int]) -> None:
        if not 0 <= int(z) < self.nz or any(not 0 <= int(t) < self.nt for t in frames):
            raise RawDataError.at(self.path, f"slice {z} / frames {list(frames)} outside nz={self.nz}, nt={self.nt}")

    def close(self) -> None:
        self._array = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def __enter__(self) -> CachedRawReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None, "_raw": None}

    def __repr__(self) -> str:
        return f"CachedRawReader({self.path!r}, {self.key!r}, cache={str(self.cache_dir)!r})"
