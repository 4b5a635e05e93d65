"""Section ``import``: ``scripts/import_weights.py`` on a synthetic PromptMR v1 Lightning checkpoint, timed."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bundle.networks import load_pretrained
from scripts.import_weights import main as import_weights

from .model import build_network


def section_import(args: argparse.Namespace) -> dict:
    """File size, read + validation time and whole import time of a checkpoint of ``--cascades`` cascades in the
    PromptMR v1 layout (``promptmr.`` keys, ``loss.w``, hyper-parameters, AdamW states), and that the imported
    tensors equal the source."""
    net = build_network(args, torch.device("cpu"), use_checkpoint=False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    for p in trainable:  # one step with zero gradients creates the AdamW moments a real checkpoint holds
        p.grad = torch.zeros_like(p)
    optimizer.step()
    args_ = net.network_args
    hparams = {k: args_[k] for k in args_ if k not in ("num_adj_frames", "sens_mask_type", "reference_radial_bug")}
    hparams.update(num_adj_slices=args_["num_adj_frames"], lr=2e-4, lr_step_size=11, lr_gamma=0.1, low_mem=False)
    state = {f"promptmr.{k}": v for k, v in net.state_dict().items()}
    state["loss.w"] = torch.ones(1, 1, 7, 7)
    checkpoint = {
        "epoch": 11,
        "global_step": 258576,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": state,
        "hyper_parameters": hparams,
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [torch.optim.lr_scheduler.StepLR(optimizer, 11, 0.1).state_dict()],
    }
    cascades = args_["num_cascades"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"promptmr-{cascades}cascades-epoch=11-step=258576.ckpt"
        torch.save(checkpoint, src)
        del checkpoint, state
        t0 = time.perf_counter()
        imported, _ = load_pretrained(src)
        read_s = time.perf_counter() - t0
        equal = all(torch.equal(imported[k], v) for k, v in net.state_dict().items())
        del imported
        t0 = time.perf_counter()
        code = import_weights([str(src), "--out-dir", str(Path(tmp) / "out")])
        total_s = time.perf_counter() - t0
        return {
            "cascades": cascades,
            "parameters": sum(p.numel() for p in net.parameters()),
            "checkpoint_gb": src.stat().st_size / 1e9,
            "model_pt_gb": (Path(tmp) / "out" / "model.pt").stat().st_size / 1e9,
            "read_and_validate_s": read_s,
            "import_s": total_s,
            "exit_code": code,
            "tensors_equal": equal,
        }
