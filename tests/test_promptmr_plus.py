"""PromptMR+ options of bundle.networks.PromptMR: exact sizes, v1 unchanged when off, and the image-domain
cascade, adaptive input, decoder history and adjacent-frame sensitivities on tiny settings."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, TINY_UNET, F, H, W, make_kspace, make_mask
from torch import nn

import bundle.networks.promptmr as promptmr_module
from bundle.mri import fft2c, ifft2c, rss
from bundle.networks import CALayer, NormPromptUnet, PromptMR, PromptUnet, SensNet
from bundle.networks.promptmr import PromptMRPlusCascade
from bundle.networks.promptunet import CABSpec, Momentum

PLUS = dict(model_version="plus", adaptive_input=True, n_buffer=4, n_history=2, use_sens_adj=True)


def tiny_plus(seed: int = 0, num_cascades: int = 2, **kwargs) -> PromptMR:
    torch.manual_seed(seed)
    return PromptMR(num_cascades=num_cascades, **{**TINY, **PLUS, **kwargs})


def _counts(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())  # unique parameters: the shared PReLU is counted once
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class ZeroDenoiser(nn.Module):
    """Stands in for a cascade's NormPromptUnet: D = 0, history passed through."""

    def forward_history(self, x: torch.Tensor, history: list[torch.Tensor]):
        return torch.zeros_like(x), history


# ------------------------------------------------------------------------------------------- sizes


def test_paper_plus_parameter_counts_per_model_and_module():
    with torch.device("meta"):  # construct only
        model = PromptMR(model_version="plus", adaptive_input=True, n_buffer=4, n_history=11, use_sens_adj=True)
        sens = SensNet(use_sens_adj=True)
        cascade = PromptMRPlusCascade(NormPromptUnet(50, 50, n_history=11), adaptive_input=True)
    assert _counts(model) == (92_859_005, 82_491_005)
    assert _counts(sens) == (1_871_537, 1_456_817)
    assert _counts(cascade) == (7_582_290, 6_752_850)
    frozen = [p for n, p in model.named_parameters() if not p.requires_grad]
    assert all(n.endswith("prompt_param") for n, p in model.named_parameters() if not p.requires_grad)
    assert sum(p.numel() for p in frozen) == 10_368_000
    assert len({id(m) for m in model.modules() if isinstance(m, nn.PReLU)}) == 14  # 1 shared + 13 own
    unet = model.cascades[0].model.unet
    assert unet.feat_extract.in_channels == 50 and unet.conv_last.out_channels == 50
    assert model.sens_net.norm_unet.unet.feat_extract.in_channels == 10
    for level, chans in ((3, 120), (2, 96), (1, 72)):
        conv = getattr(unet, f"dec_level{level}").momentum.conv
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (12 * chans, chans, (1, 1))
        assert conv.bias is None


def test_plus_without_buffer_or_history_keeps_v1_tensors():
    with torch.device("meta"):
        v1, plus = PromptMR(), PromptMR(model_version="plus")
    assert {k: v.shape for k, v in v1.state_dict().items()} == {k: v.shape for k, v in plus.state_dict().items()}


# ----------------------------------------------------------------------------------------- v1 unchanged


