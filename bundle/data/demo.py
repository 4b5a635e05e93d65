"""Synthetic CMRxRecon2024 or CMRxRecon2023 dataset in the official ``ChallengeData/MultiCoil`` layout and format.

Real challenge data cannot be redistributed, so the demo training, the tests and the documentation run on
this stand-in. It has the official folders, file names, variable names, MATLAB v7.3 format, axis orders,
frame counts, several matrix sizes per series (so shape grouping is exercised), patients without Aorta
files, and the unseen contrasts (Flow2d, BlackBlood) only in the ValidationSet. Images come from
:mod:`bundle.data.phantom`; masks from :mod:`bundle.transforms.masks`.

CMRxRecon2024 layout (the default), written under ``root/ChallengeData/MultiCoil``::

    <Modality>/TrainingSet/FullSample/Pxxx/<stem>.mat                               kspace_full
    <Modality>/TrainingSet/Mask_Task1/Pxxx/<stem>_mask_Uniform{4,8,10}.mat           mask (ny, nx)
    <Modality>/TrainingSet/Mask_Task2/Pxxx/<stem>_mask_kt<Pattern><R>.mat            mask (nt, ny, nx)
    <Modality>/ValidationSet/UnderSample_Task1/Pxxx/<stem>_kus_Uniform{4,8,10}.mat   kus
    <Modality>/ValidationSet/Mask_Task1/Pxxx/<stem>_mask_Uniform{4,8,10}.mat
    <Modality>/ValidationSet/UnderSample_Task2/Pxxx/<stem>_kus_kt<Pattern><R>.mat    (see VAL_TASK2_STEMS)
    <Modality>/ValidationSet/Mask_Task2/Pxxx/<stem>_mask_kt<Pattern><R>.mat

CMRxRecon2023 layout (``layout='2023'``): the series of :data:`SERIES_2023` only, Uniform masks with 24 ACS
lines and matrices of at least :data:`MIN_NY_2023` ky lines::

    {Cine,Mapping}/TrainingSet/FullSample/Pxxx/<stem>.mat                            kspace_full
    {Cine,Mapping}/{TrainingSet,ValidationSet}/AccFactor{04,08,10}/Pxxx/<stem>.mat   kspace_sub04 / 08 / 10
    {Cine,Mapping}/{TrainingSet,ValidationSet}/AccFactor{04,08,10}/Pxxx/<stem>_mask.mat   mask04 / 08 / 10 (ny, nx)
    Mapping/.../Pxxx/{T1map,T2map}.csv              inversion / echo time per frame, beside each Mapping .mat

CMRxRecon2025 layout (``layout='2025'``): the series of :data:`SERIES_2025` (T2w without a time axis),
Uniform/ktGaussian/ktRadial masks at R 8/16/24 with 20 ACS lines, patients below ``<Center>/<Vendor>``
(:data:`SITES_2025`), and the validation tree of one task (:data:`VAL_TASK_2025`) at an unseen centre::

    ChallengeData/MultiCoil/<Modality>/TrainingSet/FullSample/<C>/<V>/Pxxx/<stem>.mat                 kspace
    ChallengeData/MultiCoil/<Modality>/TrainingSet/Mask_TaskAll/<C>/<V>/Pxxx/<stem>_mask_<P><R>.mat  mask
    ChallengeData_ValSet/TaskR1/MultiCoil/<Modality>/ValidationSet/UnderSample_TaskR1/<C>/<V>/Pxxx/<stem>_kus_<P><R>.mat
        (with <stem>_info.csv beside it, and the mask below Mask_TaskR1)

Patients are numbered from P001 in each split (in 2025, in each vendor folder). Every array is a deterministic
function of ``(seed, split, patient, series)``, so the same seed gives identical arrays whatever else changes.
"""

from __future__ import annotations

import math
import numbers
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..mri import rhu
from ..transforms.masks import make_mask
from .index import ACS_WIDTHS, LAYOUTS
from .matio import write_mat
from .phantom import random_anatomy, synthesize_kspace

__all__ = [
    "SIZES",
    "SERIES",
    "SERIES_2023",
    "MIN_NY_2023",
    "SizePreset",
    "SeriesSpec",
    "resolve_size",
    "series_shape",
    "series_kspace",
    "make_demo_dataset",
]

