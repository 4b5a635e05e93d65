"""Per-sample loading with neighbour-frame stacking and masks (``bundle/data/loading.py``)."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from bundle.data.loading import LoadCMRSliced, load_volume
from bundle.data.matio import write_mat
from bundle.errors import EmptySliceError, MaskMismatchError, NonFiniteDataError, ShapeError
from bundle.mri import neighbour_frame_indices

NZ, NC, NY, NX = 2, 3, 8, 10


def _kspace(rng, nt, nz=NZ):
    shape = (nt, nz, NC, NY, NX)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _item(path, z, t, nt, **extra):
    return {"file": str(path), "z": z, "t": t, "nt": nt, "kind": "full", "mask_file": None, **extra}


@pytest.mark.parametrize("nt", [12, 9, 3, 1])
def test_neighbour_stacking(tmp_path, rng, nt):
    k = _kspace(rng, nt)
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=k)
    load = LoadCMRSliced()
    for t in {0, nt // 2, nt - 1}:
        out = load(_item(path, 1, t, nt))
        frames = neighbour_frame_indices(t, nt, 5)
        assert out["frames"] == frames and frames[2] == t
        got = out["kspace_full"]
        assert got.shape == (5, NC, NX, NY) and got.dtype == np.complex64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, k[frames, 1].swapaxes(-1, -2))
        assert "mask" not in out and "kspace_masked" not in out


def test_blackblood_4d_and_three_frames(tmp_path, rng):
    k = _kspace(rng, 1)[0]  # (nz, nc, ny, nx)
    path = tmp_path / "blackblood_kus_Uniform4.mat"
    write_mat(path, kus=k)
    out = LoadCMRSliced(num_adj_frames=3)({"file": str(path), "z": 0, "t": 0})  # no nt/kind: from the file
    assert out["frames"] == [0, 0, 0]
    np.testing.assert_array_equal(out["kspace_masked"], np.stack([k[0].swapaxes(-1, -2)] * 3))
    assert out["mask"].shape == (3, NX, NY)  # inferred: all non-zero here


def test_trimmed_series_never_reads_dropped_frames(tmp_path, rng):
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=_kspace(rng, 12))
    out = LoadCMRSliced()(_item(path, 0, 0, 9))
    assert out["frames"] == [7, 8, 0, 1, 2]
    with pytest.raises(ShapeError, match="z=0, t=9"):
        LoadCMRSliced()(_item(path, 0, 9, 9))


def test_task1_mask_broadcasts_to_every_frame(tmp_path, rng):
    path, mpath = tmp_path / "k.mat", tmp_path / "m.mat"
    write_mat(path, kspace_full=_kspace(rng, 12))
    mask = np.zeros((NY, NX))
    mask[::4] = 1  # ky lines: rows in h5py order, constant along kx
    write_mat(mpath, mask=mask)
    out = LoadCMRSliced()(_item(path, 1, 5, 12, mask_file=str(mpath)))
    m = out["mask"]
    assert m.shape == (5, NX, NY) and m.dtype == np.float32 and m.flags.c_contiguous
    np.testing.assert_array_equal(m, np.broadcast_to(mask.T, (5, NX, NY)))


def test_task2_mask_follows_the_frames(tmp_path, rng):
    nt = 3
    path, mpath = tmp_path / "k.mat", tmp_path / "m.mat"
    k = _kspace(rng, nt)
    mask = (rng.random((nt, NY, NX)) > 0.5).astype(np.float64)
    write_mat(path, kus=k * mask[:, None, None])
    write_mat(mpath, mask=mask)
    item = _item(path, 0, 1, nt, kind="undersampled", mask_file=str(mpath))
    out = LoadCMRSliced()(item)
    assert out["frames"] == [0, 0, 1, 2, 2]
    np.testing.assert_array_equal(out["mask"], mask[[0, 0, 1, 2, 2]].swapaxes(-1, -2))
    np.testing.assert_array_equal(out["kspace_masked"], (k * mask[:, None, None])[[0, 0, 1, 2, 2], 0].swapaxes(-1, -2))


def test_missing_mask_is_inferred_with_one_warning(tmp_path, rng, caplog):
    path = tmp_path / "cine_kus_ktUniform4.mat"
    mask = np.zeros((12, NY, NX), np.float32)
    for t in range(12):
        mask[t, t % 4 :: 4] = 1
    write_mat(path, kus=_kspace(rng, 12) * mask[:, None, None])
    load = LoadCMRSliced()
    with caplog.at_level(logging.WARNING, logger="bundle.data.loading"):
        out = load(_item(path, 0, 4, 12, kind="undersampled"))
        load(_item(path, 1, 4, 12, kind="undersampled"))
    assert sum("inferring the mask" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_array_equal(out["mask"], mask[[2, 3, 4, 5, 6]].swapaxes(-1, -2))


def test_mask_that_does_not_fit(tmp_path, rng):
    path, mpath = tmp_path / "k.mat", tmp_path / "m.mat"
    write_mat(path, kspace_full=_kspace(rng, 12))
    write_mat(mpath, mask=np.ones((NX, NY)))  # transposed: MATLAB order by mistake
    with pytest.raises(MaskMismatchError) as info:
        LoadCMRSliced()(_item(path, 0, 0, 12, mask_file=str(mpath)))
    msg = str(info.value)
    assert str(mpath) in msg and str(path) in msg and str((NX, NY)) in msg and str((12, NZ, NC, NY, NX)) in msg
    write_mat(mpath, mask=np.ones((9, NY, NX)))  # Task 2 mask with the wrong nt
    with pytest.raises(MaskMismatchError):
        LoadCMRSliced()(_item(path, 0, 0, 12, mask_file=str(mpath)))


def test_non_finite_and_empty_slices(tmp_path, rng):
    k = _kspace(rng, 6)
    k[4, 1, 0, 2, 2] = np.inf
    k[1, 0] = 0
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=k)
    load = LoadCMRSliced()
    with pytest.raises(NonFiniteDataError) as info:
        load(_item(path, 1, 3, 6))  # frame 4 is a neighbour of 3
    assert str(path) in str(info.value) and "z=1, t=3" in str(info.value)
    assert LoadCMRSliced(check_finite=False)(_item(path, 1, 3, 6))["frames"] == [1, 2, 3, 4, 5]
    with pytest.raises(EmptySliceError) as info:
        load(_item(path, 0, 1, 6))
    assert str(path) in str(info.value) and "z=0, t=1" in str(info.value)
    load(_item(path, 0, 2, 6))  # a zero neighbour is fine; only the target must hold data


def test_wrong_dims_name_file_and_position(tmp_path, rng):
    path = tmp_path / "flat.mat"
    write_mat(path, kspace_full=_kspace(rng, 1)[0, 0])  # (nc, ny, nx)
    with pytest.raises(ShapeError) as info:
        LoadCMRSliced()(_item(path, 0, 0, 1))
    assert str(path) in str(info.value) and "z=0, t=0" in str(info.value)
    write_mat(path, kspace_full=_kspace(rng, 3))
    with pytest.raises(ShapeError, match="z=5"):
        LoadCMRSliced()(_item(path, 5, 0, 3))


def test_reader_cache_is_bounded_and_dropped_on_pickle(tmp_path, rng):
    load = LoadCMRSliced(max_open_files=2)
    for i in range(3):
        write_mat(tmp_path / f"k{i}.mat", kspace_full=_kspace(rng, 3))
        load(_item(tmp_path / f"k{i}.mat", 0, 0, 3))
    assert list(load._readers) == [str(tmp_path / "k1.mat"), str(tmp_path / "k2.mat")]
    clone = pickle.loads(pickle.dumps(load))
    assert not clone._readers
    assert clone(_item(tmp_path / "k0.mat", 0, 0, 3))["kspace_full"].shape == (5, NC, NX, NY)
    load.close()


def test_load_volume_orientation(tmp_path, rng):
    k = _kspace(rng, 4)
    write_mat(tmp_path / "k.mat", kspace_full=k)
    vol = load_volume(tmp_path / "k.mat")
    assert vol.shape == (4, NZ, NC, NX, NY) and vol.flags.c_contiguous
    np.testing.assert_array_equal(vol, k.swapaxes(-1, -2))
    write_mat(tmp_path / "bb.mat", kus=k[0])
    np.testing.assert_array_equal(load_volume(tmp_path / "bb.mat"), k[:1].swapaxes(-1, -2))


def test_slab_cache_reads_each_slab_once_and_changes_nothing(tmp_path, rng, monkeypatch):
    from bundle.data.matio import MatSliceReader

    nt = 12
    k = _kspace(rng, nt)
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=k)
    reads = []
    original = MatSliceReader.read_slab
    monkeypatch.setattr(MatSliceReader, "read_slab", lambda self, t, z: reads.append((t, z)) or original(self, t, z))
    cached, plain = LoadCMRSliced(slab_cache=14), LoadCMRSliced()
    for t in range(nt):  # the order inference visits the frames of one slice
        a, b = cached(_item(path, 1, t, nt)), plain(_item(path, 1, t, nt))
        np.testing.assert_array_equal(a["kspace_full"], b["kspace_full"])
    assert sorted(reads) == [(t, 1) for t in range(nt)]  # every slab of slice 1 read once
    with pytest.raises(ValueError, match="slab_cache"):
        LoadCMRSliced(slab_cache=-1)


def test_mark_bad_flags_nan_and_empty_items_instead_of_raising(tmp_path, rng):
    nt = 6
    k = _kspace(rng, nt)
    k[2, 1, 0, 0, 0] = np.nan  # frame 2 of slice 1
    k[4, 0] = 0  # frame 4 of slice 0 all zero
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=k)
    load = LoadCMRSliced(mark_bad=True)
    nan_item = load(_item(path, 1, 2, nt))
    assert "NaN or Inf" in nan_item["bad"] and str(path) in nan_item["bad"]
    assert not nan_item["kspace_full"].any() and nan_item["mask"].shape == (5, NX, NY)
    empty_item = load(_item(path, 0, 4, nt))
    assert "all zeros" in empty_item["bad"]
    good = load(_item(path, 1, 5, nt))  # frames 3..1 (wrapping): no NaN frame, non-empty target
    assert good["bad"] == "" and good["kspace_full"].any() and "mask" not in good
    with pytest.raises(NonFiniteDataError):
        LoadCMRSliced()(_item(path, 1, 2, nt))


@pytest.mark.parametrize("pattern", ["Uniform", "ktGaussian", "ktRadial"])
def test_reading_only_sampled_lines_gives_the_same_item(tmp_path, rng, monkeypatch, pattern):
    from bundle.data.matio import MatSliceReader
    from bundle.transforms import ApplyMaskd, MakeTargetd, RandKspaceMaskd

    nt = 6
    k = _kspace(rng, nt)
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=k)
    slabs, rows = [], []
    read_frames, read_rows = MatSliceReader.read_frames, MatSliceReader.read_rows
    monkeypatch.setattr(MatSliceReader, "read_frames", lambda s, z, f: slabs.extend(f) or read_frames(s, z, f))
    monkeypatch.setattr(MatSliceReader, "read_rows", lambda s, t, z, r: rows.append(t) or read_rows(s, t, z, r))
    draw = dict(patterns=[pattern], accelerations=[4], kt_accelerations=[4], acs_width=2)
    before = RandKspaceMaskd(num_frames=5, **draw)  # drawn from the item's metadata, before any read
    after = RandKspaceMaskd(**draw)  # drawn from the loaded stack: the previous order
    mask = ApplyMaskd(allow_missing_keys=True)  # finds nothing to do after a read of the sampled lines
    target = MakeTargetd(keys=["kspace_full", "kspace_centre"], drop_source=True, allow_missing_keys=True)
    for t in (0, 3):
        item = _item(path, 1, t, nt, nx=NX, ny=NY)
        slabs.clear(), rows.clear()
        before.set_random_state(seed=t)
        lines = target(mask(LoadCMRSliced(read_sampled_lines=True, contiguous=False)(before(item))))
        read = (list(slabs), list(rows))
        after.set_random_state(seed=t)
        whole = target(mask(after(LoadCMRSliced(contiguous=False)(item))))
        for key in ("kspace_masked", "mask", "target", "kspace_target"):
            np.testing.assert_array_equal(lines[key], whole[key], err_msg=key)
        assert lines["frames"] == whole["frames"] and lines["pattern"] == pattern
        if pattern == "ktRadial":  # not a line mask: every frame is read whole, as before
            assert read == (whole["frames"], [])
        else:  # the centre frame whole, the other four only at their sampled lines
            assert read == ([t], [f for f in whole["frames"] if f != t])
            assert lines["kspace_masked"].flags.c_contiguous


def test_reading_sampled_lines_checks_what_it_reads_and_the_mask_it_is_given(tmp_path, rng):
    from bundle.transforms import RandKspaceMaskd

    k = _kspace(rng, 6)
    k[3, 0, :, 1, :] = np.nan  # ky row 1 of frame 3: sampled by a mask with every other line
    path = tmp_path / "k.mat"
    write_mat(path, kspace_full=k)
    load = LoadCMRSliced(read_sampled_lines=True)
    every_other = np.zeros((5, NX, NY), np.float32)
    every_other[..., 1::2] = 1
    with pytest.raises(NonFiniteDataError, match="z=0, t=2"):
        load(_item(path, 0, 2, 6, mask=every_other))
    even = np.zeros((5, NX, NY), np.float32)
    even[..., ::2] = 1  # misses the NaN row of frame 3, which then never reaches the model
    out = load(_item(path, 0, 2, 6, mask=even))
    assert np.isfinite(out["kspace_masked"]).all()
    with pytest.raises(MaskMismatchError, match="z=0, t=2"):
        load(_item(path, 0, 2, 6, mask=np.ones((5, NY, NX), np.float32)))
    with pytest.raises(ShapeError, match=r"needs the item's \['nx', 'ny'\]"):
        RandKspaceMaskd(num_frames=5)(_item(path, 0, 2, 6))
    official = _item(path, 0, 2, 6, nx=NX, ny=NY, mask_file=str(path))
    assert "mask" not in RandKspaceMaskd(num_frames=5)(official)  # an official mask is the loader's to read
