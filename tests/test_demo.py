"""Synthetic CMRxRecon2024 tree: layout, file format, consistency, value ranges, determinism, phantom realism."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from bundle.data.demo import SERIES, make_demo_dataset, resolve_size, series_kspace, series_shape
from bundle.data.index import assign_groups, scan_dataset
from bundle.data.matio import read_mat
from bundle.data.phantom import coil_sensitivities, contraction, random_anatomy, render_images
from bundle.mri import ifft2c_np, rss_np

# Per-volume ranges of the real training data (docs/design.md, "Data format").
KMAX_RANGE = (1.2e-3, 1.8e-2)
RSS_RANGE = (7.8e-4, 7.7e-3)
TRAINING_STEMS = ["cine_sax", "cine_lax", "cine_lvot", "aorta_sag", "aorta_tra", "T1map", "T2map", "tagging"]
NT = {"cine_sax": 12, "cine_lax": 12, "cine_lvot": 12, "aorta_sag": 12, "aorta_tra": 12, "T1map": 9, "T2map": 3}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, size="tiny")


def _rel(tree: Path) -> set[str]:
    return {p.relative_to(tree).as_posix() for p in tree.rglob("*.mat")}


def _rss(kspace: np.ndarray) -> np.ndarray:
    """RSS images of 5-D file-order k-space ``(nt, nz, nc, ny, nx) -> (nt, nz, ny, nx)``."""
    return rss_np(ifft2c_np(kspace), axis=2)


def test_layout(tree):
    assert tree.parts[-2:] == ("ChallengeData", "MultiCoil")
    assert "SYNTHETIC" in (tree.parent.parent / "DEMO_DATASET.txt").read_text()
    files = _rel(tree)
    modality = {stem: spec.modality for stem, spec in SERIES.items()}
    for stem in TRAINING_STEMS:
        patients = ["P001"] if modality[stem] == "Aorta" else ["P001", "P002"]  # P002 has no Aorta
        for pid in patients:
            train = f"{modality[stem]}/TrainingSet"
            assert f"{train}/FullSample/{pid}/{stem}.mat" in files
            for r in (4, 8, 10):
                assert f"{train}/Mask_Task1/{pid}/{stem}_mask_Uniform{r}.mat" in files
            kt = [f for f in files if f.startswith(f"{train}/Mask_Task2/{pid}/{stem}_mask_kt")]
            for pattern in ("ktUniform", "ktGaussian", "ktRadial"):
                assert any(f"_mask_{pattern}" in f for f in kt), (stem, pattern)
    assert not any(f.startswith("Aorta/TrainingSet/FullSample/P002/") for f in files)
    for stem, spec in SERIES.items():
        for r in (4, 8, 10):
            assert f"{spec.modality}/ValidationSet/UnderSample_Task1/P001/{stem}_kus_Uniform{r}.mat" in files
            assert f"{spec.modality}/ValidationSet/Mask_Task1/P001/{stem}_mask_Uniform{r}.mat" in files
    # Unseen contrasts: ValidationSet Task 1 only.
    assert not any(f.startswith(("Flow2d/TrainingSet", "BlackBlood/TrainingSet")) for f in files)
    assert not any("UnderSample_Task2" in f for f in files if f.startswith(("Flow2d", "BlackBlood")))
    # Task 2 validation: three kus files per series, one per pattern, each with its own mask.
    task2 = sorted(f for f in files if "/UnderSample_Task2/" in f and "/cine_lax_kus_" in f)
    assert [re.search(r"_kus_([A-Za-z]+)\d+\.mat$", f)[1] for f in task2] == ["ktGaussian", "ktRadial", "ktUniform"]
    for f in task2:
        assert f.replace("UnderSample_Task", "Mask_Task").replace("_kus_", "_mask_") in files


def test_shapes_dtypes_and_groups(tree):
    records = assign_groups(scan_dataset(tree))
    for r in records:
        k = read_mat(r.path)
        assert k.dtype == np.complex64
        if r.series == "blackblood":
            assert k.ndim == 4 and k.shape[1] == 10
        else:
            assert k.ndim == 5 and k.shape[2] == 10
            assert k.shape[0] == NT.get(r.series, k.shape[0]), r.path
        assert r.nx > r.ny >= 24 and r.nz <= 2
    full = [r for r in records if r.kind == "full"]
    assert {r.series for r in full} == set(TRAINING_STEMS)
    sax_ny = {r.ny for r in full if r.series == "cine_sax"}
    lax_ny = {r.ny for r in full if r.series == "cine_lax"}
    assert len(sax_ny) == 2 and len(lax_ny) == 2
    assert {f"cine_sax{ny}" for ny in sax_ny} <= {r.group for r in full}
    ny, nx = read_mat(tree / "Cine/TrainingSet/FullSample/P001/cine_sax.mat").shape[-2:]
    mask1 = tree / "Cine/TrainingSet/Mask_Task1/P001/cine_sax_mask_Uniform4.mat"
    mask2 = next(tree.glob("Cine/TrainingSet/Mask_Task2/P001/cine_sax_mask_ktRadial*.mat"))
    for path, shape in ((mask1, (ny, nx)), (mask2, (12, ny, nx))):
        with h5py.File(path, "r") as f:  # stored as MATLAB double, like the official masks
            assert f["mask"].shape == shape and f["mask"].dtype == np.float64
            assert f["mask"].attrs["MATLAB_class"] == b"double"
    m1 = read_mat(mask1)
    assert set(np.unique(m1)) == {0.0, 1.0} and np.all(m1 == m1[:, :1])  # constant along kx


def test_kus_is_masked_ground_truth(tree):
    kus_files = sorted(tree.glob("*/ValidationSet/UnderSample_Task*/P001/*_kus_*.mat"))
    stems = {f.name.split("_kus_")[0] for f in kus_files}
    truth = {stem: series_kspace(stem, "P001", "ValidationSet", seed=0, size="tiny") for stem in stems}
    for f in kus_files:
        stem = f.name.split("_kus_")[0]
        mask_file = Path(str(f).replace("UnderSample_Task", "Mask_Task").replace("_kus_", "_mask_"))
        kus, mask = read_mat(f), read_mat(mask_file)
        m = mask.astype(np.float32)
        m = m[:, None, None] if m.ndim == 3 else m
        np.testing.assert_array_equal(kus, truth[stem] * m)
        assert np.count_nonzero(kus) == np.count_nonzero(np.broadcast_to(m, kus.shape))
    bb = read_mat(tree / "BlackBlood/ValidationSet/UnderSample_Task1/P001/blackblood_kus_Uniform4.mat")
    assert bb.ndim == 4
    full = read_mat(tree / "Cine/TrainingSet/FullSample/P002/cine_lax.mat")
    np.testing.assert_array_equal(full, series_kspace("cine_lax", "P002", seed=0, size="tiny"))


def test_value_ranges(tree):
    for f in sorted(tree.glob("*/TrainingSet/FullSample/*/*.mat")):
        k = read_mat(f)
        assert np.isfinite(k).all()
        assert KMAX_RANGE[0] <= np.abs(k).max() <= KMAX_RANGE[1], f
        assert RSS_RANGE[0] <= _rss(k).max() <= RSS_RANGE[1], f


def test_determinism(tree, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=0, size="tiny")
    assert _rel(again) == _rel(tree)
    for rel in sorted(_rel(tree)):
        a, b = read_mat(tree / rel), read_mat(again / rel)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), rel
    other = series_kspace("cine_sax", "P001", seed=1, size="tiny")
    assert not np.array_equal(other, read_mat(tree / "Cine/TrainingSet/FullSample/P001/cine_sax.mat"))


def _distances(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative distance of every frame to frame 0, and between consecutive frames (cyclically)."""
    norm = np.linalg.norm(img[0])
    nt = img.shape[0]
    dist = np.array([np.linalg.norm(img[t] - img[0]) for t in range(nt)]) / norm
    step = np.array([np.linalg.norm(img[(t + 1) % nt] - img[t]) for t in range(nt)]) / norm
    return dist, step


