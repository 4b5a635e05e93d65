"""Self-supervised (SSDU) training: Θ/Λ/Γ splitting, the k-space loss, the Γ metric, the datalist of undersampled
files and a training run on a tree without any fully sampled file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, LOGGING, META, run_workflow, tiny_model, train_overrides
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.data import (
    LoadCMRSliced,
    LoadReferenced,
    acquisition_density,
    check_ssdu_masks,
    derive_undersampled_tree,
    read_mat,
    repeat_items,
    undersampled_datalist,
    write_mat,
)
from bundle.errors import CMRDataError, EmptyDatasetError
from bundle.losses import SSDULoss, masked_kspace_errors
from bundle.transforms import SSDUSplitd, holdout_lines, make_mask, millard_chiew_weight, protected_lines, split_lines
from bundle.transforms.kspace import centre_frame_target
from bundle.workflows import HeldOutLinesMetric

NY = 246


def _lines(acceleration: int = 4, ny: int = NY, acs: int = 16) -> np.ndarray:
    return make_mask("Uniform", acceleration, 1, 1, ny, acs_width=acs)[0, 0].astype(bool)


def _sample(f: int = 5, c: int = 3, nx: int = 20, ny: int = 30, acceleration: int = 2, acs: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    lines = _lines(acceleration, ny, acs)
    mask = np.broadcast_to(lines, (f, nx, ny)).astype(np.float32)
    y = (rng.standard_normal((f, c, nx, ny)) + 1j * rng.standard_normal((f, c, nx, ny))).astype(np.complex64)
    return {"kspace_masked": y * mask[:, None], "mask": mask, "file": "/x/MultiCoil/Cine/P001/cine_sax_kus.mat"}


# --------------------------------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("acceleration", [4, 8])
def test_theta_and_lambda_partition_omega_keep_the_acs_and_lambda_is_rho_of_omega(acceleration):
    omega = _lines(acceleration)
    protected = protected_lines(omega)
    assert protected.sum() == 16 and (omega[protected]).all()
    for seed in range(5):
        theta, lam = split_lines(omega, protected, 0.4, np.random.RandomState(seed))
        assert not (theta & lam).any()
        assert ((theta | lam) == omega).all()
        assert theta[protected].all() and not lam[protected].any()
        assert lam.sum() / omega.sum() == pytest.approx(0.4, abs=0.5 / omega.sum() + 1e-9)


def test_split_is_drawn_anew_per_step_and_deterministic_per_seed():
    omega = _lines(4)
    protected = protected_lines(omega)
    draws = [split_lines(omega, protected, 0.4, np.random.RandomState(s))[1] for s in (0, 0, 1)]
    assert (draws[0] == draws[1]).all() and (draws[0] != draws[2]).any()
    sample = _sample()
    split = SSDUSplitd(seed=3)
    outs = []
    for seed in (7, 7, 8):
        split.set_random_state(seed=seed)
        outs.append(split(sample)["loss_mask"])
    assert (outs[0] == outs[1]).all() and (outs[0] != outs[2]).any()


def test_shared_lines_give_every_frame_the_same_split_and_kt_masks_one_per_frame():
    sample = _sample()
    out = SSDUSplitd(seed=0)(sample)
    theta = out["mask"][:, 0, :]
    assert (theta == theta[2]).all()
    lam = out["loss_mask"][0, 0].astype(bool)
    assert lam.any() and not (theta[:, lam]).any()  # Λ is removed from every frame, not just the centre
    rng = np.random.default_rng(0)
    kt = np.zeros((5, 20, 30), np.float32)
    acs = protected_lines(_lines(2, 30, 8))
    for i in range(5):
        kt[i][:, acs | (rng.random(30) < 0.5)] = 1
    varied = SSDUSplitd(seed=0)({**sample, "mask": kt, "kspace_masked": sample["kspace_masked"] * kt[:, None]})
    frame_theta = varied["mask"][:, 0, :].astype(bool)
    assert (frame_theta <= kt[:, 0, :].astype(bool)).all()
    assert (frame_theta[:, acs]).all()


def test_always_sampled_lines_stay_in_theta_and_out_of_the_loss():
    sample = _sample()
    always = np.zeros(30, bool)
    always[:3] = True  # e.g. partial Fourier: never acquired by design
    for seed in range(5):
        split = SSDUSplitd(seed=0)
        split.set_random_state(seed=seed)
        out = split({**sample, "always_sampled": always})
        assert out["mask"][:, :, :3].all() and not out["loss_mask"][..., :3].any()


def test_padded_readout_columns_are_not_scored():
    sample = _sample()
    sample["kspace_masked"][:, :, :4, :] = 0  # asymmetric echo: no data in the first readout columns
    out = SSDUSplitd(seed=0)(sample)
    assert not out["loss_mask"][0, :4].any() and out["loss_mask"][0, 4:].any()


def test_a_change_of_y_on_lambda_does_not_change_the_network_output():
    sample = _sample(nx=23, ny=17, acceleration=2, acs=4)
    split = SSDUSplitd(seed=0, min_acs_lines=4)
    split.set_random_state(seed=5)
    a = split(sample)
    lam = a["loss_mask"][0, 0].astype(bool)
    changed = dict(sample)
    changed["kspace_masked"] = sample["kspace_masked"].copy()
    changed["kspace_masked"][:, :, :, lam] *= 5.0
    split.set_random_state(seed=5)
    b = split(changed)
    assert (a["mask"] == b["mask"]).all() and np.array_equal(a["kspace_masked"], b["kspace_masked"])
    assert not np.array_equal(a["kspace_loss"], b["kspace_loss"])
    net = tiny_model(num_cascades=1).eval()

    def run(d):
        k = torch.from_numpy(d["kspace_masked"].reshape(1, -1, 23, 17))
        return net(k, torch.from_numpy(d["mask"])[None])[1]

    with torch.no_grad():
        assert torch.equal(run(a), run(b))


def test_ssdu_loss_is_zero_when_the_prediction_equals_y_on_lambda():
    out = SSDUSplitd(seed=0)(_sample())
    y = torch.from_numpy(out["kspace_loss"])[None]
    m = torch.from_numpy(out["loss_mask"])[None]
    pred = y + (1 - m) * torch.randn(y.shape, dtype=torch.complex64)  # anything off Λ
    loss = SSDULoss().for_trainer()
    assert float(loss((None, pred), {"kspace_loss": y, "loss_mask": m})) == 0.0
    wrong = pred + m * 0.1
    value = float(loss((None, wrong), {"kspace_loss": y, "loss_mask": m}))
    e = masked_kspace_errors(wrong, y, m)
    assert value == pytest.approx(float(0.5 * e["l2"] + 0.5 * e["l1"])) and value > 0
    # normalised per sample: scaling the data does not change the loss
    scaled = float(loss((None, wrong * 1e-3), {"kspace_loss": y * 1e-3, "loss_mask": m}))
    assert scaled == pytest.approx(value, rel=1e-4)


def test_validation_input_is_omega_without_gamma_and_gamma_is_fixed():
    sample = _sample()
    val = SSDUSplitd(mode="validate", gamma_fraction=0.2, seed=1)
    a, b = val(sample), val(sample)
    gamma = a["loss_mask"][0, 0].astype(bool)
    omega = sample["mask"][0, 0].astype(bool)
    assert (a["loss_mask"] == b["loss_mask"]).all() and gamma.any()
    assert (omega[gamma]).all() and not a["mask"][:, :, gamma].any()
    assert ((a["mask"][2, 0].astype(bool) | gamma) == omega).all()
    assert not gamma[protected_lines(omega)].any()


def test_millard_chiew_weight_is_one_for_a_fixed_mask_and_restores_weighting_otherwise():
    assert (millard_chiew_weight(np.array([0.0, 1.0, 1.0]), np.array([0.6, 0.6, 1.0])) == 1).all()
    p, pt = 0.5, 0.6
    k = (1 - p) / (1 - pt * p)
    assert millard_chiew_weight(np.array([p]), np.array([pt]))[0] == pytest.approx((1 - k) ** -0.5)


# --------------------------------------------------------------------------------------------------- bad masks


def test_masks_without_acs_or_too_sparse_are_refused():
    no_acs = _lines(4, NY, acs=0)
    with pytest.raises(ValueError, match="no ACS lines"):
        protected_lines(no_acs)
    only_acs = protected_lines(_lines(4))
    with pytest.raises(ValueError, match="Λ would be empty"):
        split_lines(only_acs, only_acs, 0.4, np.random.RandomState(0))
    with pytest.raises(ValueError, match="Γ would be empty"):
        holdout_lines(only_acs, only_acs, 0.1, np.random.RandomState(0))


# --------------------------------------------------------------------------------------------------- trees


@pytest.fixture(scope="module")
def kus_root(demo_root, tmp_path_factory) -> Path:
    """The tiny demo's training patients as undersampled files alone (no FullSample folder)."""
    root = tmp_path_factory.mktemp("kus")
    derive_undersampled_tree(demo_root, root)
    assert not list(root.rglob("FullSample"))
    return root


