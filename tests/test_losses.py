"""Losses: Eagle (3 variants, golden values, an independent NumPy twin), SSIM_g, the VGG term, HyperCMRLoss."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from bundle.losses import (
    EagleLoss,
    HyperCMRLoss,
    PerceptualLoss,
    TrainerLoss,
    VGG19Features,
    fidelity_loss,
    kspace_regulariser,
    load_vgg19_state_dict,
    minmax,
    ssim_criterion,
    ssim_gaussian,
)
from bundle.losses import hypercmr as hypercmr_module
from bundle.losses.vgg import VGG19_CONV_SHAPES
from bundle.mri import crop_roi

VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def pattern(h: int, w: int, a: int, b: int, m: int, d: float) -> torch.Tensor:
    """``((a·i + b·j) mod m) / d`` as a (1, 1, h, w) float32 image (the inputs of the reference's golden values)."""
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    return torch.tensor(((a * i + b * j) % m) / d, dtype=torch.float32).view(1, 1, h, w)


# ---------------------------------------------------------------------------------------------- Eagle


def eagle_numpy(pred: np.ndarray, target: np.ndarray, p: int, c: float, kind: str, eps: float = 1e-8) -> float:
    """Float64 loop/np.fft transcription of the Eagle loss (docs/design.md, "Loss") for (B, H, W) arrays.

    Independent of the torch code.
    """
    kx = np.array([[-3.0, 0, 3], [-10, 0, 10], [-3, 0, 3]])
    e = 0.0 if kind == "gaussian" else eps

    def variance_map(img, k):
        b, hh, ww = img.shape
        padded = np.pad(img, ((0, 0), (1, 1), (1, 1)))
        g = np.zeros_like(img)
        for di in range(3):
            for dj in range(3):
                g += k[di, dj] * padded[:, di : di + hh, dj : dj + ww]
        h, w = hh // p, ww // p
        v = np.zeros((b, h, w))
        for bi in range(b):
            for i in range(h):
                for j in range(w):
                    v[bi, i, j] = np.var(g[bi, i * p : (i + 1) * p, j * p : (j + 1) * p], ddof=1) + e
        return v

    def weight(h, w):
        f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
        if kind == "gaussian":
            return 1 - np.exp(-((f - c) ** 2) / 2)
        butter = 1 / (1 + (c / (f + eps)) ** 4)
        return 1 - butter if kind == "hypercmr" else butter

    total = 0.0
    for k in (kx, kx.T):
        vp, vt = variance_map(pred, k), variance_map(target, k)
        h, w = vp.shape[1:]
        if kind == "gaussian":
            wgt = weight(h, w)
            total += np.mean(np.abs(wgt * np.abs(np.fft.fft2(vp)) - wgt * np.abs(np.fft.fft2(vt))))
            continue
        hp, wp = 2 ** int(np.ceil(np.log2(h))), 2 ** int(np.ceil(np.log2(w)))
        zs = []
        for v in (vp, vt):
            z = np.fft.fft2(np.pad(v, ((0, 0), (0, hp - h), (0, wp - w))))
            a = np.sqrt(z.real**2 + z.imag**2 + eps)
            zs.append(weight(hp, wp) * (a - a.mean()) / (a.std(ddof=1) + eps))
        total += np.mean(np.abs(zs[0] - zs[1])[:, :h, :w])
    return float(total)


GOLDEN_EAGLE = {
    (149, 102): {"hypercmr": 0.0565518662, "highpass": 0.100033492, "gaussian": 2.68775415},
    (448, 204): {"hypercmr": 0.0339293778, "highpass": 0.0763336644, "gaussian": 3.53777742},
}


@pytest.mark.parametrize("size", sorted(GOLDEN_EAGLE))
@pytest.mark.parametrize("kind", ["hypercmr", "highpass", "gaussian"])
def test_eagle_golden(size, kind):
    a = pattern(*size, 7, 13, 17, 16.0)
    b = pattern(*size, 5, 3, 11, 10.0)
    loss = EagleLoss(patch_size=3 if kind == "gaussian" else 5, filter=kind)
    # ≤ 1e-6 as the reference's golden values allow; the 448×204 Gaussian value carries ±3e-7 between implementations.
    assert loss(a, b).item() == pytest.approx(GOLDEN_EAGLE[size][kind], abs=1e-6)


@pytest.mark.parametrize("kind,p", [("hypercmr", 5), ("highpass", 5), ("gaussian", 3)])
def test_eagle_matches_numpy_twin(kind, p):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 37, 29, generator=gen)
    y = torch.rand(2, 1, 37, 29, generator=gen)
    got = EagleLoss(patch_size=p, filter=kind)(x, y).item()
    want = eagle_numpy(x[:, 0].double().numpy(), y[:, 0].double().numpy(), p, 0.5 if kind == "gaussian" else 0.35, kind)
    assert got == pytest.approx(want, abs=1e-6)


