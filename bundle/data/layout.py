"""The folder rules of the CMRxRecon releases, in one place: one small object per release.

Every question about where a release keeps its files is asked of a :class:`Release` (``RELEASES['2025']`` ...)
instead of testing folder names elsewhere: how to recognise the release, which folders hold fully sampled
k-space, undersampled k-space and masks, the k-space variable names, the ACS width of its official masks, the
series it is known to have, the patient key, where a submission file goes and which frames run4Ranking scores.

CMRxRecon2023 (``'2023'``)::

    MultiCoil/{Cine,Mapping}/TrainingSet/FullSample/Pxxx/<series>.mat                 kspace_full
    MultiCoil/{Cine,Mapping}/<Set>/AccFactor{04,08,10}/Pxxx/<series>.mat              kspace_sub04 / 08 / 10
    MultiCoil/{Cine,Mapping}/<Set>/AccFactor{04,08,10}/Pxxx/<series>_mask.mat         mask04 / 08 / 10

CMRxRecon2024 (``'2024'``)::

    MultiCoil/<Modality>/TrainingSet/FullSample/Pxxx/<series>.mat                     kspace_full
    MultiCoil/<Modality>/TrainingSet/Mask_Task{1,2}/Pxxx/<series>_mask_<P><R>.mat     mask
    MultiCoil/<Modality>/<Set>/UnderSample_Task{1,2}/Pxxx/<series>_kus_<P><R>.mat     kus
    MultiCoil/<Modality>/<Set>/Mask_Task{1,2}/Pxxx/<series>_mask_<P><R>.mat

CMRxRecon2025 (``'2025'``): two more folder levels, centre and vendor, and one tree per validation task::

    ChallengeData/MultiCoil/<Modality>/TrainingSet/FullSample/<Center>/<Vendor>/<P>/<series>.mat     kspace
    ChallengeData/MultiCoil/<Modality>/TrainingSet/Mask_TaskAll/<Center>/<Vendor>/<P>/<series>_mask_<P><R>.mat
    ChallengeData_ValSet/<Task>/MultiCoil/<Modality>/ValidationSet/UnderSample_<Task>/<C>/<V>/<P>/<series>_kus_<P><R>.mat
    ChallengeData_ValSet/<Task>/MultiCoil/<Modality>/ValidationSet/Mask_<Task>/<C>/<V>/<P>/<series>_mask_<P><R>.mat

with ``<Task>`` one of ``TaskR1``, ``TaskR2``, ``TaskS1``, ``TaskS2`` and a ``<series>_info.csv`` beside each
``kus`` file (never read: its columns are not documented). The same patient folder name (``P004``) occurs under
two vendors of one centre and names two people, so 2025 patients are keyed ``<Center>/<Vendor>/<P>``.

This module reads folder *names* only (and lists folders); it opens no file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import CMRDataError

__all__ = [
    "SPLITS",
    "LAYOUTS",
    "TASKS_2025",
    "Release",
    "RELEASES",
    "ACS_WIDTHS",
    "release",
    "release_of_path",
    "series_type",
    "series_view",
    "is_static_series",
    "site_of",
    "subdirs",
]

logger = logging.getLogger(__name__)

SPLITS = ("TrainingSet", "ValidationSet", "TestSet")
#: The validation/test tasks of CMRxRecon2025, each with its own tree.
TASKS_2025 = ("TaskR1", "TaskR2", "TaskS1", "TaskS2")

_ACCFACTOR_DIR = re.compile(r"^AccFactor(\d+)$")
_UNDERSAMPLE_2024 = re.compile(r"^UnderSample_Task(\d+)$")
_MASK_2024 = re.compile(r"^Mask_Task(\d+)$")
_UNDERSAMPLE_2025 = re.compile(r"^UnderSample_(Task[A-Z]\d+)$")
_MASK_2025 = re.compile(r"^Mask_(Task[A-Z]\d+|TaskAll)$")
_CENTER_DIR = re.compile(r"^Center\d+$")
_PATIENT_DIR = re.compile(r"^P\d+$")
_MASK_2023_SUFFIX = "_mask"  # 2023: <series>_mask.mat beside <series>.mat
_STATIC_NAME = re.compile(r"(^|_)t[12]w($|_)")


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# --------------------------------------------------------------------------------------------------- series


def _stem_of(name: str | os.PathLike) -> str:
    base = os.path.basename(os.fspath(name))
    return base[:-4] if base.lower().endswith(".mat") else base


def is_static_series(name: str | os.PathLike) -> bool:
    """True for series without a time axis (4-D files): BlackBlood, and T1w / T2w of CMRxRecon2025."""
    stem = _stem_of(name).lower()
    return "blackblood" in stem or _STATIC_NAME.search(stem.split("_kus_")[0].split("_mask_")[0]) is not None


def series_type(name: str | os.PathLike) -> str:
    """``'blackblood'`` (no time axis), ``'mapping'`` (every frame scored) or ``'cine'`` from a file name.

    Only the base name is inspected, case-insensitively, as the official scripts do. ``'blackblood'`` is the
    kind of every series without a time axis: BlackBlood, and the T1w and T2w series of CMRxRecon2025.
    ``'mapping'``: T1map, T2map, and in CMRxRecon2025 also T2smap, T1mappost and T1rho (run4Ranking_2025 keeps
    all their frames), or the modality name ``mapping``. Anything else is cine-like (cine, aorta, tagging,
    flow2d, LGE, perfusion).
    """
    base = os.path.basename(os.fspath(name)).lower()
    if is_static_series(base):
        return "blackblood"
    if any(k in base for k in ("t1map", "t2map", "t2smap", "t1rho", "mapping")):
        return "mapping"
    return "cine"


def series_view(series: str) -> str:
    """Lower-case view of a series: ``cine_sax -> 'sax'``, ``aorta_tra -> 'tra'``, ``T1map -> 't1map'``."""
    return series.rsplit("_", 1)[-1].lower()


# --------------------------------------------------------------------------------------------------- releases


@dataclass(frozen=True)
class Release:
    """The folder and file rules of one CMRxRecon release (see the module docstring).

    Attributes:
        name: ``'2023'``, ``'2024'`` or ``'2025'``.
        acs_width: fully sampled central ky lines of its official masks (a square of that side for radial).
        full_keys / undersampled_keys / mask_keys: variable names of fully sampled k-space, undersampled
            k-space and masks, in order of preference.
        modalities: the modality folders it is known to have.
        series: the series (file stems) it is known to have; others are indexed with a warning.
        metric: the official scorer whose metric evaluates data of this release (:mod:`bundle.metrics`).
        patient_levels: folder levels that name a patient (1: ``Pxxx``; 3: ``<Center>/<Vendor>/<Pxxx>``).
        acs_from_mask: the ACS width of an item with an official mask file is measured from that mask
            (:func:`bundle.transforms.masks.measure_acs_width`) instead of taken as ``acs_width``. True for
            CMRxRecon2025, whose format text and mask generator disagree (16 against 20 lines).
        strict_files: k-space files must hold one of the release's variable names, and its known time-resolved
            series must be 5-D (CMRxRecon2025; the older releases keep the index's tolerant variable pick).
        matlab_shaped_submission: ``img4ranking`` is stored with MATLAB's shape, trailing singleton axes dropped,
            because the release's scorer drops a file whose shape differs from the GT's (CMRxRecon2025).
    """

    name: str
    acs_width: int
    full_keys: tuple[str, ...]
    undersampled_keys: tuple[str, ...]
    mask_keys: tuple[str, ...]
    modalities: tuple[str, ...]
    series: tuple[str, ...]
    metric: str
    patient_levels: int = 1
    acs_from_mask: bool = False
    strict_files: bool = False
    matlab_shaped_submission: bool = False
    evaluation_sets: tuple[str, ...] = ("ValidationSet", "TestSet")
    _warned: set = field(default_factory=set, compare=False, repr=False)

    # ----------------------------------------------------------------------------------------- folders

    def undersampled_folder(self, name: str) -> str | int | None:
        """The task (2024: 1 or 2; 2025: ``'TaskR1'`` ...; 2023: the acceleration) of a folder of
        undersampled k-space, or ``None`` when ``name`` is not one."""
        return None

    def mask_folder(self, name: str) -> str | int | None:
        """The task of a folder of official masks (2025 training: ``'TaskAll'``), else ``None``."""
        return None

    def patient_folders(self, folder: Path) -> Iterator[tuple[dict, Path]]:
        """``(ids, patient folder)`` below a data folder (``FullSample``, ``UnderSample_*``, ``Mask_*``).

        ``ids`` has ``patient`` (the key that names one person in the release) and, for CMRxRecon2025,
        ``center`` and ``vendor``.
        """
        for p in subdirs(folder):
            yield {"patient": p.name}, p

    def mask_path(self, kus_path: str | os.PathLike) -> Path:
        """Where the mask of an undersampled file is (the file need not exist)."""
        raise NotImplementedError

    def mask_name(self, mask_file: Path) -> tuple[str, str] | None:
        """``(series, sampling name like 'ktGaussian8')`` of an official mask file, or ``None``."""
        m = re.match(r"^(?P<stem>.+?)_mask_(?P<name>[A-Za-z]+\d+)$", mask_file.stem)
        return (m["stem"], m["name"]) if m else None

    def mask_task(self, mask_file: str | os.PathLike) -> str | int | None:
        """The task of an official mask file, from its folder."""
        parts = Path(mask_file).parts
        return self.mask_folder(parts[-2 - self.patient_levels]) if len(parts) > 1 + self.patient_levels else None

    def known_series(self, series: str) -> bool:
        return series in self.series

    def warn_unknown_series(self, series: str, path: str | os.PathLike) -> None:
        """Log once per series name that this release is not known to have it (the file is still indexed)."""
        if self.known_series(series) or series in self._warned:
            return
        self._warned.add(series)
        logger.warning(
            "%s: series %r is not one CMRxRecon%s is known to have; indexed as a %s series",
            path,
            series,
            self.name,
            series_type(series),
        )

    # ----------------------------------------------------------------------------------------- submission

    def submission_path(self, kus_path: str | os.PathLike, output_root: str | os.PathLike) -> Path:
        """Where the submission file of an undersampled file goes below ``output_root`` (same file name)."""
        raise NotImplementedError


def _bad_path(path, expected: str, problems: list[str]) -> CMRDataError:
    return CMRDataError.at(path, f"does not follow {expected}: " + "; ".join(problems))


def _kus_problems(release: Release, subset: str, patient: str, name: str) -> list[str]:
    """What is wrong with the set folder, patient folder and file name of an undersampled file (2024, 2025)."""
    problems = []
    if subset not in release.evaluation_sets:
        problems.append(f"set folder {subset!r} is not one of {', '.join(release.evaluation_sets)}")
    if not _PATIENT_DIR.match(patient):
        problems.append(f"patient folder {patient!r} is not 'P' followed by digits")
    if not name.endswith(".mat") or "_kus_" not in name:
        problems.append(f"file name {name!r} is not an undersampled k-space file '<series>_kus_<pattern>.mat'")
    return problems


def site_of(patient: str) -> tuple[str | None, str | None]:
    """``(center, vendor)`` of a CMRxRecon2025 patient key ``<Center>/<Vendor>/<Pxxx>``; ``(None, None)`` else."""
    parts = patient.split("/")
    return (parts[0], parts[1]) if len(parts) == 3 else (None, None)


class _Release2023(Release):
    def undersampled_folder(self, name: str) -> int | None:
        m = _ACCFACTOR_DIR.match(name)
        return int(m.group(1)) if m else None

    def mask_folder(self, name: str) -> int | None:
        return self.undersampled_folder(name)  # masks sit beside their k-space

    def mask_path(self, kus_path) -> Path:
        path = Path(kus_path)
        return path.with_name(f"{path.stem}{_MASK_2023_SUFFIX}{path.suffix}")

    def mask_name(self, mask_file: Path) -> tuple[str, str] | None:
        acc = self.undersampled_folder(mask_file.parent.parent.name)
        if acc is None or not mask_file.stem.endswith(_MASK_2023_SUFFIX):
            return None
        return mask_file.stem[: -len(_MASK_2023_SUFFIX)], f"Uniform{acc}"

    def mask_task(self, mask_file) -> None:
        return None  # 2023 masks belong to no task

    def submission_path(self, kus_path, output_root) -> Path:
        """``<Modality>/<Set>/AccFactorXX/<Pxxx>/<name>.mat`` -> ``<out>/MultiCoil/<same>``."""
        expected = (
            "the CMRxRecon2023 layout <Cine|Mapping>/<TrainingSet|ValidationSet|TestSet>/AccFactor<XX>/P<number>/"
            "<series>.mat"
        )
        parts = Path(kus_path).parts
        modality, subset, acc_dir, patient, name = parts[-5:]
        problems = []
        if modality not in self.modalities:
            problems.append(f"modality folder {modality!r} is not one of {', '.join(self.modalities)}")
        if subset not in SPLITS:
            problems.append(f"set folder {subset!r} is not one of {', '.join(SPLITS)}")
        if not _PATIENT_DIR.match(patient):
            problems.append(f"patient folder {patient!r} is not 'P' followed by digits")
        if not name.endswith(".mat") or name.endswith("_mask.mat"):
            problems.append(f"file name {name!r} is not an undersampled k-space file '<series>.mat' (nor a mask)")
        if problems:
            raise _bad_path(kus_path, expected, problems)
        return Path(output_root) / "MultiCoil" / modality / subset / acc_dir / patient / name


class _Release2024(Release):
    def undersampled_folder(self, name: str) -> int | None:
        m = _UNDERSAMPLE_2024.match(name)
        return int(m.group(1)) if m else None

    def mask_folder(self, name: str) -> int | None:
        m = _MASK_2024.match(name)
        return int(m.group(1)) if m else None

    def mask_path(self, kus_path) -> Path:
        # Substitute on path components only, so a root folder that happens to contain "_kus_" is left alone.
        path = Path(kus_path)
        task_dir = path.parent.parent
        mask_dir = task_dir.parent / task_dir.name.replace("UnderSample_Task", "Mask_Task") / path.parent.name
        return mask_dir / path.name.replace("_kus_", "_mask_")

    def submission_path(self, kus_path, output_root) -> Path:
        """``<Modality>/<Set>/UnderSample_Task<k>/<Pxxx>/<name>`` ->
        ``<out>/Task<k>/<Modality>/<Set>/Task<k>/<Pxxx>/<name>``."""
        expected = "<Modality>/<ValidationSet|TestSet>/UnderSample_Task<1|2>/P<number>/<name>_kus_<pattern>.mat"
        parts = Path(kus_path).parts
        if len(parts) < 5:
            raise CMRDataError.at(kus_path, f"too short for the CMRxRecon2024 layout {expected}")
        modality, subset, task_dir, patient, name = parts[-5:]
        problems = []
        if modality not in self.modalities:
            problems.append(f"modality folder {modality!r} is not one of {', '.join(self.modalities)}")
        task = self.undersampled_folder(task_dir)
        if task not in (1, 2):
            problems.append(f"folder {task_dir!r} is not UnderSample_Task1 or UnderSample_Task2")
        problems += _kus_problems(self, subset, patient, name)
        if problems:
            raise _bad_path(kus_path, expected, problems)
        return Path(output_root) / f"Task{task}" / modality / subset / f"Task{task}" / patient / name


class _Release2025(Release):
    def undersampled_folder(self, name: str) -> str | None:
        m = _UNDERSAMPLE_2025.match(name)
        return m.group(1) if m else None

    def mask_folder(self, name: str) -> str | None:
        m = _MASK_2025.match(name)
        return m.group(1) if m else None

    def patient_folders(self, folder: Path) -> Iterator[tuple[dict, Path]]:
        for center in subdirs(folder):
            for vendor in subdirs(center):
                for p in subdirs(vendor):
                    key = f"{center.name}/{vendor.name}/{p.name}"
                    yield {"patient": key, "center": center.name, "vendor": vendor.name}, p

    def mask_path(self, kus_path) -> Path:
        path = Path(kus_path)
        data_dir = path.parents[3]  # UnderSample_<Task>, above <Center>/<Vendor>/<P>
        task = self.undersampled_folder(data_dir.name) or ""
        rel = path.parent.relative_to(data_dir)
        return data_dir.parent / f"Mask_{task}" / rel / path.name.replace("_kus_", "_mask_")

    def submission_path(self, kus_path, output_root) -> Path:
        """``<Task>/MultiCoil/<Modality>/<Set>/UnderSample_<Task>/<C>/<V>/<P>/<name>`` mirrored below ``<out>``."""
        expected = (
            "<Task>/MultiCoil/<Modality>/<ValidationSet|TestSet>/UnderSample_<Task>/<Center>/<Vendor>/P<number>/"
            "<series>_kus_<pattern>.mat"
        )
        parts = Path(kus_path).parts
        if len(parts) < 7:
            raise CMRDataError.at(kus_path, f"too short for the CMRxRecon2025 layout {expected}")
        modality, subset, task_dir, center, vendor, patient, name = parts[-7:]
        problems = []
        task = self.undersampled_folder(task_dir)
        if task is None:
            problems.append(f"folder {task_dir!r} is not UnderSample_<Task> ({', '.join(TASKS_2025)})")
        if not _CENTER_DIR.match(center):
            problems.append(f"centre folder {center!r} is not 'Center' followed by digits")
        problems += _kus_problems(self, subset, patient, name)
        if problems:
            raise _bad_path(kus_path, expected, problems)
        tail = (modality, subset, task_dir, center, vendor, patient, name)
        return Path(output_root).joinpath(task, "MultiCoil", *tail)


_SERIES_2024 = (
    "cine_sax", "cine_lax", "cine_lvot", "aorta_sag", "aorta_tra", "T1map", "T2map", "tagging", "flow2d",
    "blackblood",
)  # fmt: skip
_SERIES_2025 = (
    "cine_sax", "cine_lax", "cine_lax_2ch", "cine_lax_3ch", "cine_lax_4ch", "cine_ot", "cine_lvot", "cine_rvot",
    "T1map", "T2map", "T2smap", "T1mappost", "T1rho", "blackblood", "T1w", "T2w",
    "lge_sax", "lge_lax", "lge_lax_2ch", "lge_lax_3ch", "lge_lax_4ch", "perfusion", "flow2d",
)  # fmt: skip

RELEASES: Mapping[str, Release] = MappingProxyType(
    {
        "2023": _Release2023(
            name="2023",
            acs_width=24,
            full_keys=("kspace_full",),
            undersampled_keys=("kspace_sub04", "kspace_sub08", "kspace_sub10"),
            mask_keys=("mask04", "mask08", "mask10"),
            modalities=("Cine", "Mapping"),
            series=("cine_sax", "cine_lax", "T1map", "T2map"),
            metric="2023",
            evaluation_sets=SPLITS,
        ),
        "2024": _Release2024(
            name="2024",
            acs_width=16,
            full_keys=("kspace_full",),
            undersampled_keys=("kus",),
            mask_keys=("mask",),
            modalities=("Aorta", "BlackBlood", "Cine", "Flow2d", "Mapping", "Tagging"),
            series=_SERIES_2024,
            metric="2024",
        ),
        "2025": _Release2025(
            name="2025",
            acs_width=20,
            full_keys=("kspace", "kspace_full"),
            undersampled_keys=("kus",),
            mask_keys=("mask",),
            modalities=("Cine", "Mapping", "LGE", "Perfusion", "Flow2d", "BlackBlood", "T1rho", "T1w", "T2w"),
            series=_SERIES_2025,
            metric="2025",
            patient_levels=3,
            acs_from_mask=True,
            strict_files=True,
            matlab_shaped_submission=True,
        ),
    }
)
#: Releases whose tree layout is understood.
LAYOUTS = tuple(RELEASES)
#: Width, in ky lines, of the fully sampled centre (ACS band) of the official masks of each release.
ACS_WIDTHS: Mapping[str, int] = MappingProxyType({name: r.acs_width for name, r in RELEASES.items()})


def release(name: str | int | Release) -> Release:
    """The :class:`Release` called ``name`` (``'2023'``, ``'2024'``, ``'2025'``; ints are accepted)."""
    if isinstance(name, Release):
        return name
    key = str(name)
    if key not in RELEASES:
        raise ValueError(f"unknown CMRxRecon release {name!r}; expected one of {', '.join(LAYOUTS)}")
    return RELEASES[key]


def folder_release(split_dir: Path) -> str | None:
    """The release a ``<Modality>/<Split>`` folder's sub-folders name, or ``None`` when they name none.

    ``AccFactor*``: 2023. ``UnderSample_Task<k>`` / ``Mask_Task<k>``: 2024. ``Mask_TaskAll``,
    ``UnderSample_Task[RS]<k>`` / ``Mask_Task[RS]<k>``, or ``Center###`` folders below ``FullSample``: 2025. A lone
    ``FullSample`` of patient folders exists in 2023 and 2024 alike.
    """
    if not split_dir.is_dir():
        return None
    names = [p.name for p in subdirs(split_dir)]
    if any(_ACCFACTOR_DIR.match(n) for n in names):
        return "2023"
    if any(_UNDERSAMPLE_2025.match(n) or _MASK_2025.match(n) for n in names):
        return "2025"
    if any(_UNDERSAMPLE_2024.match(n) or _MASK_2024.match(n) for n in names):
        return "2024"
    full = split_dir / "FullSample"
    if full.is_dir() and any(_CENTER_DIR.match(p.name) for p in subdirs(full)):
        return "2025"
    return None


def tree_release(multicoil: Path) -> str:
    """The release of a ``MultiCoil`` folder: the first that any of its ``<Modality>/<Split>`` folders names
    (2023 before 2025 before 2024), else ``'2024'`` (FullSample folders alone cannot be told apart)."""
    found = {folder_release(m / s) for m in subdirs(multicoil) for s in SPLITS} - {None}
    for name in ("2023", "2025", "2024"):
        if name in found:
            return name
    return "2024"


def release_of_path(path: str | os.PathLike) -> Release | None:
    """The release an undersampled file's own path names (its data folder), or ``None``."""
    parts = Path(path).parts
    if len(parts) >= 3 and _ACCFACTOR_DIR.match(parts[-3]):
        return RELEASES["2023"]
    if len(parts) >= 5 and _UNDERSAMPLE_2025.match(parts[-5]):
        return RELEASES["2025"]
    if len(parts) >= 3 and _UNDERSAMPLE_2024.match(parts[-3]):
        return RELEASES["2024"]
    return None