def test_derived_kus_files_are_full_sample_times_mask(demo_root, kus_root):
    kus = sorted(kus_root.rglob("*_kus_Uniform4.mat"))[0]
    rel = kus.relative_to(kus_root / "ChallengeData" / "MultiCoil")
    full = demo_root / "ChallengeData" / "MultiCoil" / rel.parts[0] / "TrainingSet" / "FullSample" / rel.parts[3]
    full = read_mat(full / kus.name.replace("_kus_Uniform4", ""))
    mask = read_mat(str(kus).replace("UnderSample_Task1", "Mask_Task1").replace("_kus_", "_mask_"))
    assert np.array_equal(read_mat(kus), (full * mask.astype(np.float32)).astype(np.complex64))


def test_undersampled_tree_splits_by_patient_and_checks_masks(kus_root, tmp_path):
    split_file = tmp_path / "split.json"
    train = undersampled_datalist(kus_root, subset="train", split_file=split_file)
    val = undersampled_datalist(kus_root, subset="val", split_file=split_file)
    assert {i["patient"] for i in train}.isdisjoint({i["patient"] for i in val})
    assert all(i["kind"] == "undersampled" and i["mask_file"] for i in train + val)
    assert split_file.exists()
    assert check_ssdu_masks(train, "train") == train and check_ssdu_masks(val, "val") == val
    assert len(repeat_items(train, 3)) == 3 * len(train)
    density = acquisition_density(train)
    assert set(density) == {i["group"] for i in train}
    assert all(0 <= p <= 1 for values in density.values() for p in values)


