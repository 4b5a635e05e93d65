"""MAT v7.3 / v5 reading and writing, and lazy slab access (``bundle/data/matio.py``)."""

from __future__ import annotations

import os
import pickle

import h5py
import hdf5storage
import mat73
import numpy as np
import pytest
import scipy.io as sio
from scipy.io.matlab import matfile_version

from bundle.data.matio import MatSliceReader, mat_shape, mat_variables, read_mat, write_mat, write_mat_v5
from bundle.errors import CMRDataError, MatFileError, MissingKeyError, NonFiniteDataError, ShapeError


def _kspace(rng, shape, dtype=np.complex64):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.fixture
def kfile(tmp_path, rng):
    """A 5-D k-space file ``(nt, nz, nc, ny, nx) = (4, 3, 2, 10, 12)`` and its array."""
    k = _kspace(rng, (4, 3, 2, 10, 12))
    path = tmp_path / "cine_sax.mat"
    write_mat(path, kspace_full=k)
    return path, k


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_round_trip(tmp_path, rng, dtype):
    k = _kspace(rng, (3, 2, 2, 6, 8), dtype)
    write_mat(tmp_path / "k.mat", kspace_full=k)
    out = read_mat(tmp_path / "k.mat")
    assert out.dtype == np.complex64 and out.shape == k.shape
    np.testing.assert_array_equal(out, k.astype(np.complex64))
    with h5py.File(tmp_path / "k.mat", "r") as f:
        ds = f["kspace_full"]
        assert ds.dtype.names == ("real", "imag")
        assert ds.dtype["real"] == (np.float32 if dtype == np.complex64 else np.float64)
        assert ds.attrs["MATLAB_class"] == (b"single" if dtype == np.complex64 else b"double")


def test_real_and_bool_masks_round_trip(tmp_path, rng):
    mask = (rng.random((6, 9)) > 0.5).astype(np.float64)
    write_mat(tmp_path / "m.mat", mask=mask)
    out = read_mat(tmp_path / "m.mat")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, mask)

    write_mat(tmp_path / "b.mat", mask=mask.astype(bool))
    np.testing.assert_array_equal(read_mat(tmp_path / "b.mat"), mask)
    with h5py.File(tmp_path / "b.mat", "r") as f:
        assert f["mask"].dtype == np.uint8
        assert f["mask"].attrs["MATLAB_class"] == b"logical"
        assert f["mask"].attrs["MATLAB_int_decode"] == 1


def test_file_is_genuine_matlab_v73(kfile):
    path, k = kfile
    assert matfile_version(str(path)) == (2, 0)
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
    head = path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file, Platform: ")
    assert b"HDF5 schema 1.00 ." in head[:116]
    assert head[116:124] == b"\x00" * 8
    assert head[124:128] == b"\x00\x02IM"
    # Third-party MATLAB readers see MATLAB order, i.e. our h5py-order array reversed.
    np.testing.assert_array_equal(mat73.loadmat(str(path))["kspace_full"], k.transpose())
    np.testing.assert_array_equal(hdf5storage.loadmat(str(path))["kspace_full"], k.transpose())
    with pytest.raises(NotImplementedError):
        sio.loadmat(str(path))


def test_third_party_readers_see_logical(tmp_path):
    mask = np.zeros((5, 7), bool)
    mask[:, ::2] = True
    write_mat(tmp_path / "m.mat", mask=mask)
    out = mat73.loadmat(str(tmp_path / "m.mat"))["mask"]
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask.T)


def test_write_is_atomic_and_leaves_no_temp(tmp_path, rng):
    path = tmp_path / "sub" / "k.mat"
    write_mat(path, kspace_full=_kspace(rng, (2, 1, 2, 4, 4)))
    write_mat(path, kspace_full=_kspace(rng, (3, 1, 2, 4, 4)))  # overwrite in place
    assert os.listdir(path.parent) == ["k.mat"]
    assert read_mat(path).shape == (3, 1, 2, 4, 4)
    with pytest.raises(TypeError):
        write_mat(path, kspace_full=np.array([["a"]]))
    with pytest.raises(ValueError, match="MATLAB variable name"):
        write_mat(path, _bad=np.ones((2, 2)))
    assert os.listdir(path.parent) == ["k.mat"]


