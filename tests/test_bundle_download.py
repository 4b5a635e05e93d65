"""The bundle as a Model Zoo user gets it: copied into ``bundles/<name>/`` and run from another folder.

No ``PYTHONPATH``: every run finds the ``bundle`` package through ``--bundle_root`` alone, and the relative
default paths (models, runs, eval, outputs) land under the bundle folder, not under the working folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY_NET

from bundle.data import make_demo_dataset

pytestmark = pytest.mark.xdist_group("bundle")

NAME = "hypercmr_cmrxrecon"


def _monai_bundle(cwd: Path, *args: str, overrides: dict) -> None:
    """``python -m monai.bundle <args>`` in ``cwd`` with PYTHONPATH removed; fails with the run's stderr tail."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "monai.bundle", *args]
    for key, value in {**overrides, **TINY_NET}.items():
        command += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args[:2])} failed:\n{result.stderr[-3000:]}"


def test_downloaded_bundle_runs_every_workflow_from_another_folder(tmp_path):
    data = tmp_path / "data"
    make_demo_dataset(data, seed=0, size="tiny")
    root = tmp_path / "bundles" / NAME
    for part in ("configs", "bundle", "docs"):  # what a Zoo bundle ships (docs holds the sidecar schema)
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    rel = Path("..") / "bundles" / NAME  # relative, as a user would type it
    configs = rel / "configs"
    common = {"bundle_root": str(rel), "dataset_dir": str(data), "num_workers": 0}

    train = {**common, "epochs": 1, "train_max_items": 4, "val_max_items": 2, "accumulation_steps": 1}
    _monai_bundle(work, "run", "training", "--config_file", str(configs / "train.yaml"), overrides=train)
    model = root / "models" / "model.pt"
    assert model.is_file() and (root / "runs" / "train" / "split.json").is_file()

    evaluate = f"['{configs / 'train.yaml'}','{configs / 'evaluate.yaml'}']"
    _monai_bundle(work, "run", "evaluating", "--config_file", evaluate, overrides={**common, "val_max_items": 2})
    assert (root / "eval" / "metrics.json").is_file()

    infer = {**common, "modalities": ["BlackBlood"]}
    _monai_bundle(work, "run", "inference", "--config_file", str(configs / "inference.yaml"), overrides=infer)
    assert list((root / "outputs" / "inference" / "submission").rglob("*.mat"))

    export = ["ckpt_export", "network_def", "--filepath", str(rel / "models" / "model.ts")]
    export += ["--ckpt_file", str(rel / "models" / "model.pt"), "--config_file", str(configs / "inference.yaml")]
    _monai_bundle(work, *export, overrides={"bundle_root": str(rel)})
    assert (root / "models" / "model.ts").is_file()
    assert sorted(p.name for p in work.iterdir()) == []  # nothing was written into the working folder