def test_validation_items_get_their_fully_sampled_reference_where_the_tree_has_it(demo_root, kus_root, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(kus_root, both)
    cine = "ChallengeData/MultiCoil/Cine/TrainingSet/FullSample"
    shutil.copytree(demo_root / cine, both / cine)
    items = undersampled_datalist(both, subset="all", modalities=["Cine"])
    with_ref = [i for i in items if "reference_file" in i]
    assert with_ref and all(i["modality"] == "Cine" for i in with_ref)
    item = with_ref[0]
    loaded = LoadReferenced()(LoadCMRSliced(num_adj_frames=5)(item))
    full = LoadCMRSliced(num_adj_frames=1)({"file": item["reference_file"], "z": item["z"], "t": item["t"]})
    assert np.array_equal(loaded["target"], centre_frame_target(full["kspace_full"])[0])
    assert loaded["target"].shape[-2:] == loaded["kspace_masked"].shape[-2:]


def test_bad_trees_and_masks_stop_with_one_message_each(demo_root, kus_root, tmp_path):
    empty = tmp_path / "empty" / "MultiCoil" / "Cine" / "TrainingSet" / "FullSample"
    empty.mkdir(parents=True)
    with pytest.raises(EmptyDatasetError, match="no k-space .mat files"):
        undersampled_datalist(empty.parents[2])
    full_only = tmp_path / "full_only"
    cine = "ChallengeData/MultiCoil/Cine/TrainingSet/FullSample"
    shutil.copytree(demo_root / cine, full_only / cine)
    with pytest.raises(EmptyDatasetError, match="no undersampled files"):
        undersampled_datalist(full_only)
    broken = tmp_path / "broken"
    shutil.copytree(kus_root, broken)
    masks = sorted(broken.rglob("*_mask_Uniform4.mat"))
    masks[0].unlink()
    with pytest.raises(CMRDataError, match="without its mask file"):
        undersampled_datalist(broken, subset="all")
    shutil.rmtree(broken)
    shutil.copytree(kus_root, broken)
    items = undersampled_datalist(broken, subset="all")
    mask_file = items[0]["mask_file"]
    ny, nx = read_mat(mask_file).shape[-2:]
    no_acs = np.zeros((ny, nx))
    no_acs[::3] = 1
    no_acs[ny // 2] = no_acs[ny // 2 - 1] = 0
    write_mat(mask_file, mask=no_acs)
    with pytest.raises(CMRDataError, match="no ACS lines") as err:
        check_ssdu_masks(items, "train")
    assert str(mask_file) in str(err.value)
    acs_only = np.zeros((ny, nx))
    acs_only[ny // 2 - 4 : ny // 2 + 4] = 1
    write_mat(mask_file, mask=acs_only)
    with pytest.raises(CMRDataError, match="Λ would be empty"):
        check_ssdu_masks(items, "train")
    with pytest.raises(CMRDataError, match="Γ would be empty"):
        check_ssdu_masks(items, "val")


def test_gamma_metric_is_the_nmse_on_the_held_out_lines():
    out = SSDUSplitd(mode="validate", seed=0)(_sample())
    y = torch.from_numpy(out["kspace_loss"])[None]
    m = torch.from_numpy(out["loss_mask"])[None]
    metric = HeldOutLinesMetric()
    metric.update(((None, y * 0.9), {"kspace_loss": y, "loss_mask": m}))
    metric.update(((None, y), {"kspace_loss": y, "loss_mask": m}))
    assert metric.compute() == pytest.approx((0.01 + 0.0) / 2, rel=1e-5)


# --------------------------------------------------------------------------------------------------- workflow


def _ssl_workflow(data_root: Path, out: Path, **extra) -> ConfigWorkflow:
    overrides = {**train_overrides(data_root, out), "train_max_items": 6, "val_max_items": 4, **extra}
    return ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "self_supervised.yaml")],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        **overrides,
    )


