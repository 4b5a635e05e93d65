"""A folder of ISMRMRD files as a dataset: index, split, loader, checks, training and inference into patient space.

The reader itself is tested in ``test_ismrmrd.py``; here the files go through the bundle's own pipeline, and the
outputs are checked against the phantom writer's ground truth (its geometry and marker position), not against
the reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers import RAW_TINY, REPO, TINY_NET, dicom_pixel_lps, run_workflow, train_overrides
from helpers import config_workflow as _workflow
from helpers import raised as _cause

from bundle.data import LoadCMRSliced, build_datalist, detect_layout, scan_dataset
from bundle.data.demo_ismrmrd import write_ismrmrd_phantom
from bundle.data.formats import FORMATS, format_of
from bundle.data.index import is_raw_dataset, training_patients
from bundle.errors import EmptyDatasetError
from bundle.geometry import LPS_TO_RAS

pytestmark = pytest.mark.xdist_group("raw_data")

FILES = {
    "P001/cine_sax.h5": dict(seed=1, oblique=True),
    "P002/cine_sax_R4.mrd": dict(seed=2, acceleration=4, acs=6, asymmetric_echo=0.75, shuffle=True),
    "P003/cine_lax.h5": dict(seed=3, left_handed=True, series="cine_lax"),
}


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("raw")
    truths = {name: write_ismrmrd_phantom(root / name, **RAW_TINY, **kw) for name, kw in FILES.items()}
    return root, truths


def test_a_folder_of_ismrmrd_files_is_a_dataset(raw_root):
    root, truths = raw_root
    assert is_raw_dataset(root) and detect_layout(root) == "ismrmrd"
    records = scan_dataset(root)
    assert [Path(r.path).relative_to(root).as_posix() for r in records] == sorted(FILES)
    by_name = {Path(r.path).relative_to(root).as_posix(): r for r in records}
    assert {n: r.kind for n, r in by_name.items()} == {
        "P001/cine_sax.h5": "full",
        "P002/cine_sax_R4.mrd": "undersampled",
        "P003/cine_lax.h5": "full",
    }
    for name, r in by_name.items():
        assert (r.nt, r.nz, r.ny, r.nx) == (RAW_TINY["nt"], RAW_TINY["nz"], RAW_TINY["ny"], RAW_TINY["nx"])
        assert r.patient == name.split("/")[0] and r.layout == "ismrmrd" and r.format == "ismrmrd"
        assert r.series == Path(name).stem.replace("_R4", "")
    assert by_name["P002/cine_sax_R4.mrd"].acs_width == truths["P002/cine_sax_R4.mrd"].acs_width == 6
    # Only the fully sampled files' patients can be split for supervised training.
    assert training_patients(root) == ["P001", "P003"]


def test_datalists_split_fully_sampled_files_by_patient(raw_root):
    root, _ = raw_root
    train = build_datalist(root, subset="train", val_fraction=0.5, seed=0)
    val = build_datalist(root, subset="val", val_fraction=0.5, seed=0)
    assert {i["patient"] for i in train} | {i["patient"] for i in val} == {"P001", "P003"}
    assert not {i["patient"] for i in train} & {i["patient"] for i in val}
    under = build_datalist(root, subset="undersampled")
    assert {i["patient"] for i in under} == {"P002"}
    item = under[0]
    assert item["format"] == "ismrmrd" and item["layout"] == "ismrmrd" and item["acs_width"] == 6
    json.dumps(train + val + under)  # a MONAI datalist: plain JSON


def test_the_loader_reads_raw_slices_with_their_acquired_lines(raw_root):
    root, truths = raw_root
    load = LoadCMRSliced(num_adj_frames=3)
    full = next(i for i in build_datalist(root, subset="all") if i["patient"] == "P001" and i["z"] == 1)
    out = load(full)
    truth = truths["P001/cine_sax.h5"]
    reader = format_of(full).open(full["file"], full.get("entry"), group=full["raw_group"])
    np.testing.assert_array_equal(out["kspace_full"], reader.read_frames(1, out["frames"]).swapaxes(-1, -2))
    assert out["kspace_full"].shape == (3, RAW_TINY["nc"], RAW_TINY["nx"], RAW_TINY["ny"])

    item = next(i for i in build_datalist(root, subset="undersampled") if i["z"] == 0 and i["t"] == 2)
    out = load(item)
    truth = truths["P002/cine_sax_R4.mrd"]
    expected = np.broadcast_to(truth.mask[out["frames"]][:, None, :], out["mask"].shape)
    np.testing.assert_array_equal(out["mask"], expected)
    assert out["kspace_masked"].shape == (3, RAW_TINY["nc"], RAW_TINY["nx"], RAW_TINY["ny"])
    # Lines never acquired hold no data; acquired ones do.
    k = np.abs(out["kspace_masked"]).sum(axis=(1, 2))  # (F, ny)
    assert np.all(k[out["mask"][:, 0, :] == 0] == 0) and np.all(k[out["mask"][:, 0, :] == 1] > 0)
    load.close()


def _cli(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "scripts/check_dataset.py", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_check_dataset_lists_each_raw_file_and_names_a_bad_one(raw_root, tmp_path):
    root, _ = raw_root
    res = _cli("--root", root, "--no-values")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "ISMRMRD raw data" in out and "3 files, 3 series, 3 patients" in out
    assert "P002/cine_sax_R4.mrd" in out and "R=" in out and "ACS 6 lines" in out
    assert "readout oversampling 2.0x" in out and "noise readouts" in out and "geometry:" in out
    assert "No problems found; 3 files OK." in out

    bad_root = tmp_path / "site"
    for name in FILES:
        (bad_root / name).parent.mkdir(parents=True, exist_ok=True)
        (bad_root / name).write_bytes((root / name).read_bytes())
    truncated = bad_root / "P003" / "cine_lax.h5"
    truncated.write_bytes(truncated.read_bytes()[:4000])
    res = _cli("--root", bad_root, "--no-values")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cine_lax.h5" in res.stdout and "2 files OK" in res.stdout


def test_an_empty_folder_says_what_was_looked_for(tmp_path):
    with pytest.raises(EmptyDatasetError, match=r"no CMRxRecon MultiCoil tree here .*and no ISMRMRD raw data"):
        scan_dataset(tmp_path)


@pytest.fixture(scope="module")
def trained(raw_root, tmp_path_factory) -> Path:
    root, _ = raw_root
    out = tmp_path_factory.mktemp("raw_train")
    overrides = {
        **train_overrides(root, out),
        **{"train_max_items": 4, "val_max_items": 2, "accumulation_steps": 1, "val_fraction": 0.5},
        "num_coils": RAW_TINY["nc"],
    }
    run_workflow(_workflow(["train.yaml"], "training", **overrides))
    assert (out / "models" / "model.pt").is_file()
    return out


def _marker_lps_from_nifti(path: Path, voxel) -> np.ndarray:
    affine = nib.load(path).affine
    ras = affine @ np.array([*voxel, 1.0])
    return (LPS_TO_RAS @ ras)[:3]


def test_inference_writes_nifti_and_dicom_in_the_scanner_patient_space(raw_root, trained, tmp_path):
    root, truths = raw_root
    out = tmp_path / "infer"
    overrides = {
        "bundle_root": str(REPO),
        "dataset_dir": str(root),
        "model_path": str(trained / "models" / "model.pt"),
        "output_dir": str(out),
        "num_workers": 0,
        "num_coils": RAW_TINY["nc"],
        "dicom": True,
        **TINY_NET,
    }
    run_workflow(_workflow(["inference.yaml"], "inference", **overrides))
    assert not (out / "submission").exists()  # raw data belongs to no challenge
    assert not list(root.rglob("*.nii.gz"))  # nothing next to the inputs
    for name, truth in truths.items():
        stem = Path(name).with_suffix("")
        nifti = out / "nifti" / f"{stem}.nii.gz"
        img = nib.load(nifti)
        assert img.shape == (RAW_TINY["nx"], RAW_TINY["ny"], RAW_TINY["nz"], RAW_TINY["nt"])
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
        np.testing.assert_allclose(img.affine, truth.geometry.affine_ras(), atol=1e-4)
        np.testing.assert_allclose(img.get_qform(), truth.geometry.affine_ras(), atol=1e-3)
        i, j, k = truth.marker_voxel
        voxel = min(truth.geometry.pixel_spacing)
        assert np.linalg.norm(_marker_lps_from_nifti(nifti, (i, j, k)) - truth.marker_lps) < 0.1 * voxel
        sidecar = json.loads(nifti.with_suffix("").with_suffix(".json").read_text())
        assert sidecar["RawFile"] == Path(name).name and sidecar["Manufacturer"] == "SIEMENS"
        assert sidecar["MagneticFieldStrength"] > 0 and sidecar["PatientPosition"] == "HFS"
        # DICOM: the marker's pixel (row j, column i) of slice k is at the marker's patient position.
        slices = sorted((out / "dicom" / stem).glob(f"IM_z{k:03d}_t*.dcm"))
        assert len(slices) == RAW_TINY["nt"]
        ds = pydicom.dcmread(slices[0])
        assert ds.Rows == RAW_TINY["ny"] and ds.Columns == RAW_TINY["nx"]
        assert np.linalg.norm(dicom_pixel_lps(ds, j, i) - truth.marker_lps) < 0.1 * voxel
        assert ds.PatientPosition == "HFS" and float(ds.MagneticFieldStrength) > 0
    # skip_existing: a second run finds every output and rewrites none.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".gz", ".dcm", ".json")}
    run_workflow(_workflow(["inference.yaml"], "inference", **overrides))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_the_zero_filled_raw_image_shows_the_marker_where_the_geometry_puts_it(raw_root):
    """The reader's k-space, imaged as the network's data consistency images it, is upright in the geometry."""
    from bundle.mri import ifft2c_np, rss_np

    root, truths = raw_root
    for name, truth in truths.items():
        if truth.mask.min() < 1:  # undersampled: aliasing moves energy; the fully sampled files say it exactly
            continue
        fmt = FORMATS["ismrmrd"]
        reader = fmt.open(root / name, None)
        i, j, k = truth.marker_voxel
        slab = reader.read_slab(0, k)  # (nc, ny, nx)
        image = rss_np(ifft2c_np(torch.as_tensor(slab).numpy()), axis=0)  # (ny, nx)
        y, x = np.unravel_index(np.argmax(image), image.shape)
        assert (x, y) == (i, j), name
        reader.close()


def test_inference_names_a_bad_raw_file_and_writes_the_others(raw_root, trained, tmp_path):
    """A radial file and an irregular stack among good files: the radial one is refused by name, the irregular one
    gets DICOM only, the good one everything; the run ends with the partial-success status."""
    from helpers import edit_ismrmrd_readouts, edit_ismrmrd_xml

    from bundle.workflows.handlers import SkippedDataError

    root, _ = raw_root
    site = tmp_path / "site"
    (site / "P001").mkdir(parents=True)
    (site / "P001" / "cine_sax.h5").write_bytes((root / "P001" / "cine_sax.h5").read_bytes())
    write_ismrmrd_phantom(site / "P004" / "radial.h5", **RAW_TINY, seed=4)
    edit_ismrmrd_xml(site / "P004" / "radial.h5", lambda xml: xml.replace(">cartesian<", ">radial<"))
    write_ismrmrd_phantom(site / "P005" / "cine_sax.h5", **RAW_TINY, seed=5)

    def shift_second_slice(records):  # the second slice moves 5 mm in-plane: no single affine fits the stack
        second = records["head"]["idx"]["slice"] == 1
        records["head"]["position"][second, 0] += 5.0
        return records

    edit_ismrmrd_readouts(site / "P005" / "cine_sax.h5", shift_second_slice)
    out = tmp_path / "out"
    overrides = {
        "bundle_root": str(REPO),
        "dataset_dir": str(site),
        "model_path": str(trained / "models" / "model.pt"),
        "output_dir": str(out),
        "num_workers": 0,
        "num_coils": RAW_TINY["nc"],
        "dicom": True,
        **TINY_NET,
    }
    workflow = _workflow(["inference.yaml"], "inference", **overrides)
    workflow.initialize()
    workflow.run()
    error = _cause(SkippedDataError, workflow.finalize)
    assert "radial.h5" in str(error) and "radial" in str(error).lower()
    skipped = json.loads((out / "skipped_files.json").read_text())
    assert any("radial.h5" in json.dumps(entry) for entry in skipped["skipped"] if isinstance(skipped, dict)) or (
        "radial.h5" in json.dumps(skipped)
    )
    assert (out / "nifti" / "P001" / "cine_sax.nii.gz").is_file()
    assert not (out / "nifti" / "P005" / "cine_sax.nii.gz").exists()
    assert len(list((out / "dicom" / "P005" / "cine_sax").glob("IM_*.dcm"))) == RAW_TINY["nz"] * RAW_TINY["nt"]
    assert not list((out / "nifti").rglob("radial*")) and not list((out / "dicom").rglob("radial*"))


def test_self_supervised_training_on_undersampled_raw_files_alone(trained, tmp_path):
    """A site's prospectively undersampled scans, nothing fully sampled: SSDU fine-tunes a trained model (the
    README's "adapt a model to my scanner") and selects by Γ."""
    from bundle.data.undersampled import check_ssdu_masks, undersampled_datalist

    site = tmp_path / "site"
    for p in (1, 2, 3):
        write_ismrmrd_phantom(site / f"P00{p}" / "cine_sax.h5", **RAW_TINY, seed=10 + p, acceleration=2, acs=6)
    items = undersampled_datalist(site, subset="train", val_fraction=0.34, seed=0)
    assert {i["format"] for i in items} == {"ismrmrd"} and all(not i.get("mask_file") for i in items)
    check_ssdu_masks(items, "train")
    out = tmp_path / "out"
    overrides = {
        **train_overrides(site, out),
        **{"train_max_items": 4, "val_max_items": 2, "accumulation_steps": 1, "val_fraction": 0.34},
        "num_coils": RAW_TINY["nc"],
        "init_weights": str(trained / "models" / "model.pt"),
        "learning_rate": 1.0e-5,
    }
    workflow = _workflow(["train.yaml", "self_supervised.yaml"], "training", **overrides)
    run_workflow(workflow)
    assert (out / "models" / "model.pt").is_file()
    split = json.loads((out / "runs" / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ["P001", "P002", "P003"]
    metrics = workflow.parser.get_parsed_content("validate#evaluator").state.metrics
    assert np.isfinite(metrics["val_gamma"]) and metrics["val_gamma"] > 0