def test_cardiac_motion_is_smooth_and_periodic(rng):
    c = contraction(12)
    assert c[0] == 0 and 3 <= c.argmax() <= 5  # end-diastole at frame 0, end-systole before mid-cycle
    img = np.abs(render_images("cine_sax", 12, 1, 40, 80, random_anatomy(rng), rng))[:, 0]  # noise-free
    dist, step = _distances(img)
    peak = dist.argmax()
    assert dist[1:].min() > 0.003  # every frame moves
    assert 2 <= peak <= 6 and dist[peak] > 0.05
    assert dist[-1] < 0.25 * dist[peak]  # periodic: the last frame is back near frame 0
    assert step.max() < 0.6 * dist[peak]  # smooth: no jumps between consecutive frames


def test_cine_files_move(tree):
    img = _rss(read_mat(tree / "Cine/TrainingSet/FullSample/P001/cine_lax.mat"))[:, 0]
    dist, _ = _distances(img)
    # With noise alone every frame would be about as far from frame 0 as frame 1 is.
    assert dist.max() > 2 * dist[1] and dist.argmax() < 8


def test_mapping_changes_contrast_not_shape(rng):
    anatomy = random_anatomy(rng)
    t2 = np.abs(render_images("T2map", 3, 1, 32, 64, anatomy, rng))[:, 0]
    assert t2[0].mean() > t2[1].mean() > t2[2].mean()  # T2 decay with echo time
    t1 = np.abs(render_images("T1map", 9, 1, 32, 64, anatomy, rng))[:, 0]
    ratio = t1 / (t1.max(0, keepdims=True) + 1e-6)
    assert np.std(ratio[:, t1.max(0) > 0.2].mean(1)) > 0.05  # frames differ in contrast
    with pytest.raises(ValueError, match="at most 3 frames"):
        render_images("T2map", 4, 1, 32, 64, anatomy, rng)


