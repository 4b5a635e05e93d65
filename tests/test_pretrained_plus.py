"""Published PromptMR+ weights: a Lightning checkpoint laid out as the published ones imports, rebuilds strictly
from network.yaml and gives the same image; the k-space form is refused; old bundle PromptMR+ files still load."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import REPO, TINY_ARGS
from monai.bundle import ConfigParser

from bundle.errors import CheckpointError
from bundle.networks import PromptMR, check_checkpoint, load_pretrained, read_network_overlay
from scripts.import_weights import main as import_weights

PLUS_ARGS = {**TINY_ARGS, "num_cascades": 2, "model_version": "plus", "adaptive_input": True, "n_history": 1}
PLUS_ARGS["use_sens_adj"] = True
# The reference's (promptmr_v2.py) names of one decoder level's history block, as the published files hold them.
REFERENCE_MOMENTUM = (
    "momentum.0.weight",
    "momentum.1.body.0.weight",
    "momentum.1.body.2.weight",
    "momentum.1.CA.conv_du.0.weight",
    "momentum.1.CA.conv_du.2.weight",
)


@pytest.fixture(scope="module")
def plus() -> PromptMR:
    torch.manual_seed(5)
    net = PromptMR(**PLUS_ARGS)
    with torch.no_grad():  # every tensor distinct from a fresh init, prompts included
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net.eval()


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    kspace = torch.complex(torch.randn(1, 5 * 2, 24, 16, generator=g), torch.randn(1, 5 * 2, 24, 16, generator=g))
    mask = torch.zeros(1, 5, 1, 16)
    mask[..., ::3] = 1
    mask[..., 5:11] = 1
    return kspace * mask.repeat_interleave(2, dim=1), mask


def _published_layout(net: PromptMR, model_version: str = "promptmr_v2") -> dict:
    """A Lightning checkpoint as PromptMR+'s PromptMrModule saves it: ``promptmr.`` keys, the SSIM loss window
    ``loss.w``, and ``save_hyperparameters()`` with the module's own argument names and training-only keys."""
    a = net.network_args
    hparams = {
        "num_cascades": a["num_cascades"],
        "num_adj_slices": a["num_adj_frames"],
        **{k: a[k] for k in ("n_feat0", "feature_dim", "prompt_dim", "sens_n_feat0", "sens_feature_dim")},
        **{k: a[k] for k in ("sens_prompt_dim", "len_prompt", "prompt_size", "n_enc_cab", "n_dec_cab")},
        **{k: a[k] for k in ("n_skip_cab", "n_bottleneck_cab", "no_use_ca", "learnable_prompt")},
        **{k: a[k] for k in ("adaptive_input", "n_buffer", "n_history", "use_sens_adj")},
        "model_version": model_version,
        # training-only keys the importer must ignore
        "lr": 0.0002,
        "lr_step_size": 11,
        "lr_gamma": 0.1,
        "weight_decay": 0.01,
        "use_checkpoint": True,
        "compute_sens_per_coil": False,
        "num_log_images": 16,
    }
    state = {f"promptmr.{k}": v for k, v in net.state_dict().items()}
    state["loss.w"] = torch.ones(1, 1, 7, 7) / 49
    return {
        "epoch": 11,
        "global_step": 337764,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "hyper_parameters": hparams,
        "optimizer_states": [],
        "lr_schedulers": [{"step_size": 11, "gamma": 0.1, "last_epoch": 11}],
    }


def test_bundle_promptmr_plus_has_the_reference_key_names(plus):
    keys = list(plus.state_dict())
    for level in (1, 2, 3):
        prefix = f"cascades.1.model.unet.dec_level{level}."
        assert all(prefix + name in keys for name in REFERENCE_MOMENTUM)
    assert not any(".momentum.conv." in k or ".momentum.cab." in k for k in keys)
    # The full 2024 size: 12 cascades x 3 levels x 6 keys (conv, two CAB convs, shared PReLU, two CA convs).
    with torch.device("meta"):
        paper = PromptMR(model_version="plus", adaptive_input=True, n_history=11, use_sens_adj=True)
    assert sum(".momentum." in k for k in paper.state_dict()) == 216


def test_published_layout_checkpoint_imports_and_gives_the_same_image(plus, tmp_path, capsys, caplog):
    kspace, mask = _inputs()
    with torch.no_grad():
        before, _ = plus(kspace, mask, num_low_frequencies=6)
    src = tmp_path / "promptmr-plus-epoch=11-step=337764.ckpt"
    torch.save(_published_layout(plus), src)
    out = tmp_path / "imported"
    with caplog.at_level(logging.INFO, logger="bundle.networks"):
        assert import_weights([str(src), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PromptMR+, 2 cascades" in printed and "acs_source network, num_low_frequencies 16" in caplog.text
    assert "python -m monai.bundle run inference" in printed
    assert "ignoring 1 non-network entries: loss.w" in caplog.text

    overlay = read_network_overlay(out / "network.yaml")
    assert overlay["model_version"] == "plus" and overlay["n_history"] == 1 and overlay["use_sens_adj"] is True
    # PromptMR+'s 2024 inference passes a fixed 16: the overlay says so instead of inferring from the mask.
    assert (overlay["acs_source"], overlay["num_low_frequencies"]) == ("network", 16)

    parser = ConfigParser()
    parser.read_config([str(REPO / "configs" / "inference.yaml"), str(out / "network.yaml")])
    network = parser.get_parsed_content("network_def")
    check_checkpoint(network, out / "model.pt")
    network.load_state_dict(torch.load(out / "model.pt", weights_only=True), strict=True)
    network.eval()
    with torch.no_grad():
        after, _ = network(kspace, mask, num_low_frequencies=6)
        # The items' width (24 in a 2023 tree) does not replace the model's fixed one.
        fixed, _ = network(kspace, mask, acs_width=10)
        expected16, _ = plus(kspace, mask, num_low_frequencies=16)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(fixed, expected16, rtol=0, atol=0)


def test_k_space_promptmr_plus_is_refused_with_one_message(plus, tmp_path, capsys):
    src = tmp_path / "promptmr-kspace.ckpt"
    torch.save(_published_layout(plus, model_version="promptmr"), src)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(src)
    message = str(info.value)
    assert str(src) in message and "k-space form" in message and "promptmr_v2" in message
    assert import_weights([str(src), "--out-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "k-space form" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_old_bundle_promptmr_plus_checkpoint_still_loads(plus, tmp_path, caplog):
    old = {}
    for key, value in plus.state_dict().items():
        old[key.replace(".momentum.0.", ".momentum.conv.").replace(".momentum.1.", ".momentum.cab.")] = value
    assert sum(".momentum.conv." in k for k in old) == 2 * 3
    path = tmp_path / "model.pt"
    torch.save(old, path)

    fresh = PromptMR(**PLUS_ARGS)
    check_checkpoint(fresh, path)
    with caplog.at_level(logging.INFO, logger="bundle.networks"):
        fresh.load_state_dict(torch.load(path, weights_only=True))  # strict
    assert "renamed 36 PromptMR+ momentum keys" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), plus.state_dict().values()))
    state, args = load_pretrained(path)
    assert set(state) == set(plus.state_dict()) and args["n_history"] == 1
    # A bundle training checkpoint ({"model": ...}) goes through the same mapping.
    torch.save({"model": old, "optimizer": {}, "trainer": {"epoch": 1}}, tmp_path / "checkpoint_e1_i2.pt")
    state, _ = load_pretrained(tmp_path / "checkpoint_e1_i2.pt")
    assert all(torch.equal(state[k], v) for k, v in plus.state_dict().items())
