"""Score a submission folder against a ground-truth folder as the organisers' validation scripts do.

One function per release (:func:`score_tree` dispatches), each returning, per task, the per-file rows and the
summary dict the organisers' script writes to ``results.json`` (``docs/design.md``, "Scoring a submission
folder"). Per-file scores are :func:`bundle.metrics.official_scores`; the grouping, counting and rounding follow:

* 2025 (``Val_Score2025.py`` at commit deecc8e): tasks TaskR1, TaskR2, TaskS1, TaskS2. GT
  ``<gt>/<Task>/MultiCoil/<Mod>/ValidationSet/FullSample_<Task>/<C>/<V>/<P>/<series>.mat``. TaskR1 by (Center,
  Manufacturer) of the sheet (or of the folders without a sheet), the others by disease (sheet columns
  Disease1-4; without a sheet one group ``All``); adjusted means with missing files counted; 4 decimals.
* 2024 (``Val_Score2024.py``): Task1/Task2, cells (modality, pattern), plain and adjusted means, ``All_*``.
  The organisers' GT tree relies on private files (a random case-ID map, a bad-case list), so offline GT is
  stored in the submission's own layout: ``<gt>/Task<k>/<Mod>/ValidationSet/Task<k>/<P>/<series>_kus_<mask>.mat``.
* 2023 (``Main_Score.py``): Cine/Mapping, multi-coil cells (view, R) and the task score. GT in the organisers'
  layout ``<gt>/<Mod>/MultiCoil/<Mod>/ValidationSet/AccFactor<RR>/<P>/<series>.mat``.

Every GT file holds ``img4ranking`` (MATLAB order, as :func:`bundle.metrics.run4ranking` then
:func:`bundle.metrics.matlab_shape` give it).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from bundle.data.demo import series_kspace
from bundle.data.layout import TASKS_2025
from bundle.data.layout import release as get_release
from bundle.errors import CMRDataError
from bundle.io.submission import save_submission
from bundle.metrics import matlab_shape, official_adjusted_means, official_scores, run4ranking
from bundle.mri import ifft2c_np

__all__ = [
    "MODALITIES_2025",
    "load_img4ranking",
    "read_sheet",
    "score_tree",
    "score_2025",
    "score_2024",
    "score_2023",
    "write_results",
    "summary_table",
    "ground_truth_path",
    "write_demo_ground_truth",
]

#: The modality folders Val_Score2025.py globs, in its order.
MODALITIES_2025 = ("BlackBlood", "Cine", "Flow2d", "LGE", "Mapping", "Perfusion", "T1rho", "T1w", "T2w")
_TASKS_2024 = {
    "Task1": (("Tagging", "Mapping", "Cine", "Aorta", "BlackBlood", "Flow2d"), ("Uniform4", "Uniform8", "Uniform10")),
    "Task2": (("Tagging", "Mapping", "Cine", "Aorta"), ("ktUniform", "ktGaussian", "ktRadial")),
}
_TASKS_2023 = {"Cine": (("Lax", "cine_lax"), ("Sax", "cine_sax")), "Mapping": (("T1", "T1map"), ("T2", "T2map"))}
_RATES_2023 = ("04", "08", "10")
_SET = "ValidationSet"
_SHEET_COLUMNS = ("Center", "Manufacturer", "AnonPatientID")
_RECORD_FIELDS = ("Modality", "Center", "Vendor", "Patient", "File", "KUS", "PSNR", "SSIM", "NMSE", "Comments")


def _round(x: float) -> float | None:
    """Round to 4 decimals as ``round(np.float64, 4)`` does; NaN becomes None (JSON null), as the scripts write."""
    value = float(np.round(np.float64(x), 4))
    return None if math.isnan(value) else value


def load_img4ranking(path: str | os.PathLike) -> np.ndarray:
    """``img4ranking`` of one file as the organisers' ``loadFun.loadmat`` reads it.

    scipy first (MATLAB order, dtype kept); a v7.3/HDF5 file is read with h5py, whose axes are reversed and, as
    in the official code, not transposed back. Raises :class:`CMRDataError` naming the file when it cannot be
    read or has no ``img4ranking``.
    """
    path = os.fspath(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                if "img4ranking" not in f:
                    raise CMRDataError.at(path, f"has no variable 'img4ranking' (found {sorted(f)})")
                return np.asarray(f["img4ranking"][()])
        contents = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise CMRDataError.at(path, f"cannot be read as a MAT file: {err}") from err
    if "img4ranking" not in contents:
        names = sorted(k for k in contents if not k.startswith("__"))
        raise CMRDataError.at(path, f"has no variable 'img4ranking' (found {names})")
    return contents["img4ranking"]


def _score_file(gt_path: Path, sub_path: Path, release: str) -> tuple[float, float, float, str | None]:
    """File means of PSNR, SSIM, NMSE, or NaNs and a comment when the shapes differ (the file is then dropped)."""
    gt, recon = load_img4ranking(gt_path), load_img4ranking(sub_path)
    if gt.shape != recon.shape:
        return math.nan, math.nan, math.nan, "Shape mismatch"
    try:
        res = official_scores(recon, gt, release)
    except ValueError as err:
        raise CMRDataError.at(sub_path, f"cannot be scored by the official {release} scorer: {err}") from err
    return res["psnr_mean"], res["ssim_mean"], res["nmse_mean"], None


# --------------------------------------------------------------------------------------------------- the sheet


def _cell(value) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text.strip() == "" or text == "nan" else text


def read_sheet(path: str | os.PathLike, task: str) -> list[dict[str, str | None]]:
    """The organisers' patient sheet rows of ``task``: columns Center, Manufacturer, AnonPatientID, Disease1-4.

    An ``.xlsx`` file holds one sheet per task, named after it (as ``pd.read_excel(sheet_name=task)``). A
    ``.csv`` file is one table; with a ``Task`` column only the rows of ``task`` are kept, else all rows apply
    to every task. Cells are read as text.
    """
    path = Path(path)
    if path.suffix.lower() == ".xlsx":
        import openpyxl  # optional: only XLSX sheets need it

        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            if task not in book.sheetnames:
                raise CMRDataError.at(path, f"has no sheet {task!r} (sheets: {', '.join(book.sheetnames)})")
            rows = [list(r) for r in book[task].iter_rows(values_only=True)]
        finally:
            book.close()
        header = [str(h) if h is not None else "" for h in (rows[0] if rows else [])]
        records = [dict(zip(header, map(_cell, r))) for r in rows[1:] if any(c is not None for c in r)]
    elif path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            records = [{k: _cell(v) for k, v in row.items()} for row in reader]
        if "Task" in header:
            records = [r for r in records if r.get("Task") == task]
    else:
        raise CMRDataError.at(path, "a patient sheet must be a .csv or .xlsx file")
    missing = [c for c in _SHEET_COLUMNS if c not in header]
    if missing:
        raise CMRDataError.at(path, f"sheet {task!r} lacks the columns {missing} (has {header})")
    return records


def _diseases(row: Mapping) -> list[str]:
    """Disease1-4 of one sheet row, cleaned as Val_Score2025.py does (strip, drop commas, spaces -> '_')."""
    values = [row.get(f"Disease{i}") for i in range(1, 5)]
    return [d.strip().replace(",", "").replace(" ", "_") for d in values if d is not None and d.strip()]


def _key(center, vendor, patient) -> str:
    return f"{center}|{vendor}|{patient}"


# --------------------------------------------------------------------------------------------------- 2025


def _find_task_root(root: Path, tasks: Sequence[str]) -> Path:
    """The first folder (walking down from ``root``) that holds a task folder, as the organisers' scripts look."""
    for dirpath, dirnames, _ in os.walk(root):
        if any(t in dirnames for t in tasks):
            return Path(dirpath)
    raise CMRDataError.at(root, f"holds no task folder ({', '.join(tasks)}) at any level")


