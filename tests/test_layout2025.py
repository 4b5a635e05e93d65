"""CMRxRecon2025: the --layout 2025 demo tree, indexing, splits, masks, training, evaluation, inference, bad input."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from helpers import REPO, TINY_NET, run_workflow, train_overrides
from helpers import config_workflow as _workflow

from bundle.data import make_demo_dataset, read_mat, write_mat
from bundle.data.checks import check_dataset
from bundle.data.demo import SITES_2025, series_kspace
from bundle.data.index import (
    build_datalist,
    detect_layout,
    find_multicoil_roots,
    scan_dataset,
    split_by_site,
    training_patients,
)
from bundle.data.layout import RELEASES, release_of_path, series_type
from bundle.data.loading import LoadCMRSliced
from bundle.errors import CMRDataError, MissingKeyError, ShapeError
from bundle.io.paths import submission_path
from bundle.metrics import matlab_shape, official_scores, run4ranking
from bundle.mri import ifft2c_np, rss_np
from bundle.transforms.masks import make_mask, measure_acs_width

TRAINING = "ChallengeData/MultiCoil"
TASK = "ChallengeData_ValSet/TaskR1/MultiCoil"

pytestmark = pytest.mark.xdist_group("layout2025")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("d2025")
    make_demo_dataset(root, seed=0, size="tiny", layout="2025")
    return root


def test_demo_tree_has_the_2025_layout(root):
    train = root / TRAINING
    sites = {p.relative_to(train / "Cine/TrainingSet/FullSample").parts[:2] for p in train.rglob("cine_sax.mat")}
    assert sites == set(SITES_2025)  # two centres, three vendors, a dot in a vendor folder
    patients = [p.name for p in (train / "Cine/TrainingSet/FullSample/Center002").glob("*/P*")]
    assert patients.count("P001") == 2  # one patient number under two vendors of one centre
    full = train / "T2w/TrainingSet/FullSample/Center001/UIH_30T_umr780/P001/T2w.mat"
    assert read_mat(full).ndim == 4  # T2w has no time axis
    mask = read_mat(train / "T2w/TrainingSet/Mask_TaskAll/Center001/UIH_30T_umr780/P001/T2w_mask_Uniform8.mat")
    assert mask.ndim == 2  # 2-D masks for 4-D series
    kus = next((root / TASK).rglob("cine_sax_kus_*.mat"))
    assert (kus.parent / "cine_sax_info.csv").is_file()
    assert "kspace" in __import__("h5py").File(full, "r")


def test_detect_and_roots(root):
    for where in (root, root / "ChallengeData", root / TRAINING, root / "ChallengeData_ValSet"):
        assert detect_layout(where) == "2025"
    assert find_multicoil_roots(root) == [root / TRAINING, root / TASK]
    assert find_multicoil_roots(root / "ChallengeData_ValSet/TaskR1") == [root / TASK]
    assert find_multicoil_roots(root, tasks=["TaskR1"]) == [root / TRAINING, root / TASK]
    with pytest.raises(CMRDataError, match="TaskS2"):
        find_multicoil_roots(root / "ChallengeData_ValSet", tasks=["TaskS2"])
    with pytest.raises(ValueError, match="tasks must be among"):
        find_multicoil_roots(root, tasks=["Task9"])


def test_index_keys_patients_by_centre_vendor_patient(root):
    records = scan_dataset(root)
    full = [r for r in records if r.kind == "full"]
    assert {r.layout for r in records} == {"2025"}
    assert {r.patient for r in full} == {f"{c}/{v}/P001" for c, v in SITES_2025}
    assert training_patients(root) == sorted(f"{c}/{v}/P001" for c, v in SITES_2025)
    t2w = next(r for r in full if r.series == "T2w")
    assert t2w.nt == 1 and len(t2w.shape) == 4 and series_type(t2w.series) == "blackblood"
    assert {name for name, _ in t2w.masks} and all("Mask_TaskAll" in p for _, p in t2w.masks)
    kus = [r for r in records if r.kind == "undersampled"]
    assert {r.task for r in kus} == {"TaskR1"} and all(r.mask_path and Path(r.mask_path).is_file() for r in kus)
    assert {r.center for r in kus} == {"Center003"}
    item = build_datalist(root, subset="all")[0]
    assert item["layout"] == "2025" and item["acs_width"] == 20 and item["center"] and item["vendor"]


def test_split_never_merges_a_repeated_patient_number(root, tmp_path):
    split_file = tmp_path / "split.json"
    train = build_datalist(root, subset="train", val_fraction=0.34, split_file=split_file)
    val = build_datalist(root, subset="val", val_fraction=0.34, split_file=split_file)
    saved = json.loads(split_file.read_text())
    assert len(saved["train"]) == 2 and len(saved["val"]) == 1  # three people, though all are "P001"
    assert {i["patient"] for i in train}.isdisjoint({i["patient"] for i in val})
    assert {i["file"] for i in train}.isdisjoint({i["file"] for i in val})


def test_leave_centre_out(root, tmp_path):
    val = build_datalist(root, subset="val", val_centers=["Center002"], split_file=tmp_path / "s.json")
    train = build_datalist(root, subset="train", val_centers=["Center002"], split_file=tmp_path / "s.json")
    assert {i["center"] for i in val} == {"Center002"} and {i["center"] for i in train} == {"Center001"}
    vendor = build_datalist(root, subset="val", val_vendors=["Siemens_30T_CIMA.X"])
    assert {i["patient"] for i in vendor} == {"Center002/Siemens_30T_CIMA.X/P001"}
    with pytest.raises(ValueError, match="Center009"):
        split_by_site(training_patients(root), val_centers=["Center009"])
    with pytest.raises(CMRDataError, match="another split"):
        build_datalist(root, subset="val", val_centers=["Center001"], split_file=tmp_path / "s.json")


def test_measured_acs_of_official_masks():
    for pattern in ("Uniform", "ktGaussian", "ktRadial"):
        for rate in (16, 24):
            mask = make_mask(pattern, rate, 6, 48, 64, rng=np.random.default_rng(1), acs_width=20)
            assert measure_acs_width(mask.transpose(0, 2, 1)) == 20, (pattern, rate)
    lines = np.zeros((40, 8))
    lines[10:30] = 1
    lines[31] = 1  # a sampled line next to the band but not touching it
    assert measure_acs_width(lines) == 20
    lines[30] = 1  # now it touches: contiguous lines count, as the official reader counts them
    assert measure_acs_width(lines) == 22


def test_loader_gives_the_measured_acs_width(root):
    items = build_datalist(root, subset="undersampled")
    loader = LoadCMRSliced()
    for item in items[:3]:
        out = loader(item)
        mask = read_mat(item["mask_file"])
        assert out["acs_width"] == measure_acs_width(mask)
        assert out["mask"].shape == (5, item["nx"], item["ny"])


def test_submission_path_mirrors_the_task_tree(root, tmp_path):
    kus = next((root / TASK).rglob("*_kus_*.mat"))
    out = submission_path(kus, root, tmp_path / "submission")
    assert out == tmp_path / "submission" / "TaskR1" / "MultiCoil" / kus.relative_to(root / TASK)
    assert release_of_path(kus) is RELEASES["2025"]
    bad = root / TASK / "Cine/ValidationSet/UnderSample_TaskR1/Hospital/V/P001/cine_sax_kus_Uniform8.mat"
    with pytest.raises(CMRDataError, match="centre folder 'Hospital'"):
        submission_path(bad, root, tmp_path)


def test_run4ranking_2025_selection_and_shapes():
    vol = np.random.default_rng(0).random((30, 24, 6, 12)).astype(np.float32)
    assert run4ranking(vol, "cine_sax", coil_combined=True).shape == (10, 12, 2, 3)
    assert run4ranking(vol[..., :9], "T2smap", coil_combined=True).shape == (10, 12, 2, 9)
    assert run4ranking(vol[..., :5], "T1rho", coil_combined=True).shape == (10, 12, 2, 5)
    assert run4ranking(vol[..., :2], "lge_sax", coil_combined=True).shape == (10, 12, 2, 2)  # min(3, nt)
    t2w = run4ranking(vol[..., 0], "T2w", coil_combined=True)
    assert t2w.shape == (10, 12, 2)
    assert matlab_shape(run4ranking(vol[:, :, :1, 0], "T1w", coil_combined=True)).shape == (10, 12)
    assert matlab_shape(run4ranking(vol[:, :, :, :1], "lge_sax", coil_combined=True)).shape == (10, 12, 2)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train2025")
    overrides = {**train_overrides(root, out), "train_max_items": 4, "val_max_items": 4, "accumulation_steps": 1}
    overrides["val_centers"] = ["Center002"]
    run_workflow(_workflow(["train.yaml", "cmrxrecon2025.yaml"], "training", **overrides))
    return out


def test_train_and_evaluate_per_centre(trained, root, tmp_path):
    split = json.loads((trained / "runs" / "split.json").read_text())
    assert split["val"] == ["Center002/Siemens_30T_CIMA.X/P001", "Center002/UIH_15T_umr670/P001"]
    assert (trained / "models" / "model.pt").is_file()
    overrides = {**train_overrides(root, trained), "output_dir": str(tmp_path / "eval"), "val_max_items": 8}
    overrides["val_centers"] = ["Center002"]
    run_workflow(_workflow(["train.yaml", "cmrxrecon2025.yaml", "evaluate.yaml"], "evaluating", **overrides))
    tables = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert tables["metric"]["release"] == "2025" and "99.5" in tables["metric"]["description"]
    sites = {(r["center"], r["vendor"]) for r in tables["per_center_vendor"]}
    assert sites <= {("Center002", "Siemens_30T_CIMA.X"), ("Center002", "UIH_15T_umr670")} and sites
    adjusted = tables["official_adjusted"]
    assert adjusted["n_groups"] == len(sites) and np.isfinite(adjusted["ssim_adj"])
    csv_head = (tmp_path / "eval" / "metrics_per_center_vendor.csv").read_text().splitlines()[0]
    assert csv_head.startswith("center,vendor,files,ssim") and csv_head.endswith(",metric")
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Metric: 2025" in html and "Per centre and vendor" in html


def test_inference_writes_the_2025_submission_tree(trained, root, tmp_path):
    out = tmp_path / "infer"
    overrides = {
        "bundle_root": str(REPO),
        "dataset_dir": str(root / "ChallengeData_ValSet"),
        "model_path": str(trained / "models" / "model.pt"),
        "output_dir": str(out),
        "num_workers": 0,
        "tasks": ["TaskR1"],
        **TINY_NET,
    }
    run_workflow(_workflow(["inference.yaml", "cmrxrecon2025.yaml"], "inference", **overrides))
    kus_files = sorted((root / TASK).rglob("*_kus_*.mat"))
    written = sorted((out / "submission").rglob("*.mat"))
    expected = [out / "submission" / "TaskR1" / "MultiCoil" / k.relative_to(root / TASK) for k in kus_files]
    assert written == sorted(expected)
    for kus, sub in zip(kus_files, expected):
        img = scipy.io.loadmat(sub)["img4ranking"]
        assert img.dtype == np.float32
        series = kus.name.split("_kus_")[0]
        patient = "/".join(kus.parent.parts[-3:])
        full = series_kspace(series, patient, split="ValidationSet", size="tiny", layout="2025")
        full = full[None] if full.ndim == 4 else full
        images = rss_np(ifft2c_np(full.astype(np.complex64)).transpose(4, 3, 2, 1, 0), axis=2)
        gt = matlab_shape(run4ranking(images[..., 0] if series == "T2w" else images, series, coil_combined=True))
        assert img.shape == gt.shape, (kus.name, img.shape, gt.shape)
        if gt.ndim > 2:
            assert np.isfinite(official_scores(img, gt, "2025")["ssim_mean"])


# ------------------------------------------------------------------------------------------------- bad input


def _copy(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(root, dest)
    return dest


def test_bad_2025_inputs_are_named_and_the_rest_goes_on(root, tmp_path, caplog):
    tree = _copy(root, tmp_path)
    train = tree / TRAINING
    # 1. a FullSample file without kspace / kspace_full
    bad_key = train / "Cine/TrainingSet/FullSample/Center001/UIH_30T_umr780/P001/cine_sax.mat"
    write_mat(bad_key, data=np.zeros((2, 1, 2, 32, 32), np.complex64))
    # 2. a 4-D file where 5-D is expected
    bad_dims = train / "Mapping/TrainingSet/FullSample/Center002/UIH_15T_umr670/P001/T1map.mat"
    write_mat(bad_dims, kspace=np.ones((1, 2, 32, 32), np.complex64))
    # 3. a kus without its mask
    kus = next((tree / TASK / "Cine").rglob("cine_sax_kus_*.mat"))
    mask = Path(RELEASES["2025"].mask_path(kus))
    mask.unlink()
    # 4. an unknown modality folder, with an unknown series
    odd = tree / TRAINING / "Scout/TrainingSet/FullSample/Center001/UIH_30T_umr780/P001"
    odd.mkdir(parents=True)
    write_mat(odd / "scout_view.mat", kspace=np.ones((2, 1, 2, 32, 32), np.complex64))
    # 5. an unparsable _info.csv: never read, never fatal
    (kus.parent / "cine_sax_info.csv").write_bytes(b"\xff\xfe\x00garbage,,,\n\x00")

    errors = []
    with caplog.at_level(logging.WARNING):
        records = scan_dataset(tree, on_error=errors.append)
    assert any(isinstance(e, MissingKeyError) and e.path == str(bad_key) and "kspace" in str(e) for e in errors)
    assert any(isinstance(e, ShapeError) and e.path == str(bad_dims) and "5-D" in str(e) for e in errors)
    assert "Scout" in caplog.text and "scout_view" in caplog.text  # warned, still indexed
    assert any(r.series == "scout_view" for r in records)
    kus_record = next(r for r in records if r.path == str(kus))
    assert kus_record.mask_path is None
    _, problems = check_dataset(tree, check_values=False)
    missing = [p for p in problems if p.kind == "missing_mask"]
    assert [p.path for p in missing] == [str(kus)] and str(mask) in missing[0].message
    with pytest.raises(MissingKeyError, match="kspace"):
        scan_dataset(tree)


def test_check_dataset_cli_on_a_2025_tree(root):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_dataset.py"), "--root", str(root), "--no-values"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CMRxRecon2025 tree" in result.stdout and "Center002/UIH_15T_umr670" in result.stdout
    assert "TaskR1" in result.stdout


@pytest.mark.parametrize("release", ["2023", "2024", "2025"])
@pytest.mark.parametrize("selection", [(2, 3), (2, 1), (1, 4), (1, 1)])
def test_evaluation_scores_each_image_as_the_official_scorer(release, selection):
    """Evaluation scores 2-D items one by one; per file that must equal official_scores on its img4ranking."""
    from bundle.metrics import official_reference, release_metrics

    n_slices, n_frames = selection
    rng = np.random.default_rng(3)
    gt = rng.random((20, 16, n_slices, n_frames)).astype(np.float32) + 0.1
    recon = (gt + rng.normal(0, 0.05, gt.shape)).astype(np.float32).clip(0)
    gt_file, recon_file = matlab_shape(gt), matlab_shape(recon)
    if gt_file.ndim == 2 and release != "2025":
        pytest.skip("a 2-D img4ranking cannot be scored by the official 2023 and 2024 code")
    official = official_scores(recon_file, gt_file, release)
    # The evaluation's order: the images of the file one by one, (slice, frame) with frames inner.
    images = [(recon[:, :, i, j], gt[:, :, i, j]) for i in range(n_slices) for j in range(n_frames)]
    ref = official_reference(release, n_slices, n_frames)
    ours = release_metrics(
        np.stack([p for p, _ in images]), np.stack([g for _, g in images]), release, [ref] * len(images)
    )
    for metric in ("ssim", "psnr", "nmse"):
        np.testing.assert_allclose(ours[metric], official[metric], rtol=1e-12, atol=0)
    assert official["reference"] == ref
