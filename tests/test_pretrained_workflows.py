"""Published weights through the shipped configs: import -> inference (both dataset layouts), checks before any
work, and fine-tuning from imported weights on a site's single patient."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch
from helpers import REPO, TINY_ARGS
from monai.bundle import ConfigWorkflow

from bundle.data import make_demo_dataset
from bundle.errors import CheckpointMismatchError, find_bundle_error
from bundle.networks import PromptMR, read_network_overlay
from scripts.import_weights import main as import_weights

CONFIGS = REPO / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

pytestmark = pytest.mark.xdist_group("pretrained_workflows")


@pytest.fixture(scope="module")
def source() -> PromptMR:
    """Stand-in for published weights: a tiny PromptMR with non-default values in every tensor."""
    torch.manual_seed(1)
    net = PromptMR(**TINY_ARGS)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory) -> Path:
    """``scripts/import_weights.py`` applied to a Lightning checkpoint of ``source``."""
    folder = tmp_path_factory.mktemp("imported")
    ckpt = folder / "promptmr-1cascades-epoch=11-step=258576.ckpt"
    state = {f"promptmr.{k}": v for k, v in source.state_dict().items()}
    state["loss.w"] = torch.ones(1)
    hparams = {"num_cascades": 1, "num_adj_slices": 5, "n_feat0": TINY_ARGS["n_feat0"], "lr": 2e-4}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 11, "global_step": 258576}, ckpt)
    assert import_weights([str(ckpt), "--out-dir", str(folder / "out")]) == 0
    return folder / "out"


@pytest.fixture(scope="module", params=["2024", "2023"])
def tree(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(f"demo{request.param}")
    make_demo_dataset(root, seed=0, size="tiny", layout=request.param)
    return request.param, root


def _inference(root: Path, model: Path, output: Path, overlays=()) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.yaml"), *map(str, overlays)],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="infer",
        bundle_root=str(REPO),
        dataset_dir=str(root),
        output_dir=str(output),
        model_path=str(model),
        modalities=["Mapping"],
        num_workers=0,
    )


def _run(workflow: ConfigWorkflow) -> None:
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()


def _arrays(output: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted(output.rglob("*.mat")):
        arrays[str(path.relative_to(output))] = scipy.io.loadmat(path)["img4ranking"]
    for path in sorted(output.rglob("*.nii.gz")):
        arrays[str(path.relative_to(output))] = np.asarray(nib.load(path).dataobj)
    return arrays


def test_import_then_inference_equals_loading_the_state_dict_directly(tree, imported, source, tmp_path):
    layout, root = tree
    _run(_inference(root, imported / "model.pt", tmp_path / "imported", [imported / "network.yaml"]))
    direct = tmp_path / "direct" / "model.pt"
    direct.parent.mkdir()
    torch.save(source.state_dict(), direct)
    _run(_inference(root, direct, tmp_path / "direct_out", [imported / "network.yaml"]))

    got, expected = _arrays(tmp_path / "imported"), _arrays(tmp_path / "direct_out")
    assert got.keys() == expected.keys() and len(got) >= 4
    for name in got:
        assert np.array_equal(got[name], expected[name]), name  # bit-identical
    submissions = sorted(p.relative_to(tmp_path / "imported") for p in (tmp_path / "imported").rglob("*.mat"))
    if layout == "2023":
        assert all(p.parts[:3] == ("submission", "MultiCoil", "Mapping") for p in submissions)
        assert any(p.parts[4].startswith("AccFactor") and p.name in ("T1map.mat", "T2map.mat") for p in submissions)
    else:
        assert all(p.parts[1] in ("Task1", "Task2") for p in submissions)


def test_inference_refuses_a_model_of_another_architecture_before_any_work(imported, tree, tmp_path):
    _, root = tree
    output = tmp_path / "out"
    workflow = _inference(root, imported / "model.pt", output)  # paper-size network_def, tiny weights
    with pytest.raises(Exception) as info:
        workflow.initialize()
    error = find_bundle_error(info.value)
    assert isinstance(error, CheckpointMismatchError)
    message = str(error)
    assert str(imported / "model.pt") in message
    assert "num_cascades: 1 in the checkpoint, 12 in the config" in message
    assert str(imported / "network.yaml") in message
    assert not output.exists()


def _training(overlays: list[Path], root: Path, out: Path, **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), *map(str, overlays)],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        bundle_root=str(REPO),
        dataset_dir=str(root),
        output_dir=str(out / "runs"),
        ckpt_dir=str(out / "models"),
        **overrides,
    )


def _one_patient_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    make_demo_dataset(root, seed=3, size="tiny", num_train_patients=1, num_val_patients=0)
    return root


def test_fine_tuning_from_imported_weights_on_one_patient(imported, source, tmp_path_factory, tmp_path):
    root = _one_patient_tree(tmp_path_factory)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("bundle.workflows.checkpoint").addHandler(handler)
    try:
        workflow = _training(
            [imported / "network.yaml"],
            root,
            tmp_path,
            init_weights=str(imported / "model.pt"),
            learning_rate=0.0,  # with lr 0 the saved model must be exactly the imported one
            epochs=2,
            num_workers=0,
            train_max_items=3,
            accumulation_steps=1,
        )
        _run(workflow)
    finally:
        logging.getLogger("bundle.workflows.checkpoint").removeHandler(handler)
    assert sum("no validation patients" in m for m in records) == 1
    assert sum("saved" in m and "model.pt" in m for m in records) == 2  # after every epoch
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in source.state_dict().items())
    assert read_network_overlay(tmp_path / "models" / "network.yaml") == source.network_args


def test_fine_tuning_checks_the_architecture_before_any_work(imported, tmp_path_factory, tmp_path):
    root = _one_patient_tree(tmp_path_factory)
    # Demo widths, tiny weights.
    workflow = _training([CONFIGS / "demo.yaml"], root, tmp_path, init_weights=str(imported / "model.pt"))
    with pytest.raises(Exception) as info:
        workflow.initialize()
    error = find_bundle_error(info.value)
    assert isinstance(error, CheckpointMismatchError) and "num_cascades: 1 in the checkpoint, 4 in the config" in str(
        error
    )
    assert not (tmp_path / "models").exists()