def _task_2025(sub: Path, gt: Path, task: str, sheet: str | os.PathLike | None) -> dict:
    records = []
    for modality in MODALITIES_2025:
        folder = sub / task / "MultiCoil" / modality / _SET / f"UnderSample_{task}"
        for path in sorted(folder.glob("*/*/*/*kus_*.mat")):
            center, vendor, patient = path.parts[-4:-1]
            if task == "TaskR2" and modality == "Mapping" and (center, vendor) == ("Center004", "UIH_30T_umr780"):
                vendor = "UIH_15T_umr680"  # the official script renames this submitted folder before scoring
            stem = path.name.split("_kus_")[0]
            gt_path = gt / task / "MultiCoil" / modality / _SET / f"FullSample_{task}" / center / vendor / patient
            gt_path = gt_path / f"{stem}.mat"
            if not gt_path.is_file():
                raise CMRDataError.at(
                    path, f"has no ground truth {gt_path}: the organisers' scorer stops here ('Extra file submitted')"
                )
            psnr, ssim, nmse, comment = _score_file(gt_path, path, "2025")
            kus = path.stem.split("_kus_", 1)[-1]
            records.append(dict(zip(_RECORD_FIELDS, (modality, center, vendor, patient, stem, kus, psnr, ssim, nmse))))
            records[-1]["Comments"] = comment
    # Expected files: every GT file of the task, per (center, vendor) folder, or per disease of its patient.
    per_site: dict[tuple, int] = {}
    per_patient: dict[str, int] = {}
    total = 0
    for modality in MODALITIES_2025:
        folder = gt / task / "MultiCoil" / modality / _SET / f"FullSample_{task}"
        for path in folder.glob("*/*/*/*.mat"):
            center, vendor, patient = path.parts[-4:-1]
            total += 1
            per_site[(center, vendor)] = per_site.get((center, vendor), 0) + 1
            per_patient[_key(center, vendor, patient)] = per_patient.get(_key(center, vendor, patient), 0) + 1
    rows = read_sheet(sheet, task) if sheet is not None else None
    if task == "TaskR1":
        sites = {
            _key(r["Center"], r["Manufacturer"], r["AnonPatientID"]): (r["Center"], r["Manufacturer"])
            for r in rows or []
        }
        for rec in records:
            folder_site = (rec["Center"], rec["Vendor"])
            rec["Group"] = (
                sites.get(_key(*folder_site, rec["Patient"]), ("Unknown", "Unknown"))
                if rows is not None
                else folder_site
            )
        expected = per_site
        mean_name = "Mean_of_all_centers"
    else:
        if rows is None:
            groups = {k: ["All"] for k in per_patient}
        else:
            groups = {_key(r["Center"], r["Manufacturer"], r["AnonPatientID"]): _diseases(r) for r in rows}
        expected = {}
        for key, count in per_patient.items():
            for disease in groups.get(key, []):  # duplicates counted as often as listed, as officially
                expected[(disease,)] = expected.get((disease,), 0) + count
        for rec in records:
            rec["Group"] = groups.get(_key(rec["Center"], rec["Vendor"], rec["Patient"]), [])
        mean_name = "Mean_of_all_diseases"
    valid = [r for r in records if r["Comments"] is None]
    summary: dict = {"Num_Files": f"{len(valid)}/{total}"}
    scored = [
        {
            "group": r["Group"] if task == "TaskR1" else list(r["Group"]),
            "psnr": r["PSNR"],
            "ssim": r["SSIM"],
            "nmse": r["NMSE"],
        }
        for r in valid
    ]
    if task == "TaskR1":
        members: dict[tuple, int] = {}
        for r in scored:
            members[r["group"]] = members.get(r["group"], 0) + 1
        for row in scored:
            row["center"], row["vendor"] = row.pop("group")
        keys = ("center", "vendor")
    else:
        members = {}
        for r in scored:
            for d in dict.fromkeys(r["group"]):
                members[(d,)] = members.get((d,), 0) + 1
        for row in scored:
            row["disease"] = row.pop("group")
        keys = ("disease",)
    adjusted = official_adjusted_means(scored, expected, keys) if any(expected.get(g) for g in members) else None
    for group in sorted(members, key=lambda g: tuple(map(str, g))):
        name = "_".join(map(str, group))
        summary[f"{name}_Num"] = f"{members[group]}/{expected.get(group, 0)}"
        entry = adjusted["per_group"].get(group) if adjusted else None
        if entry:
            for m in ("PSNR", "SSIM", "NMSE"):
                summary[f"{name}_{m}_adj"] = _round(entry[f"{m.lower()}_adj"])
    if adjusted is None:
        raise CMRDataError.at(
            gt / task, f"no group of {task} has both scored files and an expected count: the official scorer fails here"
        )
    for m in ("PSNR", "SSIM", "NMSE"):
        summary[f"{mean_name}_{m}_adj"] = _round(adjusted[f"{m.lower()}_adj"])
    return {"records": records, "summary": summary}


