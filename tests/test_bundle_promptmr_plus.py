"""configs/promptmr_plus.yaml through the shipped workflows in the Model Zoo test pattern (initialize ->
check_properties -> run -> finalize): train -> evaluate -> inference -> ckpt_export on a tiny demo tree, with
tiny widths on top of the overlay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from helpers import CONFIGS, LOGGING, META, TINY_NET, run_workflow, snapshot, train_overrides
from monai.bundle import ConfigWorkflow

from bundle.networks import PromptMR, read_network_overlay

PLUS = str(CONFIGS / "promptmr_plus.yaml")

pytestmark = pytest.mark.xdist_group("bundle_promptmr_plus")


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train_plus")
    overrides = train_overrides(demo_root, out)
    # Checkpointing and SensNet chunking on, as a real-size PromptMR+ run would use them.
    overrides.update({"network_def#use_checkpoint": True, "network_def#sens_chunk_size": 2})
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), PLUS],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        **overrides,
    )
    run_workflow(workflow)
    return out


def test_plus_overlay_trains_a_promptmr_plus_model(trained):
    args = read_network_overlay(trained / "models" / "network.yaml")
    assert args["model_version"] == "plus" and args["adaptive_input"] is True
    assert args["n_history"] == 11 and args["use_sens_adj"] is True and args["n_buffer"] == 4
    assert args["use_checkpoint"] is True and args["sens_chunk_size"] == 2
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert "cascades.0.model.unet.dec_level3.momentum.0.weight" in state  # the reference's key names
    assert state["sens_net.norm_unet.unet.feat_extract.weight"].shape[1] == 10  # 5 frames x re/im per coil
    assert len(list((trained / "models" / "checkpoints").glob("checkpoint_e1_i*.pt"))) == 1


def test_plus_overlay_evaluates(trained, demo_root, tmp_path):
    overrides = train_overrides(demo_root, trained)
    overrides["output_dir"] = str(tmp_path / "eval")
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml"), PLUS],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        run_id="evaluating",
        **overrides,
    )
    run_workflow(workflow)
    tables = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert tables["per_modality"]
    for key in ("ssim", "psnr", "zf_ssim"):
        assert np.isfinite(tables["overall"][key])


def test_plus_overlay_infers_without_touching_the_dataset(trained, demo_root, tmp_path):
    before = snapshot(demo_root)
    output = tmp_path / "infer"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.yaml"), PLUS],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="infer",
        bundle_root=str(CONFIGS.parent),
        dataset_dir=str(demo_root),
        output_dir=str(output),
        model_path=str(trained / "models" / "model.pt"),
        modalities=["Mapping"],
        num_workers=0,
        **TINY_NET,
    )
    run_workflow(workflow)
    assert snapshot(demo_root) == before
    written = sorted((output / "submission").rglob("*.mat"))
    assert written
    for path in written:
        img = scipy.io.loadmat(path)["img4ranking"]
        assert img.dtype == np.float32 and np.isfinite(img).all() and img.max() > 0


def test_plus_overlay_exports_torchscript_matching_eager(trained, tmp_path):
    ts_path = tmp_path / "model.ts"
    args = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts_path)]
    args += ["--ckpt_file", str(trained / "models" / "model.pt"), "--meta_file", META]
    args += ["--config_file", json.dumps([str(CONFIGS / "inference.yaml"), PLUS]), "--bundle_root", str(CONFIGS.parent)]
    for key, value in TINY_NET.items():
        args += [f"--{key}", json.dumps(value)]
    result = subprocess.run(args, cwd=CONFIGS.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(ts_path))
    eager = PromptMR(**read_network_overlay(trained / "models" / "network.yaml"))
    eager.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    eager.eval()
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 1, 1, 28)
    mask[..., ::4] = 1
    mask[..., 6:22] = 1
    kspace = torch.randn(1, 5 * 3, 40, 28, dtype=torch.complex64, generator=generator) * mask
    with torch.no_grad():
        expected = eager(kspace, mask, 16)
        got = scripted(kspace, mask, 16)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)
