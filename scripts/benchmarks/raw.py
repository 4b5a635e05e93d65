"""Speed of the ISMRMRD reader: header scan (readouts/s) and one slice with its neighbour frames, against a .mat file.

Usage, from the repository root::

    python -m scripts.benchmarks.raw [--dir /tmp/rawbench] [--nx 128] [--ny 128] [--nc 8] [--nz 4] [--nt 12]

Writes one synthetic ISMRMRD file (``bundle.data.demo_ismrmrd``; about 100 MB at the defaults) and a MATLAB v7.3
file of the same recon-matrix k-space, then prints the median of repeated runs of ``scan_raw_file`` (cold: a new
process-level plan each time) and of ``read_frames(z, 5 neighbour frames)`` of both readers. Figures only, no
assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from bundle.data import ismrmrd as raw  # noqa: E402
from bundle.data.demo_ismrmrd import write_ismrmrd_phantom  # noqa: E402
from bundle.data.matio import MatSliceReader, write_mat  # noqa: E402
from bundle.mri import neighbour_frame_indices  # noqa: E402


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="where to write the two files (default: a temp folder)")
    for name, default in (("nx", 128), ("ny", 128), ("nc", 8), ("nz", 4), ("nt", 12)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="rawbench-"))
    path = folder / "bench.h5"
    start = time.perf_counter()
    write_ismrmrd_phantom(path, seed=0, nx=args.nx, ny=args.ny, nc=args.nc, nz=args.nz, nt=args.nt,
                          noise_readouts=64, noise=0.01)  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")

    def cold_scan():
        raw._PLANS.clear()
        return raw.scan_raw_file(path)

    series = cold_scan()[0]
    n_readouts = int(next(iter(raw._PLANS.values()))[None].index.size) + 64  # imaging + noise readouts
    scan_s = _median_s(cold_scan, args.repeats)
    print(f"scan_raw_file: {scan_s * 1e3:.1f} ms for {n_readouts} readouts = {n_readouts / scan_s:,.0f} readouts/s")

    reader = raw.RawSliceReader(series)
    volume = np.stack([reader.read_frames(z, range(reader.nt)) for z in range(reader.nz)], axis=1)
    mat = folder / "bench.mat"
    write_mat(mat, kspace_full=volume)
    print(f"wrote {mat} ({mat.stat().st_size / 1e6:.1f} MB), recon k-space {volume.shape} (nt, nz, nc, ny, nx)")
    mat_reader = MatSliceReader(mat)
    z, t = reader.nz // 2, reader.nt // 2
    frames = neighbour_frame_indices(t, reader.nt, 5)
    np.testing.assert_allclose(mat_reader.read_frames(z, frames), reader.read_frames(z, frames), atol=1e-4)
    for label, prewhiten in (("prewhitened", True), ("raw", False)):
        r = raw.RawSliceReader(series, prewhiten=prewhiten)
        r.read_frames(z, frames)
        s = _median_s(lambda r=r: r.read_frames(z, frames), args.repeats)
        print(f"RawSliceReader.read_frames ({label}, 5 frames): {s * 1e3:.1f} ms")
    m = _median_s(lambda: mat_reader.read_frames(z, frames), args.repeats)
    print(f"MatSliceReader.read_frames (5 frames, memory-mapped): {m * 1e3:.1f} ms")
    m2 = MatSliceReader(mat, memory_map=False)
    m2.read_frames(z, frames)
    h = _median_s(lambda: m2.read_frames(z, frames), args.repeats)
    print(f"MatSliceReader.read_frames (5 frames, h5py): {h * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