def score_2025(submission: str | os.PathLike, gt: str | os.PathLike, sheet: str | os.PathLike | None = None) -> dict:
    """``{task: {"records": [...], "summary": {...}}}`` for every 2025 task folder of the submission."""
    root = _find_task_root(Path(submission), TASKS_2025)
    return {t: _task_2025(root, Path(gt), t, sheet) for t in TASKS_2025 if (root / t).is_dir()}


# --------------------------------------------------------------------------------------------------- 2024


def _cell_2024(records: list[dict], modality: str, kus: str) -> dict:
    mod = modality.lower()
    if mod in ("mapping", "cine", "aorta"):
        part = "map" if mod == "mapping" else mod
        rows = [r for r in records if part in r["File"] and kus in r["KUS"]]
    else:
        rows = [r for r in records if r["File"] == mod and kus in r["KUS"]]
    ok = [r for r in rows if r["Comments"] is None]
    out = {"success": len(ok), "total": len(rows)}
    for m in ("PSNR", "SSIM", "NMSE"):
        values = np.array([r[m] for r in rows], dtype=np.float64)
        out[m] = _nanmean(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"adj.{m}"] = float(np.nansum([r[m] for r in ok]) / np.float64(len(rows)))
    return out


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


def score_2024(submission: str | os.PathLike, gt: str | os.PathLike, sheet=None) -> dict:
    """``{task: {"records", "summary"}}`` for Task1/Task2 (GT in the submission layout, see the module doc)."""
    root = _find_task_root(Path(submission), tuple(_TASKS_2024))
    out = {}
    for task, (modalities, masks) in _TASKS_2024.items():
        if not (root / task).is_dir():
            continue
        records = []
        for modality in modalities:
            folder = Path(gt) / task / modality / _SET / task
            for gt_path in sorted(folder.glob("*/*_kus_*.mat")):
                stem, kus = gt_path.stem.split("_kus_", 1)
                sub_path = root / task / modality / _SET / task / gt_path.parent.name / gt_path.name
                if sub_path.is_file():
                    psnr, ssim, nmse, comment = _score_file(gt_path, sub_path, "2024")
                    if comment:
                        comment = "Shapes of GT and recon are not the same"
                else:
                    psnr = ssim = nmse = math.nan
                    comment = "No file exists for recon"
                values = (modality, None, None, gt_path.parent.name, stem, kus, psnr, ssim, nmse, comment)
                records.append(dict(zip(_RECORD_FIELDS, values)))
        summary: dict = {"Num_Files": f"{sum(r['Comments'] is None for r in records)}/{len(records)}"}
        cells = {"PSNR": [], "SSIM": [], "NMSE": [], "adj.PSNR": [], "adj.SSIM": [], "adj.NMSE": []}
        for modality in modalities:
            for kus in masks:
                cell = _cell_2024(records, modality, kus)
                summary[f"num_file_{modality}_{kus}"] = f"{cell['success']}/{cell['total']}"
                for m in cells:
                    cells[m].append(_round(cell[m]))  # the script averages the rounded cell values
                for m in ("PSNR", "SSIM", "NMSE"):
                    summary[f"{modality}_{kus}_{m}"] = _round(cell[m])
        for m, values in cells.items():
            summary[f"All_{m}"] = _round(_nanmean([math.nan if v is None else v for v in values]))
        out[task] = {"records": records, "summary": summary}
    return out


