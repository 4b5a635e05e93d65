"""Importing PromptMR v1 / HyperCMR weights: every format, safe loading, architecture inference, strict checks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_ARGS, TINY_NET

from bundle.errors import (
    CheckpointError,
    CheckpointMismatchError,
    CMRDataError,
    UnsafeCheckpointError,
    find_bundle_error,
)
from bundle.networks import (
    PromptMR,
    check_checkpoint,
    infer_network_args,
    load_network_weights,
    load_pretrained,
    read_network_overlay,
    save_network_overlay,
)

# A second tiny architecture that differs in every kind of argument the importer has to read from shapes.
ODD_ARGS = {**TINY_ARGS, "num_cascades": 2, "n_enc_cab": [1, 2, 1], "n_dec_cab": [2, 1, 1], "n_skip_cab": [0, 1, 2]}


class Payload:
    """A pickled object: importing a file that holds one would run code from the file."""


@pytest.fixture(scope="module")
def tiny() -> PromptMR:
    torch.manual_seed(0)
    net = PromptMR(**ODD_ARGS)
    with torch.no_grad():  # make every tensor distinct from a fresh init, prompts included
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net


def _optimizer_state(net: PromptMR) -> dict:
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    return opt.state_dict()


def _lightning(net: PromptMR) -> dict:
    args = net.network_args
    hparams = {k: args[k] for k in ("num_cascades", "n_feat0", "feature_dim", "prompt_dim", "n_enc_cab")}
    hparams.update(num_adj_slices=args["num_adj_frames"], lr=2e-4, lr_step_size=11, use_checkpoint=False)
    state = {f"promptmr.{k}": v for k, v in net.state_dict().items()}
    state["loss.w"] = torch.ones(1, 1, 7, 7)
    return {
        "epoch": 11,
        "global_step": 258576,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": state,
        "hyper_parameters": hparams,
        "optimizer_states": [_optimizer_state(net)],
        "lr_schedulers": [{"step_size": 11, "gamma": 0.1, "last_epoch": 11}],
        # Training frameworks leave numpy scalars in callback state: plain data, accepted.
        "callbacks": {"ModelCheckpoint": {"best_model_score": np.float64(0.93)}},
    }


FORMATS = {
    "lightning": _lightning,
    "hypercmr-ddp": lambda net: {
        "epoch": 7,
        "model_state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
        "optimizer_state_dict": _optimizer_state(net),
        "scaler_state_dict": {"scale": 65536.0, "growth_factor": 2.0},
        "best_val_loss": 0.1,
    },
    "hypercmr": lambda net: {"epoch": 7, "model_state_dict": net.state_dict(), "optimizer_state_dict": {}},
    "state-dict": lambda net: net.state_dict(),
    "state-dict-ddp": lambda net: {f"module.{k}": v for k, v in net.state_dict().items()},
    "bundle-checkpoint": lambda net: {
        "model": net.state_dict(),
        "optimizer": _optimizer_state(net),
        "trainer": {"epoch": 3, "iteration": 30},
        "best_model": {"best": 0.9},
    },
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_imports_to_the_source_state_dict(fmt, tiny, tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save(FORMATS[fmt](tiny), path)
    state, args = load_pretrained(path)
    source = tiny.state_dict()
    assert list(state) == list(source)
    assert all(torch.equal(state[k], source[k]) for k in source)
    assert args == tiny.network_args
    PromptMR(**args).load_state_dict(state)  # strict


def test_architecture_is_read_from_shapes_at_paper_size():
    for cascades, total in ((12, 81_528_317), (16, 108_082_753)):
        with torch.device("meta"):
            net = PromptMR(num_cascades=cascades)
        assert sum(p.numel() for p in net.parameters()) == total
        args = infer_network_args(net.state_dict())
        assert args == {k: net.network_args[k] for k in args}


def test_no_channel_attention_and_empty_skip_blocks_are_read(tmp_path):
    net = PromptMR(**{**ODD_ARGS, "no_use_ca": True})
    args = infer_network_args(net.state_dict())
    assert args["no_use_ca"] is True and args["n_skip_cab"] == [0, 1, 2]


def test_hyper_parameters_that_contradict_the_tensors_are_refused(tiny, tmp_path):
    ckpt = _lightning(tiny)
    ckpt["hyper_parameters"]["num_cascades"] = 3
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_pretrained(path)
    message = str(info.value)
    assert str(path) in message and "num_cascades: 2 in the checkpoint, 3 in the config" in message


def test_a_pickled_object_is_refused_with_the_reason(tiny, tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": tiny.state_dict(), "hyper_parameters": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pretrained(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "refused" in message and "Payload" in message
    assert "weights_only=True" in message


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "cannot be read"),
        (lambda p: None, "no such model file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: torch.save({"weights": [1, 2]}, p), "unknown checkpoint format"),
        (lambda p: torch.save({"encoder.weight": torch.ones(2)}, p), "holds no PromptMR weights"),
    ],
)
def test_unreadable_files_name_the_file(make, problem, tmp_path):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(path)
    assert str(info.value).startswith(str(path)) and problem in str(info.value)


def test_a_truncated_file_names_the_file(tiny, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_pretrained(path)
    assert str(path) in str(info.value)


def test_mismatch_names_arguments_file_and_overlay(tiny, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), path)
    save_network_overlay(tmp_path / "network.yaml", tiny.network_args)
    configured = PromptMR(**TINY_ARGS)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint(configured, path)
    message = str(info.value)
    assert message.startswith(f"{path} does not fit the configured network (PromptMR).")
    assert "num_cascades: 2 in the checkpoint, 1 in the config" in message
    assert "n_skip_cab: [0, 1, 2] in the checkpoint, [1, 1, 1] in the config" in message
    assert str(tmp_path / "network.yaml") in message
    assert len(message.splitlines()) == 1  # one message, not a trace per tensor
    # The same explanation comes from a plain load_state_dict (resume, ckpt_export, CheckpointLoader).
    with pytest.raises(CheckpointMismatchError, match="num_cascades: 2 in the checkpoint, 1 in the config"):
        configured.load_state_dict(torch.load(path, weights_only=True))


def test_check_checkpoint_asks_to_import_training_checkpoints(tiny, tmp_path):
    path = tmp_path / "promptmr.ckpt"
    torch.save(_lightning(tiny), path)
    with pytest.raises(CheckpointError, match="import_weights.py"):
        check_checkpoint(PromptMR(**ODD_ARGS), path)


def test_load_network_weights_fills_a_ddp_style_wrapper(tiny, tmp_path):
    path = tmp_path / "promptmr.ckpt"
    torch.save(_lightning(tiny), path)
    wrapper = torch.nn.Module()
    wrapper.module = PromptMR(**ODD_ARGS)
    load_network_weights(wrapper, path)
    assert all(torch.equal(a, b) for a, b in zip(wrapper.module.state_dict().values(), tiny.state_dict().values()))


def test_overlay_sets_every_network_def_argument(tiny, tmp_path):
    from monai.bundle import ConfigParser

    overlay = save_network_overlay(tmp_path / "network.yaml", tiny.network_args)
    assert read_network_overlay(overlay) == tiny.network_args
    parser = ConfigParser()
    parser.read_config([str(REPO / "configs" / "inference.yaml"), str(overlay)])
    network = parser.get_parsed_content("network_def")
    assert network.network_args == tiny.network_args
    network.load_state_dict(tiny.state_dict())


def test_import_script_writes_model_overlay_and_prints_the_command(tiny, tmp_path):
    src = tmp_path / "promptmr-2cascades.ckpt"
    torch.save(_lightning(tiny), src)
    out = tmp_path / "imported"
    run = [sys.executable, str(REPO / "scripts" / "import_weights.py"), str(src), "--out-dir", str(out)]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in tiny.state_dict().items())
    assert read_network_overlay(out / "network.yaml") == tiny.network_args
    assert "python -m monai.bundle run inference --config_file" in result.stdout
    assert "imported/network.yaml" in result.stdout and "--model_path imported/model.pt" in result.stdout

    again = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # nothing replaced silently
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, unsafe)
    refused = subprocess.run(
        [*run[:2], str(unsafe), "--out-dir", str(tmp_path / "other")], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "refused" in refused.stderr
    assert not (tmp_path / "other" / "model.pt").exists()


def test_the_bundle_error_is_found_under_monai_wrappers():
    try:
        try:
            raise CMRDataError.at("/no/such/dir", "dataset root does not exist")
        except CMRDataError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression") from err
    except RuntimeError as wrapped:
        assert str(find_bundle_error(wrapped)) == "/no/such/dir: dataset root does not exist"
    assert find_bundle_error(RuntimeError("other")) is None


def test_cli_run_ends_with_the_bundle_message(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        str(REPO / "configs" / "inference.yaml"),
        "--bundle_root",
        str(REPO),
        "--dataset_dir",
        str(missing),
        "--output_dir",
        str(tmp_path / "out"),
        "--load_pretrain",
        "False",
    ]
    for key, value in TINY_NET.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert str(missing) in last and "does not exist" in last, result.stderr[-2000:]


# --------------------------------------------------------------------------------------------------- PromptMR+

PLUS_ARGS = {**ODD_ARGS, "model_version": "plus", "adaptive_input": True, "n_history": 2, "use_sens_adj": True}


def test_promptmr_plus_architecture_is_read_from_shapes():
    with torch.device("meta"):
        paper = PromptMR(model_version="plus", adaptive_input=True, n_history=11, use_sens_adj=True)
        tiny = PromptMR(**PLUS_ARGS)
        history_only = PromptMR(**{**ODD_ARGS, "model_version": "plus", "n_history": 3})
    for net in (paper, tiny, history_only):
        args = infer_network_args(net.state_dict())
        assert args == {k: net.network_args[k] for k in args}
    assert infer_network_args(paper.state_dict())["n_history"] == 11


def test_promptmr_plus_weights_import_and_overlay_round_trip(tmp_path):
    from monai.bundle import ConfigParser

    torch.manual_seed(2)
    source = PromptMR(**PLUS_ARGS)
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    state, args = load_pretrained(path)
    assert args == source.network_args
    overlay = save_network_overlay(tmp_path / "network.yaml", args)
    parser = ConfigParser()
    parser.read_config([str(REPO / "configs" / "inference.yaml"), str(overlay)])
    network = parser.get_parsed_content("network_def")
    assert network.network_args == source.network_args
    check_checkpoint(network, path)
    network.load_state_dict(state)


def test_promptmr_plus_checkpoint_in_a_v1_config_names_the_options(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "model.pt"
    torch.save(PromptMR(**PLUS_ARGS).state_dict(), path)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint(PromptMR(**ODD_ARGS), path)
    message = str(info.value)
    for text in ("model_version: plus in the checkpoint, v1 in the config", "n_history: 2 in the checkpoint, 0"):
        assert text in message, message
    assert "use_sens_adj: True in the checkpoint, False in the config" in message
