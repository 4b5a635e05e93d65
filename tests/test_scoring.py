"""bundle.scoring: a submission folder scored as Val_Score2025.py (deecc8e) does; reference written from the spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bundle.errors import CMRDataError
from bundle.io.submission import save_submission
from bundle.scoring import score_tree, write_results
from scripts.score_submission import main


def _norm(x):
    p = np.percentile(np.abs(x), 99.5)
    return np.abs(x) if p == 0 else np.abs(x) / p


def _file_means(recon, gt):
    """Spec: per image, percentile-normalised; ref = submission for 4-D arrays, GT otherwise; mean over images."""
    planes = (
        [(recon[..., i, j], gt[..., i, j]) for i in range(gt.shape[2]) for j in range(gt.shape[3])]
        if gt.ndim == 4
        else ([(recon[..., j], gt[..., j]) for j in range(gt.shape[2])] if gt.ndim == 3 else [(recon, gt)])
    )
    out = []
    for p, g in planes:
        p, g = _norm(p), _norm(g)
        ref, test = (p, g) if gt.ndim == 4 else (g, p)
        out.append(
            (
                peak_signal_noise_ratio(ref, test, data_range=ref.max()),
                structural_similarity(ref, test, data_range=ref.max()),
                np.linalg.norm(ref - test) ** 2 / np.linalg.norm(ref) ** 2,
            )
        )
    return np.mean(out, axis=0)


def _tree(tmp_path, rng):
    """TaskR1 (two sites, one file missing, one 2-D file) and TaskS1 (diseases), submission and GT."""
    sub, gt = tmp_path / "Submission", tmp_path / "GT"
    files = {
        ("TaskR1", "Cine", "Center001", "UIH_30T_umr780", "P001", "cine_sax", (20, 16, 2, 3)),
        ("TaskR1", "T1w", "Center001", "UIH_30T_umr780", "P001", "T1w", (20, 16)),  # one slice, one frame
        ("TaskR1", "Cine", "Center002", "Siemens_15T_Aera", "P004", "cine_lax", (20, 16, 2, 3)),
        ("TaskR1", "Mapping", "Center002", "Siemens_15T_Aera", "P004", "T1map", (20, 16, 2)),  # not submitted
        ("TaskS1", "Cine", "Center003", "Siemens_30T_Vida", "P002", "cine_sax", (20, 16, 2)),
        ("TaskS1", "LGE", "Center003", "Siemens_30T_Vida", "P003", "lge_sax", (20, 16, 2)),
    }
    means = {}
    for task, mod, c, v, p, stem, shape in sorted(files):
        g = (0.1 + rng.random(shape)).astype(np.float32)
        r = np.abs(g + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        save_submission(
            gt / task / "MultiCoil" / mod / "ValidationSet" / f"FullSample_{task}" / c / v / p / f"{stem}.mat", g
        )
        if stem != "T1map":
            folder = sub / task / "MultiCoil" / mod / "ValidationSet" / f"UnderSample_{task}" / c / v / p
            save_submission(folder / f"{stem}_kus_Uniform8.mat", r)
            means[(task, stem, p)] = _file_means(r, g)
    return sub, gt, means


def test_2025_summary_follows_the_organisers_script(tmp_path, rng):
    sub, gt, means = _tree(tmp_path, rng)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "Task,Center,Manufacturer,AnonPatientID,Disease1,Disease2\n"
        "TaskS1,Center003,Siemens_30T_Vida,P002,HCM,Heart failure\n"
        "TaskS1,Center003,Siemens_30T_Vida,P003,HCM,\n"
    )
    with pytest.raises(CMRDataError, match="no group of TaskR1"):  # no TaskR1 rows: every site Unknown
        score_tree(sub, gt, "2025", sheet=sheet)
    sheet.write_text(sheet.read_text() + "TaskR1,Center001,UIH_30T_umr780,P001,,\n")
    res = score_tree(sub, gt, "2025", sheet=sheet)
    r1 = res["TaskR1"]["summary"]
    assert r1["Num_Files"] == "3/4"
    a, b, c = (
        means[("TaskR1", "cine_sax", "P001")],
        means[("TaskR1", "T1w", "P001")],
        means[("TaskR1", "cine_lax", "P004")],
    )
    site1, site2 = "Center001_UIH_30T_umr780", "Center002_Siemens_15T_Aera"
    assert r1["Unknown_Unknown_Num"] == "1/0" and "Unknown_Unknown_PSNR_adj" not in r1  # P004 not in the sheet
    assert r1["Mean_of_all_centers_PSNR_adj"] == r1[f"{site1}_PSNR_adj"]
    res = score_tree(sub, gt, "2025")  # without a sheet: the folders' centre and vendor
    r1 = res["TaskR1"]["summary"]
    assert r1[f"{site1}_Num"] == "2/2" and r1[f"{site2}_Num"] == "1/2"
    psnr1, psnr2 = (a[0] + b[0]) / 2, c[0] / 2  # the missing file counts 0
    assert r1[f"{site2}_NMSE_adj"] == round(c[2] * (2 - 1 / 2), 4)
    assert r1["Mean_of_all_centers_PSNR_adj"] == pytest.approx(round((psnr1 + psnr2) / 2, 4), abs=1e-12)
    assert r1[f"{site1}_SSIM_adj"] == pytest.approx(round((a[1] + b[1]) / 2, 4), abs=1e-12)
    res = score_tree(sub, gt, "2025", sheet=sheet)
    s1 = res["TaskS1"]["summary"]
    p2, p3 = means[("TaskS1", "cine_sax", "P002")], means[("TaskS1", "lge_sax", "P003")]
    assert s1["HCM_Num"] == "2/2" and s1["Heart_failure_Num"] == "1/1"
    assert s1["HCM_PSNR_adj"] == pytest.approx(round((p2[0] + p3[0]) / 2, 4), abs=1e-12)
    assert s1["Mean_of_all_diseases_SSIM_adj"] == pytest.approx(round(((p2[1] + p3[1]) / 2 + p2[1]) / 2, 4), abs=1e-12)
    out = write_results(res, tmp_path / "Result")
    assert json.loads((tmp_path / "Result" / "TaskS1" / "results.json").read_text())["submission_status"] == "SCORED"
    assert len(out) == 6


def test_xlsx_sheet_and_the_script(tmp_path, rng, capsys):
    openpyxl = pytest.importorskip("openpyxl")
    sub, gt, means = _tree(tmp_path, rng)
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "TaskR1"
    ws.append(["Center", "Manufacturer", "AnonPatientID"])
    ws.append(["Center001", "UIH_30T_umr780", "P001"])
    ws.append(["Center002", "Siemens_15T_Aera", "P004"])
    s1 = book.create_sheet("TaskS1")
    s1.append(["Center", "Manufacturer", "AnonPatientID", "Disease1"])
    s1.append(["Center003", "Siemens_30T_Vida", "P002", "DCM"])
    book.save(tmp_path / "sheet.xlsx")
    assert main([str(sub), str(gt), "--sheet", str(tmp_path / "sheet.xlsx"), "--out", str(tmp_path / "R")]) == 0
    text = capsys.readouterr().out
    assert "Center002_Siemens_15T_Aera_Num       1/2" in text and "DCM_Num" in text
    summary = json.loads((tmp_path / "R" / "TaskS1" / "results.json").read_text())
    assert summary["Num_Files"] == "2/2" and summary["DCM_Num"] == "1/1"  # P003 is in no disease group


def test_bad_trees_are_named(tmp_path, rng):
    sub, gt, _ = _tree(tmp_path, rng)
    extra = sub / "TaskR1/MultiCoil/Cine/ValidationSet/UnderSample_TaskR1/Center001/UIH_30T_umr780/P001"
    save_submission(extra / "cine_lax_kus_Uniform8.mat", np.ones((20, 16, 2), np.float32))
    with pytest.raises(CMRDataError, match="cine_lax_kus_Uniform8.mat.*Extra file submitted"):
        score_tree(sub, gt, "2025")
    (extra / "cine_lax_kus_Uniform8.mat").unlink()
    save_submission(extra / "cine_sax_kus_Uniform8.mat", np.ones((20, 16, 2), np.float32))  # wrong shape: dropped
    assert score_tree(sub, gt, "2025")["TaskR1"]["summary"]["Num_Files"] == "2/4"
    with pytest.raises(CMRDataError, match="no task folder"):
        score_tree(tmp_path / "GT" / "TaskR1" / "MultiCoil" / "Cine", gt, "2025")
    assert main([str(sub), str(tmp_path / "nope")]) == 2