# --------------------------------------------------------------------------------------------------- 2023


def _larger(a: float, b: float) -> float:
    """Main_Score.py's ``get_mean_value``: the larger of two values, NaN ignored (for NMSE too)."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return a if a > b else b


def score_2023(submission: str | os.PathLike, gt: str | os.PathLike, sheet=None) -> dict:
    """``{task: {"records", "summary"}}`` for Cine/Mapping, multi-coil cells (view, R) and the task score."""
    root = _find_task_root(Path(submission), ("MultiCoil",)) / "MultiCoil"
    out = {}
    for task, views in _TASKS_2023.items():
        if not (root / task).is_dir():
            continue
        records = []
        cells: dict[tuple[str, str], dict] = {}
        for rate in _RATES_2023:
            gt_dir = Path(gt) / task / "MultiCoil" / task / _SET / f"AccFactor{rate}"
            sub_dir = root / task / _SET / f"AccFactor{rate}"
            for view, stem in views:
                rows = []
                for patient in sorted(p.name for p in sub_dir.iterdir() if p.is_dir()) if sub_dir.is_dir() else []:
                    gt_path, sub_path = gt_dir / patient / f"{stem}.mat", sub_dir / patient / f"{stem}.mat"
                    if not gt_path.is_file():
                        continue  # only submitted patients that have a GT file count
                    if sub_path.is_file():
                        psnr, ssim, nmse, comment = _score_file(gt_path, sub_path, "2023")
                    else:
                        psnr = ssim = nmse = math.nan
                        comment = "missing"
                    rows.append(
                        dict(
                            zip(
                                _RECORD_FIELDS,
                                (task, None, None, patient, stem, f"AccFactor{rate}", psnr, ssim, nmse, comment),
                            )
                        )
                    )
                ok = [r for r in rows if r["Comments"] is None]
                cells[(view, rate)] = {
                    m: float(np.mean([r[m] for r in ok])) if ok else math.nan for m in ("PSNR", "SSIM", "NMSE")
                }
                cells[(view, rate)]["n"] = len(ok)
                records += rows
        n = sum(c["n"] for c in cells.values())
        summary: dict = {
            f"num_file_{v}_{r}_Multi": f"{cells[(v, r)]['n']}/{cells[(v, r)]['n']}" for (v, _), r in _pairs(views)
        }
        summary["Num_Files"] = f"{n}/{n}"
        for m in ("PSNR", "SSIM", "NMSE"):
            for (view, _), rate in _pairs(views):
                summary[f"Multi_{view}_{rate}_{m}"] = _round(cells[(view, rate)][m])
        for m in ("PSNR", "SSIM", "NMSE"):
            (a, _), (b, _) = views
            per_rate = [_larger(cells[(b, r)][m], cells[(a, r)][m]) for r in _RATES_2023]
            summary[f"{task}_{m}"] = _round(np.mean(per_rate))
        out[task] = {"records": records, "summary": summary}
    return out


def _pairs(views):
    return [(v, r) for v in views for r in _RATES_2023]


# --------------------------------------------------------------------------------------------------- output

_SCORERS = {"2023": score_2023, "2024": score_2024, "2025": score_2025}


def score_tree(
    submission: str | os.PathLike, gt: str | os.PathLike, release: str, sheet: str | os.PathLike | None = None
) -> dict:
    """Score a submission folder of ``release`` ('2023', '2024', '2025'); ``{task: {"records", "summary"}}``."""
    if str(release) not in _SCORERS:
        raise ValueError(f"release must be one of {', '.join(_SCORERS)}, got {release!r}")
    if not Path(gt).is_dir():
        raise CMRDataError.at(gt, "ground-truth folder does not exist")
    results = _SCORERS[str(release)](submission, gt, sheet)
    if not results:
        raise CMRDataError.at(submission, f"holds no task folder of the CMRxRecon{release} layout")
    return results


def write_results(results: Mapping, out_dir: str | os.PathLike) -> list[Path]:
    """Per task: ``<out>/<task>/results.json`` (the organisers' summary, ``submission_status`` first),
    ``summary.csv`` (Category, Value) and ``files.csv`` (one row per scored or missing file)."""
    import json

    written = []
    for task, res in results.items():
        folder = Path(out_dir) / task
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"submission_status": "SCORED", **res["summary"]}
        (folder / "results.json").write_text(json.dumps(summary, indent=4) + "\n")
        with open(folder / "summary.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["Category", "Value"])
            writer.writerows(summary.items())
        with open(folder / "files.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(_RECORD_FIELDS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(res["records"])
        written += [folder / "results.json", folder / "summary.csv", folder / "files.csv"]
    return written


def summary_table(results: Mapping) -> str:
    """A plain-text table of every task's summary, one ``Category  Value`` line each."""
    lines = []
    for task, res in results.items():
        width = max(len(k) for k in res["summary"])
        lines.append(f"== {task} ==")
        lines += [f"{k:<{width}}  {'' if v is None else v}" for k, v in res["summary"].items()]
    return "\n".join(lines)


def ground_truth_path(kus_path: str | os.PathLike, gt_root: str | os.PathLike, release: str) -> Path:
    """Where the scorer of ``release`` looks for the GT of one undersampled file of a dataset tree.

    2025: ``<Task>/MultiCoil/<Mod>/<Set>/FullSample_<Task>/<C>/<V>/<P>/<series>.mat``; 2024 (the submission
    layout): ``Task<k>/<Mod>/<Set>/Task<k>/<P>/<series>_kus_<mask>.mat``; 2023:
    ``<Mod>/MultiCoil/<Mod>/<Set>/AccFactor<RR>/<P>/<series>.mat``.
    """
    rel = get_release(str(release))
    sub = rel.submission_path(kus_path, Path("/"))
    parts = sub.parts[1:]
    if rel.name == "2025":
        task, multicoil, modality, subset, _, center, vendor, patient, name = parts
        stem = name.split("_kus_")[0]
        return Path(
            gt_root, task, multicoil, modality, subset, f"FullSample_{task}", center, vendor, patient, stem + ".mat"
        )
    if rel.name == "2024":
        return Path(gt_root, *parts)
    _, modality, subset, acc, patient, name = parts
    return Path(gt_root, modality, "MultiCoil", modality, subset, acc, patient, name)


def _demo_kus_files(root: Path, release: str) -> list[Path]:
    if release == "2025":
        return sorted(root.glob("ChallengeData_ValSet/*/MultiCoil/*/ValidationSet/UnderSample_*/*/*/*/*_kus_*.mat"))
    if release == "2024":
        return sorted(root.glob("ChallengeData/MultiCoil/*/ValidationSet/UnderSample_Task*/*/*_kus_*.mat"))
    files = root.glob("ChallengeData/MultiCoil/*/ValidationSet/AccFactor*/*/*.mat")
    return sorted(p for p in files if not p.stem.endswith("_mask"))


def write_demo_ground_truth(
    root: str | os.PathLike, gt_root: str | os.PathLike, layout: str, seed: int = 0, size: str | float = "small"
) -> list[Path]:
    """Write the GT ``img4ranking`` of every validation file of a demo tree, in the layout its scorer reads.

    The demo's fully sampled validation k-space is regenerated (:func:`bundle.data.demo.series_kspace`, same
    ``seed``, ``size`` and ``layout`` as the tree); each GT is run4Ranking of its coil images, MATLAB-shaped for
    2025, written as MAT v5 at :func:`ground_truth_path`. The demo tree itself is not touched.
    """
    rel = get_release(str(layout))
    kus_files = _demo_kus_files(Path(root), rel.name)
    if not kus_files:
        raise CMRDataError.at(root, f"holds no CMRxRecon{rel.name} demo validation files")
    written = []
    for kus in kus_files:
        stem = kus.name.split("_kus_")[0] if "_kus_" in kus.name else kus.stem
        patient = "/".join(kus.parts[-4:-1]) if rel.name == "2025" else kus.parent.name
        kspace = series_kspace(stem, patient, "ValidationSet", seed=seed, size=size, layout=rel.name)
        coil_images = ifft2c_np(kspace).transpose()  # h5py order -> MATLAB (nx, ny, nc, nz[, nt])
        img = run4ranking(coil_images, stem)
        if rel.matlab_shaped_submission:
            img = matlab_shape(img)
        written.append(save_submission(ground_truth_path(kus, gt_root, rel.name), img))
    return written