NUM_COILS = 10
TASK1_RATES = (4, 8, 10)
TASK2_PATTERNS = ("ktUniform", "ktGaussian", "ktRadial")
TASK2_RATES = (4, 8, 12, 16, 20, 24)
#: Series of the first validation patient that also get Task 2 files: one with even and one with odd nt. Only
#: these, because a kus file is as large as the full k-space and the 'small' tree must stay small.
VAL_TASK2_STEMS = ("cine_lax", "T1map")
MARKER = "DEMO_DATASET.txt"
_MIN_NY = 24  # 16 ACS lines plus a few undersampled lines on each side
_MIN_NX = 32
#: Smallest ny of a CMRxRecon2025 demo file: its 20 ACS lines plus a few undersampled lines on each side.
MIN_NY_2025 = 32
#: Smallest ny of a CMRxRecon2023 demo file: its 24 ACS lines plus a few undersampled lines on each side.
MIN_NY_2023 = 32
#: The series of CMRxRecon2023 (Cine and Mapping only).
SERIES_2023 = ("cine_sax", "cine_lax", "T1map", "T2map")
#: CMRxRecon2025 demo sites ``(centre, vendor folder)``: training patient ``p`` is at site ``p % 3`` with number
#: ``p // 3 + 1``, so Center002 has a ``P001`` under each of its two vendors (two people, as in the real data).
SITES_2025 = (("Center001", "UIH_30T_umr780"), ("Center002", "Siemens_30T_CIMA.X"), ("Center002", "UIH_15T_umr670"))
#: The site of the CMRxRecon2025 demo validation task, a centre no training patient comes from (as in TaskR1).
VAL_SITES_2025 = (("Center003", "Siemens_15T_Aera"),)
#: The CMRxRecon2025 demo validation task.
VAL_TASK_2025 = "TaskR1"
#: CMRxRecon2025 sampling: patterns and accelerations of the 2025 mask generator (20 ACS lines).
PATTERNS_2025 = ("Uniform", "ktGaussian", "ktRadial")
RATES_2025 = (8, 16, 24)


@dataclass(frozen=True)
class SeriesSpec:
    """One series type: modality folder, frames, real ``(nx, ny)`` variants and the real nz range."""

    modality: str
    nt: int
    shapes: tuple[tuple[int, int], ...]
    nz_range: tuple[int, int]
    training: bool = True  # False: unseen contrast, ValidationSet Task 1 only


# Real shapes (post-swap nx, ny; docs/design.md "Data format"). Flow2d and BlackBlood sizes are unknown there;
# the values below are plausible guesses that differ from every other series on purpose.
SERIES: dict[str, SeriesSpec] = {
    "cine_sax": SeriesSpec("Cine", 12, ((512, 246), (512, 204), (512, 162)), (9, 11)),
    "cine_lax": SeriesSpec("Cine", 12, ((448, 204), (448, 168)), (3, 3)),
    "cine_lvot": SeriesSpec("Cine", 12, ((416, 168),), (1, 1)),
    "aorta_sag": SeriesSpec("Aorta", 12, ((416, 168),), (6, 10)),
    "aorta_tra": SeriesSpec("Aorta", 12, ((416, 168),), (8, 10)),
    "T1map": SeriesSpec("Mapping", 9, ((512, 144),), (5, 7)),
    "T2map": SeriesSpec("Mapping", 3, ((384, 116),), (5, 7)),
    "tagging": SeriesSpec("Tagging", 12, ((448, 180),), (7, 11)),
    "flow2d": SeriesSpec("Flow2d", 10, ((448, 156),), (1, 2), training=False),
    "blackblood": SeriesSpec("BlackBlood", 1, ((512, 220),), (3, 5), training=False),
}


#: CMRxRecon2025 demo series: ``stem -> (spec, phantom kind)``. T2w has no time axis (4-D files), like
#: BlackBlood, and cine_lax_4ch is one long-axis view. Shapes are plausible, not measured.
SERIES_2025: dict[str, tuple[SeriesSpec, str]] = {
    "cine_sax": (SeriesSpec("Cine", 12, ((448, 162), (448, 204)), (9, 11)), "cine_sax"),
    "cine_lax_4ch": (SeriesSpec("Cine", 12, ((448, 204),), (1, 1)), "cine_lax"),
    "T1map": (SeriesSpec("Mapping", 9, ((448, 144),), (5, 7)), "T1map"),
    "T2w": (SeriesSpec("T2w", 1, ((448, 196),), (3, 5)), "blackblood"),
}


