"""DICOM export: read back with pydicom and SimpleITK, compared with the NIfTI written from the same volume."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_dicom_series

from bundle.io.dicom import DicomSeriesWriter, as_flag, rescale
from bundle.io.nifti import save_nifti


def _cine(rng, shape=(20, 14, 3, 4)) -> np.ndarray:
    vol = rng.random(shape).astype(np.float32)
    vol[2:6, 9:12] += 3.0  # an asymmetric bright block: any flip or transpose moves it
    return vol


def test_cine_series_matches_the_nifti(tmp_path, rng):
    vol = _cine(rng)
    voxel = (1.25, 1.75, 6.0)
    nifti = save_nifti(tmp_path / "cine.nii.gz", vol, voxel_size=voxel, frame_time=40.0)
    writer = DicomSeriesWriter()
    paths = writer.write(
        tmp_path / "dcm", vol, patient="P007", series_description="HyperCMR PromptMR recon, Uniform x8",
        voxel_size=voxel, frame_time=40.0,
    )  # fmt: skip
    assert len(paths) == 3 * 4
    datasets = check_dicom_series(tmp_path / "dcm", nifti, frame_time=40.0)
    assert {d.SeriesDescription for d in datasets} == {"HyperCMR PromptMR recon, Uniform x8"}
    assert {d.NumberOfTemporalPositions for d in datasets} == {4}
    # New UIDs per run: a second writer (a second run) gives new study, series and instance UIDs.
    again = DicomSeriesWriter().write(
        tmp_path / "dcm2", vol, patient="P007", series_description="x", voxel_size=voxel, frame_time=40.0
    )
    import pydicom

    first, second = pydicom.dcmread(paths[0]), pydicom.dcmread(again[0])
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert getattr(first, key) != getattr(second, key)
    # Nothing identifying beyond Pxxx.
    for key in ("PatientBirthDate", "PatientSex", "StudyDate", "InstitutionName", "OtherPatientIDs"):
        assert not str(first.get(key, "") or "")


def test_mapping_series_without_trigger_time_but_with_inversion_times(tmp_path, rng):
    import pydicom

    vol = _cine(rng, (16, 12, 2, 3))
    nifti = save_nifti(tmp_path / "t1.nii.gz", vol, voxel_size=(1.5, 1.5, 5.0), time_unit="unknown")
    DicomSeriesWriter().write(
        tmp_path / "dcm", vol, patient="P001", series_description="t1", voxel_size=(1.5, 1.5, 5.0), frame_time=None,
        contrast_times={"InversionTime": [0.1, 0.18, 0.26]},
    )  # fmt: skip
    datasets = check_dicom_series(tmp_path / "dcm", nifti)
    assert all("TriggerTime" not in d for d in datasets)
    by_frame = {d.TemporalPositionIdentifier: float(d.InversionTime) for d in datasets}
    assert by_frame == pytest.approx({1: 100.0, 2: 180.0, 3: 260.0})
    assert pydicom.dcmread(next((tmp_path / "dcm").glob("*.dcm"))).Modality == "MR"


def test_blackblood_3d_series(tmp_path, rng):
    vol = _cine(rng, (16, 12, 3))
    nifti = save_nifti(tmp_path / "bb.nii.gz", vol, voxel_size=(1.5, 1.5, 8.0))
    DicomSeriesWriter().write(tmp_path / "d", vol, patient="P002", series_description="bb", voxel_size=(1.5, 1.5, 8.0),
                              frame_time=None)  # fmt: skip
    assert len(check_dicom_series(tmp_path / "d", nifti)) == 3


def test_rescale_keeps_values_within_half_a_step(rng):
    vol = rng.normal(size=(5, 4, 3)).astype(np.float32) * 7
    stored, slope, intercept = rescale(vol)
    assert stored.dtype == np.uint16 and stored.max() == 65535 and intercept == pytest.approx(vol.min())
    assert np.abs(stored * slope + intercept - vol).max() <= slope / 2 + 1e-6
    flat, slope, intercept = rescale(np.zeros((2, 2, 1), np.float32))
    assert flat.max() == 0 and slope == 1.0


@pytest.mark.parametrize(
    "value, expected", [(True, True), ("true", True), ("True", True), ("1", True), (False, False), ("false", False)]
)
def test_as_flag(value, expected):
    assert as_flag(value) is expected


def test_as_flag_refuses_other_words():
    with pytest.raises(ValueError, match="expected true or false"):
        as_flag("maybe")


# ------------------------------------------------------------------------------- scanner geometry (raw data)

SCAN_INFO = {
    "vendor": "SIEMENS",
    "model": "Avanto",
    "field_strength_T": 1.494,
    "TR_ms": 38.4,
    "TE_ms": 1.32,
    "flip_angle_deg": 55.0,
    "patient_position": "FFS",
    "protocol_name": "CINE_segmented_SAX_b3",
    "series_description": "CINE_segmented_SAX_b3",
    "raw_file": "meas_MID00123_cine.h5",
}


def _marked(geometry, nt: int, rng) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A volume of the geometry's shape with one bright, distinct voxel per frame, off every symmetry axis."""
    nx, ny = geometry.matrix
    vol = rng.random((nx, ny, geometry.nz, nt)).astype(np.float32) * 0.1
    markers = [(1 + t % (nx - 2), ny - 2 - t % (ny - 3), (t + 1) % geometry.nz, t) for t in range(nt)]
    for i, j, k, t in markers:
        vol[i, j, k, t] = 10.0 + t
    return vol, markers