def test_coil_sensitivities_are_smooth(rng):
    sens = coil_sensitivities(10, 2, 48, 96, random_anatomy(rng), rng)
    assert sens.shape == (2, 10, 48, 96) and sens.dtype == np.complex64
    assert np.abs(sens).max() <= 1.0 and np.abs(sens).min() > 0

    def low_frequency_fraction(x):
        # A Hann window removes the jump between opposite edges, which the FFT would see as high frequency.
        window = np.hanning(x.shape[-2])[:, None] * np.hanning(x.shape[-1])[None, :]
        spectrum = np.abs(np.fft.fftshift(np.fft.fft2(x * window), axes=(-2, -1))) ** 2
        return spectrum[..., 24 - 6 : 24 + 6, 48 - 12 : 48 + 12].sum((-2, -1)) / spectrum.sum((-2, -1))

    assert low_frequency_fraction(sens).min() > 0.99
    # The check can fail: white noise keeps only about 1/16 of its energy in that block.
    assert low_frequency_fraction(rng.standard_normal((48, 96))) < 0.2


def test_refuses_to_overwrite(tmp_path):
    root = tmp_path / "d"
    make_demo_dataset(root, size="tiny", num_train_patients=1, num_val_patients=0)
    (root / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        make_demo_dataset(root, size="tiny", num_train_patients=1, num_val_patients=0)
    out = make_demo_dataset(root, seed=3, size="tiny", overwrite=True, num_train_patients=0, num_val_patients=1)
    assert (root / "keep.txt").read_text() == "mine"
    assert not any(out.glob("*/TrainingSet"))  # the old tree was replaced, not merged
    assert "seed: 3" in (root / "DEMO_DATASET.txt").read_text()


def test_sizes_and_arguments():
    small = {stem: series_shape(stem, resolve_size("small")) for stem in SERIES}
    for shapes in small.values():
        for nx, ny in shapes:
            assert nx % 2 == 0 and ny % 2 == 0 and nx > ny >= 24 and nx <= 96
    assert len({ny for _, ny in small["cine_sax"]}) == 3
    assert series_shape("cine_sax", resolve_size("real")) == [(512, 246), (512, 204), (512, 162)]
    assert series_shape("T2map", resolve_size(0.5)) == [(192, 58)]
    for bad in ("huge", 0, 1.5, "nan"):
        with pytest.raises(ValueError):
            resolve_size(bad)
    with pytest.raises(ValueError, match="seed"):
        make_demo_dataset("unused", seed=-1)


def test_cli(tmp_path, capsys):
    from scripts.make_demo_data import main

    root = tmp_path / "cli"
    assert main(["--root", str(root), "--size", "tiny", "--train-patients", "1", "--val-patients", "0"]) == 0
    out = capsys.readouterr().out
    assert str(root / "ChallengeData" / "MultiCoil") in out and ".mat files" in out
    assert main(["--root", str(root), "--size", "tiny"]) == 2  # exists: refused without --overwrite
    assert "overwrite" in capsys.readouterr().err
