"""Output side: submission files, safe paths, atomic writes, NIfTI export and PNG previews."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pytest
import scipy.io
from PIL import Image

from bundle.errors import (
    CMRDataError,
    MatFileError,
    MissingKeyError,
    NonFiniteDataError,
    ShapeError,
    UnsafePathError,
)
from bundle.io import (
    atomic_write,
    check_output_dir,
    default_frame_time,
    default_voxel_size,
    derive_output_path,
    ensure_not_input,
    load_nifti,
    load_submission,
    relative_input_path,
    save_nifti,
    save_preview_png,
    save_submission,
    submission_path,
)

# --------------------------------------------------------------------------------------------- submission


def test_submission_is_mat_v5_float32_in_given_order(tmp_path, rng):
    img = rng.random((7, 5, 2, 3))  # float64 in: must come back as single precision, same axis order
    path = save_submission(tmp_path / "cine_sax_kus_Uniform10.mat", img)
    assert scipy.io.matlab.matfile_version(path)[0] == 1  # 1 = MAT v5 (0 = v4, 2 = v7.3/HDF5)
    contents = scipy.io.loadmat(path)
    assert [k for k in contents if not k.startswith("__")] == ["img4ranking"]
    out = contents["img4ranking"]
    assert out.dtype == np.float32
    assert out.shape == (7, 5, 2, 3)
    np.testing.assert_array_equal(out, img.astype(np.float32))
    np.testing.assert_array_equal(load_submission(path), out)


def test_submission_keeps_blackblood_3d_and_singleton_dims(tmp_path, rng):
    bb = save_submission(tmp_path / "bb.mat", rng.random((6, 4, 2)).astype(np.float32))
    assert load_submission(bb).shape == (6, 4, 2)
    lvot = save_submission(tmp_path / "lvot.mat", rng.random((6, 4, 1, 3)).astype(np.float32))
    assert load_submission(lvot).shape == (6, 4, 1, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_submission_refuses_non_finite_and_writes_nothing(tmp_path, bad):
    img = np.ones((4, 4, 2, 3), np.float32)
    img[1, 2, 0, 1] = bad
    target = tmp_path / "x.mat"
    with pytest.raises(NonFiniteDataError, match="NaN/Inf"):
        save_submission(target, img)
    assert list(tmp_path.iterdir()) == []


def test_load_submission_errors(tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(MatFileError):
        load_submission(junk)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"img": np.ones((2, 2), np.float32)})
    with pytest.raises(MissingKeyError, match="img4ranking"):
        load_submission(other)


def test_submission_refuses_complex_and_wrong_rank(tmp_path):
    with pytest.raises(ShapeError, match="complex"):
        save_submission(tmp_path / "c.mat", np.ones((4, 4, 2, 3), np.complex64))
    with pytest.raises(ShapeError, match="MATLAB order"):
        save_submission(tmp_path / "r.mat", np.ones((4, 4, 2, 3, 2), np.float32))


# -------------------------------------------------------------------------------------------------- paths


def _kus(root: Path, modality: str, subset: str, task: int, patient: str, name: str) -> Path:
    return root / "MultiCoil" / modality / subset / f"UnderSample_Task{task}" / patient / name


def test_submission_path_task1_and_task2(tmp_path):
    root = tmp_path / "ChallengeData"
    out = tmp_path / "sub"
    kus1 = _kus(root, "Cine", "ValidationSet", 1, "P001", "cine_sax_kus_Uniform10.mat")
    got1 = submission_path(kus1, root, out)
    assert got1.relative_to(out).as_posix() == "Task1/Cine/ValidationSet/Task1/P001/cine_sax_kus_Uniform10.mat"
    kus2 = _kus(root, "Mapping", "TestSet", 2, "P042", "T1map_kus_ktRadial20.mat")
    got2 = submission_path(kus2, root / "MultiCoil", out)
    assert got2.relative_to(out).as_posix() == "Task2/Mapping/TestSet/Task2/P042/T1map_kus_ktRadial20.mat"
    # Relative datalist form (relative to the dataset root) gives the same answer.
    rel = kus1.relative_to(root)
    assert submission_path(rel, root, out) == got1


@pytest.mark.parametrize(
    ("modality", "subset", "task", "patient", "name", "message"),
    [
        ("Cine", "TrainingSet", 1, "P001", "cine_sax_kus_Uniform4.mat", "set folder"),
        ("Heart", "ValidationSet", 1, "P001", "cine_sax_kus_Uniform4.mat", "modality folder"),
        ("Cine", "ValidationSet", 3, "P001", "cine_sax_kus_Uniform4.mat", "UnderSample_Task1"),
        ("Cine", "ValidationSet", 1, "patient1", "cine_sax_kus_Uniform4.mat", "patient folder"),
        ("Cine", "ValidationSet", 1, "P001", "cine_sax.mat", "undersampled k-space file"),
    ],
)
def test_submission_path_rejects_bad_layout(tmp_path, modality, subset, task, patient, name, message):
    kus = _kus(tmp_path, modality, subset, task, patient, name)
    with pytest.raises(CMRDataError, match=message):
        submission_path(kus, tmp_path, tmp_path / "out")


def test_submission_path_rejects_outside_root(tmp_path):
    kus = _kus(tmp_path / "other", "Cine", "ValidationSet", 1, "P001", "cine_sax_kus_Uniform4.mat")
    with pytest.raises(UnsafePathError):
        submission_path(kus, tmp_path / "data", tmp_path / "out")


def test_derive_output_path_mirrors_input(tmp_path):
    root = tmp_path / "data"
    src = root / "Cine" / "TrainingSet" / "FullSample" / "P001" / "cine_sax.mat"
    out = derive_output_path(src, root, tmp_path / "out", new_suffix=".nii.gz", subdir="nifti")
    assert out == tmp_path / "out" / "nifti" / "Cine" / "TrainingSet" / "FullSample" / "P001" / "cine_sax.nii.gz"
    assert derive_output_path(src, root, tmp_path / "out") == tmp_path / "out" / src.relative_to(root)
    assert relative_input_path(src, root) == PurePosixPath("Cine/TrainingSet/FullSample/P001/cine_sax.mat")
    with pytest.raises(UnsafePathError):
        derive_output_path(src, root, tmp_path / "out", subdir="../escape")
    with pytest.raises(UnsafePathError):
        derive_output_path(src, root, tmp_path / "out", subdir=str(tmp_path / "abs"))


def test_relative_input_path_accepts_cwd_relative_glob_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "Cine").mkdir(parents=True)
    rel = relative_input_path("data/Cine/cine_sax.mat", "data")
    assert rel == PurePosixPath("Cine/cine_sax.mat")


def test_relative_input_path_rejects_escapes(tmp_path):
    root = tmp_path / "data"
    (root / "Cine").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "x.mat").write_bytes(b"")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        relative_input_path("Cine/../../secret/x.mat", root)
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        relative_input_path(outside / "x.mat", root)  # absolute name outside the root
    (root / "Cine" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symlink"):
        relative_input_path(root / "Cine" / "link" / "x.mat", root)


def test_check_output_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(UnsafePathError, match="is the dataset folder"):
        check_output_dir(data, data)
    with pytest.raises(UnsafePathError, match="inside the dataset folder"):
        check_output_dir(data / "recon", data)
    assert check_output_dir(tmp_path / "recon", data) == (tmp_path / "recon").resolve()
    assert check_output_dir(tmp_path, data) == tmp_path.resolve()  # dataset inside output is allowed
    # A symlink that looks like a sibling but points into the dataset is caught.
    (tmp_path / "sneaky").symlink_to(data / "sub", target_is_directory=True)
    with pytest.raises(UnsafePathError):
        check_output_dir(tmp_path / "sneaky", data)


def test_ensure_not_input(tmp_path):
    src = tmp_path / "a.mat"
    src.write_bytes(b"k")
    ensure_not_input(tmp_path / "b.mat", [src])
    with pytest.raises(UnsafePathError, match="refusing to overwrite"):
        ensure_not_input(src, [src])
    (tmp_path / "link.mat").symlink_to(src)
    with pytest.raises(UnsafePathError):
        ensure_not_input(tmp_path / "link.mat", [src])
    os.link(src, tmp_path / "hard.mat")
    with pytest.raises(UnsafePathError):
        ensure_not_input(tmp_path / "hard.mat", [src])


# ------------------------------------------------------------------------------------------- atomic write


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"new")

    assert atomic_write(target, write) == target
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.nii.gz"]
    assert not seen[0].exists()


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "out.mat"
    target.write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mat"]


# -------------------------------------------------------------------------------------------------- NIfTI


def test_nifti_round_trip_geometry_and_units(tmp_path, rng):
    vol = rng.random((12, 10, 3, 4)).astype(np.float64)
    path = save_nifti(tmp_path / "cine.nii.gz", vol, voxel_size=(1.4, 1.6, 8.0), frame_time=45.0)
    img = load_nifti(path)
    assert isinstance(img, nib.Nifti1Image)
    assert img.shape == (12, 10, 3, 4)
    assert img.get_data_dtype() == np.float32
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, vol.astype(np.float32))
    hdr = img.header
    np.testing.assert_allclose(hdr["pixdim"][1:5], (1.4, 1.6, 8.0, 45.0), rtol=1e-6)
    np.testing.assert_allclose(img.affine, np.diag([1.4, 1.6, 8.0, 1.0]), rtol=1e-6)
    assert hdr.get_xyzt_units() == ("mm", "msec")
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-6)


def test_nifti_3d_and_2d_and_refusals(tmp_path):
    bb = load_nifti(save_nifti(tmp_path / "bb.nii.gz", np.ones((6, 5, 2)), voxel_size=(1, 1, 8)))
    assert bb.shape == (6, 5, 2)
    one = load_nifti(save_nifti(tmp_path / "one.nii", np.ones((6, 5)), voxel_size=(1, 1, 8)))
    assert one.shape == (6, 5, 1)
    with pytest.raises(NonFiniteDataError):
        save_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 1, 1), np.nan), voxel_size=(1, 1, 1))
    with pytest.raises(ShapeError):
        save_nifti(tmp_path / "c.nii.gz", np.ones((4, 4, 1, 1), np.complex64), voxel_size=(1, 1, 1))
    with pytest.raises(ValueError):
        save_nifti(tmp_path / "z.nii.gz", np.ones((4, 4, 1, 1)), voxel_size=(1, 0, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb.nii.gz", "one.nii"]


def test_nifti_defaults_per_series():
    assert default_voxel_size("cine_sax_kus_Uniform10.mat") == (1.5, 1.5, 8.0)
    assert default_frame_time("cine_lax") == 50.0
    assert default_frame_time("T1map_kus_ktUniform8.mat") == 1.0  # mapping frames are not time points
    assert default_voxel_size("unknown_series.mat") == (1.5, 1.5, 8.0)


def test_nifti_spacing_read_by_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK not installed (optional dev check of the NIfTI)")
    path = save_nifti(tmp_path / "v.nii.gz", np.ones((8, 6, 3, 2)), voxel_size=(1.25, 1.75, 6.0), frame_time=40.0)
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (8, 6, 3, 2)
    np.testing.assert_allclose(image.GetSpacing()[:3], (1.25, 1.75, 6.0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ preview


def test_preview_png_4d_layout(tmp_path, rng):
    vol = rng.random((20, 16, 5, 4)).astype(np.float32)
    path = save_preview_png(tmp_path / "p.png", vol, max_tiles=9, max_frames=3, min_tile=40)
    with Image.open(path) as im:
        assert im.mode == "L"
        # 3 frames as columns, 3 of the 5 slices as rows; each (nx, ny) slice is drawn as an (ny, nx) picture,
        # enlarged 2x (long side 20 -> 40), with 2-pixel gaps.
        assert im.size == (3 * 40 + 2 * 2, 3 * 32 + 2 * 2)
        assert np.asarray(im).max() == 255


def test_preview_png_3d_volume_and_flat(tmp_path):
    path = save_preview_png(tmp_path / "s.png", np.zeros((8, 6, 5)), min_tile=1)
    with Image.open(path) as im:
        assert im.mode == "L"
        assert im.size == (3 * 8 + 2 * 2, 2 * 6 + 2)  # 5 slices (6 x 8 pictures) in a 3-column grid
        assert np.asarray(im).max() == 0


def test_preview_default_tiles_are_at_least_128_pixels(tmp_path, rng):
    with Image.open(save_preview_png(tmp_path / "d.png", rng.random((24, 10, 1, 1)))) as im:
        assert im.size == (6 * 24, 6 * 10)


def test_display_matches_the_viewer_convention_of_the_nifti_affine(tmp_path):
    """An asymmetric slice: the picture must put +x (R) on the left and +y (A) at the top, like ITK-SNAP/Slicer."""
    from bundle.io.orientation import display_box, to_display

    nx, ny = 12, 7
    image = np.zeros((nx, ny), np.float32)
    image[0, 0] = 1.0  # the voxel at the world origin: most R- and A-negative, i.e. patient left, posterior
    image[nx - 1, :] = 0.5  # the +x (Right) edge
    affine = load_nifti(save_nifti(tmp_path / "o.nii", image[:, :, None], voxel_size=(1, 1, 1))).affine
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    shown = to_display(image)
    assert shown.shape == (ny, nx)  # a wide picture for a tall array: nx runs across the screen
    # Screen column c and row r map back to world coordinates through the affine: R decreases to the right
    # (radiological), A decreases downwards.
    index = lambda r, c: (nx - 1 - c, ny - 1 - r)  # noqa: E731
    world = lambda r, c: affine[:3, :3] @ np.array([*index(r, c), 0]) + affine[:3, 3]  # noqa: E731
    assert world(0, 1)[0] < world(0, 0)[0] and world(1, 0)[1] < world(0, 0)[1]
    assert shown[ny - 1, nx - 1] == 1.0  # origin voxel at the bottom right
    assert np.all(shown[:, 0] == 0.5)  # the +x (R) edge is the left column
    assert display_box(((2, 5), (1, 3)), (nx, ny)) == (ny - 3, ny - 1, nx - 5, nx - 2)
    assert shown[ny - 3 : ny - 1, nx - 5 : nx - 2].shape == (2, 3)


# ------------------------------------------------------------------- NIfTI and sidecar in patient coordinates


@pytest.mark.parametrize("case", [dict(), dict(left_handed=True), dict(nz=1), dict(matrix=(9, 7))])
def test_nifti_voxels_sit_at_the_geometry_patient_coordinates(tmp_path, rng, case):
    import SimpleITK as sitk
    from helpers import oblique_geometry

    from bundle.geometry import LPS_TO_RAS

    g = oblique_geometry(**case)
    nx, ny = g.matrix
    vol = rng.random((nx, ny, g.nz, 2)).astype(np.float32)
    marker = (1, ny - 2, g.nz - 1)
    vol[(*marker, 1)] = 9.0
    path = save_nifti(tmp_path / "g.nii.gz", vol, voxel_size=(1.5, 1.5, 8.0), frame_time=40.0, geometry=g)
    img = load_nifti(path)
    tolerance = 0.1 * min(g.pixel_spacing)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert float(img.header["pixdim"][0]) == (-1.0 if case.get("left_handed") else 1.0)  # qfac
    dz = g.slice_spacing or g.slice_thickness
    np.testing.assert_allclose(img.header.get_zooms(), (*g.pixel_spacing, dz, 40.0), rtol=1e-5)
    reference = sitk.ReadImage(str(path))
    for affine in (img.get_sform(), img.get_qform()):  # both say the same, left-handed triples included
        for i, j, k in [(0, 0, 0), (nx - 1, 0, g.nz - 1), (0, ny - 1, 0), (nx - 1, ny - 1, g.nz - 1), marker]:
            lps = (LPS_TO_RAS @ affine @ [i, j, k, 1])[:3]
            np.testing.assert_allclose(lps, g.voxel_lps(i, j, k), atol=tolerance)
    for i, j, k in [(0, 0, 0), (nx - 1, ny - 1, g.nz - 1), marker]:  # SimpleITK reports LPS
        point = reference.TransformIndexToPhysicalPoint((i, j, k, 0))[:3]
        np.testing.assert_allclose(point, g.voxel_lps(i, j, k), atol=tolerance)
    data = np.asarray(img.dataobj)
    assert np.unravel_index(np.argmax(data), data.shape) == (*marker, 1)


def test_nifti_refuses_an_irregular_stack_and_a_volume_that_does_not_fit(tmp_path):
    from helpers import oblique_geometry

    from bundle.errors import CMRDataError
    from bundle.geometry import ScanGeometry

    g = oblique_geometry(nz=3)
    uneven = ScanGeometry(g.matrix, g.fov_mm, (g.slices[0], g.slices[2]) + (g.slices[2],))
    with pytest.raises(CMRDataError, match="not parallel and equally spaced"):
        save_nifti(tmp_path / "u.nii.gz", np.ones((10, 8, 3)), voxel_size=(1, 1, 1), geometry=uneven)
    with pytest.raises(ShapeError, match="does not fit its geometry"):
        save_nifti(tmp_path / "s.nii.gz", np.ones((8, 10, 3)), voxel_size=(1, 1, 1), geometry=g)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_names_the_scanner_and_the_geometry(tmp_path):
    import json

    from helpers import oblique_geometry

    from bundle.geometry import ScanGeometry
    from bundle.io.sidecar import SCANNER_GEOMETRY_NOTE, validate_sidecar, write_sidecar

    g = oblique_geometry(trigger_times_ms=[0.0, 40.0])
    info = {"vendor": "SIEMENS", "model": "Avanto", "field_strength_T": 1.494, "TR_ms": 38.4, "TE_ms": 1.32,
            "flip_angle_deg": 55, "patient_position": "FFS", "raw_file": "meas.h5", "protocol_name": ""}  # fmt: skip
    common = dict(
        source="P001/meas.h5", modality="Cine", series="cine_sax", shape=[10, 8, 3, 2], pattern=None,
        acceleration=4, mask_file=None, voxel_size=(2.5, 2.0, 7.5), voxel_size_source="geometry",
        frame_time=40.0, frame_time_source="trigger", fourth_axis="time",
        model={"Name": "m", "Checkpoint": None, "CheckpointSHA256": None, "NetworkArguments": None,
               "NetworkArgumentsSource": None}, description="m recon, x4",
    )  # fmt: skip
    data = json.loads(write_sidecar(tmp_path / "a.nii.gz", **common, geometry=g, scan_info=info).read_text())
    validate_sidecar(data)
    assert data["Manufacturer"] == "SIEMENS" and data["MagneticFieldStrength"] == 1.494
    assert data["RepetitionTime"] == pytest.approx(0.0384) and data["EchoTime"] == pytest.approx(0.00132)
    assert data["FlipAngle"] == 55.0 and data["RawFile"] == "meas.h5" and "ProtocolName" not in data
    assert data["PatientPosition"] == "HFS"  # the geometry's
    assert data["Geometry"] == "scanner" and data["GeometryNote"] == SCANNER_GEOMETRY_NOTE
    assert ScanGeometry.from_dict(data["ScanGeometry"]) == g
    plain = json.loads(write_sidecar(tmp_path / "b.nii.gz", **common, scan_info=info).read_text())
    assert not {"Manufacturer", "Geometry", "ScanGeometry", "RawFile"} & set(plain)  # CMRxRecon: as before


def test_extra_outputs_take_voxel_size_and_frame_time_from_the_geometry(tmp_path, rng):
    import json

    import pydicom
    from helpers import oblique_geometry

    from bundle.workflows.exports import ExtraOutputs

    g = oblique_geometry(trigger_times_ms=[5.0, 45.0, 85.0, 125.0])
    file = tmp_path / "data" / "P003" / "cine.h5"
    extras = ExtraOutputs(tmp_path / "data", tmp_path / "out", write_dicom=True)
    info = extras.describe(str(file), "cine_sax", {"acceleration": 4}, (10, 8, 3, 4), (1.5, 1.5, 8.0), None, 50.0,
                           None, geometry=g, scan_info={"vendor": "SIEMENS", "TR_ms": 40.0})  # fmt: skip
    assert info["voxel"] == pytest.approx([2.5, 2.0, 7.5]) and info["frame_time"] == 40.0
    assert info["patient"] == "P003" and info["scan_info"]["raw_file"] == "cine.h5"
    nifti = save_nifti(tmp_path / "out" / "cine.nii.gz", rng.random((10, 8, 3, 4)), info["voxel"], geometry=g)
    sidecar = json.loads(extras.write_sidecar(nifti, info).read_text())
    assert sidecar["RawFile"] == "cine.h5" and sidecar["Manufacturer"] == "SIEMENS"
    paths = extras.write_dicom(str(file), rng.random((10, 8, 3, 4)), info)
    first = pydicom.dcmread(paths[0])
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], g.first_voxel_lps(0), atol=1e-6)
    assert float(first.RepetitionTime) == 40.0 and float(first.TriggerTime) == 5.0
    plain = extras.describe(str(file), "cine_sax", {}, (10, 8, 3, 4), (1.5, 1.5, 8.0), None, 50.0, None)
    assert plain["voxel"] == [1.5, 1.5, 8.0] and plain["geometry"] is None and plain["scan_info"] is None


def test_discard_partial_removes_only_the_temporary_files_of_its_own_output(tmp_path):
    from bundle.files import discard_partial, partial_files

    target = tmp_path / "sub[1]" / "cine.nii.gz"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"done"))
    mine = target.with_name(".cine.nii.gz.k2j3h4.tmp.nii.gz")  # as atomic_write names it; left by a kill
    other = target.with_name(".t1map.nii.gz.a1b2c3.tmp.nii.gz")
    mine.write_bytes(b"half"), other.write_bytes(b"half")
    assert partial_files(target) == [mine]
    assert discard_partial(target) == [mine]
    assert not mine.exists() and other.exists() and target.read_bytes() == b"done"
    assert partial_files(tmp_path / "missing" / "x.png") == []
