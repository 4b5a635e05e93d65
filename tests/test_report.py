"""HTML reports: evaluation tables equal metrics.json, every image decodes, montages are oriented like viewers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import MODALITIES, REPO, HtmlReport, check_report_matches_metrics, synthetic_validation_engine
from PIL import Image

from bundle.io.report import comparison_row, write_inference_report
from bundle.workflows import EvalReportWriter, MetricsTableWriter
from bundle.workflows.eval_report import best_and_worst


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    engine, n = synthetic_validation_engine(
        [MetricsTableWriter(str(out)), EvalReportWriter(str(out), num_adj_frames=1)]
    )
    engine.run(range(n), max_epochs=1)
    return out


def test_eval_report_tables_hold_the_metrics_json_numbers(eval_dir):
    tables = json.loads((eval_dir / "metrics.json").read_text())
    assert {r["acceleration"] for r in tables["per_modality_acceleration"]} == {4, 8}
    report = check_report_matches_metrics(eval_dir / "report.html", tables)
    # Best and worst file of each of the three modalities, each a row of four panels at least 256 px on the long side.
    images = report.decoded_images()
    assert len(images) == 2 * len(MODALITIES)
    assert all(image.mode == "RGB" and image.size[0] >= 4 * 256 for image in images)  # long side of each panel
    text = (eval_dir / "report.html").read_text()
    for modality in MODALITIES:
        assert f"best {modality}" in text and f"worst {modality}" in text
    assert "<svg" in text and "SSIM per image" in text  # the distribution plot
    assert "|error| × " in text  # the error gain is printed


def test_best_and_worst_by_file_ssim():
    rows = [
        {"file": "a", "modality": "Cine", "ssim": 0.8},
        {"file": "b", "modality": "Cine", "ssim": 0.9},
        {"file": "c", "modality": "Cine", "ssim": 0.7},
        {"file": "d", "modality": "T1", "ssim": 0.5},
    ]
    chosen = [(title, row["file"]) for title, row in best_and_worst(rows)]
    assert chosen == [("best Cine", "b"), ("worst Cine", "c"), ("best T1", "d")]


def test_comparison_row_shares_a_window_outlines_the_roi_and_is_oriented_like_the_viewer():
    nx, ny = 40, 24
    target = np.zeros((nx, ny), np.float32)
    target[0, 0] = 1.0  # voxel (0, 0) is drawn at the bottom right (bundle.io.orientation)
    target[10:30, 5:20] = 0.5
    recon = target.copy()
    recon[20, 10] += 0.01
    row, gain = comparison_row(target * 0.5, recon, target, roi_bounds=((10, 30), (5, 20)), min_size=256)
    factor = 256 // nx + (256 % nx > 0)
    h, w = ny * factor, nx * factor
    assert row.shape == (h, 4 * w + 3 * 4, 3)
    assert gain >= 1
    target_panel = row[:, 2 * (w + 4) : 2 * (w + 4) + w]
    assert tuple(target_panel[h - 1, w - 1]) == (255, 255, 255)  # the brightest voxel, bottom right
    zf_panel = row[:, :w]
    # The window is the target's (99.5th percentile = 0.5 here): the zero-filled block at 0.25 shows mid-grey.
    assert zf_panel[(ny - 10) * factor, (nx - 20) * factor, 0] == 128
    red = np.argwhere((row[:, :w, 0] == 255) & (row[:, :w, 1] == 64))  # the ROI outline in the first panel
    assert red[:, 0].min() == (ny - 20) * factor and red[:, 1].min() == (nx - 30) * factor


def test_inference_report_lists_files_with_their_previews(tmp_path):
    from bundle.io.preview import save_preview_png

    out = tmp_path / "out"
    rows = []
    for name in ("a", "b"):
        preview = save_preview_png(out / "preview" / f"{name}.png", np.random.default_rng(0).random((8, 6, 2, 2)))
        rows.append({"file": str(tmp_path / "data" / f"{name}_kus_Uniform4.mat"), "outputs": [preview]})
    path = write_inference_report(out / "report.html", rows, out, tmp_path / "data")
    report = HtmlReport(path)
    assert not report.external
    assert [image.size for image in report.decoded_images()] == [Image.open(r["outputs"][0]).size for r in rows]
    assert [cells[0][0] for cells in report.tables["files"][1:]] == ["a_kus_Uniform4.mat", "b_kus_Uniform4.mat"]
    assert [cells[2][0] for cells in report.tables["files"][1:]] == ["preview/a.png", "preview/b.png"]


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium on PATH (apt-get install chromium): the browser rendering check cannot run",
)
def test_report_renders_in_headless_chromium(eval_dir, tmp_path):
    out = tmp_path / "shot.png"
    command = [
        sys.executable,
        str(REPO / "scripts" / "screenshot_report.py"),
        "--report",
        str(eval_dir / "report.html"),
    ]
    result = subprocess.run(
        [*command, "--out", str(out), "--width", "1200", "--height", "1600"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as shot:
        pixels = np.asarray(shot.convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200)
    # Not blank: text, table lines and images make many distinct grey levels and dark pixels.
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50 and (pixels < 100).mean() > 0.005


def test_a_resumed_inference_lists_files_done_earlier(tmp_path):
    from bundle.io.preview import save_preview_png
    from bundle.workflows import ReconstructionWriter

    data, out = tmp_path / "data", tmp_path / "out"
    (data / "P001").mkdir(parents=True)
    writer = ReconstructionWriter(str(data), str(out), write_submission=False, write_nifti=False, progress=False)
    done, todo = str(data / "P001" / "a_kus_Uniform4.mat"), str(data / "P001" / "b_kus_Uniform4.mat")
    save_preview_png(out / "preview" / "P001" / "a_kus_Uniform4.png", np.ones((8, 6, 1, 1)))
    assert writer.is_done(done) and not writer.is_done(todo)
    report = HtmlReport(writer.extras.write_report())
    assert [cells[0][0] for cells in report.tables["files"][1:]] == ["P001/a_kus_Uniform4.mat (earlier run)"]
    assert len(report.decoded_images()) == 1