@pytest.mark.parametrize(
    "case", [dict(), dict(left_handed=True), dict(nz=1), dict(matrix=(9, 7), fov_mm=(22.5, 17.5, 5.0))]
)
def test_every_dicom_pixel_sits_at_the_geometry_patient_coordinates(tmp_path, rng, case):
    import pydicom
    import SimpleITK as sitk
    from helpers import dicom_pixel_lps, oblique_geometry

    nt = 3
    geometry = oblique_geometry(trigger_times_ms=[0.0, 41.0, 83.5], **case)
    nx, ny = geometry.matrix
    tolerance = 0.1 * min(geometry.pixel_spacing)
    vol, markers = _marked(geometry, nt, rng)
    paths = DicomSeriesWriter().write(
        tmp_path, vol, patient="P001", series_description="HyperCMR PromptMR recon, Uniform x4",
        voxel_size=(1.0, 1.0, 1.0), frame_time=50.0, geometry=geometry, scan_info=SCAN_INFO,
    )  # fmt: skip
    datasets = [pydicom.dcmread(p) for p in paths]
    for d in datasets:
        z, t = (d.InstanceNumber - 1) // nt, (d.InstanceNumber - 1) % nt
        assert (d.Rows, d.Columns) == (ny, nx)
        values = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_allclose(values, vol[:, :, z, t].T, atol=float(d.RescaleSlope))  # no flips
        # Every pixel: the image plane is affine in (row, column), so its corners and one inner pixel place all.
        for r, c in [(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1), (ny // 3, nx // 2)]:
            np.testing.assert_allclose(dicom_pixel_lps(d, r, c), geometry.voxel_lps(c, r, z), atol=tolerance)
        assert float(d.TriggerTime) == pytest.approx(geometry.trigger_times_ms[t])
    for i, j, k, t in markers:
        d = next(d for d in datasets if d.InstanceNumber == k * nt + t + 1)
        r, c = np.unravel_index(np.argmax(d.pixel_array), d.pixel_array.shape)
        np.testing.assert_allclose(dicom_pixel_lps(d, r, c), geometry.voxel_lps(i, j, k), atol=tolerance)
    assert len({d.FrameOfReferenceUID for d in datasets}) == 1
    # SimpleITK (LPS, like DICOM): one frame's slices as a volume, in the series' file order.
    reader = sitk.ImageSeriesReader()
    for i, j, k, t in markers:
        reader.SetFileNames(
            [str(p) for p, d in zip(paths, datasets, strict=True) if d.TemporalPositionIdentifier == t + 1]
        )
        image = reader.Execute()
        point = tuple(geometry.voxel_lps(i, j, k))
        continuous = np.array(image.TransformPhysicalPointToContinuousIndex(point))
        index = np.round(continuous).astype(int)
        assert np.abs(continuous - index).max() < 0.1, continuous
        assert float(sitk.GetArrayFromImage(image)[index[2], index[1], index[0]]) > 5.0  # the marker is there


def test_scan_attributes_of_a_raw_file_series(tmp_path, rng):
    import pydicom
    from helpers import oblique_geometry

    geometry = oblique_geometry(nz=2, trigger_times_ms=[12.0, 52.0])
    vol, _ = _marked(geometry, 2, rng)
    uid = "1.2.826.0.1.3680043.8.498.12345"
    info = {**SCAN_INFO, "frame_of_reference_uid": uid, "TI_ms": [100.0, 180.0]}
    paths = DicomSeriesWriter().write(
        tmp_path, vol, patient="P004", series_description="HyperCMR PromptMR recon, Uniform x4",
        voxel_size=(1.5, 1.5, 8.0), frame_time=None, geometry=geometry, scan_info=info,
    )  # fmt: skip
    datasets = [pydicom.dcmread(p) for p in paths]
    d = datasets[0]
    assert d.SeriesDescription == "CINE_segmented_SAX_b3 (AI: HyperCMR PromptMR recon, Uniform x4)"
    assert len(d.SeriesDescription) <= 64
    assert d.Manufacturer == "HyperCMR MONAI bundle"  # the producer of the derived images, not the scanner
    assert (float(d.RepetitionTime), float(d.EchoTime), float(d.FlipAngle)) == (38.4, 1.32, 55.0)
    assert float(d.MagneticFieldStrength) == pytest.approx(1.494)
    assert d.PatientPosition == "HFS"  # the geometry's own wins over scan_info
    assert d.ProtocolName == "CINE_segmented_SAX_b3"
    assert float(d.SliceThickness) == 6.0 and float(d.SpacingBetweenSlices) == pytest.approx(7.5)
    assert {x.FrameOfReferenceUID for x in datasets} == {uid}
    assert [float(x.TriggerTime) for x in datasets] == [12.0, 52.0, 12.0, 52.0]  # from the geometry, not frame_time
    assert [float(x.InversionTime) for x in datasets] == [100.0, 180.0, 100.0, 180.0]
    locations = [float(x.SliceLocation) for x in datasets[::2]]
    assert locations == pytest.approx([s.location for s in geometry.slices]) and locations[1] > locations[0]
    # A long scan description is shortened first, so the AI statement always fits.
    from bundle.io.dicom import series_description

    long = series_description("HyperCMR PromptMR recon, Uniform x4", "X" * 80)
    assert len(long) == 64 and long.endswith("(AI: HyperCMR PromptMR recon, Uniform x4)")


def test_irregular_stack_is_placed_slice_by_slice_and_a_wrong_shape_is_refused(tmp_path, rng):
    import pydicom
    from helpers import dicom_pixel_lps, oblique_geometry

    from bundle.errors import ShapeError
    from bundle.geometry import ScanGeometry, SliceGeometry

    g = oblique_geometry(nz=2)
    s = g.slices[1]
    view = SliceGeometry(s.position, s.phase_dir, s.read_dir, tuple(-np.asarray(s.slice_dir)))  # another view
    irregular = ScanGeometry(g.matrix, g.fov_mm, (g.slices[0], view), patient_position="HFS")
    vol, _ = _marked(irregular, 1, rng)
    paths = DicomSeriesWriter().write(
        tmp_path / "a", vol[..., 0], patient="P001", series_description="x", voxel_size=(1, 1, 1), frame_time=None,
        geometry=irregular,
    )  # fmt: skip
    for z, path in enumerate(paths):
        d = pydicom.dcmread(path)
        np.testing.assert_allclose(dicom_pixel_lps(d, 3, 2), irregular.voxel_lps(2, 3, z), atol=1e-3)
        assert "SpacingBetweenSlices" not in d and "PatientPosition" in d
    with pytest.raises(ShapeError, match="does not fit its geometry"):
        DicomSeriesWriter().write(
            tmp_path / "b", vol[1:], patient="P001", series_description="x", voxel_size=(1, 1, 1), frame_time=None,
            geometry=irregular,
        )  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_without_geometry_the_nominal_plane_is_unchanged(tmp_path, rng):
    import pydicom

    vol = _cine(rng, (6, 4, 2, 1))
    paths = DicomSeriesWriter().write(
        tmp_path, vol, patient="P001", series_description="d", voxel_size=(1.5, 2.0, 8.0), frame_time=50.0,
        scan_info=SCAN_INFO,  # ignored without geometry
    )  # fmt: skip
    d = pydicom.dcmread(paths[1])
    assert [float(v) for v in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in d.ImagePositionPatient] == [-7.5, -6.0, 8.0]
    assert d.SeriesDescription == "d" and "PatientPosition" not in d and d.EchoTime is None


@pytest.mark.parametrize("left_handed", [False, True])
def test_the_nifti_laid_over_the_dicom_series_coincides(tmp_path, rng, left_handed):
    """What docs/outputs.md tells users to do with the scanner's images: resample the NIfTI onto a DICOM grid."""
    import pydicom
    import SimpleITK as sitk
    from helpers import oblique_geometry

    geometry = oblique_geometry(left_handed=left_handed)
    vol, _ = _marked(geometry, 2, rng)
    paths = DicomSeriesWriter().write(
        tmp_path / "dcm", vol[..., 1], patient="P001", series_description="x", voxel_size=(1, 1, 1),
        frame_time=None, geometry=geometry,
    )  # fmt: skip
    nifti = save_nifti(tmp_path / "v.nii.gz", vol, voxel_size=(2.5, 2.0, 7.5), frame_time=40.0, geometry=geometry)
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(tmp_path / "dcm"))  # GDCM's own slice order, as a viewer sorts
    assert sorted(files) == sorted(str(p) for p in paths)
    reader.SetFileNames(files)
    series = reader.Execute()
    laid = sitk.Resample(sitk.ReadImage(str(nifti))[:, :, :, 1], series, sitk.Transform(), sitk.sitkNearestNeighbor)
    slope = float(pydicom.dcmread(paths[0]).RescaleSlope)
    assert np.abs(sitk.GetArrayFromImage(laid) - sitk.GetArrayFromImage(series)).max() <= slope