@dataclass(frozen=True)
class SizePreset:
    """How big the synthetic dataset is.

    ``scale`` multiplies the real nx and ny, ``nz_scale`` the real number of slices; ``kt_rates`` is how
    many of the six Task 2 accelerations get a training mask file per pattern and series (all 18 files per
    series when 6).
    """

    name: str
    scale: float
    nz_scale: float
    train_patients: int
    val_patients: int
    kt_rates: int


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset("tiny", 0.08, 0.1, 2, 1, 1),  # unit tests only; matrices near the 32 x 24 minimum
    "small": SizePreset("small", 0.16, 0.15, 6, 2, 1),  # the README's CPU demo
    "medium": SizePreset("medium", 0.5, 0.5, 4, 1, 2),  # about 4 GB
    "real": SizePreset("real", 1.0, 1.0, 3, 1, 6),  # about 25 GB; all 18 Task 2 masks per series
}


def resolve_size(size: str | float) -> SizePreset:
    """A preset by name (``'tiny'``, ``'small'``, ``'medium'``, ``'real'``) or a scale factor in (0, 1]."""
    if isinstance(size, str) and size.strip().lower() in SIZES:
        return SIZES[size.strip().lower()]
    try:
        scale = float(size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be one of {', '.join(SIZES)} or a scale factor in (0, 1], got {size!r}") from None
    if not 0.0 < scale <= 1.0 or not math.isfinite(scale):
        raise ValueError(f"a size scale factor must be in (0, 1], got {size!r}")
    return SizePreset(f"{scale:g}", scale, scale, 6, 2, 2)


def _scaled(n: int, scale: float, minimum: int) -> int:
    """``n * scale`` rounded to an even number (every known size is even), at least ``minimum``."""
    return max(minimum, 2 * rhu(n * scale / 2))


def _min_ny(layout: str) -> int:
    return {"2023": MIN_NY_2023, "2025": MIN_NY_2025}.get(layout, _MIN_NY)


def series_shape(stem: str, preset: SizePreset, layout: str = "2024") -> list[tuple[int, int]]:
    """The ``(nx, ny)`` variants of ``stem`` at ``preset``; variants stay distinct (ny falls by >= 2 each).

    ``layout='2023'`` raises the smallest ny to :data:`MIN_NY_2023`, room for the 2023 masks' 24 ACS lines.
    """
    min_ny = _min_ny(layout)
    spec = SERIES_2025[stem][0] if layout == "2025" else SERIES[stem]
    shapes = [(_scaled(nx, preset.scale, _MIN_NX), _scaled(ny, preset.scale, min_ny)) for nx, ny in spec.shapes]
    # Clamping to the minimum can merge variants; push the earlier (larger) ones up instead.
    for i in range(len(shapes) - 2, -1, -1):
        nx, ny = shapes[i]
        shapes[i] = (nx, max(ny, shapes[i + 1][1] + 2))
    return shapes


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _split_code(split: str) -> int:
    return {"TrainingSet": 0, "ValidationSet": 1}[split]


def _plan(split: str, patient: int, preset: SizePreset) -> list[str]:
    """Series present for a patient; a few training patients lack a modality, as in the real data."""
    stems = [s for s, spec in SERIES.items() if spec.training or split == "ValidationSet"]
    if split == "TrainingSet":
        if patient == 1:
            stems = [s for s in stems if SERIES[s].modality != "Aorta"]
        if patient == 4:
            stems = [s for s in stems if SERIES[s].modality != "Tagging"]
    return stems


def _series_dims(
    stem: str, split: str, patient: int, preset: SizePreset, rng: np.random.Generator, layout: str = "2024"
):
    """``(nt, nz, ny, nx)`` of one file. Matrix variants rotate over patients so that each appears."""
    spec = SERIES[stem]
    shapes = series_shape(stem, preset, layout)
    nx, ny = shapes[(patient + (split == "ValidationSet")) % len(shapes)]
    nz_real = int(rng.integers(spec.nz_range[0], spec.nz_range[1] + 1))
    nz = max(1, min(nz_real, rhu(nz_real * preset.nz_scale)))
    nt = spec.nt
    if stem == "aorta_tra" and split == "TrainingSet" and patient == 2:
        nt = 10  # one real aorta_tra file has 10 frames
    return nt, nz, ny, nx


def _kt_choices(stem_index: int, patient: int, count: int) -> list[tuple[str, int]]:
    """``count`` accelerations per kt pattern, rotated over series and patients so all six R appear."""
    out = []
    for k, pattern in enumerate(TASK2_PATTERNS):
        start = (stem_index + patient + 2 * k) % len(TASK2_RATES)
        rates = [TASK2_RATES[(start + j * len(TASK2_RATES) // count) % len(TASK2_RATES)] for j in range(count)]
        out.extend((pattern, r) for r in sorted(set(rates)))
    return out


def _h5_mask(pattern: str, rate: int, nt: int, nx: int, ny: int, rng: np.random.Generator) -> np.ndarray:
    """A mask in file (h5py) order and dtype: Task 1 ``(ny, nx)``, Task 2 ``(nt, ny, nx)``, float64 0/1."""
    if pattern == "Uniform":
        return make_mask(pattern, rate, 1, nx, ny)[0].T.astype(np.float64)
    return make_mask(pattern, rate, nt, nx, ny, rng=rng).transpose(0, 2, 1).astype(np.float64)


def _undersample(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``kspace ⊙ mask`` for k-space ``(nt, nz, nc, ny, nx)`` or 4-D ``(nz, nc, ny, nx)`` (h5py order)."""
    m = mask.astype(np.float32)
    if m.ndim == 3:  # (nt, ny, nx): one mask per frame, shared by slices and coils
        m = m[:, None, None]
    return kspace * m


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _patient_index(patient: str) -> int:
    if not (isinstance(patient, str) and len(patient) == 4 and patient[0] == "P" and patient[1:].isdigit()):
        raise ValueError(f"patient must be an id like 'P001', got {patient!r}")
    if int(patient[1:]) < 1:
        raise ValueError(f"patient ids start at P001, got {patient!r}")
    return int(patient[1:]) - 1


def _series(
    stem: str, split: str, p: int, preset: SizePreset, seed: int, anatomy=None, layout: str = "2024"
) -> np.ndarray:
    """Fully sampled k-space of one file, in file order (5-D; 4-D for BlackBlood)."""
    code, s = _split_code(split), list(SERIES).index(stem)
    if anatomy is None:
        anatomy = random_anatomy(_rng(seed, code, p))
    series_rng = _rng(seed, code, p, s, 0)
    nt, nz, ny, nx = _series_dims(stem, split, p, preset, series_rng, layout)
    kspace = synthesize_kspace(stem, nt, nz, ny, nx, series_rng, nc=NUM_COILS, anatomy=anatomy)
    return kspace[0] if stem == "blackblood" else kspace  # BlackBlood files have no time axis


def _check_layout(layout) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(repr(x) for x in LAYOUTS)}, got {layout!r}")
    return layout


def series_kspace(
    stem: str,
    patient: str,
    split: str = "TrainingSet",
    seed: int = 0,
    size: str | float = "small",
    layout: str = "2024",
) -> np.ndarray:
    """The fully sampled k-space behind one file of the demo tree, exactly as :func:`make_demo_dataset` makes it.

    For a TrainingSet file this is its ``kspace_full``; for a ValidationSet file it is the ground truth the
    undersampled files (``kus``, or ``kspace_sub<NN>`` in 2023) were made from (the official tree has none),
    e.g. to score the demo's inference.

    Args:
        stem: a series name from :data:`SERIES` (from :data:`SERIES_2023` for ``layout='2023'``, from
            :data:`SERIES_2025` for ``'2025'``), e.g. ``'cine_sax'``.
        patient: ``'P001'``, ``'P002'``, ... (numbered from P001 in each split); for ``layout='2025'`` the key
            ``'<Center>/<Vendor>/<Pxxx>'``.
        split: ``'TrainingSet'`` or ``'ValidationSet'``.
        seed, size, layout: as given to :func:`make_demo_dataset`.

    Returns:
        complex64 ``(nt, nz, nc, ny, nx)``, or ``(nz, nc, ny, nx)`` for ``blackblood`` (h5py order).
    """
    layout = _check_layout(layout)
    if layout == "2025":
        if split not in ("TrainingSet", "ValidationSet"):
            raise ValueError(f"split must be 'TrainingSet' or 'ValidationSet', got {split!r}")
        return _series_2025(stem, split, _patient_index_2025(patient, split), resolve_size(size), _check_seed(seed))
    stems = SERIES_2023 if layout == "2023" else tuple(SERIES)
    if stem not in stems:
        raise ValueError(f"unknown series {stem!r} for layout {layout}; expected one of {', '.join(stems)}")
    if split not in ("TrainingSet", "ValidationSet"):
        raise ValueError(f"split must be 'TrainingSet' or 'ValidationSet', got {split!r}")
    return _series(stem, split, _patient_index(patient), resolve_size(size), _check_seed(seed), layout=layout)


def _prepare_root(root: Path, overwrite: bool) -> Path:
    """Create ``root`` and return ``root/ChallengeData``, refusing to clobber an existing tree."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root}: dataset root exists and is not a folder")
    challenge = root / "ChallengeData"
    if challenge.is_symlink():
        raise FileExistsError(f"{challenge}: is a symbolic link; refusing to write or delete through it")
    if challenge.exists() and (not challenge.is_dir() or any(challenge.iterdir())):
        if not overwrite:
            raise FileExistsError(
                f"{challenge} already exists and is not empty; pass overwrite=True (--overwrite) to replace it"
            )
        if challenge.is_dir():
            shutil.rmtree(challenge)
        else:
            challenge.unlink()
    challenge.mkdir(parents=True, exist_ok=True)
    return challenge


def _write_2024(multicoil: Path, seed: int, preset: SizePreset, n_train: int, n_val: int) -> dict[str, int]:
    """Write the CMRxRecon2024 tree; returns the number of files written per variable."""
    stems = list(SERIES)
    counts = {"kspace_full": 0, "kus": 0, "mask": 0}
    for split, n_patients in (("TrainingSet", n_train), ("ValidationSet", n_val)):
        code = _split_code(split)
        for p in range(n_patients):
            pid = f"P{p + 1:03d}"
            anatomy = random_anatomy(_rng(seed, code, p))
            for stem in _plan(split, p, preset):
                s = stems.index(stem)
                spec = SERIES[stem]
                mask_rng = _rng(seed, code, p, s, 1)
                kspace = _series(stem, split, p, preset, seed, anatomy)
                nt = kspace.shape[0] if kspace.ndim == 5 else 1
                ny, nx = kspace.shape[-2:]
                base = multicoil / spec.modality / split
                if split == "TrainingSet":
                    write_mat(base / "FullSample" / pid / f"{stem}.mat", kspace_full=kspace)
                    counts["kspace_full"] += 1
                    names = [("Uniform", r) for r in TASK1_RATES] + _kt_choices(s, p, preset.kt_rates)
                    for pattern, rate in names:
                        task = 1 if pattern == "Uniform" else 2
                        mask = _h5_mask(pattern, rate, nt, nx, ny, mask_rng)
                        write_mat(base / f"Mask_Task{task}" / pid / f"{stem}_mask_{pattern}{rate}.mat", mask=mask)
                        counts["mask"] += 1
                    continue
                names = [("Uniform", r) for r in TASK1_RATES]
                if stem in VAL_TASK2_STEMS and p == 0:
                    # Task 2: three kus files, one per pattern, each with its own R (as in the official set).
                    names += [
                        (pat, TASK2_RATES[(s + 2 * k) % len(TASK2_RATES)]) for k, pat in enumerate(TASK2_PATTERNS)
                    ]
                for pattern, rate in names:
                    task = 1 if pattern == "Uniform" else 2
                    mask = _h5_mask(pattern, rate, nt, nx, ny, mask_rng)
                    name = f"{pattern}{rate}.mat"
                    write_mat(base / f"Mask_Task{task}" / pid / f"{stem}_mask_{name}", mask=mask)
                    write_mat(
                        base / f"UnderSample_Task{task}" / pid / f"{stem}_kus_{name}", kus=_undersample(kspace, mask)
                    )
                    counts["mask"] += 1
                    counts["kus"] += 1
    return counts


def _mask_2023(rate: int, nx: int, ny: int) -> np.ndarray:
    """A CMRxRecon2023 mask in file (h5py) order ``(ny, nx)``, float64 0/1: Uniform, 24 ACS lines."""
    return make_mask("Uniform", rate, 1, nx, ny, acs_width=ACS_WIDTHS["2023"])[0].T.astype(np.float64)


def _frame_times(stem: str, nt: int) -> tuple[str, list[float]]:
    """``(csv header, one time per frame)`` of a mapping series, in ms (plausible, not from a real scan).

    T1map: MOLLI-like inversion times, three per inversion 1 s apart; T2map: T2-preparation echo times
    0, 35, 55, ... ms.
    """
    if stem == "T1map":
        return "InversionTime_ms", [100.0 + 80.0 * (i % 3) + 1000.0 * (i // 3) for i in range(nt)]
    return "EchoTime_ms", [0.0] + [35.0 + 20.0 * k for k in range(nt - 1)]


def _write_times_csv(folder: Path, stem: str, nt: int) -> None:
    """``<stem>.csv`` beside a 2023 mapping file: a header line, then one time per frame."""
    header, times = _frame_times(stem, nt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.csv").write_text("\n".join([header, *(f"{t:g}" for t in times)]) + "\n")


def _write_2023_file(folder: Path, stem: str, nt: int, **arrays) -> int:
    """Write ``folder/<stem>.mat`` (and the times CSV of a mapping series); returns the number of CSVs."""
    write_mat(folder / f"{stem}.mat", **arrays)
    if SERIES[stem].modality != "Mapping":
        return 0
    _write_times_csv(folder, stem, nt)
    return 1


def _write_2023(multicoil: Path, seed: int, preset: SizePreset, n_train: int, n_val: int) -> dict[str, int]:
    """Write the CMRxRecon2023 tree; returns the number of files written per variable (and CSVs)."""
    counts = {"kspace_full": 0, "kspace_sub": 0, "mask": 0, "csv": 0}
    for split, n_patients in (("TrainingSet", n_train), ("ValidationSet", n_val)):
        code = _split_code(split)
        for p in range(n_patients):
            pid = f"P{p + 1:03d}"
            anatomy = random_anatomy(_rng(seed, code, p))
            for stem in SERIES_2023:
                kspace = _series(stem, split, p, preset, seed, anatomy, layout="2023")
                nt, ny, nx = kspace.shape[0], kspace.shape[-2], kspace.shape[-1]
                base = multicoil / SERIES[stem].modality / split
                if split == "TrainingSet":  # the 2023 ValidationSet ships undersampled files only
                    counts["csv"] += _write_2023_file(base / "FullSample" / pid, stem, nt, kspace_full=kspace)
                    counts["kspace_full"] += 1
                for rate in TASK1_RATES:
                    folder = base / f"AccFactor{rate:02d}" / pid
                    mask = _mask_2023(rate, nx, ny)
                    sub = {f"kspace_sub{rate:02d}": _undersample(kspace, mask)}
                    counts["csv"] += _write_2023_file(folder, stem, nt, **sub)
                    write_mat(folder / f"{stem}_mask.mat", **{f"mask{rate:02d}": mask})
                    counts["kspace_sub"] += 1
                    counts["mask"] += 1
    return counts


def _patient_index_2025(patient: str, split: str) -> int:
    """The demo's patient index of a CMRxRecon2025 key ``<Center>/<Vendor>/<Pxxx>`` (see :data:`SITES_2025`)."""
    sites = SITES_2025 if split == "TrainingSet" else VAL_SITES_2025
    parts = patient.split("/") if isinstance(patient, str) else []
    if len(parts) != 3 or (parts[0], parts[1]) not in sites:
        known = ", ".join(f"{c}/{v}/Pxxx" for c, v in sites)
        raise ValueError(f"a CMRxRecon2025 demo {split} patient is one of {known}; got {patient!r}")
    return _patient_index(parts[2]) * len(sites) + sites.index((parts[0], parts[1]))


def _patient_key_2025(p: int, split: str) -> tuple[str, str, str]:
    sites = SITES_2025 if split == "TrainingSet" else VAL_SITES_2025
    center, vendor = sites[p % len(sites)]
    return center, vendor, f"P{p // len(sites) + 1:03d}"


def _series_2025(stem: str, split: str, p: int, preset: SizePreset, seed: int, anatomy=None) -> np.ndarray:
    """Fully sampled k-space of one CMRxRecon2025 demo file, in file order (5-D; 4-D for T2w)."""
    if stem not in SERIES_2025:
        raise ValueError(f"unknown series {stem!r} for layout 2025; expected one of {', '.join(SERIES_2025)}")
    spec, kind = SERIES_2025[stem]
    code, s = _split_code(split) + 2, list(SERIES_2025).index(stem)  # other streams than the 2023/2024 trees
    if anatomy is None:
        anatomy = random_anatomy(_rng(seed, code, p))
    rng = _rng(seed, code, p, s, 0)
    shapes = series_shape(stem, preset, "2025")
    nx, ny = shapes[p % len(shapes)]
    nz_real = int(rng.integers(spec.nz_range[0], spec.nz_range[1] + 1))
    nz = max(1, min(nz_real, rhu(nz_real * preset.nz_scale)))
    kspace = synthesize_kspace(kind, spec.nt, nz, ny, nx, rng, nc=NUM_COILS, anatomy=anatomy)
    return kspace[0] if spec.nt == 1 else kspace  # series without time axis have 4-D files


def _mask_2025(pattern: str, rate: int, nt: int, nx: int, ny: int, rng: np.random.Generator) -> np.ndarray:
    """A CMRxRecon2025 mask in file order, float64 0/1, 20 ACS lines: ``(nt, ny, nx)``, ``(ny, nx)`` for nt = 1."""
    mask = make_mask(pattern, rate, nt, nx, ny, rng=rng, acs_width=ACS_WIDTHS["2025"]).transpose(0, 2, 1)
    return (mask[0] if nt == 1 else mask).astype(np.float64)


def _info_csv(path: Path, stem: str, shape: tuple[int, ...]) -> None:
    # The real _info.csv columns are not documented; the bundle never reads them. This stand-in says so.
    path.write_text(f"note,series,shape\nsynthetic demo stand-in,{stem},{'x'.join(map(str, shape))}\n")


def _write_2025(challenge_root: Path, seed: int, preset: SizePreset, n_train: int, n_val: int) -> dict[str, int]:
    """Write the CMRxRecon2025 training tree and the validation tree of one task; counts per variable."""
    counts = {"kspace": 0, "kus": 0, "mask": 0, "csv": 0}
    stems = list(SERIES_2025)
    train = challenge_root / "ChallengeData" / "MultiCoil"
    val = challenge_root / "ChallengeData_ValSet" / VAL_TASK_2025 / "MultiCoil"
    for split, n_patients in (("TrainingSet", n_train), ("ValidationSet", n_val)):
        code = _split_code(split) + 2
        for p in range(n_patients):
            center, vendor, pid = _patient_key_2025(p, split)
            anatomy = random_anatomy(_rng(seed, code, p))
            for s, stem in enumerate(stems):
                spec = SERIES_2025[stem][0]
                mask_rng = _rng(seed, code, p, s, 1)
                kspace = _series_2025(stem, split, p, preset, seed, anatomy)
                nt = kspace.shape[0] if kspace.ndim == 5 else 1
                ny, nx = kspace.shape[-2:]
                site = Path(center, vendor, pid)
                if split == "TrainingSet":
                    base = train / spec.modality / split
                    write_mat(base / "FullSample" / site / f"{stem}.mat", kspace=kspace)
                    counts["kspace"] += 1
                    for k, pattern in enumerate(PATTERNS_2025):
                        rate = RATES_2025[(s + p + k) % len(RATES_2025)]
                        mask = _mask_2025(pattern, rate, nt, nx, ny, mask_rng)
                        write_mat(base / "Mask_TaskAll" / site / f"{stem}_mask_{pattern}{rate}.mat", mask=mask)
                        counts["mask"] += 1
                    continue
                # One pattern and R per series and patient, as in the official validation set.
                pattern = PATTERNS_2025[(s + p) % len(PATTERNS_2025)]
                rate = RATES_2025[(s + 2 * p) % len(RATES_2025)]
                mask = _mask_2025(pattern, rate, nt, nx, ny, mask_rng)
                base = val / spec.modality / split
                name = f"{pattern}{rate}.mat"
                write_mat(base / f"Mask_{VAL_TASK_2025}" / site / f"{stem}_mask_{name}", mask=mask)
                folder = base / f"UnderSample_{VAL_TASK_2025}" / site
                m = mask[:, None, None] if mask.ndim == 3 else mask
                write_mat(folder / f"{stem}_kus_{name}", kus=kspace * m.astype(np.float32))
                _info_csv(folder / f"{stem}_info.csv", stem, kspace.shape)
                counts["mask"] += 1
                counts["kus"] += 1
                counts["csv"] += 1
    return counts


def _marker_text(layout: str, seed: int, preset: SizePreset, n_train: int, n_val: int, counts) -> str:
    """Text of ``DEMO_DATASET.txt``; the CMRxRecon2024 text is kept exactly as it always was."""
    if layout == "2025":
        head = (
            "SYNTHETIC DATA - not CMRxRecon2025. Numerical phantom written by bundle.data.demo.make_demo_dataset\n"
            "in the official CMRxRecon2025 layout (ChallengeData/MultiCoil training tree with Center/Vendor/Patient\n"
            f"folders, ChallengeData_ValSet/{VAL_TASK_2025} validation tree) and MATLAB v7.3 format, for demos and\n"
            "tests only.\nlayout: CMRxRecon2025\n"
        )
    elif layout == "2024":
        head = (
            "SYNTHETIC DATA - not CMRxRecon2024. Numerical phantom written by bundle.data.demo.make_demo_dataset\n"
            "in the official ChallengeData/MultiCoil layout and MATLAB v7.3 format, for demos and tests only.\n"
        )
    else:
        head = (
            "SYNTHETIC DATA - not CMRxRecon2023. Numerical phantom written by bundle.data.demo.make_demo_dataset\n"
            "in the official CMRxRecon2023 ChallengeData/MultiCoil layout (AccFactor04/08/10 folders) and\n"
            "MATLAB v7.3 format, for demos and tests only.\n"
            "layout: CMRxRecon2023\n"
        )
    files = ", ".join(f"{n} {name}" for name, n in counts.items())
    return (
        head + f"seed: {seed}\n"
        f"size: {preset.name} (scale {preset.scale:g}, nz scale {preset.nz_scale:g})\n"
        f"training patients: {n_train}\n"
        f"validation patients: {n_val}\n"
        f"files: {files}\n"
    )


def make_demo_dataset(
    root: str | Path,
    seed: int = 0,
    size: str | float = "small",
    overwrite: bool = False,
    num_train_patients: int | None = None,
    num_val_patients: int | None = None,
    layout: str = "2024",
) -> Path:
    """Write a synthetic CMRxRecon2024 (or 2023) tree under ``root`` and return ``root/ChallengeData/MultiCoil``.

    Args:
        root: output folder; only ``root/ChallengeData`` and ``root/DEMO_DATASET.txt`` are written.
        seed: non-negative integer; the same seed gives identical arrays.
        size: ``'small'`` (default; CPU demo, about 250 MB), ``'medium'`` (half the real matrix, about 4 GB),
            ``'real'`` (real shapes and slice counts, about 25 GB), ``'tiny'`` (unit tests) or a scale factor
            in (0, 1] (6 training and 2 validation patients).
        overwrite: replace an existing non-empty ``root/ChallengeData``; without it that is an error.
        num_train_patients, num_val_patients: override the preset's patient counts. Training patient P002
            has no Aorta and P005 no Tagging, and matrix variants rotate over patients, so two training
            patients are needed for two cine_sax and cine_lax matrix sizes.
        layout: ``'2024'`` (default), ``'2023'``: the CMRxRecon2023 tree of the module docstring (Cine and
            Mapping only, AccFactor folders, masks beside their k-space, times CSVs in Mapping folders), or
            ``'2025'``: a CMRxRecon2025 training tree (at least three patients at :data:`SITES_2025`: two
            centres, three vendors, a repeated patient number) and a ``ChallengeData_ValSet/TaskR1`` tree.

    Raises:
        FileExistsError: ``root/ChallengeData`` exists and is not empty, and ``overwrite`` is false.
        ValueError: a bad ``seed``, ``size``, ``layout`` or patient count.
    """
    seed = _check_seed(seed)
    layout = _check_layout(layout)
    preset = resolve_size(size)
    n_train = preset.train_patients if num_train_patients is None else num_train_patients
    n_val = preset.val_patients if num_val_patients is None else num_val_patients
    for name, n in (("num_train_patients", n_train), ("num_val_patients", n_val)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= 999:
            raise ValueError(f"{name} must be an integer in [0, 999], got {n!r}")
    if n_train + n_val == 0:
        raise ValueError("the dataset needs at least one patient")

    root = Path(root)
    challenge = _prepare_root(root, overwrite)
    multicoil = challenge / "MultiCoil"
    if layout == "2025":
        n_train = max(n_train, len(SITES_2025)) if num_train_patients is None else n_train
        valset = root / "ChallengeData_ValSet"
        if valset.exists():
            if not overwrite:
                raise FileExistsError(f"{valset} already exists; pass overwrite=True (--overwrite) to replace it")
            shutil.rmtree(valset)
        counts = _write_2025(root, seed, preset, n_train, n_val)
    else:
        write = _write_2023 if layout == "2023" else _write_2024
        counts = write(multicoil, seed, preset, n_train, n_val)
    (root / MARKER).write_text(_marker_text(layout, seed, preset, n_train, n_val, counts))
    return multicoil