def test_eagle_zero_symmetric_and_batch_coupled():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 40, 35, generator=gen)
    y = torch.rand(2, 1, 40, 35, generator=gen)
    loss = EagleLoss()
    assert loss(x, x).item() == 0.0
    assert loss(x, y).item() == pytest.approx(loss(y, x).item(), rel=1e-6)
    # The z-score runs over the whole batch, so a batch is not the mean of its singles (docs/design.md, "Loss").
    singles = (loss(x[:1], y[:1]) + loss(x[1:], y[1:])) / 2
    assert abs(loss(x, y).item() - singles.item()) > 1e-6


def test_eagle_kernels_are_buffers():
    loss = EagleLoss()
    assert list(loss.parameters()) == []
    assert loss.kernel_x.flatten().tolist() == [-3, 0, 3, -10, 0, 10, -3, 0, 3]
    assert torch.equal(loss.kernel_y[0, 0], loss.kernel_x[0, 0].t())


@pytest.mark.parametrize("kind", ["hypercmr", "highpass", "gaussian"])
@pytest.mark.parametrize("constant", [True, False])
def test_eagle_gradients_finite(kind, constant):
    # 23×17 is not a multiple of the patch; constant images give zero variances and zero FFT bins.
    x = torch.full((2, 1, 23, 17), 0.5) if constant else torch.rand(2, 1, 23, 17)
    x.requires_grad_(True)
    y = torch.full((2, 1, 23, 17), 0.25) if constant else torch.rand(2, 1, 23, 17)
    val = EagleLoss(patch_size=3 if kind == "gaussian" else 5, filter=kind)(x, y)
    val.backward()
    assert torch.isfinite(val) and torch.isfinite(x.grad).all()


def test_eagle_weight_grids_monotone():
    def by_frequency(loss, h, w):
        f = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2).flatten()
        order = torch.argsort(f)
        return f[order], loss.weights(h, w).flatten()[order]

    f, low = by_frequency(EagleLoss(filter="hypercmr"), 32, 16)
    _, high = by_frequency(EagleLoss(filter="highpass"), 32, 16)
    assert (low.diff() <= 1e-7).all() and low[0] == 1.0
    assert (high.diff() >= -1e-7).all() and high[0] < 1e-20
    # The weight table of docs/design.md ("Loss"): W(c) = 1/2 for both Butterworth forms; hypercmr = 1/(1 + (f/c)^4).
    assert torch.allclose(low, 1 / (1 + (f / 0.35) ** 4), atol=1e-6)
    at_c = EagleLoss(filter="hypercmr", cutoff=0.25).weights(4, 1)[1, 0]
    assert at_c.item() == pytest.approx(0.5, abs=1e-6)
    assert EagleLoss(filter="gaussian").cutoff == 0.5 and EagleLoss().cutoff == 0.35


# ---------------------------------------------------------------------------------------------- SSIM


def test_ssim_golden():
    # pytorch_msssim's value (docs/design.md, "Loss"); MONAI's SSIMLoss gives 0.972578526 (not imported here: ~6 s).
    a = pattern(149, 102, 7, 13, 17, 16.0)
    c = 0.8 * a + 0.1 + 0.05 * pattern(149, 102, 3, 7, 5, 4.0)
    assert ssim_gaussian(c, a).item() == pytest.approx(0.972578645, abs=1e-7)
    per_sample = ssim_gaussian(torch.cat([c, a]), torch.cat([a, a]), reduction="none")
    assert per_sample.shape == (2,) and per_sample[1].item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_skimage_gaussian(rng):
    x = rng.random((2, 40, 33))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    got = ssim_gaussian(torch.tensor(x[:, None]).float(), torch.tensor(y[:, None]).float(), reduction="none")
    for i in range(2):
        # skimage's Gaussian mode (truncate 3.5 -> an 11-tap window) already drops a 5-pixel border, i.e. it
        # averages exactly the valid region, so no extra cropping is needed.
        want = structural_similarity(
            x[i], y[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
        )
        assert got[i].item() == pytest.approx(want, abs=1e-4)
        assert got[i].item() == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------------------------------------- VGG


def random_features_state_dict() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for i in VGG_CONVS:
        cin, cout = VGG19_CONV_SHAPES[i]
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * 0.05
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=gen) * 0.05
    return sd


