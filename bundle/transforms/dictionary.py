"""Dictionary transforms (MONAI ``MapTransform``) that turn a loaded sample into a network input.

A loader puts into the sample dict either ``kspace_full`` ``(F, C, nx, ny)`` complex64 (fully-sampled files,
optionally with an official ``mask`` ``(F, nx, ny)``) or ``kspace_masked`` + ``mask`` (undersampled files),
plus metadata ``file``, ``z``, ``t``, ``nt``, ``frames``, ``series``, ``group``, ``pattern``, ``acceleration``.
A typical training chain::

    RandKspaceMaskd -> ApplyMaskd -> MakeTargetd -> NormalizeKspaced -> StackFramesToChannelsd

gives ``kspace_masked`` ``(F·C, nx, ny)`` complex64 (channel ``f·C + c``), ``mask`` ``(F, nx, ny)`` float32,
``target`` ``(1, nx, ny)`` float32 and ``kspace_target`` ``(C, nx, ny)`` complex64, all torch tensors, plus a
float ``scale``. Random choices follow MONAI's ``Randomizable`` (``set_random_state``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from pathlib import PurePath

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from bundle.arrays import all_finite, contiguous
from bundle.errors import CMRDataError, EmptySliceError, NonFiniteDataError, ShapeError
from bundle.mri import neighbour_frame_indices
from bundle.transforms.kspace import (
    NORMALIZATION_MODES,
    acs_window,
    apply_coil_compression,
    centre_frame_target,
    coil_compression_matrix,
    denormalize,
    normalization_scale,
    normalize,
    undersample,
)
from bundle.transforms.masks import MAX_ACCELERATION, as_int, canonical_pattern, make_mask

__all__ = [
    "StackNeighboursd",
    "RandKspaceMaskd",
    "ApplyMaskd",
    "MakeTargetd",
    "CoilCompressd",
    "NormalizeKspaced",
    "StackFramesToChannelsd",
    "CheckFinited",
]


def _where(d: Mapping) -> str:
    """``"<file> (z=.., t=..)"`` for error messages."""
    return f"{d.get('file', '<unknown file>')} (z={d.get('z')}, t={d.get('t')})"


def _error(cls: type[CMRDataError], d: Mapping, problem: str) -> CMRDataError:
    """``cls`` whose message names the sample's file, slice and frame, and whose ``path`` is the file."""
    file = d.get("file")
    return cls(f"{_where(d)}: {problem}", path=None if file is None else str(file), problem=problem)


def _plain(value):
    """Metadata value as a plain Python object so that its repr is stable (numpy ints print differently)."""
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return value


#: ACS lines of a CMRxRecon2024 file; items of the index carry their own (24 in CMRxRecon2023 files).
DEFAULT_ACS_WIDTH = 16


def _acs_width(configured: int | None, d: Mapping) -> int:
    """The configured ACS width, else the item's ``acs_width`` (set by the index per release), else 16."""
    if configured is not None:
        return configured
    width = _plain(d.get("acs_width"))
    return int(width) if isinstance(width, (int, np.integer)) and width > 0 else DEFAULT_ACS_WIDTH


def portable_name(file) -> str:
    """The part of a data file's path that does not depend on where the dataset lives.

    The path below the last ``MultiCoil`` folder (``Cine/TrainingSet/FullSample/P001/cine_sax.mat``), or its last
    five parts outside such a tree. Seeds drawn from it give the same validation masks, and so the same metrics,
    in every checkout and on every machine.
    """
    parts = PurePath(str(file)).parts
    if "MultiCoil" in parts:
        start = len(parts) - parts[::-1].index("MultiCoil")
        return "/".join(parts[start:])
    return "/".join(parts[-5:])


def _at_sample(d: Mapping, fn, *args, **kwargs):
    """Call ``fn``; a data error it raises is re-raised naming the sample (file, z, t)."""
    try:
        return fn(*args, **kwargs)
    except CMRDataError as err:
        raise _error(type(err), d, err.problem) from err


