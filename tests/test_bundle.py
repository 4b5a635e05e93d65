"""The bundle's workflows in the Model Zoo test pattern: initialize -> check_properties -> run -> finalize.

Tiny demo data and a tiny network; the configs are otherwise the shipped ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch
from helpers import (
    CONFIGS,
    LOGGING,
    META,
    REPO,
    TINY_ARGS,
    TINY_NET,
    HtmlReport,
    check_dicom_series,
    check_report_matches_metrics,
    run_workflow,
    snapshot,
    train_overrides,
)
from monai.bundle import ConfigWorkflow

from bundle.data import make_demo_dataset
from bundle.io.sidecar import parse_sampling, validate_sidecar
from bundle.metrics import run4ranking, select_slices

pytestmark = pytest.mark.xdist_group("bundle")


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        **train_overrides(demo_root, out),
    )
    run_workflow(workflow)
    return out


def test_train_writes_best_model_checkpoints_and_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (trained / "models" / "model.pt").is_file()
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("cascades.0.") for k in state)
    checkpoints = list((trained / "models" / "checkpoints").glob("checkpoint_e1_i*.pt"))
    assert len(checkpoints) == 1
    saved = torch.load(checkpoints[0], weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "sampler", "rng", "best_model"} <= set(saved)
    events = EventAccumulator(str(trained / "runs"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for term in ("fidelity", "ssim", "eagle", "vgg", "reg"):
        assert f"train/loss_{term}" in scalars
    assert {"train/loss", "train/lr", "val_ssim", "val_psnr", "val_nmse", "val_zf_ssim", "val_zf_psnr"} <= scalars
    # One set of full-field-of-view images per validated modality (the modalities with per-modality SSIM scalars).
    modalities = {tag.split("/", 1)[1] for tag in scalars if tag.startswith("val_ssim/")}
    assert modalities
    kinds = ("zero_filled", "recon", "target", "error", "comparison")
    assert set(events.Tags()["images"]) == {f"val/{m}/{k}" for m in modalities for k in kinds}
    for tag in events.Tags()["images"]:
        image = events.Images(tag)[-1]
        assert max(image.width, image.height) >= 256, (tag, image.width, image.height)
    assert json.loads((trained / "runs" / "split.json").read_text())


def test_train_then_evaluate_writes_metric_tables(trained, demo_root, tmp_path):
    overrides = train_overrides(demo_root, trained)
    overrides["output_dir"] = str(tmp_path / "eval")
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        run_id="evaluating",
        **overrides,
    )
    run_workflow(workflow)
    tables = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert tables["per_file"] and tables["per_modality"]
    for key in ("ssim", "psnr", "nmse", "zf_ssim"):
        assert np.isfinite(tables["overall"][key])
    assert (tmp_path / "eval" / "metrics_per_file.csv").read_text().startswith("file,modality,images,ssim")
    assert (tmp_path / "eval" / "metrics_per_modality.csv").is_file()
    report = check_report_matches_metrics(tmp_path / "eval" / "report.html", tables)
    shown = {row["modality"] for row in tables["per_file"]}
    montages = sum(min(2, sum(r["modality"] == m for r in tables["per_file"])) for m in shown)
    assert len(report.images) == montages  # best and worst file per modality (one if the modality has one file)
    assert all(image.size[0] >= 4 * 256 for image in report.decoded_images())


def _inference_workflow(demo_root: Path, model: Path, output: Path, **extra) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"),
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="infer",
        bundle_root=str(REPO),
        dataset_dir=str(demo_root),
        output_dir=str(output),
        model_path=str(model),
        modalities=["Mapping", "BlackBlood"],
        num_workers=0,
        **TINY_NET,
        **extra,
    )


def test_inference_writes_submission_nifti_and_preview_and_leaves_inputs_alone(trained, demo_root, tmp_path):
    before = snapshot(demo_root)
    output = tmp_path / "infer"
    # dicom="true" as the command line passes it (--dicom true).
    run_workflow(_inference_workflow(demo_root, trained / "models" / "model.pt", output, dicom="true"))
    assert snapshot(demo_root) == before  # nothing written into, or over, the dataset
    sha = hashlib.sha256((trained / "models" / "model.pt").read_bytes()).hexdigest()

    multicoil = demo_root / "ChallengeData" / "MultiCoil"
    inputs = sorted(p for p in multicoil.rglob("*_kus_*.mat") if p.parts[-5] in ("Mapping", "BlackBlood"))
    assert inputs
    for kus in inputs:
        relative = kus.relative_to(multicoil)
        modality, split, task_dir, patient = relative.parts[:4]
        task = task_dir.replace("UnderSample_", "")
        sub = output / "submission" / task / modality / split / task / patient / kus.name
        img = scipy.io.loadmat(sub)["img4ranking"]
        assert img.dtype == np.float32
        nifti = nib.load(output / "nifti" / "ChallengeData" / "MultiCoil" / relative.with_suffix(".nii.gz"))
        data = np.asarray(nifti.dataobj)
        assert data.dtype == np.float32
        from bundle.data import MatSliceReader

        with MatSliceReader(kus) as reader:
            nt, nz, ny, nx = reader.nt, reader.nz, reader.ny, reader.nx
        if "blackblood" in kus.name:
            assert data.shape == (nx, ny, nz)  # 3-D: no singleton time axis
            assert img.shape == (round(nx / 3 + 1e-9), ny // 2, len(select_slices(nz)))
        else:
            assert data.shape == (nx, ny, nz, nt)
            # Mapping: the 4th axis is the contrast index, with a unit-less step.
            assert nifti.header.get_xyzt_units() == ("mm", "unknown") and nifti.header["pixdim"][4] == 1.0
            assert img.shape[-1] == nt  # mapping keeps every frame
            expected = run4ranking(data, kus.name, coil_combined=True)
            np.testing.assert_allclose(img, expected, rtol=1e-6)
        zooms = nifti.header.get_zooms()
        assert all(z > 0 for z in zooms)
        np.testing.assert_allclose(np.diag(nifti.affine)[:3], zooms[:3])
        assert nifti.header.get_xyzt_units()[0] == "mm"
        assert (output / "preview" / "ChallengeData" / "MultiCoil" / relative.with_suffix(".png")).is_file()
        pattern, acceleration = parse_sampling(kus)
        descrip = nifti.header["descrip"].item().decode()
        assert "PromptMR" in descrip and f"{pattern} x{acceleration}" in descrip
        sidecar = json.loads(
            (output / "nifti" / "ChallengeData" / "MultiCoil" / relative.with_suffix(".json")).read_text()
        )
        validate_sidecar(sidecar)
        assert sidecar["ImageShape"] == list(data.shape) and sidecar["SeriesDescription"] == descrip
        assert sidecar["ParallelReductionFactorInPlane"] == acceleration and sidecar["MaskPattern"] == pattern
        assert sidecar["Model"]["CheckpointSHA256"] == sha and sidecar["Model"]["NetworkArguments"]["num_cascades"] == 1
        assert sidecar["MaskFile"] and (multicoil.parent.parent / sidecar["MaskFile"]).is_file()
        dicom = check_dicom_series(
            output / "dicom" / "ChallengeData" / "MultiCoil" / relative.with_suffix(""),
            output / "nifti" / "ChallengeData" / "MultiCoil" / relative.with_suffix(".nii.gz"),
        )
        assert dicom[0].SeriesDescription == descrip and dicom[0].PatientID == patient
    report = HtmlReport(output / "report.html")
    assert not report.external and len(report.decoded_images()) == len(inputs)
    assert len(report.tables["files"]) == len(inputs) + 1


def test_inference_refuses_output_inside_dataset(trained, demo_root):
    from bundle.errors import UnsafePathError

    workflow = _inference_workflow(demo_root, trained / "models" / "model.pt", demo_root / "outputs")
    with pytest.raises(Exception) as info:
        workflow.initialize()
        workflow.run()
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, UnsafePathError) for e in chain)
    assert not (demo_root / "outputs").exists()


def test_ckpt_export_torchscript_matches_eager(trained, tmp_path):
    ts_path = tmp_path / "model.ts"
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts_path),
        "--ckpt_file",
        str(trained / "models" / "model.pt"),
        "--meta_file",
        META,
        "--config_file",
        str(CONFIGS / "inference.yaml"),
        "--bundle_root",
        str(REPO),
    ]
    for key, value in TINY_NET.items():
        args += [f"--{key}", json.dumps(value)]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(ts_path))

    from bundle.networks import PromptMR

    kwargs = dict(TINY_ARGS)
    eager = PromptMR(num_low_frequencies=16, **kwargs)
    eager.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    eager.eval()
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, 5 * 3, 40, 28, dtype=torch.complex64, generator=generator)
    mask = torch.zeros(1, 1, 1, 28)
    mask[..., ::4] = 1
    mask[..., 6:22] = 1
    with torch.no_grad():
        expected = eager(kspace * mask[..., None, :].squeeze(-2), mask)
        got = scripted(kspace * mask[..., None, :].squeeze(-2), mask)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)


def _cli_overrides(demo_root: Path, out: Path) -> list[str]:
    args = []
    for key, value in train_overrides(demo_root, out).items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def test_multi_gpu_overlay_runs_two_processes_on_cpu(demo_root, tmp_path):
    # One run from no split file (rank 0 alone makes the split and broadcasts it): the two-launcher test of
    # test_distributed_inference.py makes two more from no split file and checks that they write the same split.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str([str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml")]),
        "--meta_file",
        META,
        "--logging_file",
        LOGGING,
        *_cli_overrides(demo_root, tmp_path),
    ]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert len(list((tmp_path / "models" / "checkpoints").glob("checkpoint_e1_*.pt"))) == 1
    # Only rank 0 writes TensorBoard events.
    assert len(list((tmp_path / "runs").glob("events.out.tfevents.*"))) >= 1
    assert "Epoch[1] Complete" in result.stdout + result.stderr
    # ... and only rank 0 creates event files at all (their names end in <host>.<pid>.<n>).
    writers = {p.name.split(".")[-2] for p in (tmp_path / "runs").rglob("events.out.tfevents.*")}
    assert len(writers) == 1, sorted(p.name for p in (tmp_path / "runs").rglob("events.out.tfevents.*"))
    # The parameter layout is settled before DDP wraps the model: no per-step gradient copies.
    assert "Grad strides do not match" not in result.stdout + result.stderr


def test_mlflow_tracking(demo_root, tmp_path):
    overrides = train_overrides(demo_root, tmp_path)
    overrides["train_max_items"] = 4
    overrides["val_max_items"] = 2
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        tracking="mlflow",
        **overrides,
    )
    run_workflow(workflow)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("hypercmr")
    runs = client.search_runs([experiment.experiment_id])
    metrics = set().union(*(run.data.metrics for run in runs))
    assert "train_loss" in metrics and "val_ssim" in metrics


def _evaluation(overrides: dict) -> ConfigWorkflow:
    """``evaluating`` of train.yaml + evaluate.yaml with the given overrides."""
    return ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        run_id="evaluating",
        **overrides,
    )


@pytest.fixture(scope="module")
def demo_root_2023(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo2023")
    make_demo_dataset(root, seed=0, size="tiny", layout="2023")
    return root


def test_cmrxrecon2023_tree_trains_on_official_masks_then_evaluates(demo_root_2023, tmp_path):
    overrides = train_overrides(demo_root_2023, tmp_path)
    overrides.update(official_masks=["Uniform4"], train_max_items=6, val_max_items=4)
    run_workflow(
        ConfigWorkflow(
            config_file=str(CONFIGS / "train.yaml"),
            meta_file=META,
            logging_file=LOGGING,
            workflow_type="train",
            **overrides,
        )
    )
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "network.yaml").is_file()
    split = json.loads((tmp_path / "runs" / "split.json").read_text())
    assert split["train"] and split["val"] and not set(split["train"]) & set(split["val"])

    overrides["output_dir"] = str(tmp_path / "eval")
    run_workflow(_evaluation(overrides))
    tables = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {row["modality"] for row in tables["per_modality"]} <= {"Cine", "Mapping"} and tables["per_file"]
    assert all(np.isfinite(tables["overall"][key]) for key in ("ssim", "psnr", "nmse", "zf_ssim"))


def test_validation_metrics_do_not_depend_on_where_the_dataset_lives(trained, demo_root, tmp_path):
    import shutil

    overall = []
    for name in ("first", "second"):
        copy = tmp_path / name / "somewhere"
        shutil.copytree(demo_root, copy)
        overrides = train_overrides(copy, trained)
        overrides["output_dir"] = str(tmp_path / name / "eval")
        run_workflow(_evaluation(overrides))
        overall.append(json.loads((tmp_path / name / "eval" / "metrics.json").read_text())["overall"])
    assert overall[0] == overall[1]


def test_inference_config_repeats_the_training_definitions_exactly():
    """configs/inference.yaml runs on its own (Zoo layout), so it repeats what train.yaml defines once."""
    from monai.bundle import ConfigParser

    train, infer = ConfigParser(), ConfigParser()
    train.read_config(str(CONFIGS / "train.yaml"))
    infer.read_config(str(CONFIGS / "inference.yaml"))
    for key in (
        "network_def",
        "sample_steps",
        "amp_dtype",
        "precision",
        "num_adj_frames",
        "model_path",
        "checkpointloader",
        "inferer",
    ):
        assert train.get(key) == infer.get(key), f"{key} differs between train.yaml and inference.yaml"
    # The one intended difference: inference is exact fp32 on the CPU (autocast on GPUs only), training is not.
    assert (train.get("amp"), infer.get("amp")) == ("auto", "cuda")
    # Inference adds only its slab cache and the bad-slice marking to the loader.
    extra = ("slab_cache", "mark_bad")
    assert train.get("load_slice") == {k: v for k, v in infer.get("load_slice").items() if k not in extra}
