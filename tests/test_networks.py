"""Tests for bundle.networks: PromptUnet, NormPromptUnet, SensNet and PromptMR (tiny configurations only)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TINY_UNET, F, H, W, cartesian_line, make_kspace, make_mask, tiny_model
from torch import nn

import bundle.networks.promptmr as promptmr_module
import bundle.networks.promptunet as promptunet_module
from bundle.mri import fft2c, ifft2c, rss
from bundle.networks import (
    CALayer,
    NormPromptUnet,
    PromptMR,
    PromptMRCascade,
    PromptUnet,
    SensNet,
    cartesian_acs_columns,
    infer_num_low_frequencies,
    is_cartesian_mask,
    sens_expand,
    sens_reduce,
)


def ref_n_low(line: list[bool]) -> int:
    """Reference ACS-width rule written as a plain loop."""
    c = len(line) // 2
    left = 0
    while c - 1 - left >= 0 and line[c - 1 - left]:
        left += 1
    right = 0
    while c + right < len(line) and line[c + right]:
        right += 1
    return max(2 * min(left, right), 1)


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("coils", [1, 3, 4])
@pytest.mark.parametrize("form", ["task1", "per_frame", "single_2d", "frames_1d"])
def test_output_shapes_and_dtypes(coils, form):
    model = tiny_model(num_cascades=1).eval()
    mask = make_mask(form)
    k = make_kspace(2, coils, mask.expand(2, F, H, W))
    with torch.no_grad():
        image, kspace = model(k, mask)
    assert image.shape == (2, 1, H, W) and image.dtype == torch.float32
    assert kspace.shape == (2, coils, H, W) and kspace.dtype == torch.complex64
    assert torch.isfinite(image).all() and torch.isfinite(torch.view_as_real(kspace)).all()
    torch.testing.assert_close(image[:, 0], rss(ifft2c(kspace), dim=1))


def test_bool_and_float_masks_agree():
    model = tiny_model(num_cascades=1).eval()
    mask = make_mask("per_frame")
    k = make_kspace(2, 2, mask)
    with torch.no_grad():
        a = model(k, mask)
        b = model(k, mask.to(torch.bool))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_invalid_inputs_raise():
    model = tiny_model(num_cascades=1).eval()
    mask = make_mask("task1")
    k = make_kspace(2, 2, mask.expand(2, F, H, W))
    with pytest.raises(ValueError):
        model(k[:, :-1], mask)
    with pytest.raises(ValueError):
        model(k, mask.unsqueeze(-1))
    with pytest.raises(ValueError):
        model(k, mask.expand(2, 3, 1, W))


# ------------------------------------------------------------------------------------- parameter counts


def _counts(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())  # unique parameters: the shared PReLU is counted once
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.mark.parametrize(
    "num_cascades, total, trainable",
    [(12, 81_528_317, 71_160_317), (16, 108_082_753, 94_396_993)],
)
def test_paper_parameter_counts(num_cascades, total, trainable):
    with torch.device("meta"):  # construct only: no memory, no forward
        model = PromptMR(num_cascades=num_cascades)
    assert _counts(model) == (total, trainable)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.endswith("prompt_param") for n in frozen)
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == total - trainable
    prelus = {id(m) for m in model.modules() if isinstance(m, nn.PReLU)}
    assert len(prelus) == num_cascades + 2  # one shared + one own per U-Net
    if num_cascades == 12:
        assert len(model.state_dict()) == 1910


def test_module_parameter_counts_and_keys():
    with torch.device("meta"):
        sens = SensNet()
        cascade = PromptMRCascade(NormPromptUnet(10, 10))
    assert _counts(sens) == (1_865_009, 1_450_289)
    assert _counts(cascade) == (6_638_610, 5_809_170)
    keys = set(cascade.state_dict())
    for key in [
        "dc_weight",
        "model.unet.feat_extract.weight",
        "model.unet.enc_level1.encoder.0.body.1.weight",
        "model.unet.enc_level2.encoder.2.CA.conv_du.2.weight",
        "model.unet.enc_level3.down.bias",
        "model.unet.skip_attn1.skip_attn.0.body.0.weight",
        "model.unet.bottleneck.2.body.2.weight",
        "model.unet.prompt_level3.prompt_param",
        "model.unet.prompt_level1.linear_layer.bias",
        "model.unet.prompt_level2.dec_conv3x3.weight",
        "model.unet.dec_level3.fuse.2.CA.conv_du.0.weight",
        "model.unet.dec_level1.reduce.weight",
        "model.unet.dec_level2.up.1.weight",
        "model.unet.dec_level1.ca.body.0.weight",
        "model.unet.conv_last.weight",
    ]:
        assert key in keys, key
    assert cascade.model.unet.conv_last.kernel_size == (5, 5)
    assert cascade.model.unet.prompt_level1.prompt_param.shape == (1, 5, 24, 64, 64)


def test_prelu_sharing():
    model = tiny_model()
    unets = [model.sens_net.norm_unet.unet] + [c.model.unet for c in model.cascades]
    shared = unets[0].bottleneck[0].body[1]
    own = [u.enc_level1.encoder[0].body[1] for u in unets]
    assert len({id(a) for a in own}) == len(unets) and all(a is not shared for a in own)
    for u in unets:
        cabs = [m for m in u.modules() if hasattr(m, "body")]
        assert len(cabs) == 24
        assert all(m.body[1] is shared for m in cabs if m is not u.enc_level1.encoder[0])
    torch.testing.assert_close(shared.weight, torch.tensor([0.25]))


# ------------------------------------------------------------------------------------------- gradients


def _loss(model: PromptMR, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    image, kspace = model(k, mask)
    return image.square().mean() + torch.view_as_real(kspace).square().mean()


@pytest.mark.parametrize("learnable_prompt", [False, True])
def test_gradients_reach_trainable_parameters_only(learnable_prompt):
    model = tiny_model(num_cascades=2, learnable_prompt=learnable_prompt).train()
    # With 4-8 channels a CALayer squeeze has 1-2 hidden units, whose ReLU can be dead for a given input; its two
    # 1x1 convs then get exactly zero gradient. Record which ReLUs fired so only those are excused.
    alive = {}
    for name, module in model.named_modules():
        if isinstance(module, CALayer):
            module.conv_du[1].register_forward_hook(
                lambda m, i, out, key=name: alive.__setitem__(key, alive.get(key, False) or bool((out > 0).any()))
            )
    mask = make_mask("per_frame", b=1)
    _loss(model, make_kspace(1, 2, mask), mask).backward()
    assert sum(alive.values()) > 0.7 * len(alive)
    for name, p in model.named_parameters():
        if name.endswith("prompt_param"):
            assert p.requires_grad is learnable_prompt
            if not learnable_prompt:
                assert p.grad is None, name
                continue
        assert p.grad is not None, name
        if name == "cascades.0.dc_weight":
            # k^0 = y, so the first cascade's DC term is identically zero (as in the reference).
            assert p.grad.abs().sum() == 0
        elif ".CA.conv_du." in name and not alive[name.split(".conv_du.")[0]]:
            assert p.grad.abs().sum() == 0
        else:
            assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------ cascade operators


def _ref_reduce(k: torch.Tensor, sens: torch.Tensor, coils: int) -> torch.Tensor:
    """Literal R_S on the flat frame-major layout: sum over the coils of each frame."""
    img = ifft2c(k) * sens.conj()
    return torch.stack([img[:, f * coils : (f + 1) * coils].sum(1) for f in range(k.shape[1] // coils)], 1)


def _ref_expand(x: torch.Tensor, sens: torch.Tensor, coils: int) -> torch.Tensor:
    """Literal E_S: repeat_interleave each frame over its coils, multiply by the maps, FFT."""
    return fft2c(x.repeat_interleave(coils, dim=1) * sens)


def test_cascade_matches_literal_formula():
    torch.manual_seed(3)
    b, coils = 2, 3
    mask = make_mask("per_frame").to(torch.bool)
    y = make_kspace(b, coils, mask)
    k = y + 0.1 * torch.randn_like(y)
    sens = torch.randn(b, F * coils, H, W, dtype=torch.complex64)
    cascade = PromptMRCascade(NormPromptUnet(2 * F, 2 * F, **TINY_UNET))
    with torch.no_grad():
        cascade.dc_weight.fill_(0.7)
        out = cascade(k, y, mask.unsqueeze(2), sens.view(b, F, coils, H, W))
        m = mask.repeat_interleave(coils, dim=1)
        x = cascade.model(_ref_reduce(k, sens, coils))
        expected = k - 0.7 * torch.where(m, k - y, torch.zeros_like(k)) - _ref_expand(x, sens, coils)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_sens_expand_reduce_are_adjoint():
    torch.manual_seed(4)
    x = torch.randn(2, F, H, W, dtype=torch.complex64)
    k = torch.randn(2, F, 3, H, W, dtype=torch.complex64)
    sens = torch.randn(2, F, 3, H, W, dtype=torch.complex64)
    lhs = torch.vdot(sens_expand(x, sens).flatten(), k.flatten())
    rhs = torch.vdot(x.flatten(), sens_reduce(k, sens).flatten())
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)


def test_data_consistency_with_zero_denoiser():
    """Last cascade has D = 0 and lambda = 1: sampled centre-frame k-space must equal the measurements."""
    model = tiny_model(num_cascades=2).eval()
    model.cascades[1].model = Zero()
    mask = make_mask("per_frame")
    coils = 3
    y = make_kspace(2, coils, mask)
    with torch.no_grad():
        _, kspace = model(y, mask)
    centre = mask[:, F // 2 : F // 2 + 1].expand(2, coils, H, W).to(torch.bool)
    y_c = y.view(2, F, coils, H, W)[:, F // 2]
    torch.testing.assert_close(kspace[centre], y_c[centre], rtol=0, atol=1e-6)
    # The first (real) cascade filled in the unsampled lines, so the check above is not trivial.
    assert kspace[~centre].abs().mean() > 1e-3


def test_all_zero_denoisers_return_the_input():
    model = tiny_model(num_cascades=2).eval()
    for cascade in model.cascades:
        cascade.model = Zero()
        cascade.dc_weight.data.fill_(0.3)
    mask = make_mask("task1")
    y = make_kspace(2, 2, mask.expand(2, F, H, W))
    with torch.no_grad():
        image, kspace = model(y, mask)
    torch.testing.assert_close(kspace, y.view(2, F, 2, H, W)[:, F // 2], rtol=0, atol=0)


# --------------------------------------------------------------------------------------- NormPromptUnet


def test_norm_prompt_unet_layout_padding_and_scale_equivariance():
    torch.manual_seed(5)
    net = NormPromptUnet(2 * F, 2 * F, **TINY_UNET).eval()
    x = torch.randn(2, F, H, W, dtype=torch.complex64) * 3 + 1j
    seen = {}
    net.unet.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        out = net(x)
        scaled = net(x * 1e-3)  # k-space values in CMRxRecon are ~1e-3
    unet_in = seen["x"]
    assert unet_in.shape == (2, 2 * F, 24, 24)  # 23 -> 24 (pad 0 top, 1 bottom), 17 -> 24 (3 left, 4 right)
    assert unet_in[..., 23, :].abs().sum() == 0 and unet_in[..., :3].abs().sum() == 0
    assert unet_in[..., 4:].abs().sum() > 0 and unet_in[..., 20:, :].abs().sum() > 0
    real = torch.cat([x.real, x.imag], 1).view(2, -1)
    mean, std = real.mean(1).view(2, 1, 1, 1), real.std(1).view(2, 1, 1, 1)  # unbiased std
    torch.testing.assert_close(unet_in[:, :, :23, 3:20] * std + mean, torch.cat([x.real, x.imag], 1))
    assert out.shape == x.shape and out.dtype == torch.complex64
    torch.testing.assert_close(scaled, out * 1e-3, rtol=1e-4, atol=1e-8)


def test_prompt_unet_standalone_creates_own_activation():
    a, b = PromptUnet(2, 2, **TINY_UNET), PromptUnet(2, 2, **TINY_UNET)
    assert a.bottleneck[0].body[1] is not b.bottleneck[0].body[1]
    assert a.bottleneck[0].body[1] is a.dec_level1.ca.body[1]
    assert a.enc_level1.encoder[0].body[1] is not a.bottleneck[0].body[1]
    assert PromptUnet(2, 2, **TINY_UNET)(torch.randn(1, 2, 16, 8)).shape == (1, 2, 16, 8)


# ---------------------------------------------------------------------------------------------- SensNet


def test_infer_num_low_frequencies_matches_loop_rule():
    g = torch.Generator().manual_seed(6)
    lines = torch.rand(64, 20, generator=g) < 0.6
    lines[::3, 8:12] = True
    lines[5] = True
    lines[6] = False
    got = infer_num_low_frequencies(lines)
    expected = torch.tensor([ref_n_low(line.tolist()) for line in lines])
    assert torch.equal(got, expected)
    assert got[5] == 20 and got[6] == 1


def test_cartesian_acs_columns_per_sample():
    masks = torch.stack([cartesian_line(W, acs, 4, 0) for acs in (4, 8)])[:, None, None, :].bool()
    cols = cartesian_acs_columns(masks)
    assert cols.shape == (2, 1, 1, W)
    for i, n_low in enumerate(infer_num_low_frequencies(masks[:, 0, 0])):
        pad = (W - int(n_low) + 1) // 2
        expected = torch.zeros(W, dtype=torch.bool)
        expected[pad : pad + int(n_low)] = True
        assert torch.equal(cols[i, 0, 0], expected)
    explicit = cartesian_acs_columns(masks, 16)
    assert explicit[0, 0, 0].sum() == 16 and torch.equal(explicit[0], explicit[1])
    assert explicit[0, 0, 0, (W - 16 + 1) // 2]


def _radial_mask(b: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(b, F, H, W, generator=g) < 0.3
    mask[..., H // 2 - 2 : H // 2 + 2, W // 2 - 2 : W // 2 + 2] = True
    mask[..., 0, W // 2] = False  # central ky columns not fully sampled over kx: not Cartesian
    return mask


def test_mask_type_detection():
    cart = make_mask("per_frame").bool()
    assert is_cartesian_mask(cart, 4).all()
    assert not is_cartesian_mask(_radial_mask(), 4).any()
    assert not is_cartesian_mask(make_mask("task1").bool(), 16).any()  # ACS narrower than 16


def test_sensnet_acs_regions():
    torch.manual_seed(8)
    sens = SensNet(F, radial_acs_size=4, **TINY_UNET)
    cart = make_mask("task1").bool()
    radial = _radial_mask()
    mixed = torch.cat([cart.expand(2, F, H, W)[:1], radial[1:]])
    keep = sens.acs_mask(mixed, H)
    assert torch.equal(keep[0].expand(F, H, W), cartesian_acs_columns(cart[:1])[0].expand(F, H, W))
    block = torch.zeros(H, W, dtype=torch.bool)
    block[H // 2 - 2 : H // 2 + 2, W // 2 - 2 : W // 2 + 2] = True
    assert torch.equal(keep[1], radial[1] & block)
    # Metadata overrides the rule; the reference bug keeps the whole undersampled k-space for radial samples.
    forced = sens.acs_mask(mixed, H, is_radial=torch.tensor([False, False]))
    assert torch.equal(forced[1].expand(F, H, W), cartesian_acs_columns(mixed[1:])[0].expand(F, H, W))
    buggy = SensNet(F, radial_acs_size=4, reference_radial_bug=True, **TINY_UNET).acs_mask(mixed, H)
    assert buggy[1].all() and torch.equal(buggy[0].expand(F, H, W), keep[0].expand(F, H, W))


def test_sensnet_maps_unit_rss_and_depend_on_acs_only():
    torch.manual_seed(9)
    sens = SensNet(F, radial_acs_size=4, **TINY_UNET).eval()
    mask = make_mask("per_frame")
    k = make_kspace(2, 3, mask)
    with torch.no_grad():
        maps = sens(k, mask)
        outside = ~cartesian_acs_columns(mask.bool()).expand(2, 1, H, W)
        maps2 = sens(k + outside * torch.randn_like(k), mask)
    assert maps.shape == k.shape and maps.dtype == torch.complex64
    torch.testing.assert_close(rss(maps.view(2, F, 3, H, W), dim=2), torch.ones(2, F, H, W))
    torch.testing.assert_close(maps, maps2)


def test_sensnet_chunking_matches_unchunked():
    torch.manual_seed(10)
    sens = SensNet(F, radial_acs_size=4, **TINY_UNET).eval()
    mask = make_mask("frames_1d")
    k = make_kspace(2, 3, mask.expand(2, F, H, W))
    with torch.no_grad():
        full = sens(k, mask, 4)
        sens.chunk_size = 4  # 30 items -> 8 chunks, the last one short
        chunked = sens(k, mask, 4)
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------- batch, seeds, autocast


def test_batch_equals_per_sample_loop():
    model = tiny_model(num_cascades=2).eval()
    mask = make_mask("per_frame")  # different masks and different inferred ACS widths per sample
    k = make_kspace(2, 3, mask)
    with torch.no_grad():
        image, kspace = model(k, mask)
        for i in range(2):
            image_i, kspace_i = model(k[i : i + 1], mask[i : i + 1])
            torch.testing.assert_close(image[i : i + 1], image_i, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(kspace[i : i + 1], kspace_i, rtol=1e-5, atol=1e-5)


def test_determinism():
    a, b = tiny_model(seed=11), tiny_model(seed=11)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not torch.equal(
        sa["cascades.0.model.unet.feat_extract.weight"],
        tiny_model(seed=12).state_dict()["cascades.0.model.unet.feat_extract.weight"],
    )
    mask = make_mask("task1")
    k = make_kspace(2, 2, mask.expand(2, F, H, W))
    with torch.no_grad():
        oa, ob = a.eval()(k, mask), b.eval()(k, mask)
    assert torch.equal(oa[0], ob[0]) and torch.equal(oa[1], ob[1])


def test_autocast_keeps_fp32_outputs():
    model = tiny_model(num_cascades=1).eval()
    mask = make_mask("task1")
    k = make_kspace(2, 2, mask.expand(2, F, H, W))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        maps = model.sens_net(k, mask.bool())
        image, kspace = model(k, mask)
    assert maps.dtype == torch.complex64 and image.dtype == torch.float32 and kspace.dtype == torch.complex64
    torch.testing.assert_close(rss(maps.view(2, F, 2, H, W), dim=2), torch.ones(2, F, H, W))
    with torch.no_grad():
        ref_image, _ = model(k, mask)
    torch.testing.assert_close(image, ref_image, rtol=0.1, atol=0.05 * ref_image.max().item())


# -------------------------------------------------------------------------------------- checkpointing


def test_checkpointing_matches_plain_training_step(monkeypatch):
    mask = make_mask("per_frame")
    k = make_kspace(2, 2, mask)
    results = []
    for use_ckpt in (False, True):
        model = tiny_model(num_cascades=2, use_checkpoint=use_ckpt, sens_chunk_size=7).train()
        calls = []
        real_checkpoint = torch.utils.checkpoint.checkpoint

        def counting(fn, *args, _calls=calls, _ckpt=real_checkpoint, **kwargs):
            _calls.append(type(fn).__name__)
            return _ckpt(fn, *args, **kwargs)

        monkeypatch.setattr(promptmr_module, "checkpoint", counting)
        monkeypatch.setattr("bundle.networks.sensnet.checkpoint", counting)
        out = model(k, mask)
        (out[0].square().mean() + torch.view_as_real(out[1]).square().mean()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
        # 2 cascades + ceil(2*5*2 / 7) = 3 SensNet chunks when enabled; none otherwise.
        assert calls == ([] if not use_ckpt else ["NormPromptUnet"] * 3 + ["PromptMRCascade"] * 2)
    (o0, g0), (o1, g1) = results
    torch.testing.assert_close(o1[0], o0[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(o1[1], o0[1], rtol=1e-6, atol=1e-6)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------------------- TorchScript


def test_torchscript_parity_and_save_load(tmp_path):
    model = tiny_model(num_cascades=2, use_checkpoint=True, sens_chunk_size=8).eval()
    scripted = torch.jit.script(model)
    mask = make_mask("per_frame")
    k = make_kspace(2, 3, mask)
    with torch.no_grad():
        image, kspace = model(k, mask)
        s_image, s_kspace = scripted(k, mask)
        torch.testing.assert_close(s_image, image, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s_kspace, kspace, rtol=1e-5, atol=1e-5)
        path = tmp_path / "promptmr.ts"
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
        l_image, l_kspace = loaded(k, mask, 4)
        e_image, e_kspace = model(k, mask, 4)
    torch.testing.assert_close(l_image, e_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l_kspace, e_kspace, rtol=1e-5, atol=1e-5)


def test_state_dict_roundtrip_between_instances():
    a, b = tiny_model(seed=13), tiny_model(seed=14)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    mask = make_mask("task1")
    k = make_kspace(2, 2, mask.expand(2, F, H, W))
    with torch.no_grad():
        assert torch.equal(a.eval()(k, mask)[0], b.eval()(k, mask)[0])


def test_acs_source_decides_the_width_of_a_call():
    """docs/design.md, "ACS width: where it comes from": item, network or mask, one rule in PromptMR.acs_width."""
    assert tiny_model(num_cascades=1).acs_source == "mask"  # no configured width: the mask's
    assert tiny_model(num_cascades=1, num_low_frequencies=16).network_args["acs_source"] == "item"
    item = tiny_model(num_cascades=1, num_low_frequencies=16, acs_source="item")
    fixed = tiny_model(num_cascades=1, num_low_frequencies=16, acs_source="network")
    mask = tiny_model(num_cascades=1, num_low_frequencies=16, acs_source="mask")
    assert (item.acs_width(None, 24), item.acs_width(None, None)) == (24, 16)
    assert (fixed.acs_width(None, 24), fixed.acs_width(None, None)) == (16, 16)
    assert (mask.acs_width(None, 24), mask.acs_width(None, None)) == (None, None)
    assert all(net.acs_width(8, 24) == 8 for net in (item, fixed, mask))  # a direct caller's width wins
    with pytest.raises(ValueError, match="acs_source must be one of"):
        tiny_model(num_cascades=1, acs_source="file")
    with pytest.raises(ValueError, match="needs num_low_frequencies"):
        tiny_model(num_cascades=1, acs_source="network")

    # The forward pass follows it: acs_width=4 from the items changes an item-source network's image only.
    mask_t = make_mask("frames_1d", b=1)
    kspace = make_kspace(1, 2, mask_t)
    with torch.no_grad():
        for net, moves in ((item, True), (fixed, False), (mask, False)):
            net.eval()
            same = torch.equal(net(kspace, mask_t)[0], net(kspace, mask_t, acs_width=4)[0])
            assert same is not moves, net.acs_source


def test_channels_last_unet_equals_the_plain_nchw_unet(monkeypatch):
    """The CPU channels-last path (NHWC input, channels-last conv weights) gives the NCHW result and gradients."""
    torch.manual_seed(0)
    net = NormPromptUnet(4, 4, n_feat0=4, feature_dim=(6, 8, 10), prompt_dim=(2, 4, 6), len_prompt=(2, 2, 2))
    x = torch.randn(3, 2, 20, 12, dtype=torch.complex64)

    def run():
        net.zero_grad()
        y = net(x)
        torch.view_as_real(y).square().sum().backward()
        assert y.is_contiguous()
        return y.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    y1, g1 = run()
    with monkeypatch.context() as m:
        m.setattr(promptunet_module.Conv2d, "forward", nn.Conv2d.forward)
        m.setattr(promptunet_module.PromptUnet, "forward_history", promptunet_module.PromptUnet._forward)
        y0, g0 = run()
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    assert set(g1) == set(g0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5, msg=name)
