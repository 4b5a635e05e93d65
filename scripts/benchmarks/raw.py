"""Section ``raw``: scanner raw data (ISMRMRD) against CMRxRecon ``.mat`` files of the same k-space size.

Two figures a user meets: indexing a folder of raw files (``bundle.data.index.scan_dataset``, headers only, in a
fresh process so that no header cache helps), in readouts and megabytes per second; and reading one slice with its
neighbour frames through the slice loader (``LoadCMRSliced``, the one training and inference use), side by side
with the same slice of a ``.mat`` file holding the same recon-matrix k-space.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from bundle.data import LoadCMRSliced, build_datalist, write_mat
from bundle.data.demo_ismrmrd import write_ismrmrd_phantom
from bundle.data.formats import FORMATS

from .harness import median

REPO = Path(__file__).resolve().parents[2]

_INDEX_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from bundle.data.index import scan_dataset
t1 = time.perf_counter()
records = scan_dataset(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "index_s": t2 - t1, "records": len(records)}))
"""


def _readouts(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["dataset/data"].shape[0])


def _index_in_fresh_process(root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _INDEX_CHILD, str(root)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _time_items(load: LoadCMRSliced, items: list[dict], repeats: int) -> float:
    """Median seconds per item over ``repeats`` passes (the first pass warms file handles and header caches)."""
    for item in items:
        load(item)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for item in items:
            load(item)
        times.append((time.perf_counter() - t0) / len(items))
    return median(times)


def section_raw(args: argparse.Namespace) -> dict:
    """Index speed of one raw file of about 115 MB, and slice-load time against a ``.mat`` file: the first item
    (which decodes the series into the cache), later items (the default, cached), and without the cache."""
    nx, ny, nc, nz, nt = 192, 156, 10, 2, 12  # a clinical cine SAX matrix (2x readout oversampling on top): ~115 MB
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw_root, mat_root = root / "raw", root / "mat"
        truth = write_ismrmrd_phantom(
            raw_root / "P001" / "cine_sax.h5", seed=0, nx=nx, ny=ny, nc=nc, nz=nz, nt=nt, noise_readouts=256
        )
        raw_file = raw_root / "P001" / "cine_sax.h5"
        size_mb = raw_file.stat().st_size / 1e6
        readouts = _readouts(raw_file)
        index = _index_in_fresh_process(raw_root)

        mat_file = mat_root / "ChallengeData/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat"
        write_mat(mat_file, kspace_full=truth.full_kspace.astype(np.complex64))
        mat_index = _index_in_fresh_process(mat_root)

        frames = args.raw_frames
        raw_items = [i for i in build_datalist(raw_root, subset="all") if i["z"] == 1][: args.raw_items]
        mat_items = [i for i in build_datalist(mat_root, subset="all", exclude=(), trims={}) if i["z"] == 1]
        mat_items = mat_items[: args.raw_items]
        # The default configuration: the series is decoded once into the cache, then memory-mapped.
        raw_load = LoadCMRSliced(num_adj_frames=frames, contiguous=False, raw_cache_dir=root / "cache")
        t0 = time.perf_counter()
        raw_load(raw_items[0])
        first_s = time.perf_counter() - t0
        raw_s = _time_items(raw_load, raw_items, args.raw_repeats)
        uncached = LoadCMRSliced(num_adj_frames=frames, contiguous=False, raw_cache_dir=None)
        uncached_s = _time_items(uncached, raw_items, args.raw_repeats)
        uncached.close()
        mat_load = LoadCMRSliced(num_adj_frames=frames, contiguous=False)
        mat_s = _time_items(mat_load, mat_items, args.raw_repeats)
        reader = FORMATS["ismrmrd"].open(raw_file)
        slab_s = median([_timed(lambda: reader.read_frames(1, list(range(frames)))) for _ in range(args.raw_repeats)])
        reader.close()
        raw_load.close()
        mat_load.close()
    return {
        "matrix": f"{nx}x{ny} (encoded {2 * nx}x{ny}), {nc} coils, {nz} slices, {nt} phases",
        "raw_file_mb": size_mb,
        "readouts": readouts,
        "index_s": index["index_s"],
        "readouts_per_s": readouts / index["index_s"],
        "mb_per_s": size_mb / index["index_s"],
        "mat_index_s": mat_index["index_s"],
        "frames": frames,
        "first_item_ms": first_s * 1e3,
        "raw_item_ms": raw_s * 1e3,
        "uncached_item_ms": uncached_s * 1e3,
        "mat_item_ms": mat_s * 1e3,
        "raw_over_mat": raw_s / mat_s,
        "raw_read_frames_ms": slab_s * 1e3,
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