def test_v5_reads_in_h5py_order(tmp_path, rng):
    k = _kspace(rng, (3, 2, 2, 6, 8))
    mask = (rng.random((3, 6, 8)) > 0.5).astype(np.float64)
    sio.savemat(tmp_path / "k5.mat", {"kus": k.transpose()})  # what MATLAB's save writes: MATLAB order
    sio.savemat(tmp_path / "m5.mat", {"mask": mask.transpose()})
    np.testing.assert_array_equal(read_mat(tmp_path / "k5.mat"), k)
    np.testing.assert_array_equal(read_mat(tmp_path / "m5.mat"), mask)
    assert mat_shape(tmp_path / "k5.mat") == k.shape

    write_mat_v5(tmp_path / "w5.mat", img4ranking=np.abs(k[0, 0]).astype(np.float32))
    assert matfile_version(str(tmp_path / "w5.mat"))[0] == 1
    assert sio.loadmat(tmp_path / "w5.mat")["img4ranking"].shape == (8, 6, 2)  # MATLAB order on disk
    np.testing.assert_array_equal(read_mat(tmp_path / "w5.mat"), np.abs(k[0, 0]).astype(np.float32))


def test_key_selection(tmp_path, rng):
    k = _kspace(rng, (2, 1, 2, 4, 6))
    write_mat(tmp_path / "two.mat", other=np.ones((3, 3)), kus=k)
    np.testing.assert_array_equal(read_mat(tmp_path / "two.mat"), k)  # preferred name wins
    np.testing.assert_array_equal(read_mat(tmp_path / "two.mat", "other"), np.ones((3, 3)))
    assert mat_variables(tmp_path / "two.mat") == {"other": (3, 3), "kus": k.shape}

    write_mat(tmp_path / "one.mat", data=k)
    with h5py.File(tmp_path / "one.mat", "a") as f:
        f.create_group("#refs#")  # MATLAB's bookkeeping group must be ignored
    np.testing.assert_array_equal(read_mat(tmp_path / "one.mat"), k)


# ------------------------------------------------------------------------------------------------ slab reader


def test_slice_reader_matches_whole_read(kfile):
    path, k = kfile
    whole = read_mat(path)
    with MatSliceReader(path) as r:
        assert (r.shape, r.nt, r.nz, r.nc, r.ny, r.nx) == (k.shape, 4, 3, 2, 10, 12)
        assert r.is_complex and r.key == "kspace_full"
        slab = r.read_slab(3, 1)
        assert slab.dtype == np.complex64 and slab.flags.c_contiguous
        np.testing.assert_array_equal(slab, whole[3, 1])
        frames = [2, 2, 0, 1, 1]
        np.testing.assert_array_equal(r.read_frames(2, frames), whole[frames, 2])
        with pytest.raises(ShapeError, match=str(path)):
            r.read_slab(4, 0)
        with pytest.raises(ShapeError, match="z=3"):
            r.read_frames(3, [0])


def test_slice_reader_blackblood_4d(tmp_path, rng):
    k = _kspace(rng, (3, 2, 6, 8))  # (nz, nc, ny, nx): no time axis
    write_mat(tmp_path / "blackblood_kus_Uniform4.mat", kus=k)
    r = MatSliceReader(tmp_path / "blackblood_kus_Uniform4.mat")
    assert (r.nt, r.nz, r.nc, r.ny, r.nx) == (1, 3, 2, 6, 8)
    np.testing.assert_array_equal(r.read_slab(0, 2), k[2])
    np.testing.assert_array_equal(r.read_frames(1, [0, 0, 0, 0, 0]), np.stack([k[1]] * 5))
    with pytest.raises(ShapeError):
        r.read_slab(1, 0)
    r.close()


def test_slice_reader_pickles_before_and_after_opening(kfile):
    path, k = kfile
    fresh = MatSliceReader(path)
    clone = pickle.loads(pickle.dumps(fresh))
    np.testing.assert_array_equal(clone.read_slab(1, 0), k[1, 0])
    assert fresh._file is None  # building and pickling never opened the file

    opened = MatSliceReader(path)
    opened.read_slab(0, 0)
    clone = pickle.loads(pickle.dumps(opened))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read_frames(2, [3, 0]), k[[3, 0], 2])
    opened.close()
    clone.close()


def test_slice_reader_v5_fallback(tmp_path, rng):
    k = _kspace(rng, (3, 2, 2, 6, 8))
    sio.savemat(tmp_path / "k5.mat", {"kspace_full": k.transpose()})
    r = MatSliceReader(tmp_path / "k5.mat")
    assert r.shape == k.shape
    np.testing.assert_array_equal(r.read_slab(2, 1), k[2, 1])