def test_training_on_undersampled_files_alone_writes_a_model_selected_by_gamma(kus_root, tmp_path):
    workflow = _ssl_workflow(kus_root, tmp_path)
    run_workflow(workflow)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "runs" / "split.json").is_file()
    metrics = workflow.parser.get_parsed_content("validate#evaluator").state.metrics
    assert np.isfinite(metrics["val_gamma"]) and metrics["val_gamma"] > 0
    assert "val_ssim" not in metrics  # no reference anywhere in the tree
    steps = workflow.parser.get_parsed_content("train#trainer").state.iteration
    assert steps == 6
    names = [type(t).__name__ for t in workflow.parser.get_parsed_content("train#preprocessing").transforms]
    assert "SSDUSplitd" in names and "RandKspaceMaskd" not in names


def test_inference_uses_every_acquired_line(kus_root):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    parser["bundle_root"] = str(Path(__file__).resolve().parents[1])
    chain = parser.get_parsed_content("preprocessing")
    assert "SSDUSplitd" not in [type(t).__name__ for t in chain.transforms]
    item = undersampled_datalist(kus_root, subset="all")[0]
    out = chain(dict(item))
    omega = read_mat(item["mask_file"]).T  # (nx, ny)
    assert (out["mask"].numpy() == omega[None]).all()
    kus = read_mat(item["file"])[:, item["z"]].swapaxes(-1, -2)  # (nt, nc, nx, ny)
    centre = out["kspace_masked"].reshape(5, -1, *omega.shape)[2].numpy()
    assert np.array_equal(centre, kus[item["t"]])


def test_scan_specific_training_never_shows_gamma_to_the_network():
    sample = _sample()
    gamma = SSDUSplitd(mode="validate", seed=4)(sample)["loss_mask"][0, 0].astype(bool)
    for seed in range(5):
        split = SSDUSplitd(holdout=True, seed=4)
        split.set_random_state(seed=seed)
        out = split(sample)
        assert not out["mask"][:, :, gamma].any() and not out["loss_mask"][..., gamma].any()


def test_scan_specific_overlay_trains_and_validates_on_one_file(kus_root, tmp_path):
    items = undersampled_datalist(kus_root, subset="all", modalities=["Cine"])
    scan = next(i["file"] for i in items if i["file"].endswith("_kus_Uniform4.mat"))
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / n) for n in ("train.yaml", "self_supervised.yaml", "scan_specific.yaml")],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        **{**train_overrides(kus_root, tmp_path), "scan_file": scan, "epochs": 2, "train_max_items": 2},
    )
    run_workflow(workflow)
    items = workflow.parser.get_parsed_content("validate#datalist")
    assert {i["file"] for i in items} == {scan}
    assert (tmp_path / "models" / "model.pt").is_file()
