"""The ACS width rule through the shipped inference config (docs/design.md, "ACS width: where it comes from"):
an imported published PromptMR v1 model infers the width from each mask, as its published pipeline does, while a
model of the bundle's own config takes the items' width."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_ARGS, TINY_NET
from monai.bundle import ConfigWorkflow

from bundle.data import make_demo_dataset, read_mat, write_mat
from bundle.networks import PromptMR, SensNet, read_network_overlay
from scripts.import_weights import main as import_weights

CONFIGS = REPO / "configs"

pytestmark = pytest.mark.xdist_group("pretrained_workflows")


def published_width(line) -> int:
    """The PromptMR v1 reference rule, written out: the run of sampled ky lines going down from ``ny//2 - 1`` and
    up from ``ny//2``; twice the shorter run, at least 1."""
    line = [bool(v) for v in line]
    c = len(line) // 2
    right = next((i for i, v in enumerate(line[c:]) if not v), len(line) - c)
    left = next((i for i, v in enumerate(reversed(line[:c])) if not v), c)
    return max(2 * min(left, right), 1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A ``--layout 2023`` demo tree in which one mask has a sampled line next to each side of its 24 ACS lines
    (as a real mask can), so that the width found from the mask (26) is not the tree's nominal 24."""
    root = tmp_path_factory.mktemp("demo2023")
    make_demo_dataset(root, seed=0, size="tiny", layout="2023")
    masks = sorted(root.rglob("ValidationSet/AccFactor04/*/T1map_mask.mat"))
    assert masks
    mask = read_mat(masks[0]).copy()  # (ny, nx)
    ny = mask.shape[0]
    lo, hi = ny // 2 - 12, ny // 2 + 12
    mask[lo - 1] = 1
    mask[hi] = 1
    assert published_width(mask[:, 0]) > 24
    masks[0].unlink()
    write_mat(masks[0], mask04=mask)
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """A published-layout PromptMR v1 Lightning checkpoint (no model_version), imported."""
    torch.manual_seed(4)
    net = PromptMR(**TINY_ARGS)
    folder = tmp_path_factory.mktemp("v1")
    state = {f"promptmr.{k}": v for k, v in net.state_dict().items()}
    state["loss.w"] = torch.ones(1, 1, 7, 7)
    hparams = {"num_cascades": 1, "num_adj_slices": 5, "n_feat0": TINY_ARGS["n_feat0"], "lr": 2e-4}
    ckpt = folder / "promptmr-1cascades-epoch=11-step=258576.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 11}, ckpt)
    assert import_weights([str(ckpt), "--out-dir", str(folder / "out")]) == 0
    return folder / "out"


def _widths_used(monkeypatch, workflow: ConfigWorkflow) -> list[tuple[list[int], list[int]]]:
    """Run ``workflow``; per SensNet call, the ACS width each sample got and the one its mask gives."""
    calls = []
    original = SensNet.acs_mask

    def spy(self, mask, height, num_low_frequencies=None, is_radial=None):
        keep = original(self, mask, height, num_low_frequencies, is_radial)
        kept = keep.expand(mask.shape[0], keep.shape[1], keep.shape[2], mask.shape[-1])  # Cartesian: whole columns
        used = kept[:, 0, 0, :].sum(dim=-1).tolist()
        found = [published_width(row) for row in mask[:, 0, 0, :].tolist()]
        calls.append((used, found))
        return keep

    monkeypatch.setattr(SensNet, "acs_mask", spy)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return calls


def _inference(root: Path, output: Path, overlays=(), **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.yaml"), *map(str, overlays)],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(REPO),
        dataset_dir=str(root),
        modalities=["Mapping"],
        num_workers=0,
        output_dir=str(output),
        **overrides,
    )


def test_imported_v1_gets_the_width_its_published_pipeline_finds_in_each_mask(tree, imported, tmp_path, monkeypatch):
    overlay = read_network_overlay(imported / "network.yaml")
    assert (overlay["acs_source"], overlay["num_low_frequencies"]) == ("mask", None)
    workflow = _inference(tree, tmp_path / "out", [imported / "network.yaml"], model_path=str(imported / "model.pt"))
    calls = _widths_used(monkeypatch, workflow)
    assert len(calls) >= 4
    for used, found in calls:
        assert used == found
    widths = {w for used, _ in calls for w in used}
    assert 24 in widths and any(w > 24 for w in widths), widths  # the modified mask was seen, and followed


def test_bundle_config_model_takes_the_items_width(tree, tmp_path, monkeypatch):
    overrides = {k: v for k, v in TINY_NET.items()}
    workflow = _inference(tree, tmp_path / "out", load_pretrain=False, **overrides)
    calls = _widths_used(monkeypatch, workflow)
    assert len(calls) >= 4
    assert {w for used, _ in calls for w in used} == {24}  # the 2023 items' width, whatever the mask adds
    assert any(found != used for used, found in calls)


def test_overlay_of_an_old_import_without_acs_source_reads_as_mask(imported, tmp_path):
    """network.yaml files written before acs_source existed set num_low_frequencies: null: those models now infer
    the width from the mask, as their published pipeline did (not the items' width)."""
    from monai.bundle import ConfigParser

    old = tmp_path / "network.yaml"
    text = (imported / "network.yaml").read_text()
    old.write_text("\n".join(line for line in text.splitlines() if "acs_source" not in line) + "\n")
    assert "acs_source" not in read_network_overlay(old)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.yaml"), str(old)])
    assert parser.get_parsed_content("network_def").acs_source == "mask"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_published_width_rule_matches_the_network(tree):
    from bundle.networks import infer_num_low_frequencies

    for path in tree.rglob("*_mask.mat"):
        line = read_mat(path)[:, 0]
        assert published_width(line) == int(infer_num_low_frequencies(torch.from_numpy(np.asarray(line) > 0)[None]))