def _literal_v1(model: PromptMR, k: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The v1 recurrence written out from the model's own submodules."""
    b, fc, h, w = k.shape
    c = fc // F
    m = mask.bool()
    sens = model.sens_net(k, m).view(b, F, c, h, w)
    y = k.view(b, F, c, h, w)
    kspace = y
    for cascade in model.cascades:
        dc = torch.where(m.unsqueeze(2), kspace - y, torch.zeros_like(y)) * cascade.dc_weight
        image = (ifft2c(kspace) * sens.conj()).sum(2)
        kspace = kspace - dc - fft2c(cascade.model(image).unsqueeze(2) * sens)
    centre = kspace[:, F // 2]
    return rss(ifft2c(centre), dim=1).unsqueeze(1), centre


def test_options_off_give_v1_bit_for_bit():
    torch.manual_seed(5)
    default = PromptMR(**TINY)
    torch.manual_seed(5)
    off = PromptMR(**TINY, model_version="v1", adaptive_input=False, n_buffer=4, n_history=0, use_sens_adj=False)
    sd, so = default.state_dict(), off.state_dict()
    assert list(sd) == list(so) and all(torch.equal(sd[n], so[n]) for n in sd)
    assert not any("momentum" in n for n in so)
    assert off.sens_net.norm_unet.unet.feat_extract.in_channels == 2
    mask = make_mask("per_frame")
    k = make_kspace(2, 3, mask)
    with torch.no_grad():
        a, b = default.eval()(k, mask), off.eval()(k, mask)
        lit = _literal_v1(off, k, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(lit[0], b[0]) and torch.equal(lit[1], b[1])
    # The same weights in the image-domain form compute something else.
    plus = PromptMR(**TINY, model_version="plus").eval()
    plus.load_state_dict(sd)
    with torch.no_grad():
        assert not torch.allclose(plus(k, mask)[0], a[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(adaptive_input=True), "model_version='plus'"),
        (dict(n_history=3), "model_version='plus'"),
        (dict(model_version="plus", adaptive_input=True, n_buffer=3), "n_buffer must be 4"),
        (dict(model_version="v2"), "model_version must be one of"),
        (dict(model_version="plus", n_history=-1), "n_history must be >= 0"),
    ],
)
def test_invalid_plus_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptMR(**{**TINY, **kwargs})


# ------------------------------------------------------------------------------------ forward, backward


@pytest.mark.parametrize("form", ["task1", "per_frame"])
def test_plus_shapes_dtypes_and_image_is_rss_of_kspace(form):
    model = tiny_plus().eval()
    mask = make_mask(form)
    k = make_kspace(2, 3, mask.expand(2, F, H, W))
    with torch.no_grad():
        image, kspace = model(k, mask)
    assert image.shape == (2, 1, H, W) and image.dtype == torch.float32
    assert kspace.shape == (2, 3, H, W) and kspace.dtype == torch.complex64
    assert torch.isfinite(image).all()
    torch.testing.assert_close(image[:, 0], rss(ifft2c(kspace), dim=1), rtol=1e-5, atol=1e-6)


def test_plus_gradients_reach_every_trainable_parameter():
    # Wider than TINY: 4-channel CALayers have one hidden unit, whose ReLU is often dead for a given input.
    wider = dict(n_feat0=16, feature_dim=(16, 20, 24), sens_n_feat0=16, sens_feature_dim=(16, 20, 24))
    model = tiny_plus(num_cascades=2, **wider).train()
    # Excuse only the CALayers whose ReLU never fired: their two 1x1 convs then get exactly zero gradient.
    alive = {}
    for name, module in model.named_modules():
        if isinstance(module, CALayer):
            module.conv_du[1].register_forward_hook(
                lambda m, i, out, key=name: alive.__setitem__(key, alive.get(key, False) or bool((out > 0).any()))
            )
    mask = make_mask("per_frame", b=1)
    image, kspace = model(make_kspace(1, 2, mask), mask)
    assert image.shape == (1, 1, H, W) and kspace.shape == (1, 2, H, W)
    (image.square().mean() + torch.view_as_real(kspace).square().mean()).backward()
    assert sum(alive.values()) > 0.7 * len(alive)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(".momentum." in n for n, _ in trainable)
    for name, p in model.named_parameters():
        if name.endswith("prompt_param"):
            assert not p.requires_grad and p.grad is None, name
            continue
        assert p.grad is not None, name
        if ".CA.conv_du." in name and not alive[name.split(".conv_du.")[0]]:
            continue
        # Unlike v1, the first cascade's data term is not zero: x0 - A^H A x0 != 0.
        assert p.grad.abs().sum() > 0, name


def test_data_consistency_on_sampled_lines_single_coil():
    """One coil: the unit-RSS map has |S| = 1, so E_S R_S = I and a step with D = 0, lambda = 1 restores every
    sampled line of the centre frame exactly."""
    model = tiny_plus(num_cascades=2).eval()
    model.cascades[1].model = ZeroDenoiser()
    with torch.no_grad():
        model.cascades[1].dc_weight.fill_(1.0)
    mask = make_mask("per_frame")
    y = make_kspace(2, 1, mask)
    with torch.no_grad():
        _, kspace = model(y, mask)
    sampled = mask[:, F // 2 : F // 2 + 1].to(torch.bool)
    y_c = y.view(2, F, 1, H, W)[:, F // 2]
    torch.testing.assert_close(kspace[sampled], y_c[sampled], rtol=0, atol=1e-5)
    assert kspace[~sampled].abs().mean() > 1e-3  # the first cascade filled the unsampled lines


def test_plus_cascade_matches_literal_formula():
    torch.manual_seed(3)
    b, coils = 2, 3
    mask = make_mask("per_frame").to(torch.bool)
    sens = torch.randn(b, F, coils, H, W, dtype=torch.complex64)
    x, x0, latent = (torch.randn(b, F, H, W, dtype=torch.complex64) for _ in range(3))
    cascade = PromptMRPlusCascade(NormPromptUnet(10 * F, 10 * F, n_history=2, **TINY_UNET), adaptive_input=True)
    with torch.no_grad():
        cascade.dc_weight.fill_(0.7)
        out, new_latent, history = cascade(x, x0, latent, mask.unsqueeze(2), sens, [])
        expanded = fft2c(x.unsqueeze(2) * sens) * mask.unsqueeze(2)
        normal = (ifft2c(expanded) * sens.conj()).sum(2)
        d = cascade.model(torch.cat([x, normal, latent, x0, normal - x0], 1))
        expected = x - 0.7 * (normal - x0) - d[:, :F]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new_latent, d[:, 2 * F : 3 * F], rtol=1e-5, atol=1e-5)
    assert len(history) == 3


def test_batch_equals_per_sample_loop():
    model = tiny_plus(num_cascades=2).eval()
    mask = make_mask("per_frame")  # different masks and ACS widths per sample
    k = make_kspace(2, 3, mask)
    with torch.no_grad():
        image, kspace = model(k, mask)
        for i in range(2):
            image_i, kspace_i = model(k[i : i + 1], mask[i : i + 1])
            torch.testing.assert_close(image[i : i + 1], image_i, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(kspace[i : i + 1], kspace_i, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------- the options


def test_decoder_history_is_pushed_newest_first():
    torch.manual_seed(6)
    unet = PromptUnet(4, 4, n_history=3, **TINY_UNET).eval()
    x1, x2 = torch.randn(2, 4, 16, 8), torch.randn(2, 4, 16, 8)
    with torch.no_grad():
        _, h1 = unet.forward_history(x1, [])
        _, h2 = unet.forward_history(x2, h1)
        _, h3 = unet.forward_history(x2, h2)
    assert [tuple(h.shape) for h in h1] == [(2, 30, 2, 1), (2, 24, 4, 2), (2, 18, 8, 4)]
    for a, b, c in zip(h1, h2, h3):
        chans = a.shape[1] // 3
        assert torch.equal(a, a[:, :chans].repeat(1, 3, 1, 1))  # the first feature tiled
        assert torch.equal(b[:, chans:], a[:, :-chans]) and not torch.equal(b[:, :chans], a[:, :chans])
        assert torch.equal(c[:, chans:], b[:, :-chans])
    momentum = Momentum(6, 2, CABSpec(act=nn.PReLU()))
    feat = torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(momentum(feat), momentum(feat, feat.repeat(1, 2, 1, 1)))
    with pytest.raises(ValueError, match="history"):
        unet.forward_history(x1, h1[:2])


def test_adjacent_frame_sensitivities_use_one_item_per_coil():
    torch.manual_seed(7)
    sens = SensNet(F, radial_acs_size=4, use_sens_adj=True, **TINY_UNET).eval()
    mask = make_mask("per_frame")
    k = make_kspace(2, 3, mask)
    seen = []
    sens.norm_unet.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        maps = sens(k, mask, 4)
        sens.chunk_size = 4  # 6 items -> chunks of 4 and 2
        chunked = sens(k, mask, 4)
    assert seen == [(6, F, H, W), (4, F, H, W), (2, F, H, W)]
    torch.testing.assert_close(rss(maps.view(2, F, 3, H, W), dim=2), torch.ones(2, F, H, W))
    torch.testing.assert_close(chunked, maps, rtol=1e-6, atol=1e-6)
    # Coil c of sample b is one item holding its F frames: scaling it scales nothing else.
    with torch.no_grad():
        acs = sens.acs_mask(mask.bool(), H, 4).unsqueeze(2)
        images = ifft2c(k.view(2, F, 3, H, W) * acs)
        raw = sens.norm_unet(images[1, :, 2].unsqueeze(0))[0]
    expected = raw / rss(torch.stack([sens.norm_unet(images[1, :, c].unsqueeze(0))[0] for c in range(3)], 1), dim=1)
    torch.testing.assert_close(maps.view(2, F, 3, H, W)[1, :, 2], expected, rtol=1e-5, atol=1e-5)


def test_checkpointing_and_chunking_match_plain_training_step(monkeypatch):
    mask = make_mask("per_frame")
    k = make_kspace(2, 2, mask)
    results = []
    for use_ckpt in (False, True):
        model = tiny_plus(num_cascades=2, use_checkpoint=use_ckpt, sens_chunk_size=3 if use_ckpt else None).train()
        calls = []
        real_checkpoint = torch.utils.checkpoint.checkpoint

        def counting(fn, *args, _calls=calls, _ckpt=real_checkpoint, **kwargs):
            _calls.append(type(fn).__name__)
            return _ckpt(fn, *args, **kwargs)

        monkeypatch.setattr(promptmr_module, "checkpoint", counting)
        monkeypatch.setattr("bundle.networks.sensnet.checkpoint", counting)
        out = model(k, mask)
        (out[0].square().mean() + torch.view_as_real(out[1]).square().mean()).backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        # B*C = 4 SensNet items in chunks of 3 -> 2 chunks; 2 cascades.
        assert calls == ([] if not use_ckpt else ["NormPromptUnet"] * 2 + ["PromptMRPlusCascade"] * 2)
    (o0, g0), (o1, g1) = results
    torch.testing.assert_close(o1[0], o0[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(o1[1], o0[1], rtol=1e-5, atol=1e-6)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_plus_torchscript_parity_and_save_load(tmp_path):
    model = tiny_plus(num_cascades=2, use_checkpoint=True, sens_chunk_size=4).eval()
    scripted = torch.jit.script(model)
    mask = make_mask("per_frame")
    k = make_kspace(2, 3, mask)
    path = tmp_path / "plus.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        image, kspace = model(k, mask, 4)
        for net in (scripted, loaded):
            s_image, s_kspace = net(k, mask, 4)
            torch.testing.assert_close(s_image, image, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(s_kspace, kspace, rtol=1e-5, atol=1e-5)


def test_plus_autocast_keeps_fp32_outputs():
    model = tiny_plus(num_cascades=2).eval()
    mask = make_mask("task1")
    k = make_kspace(2, 2, mask.expand(2, F, H, W))
    with torch.no_grad():
        ref_image, _ = model(k, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image, kspace = model(k, mask)
    assert image.dtype == torch.float32 and kspace.dtype == torch.complex64
    torch.testing.assert_close(image, ref_image, rtol=0.1, atol=0.05 * ref_image.max().item())
