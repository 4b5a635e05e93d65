"""Sharded inference and evaluation with torchrun (gloo, 2 CPU processes, tiny network, tiny demo tree), and a
training run over two torchrun launchers (``--nnodes=2``) on this one machine.

Every multi-process run goes through the command line as a user types it; the one-process reference runs are
the same commands without torchrun.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY_ARGS, TINY_NET

from bundle.workflows import balanced_split, save_model

CONFIGS = REPO / "configs"
OVERLAY = str(CONFIGS / "multi_gpu_inference.yaml")
MAT_HEADER = 116  # the MAT v5 text header ends with its creation time, which differs between any two runs

pytestmark = pytest.mark.xdist_group("distributed")


# --------------------------------------------------------------------------------------------------- the split


def test_balanced_split_deals_large_files_apart_and_is_deterministic():
    sizes = [("cine_a", 100), ("cine_b", 100), ("t2_a", 10), ("t2_b", 10), ("t1", 30), ("lvot", 60)]
    shards = balanced_split(sizes, 2)
    assert sorted(sum(shards, [])) == sorted(name for name, _ in sizes)  # every file exactly once
    assert {"cine_a", "cine_b"} & set(shards[0]) and {"cine_a", "cine_b"} & set(shards[1])  # not both on one rank
    loads = [sum(dict(sizes)[n] for n in shard) for shard in shards]
    assert loads == [160, 150]
    assert balanced_split(list(reversed(sizes)), 2) == shards  # input order does not matter
    assert balanced_split(sizes, 1) == [sorted(n for n, _ in sizes)]
    assert balanced_split(sizes[:1], 3) == [["cine_a"], [], []]
    with pytest.raises(ValueError, match="world size"):
        balanced_split(sizes, 0)


# --------------------------------------------------------------------------------------------------- runs


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _overrides(**extra) -> list[str]:
    args = ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    args += ["--bundle_root", str(REPO)]
    for key, value in {**TINY_NET, "num_workers": 0, **extra}.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def _bundle(run_id: str, configs: list[str], nproc: int = 1, **extra) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
    args = launcher + ["-m", "monai.bundle", "run", run_id, "--config_file", str(configs), *_overrides(**extra)]
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)


def _tail(result: subprocess.CompletedProcess, lines: int = 30) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), the MAT v5 creation time blanked."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".mat":
            assert data.startswith(b"MATLAB 5.0 MAT-file")
            data = data[MAT_HEADER:]
        out[path.relative_to(folder).as_posix()] = data
    return out


@pytest.fixture(scope="module")
def tree(demo_root) -> Path:
    return demo_root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from bundle.networks import PromptMR

    torch.manual_seed(0)
    network = PromptMR(**TINY_ARGS)
    return save_model(network, tmp_path_factory.mktemp("model") / "model.pt")


def _infer(tree: Path, model: Path, output: Path, nproc: int, **extra) -> subprocess.CompletedProcess:
    configs = [str(CONFIGS / "inference.yaml")] + ([OVERLAY] if nproc > 1 else [])
    settings = dict(
        dataset_dir=str(tree), model_path=str(model), output_dir=str(output), modalities=["Cine", "Mapping"]
    )
    return _bundle("inference", configs, nproc, **{**settings, **extra})


@pytest.fixture(scope="module")
def one_process(tree, model, tmp_path_factory) -> Path:
    """The output folder of the one-process inference command: what every sharded run must equal."""
    output = tmp_path_factory.mktemp("one_process") / "one"
    result = _infer(tree, model, output, 1)
    assert result.returncode == 0, _tail(result)
    return output


def test_sharded_inference_writes_the_files_of_one_process_byte_for_byte(tree, model, one_process, tmp_path):
    two = _infer(tree, model, tmp_path / "two", 2)
    assert two.returncode == 0, _tail(two)
    log = two.stdout + two.stderr
    expected, got = _files(one_process), _files(tmp_path / "two")
    expected.pop("report.html"), got.pop("report.html")  # it names its own output folder
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []
    # Both ranks wrote files, each file once; rank 0 drew one bar over all of them.
    ranks = {r: log.count(f".mat (rank {r})") for r in (0, 1)}
    inputs = len(list((one_process / "preview").rglob("*.png")))
    assert ranks[0] > 0 and ranks[1] > 0 and ranks[0] + ranks[1] == inputs, ranks
    assert f"{inputs}/{inputs}" in log and "slice/s" in log
    report = (tmp_path / "two" / "report.html").read_text()
    assert report.count("<img") == inputs
    # Rerunning resumes: nothing is left to do on either rank, and the run still succeeds.
    again = _infer(tree, model, tmp_path / "two", 2)
    assert again.returncode == 0, _tail(again)
    assert "wrote outputs" not in again.stdout + again.stderr


def test_one_bad_file_is_reported_once_and_every_rank_exits_1(tree, model, tmp_path):
    import shutil

    broken = tmp_path / "tree"
    shutil.copytree(
        tree / "ChallengeData" / "MultiCoil" / "Mapping", broken / "ChallengeData" / "MultiCoil" / "Mapping"
    )
    victims = sorted((broken / "ChallengeData").rglob("UnderSample_Task1/*/T1map_kus_Uniform4.mat"))
    assert victims
    victims[0].write_bytes(victims[0].read_bytes()[:2000])  # truncated
    result = _infer(broken, model, tmp_path / "out", 2)
    assert result.returncode == 1, _tail(result)
    report = json.loads((tmp_path / "out" / "skipped_files.json").read_text())
    assert [row["file"] for row in report["skipped"]] == [str(victims[0])]
    inputs = len(list((broken / "ChallengeData").rglob("UnderSample_Task*/**/*.mat")))
    assert report["files_written"] == inputs - 1
    assert len(list((tmp_path / "out" / "nifti").rglob("*.nii.gz"))) == inputs - 1
    log = result.stdout + result.stderr
    assert log.count("full report:") == 1  # the summary comes from rank 0 alone
    assert "rank 0 prints the summary (this is rank 1)" in log


def test_sharded_evaluation_writes_the_metrics_of_one_process(tree, model, tmp_path):
    configs = [str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")]
    settings = dict(dataset_dir=str(tree), model_path=str(model), ckpt_dir=str(tmp_path / "models"), val_max_items=6)
    one = _bundle("evaluating", configs, 1, output_dir=str(tmp_path / "one"), **settings)
    assert one.returncode == 0, _tail(one)
    two = _bundle("evaluating", configs + [OVERLAY], 2, output_dir=str(tmp_path / "two"), **settings)
    assert two.returncode == 0, _tail(two)
    for name in ("metrics.json", "metrics_per_file.csv", "metrics_per_modality.csv", "report.html"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


# --------------------------------------------------------------------------------------------------- training


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_args(tree: Path, out: Path) -> list[str]:
    settings = dict(
        dataset_dir=str(tree),
        output_dir=str(out / "runs"),
        ckpt_dir=str(out / "models"),
        epochs=1,
        train_max_items=8,
        val_max_items=4,
        accumulation_steps=1,
    )
    configs = str([str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml")])
    return ["-m", "monai.bundle", "run", "training", "--config_file", configs, *_overrides(**settings)]


def _trained_state(out: Path) -> tuple[str, dict]:
    checkpoints = sorted((out / "models" / "checkpoints").glob("checkpoint_e1_*.pt"))
    assert len(checkpoints) == 1, checkpoints
    state = torch.load(checkpoints[0], weights_only=True)
    return (out / "runs" / "split.json").read_text(), state["model"]


# Its own xdist group: the torchrun tests of this module would otherwise all queue on one worker.
@pytest.mark.xdist_group("distributed_train")
def test_two_launchers_nnodes_2_train_like_one_launcher_with_two_processes(tree, tmp_path):
    run = [sys.executable, "-m", "torch.distributed.run"]
    single = subprocess.run(
        run + ["--standalone", "--nnodes=1", "--nproc_per_node=2", *_train_args(tree, tmp_path / "one")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert single.returncode == 0, _tail(single)
    endpoint = f"127.0.0.1:{_free_port()}"
    launchers = [
        subprocess.Popen(
            run
            + ["--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1", "--rdzv_backend=c10d"]
            + [f"--rdzv_endpoint={endpoint}", "--rdzv_id=h23", *_train_args(tree, tmp_path / "two")],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    logs = [launcher.communicate(timeout=400)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(log[-3000:] for log in logs)
    split_one, model_one = _trained_state(tmp_path / "one")
    split_two, model_two = _trained_state(tmp_path / "two")
    assert split_two == split_one
    assert model_two.keys() == model_one.keys()
    assert all(torch.equal(model_two[key], model_one[key]) for key in model_one)
    # Global rank 0 alone wrote the run's files: one TensorBoard writer, one split, one run.json.
    writers = {p.name.split(".")[-2] for p in (tmp_path / "two" / "runs").rglob("events.out.tfevents.*")}
    assert len(writers) == 1


# --------------------------------------------------------------------------------------------------- a rank dies


def _launch(tree: Path, model: Path, output: Path, **extra) -> subprocess.Popen:
    """The two-process inference command of :func:`_infer`, started in the background (stderr into stdout)."""
    settings = dict(
        dataset_dir=str(tree), model_path=str(model), output_dir=str(output), modalities=["Cine", "Mapping"]
    )
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    configs = str([str(CONFIGS / "inference.yaml"), OVERLAY])
    args = launcher + ["-m", "monai.bundle", "run", "inference", "--config_file", configs]
    args += _overrides(**{**settings, **extra})
    return subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _hit_rank_1_after_its_first_file(launcher: subprocess.Popen, signum: int, until: str | None = None) -> dict:
    """Read the job's log; send ``signum`` to rank 1 once it wrote its first file. Returns the log and times.

    With ``until``, rank 1 gets ``SIGCONT`` once a line holds it (a stopped rank then takes torchrun's SIGTERM).
    """
    import re
    import signal
    import threading

    watchdog = threading.Timer(300, launcher.kill)
    watchdog.start()
    lines, pid, hit, seen = [], None, None, None
    try:
        for line in launcher.stdout:
            lines.append(line)
            found = re.search(r"rank 1 of 2 \(gloo, pid (\d+)", line)
            if found:
                pid = int(found.group(1))
            if hit is None and pid is not None and "wrote outputs of" in line and "(rank 1)" in line:
                os.kill(pid, signum)
                hit = time.monotonic()
            if until is not None and seen is None and until in line:
                seen = time.monotonic()
                os.kill(pid, signal.SIGCONT)
        launcher.wait()
    finally:
        watchdog.cancel()
    return {"log": "".join(lines), "pid": pid, "hit": hit, "seen": seen, "end": time.monotonic()}


def _partial(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp*") if p.is_file())


# In the module's group, with the sharded test: both compare with the one-process run, made once.
def test_a_rank_killed_mid_run_fails_the_job_naming_it_and_the_rerun_completes_it(tree, model, one_process, tmp_path):
    import signal

    run = _hit_rank_1_after_its_first_file(_launch(tree, model, tmp_path / "two"), signal.SIGKILL)
    log = run["log"]
    assert run["hit"] is not None, log[-3000:]
    assert run["end"] - run["hit"] < 60, "the surviving rank did not stop in time"
    # torchrun stops rank 0 and names the dead rank as the root cause.
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", log) and "exitcode  : -9" in log, log[-3000:]
    out = tmp_path / "two"
    inputs = len(list((one_process / "preview").rglob("*.png")))
    complete = sorted(out.rglob("preview/**/*.png"))  # a file's preview is its last output
    assert 0 < len(complete) < inputs, (len(complete), inputs)
    # A file half-written when the rank died (planted, as the kill may land between two files): the NIfTI of
    # a finished file replaced by a truncated temporary file.
    victim = out / "nifti" / complete[0].relative_to(out / "preview").with_suffix(".nii.gz")
    stale = victim.with_name(f".{victim.name}.x1y2z3.tmp.nii.gz")
    stale.write_bytes(victim.read_bytes()[:100])
    victim.unlink()

    again = _infer(tree, model, out, 2)
    assert again.returncode == 0, _tail(again)
    redone = (again.stdout + again.stderr).count("wrote outputs of")
    assert redone == inputs - len(complete) + 1  # only the missing and incomplete files
    assert _partial(out) == []
    expected, got = _files(one_process), _files(tmp_path / "two")
    expected.pop("report.html"), got.pop("report.html")
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


# Its own xdist group: the torchrun tests of this module would otherwise all queue on one worker.
@pytest.mark.xdist_group("distributed_faults")
def test_a_rank_that_hangs_is_named_by_the_rank_waiting_for_it_within_the_timeout(tree, model, tmp_path):
    import signal

    marker = "stopped sending heartbeats"
    launcher = _launch(tree, model, tmp_path / "out", dist_timeout_s=30)
    run = _hit_rank_1_after_its_first_file(launcher, signal.SIGSTOP, until=marker)
    log = run["log"]
    assert run["hit"] is not None and run["seen"] is not None, log[-3000:]
    assert launcher.returncode != 0
    assert re.search(r"rank 1 of 2 stopped sending heartbeats \(rank 1 [\d.]+ s ago; killed or hung\)", log), log
    assert run["seen"] - run["hit"] < 30  # given up on after its heartbeat stood still (3 s), within the timeout
    assert _partial(tmp_path / "out") == []