def test_vgg19_features_layout():
    net = VGG19Features()
    assert len(net) == 37
    assert [i for i, m in enumerate(net) if isinstance(m, torch.nn.Conv2d)] == list(VGG_CONVS)
    assert [i for i, m in enumerate(net) if isinstance(m, torch.nn.MaxPool2d)] == [4, 9, 18, 27, 36]
    sd = random_features_state_dict()
    for extra in ({}, {"classifier.0.weight": torch.zeros(2, 2)}):
        result = net.load_state_dict({**sd, **extra}, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    result = VGG19Features().load_state_dict({k.removeprefix("features."): v for k, v in sd.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(net[28].weight, sd["features.28.weight"])


def test_vgg_weights_file_and_chain(tmp_path):
    sd = random_features_state_dict()
    trimmed = {k: v for k, v in sd.items() if int(k.split(".")[1]) in (0, 5, 10, 19, 28)}
    path = tmp_path / "vgg_trimmed.pth"
    torch.save(trimmed, path)
    assert set(load_vgg19_state_dict(path)) == {f"{i}.{k}" for i in (0, 5, 10, 19, 28) for k in ("weight", "bias")}
    loss = PerceptualLoss(path)
    assert loss.enabled and not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training
    x = torch.rand(1, 1, 8, 6)
    y = torch.rand(1, 1, 8, 6)
    feats = loss.features(x)
    assert [tuple(f.shape) for f in feats] == [(1, c, 8, 6) for c in (64, 128, 256, 512, 512)]
    # The chain is conv after conv: no ReLU, no pooling, no normalisation.
    h, want = x.expand(-1, 3, -1, -1), torch.zeros(())
    hy = y.expand(-1, 3, -1, -1)
    for i in (0, 5, 10, 19, 28):
        h = torch.nn.functional.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
        hy = torch.nn.functional.conv2d(hy, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
        want = want + ((h - hy) ** 2).mean()
    assert loss(x, y).item() == pytest.approx(want.item(), rel=1e-5)
    assert loss(x, x).item() == 0.0


def test_vgg_weights_errors_name_the_file(tmp_path):
    sd = random_features_state_dict()
    bad = tmp_path / "bad_shape.pth"
    torch.save({**sd, "features.5.bias": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad_shape.pth"):
        load_vgg19_state_dict(bad)
    partial = tmp_path / "partial.pth"
    torch.save({"0.weight": sd["features.0.weight"], "0.bias": sd["features.0.bias"]}, partial)
    with pytest.raises(ValueError, match="partial.pth.*features.5.weight"):
        PerceptualLoss(partial)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        PerceptualLoss(tmp_path / "missing.pth")


def test_vgg_disabled_warns_once_and_is_zero(caplog):
    with caplog.at_level(logging.WARNING):
        loss = PerceptualLoss(None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "vgg_weights_path is unset" in warnings[0].getMessage() and "HyperCMR reference" in warnings[0].getMessage()
    x = torch.rand(1, 1, 12, 12, requires_grad=True)
    out = loss(x, torch.rand(1, 1, 12, 12))
    assert out.shape == () and out.item() == 0.0 and out.device == x.device
    (x.sum() + out).backward()  # adding the disabled term to a graph is safe
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, comps = HyperCMRLoss()(*make_batch())
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert comps["vgg"].item() == 0.0


# ---------------------------------------------------------------------------------------------- HyperCMRLoss


def make_batch(b: int = 2, c: int = 3, h: int = 48, w: int = 40, seed: int = 0):
    """Random (pred, target) in the bundle's tensor contract; the ROI of 48×40 is 16×20."""
    gen = torch.Generator().manual_seed(seed)
    k_p = torch.complex(torch.randn(b, c, h, w, generator=gen), torch.randn(b, c, h, w, generator=gen)) * 1e-3
    k_t = torch.complex(torch.randn(b, c, h, w, generator=gen), torch.randn(b, c, h, w, generator=gen)) * 1e-3
    img_p = torch.rand(b, 1, h, w, generator=gen) * 1e-3
    img_t = torch.rand(b, 1, h, w, generator=gen) * 1e-3
    return (img_p, k_p), {"target": img_t, "kspace_target": k_t}


def golden_kspace():
    n = torch.arange(3840)
    k_p = (((n * 37) % 101) - 50).float() / 1000
    k_t = (((n * 53) % 97) - 48).float() / 1000
    return (torch.view_as_complex(k.reshape(1, 10, 16, 12, 2)) for k in (k_p, k_t))


def test_kspace_golden_values():
    k_p, k_t = golden_kspace()
    assert fidelity_loss(k_p, k_t).item() == pytest.approx(0.0394571349, abs=1e-7)
    assert kspace_regulariser(k_p).item() == pytest.approx(4.95273352, abs=1e-6)
    img = torch.rand(1, 1, 16, 12)
    only = HyperCMRLoss(w_ssim=0, w_eagle=0, w_vgg=0, w_fidelity=1.0, w_reg=1.0)
    _, comps = only((img, k_p), (img, torch.view_as_real(k_t)))  # target as a tuple, k-space as (..., 2)
    assert comps["fidelity"].item() == pytest.approx(0.0394571349, abs=1e-7)
    assert comps["reg"].item() == pytest.approx(4.95273352, abs=1e-6)


def test_hypercmr_terms_match_definitions():
    pred, target = make_batch()
    loss = HyperCMRLoss.code_preset()
    assert loss.weights == {"fidelity": 1.0, "ssim": 1.0, "eagle": 0.05, "vgg": 0.01, "reg": 0.01}
    total, comps = loss(pred, target)
    assert set(comps) == {"fidelity", "ssim", "eagle", "vgg", "reg"}
    assert total.item() == pytest.approx(sum(v.item() for v in comps.values()), rel=1e-6)
    (xp, kp), xt = pred, target["target"]
    roi_p, roi_t = minmax(crop_roi(xp)), minmax(crop_roi(xt))
    eagle = EagleLoss()
    assert comps["fidelity"].item() == pytest.approx(fidelity_loss(kp, target["kspace_target"]).item(), rel=1e-6)
    assert comps["ssim"].item() == pytest.approx(1 - ssim_gaussian(roi_p, roi_t).item(), rel=1e-6)
    assert comps["ssim"].item() == pytest.approx(ssim_criterion(xp, xt).item(), rel=1e-6)
    want_eagle = 0.05 * (0.6 * eagle(roi_p, roi_t) + 0.4 * eagle(minmax(xp), minmax(xt)))
    assert comps["eagle"].item() == pytest.approx(want_eagle.item(), rel=1e-6)
    assert comps["reg"].item() == pytest.approx(0.01 * kspace_regulariser(kp).item(), rel=1e-6)
    assert not any(v.requires_grad for v in comps.values())


@pytest.mark.parametrize("name", ["fidelity", "ssim", "eagle", "vgg", "reg"])
def test_hypercmr_component_off_is_not_computed(name, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError(f"{name} was computed with weight 0")

    if name in ("fidelity", "ssim"):
        monkeypatch.setattr(hypercmr_module, {"fidelity": "fidelity_loss", "ssim": "ssim_gaussian"}[name], boom)
    elif name == "reg":
        monkeypatch.setattr(hypercmr_module, "kspace_regulariser", boom)
    if name == "vgg":
        monkeypatch.setattr(hypercmr_module, "PerceptualLoss", boom)
    # VGG is off everywhere (no weights file); its own case checks the module is not even built.
    loss = HyperCMRLoss(**{"w_vgg": 0.0, f"w_{name}": 0.0})
    assert loss.eagle is None if name == "eagle" else loss.eagle is not None
    total, comps = loss(*make_batch())
    assert comps[name].item() == 0.0
    assert torch.isfinite(total)


def test_hypercmr_all_zero_inputs_are_finite():
    img = torch.zeros(1, 1, 48, 40, requires_grad=True)
    k = torch.zeros(1, 3, 48, 40, dtype=torch.complex64, requires_grad=True)
    tgt = {"target": torch.zeros(1, 1, 48, 40), "kspace_target": torch.zeros(1, 3, 48, 40, dtype=torch.complex64)}
    total, comps = HyperCMRLoss(w_vgg=0)((img, k), tgt)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in comps.values())
    assert torch.isfinite(img.grad).all() and torch.isfinite(k.grad).all()


def test_minmax_safe_division():
    const = torch.full((2, 1, 5, 4), 3.0, requires_grad=True)
    out = minmax(const)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(const.grad).all()
    x = torch.rand(2, 1, 5, 4)
    lo, hi = x.amin((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
    assert torch.equal(minmax(x), (x - lo) / (hi - lo))


def test_trainer_adapter_and_autocast():
    pred, target = make_batch(seed=3)
    loss = HyperCMRLoss(w_vgg=0)
    adapter = loss.for_trainer()
    assert isinstance(adapter, TrainerLoss)
    total = adapter(pred, target)
    assert total.shape == () and set(adapter.last_components) == {"fidelity", "ssim", "eagle", "vgg", "reg"}
    ref, _ = loss(pred, target)
    assert total.item() == ref.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = adapter(pred, target)
    assert under_amp.dtype == torch.float32 and under_amp.item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="disabled"):
        HyperCMRLoss(w_fidelity=0, w_ssim=0, w_eagle=0, w_vgg=0, w_reg=0)
