"""Runs a user can trust, through the command line as a user types it: state of another run is refused before any
work, `--resume false` moves it aside, unwritable outputs and unreadable model files are named up front, resume
falls back past a truncated checkpoint, inference resumes after Ctrl-C, and partial success ends in a summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import REPO, TINY_ARGS, TINY_NET

from bundle.data import make_demo_dataset
from bundle.errors import OutputDirError, RunStateError
from bundle.workflows import RunState, check_writable

CONFIGS = REPO / "configs"


def _command(run_id: str, configs: list[str], **overrides) -> list[str]:
    args = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", str(configs)]
    args += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    args += ["--bundle_root", str(REPO)]
    for key, value in {**TINY_NET, "num_workers": 0, **overrides}.items():
        # fire reads Python literals: False, not false (which would arrive as a truthy string).
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _run(run_id: str, configs: list[str], **overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(run_id, configs, **overrides), env=_env(), capture_output=True, text=True, timeout=400
    )


def _train(root: Path, out: Path, **overrides) -> subprocess.CompletedProcess:
    settings = dict(
        dataset_dir=str(root),
        output_dir=str(out / "runs"),
        ckpt_dir=str(out / "models"),
        epochs=1,
        train_max_items=4,
        val_max_items=2,
        accumulation_steps=1,
    )
    return _run("training", [str(CONFIGS / "train.yaml")], **{**settings, **overrides})


def _tail(result: subprocess.CompletedProcess, lines: int = 12) -> str:
    return "\n".join(result.stderr.strip().splitlines()[-lines:])


def snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tree_a(demo_root) -> Path:
    return demo_root


@pytest.fixture(scope="module")
def tree_b(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree_b")
    make_demo_dataset(root, seed=1, size="tiny", num_train_patients=3, num_val_patients=1)
    return root


# --------------------------------------------------------------------------------------------------- training


@pytest.mark.xdist_group("runstate_train")
def test_another_dataset_is_refused_then_resume_false_moves_the_old_state_aside(tree_a, tree_b, tmp_path):
    first = _train(tree_a, tmp_path)
    assert first.returncode == 0, _tail(first, 40)
    manifest = json.loads((tmp_path / "models" / "checkpoints" / "run.json").read_text())
    assert manifest["patients"] == ["P001", "P002"] and manifest["network"]["num_cascades"] == 1
    before = snapshot(tmp_path)

    refused = _train(tree_b, tmp_path)
    assert refused.returncode != 0
    tail = _tail(refused)
    assert "belongs to another run" in tail and "new here: P003" in tail
    assert str(tmp_path / "runs" / "split.json") in tail and "--resume false" in tail and "--ckpt_dir" in tail
    assert tail.splitlines()[-1].startswith("Start fresh with --resume false")  # the message ends the output
    assert snapshot(tmp_path) == before  # nothing deleted, moved or rewritten

    fresh = _train(tree_b, tmp_path, resume=False)
    assert fresh.returncode == 0, _tail(fresh, 40)
    moved = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("previous-*/*"))
    assert any(m.startswith("runs/previous-") and m.endswith("/split.json") for m in moved)
    assert any(m.startswith("models/checkpoints/previous-") and m.endswith(".pt") for m in moved)
    assert any(m.startswith("models/previous-") and m.endswith("/model.pt") for m in moved)
    split = json.loads((tmp_path / "runs" / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ["P001", "P002", "P003"]
    assert (tmp_path / "models" / "checkpoints" / "checkpoint_e1_i4.pt").is_file()


@pytest.mark.xdist_group("runstate_network")
def test_a_checkpoint_of_another_network_is_refused_before_any_work(tree_a, tmp_path):
    assert _train(tree_a, tmp_path).returncode == 0
    before = snapshot(tmp_path)
    other = _train(tree_a, tmp_path, **{"network_def#num_cascades": 2, "network_def#n_feat0": 6})
    assert other.returncode != 0
    tail = _tail(other)
    assert "its network differs: num_cascades 1 there, 2 here; n_feat0 4 there, 6 here" in tail
    assert "Epoch" not in other.stderr + other.stdout  # refused before any training
    assert snapshot(tmp_path) == before


@pytest.mark.xdist_group("runstate_resume")
def test_resume_falls_back_past_a_truncated_newest_checkpoint(tree_a, tmp_path):
    first = _train(tree_a, tmp_path, checkpoint_interval=2)
    assert first.returncode == 0, _tail(first, 40)
    checkpoints = tmp_path / "models" / "checkpoints"
    newest, previous = checkpoints / "checkpoint_e1_i4.pt", checkpoints / "checkpoint_e1_i2.pt"
    assert newest.is_file() and previous.is_file()
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = _train(tree_a, tmp_path, epochs=2, checkpoint_interval=2)
    assert resumed.returncode == 0, _tail(resumed, 40)
    log = resumed.stdout + resumed.stderr
    assert f"cannot resume from {newest}" in log and "truncated or corrupt" in log
    assert f"resumed from {previous}" in log


# --------------------------------------------------------------------------------------------------- checks


def test_output_folder_under_a_file_is_refused_before_anything_else(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OutputDirError, match=f"{blocker} is a file, not a folder"):
        check_writable(tmp_path / "ok", blocker / "inference")
    assert (tmp_path / "ok").is_dir() and blocker.read_text() == "a file, not a folder"


@pytest.mark.xdist_group("runstate_infer")
def test_inference_with_an_unwritable_output_fails_before_any_reconstruction(tree_a, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("x")
    start = time.perf_counter()
    result = _run(
        "inference",
        [str(CONFIGS / "inference.yaml")],
        dataset_dir=str(tree_a),
        output_dir=str(blocker / "inference"),
        load_pretrain=False,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert str(blocker / "inference") in last and "is a file, not a folder" in last
    assert "wrote outputs" not in result.stdout + result.stderr
    print(f"unwritable output_dir refused after {elapsed:.1f} s")


@pytest.mark.xdist_group("runstate_infer")
def test_a_truncated_model_file_is_named(tree_a, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    result = _run(
        "inference",
        [str(CONFIGS / "inference.yaml")],
        dataset_dir=str(tree_a),
        output_dir=str(tmp_path / "out"),
        model_path=str(model),
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {model}: cannot be read as a PyTorch file (truncated or corrupt?)")


def test_a_split_of_another_dataset_never_drops_patients_silently(tree_a, tree_b, tmp_path):
    from bundle.data import build_datalist, save_split

    split = tmp_path / "split.json"
    save_split(split, ["P001"], ["P002"])
    with pytest.raises(Exception, match="does not list 1 training patient"):
        build_datalist(tree_b, subset="train", split_file=split)


def test_run_state_without_a_manifest_compares_what_the_files_hold(tree_a, tree_b, tmp_path):
    from bundle.data import save_split
    from bundle.networks import PromptMR

    split = tmp_path / "runs" / "split.json"
    save_split(split, ["P001"], ["P002"])  # written by an older version: no run.json beside it
    network = PromptMR(**TINY_ARGS)
    state = RunState(tree_a, network, tmp_path / "models" / "checkpoints", split_file=split)
    state.check()  # same patients: accepted, manifests written
    assert (tmp_path / "runs" / "run.json").is_file()
    (tmp_path / "runs" / "run.json").unlink()
    with pytest.raises(RunStateError, match="new here: P003"):
        RunState(tree_b, network, tmp_path / "models" / "checkpoints", split_file=split).check()


# --------------------------------------------------------------------------------------------------- inference


def _inference_args(root: Path, output: Path) -> list[str]:
    return _command(
        "inference",
        [str(CONFIGS / "inference.yaml")],
        dataset_dir=str(root),
        output_dir=str(output),
        load_pretrain=False,
        modalities=["Cine", "Mapping", "Tagging"],
    )


def _nifti(output: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(output)): np.asarray(nib.load(p).dataobj) for p in sorted(output.rglob("*.nii.gz"))}


@pytest.mark.xdist_group("runstate_sigint")
def test_interrupted_inference_resumes_with_the_missing_files_only(tree_a, tmp_path):
    output = tmp_path / "out"
    victim = subprocess.Popen(
        _inference_args(tree_a, output), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while len(list(output.rglob("*.png"))) < 3 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "inference finished before it could be interrupted"
    victim.send_signal(signal.SIGINT)
    victim.communicate(timeout=120)
    done_before = len(list(output.rglob("*.png")))
    assert victim.returncode != 0 and done_before >= 3
    assert not [p for p in output.rglob("*") if p.name.startswith(".") and p.is_file()]  # no half-written file

    restarted = subprocess.run(_inference_args(tree_a, output), env=_env(), capture_output=True, text=True, timeout=400)
    assert restarted.returncode == 0, _tail(restarted, 40)
    log = restarted.stdout + restarted.stderr
    assert f"skipping {done_before} file(s) whose outputs all exist already" in log

    reference = tmp_path / "reference"
    uninterrupted = subprocess.run(
        _inference_args(tree_a, reference), env=_env(), capture_output=True, text=True, timeout=400
    )
    assert uninterrupted.returncode == 0
    got, expected = _nifti(output), _nifti(reference)
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[k], expected[k]) for k in got)


@pytest.mark.xdist_group("runstate_partial")
def test_partial_success_ends_with_a_summary_not_a_traceback(tmp_path):
    root = tmp_path / "tree"
    make_demo_dataset(root, seed=0, size="tiny")
    inputs = sorted((root / "ChallengeData" / "MultiCoil" / "Mapping" / "ValidationSet").rglob("*_kus_*.mat"))
    bad = inputs[:2]
    for path in bad:
        path.write_bytes(b"not a mat file")
    output = tmp_path / "out"
    result = subprocess.run(
        _command(
            "inference",
            [str(CONFIGS / "inference.yaml")],
            dataset_dir=str(root),
            output_dir=str(output),
            load_pretrain=False,
            modalities=["Mapping"],
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    summary = lines[-(len(bad) + 2) :]
    good = len(inputs) - len(bad)
    assert (
        summary[0]
        == f"inference finished but skipped 2 bad item(s) in 2 file(s) ({good} file(s) written, exit status 1):"
    )
    assert all(any(str(path) in line for line in summary[1:-1]) for path in bad)
    assert summary[-1] == f"full report: {output / 'skipped_files.json'}"
    report = json.loads((output / "skipped_files.json").read_text())
    assert report["files_written"] == good and {row["file"] for row in report["skipped"]} == set(map(str, bad))
    assert len(list((output / "nifti").rglob("*.nii.gz"))) == good