class StackNeighboursd(MapTransform):
    """Pick the ``num_adj`` neighbour frames of target frame ``d[t_key]`` from whole-series arrays.

    Each ``d[key]`` is one slice over all frames, ``(nt, C, nx, ny)`` k-space or ``(nt, nx, ny)`` mask; it
    becomes ``(F, ...)`` with ``F = num_adj`` using :func:`~bundle.mri.neighbour_frame_indices` (circular
    wrap, edge replication for short series; the centre entry ``F // 2`` is ``t``). Sets ``d['frames']``
    and, when absent, ``d['nt']``.
    """

    def __init__(self, keys: KeysCollection, num_adj: int = 5, t_key: str = "t", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.num_adj = num_adj
        self.t_key = t_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        frames = None
        for key in self.key_iterator(d):
            nt = int(d[key].shape[0])
            if "nt" in d and int(d["nt"]) != nt:
                raise _error(ShapeError, d, f"{key} has {nt} frames but the series has nt={d['nt']}")
            idx = neighbour_frame_indices(int(d[self.t_key]), nt, self.num_adj)
            if frames is not None and idx != frames:
                raise _error(ShapeError, d, f"{key} has a different number of frames from {self.keys[0]}")
            frames = idx
            d[key] = d[key][idx]
            d.setdefault("nt", nt)
        if frames is not None:
            d["frames"] = frames
        return d


class RandKspaceMaskd(Randomizable, MapTransform):
    """Build a sampling mask ``d[mask_key]`` ``(F, nx, ny)`` for a fully-sampled stack, unless one is given.

    ``keys`` are the k-space stacks the mask is for: every one of them must be ``(F, C, nx, ny)`` of the same
    ``F, nx, ny`` (one mask serves them all). An official mask already in the dict is kept. Otherwise a pattern
    is drawn from ``patterns`` (weights ``pattern_weights``, uniform by default) and an acceleration from
    ``accelerations`` (Uniform) or ``kt_accelerations`` (kt patterns); the mask of the whole series
    ``(nt, nx, ny)`` is built with :func:`~bundle.transforms.masks.make_mask` (``nt = d['nt']``) and the
    neighbour frames ``d['frames']`` are taken, so a kt mask keeps its temporal structure. ``d['pattern']`` and
    ``d['acceleration']`` record the choice.

    ``deterministic=True`` (validation) draws everything from a stable hash of ``(file, z, t, seed)``, with the
    file named by :func:`portable_name`: the same sample gets the same mask every epoch, whatever the order,
    worker, transform instance or the folder the dataset sits in.

    ``acs_width`` (fully sampled central ky lines) defaults to the item's ``acs_width``: 16 for CMRxRecon2024
    files, 24 for CMRxRecon2023 files, as in their official masks.

    ``num_frames`` lets the mask be drawn **before** the k-space is read: for an item without any of ``keys``,
    the stack is the ``num_frames`` neighbour frames of ``d['t']`` among ``d['nt']`` (as the loader picks them)
    and its size ``d['nx'] × d['ny']`` (every :func:`~bundle.data.build_datalist` item has these). A loader
    with ``read_sampled_lines`` then reads only the ky lines the mask samples. Items that bring their own mask
    (``mask_file``, or ``kind`` ``'undersampled'``) are left for the loader. The mask is the same as when it is
    drawn after loading.
    """

    def __init__(
        self,
        patterns: Sequence[str] = ("Uniform",),
        accelerations: Sequence[int] = (4, 8, 10),
        acs_width: int | None = None,
        kt_accelerations: Sequence[int] = (4, 8, 12, 16, 20, 24),
        pattern_weights: Sequence[float] | None = None,
        deterministic: bool = False,
        seed: int = 0,
        keys: KeysCollection = "kspace_full",
        mask_key: str = "mask",
        allow_missing_keys: bool = False,
        num_frames: int | None = None,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.num_frames = None if num_frames is None else as_int("num_frames", num_frames, 1)
        if isinstance(patterns, str):
            patterns = (patterns,)
        self.patterns = tuple(canonical_pattern(p) for p in patterns)
        if not self.patterns:
            raise ValueError("patterns must name at least one sampling pattern")
        self.accelerations = self._check_accelerations("accelerations", accelerations)
        self.kt_accelerations = self._check_accelerations("kt_accelerations", kt_accelerations)
        if pattern_weights is None:
            weights = np.ones(len(self.patterns))
        else:
            weights = np.asarray(pattern_weights, dtype=np.float64)
            if weights.shape != (len(self.patterns),) or np.any(weights < 0) or not weights.sum() > 0:
                raise ValueError(
                    f"pattern_weights must be {len(self.patterns)} non-negative numbers with a positive sum, "
                    f"got {pattern_weights!r}"
                )
        self.pattern_weights = weights / weights.sum()
        self.acs_width = None if acs_width is None else as_int("acs_width", acs_width, 0)
        self.deterministic = bool(deterministic)
        self.seed = int(seed)
        self.mask_key = mask_key
        self._choice: tuple[str, int, np.random.Generator] | None = None

    @staticmethod
    def _check_accelerations(name: str, values: Sequence[int]) -> tuple[int, ...]:
        values = (values,) if np.isscalar(values) else tuple(values)
        if not values:
            raise ValueError(f"{name} must hold at least one value")
        return tuple(as_int(name, v, 1, MAX_ACCELERATION) for v in values)

    def _draw(self, state: np.random.RandomState | np.random.Generator) -> tuple[str, int, np.random.Generator]:
        pattern = self.patterns[int(state.choice(len(self.patterns), p=self.pattern_weights))]
        pool = self.accelerations if pattern == "Uniform" else self.kt_accelerations
        acceleration = pool[int(state.choice(len(pool)))]
        # ktGaussian needs a Generator; seeding it from the same stream keeps one source of randomness.
        return pattern, acceleration, np.random.default_rng(int(state.randint(0, 2**31 - 1)))

    def randomize(self, data: Mapping | None = None) -> None:
        self._choice = self._draw(self.R)

    def _stable_state(self, d: Mapping) -> np.random.RandomState:
        if "file" not in d:
            raise ValueError("RandKspaceMaskd(deterministic=True) needs d['file'] (with 'z' and 't') to seed the mask")
        key = repr((portable_name(d["file"]), _plain(d.get("z")), _plain(d.get("t")), self.seed)).encode()
        # A cryptographic digest, unlike hash(), is the same in every process and Python run.
        return np.random.RandomState(int.from_bytes(hashlib.sha256(key).digest()[:4], "little"))

    def _stack_size(self, d: dict) -> tuple[int, int, int] | None:
        """``(F, nx, ny)`` of the stack the mask is for, or None when this item gets no mask from here."""
        keys = [key for key in self.keys if key in d]
        if not keys and self.num_frames is not None:  # before loading: the item's metadata says
            if d.get("mask_file") or d.get("kind", "full") != "full":
                return None
            missing = [k for k in ("nx", "ny", "nt", "t") if d.get(k) is None]
            if missing:
                raise _error(ShapeError, d, f"a mask drawn before loading needs the item's {missing}")
            return self.num_frames, int(d["nx"]), int(d["ny"])
        keys = list(self.key_iterator(d))
        if not keys:
            return None
        key = keys[0]
        for other in keys[1:]:  # one mask serves every key, so every key must be a stack of the same frames
            if tuple(d[other].shape[:1] + d[other].shape[2:]) != tuple(d[key].shape[:1] + d[key].shape[2:]):
                raise _error(
                    ShapeError, d, f"{other} {tuple(d[other].shape)} and {key} {tuple(d[key].shape)} need one mask"
                )
        if d[key].ndim != 4:
            raise _error(ShapeError, d, f"{key} must be (F, C, nx, ny), got shape {tuple(d[key].shape)}")
        f, _, nx, ny = d[key].shape
        return f, nx, ny

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.mask_key in d:
            return d
        size = self._stack_size(d)
        if size is None:
            return d
        if self.deterministic:
            pattern, acceleration, rng = self._draw(self._stable_state(d))
        else:
            self.randomize(d)
            pattern, acceleration, rng = self._choice
        f, nx, ny = size
        nt = int(d.get("nt", f))
        frames = d.get("frames")
        if frames is None:
            frames = neighbour_frame_indices(int(d.get("t", 0)), nt, f)
        frames = [int(i) for i in frames]
        if len(frames) != f:
            raise _error(ShapeError, d, f"{len(frames)} frame indices for a stack of {f} frames")
        acs_width = _acs_width(self.acs_width, d)
        d[self.mask_key] = make_mask(pattern, acceleration, nt, nx, ny, rng=rng, acs_width=acs_width, frames=frames)
        d["pattern"] = pattern
        d["acceleration"] = acceleration
        return d


class ApplyMaskd(MapTransform):
    """``d[output_key] = d[key] ⊙ d[mask_key]`` (``(F, C, nx, ny)`` × ``(F, nx, ny)``) when absent.

    Undersampled files already carry ``kspace_masked`` and are left alone.
    """

    def __init__(
        self,
        keys: KeysCollection = "kspace_full",
        mask_key: str = "mask",
        output_key: str = "kspace_masked",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.output_key not in d:
                d[self.output_key] = _at_sample(d, undersample, d[key], d[self.mask_key])
        return d


class MakeTargetd(MapTransform):
    """Centre-frame target from ``d[key]`` ``(F, C, nx, ny)``; skipped when the key is absent (inference).

    Sets ``d[target_key]`` ``(1, nx, ny)`` float32 (RSS image) and ``d[kspace_target_key]`` ``(C, nx, ny)``
    complex64. ``drop_source`` removes ``d[key]`` afterwards: once the masked stack and the target exist the
    full stack is not needed, and later steps (coil compression, scaling) then skip it.
    """

    def __init__(
        self,
        keys: KeysCollection = "kspace_full",
        target_key: str = "target",
        kspace_target_key: str = "kspace_target",
        allow_missing_keys: bool = False,
        drop_source: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.target_key = target_key
        self.kspace_target_key = kspace_target_key
        self.drop_source = bool(drop_source)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.target_key], d[self.kspace_target_key] = centre_frame_target(d[key])
            if self.drop_source:
                del d[key]
        return d


class CoilCompressd(MapTransform):
    """SVD coil compression of every key ``(F, C, nx, ny)`` (or ``(C, nx, ny)``) to ``num_coils`` virtual coils.

    One matrix is computed from the ACS region (:func:`~bundle.transforms.kspace.acs_window`, width
    ``acs_width``, by default the item's, block for radial masks) of the centre frame of ``d[calib_key]``, the
    **masked** k-space, so training and inference (where only masked data exist) compress the same way. It is
    applied to every frame and key, e.g. ``kspace_full`` and ``kspace_target`` as well, so masking and
    compression commute. The image ``target`` is deliberately not touched: it stays the RSS of the true coils.
    No-op when ``C <= num_coils``.
    """

    def __init__(
        self,
        num_coils: int = 10,
        keys: KeysCollection = ("kspace_masked", "kspace_full", "kspace_target"),
        calib_key: str = "kspace_masked",
        mask_key: str = "mask",
        acs_width: int | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.num_coils = as_int("num_coils", num_coils, 1)
        self.calib_key = calib_key
        self.mask_key = mask_key
        self.acs_width = acs_width

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.calib_key not in d:
            raise ValueError(f"CoilCompressd needs {self.calib_key!r} (apply the mask first): {_where(d)}")
        calib = d[self.calib_key]
        if calib.ndim != 4:
            raise _error(ShapeError, d, f"{self.calib_key} must be (F, C, nx, ny), got shape {calib.shape}")
        if calib.shape[1] <= self.num_coils:
            return d
        centre = calib[calib.shape[0] // 2]
        mask = d.get(self.mask_key)
        width = _acs_width(self.acs_width, d)
        acs = centre[acs_window(centre.shape, width if mask is None else mask, acs_width=width)]
        matrix = coil_compression_matrix(acs, self.num_coils)
        for key in self.key_iterator(d):
            x = d[key]
            d[key] = apply_coil_compression(x, matrix) if x.ndim == 4 else apply_coil_compression(x[None], matrix)[0]
        return d


class NormalizeKspaced(MapTransform):
    """Scale k-space and targets by a per-sample power of two ``d[scale_key]`` computed from ``d[source_key]``.

    ``mode``: ``none`` | ``max_zf`` | ``percentile_zf`` (:func:`~bundle.transforms.kspace.normalization_scale`).
    Every present key is multiplied by the same scale, so the RSS target stays consistent with the k-space.
    :meth:`inverse` undoes it bit-exactly (the inference writer divides predictions by the same scale).
    """

    def __init__(
        self,
        mode: str = "none",
        keys: KeysCollection = ("kspace_masked", "kspace_full", "kspace_target", "target"),
        source_key: str = "kspace_masked",
        scale_key: str = "scale",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"unknown normalisation mode {mode!r}; valid modes are {', '.join(NORMALIZATION_MODES)}")
        self.mode = mode
        self.source_key = source_key
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        scale = _at_sample(d, normalization_scale, d[self.source_key], self.mode)
        if scale != 1.0:  # x * 1 is x: no copies of the stacks for mode none
            for key in self.key_iterator(d):
                d[key] = normalize(d[key], scale)
        d[self.scale_key] = scale
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        """Divide every present key by ``d[scale_key]`` (exact) and reset the scale to 1."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = denormalize(d[key], d[self.scale_key])
        d[self.scale_key] = 1.0
        return d


def _to_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype).contiguous()
    return torch.from_numpy(contiguous(x)).to(dtype).contiguous()


class StackFramesToChannelsd(MapTransform):
    """Flatten frames into channels and convert to torch for batching.

    ``keys`` (k-space, ``(F, C, nx, ny)``) become ``(F·C, nx, ny)`` complex64, frame-major (channel
    ``f·C + c``; the centre frame fills ``[F//2·C, (F//2+1)·C)``). ``mask_key`` ``(F, nx, ny)`` and ``target``
    become float32 tensors of the same shape, ``kspace_target`` a complex64 tensor. ``drop_keys`` (by default
    the full k-space stack, not needed once the target exists and 5× larger than it) are removed.
    """

    def __init__(
        self,
        keys: KeysCollection = ("kspace_masked",),
        mask_key: str = "mask",
        float_keys: Sequence[str] = ("target",),
        complex_keys: Sequence[str] = ("kspace_target",),
        drop_keys: Sequence[str] = ("kspace_full",),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.float_keys = tuple(float_keys)
        self.complex_keys = tuple(complex_keys)
        self.drop_keys = tuple(drop_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.ndim != 4:
                raise _error(ShapeError, d, f"{key} must be (F, C, nx, ny), got shape {tuple(x.shape)}")
            d[key] = _to_tensor(x, torch.complex64).reshape(-1, *x.shape[-2:])
        for key in (self.mask_key, *self.float_keys):
            if key in d:
                d[key] = _to_tensor(d[key], torch.float32)
        for key in self.complex_keys:
            if key in d:
                d[key] = _to_tensor(d[key], torch.complex64)
        for key in self.drop_keys:
            d.pop(key, None)
        return d


class CheckFinited(MapTransform):
    """Reject a sample whose arrays hold NaN/Inf, or whose target is all zero, naming file, z and t.

    Raises :class:`~bundle.errors.NonFiniteDataError` or :class:`~bundle.errors.EmptySliceError` (both
    ``ValueError``), so a bad file is reported instead of producing a NaN loss later.
    """

    def __init__(
        self,
        keys: KeysCollection = ("kspace_masked", "kspace_full", "target"),
        target_key: str = "target",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.target_key = target_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            finite = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else all_finite(x)
            if not finite:
                raise _error(NonFiniteDataError, d, f"{key} contains NaN or Inf")
        if self.target_key in d:
            t = d[self.target_key]
            empty = not bool(t.any()) if isinstance(t, torch.Tensor) else not np.any(t)
            if empty:
                raise _error(EmptySliceError, d, f"{self.target_key} is all zero")
        return d
