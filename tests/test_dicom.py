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
