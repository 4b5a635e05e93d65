"""Challenge evaluation: run4Ranking selection/crop and the skimage metrics (docs/design.md, "Evaluation")."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bundle.metrics import aggregate, challenge_metrics, run4ranking, select_frames, select_slices, series_type


@pytest.mark.parametrize(
    "nz,want",
    [(1, [0]), (2, [0, 1]), (3, [0, 1]), (5, [1, 2]), (6, [1, 2]), (9, [3, 4]), (10, [3, 4])]
    + [(11, [4, 5]), (12, [4, 5]), (13, [5, 6])],
)
def test_slice_selection(nz, want):
    assert select_slices(nz) == want


def test_series_type_and_frames():
    assert series_type("cine_sax_kus_Uniform4.mat") == "cine"
    assert series_type("/x/Mapping/ValidationSet/P001/T1map_kus_ktRadial8.mat") == "mapping"
    assert series_type("T2map") == "mapping"
    assert series_type("blackblood_kus_Uniform10") == "blackblood"
    assert series_type("aorta_tra") == series_type("tagging") == series_type("flow2d") == "cine"
    assert select_frames(12, "cine") == [0, 1, 2]
    assert select_frames(2, "cine") == [0, 1]
    assert select_frames(9, "mapping") == list(range(9))


def index_volume(shape):
    """Coil-combined volume whose value ``1000·x + y`` encodes its in-plane position (exact in float32)."""
    xy = np.arange(shape[0])[:, None] * 1000.0 + np.arange(shape[1])[None, :]
    return np.broadcast_to(xy.reshape(xy.shape + (1,) * (len(shape) - 2)), shape)


@pytest.mark.parametrize(
    "name,shape,want,start",
    [
        ("cine_sax", (512, 246, 10, 12), (171, 123, 2, 3), (171, 62)),
        ("cine_lvot", (416, 168, 1, 12), (139, 84, 1, 3), (139, 42)),
        ("T1map", (512, 144, 6, 9), (171, 72, 2, 9), (171, 36)),
        ("blackblood", (448, 204, 4), (149, 102, 2), (150, 51)),
    ],
)
def test_run4ranking_shapes_and_crop(name, shape, want, start):
    out = run4ranking(index_volume(shape), f"{name}_kus_Uniform4.mat", coil_combined=True)
    assert out.shape == want and out.dtype == np.float32
    r0, c0 = start
    assert out[0, 0].flat[0] == r0 * 1000 + c0
    assert out[-1, -1].flat[-1] == (r0 + want[0] - 1) * 1000 + (c0 + want[1] - 1)


def test_run4ranking_rss_over_coils(rng):
    # (nx, ny, nc, nz, nt) = (12, 10, 3, 5, 4): ROI 4×5 at rows [4, 8), cols [3, 8); slices 1, 2; frames 0-2.
    coils = rng.standard_normal((12, 10, 3, 5, 4)) + 1j * rng.standard_normal((12, 10, 3, 5, 4))
    out = run4ranking(coils.astype(np.complex64), "aorta_sag")
    want = np.sqrt((np.abs(coils) ** 2).sum(2))[4:8, 3:8][:, :, [1, 2]][..., [0, 1, 2]]
    np.testing.assert_allclose(out, want, rtol=1e-6)
    blackblood = run4ranking(coils[..., 0], "blackblood")
    np.testing.assert_allclose(blackblood, np.sqrt((np.abs(coils[..., 0]) ** 2).sum(2))[4:8, 3:8, 1:3], rtol=1e-6)
    with pytest.raises(ValueError, match="cine_sax"):
        run4ranking(coils[..., 0], "cine_sax")


@pytest.mark.parametrize("variant", ["2023", "2025"])
def test_challenge_metrics_match_skimage(rng, variant):
    gt = rng.random((3, 24, 20)).astype(np.float32) * 5e-3
    pred = (gt + 4e-4 * rng.standard_normal(gt.shape)).astype(np.float32)
    res = challenge_metrics(pred, gt, variant=variant)
    for i in range(3):
        if variant == "2023":
            g, p = gt[i] / gt[i].max(), pred[i] / pred[i].max()
        else:
            g, p = gt[i] / np.percentile(np.abs(gt[i]), 99.5), pred[i] / np.percentile(np.abs(pred[i]), 99.5)
        g, p = g.astype(np.float64), p.astype(np.float64)
        assert res["psnr"][i] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=g.max()), abs=1e-5)
        assert res["ssim"][i] == pytest.approx(structural_similarity(g, p, data_range=g.max()), abs=1e-6)
        assert res["nmse"][i] == pytest.approx(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2, abs=1e-6)
    assert res["ssim_mean"] == pytest.approx(res["ssim"].mean())
    same = challenge_metrics(gt, gt)
    assert same["ssim_mean"] == pytest.approx(1.0) and same["nmse_mean"] == 0.0 and np.isinf(same["psnr_mean"])
    # Each image is normalised by its own max: a global rescale of the prediction changes nothing.
    assert challenge_metrics(pred * 7, gt)["ssim"] == pytest.approx(challenge_metrics(pred, gt)["ssim"], abs=1e-7)


def test_aggregate_unweighted_over_modalities():
    rows = [
        {"file": "a", "modality": "Cine", "ssim": np.array([0.8, 1.0]), "psnr": 30.0, "nmse": 0.1},
        {"file": "b", "modality": "Cine", "ssim": 0.7, "psnr": 20.0, "nmse": 0.3},
        {"file": "c", "modality": "Mapping", "ssim": 0.5, "psnr": 10.0, "nmse": 0.5},
    ]
    out = aggregate(rows)
    assert out["per_file"][0]["ssim"] == pytest.approx(0.9)
    assert out["per_modality"]["Cine"] == {"ssim": pytest.approx(0.8), "psnr": 25.0, "nmse": 0.2, "n_files": 2}
    assert out["overall"]["ssim"] == pytest.approx((0.8 + 0.5) / 2)
    assert out["overall"]["psnr"] == pytest.approx(17.5)


def test_challenge_metrics_variants(rng):
    gt = rng.random((2, 24, 20)) + 0.1
    pred = gt + 0.05 * rng.standard_normal(gt.shape)
    ssim = {v: challenge_metrics(pred, gt, variant=v)["ssim"] for v in ("2023", "2024", "2025")}
    assert len({tuple(s) for s in ssim.values()}) == 3  # three different normalisations
    g, p = (gt[1] - gt[1].mean()) / gt[1].std(), (pred[1] - pred[1].mean()) / pred[1].std()
    assert ssim["2024"][1] == pytest.approx(structural_similarity(g, p, data_range=g.max()), abs=1e-12)
    with pytest.raises(ValueError, match="'2023', '2024', '2025'"):
        challenge_metrics(pred, gt, variant="2022")
