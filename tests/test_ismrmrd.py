"""The ISMRMRD reader (bundle.data.ismrmrd) against files written from the phantom (bundle.data.demo_ismrmrd)."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle

import h5py
import ismrmrd
import numpy as np
import pytest
from helpers import RAW_TINY, REPO, edit_ismrmrd_readouts, edit_ismrmrd_xml

from bundle.data.demo_ismrmrd import T1_INVERSION_TIMES_MS, write_ismrmrd_phantom
from bundle.data.ismrmrd import (
    RawSliceReader,
    dataset_groups,
    is_ismrmrd_file,
    scan_raw_file,
    series_name,
)
from bundle.errors import CMRDataError, RawDataError
from bundle.mri import ifft2c_np, rss_np


def _write(tmp_path, name="scan.h5", **options):
    path = tmp_path / name
    kw = {**RAW_TINY, "seed": 3, "noise": 0.0, "noise_readouts": 0, **options}
    return path, write_ismrmrd_phantom(path, **kw)


def _volume(reader: RawSliceReader) -> np.ndarray:
    """(nt, nz, nc, ny, nx) of the whole series, slice by slice."""
    return np.stack([reader.read_frames(z, range(reader.nt)) for z in range(reader.nz)], axis=1)


def _check_kspace(path, truth, **scan):
    series = scan_raw_file(path, **scan)[0]
    with RawSliceReader(series, prewhiten=False) as reader:
        got = _volume(reader)
    assert got.shape == truth.kspace.shape == series.shape
    np.testing.assert_allclose(got, truth.kspace, atol=1e-5 * np.abs(truth.kspace).max())
    return series


# --------------------------------------------------------------------------------------------------- k-space


def test_reader_gives_the_phantom_kspace_back_after_readout_oversampling_removal(tmp_path):
    path, truth = _write(tmp_path, readout_os=2)
    series = _check_kspace(path, truth)
    assert series.shape == (4, 2, 3, 24, 32) and series.encoded == (24, 64)
    assert series.entry is None and series.key == "dataset/data"
    assert series.fully_sampled and series.acceleration == 1 and series.acs_width == 24
    assert series.mask.shape == (4, 24, 32) and series.mask.dtype == np.float32 and series.mask.all()
    assert not series.padded.any()
    assert series.info["readout_oversampling"] == 2.0 and series.info["vendor"] == "SIEMENS"
    assert series.info["raw_file"] == "scan.h5" and series.info["patient_id"] == "PHANTOM001"
    # The fully sampled k-space itself (not only what is acquired) is the phantom's.
    np.testing.assert_allclose(truth.kspace, truth.full_kspace, atol=1e-6)


def test_read_frames_with_repeats_read_slab_read_rows(tmp_path):
    path, truth = _write(tmp_path)
    reader = RawSliceReader(scan_raw_file(path)[0], prewhiten=False)
    frames = reader.read_frames(1, [3, 3, 0, 1, 1])
    assert frames.shape == (5, 3, 24, 32) and frames.dtype == np.complex64
    np.testing.assert_allclose(frames, truth.kspace[[3, 3, 0, 1, 1], 1], atol=1e-5)
    np.testing.assert_allclose(reader.read_slab(2, 0), truth.kspace[2, 0], atol=1e-5)
    np.testing.assert_allclose(reader.read_rows(2, 0, [0, 12, 23]), truth.kspace[2, 0][:, [0, 12, 23]], atol=1e-5)
    assert (reader.nt, reader.nz, reader.nc, reader.ny, reader.nx) == (4, 2, 3, 24, 32) and reader.is_complex
    with pytest.raises(RawDataError, match=r"scan\.h5.*\(t=4, z=0\) is outside"):
        reader.read_slab(4, 0)
    with pytest.raises(RawDataError, match="outside ny=24"):
        reader.read_rows(0, 0, [24])


def test_memory_mapped_samples_equal_h5py_reads(tmp_path):
    path, _ = _write(tmp_path, noise=0.01, noise_readouts=4, asymmetric_echo=0.8, reverse_every_other=True)
    series = scan_raw_file(path)[0]
    mapped, plain = RawSliceReader(series), RawSliceReader(series, memory_map=False)
    np.testing.assert_array_equal(mapped.read_frames(1, [0, 2, 3]), plain.read_frames(1, [0, 2, 3]))
    assert mapped._heaps["dataset"] is not None and plain._heaps["dataset"] is None
    np.testing.assert_array_equal(mapped.whitening, plain.whitening)


def test_same_seed_same_file_and_a_changed_file_is_noticed(tmp_path):
    a, _ = _write(tmp_path, "a.h5", noise=0.01, noise_readouts=4, shuffle=True)
    b, _ = _write(tmp_path, "b.h5", noise=0.01, noise_readouts=4, shuffle=True)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert fa["dataset/xml"][0] == fb["dataset/xml"][0]
        ra, rb = fa["dataset/data"][:], fb["dataset/data"][:]
    assert ra["head"].tobytes() == rb["head"].tobytes()
    assert all(np.array_equal(x, y) for x, y in zip(ra["data"], rb["data"], strict=True))
    series = scan_raw_file(a)[0]
    _write(tmp_path, "a.h5", nt=3)  # rewritten with fewer frames after the scan
    os.utime(a, ns=(0, 123))
    with pytest.raises(RawDataError, match="changed on disk"):
        RawSliceReader(series).read_slab(0, 0)


def test_reader_pickles_cheaply_and_reopens(tmp_path):
    path, truth = _write(tmp_path)
    reader = RawSliceReader(scan_raw_file(path)[0], prewhiten=False)
    reader.read_slab(0, 0)
    blob = pickle.dumps(reader)
    assert len(blob) < 1000  # file, group, entry and options only: no header table, no handle
    clone = pickle.loads(blob)
    np.testing.assert_allclose(clone.read_slab(1, 1), truth.kspace[1, 1], atol=1e-5)
    reader.close()
    np.testing.assert_allclose(reader.read_slab(1, 1), truth.kspace[1, 1], atol=1e-5)  # reopens


def test_readouts_out_of_order_reversed_with_discards_averages_and_navigators(tmp_path):
    path, truth = _write(
        tmp_path, shuffle=True, reverse_every_other=True, discard=(3, 2), averages=2, navigators=2, noise=0.01
    )
    series = scan_raw_file(path)[0]
    with RawSliceReader(series, prewhiten=False) as reader:
        got = _volume(reader)
    # Two averages of independent noise: the mean is closer to the noise-free truth than one readout would be.
    err = np.std(got - truth.kspace)  # complex: sqrt(mean |noise|^2)
    sigma = np.sqrt(np.real(np.trace(truth.noise_covariance)) / RAW_TINY["nc"])
    assert 0.85 * sigma / np.sqrt(2) < err < 1.15 * sigma / np.sqrt(2)
    # Noise-free, the same file layout gives the truth exactly.
    path2, truth2 = _write(tmp_path, "clean.h5", shuffle=True, reverse_every_other=True, discard=(3, 2), averages=2)
    _check_kspace(path2, truth2)


def test_asymmetric_echo_is_zero_filled_and_marked_padded(tmp_path):
    path, truth = _write(tmp_path, asymmetric_echo=0.75)
    series = _check_kspace(path, truth)
    assert series.info["asymmetric_echo"] is True
    np.testing.assert_array_equal(series.padded, truth.padded)
    assert series.padded[:, :8].all() and not series.padded[:, 8:].any()  # 16 of 64 encoded samples = 8 of 32
    assert series.fully_sampled


@pytest.mark.parametrize("vendor", ["SIEMENS", "GE"])
def test_partial_fourier_centre_line(tmp_path, vendor):
    # Siemens: the header centre is siemens_to_ismrmrd's floor(lines/2); the true one is in idx.user[5].
    path, truth = _write(tmp_path, partial_fourier=0.75, vendor=vendor)
    series = _check_kspace(path, truth)
    assert series.info["partial_fourier"] == 0.75
    np.testing.assert_array_equal(series.padded, truth.padded)
    assert series.padded[:6].all() and not series.padded[6:].any()
    assert series.fully_sampled and series.acceleration == 1
    np.testing.assert_array_equal(series.mask[:, :, 0], truth.mask)


@pytest.mark.parametrize("acceleration", [1, 4])
def test_phase_oversampling_cropped_when_fully_sampled_kept_when_undersampled(tmp_path, acceleration):
    path, truth = _write(tmp_path, phase_os_lines=8, acceleration=acceleration, acs=8, oblique=True)
    series = _check_kspace(path, truth)
    assert series.encoded == (32, 64) and series.info["phase_oversampling"] == pytest.approx(32 / 24)
    ny = 24 if acceleration == 1 else 32  # a crop would mix acquired and missing lines: the encoded FOV is kept
    assert series.shape[3] == ny and series.geometry.matrix == (32, ny)
    assert series.geometry.fov_mm[1] == pytest.approx(2.0 * ny)
    np.testing.assert_array_equal(series.mask[:, :, 0], truth.mask)
    i0, j0, k0 = truth.marker_voxel
    assert np.linalg.norm(series.geometry.voxel_lps(i0, j0, k0) - truth.marker_lps) < 1e-3
    if acceleration == 1:
        image = rss_np(ifft2c_np(RawSliceReader(series).read_slab(0, k0)), axis=0)
        assert np.unravel_index(np.argmax(image), image.shape) == (j0, i0)


def test_embedded_acs_mask_width_and_acceleration(tmp_path):
    path, truth = _write(tmp_path, acceleration=4, acs=8, nt=4)
    series = _check_kspace(path, truth)
    np.testing.assert_array_equal(series.mask, np.broadcast_to(truth.mask[:, :, None], series.mask.shape))
    assert series.acs_width == truth.acs_width == 8
    # 6 lines of R=4 plus 8 ACS lines, 2 of them shared: 12 of 24 lines per frame.
    assert series.acceleration == 2 and not series.fully_sampled
    assert series.info["calibration"] == "embedded"
    with RawSliceReader(series) as reader:
        assert reader.calibration(0) is None


def test_separate_acs_goes_to_calibration_only(tmp_path):
    path, truth = _write(tmp_path, acceleration=4, acs=8, separate_acs=True)
    series = _check_kspace(path, truth)  # the data holds no calibration readout
    assert series.info["calibration"] == "separate" and series.acceleration == 4
    with RawSliceReader(series, prewhiten=False) as reader:
        cal = reader.calibration(1)
    rows = np.flatnonzero(np.abs(cal).sum(axis=(0, 2)))
    np.testing.assert_array_equal(rows, np.arange(8, 16))
    np.testing.assert_allclose(cal[:, 8:16], truth.full_kspace[0, 1][:, 8:16], atol=1e-5)


def test_prewhitening_with_correlated_noise_gives_unit_white_noise(tmp_path, caplog):
    path, truth = _write(tmp_path, noise=0.02, noise_readouts=128, correlated_noise=True, noise_dwell_ratio=2.0,
                         nc=4)  # fmt: skip
    series = scan_raw_file(path)[0]
    assert series.info["noise_readouts"] == 128 and series.info["prewhitened"]
    with caplog.at_level(logging.INFO, logger="bundle.data.ismrmrd"):
        white = RawSliceReader(series)
        w = white.whitening
        got = _volume(white)
    assert sum("prewhitening from 128 noise readouts" in r.message for r in caplog.records) == 1
    np.testing.assert_allclose(np.abs(w[np.triu_indices(4, 1)]), 0, atol=1e-6)  # L^-1 is lower triangular
    # The whitening matrix takes the true noise covariance of the imaging readouts to the identity
    # (so the dwell-time scaling is right), within the error of a covariance from 128 x 64 samples.
    np.testing.assert_allclose(w @ truth.noise_covariance @ w.conj().T, np.eye(4), atol=0.06)
    expected = np.conj(np.einsum("ij,tzjyx->tziyx", w, np.conj(truth.kspace)))  # Siemens: conjugated after whitening
    noise = (got - expected).transpose(2, 0, 1, 3, 4).reshape(4, -1)
    np.testing.assert_allclose(noise @ noise.conj().T / noise.shape[1], np.eye(4), atol=0.06)
    raw = _volume(RawSliceReader(series, prewhiten=False))
    np.testing.assert_allclose(got, np.conj(np.einsum("ij,tzjyx->tziyx", w, np.conj(raw))), atol=1e-4)
    assert RawSliceReader(series, prewhiten=False).whitening is None


def test_noise_in_a_group_of_its_own_and_group_choice(tmp_path):
    path, truth = _write(tmp_path, noise=0.02, noise_readouts=32, noise_group=True)
    assert dataset_groups(path) == ["dataset_1", "dataset_2"]
    series = scan_raw_file(path)[0]
    assert series.group == "dataset_2" and series.info["noise_readouts"] == 32
    assert RawSliceReader(series).whitening is not None
    with pytest.raises(RawDataError, match="holds no imaging readouts"):
        scan_raw_file(path, group="dataset_1")
    with pytest.raises(RawDataError, match=r"no ISMRMRD group 'dataset_9'.*dataset_1"):
        scan_raw_file(path, group="dataset_9")


# --------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("vendor", ["SIEMENS", "GE"])
def test_oblique_left_handed_geometry_and_marker_position(tmp_path, vendor):
    path, truth = _write(tmp_path, oblique=True, left_handed=True, nz=3, vendor=vendor)
    series = _check_kspace(path, truth)
    geo = series.geometry
    assert geo.matrix == (32, 24) and geo.fov_mm == pytest.approx(truth.geometry.fov_mm)
    for got, want in zip(geo.slices, truth.geometry.slices, strict=True):
        np.testing.assert_allclose(got.position, want.position, atol=1e-3)
        for d in ("read_dir", "phase_dir", "slice_dir"):
            np.testing.assert_allclose(getattr(got, d), getattr(want, d), atol=1e-5)
    # Left-handed: slice_dir as written, opposite to read x phase; slices ascending along it (counters descend).
    s0 = geo.slices[0]
    assert np.dot(np.cross(s0.read_dir, s0.phase_dir), s0.slice_dir) < -0.99
    assert [s.location for s in geo.slices] == sorted(s.location for s in geo.slices)
    # The marker: brightest voxel of its slice's image, at its known LPS position (within a tenth of a voxel).
    i0, j0, k0 = truth.marker_voxel
    with RawSliceReader(series, prewhiten=False) as reader:
        image = rss_np(ifft2c_np(reader.read_slab(0, k0)), axis=0)  # (ny, nx)
    j, i = np.unravel_index(np.argmax(image), image.shape)
    assert (i, j) == (i0, j0)
    dx, dy = geo.pixel_spacing
    assert np.linalg.norm(geo.voxel_lps(i, j, k0) - truth.marker_lps) < 0.1 * min(dx, dy)
    assert geo.patient_position == "HFS"
    if vendor == "SIEMENS":  # 2.5 ms ticks
        assert geo.trigger_times_ms == pytest.approx(truth.geometry.trigger_times_ms, abs=1.3)
    else:
        assert geo.trigger_times_ms is None


def test_readouts_without_geometry_give_no_geometry(tmp_path):
    path, truth = _write(tmp_path)

    def no_geometry(records):
        for field in ("position", "read_dir", "phase_dir", "slice_dir"):
            records["head"][field] = 0
        return records

    edit_ismrmrd_readouts(path, no_geometry)
    series = scan_raw_file(path)[0]
    assert series.geometry is None
    # Slices then follow the slice counter, which the writer runs against the positions.
    with RawSliceReader(series, prewhiten=False) as reader:
        np.testing.assert_allclose(_volume(reader), truth.kspace[:, ::-1], atol=1e-5)
    path2, _ = _write(tmp_path, "bad.h5", nz=1, nt=1)

    def not_unit(records):
        records["head"]["read_dir"][:, 0] = 3.0
        return records

    edit_ismrmrd_readouts(path2, not_unit)
    _fails(path2, "slice counter 0: impossible readout geometry")


def test_siemens_and_other_vendors_give_the_same_upright_image(tmp_path):
    p1, t1 = _write(tmp_path, "siemens.h5", vendor="SIEMENS")
    p2, t2 = _write(tmp_path, "philips.h5", vendor="Philips")
    a = rss_np(ifft2c_np(RawSliceReader(scan_raw_file(p1)[0]).read_slab(0, 1)), axis=0)
    b = rss_np(ifft2c_np(RawSliceReader(scan_raw_file(p2)[0]).read_slab(0, 1)), axis=0)
    np.testing.assert_allclose(a, b, atol=1e-5 * a.max())
    # ... and that image is the phantom's own object (not flipped), up to the coil weighting.
    obj = np.abs(t1.images[0, 1])
    assert np.corrcoef(a.ravel(), obj.ravel())[0, 1] > 0.8
    assert np.corrcoef(a.ravel(), obj[::-1, ::-1].ravel())[0, 1] < 0.5


# --------------------------------------------------------------------------------------------------- dims, names


def test_series_split_on_a_varying_extra_counter(tmp_path):
    path, truth = _write(tmp_path, split=("set", 2))
    series = scan_raw_file(path)
    assert [s.entry for s in series] == ["set0", "set1"]
    assert [s.key for s in series] == ["dataset/set0", "dataset/set1"]
    assert {s.name for s in series} == {"cine_sax"} and all(s.nt_dim == "phase" for s in series)
    with RawSliceReader(series[1], prewhiten=False) as reader:
        np.testing.assert_allclose(_volume(reader), truth.series["set1"], atol=1e-5)
    np.testing.assert_allclose(_volume(RawSliceReader(series[0], prewhiten=False)), truth.kspace, atol=1e-5)


def test_t1_mapping_frames_on_the_contrast_counter(tmp_path):
    path, truth = _write(tmp_path, series="T1map", nt=5, protocol_name="MOLLI_5(3)3_SAX")
    series = _check_kspace(path, truth)
    assert (series.name, series.series_type, series.nt_dim) == ("T1map", "mapping", "contrast")
    assert series.info["TI_ms"] == list(T1_INVERSION_TIMES_MS[:5])


@pytest.mark.parametrize(
    ("texts", "name"),
    [
        (("CV_cine_retro_SAX",), "cine_sax"),
        (("trufi_4ch_realtime",), "cine_lax_4ch"),
        (("tfl_MOLLI_T1map",), "T1map"),
        (("T2prep_map",), "T2map"),
        ((None, "LGE PSIR 3ch"), "lge_lax_3ch"),
        (("localizer", "AdjCoilSens", "fs_0034_1_5T"), None),
        (("", "localizer", "us_0001_cine_lax"), "cine_lax"),
    ],
)
def test_series_name_rules(texts, name):
    assert series_name(*texts) == name


def test_series_type_forced_when_the_names_say_nothing(tmp_path, caplog):
    path, _ = _write(tmp_path, "fs_0012_1_5T.h5", protocol_name="CV_seq_xyz")
    with caplog.at_level(logging.INFO, logger="bundle.data.ismrmrd"):
        guessed = scan_raw_file(path)[0]
    assert (guessed.name, guessed.series_type) == ("CV_seq_xyz", "cine")
    assert any("name no known series" in r.message for r in caplog.records)
    forced = scan_raw_file(path, series_type="mapping")[0]
    assert (forced.name, forced.series_type, forced.nt_dim) == ("mapping", "mapping", "phase")
    named = scan_raw_file(path, series_type="cine_lax")[0]
    assert (named.name, named.series_type) == ("cine_lax", "cine")


# --------------------------------------------------------------------------------------------------- files


def test_file_detection_and_the_ismrmrd_package_reads_what_the_writer_wrote(tmp_path):
    path, truth = _write(tmp_path, noise_readouts=2, noise=0.01)
    assert is_ismrmrd_file(path) and dataset_groups(path) == ["dataset"]
    other = tmp_path / "plain.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    (tmp_path / "text.h5").write_text("not hdf5")
    assert not is_ismrmrd_file(other) and not is_ismrmrd_file(tmp_path / "text.h5")
    assert not is_ismrmrd_file(tmp_path / "missing.h5")
    with pytest.raises(RawDataError, match="not an ISMRMRD file"):
        scan_raw_file(other)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as d:
        header = ismrmrd.xsd.CreateFromDocument(d.read_xml_header())
        acq = d.read_acquisition(2)  # the first imaging readout after two noise readouts
        assert header.encoding[0].encodedSpace.matrixSize.x == 64
        assert acq.data.shape == (3, 64) and acq.idx.kspace_encode_step_1 == 0
        assert not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        assert d.read_acquisition(0).is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)


def _make_demo_data():
    """scripts/make_demo_data.py as a module (run in-process: a subprocess would import torch again)."""
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_demo_data_ismrmrd_layout(tmp_path, capsys):
    script = _make_demo_data()
    assert script.main(["--layout", "ismrmrd", "--root", str(tmp_path)]) == 0
    assert "5 ISMRMRD files" in capsys.readouterr().out
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.h5"))
    assert files == [
        "P001/cine_sax_R4.h5", "P001/cine_sax_fully_sampled.h5", "P002/cine_lax_oblique.h5",
        "P002/cine_sax_asymmetric_echo.h5", "P003/T1map.h5",
    ]  # fmt: skip
    found = {f: scan_raw_file(tmp_path / f)[0] for f in files}
    r4 = found["P001/cine_sax_R4.h5"]
    assert r4.acs_width == 8 and not r4.fully_sampled and r4.info["calibration"] == "embedded"
    assert found["P003/T1map.h5"].nt_dim == "contrast" and found["P003/T1map.h5"].info["patient_id"] == "P003"
    assert found["P001/cine_sax_fully_sampled.h5"].info["noise_readouts"] == 64
    assert found["P002/cine_sax_asymmetric_echo.h5"].info["asymmetric_echo"]
    assert found["P002/cine_lax_oblique.h5"].name == "cine_lax"
    assert all(s.encoded == (48, 128) and s.shape[3:] == (48, 64) for s in found.values())
    assert script.main(["--layout", "ismrmrd", "--root", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- bad input


def _fails(path, pattern, **scan):
    before = sorted(os.listdir(os.path.dirname(path)))
    with pytest.raises(RawDataError, match=pattern) as info:
        scan_raw_file(path, **scan)
    assert str(info.value).startswith(str(path)) and isinstance(info.value, CMRDataError)
    assert sorted(os.listdir(os.path.dirname(path))) == before  # nothing written next to the input
    return info.value


@pytest.mark.parametrize("trajectory", ["radial", "spiral", "epi", "goldenangle"])
def test_non_cartesian_trajectory_is_not_supported(tmp_path, trajectory):
    path, _ = _write(tmp_path, nz=1, nt=1)
    edit_ismrmrd_xml(path, lambda x: x.replace("<trajectory>cartesian", f"<trajectory>{trajectory}"))
    _fails(path, f"{trajectory} trajectory: not supported")


def test_3d_encoding_is_not_supported(tmp_path):
    path, _ = _write(tmp_path, nz=1, nt=1)
    edit_ismrmrd_xml(path, lambda x: x.replace("<z>1</z>", "<z>2</z>", 1))
    _fails(path, r"3-D encoding \(encoded matrix z = 2\)")
    path, _ = _write(tmp_path, "kz.h5", nz=1, nt=1)

    def kz(records):
        records["head"]["idx"]["kspace_encode_step_2"][::2] = 1
        return records

    edit_ismrmrd_readouts(path, kz)
    _fails(path, r"3-D encoding \(kspace_encode_step_2 varies\)")


def test_truncated_or_corrupt_hdf5(tmp_path):
    path, _ = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _fails(path, "truncated or corrupt")
    junk = tmp_path / "junk.mrd"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    _fails(junk, "not a readable HDF5 file")
    _fails(tmp_path / "missing.h5", "no such file")


def test_xml_repairs_are_logged(tmp_path, caplog):
    path, truth = _write(tmp_path)
    edit_ismrmrd_xml(
        path,
        lambda x: (
            x.replace("<trajectory>cartesian</trajectory>", "")
            .replace("<patientPosition>HFS</patientPosition>", "")
            .replace("<protocolName>", "<vendorExtra>7</vendorExtra><protocolName>")
        ),
    )
    with caplog.at_level(logging.WARNING, logger="bundle.data.ismrmrd"):
        series = _check_kspace(path, truth)
    repairs = [r.message for r in caplog.records if "XML header repaired" in r.message]
    assert len(repairs) == 3 and all(m.startswith(str(path)) for m in repairs)
    assert series.info["trajectory"] == "cartesian" and series.info["patient_position"] is None
    assert series.geometry.patient_position is None and len(series.info["xml_repairs"]) == 3


def test_xml_the_parser_refuses(tmp_path):
    path, _ = _write(tmp_path, nz=1, nt=1)
    edit_ismrmrd_xml(
        path, lambda x: x.replace("<reconSpace>", "<reconSpaceX>").replace("</reconSpace>", "</reconSpaceX>")
    )
    _fails(path, "XML header")
    path, _ = _write(tmp_path, "nores.h5", nz=1, nt=1)
    edit_ismrmrd_xml(
        path, lambda x: x[: x.index("<experimentalConditions>")] + x[x.index("</experimentalConditions>") + 25 :]
    )
    _fails(path, r"lacks a required element \(ismrmrdHeader: 'experimentalConditions'\)")
    path, _ = _write(tmp_path, "broken.h5", nz=1, nt=1)
    edit_ismrmrd_xml(path, lambda x: x[:200])
    _fails(path, "not well-formed|cannot be parsed")


def test_missing_trajectory_on_readouts_with_trajectories_is_not_repaired(tmp_path):
    path, _ = _write(tmp_path, nz=1, nt=1)
    edit_ismrmrd_xml(path, lambda x: x.replace("<trajectory>cartesian</trajectory>", ""))

    def traj(records):
        records["head"]["trajectory_dimensions"] = 2
        return records

    edit_ismrmrd_readouts(path, traj)
    _fails(path, "no encoding trajectory and the readouts carry trajectories")


def test_readouts_with_differing_coil_counts(tmp_path):
    path, _ = _write(tmp_path, nz=1, nt=1)

    def coils(records):
        records["head"]["active_channels"][5] = 2
        records["data"][5] = records["data"][5][: 2 * 2 * 64]
        return records

    edit_ismrmrd_readouts(path, coils)
    _fails(path, r"differing coil counts .*\{2: 1, 3: 23\}")


def test_readout_shorter_than_its_header_says(tmp_path):
    path, _ = _write(tmp_path, nz=1, nt=1)

    def short(records):
        records["data"][7] = records["data"][7][:-6]
        return records

    edit_ismrmrd_readouts(path, short)
    series = scan_raw_file(path)[0]  # headers only: the samples are not read here
    for memory_map in (True, False):
        with pytest.raises(RawDataError, match=r"readout 7 holds 378 values, its header says 3 coils x 64 samples"):
            RawSliceReader(series, memory_map=memory_map).read_slab(0, 0)


def test_lines_outside_the_encoded_matrix(tmp_path):
    path, _ = _write(tmp_path, nz=1, nt=1, vendor="GE")

    def far(records):
        records["head"]["idx"]["kspace_encode_step_1"][3] = 40
        return records

    edit_ismrmrd_readouts(path, far)
    _fails(path, r"lines outside the encoded matrix: ky \[40\]")


def test_no_line_at_the_kspace_centre(tmp_path):
    path, _ = _write(tmp_path, nt=1, vendor="GE")
    edit_ismrmrd_readouts(path, lambda r: r[r["head"]["idx"]["kspace_encode_step_1"] != 12])
    _fails(path, r"no line at the k-space centre \(ky 12\) in any frame of slice z=0")


def test_incomplete_cardiac_phases(tmp_path):
    path, _ = _write(tmp_path)
    # Slice counter 1 is z=0 (the counters run against the positions); drop its phase 3.
    idx = lambda r: r["head"]["idx"]  # noqa: E731
    edit_ismrmrd_readouts(path, lambda r: r[~((idx(r)["slice"] == 1) & (idx(r)["phase"] == 3))])
    err = _fails(path, r"incomplete cardiac phases: slice z=0 lacks phase \[3\]")
    assert err.sample == "z=0"
