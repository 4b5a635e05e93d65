"""Loading one training/inference sample: the neighbour frames of one slice, in model orientation.

Files store k-space in h5py order ``(nt, nz, nc, ny, nx)``. The models want ky (the undersampled axis) last,
so everything leaving this module has its last two axes swapped: a sample is ``(F, nc, nx, ny)`` complex64,
``F = num_adj_frames`` neighbour frames of slice ``z`` around target frame ``t`` (``docs/design.md``, "Layouts").
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform

from ..arrays import all_finite, sum_of_squares, swapped_copy, zero_filled_columns
from ..errors import CMRDataError, EmptySliceError, MaskMismatchError, NonFiniteDataError, ShapeError
from ..mri import measure_acs_width, neighbour_frame_indices
from ..transforms.kspace import sampled_lines
from .formats import format_of, raw_options
from .layout import RELEASES
from .matio import MatSliceReader, is_undersampled_key, read_mat

__all__ = ["LoadCMRSliced", "load_volume"]

logger = logging.getLogger(__name__)


def load_volume(path: str | os.PathLike, key: str | None = None, *, check_finite: bool = False) -> np.ndarray:
    """Whole k-space file in model orientation ``(nt, nz, nc, nx, ny)`` complex64 (C-contiguous).

    4-D BlackBlood files get ``nt = 1`` prepended. Reads the entire file: meant for inference on one volume.
    """
    path = os.fspath(path)
    arr = read_mat(path, key, check_finite=check_finite)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5:
        raise ShapeError.at(
            path, f"k-space must be 5-D (nt, nz, nc, ny, nx) or 4-D (nz, nc, ny, nx); found shape {arr.shape}"
        )
    return np.ascontiguousarray(arr.swapaxes(-1, -2), dtype=np.complex64)


class LoadCMRSliced(MapTransform):
    """Read the neighbour frames of one ``(z, t)`` item of :func:`bundle.data.index.build_items`.

    Input keys: ``file``, ``z``, ``t``; optional ``nt`` (frames usable for stacking; defaults to the file's,
    smaller for trimmed files), ``kind`` (``'full'``/``'undersampled'``; without it, a variable named ``kus``
    or ``kspace_sub<NN>`` means undersampled) and ``mask_file``.

    Output keys (added to a copy of the dict):

    * ``kspace_full`` (full-sample files) or ``kspace_masked`` (undersampled files): ``(F, nc, nx, ny)``
      complex64, frames ``neighbour_frame_indices(t, nt, num_adj_frames)`` of slice ``z``;
    * ``frames``: those frame indices (the target is the centre entry, ``F // 2``);
    * ``mask``: ``(F, nx, ny)`` float32 when ``mask_file`` is set (a Task 1 or 2023 ``(ny, nx)`` mask is repeated for
      every frame, a Task 2 ``(nt, ny, nx)`` mask is indexed by ``frames``), or, for an undersampled file
      without a mask file, inferred from the non-zero k-space samples (with a warning once per process).

    ``contiguous=False`` hands the k-space out as a transposed *view* of the file-order read instead of a
    C-contiguous copy. The training chain uses it: it needs only the masked stack and the centre frame in model
    order, and :class:`~bundle.transforms.ApplyMaskd` and :class:`~bundle.transforms.MakeTargetd` write those
    directly, so the full stack is never transposed.

    ``slab_cache`` keeps that many recently read ``(nc, ny, nx)`` slabs per process. Inference visits every
    frame of a slice in order, and each frame is a neighbour of up to ``num_adj_frames`` items; with a cache of
    about ``2 * num_adj_frames`` slabs each one is read from disk once instead of up to ``num_adj_frames``
    times (which matters on network file systems, where a read is not a memory copy).

    ``mark_bad=True`` (inference) does not raise for NaN/Inf k-space or an all-zero target frame: the item gets
    ``bad`` (the error message; ``""`` for good items) and zero k-space, and the caller discards the file. This
    lets inference check values while it reads, instead of reading every file twice.

    ``read_sampled_lines=True`` (training and validation, with the mask drawn before loading: see
    ``RandKspaceMaskd(num_frames=...)``) reads, for a full-sample item whose mask (drawn, or from ``mask_file``)
    samples whole ky lines, the centre frame whole and only the sampled lines of the other frames. The item
    then gets ``kspace_masked`` (the masked stack, equal to masking the full stack) and ``kspace_centre``
    ``(1, nc, nx, ny)``, the fully sampled centre frame the target is made from, instead of ``kspace_full``.
    The finiteness check covers what was read: every value that reaches the model or the target. Other masks
    (radial) and undersampled files are read as usual.

    Items of a release whose ACS width is measured from its official masks (CMRxRecon2025, see
    :attr:`bundle.data.layout.Release.acs_from_mask`) get ``acs_width`` measured from their mask file.

    ``memory_map`` (default True) reads contiguous complex64 files through a memory map
    (:class:`~bundle.data.matio.MatSliceReader`); set it False where page faults are slow, e.g. on some network
    file systems, to read every slab with one HDF5 read (sampled lines then cost a whole-slab read each).

    Open files are kept in a per-process LRU cache of ``max_open_files`` readers (DataLoader workers each get
    an empty cache, since pickling drops it).

    Items name their file format in ``format`` (absent: CMRxRecon ``.mat``; see :mod:`bundle.data.formats`), and a
    series of a raw file its ``entry`` and ``raw_group``. Scanner raw data is read through its format's slice reader
    (readout oversampling removed, noise prewhitened unless ``prewhiten=False``); an undersampled raw item's
    ``mask`` is the lines the file holds. ``raw_cache_dir`` (``'auto'``: ``~/.cache/hypercmr/raw``, see
    :mod:`bundle.data.raw_cache`; ``None``: decode every read) holds each raw series decoded once, so that a slice
    costs what a ``.mat`` slice does.

    Raises (all name the file, ``z`` and ``t``): :class:`NonFiniteDataError` for NaN/Inf when ``check_finite``,
    :class:`EmptySliceError` when the target frame is all zeros, :class:`ShapeError` for a file that is not
    4-D/5-D k-space or an out-of-range ``z``/``t``, :class:`MaskMismatchError` for a mask that does not fit.
    """

    def __init__(
        self,
        num_adj_frames: int = 5,
        check_finite: bool = True,
        max_open_files: int = 8,
        contiguous: bool = True,
        slab_cache: int = 0,
        mark_bad: bool = False,
        read_sampled_lines: bool = False,
        memory_map: bool = True,
        prewhiten: bool = True,
        raw_cache_dir: str | os.PathLike | None = "auto",
    ):
        super().__init__(keys=("file",))
        if num_adj_frames < 1 or num_adj_frames % 2 == 0:
            raise ValueError(f"num_adj_frames must be a positive odd number, got {num_adj_frames}")
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be at least 1, got {max_open_files}")
        self.num_adj_frames = int(num_adj_frames)
        self.check_finite = bool(check_finite)
        self.max_open_files = int(max_open_files)
        self.contiguous = bool(contiguous)
        self.mark_bad = bool(mark_bad)
        self.read_sampled_lines = bool(read_sampled_lines)
        self.memory_map = bool(memory_map)
        self.prewhiten = bool(prewhiten)
        self.raw_cache_dir = None if raw_cache_dir is None else os.fspath(raw_cache_dir)
        if slab_cache < 0:
            raise ValueError(f"slab_cache must be >= 0, got {slab_cache}")
        self.slab_cache = int(slab_cache)
        self._slabs: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._readers: OrderedDict[str | tuple, MatSliceReader] = OrderedDict()
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._mask_acs: dict[str, int] = {}
        self._warned_inferred = False

    # ----------------------------------------------------------------------------------------- caches

    def _reader(self, d: Mapping) -> MatSliceReader:
        """The open slice reader of an item's file (and series), through the LRU cache."""
        path = os.fspath(d["file"])
        # A CMRxRecon file is its path; a series of a raw file also needs its entry and HDF5 group.
        key = (path, d.get("entry"), d.get("raw_group")) if d.get("format") else path
        reader = self._readers.pop(key, None)
        if reader is None:
            reader = format_of(d).open(
                path,
                d.get("entry"),
                memory_map=self.memory_map,
                prewhiten=self.prewhiten,
                cache_dir=self.raw_cache_dir,
                **raw_options(d),
            )
        self._readers[key] = reader  # most recently used last
        while len(self._readers) > self.max_open_files:
            self._readers.popitem(last=False)[1].close()
        return reader

    def _raw_mask(self, mask_file: str) -> np.ndarray:
        mask = self._masks.pop(mask_file, None)
        if mask is None:
            mask = read_mat(mask_file, check_finite=True)
        self._masks[mask_file] = mask
        while len(self._masks) > self.max_open_files:
            self._masks.popitem(last=False)
        return mask

    def _measured_acs(self, d: dict) -> dict:
        """Set ``acs_width`` from the item's official mask file where its release says so (CMRxRecon2025)."""
        mask_file = d.get("mask_file")
        release = RELEASES.get(str(d.get("layout") or "2024"))
        if mask_file and release is not None and release.acs_from_mask:
            mask_file = os.fspath(mask_file)
            if mask_file not in self._mask_acs:
                self._mask_acs[mask_file] = measure_acs_width(self._raw_mask(mask_file))
            d["acs_width"] = self._mask_acs[mask_file]
        return d

    def close(self) -> None:
        """Close every cached file handle."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._masks.clear()
        self._slabs.clear()
        self._mask_acs.clear()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"], state["_masks"], state["_slabs"] = OrderedDict(), OrderedDict(), OrderedDict()
        return state

    def _read_frames(self, reader: MatSliceReader, z: int, frames: list[int]) -> np.ndarray:
        """``reader.read_frames`` through the slab cache (when it is on)."""
        if not self.slab_cache:
            return reader.read_frames(z, frames)
        out = np.empty((len(frames), *reader.shape[-3:]), np.complex64)
        for i, t in enumerate(frames):
            key = (reader.path, reader.key, z, t)
            slab = self._slabs.pop(key, None)
            if slab is None:
                slab = reader.read_slab(t, z)
            self._slabs[key] = slab  # most recently used last
            out[i] = slab
        while len(self._slabs) > self.slab_cache:
            self._slabs.popitem(last=False)
        return out

    # ----------------------------------------------------------------------------------------- loading

    def _frames(self, d: Mapping, reader: MatSliceReader) -> list[int]:
        nt_file = reader.nt
        nt = int(d.get("nt") or nt_file)
        t = int(d["t"])
        if not 1 <= nt <= nt_file or not 0 <= t < nt:
            raise ShapeError.at(reader.path, f"target frame with nt={nt} does not fit a file of {nt_file} frames")
        return neighbour_frame_indices(t, nt, self.num_adj_frames)

    def _mask(self, mask_file: str, reader: MatSliceReader, frames: list[int]) -> np.ndarray:
        mask = self._raw_mask(mask_file)
        nt, ny, nx = reader.nt, reader.ny, reader.nx
        if mask.shape == (ny, nx):
            return np.ascontiguousarray(np.broadcast_to(mask.T, (len(frames), nx, ny)))
        if mask.shape == (nt, ny, nx):
            return np.ascontiguousarray(mask[frames].swapaxes(-1, -2))
        raise MaskMismatchError.at(
            mask_file,
            f"mask of shape {mask.shape} does not fit k-space {reader.path} of shape {reader.shape}; "
            f"expected (ny, nx) = {(ny, nx)} (Task 1) or (nt, ny, nx) = {(nt, ny, nx)} (Task 2)",
        )

    def _acquired(self, d: Mapping, frames: list[int]) -> np.ndarray | None:
        """``(F, nx, ny)`` mask of the samples a file of a format that stores them holds (raw data), else None."""
        acquired = format_of(d).acquired(os.fspath(d["file"]), d.get("entry"), **raw_options(d))
        if acquired is None:
            return None
        return np.ascontiguousarray(np.asarray(acquired, dtype=np.float32)[frames].swapaxes(-1, -2))

    def _inferred_mask(self, kspace: np.ndarray, path: str) -> np.ndarray:
        if not self._warned_inferred:
            logger.warning("%s: undersampled file without a mask file; inferring the mask from non-zero k-space", path)
            self._warned_inferred = True
        # A location counts as sampled if any coil holds a non-zero value there: (F, nc, nx, ny) -> (F, nx, ny).
        return np.ascontiguousarray((kspace != 0).any(axis=1), dtype=np.float32)

    def _given_mask(self, d: Mapping, reader: MatSliceReader, frames: list[int]) -> np.ndarray | None:
        """The item's ``(F, nx, ny)`` mask when it is known before reading (drawn, or a mask file), else None."""
        if d.get("mask") is not None:
            mask = np.asarray(d["mask"])
            expected = (len(frames), reader.nx, reader.ny)
            if mask.shape != expected:
                raise MaskMismatchError.at(
                    reader.path, f"mask of shape {mask.shape} does not fit k-space {reader.shape}: expected {expected}"
                )
            return mask
        if d.get("mask_file"):
            return self._mask(os.fspath(d["mask_file"]), reader, frames)
        return None

    def _read_lines(self, reader: MatSliceReader, z: int, frames: list[int], lines: np.ndarray):
        """Centre slab ``(nc, ny, nx)`` and, per frame, its sampled ky rows ``(nc, L_f, nx)``."""
        centre_t = frames[len(frames) // 2]
        centre = self._read_frames(reader, z, [centre_t])[0]
        rows = [np.flatnonzero(lines[f if lines.shape[0] > 1 else 0]) for f in range(len(frames))]
        blocks = [
            np.take(centre, r, axis=-2) if t == centre_t else reader.read_rows(t, z, r)
            for t, r in zip(frames, rows, strict=True)
        ]
        return centre, rows, blocks

    def _load_sampled_lines(self, d: dict, reader: MatSliceReader, z: int, frames: list[int], mask, lines) -> dict:
        path, where = reader.path, f"z={z}, t={d['t']}"
        centre, rows, blocks = self._read_lines(reader, z, frames, lines)  # read errors: __call__ adds where
        energy = sum_of_squares(centre)  # one pass tells both: finite, and (when > 0) not all zeros
        finite = np.isfinite(energy) or all_finite(centre)
        if self.check_finite and not (finite and all(all_finite(b) for b in blocks)):
            raise NonFiniteDataError.at(path, f"{where}: k-space contains NaN or Inf (frames {frames})", sample=where)
        if not energy > 0 and not centre.any():  # 0 can also be tiny values whose squares underflow
            raise EmptySliceError.at(path, f"{where}: the target frame is all zeros", sample=where)
        shape = (len(frames), reader.nc, reader.nx, reader.ny)
        # (nc, L, nx) rows of the file's order become columns of the model's (nc, nx, ny).
        d["kspace_masked"] = zero_filled_columns(shape, rows, [b.swapaxes(-1, -2) for b in blocks])
        d["kspace_centre"] = centre.swapaxes(-1, -2)[None]
        d["frames"] = list(frames)
        d["mask"] = np.ascontiguousarray(mask, dtype=np.float32)
        return d

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        path, z = os.fspath(d["file"]), int(d["z"])
        where = f"z={z}, t={d['t']}"
        reader = self._reader(d)
        try:
            frames = self._frames(d, reader)
            if self.read_sampled_lines and not self.mark_bad and d.get("kind", "full") == "full":
                mask = self._given_mask(d, reader, frames)
                lines = None if mask is None else sampled_lines(np.asarray(mask, dtype=np.float32))
                if lines is not None:
                    return self._measured_acs(self._load_sampled_lines(d, reader, z, frames, mask, lines))
            kspace = self._read_frames(reader, z, frames)
        except CMRDataError as err:
            if err.sample is not None:  # raised by the sampled-line path, which names the sample itself
                raise
            # Say which sample failed, keeping the specific error type (and its file) for the caller.
            raise type(err).at(err.path or path, f"{where}: {err.problem}", sample=where) from err
        # The one finiteness check of the pipeline: later steps only mask, scale and transform these values.
        bad = None
        if self.check_finite and not all_finite(kspace):
            bad = NonFiniteDataError.at(path, f"{where}: k-space contains NaN or Inf (frames {frames})")
        elif not kspace[len(frames) // 2].any():
            bad = EmptySliceError.at(path, f"{where}: the target frame is all zeros")
        if bad is not None and not self.mark_bad:
            raise bad
        if self.mark_bad:
            # The item still flows through the pipeline (as zeros), so that a batch of its file keeps its shape;
            # the inference writer drops the whole file and reports this message.
            d["bad"] = "" if bad is None else str(bad)
            if bad is not None:
                kspace = np.zeros_like(kspace)
        # (F, nc, ny, nx) -> (F, nc, nx, ny)
        kspace = swapped_copy(kspace) if self.contiguous else kspace.swapaxes(-1, -2)

        # Items carry their kind; without it, the variable name tells (kus, or kspace_sub<NN> in 2023 files).
        kind = d.get("kind") or ("undersampled" if is_undersampled_key(reader.key) else "full")
        d["kspace_masked" if kind == "undersampled" else "kspace_full"] = kspace
        d["frames"] = list(frames)
        if bad is not None:
            d["mask"] = np.ones((len(frames), reader.nx, reader.ny), np.float32)
        elif d.get("mask_file"):
            d["mask"] = self._mask(os.fspath(d["mask_file"]), reader, frames)
        elif kind == "undersampled":
            acquired = self._acquired(d, frames)
            d["mask"] = self._inferred_mask(kspace, path) if acquired is None else acquired
            padded = format_of(d).padded(path, d.get("entry"), **raw_options(d))
            if padded is not None and np.asarray(padded).all(axis=-1).any():
                # ky lines zero by design (partial Fourier): self-supervised splitting counts them as sampled
                d["always_sampled"] = np.asarray(padded).all(axis=-1)
        return self._measured_acs(d) if bad is None else d