# ------------------------------------------------------------------------------------------------ bad input


def _raises(exc_type, path, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert str(path) in str(info.value)
    assert isinstance(info.value, CMRDataError)
    return info.value


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mat"
    _raises(MatFileError, path, read_mat, path)
    _raises(MatFileError, path, MatSliceReader(path).read_slab, 0, 0)


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("this is a text file, not HDF5 nor MATLAB v5\n" * 20)
    err = _raises(MatFileError, path, read_mat, path)
    assert err.__cause__ is not None  # wrapped, not leaked
    _raises(MatFileError, path, mat_shape, path)


def test_truncated_file(kfile):
    path, _ = kfile
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    _raises(MatFileError, path, read_mat, path)
    _raises(MatFileError, path, mat_shape, path)
    _raises(MatFileError, path, MatSliceReader(path).read_slab, 0, 0)


def test_missing_and_ambiguous_key(kfile, tmp_path):
    path, _ = kfile
    err = _raises(MissingKeyError, path, read_mat, path, "kus")
    assert "kspace_full" in str(err)  # lists what is there
    _raises(MissingKeyError, path, MatSliceReader(path, "kus").read_slab, 0, 0)
    amb = tmp_path / "amb.mat"
    write_mat(amb, a=np.ones((2, 2)), b=np.ones((2, 2)))
    _raises(MissingKeyError, amb, read_mat, amb)


def test_wrong_dims_kspace(tmp_path, rng):
    path = tmp_path / "flat.mat"
    write_mat(path, kspace_full=_kspace(rng, (2, 6, 8)))
    err = _raises(ShapeError, path, MatSliceReader(path).read_slab, 0, 0)
    assert "(2, 6, 8)" in str(err)


def test_non_finite_data(tmp_path, rng):
    k = _kspace(rng, (2, 1, 2, 4, 4))
    k[1, 0, 1, 2, 3] = np.nan
    path = tmp_path / "nan.mat"
    write_mat(path, kspace_full=k)
    assert np.isnan(read_mat(path)).sum() == 1  # off by default
    _raises(NonFiniteDataError, path, read_mat, path, check_finite=True)


def test_contiguous_complex64_is_read_through_a_memory_map(kfile, tmp_path):
    path, k = kfile
    with MatSliceReader(path) as r:
        r.read_slab(0, 0)
        assert r._mapped is not None  # write_mat stores k-space contiguously
        np.testing.assert_array_equal(r.read_slab(3, 2), k[3, 2])
        rows = [0, 3, 4, 9]
        got = r.read_rows(1, 2, rows)
        assert got.dtype == np.complex64 and got.shape == (2, 4, 12)
        np.testing.assert_array_equal(got, k[1, 2][:, rows, :])
        with pytest.raises(ShapeError, match="ky rows"):
            r.read_rows(1, 2, [10])
    with MatSliceReader(path, memory_map=False) as r:  # the switch for file systems where mapping is slow
        np.testing.assert_array_equal(r.read_rows(1, 2, rows), k[1, 2][:, rows, :])
        assert r._mapped is None
        assert pickle.loads(pickle.dumps(r)).memory_map is False
    # Chunked (and compressed) storage, as h5py or MATLAB may write it, goes through HDF5 with the same values.
    chunked = tmp_path / "chunked.mat"
    with h5py.File(chunked, "w") as f:
        data = np.empty(k.shape, [("real", "<f4"), ("imag", "<f4")])
        data["real"], data["imag"] = k.real, k.imag
        f.create_dataset("kspace_full", data=data, chunks=(1, 1, 2, 10, 12), compression="gzip")
    with MatSliceReader(chunked) as r:
        np.testing.assert_array_equal(r.read_slab(3, 2), k[3, 2])
        np.testing.assert_array_equal(r.read_rows(1, 2, [0, 3, 4, 9]), k[1, 2][:, [0, 3, 4, 9], :])
        assert r._mapped is None


def test_file_cut_short_inside_the_kspace_is_refused(kfile):
    path, _ = kfile
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 64)  # only the last samples are missing
    err = _raises(MatFileError, path, MatSliceReader(path).read_slab, 0, 0)
    assert "truncated" in str(err)
