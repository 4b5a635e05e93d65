"""The decoded-k-space cache of raw data: the raw reader's values bit for bit, decoded once, never beside inputs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from helpers import RAW_TINY

from bundle.data.demo_ismrmrd import write_ismrmrd_phantom
from bundle.data.ismrmrd import RawSliceReader, scan_raw_file
from bundle.data.raw_cache import CachedRawReader, default_cache_dir, resolve_cache_dir
from bundle.errors import RawDataError


@pytest.fixture
def series(tmp_path):
    write_ismrmrd_phantom(tmp_path / "in" / "P001" / "cine.h5", **RAW_TINY, seed=7, acceleration=2, acs=6)
    return scan_raw_file(tmp_path / "in" / "P001" / "cine.h5")[0]


def test_cached_reads_equal_the_raw_reader_and_decode_once(series, tmp_path):
    cache = tmp_path / "cache"
    raw = RawSliceReader(series)
    cached = CachedRawReader(series, cache_dir=cache)
    for z in range(series.shape[1]):
        np.testing.assert_array_equal(cached.read_frames(z, [2, 3, 0]), raw.read_frames(z, [2, 3, 0]))
        np.testing.assert_array_equal(cached.read_rows(1, z, [0, 5, 7]), raw.read_rows(1, z, [0, 5, 7]))
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and not list(cache.glob(".*tmp*"))
    stamp = files[0].stat().st_mtime_ns
    clone = pickle.loads(pickle.dumps(cached))  # a DataLoader worker maps the same file, it does not decode again
    np.testing.assert_array_equal(clone.read_slab(0, 1), raw.read_slab(0, 1))
    assert files[0].stat().st_mtime_ns == stamp
    # Another option is another cache file.
    unwhitened = CachedRawReader(series, cache_dir=cache, prewhiten=False)
    np.testing.assert_array_equal(unwhitened.read_slab(0, 0), RawSliceReader(series, prewhiten=False).read_slab(0, 0))
    assert len(list(cache.glob("*.npy"))) == 2
    with pytest.raises(RawDataError, match="outside"):
        cached.read_frames(series.shape[1], [0])


def test_an_edited_file_is_decoded_anew(series, tmp_path):
    cache = tmp_path / "cache"
    first = CachedRawReader(series, cache_dir=cache).cache_file
    os.utime(series.path, ns=(1, 1))
    assert CachedRawReader(series, cache_dir=cache).cache_file != first


def test_the_cache_is_never_inside_the_input_folder(series, tmp_path):
    with pytest.raises(RawDataError, match="inside the input's folder"):
        CachedRawReader(series, cache_dir=tmp_path / "in" / "P001" / "cache")


def test_cache_folder_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERCMR_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "raw" == resolve_cache_dir("auto")
    assert resolve_cache_dir(None) is None and resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
