"""Exact resume: training killed with SIGKILL mid-epoch and resumed ends with the same weights as an
uninterrupted run (bitwise, on CPU), because the checkpoint holds model, optimizer, scheduler, trainer counters,
sampler position, best-metric state and RNG states, and masks are seeded per (epoch, item)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, train_overrides

from bundle.data import make_demo_dataset
from bundle.workflows.checkpoint import latest_checkpoint

pytestmark = pytest.mark.xdist_group("resume")


def _command(data: Path, out: Path) -> list[str]:
    overrides = {
        **train_overrides(data, out),
        "epochs": 2,
        "val_max_items": 2,
        "checkpoint_interval": 2,
        "learning_rate": 1e-3,
        "train_patterns": ["Uniform", "ktGaussian"],  # random masks: resume must restore their streams too
    }
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(REPO / "configs/train.yaml")]
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    make_demo_dataset(data, seed=0, size="tiny")
    reference = subprocess.Popen(
        _command(data, tmp_path / "ref"), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    killed_dir = tmp_path / "killed"
    victim = subprocess.Popen(
        _command(data, killed_dir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = killed_dir / "models" / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        found = latest_checkpoint(checkpoints) if checkpoints.exists() else None
        if found is not None and "_e1_" in found.name:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    interrupted_at = latest_checkpoint(checkpoints)
    assert interrupted_at is not None and "_e2_" not in interrupted_at.name

    resumed = subprocess.run(
        _command(data, killed_dir), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {interrupted_at}" in resumed.stdout + resumed.stderr

    _, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err.decode()[-3000:]
    final_ref = torch.load(latest_checkpoint(tmp_path / "ref" / "models" / "checkpoints"), weights_only=True)
    final_res = torch.load(latest_checkpoint(checkpoints), weights_only=True)
    assert final_ref["trainer"]["iteration"] == final_res["trainer"]["iteration"] > 0
    for name, tensor in final_ref["model"].items():
        assert torch.equal(tensor, final_res["model"][name]), name
    for a, b in zip(final_ref["optimizer"]["state"].values(), final_res["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert final_ref["lr_scheduler"] == final_res["lr_scheduler"]
