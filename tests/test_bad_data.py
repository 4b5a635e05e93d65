"""Every kind of bad input, through the shipped configs: training skips or stops (``on_bad_data``) and names the
file; inference reports the bad file, still writes the others and fails at the end."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import REPO, TINY_NET
from helpers import raised as _cause
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.data import make_demo_dataset, read_mat, write_mat
from bundle.errors import (
    CMRDataError,
    EmptySliceError,
    MaskMismatchError,
    MatFileError,
    MissingKeyError,
    NonFiniteDataError,
    ShapeError,
)
from bundle.workflows.handlers import SkippedDataError

CONFIGS = REPO / "configs"

pytestmark = pytest.mark.xdist_group("bad_data")


def _rewrite(path: Path, **arrays) -> None:
    path.unlink()
    write_mat(path, **arrays)


def corrupt(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def missing_key(path: Path) -> None:
    data = read_mat(path)
    _rewrite(path, other=data, also_other=data)


def wrong_dims(path: Path) -> None:
    data = read_mat(path)
    _rewrite(path, **{_key(path): data.reshape(-1, *data.shape[-2:])})


def nan_slab(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        ds = f[_key(path)]
        slab = ds[0, 0]
        slab["real"][...] = np.nan
        ds[0, 0] = slab


def zero_slab(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        ds = f[_key(path)]
        slab = ds[0, 0]
        slab["real"][...] = 0
        slab["imag"][...] = 0
        ds[0, 0] = slab


def _key(path: Path) -> str:
    return "kus" if "_kus_" in path.name else "kspace_full"


def bad_mask(path: Path) -> Path:
    """Replace the file's Uniform4 mask with one of the wrong width; returns the mask path."""
    if "_kus_" in path.name:
        mask = Path(str(path).replace("UnderSample_Task", "Mask_Task").replace("_kus_", "_mask_"))
    else:
        mask = path.parents[2] / "Mask_Task1" / path.parent.name / f"{path.stem}_mask_Uniform4.mat"
    ny_wrong = read_mat(mask).shape[0] + 2
    _rewrite(mask, mask=np.ones((ny_wrong, read_mat(mask).shape[1])))
    return mask


FILE_LEVEL = {"corrupt": (corrupt, MatFileError), "truncated": (truncate, MatFileError)}
FILE_LEVEL.update({"missing_key": (missing_key, MissingKeyError), "wrong_dims": (wrong_dims, ShapeError)})
ITEM_LEVEL = {
    "nan": (nan_slab, NonFiniteDataError),
    "all_zero": (zero_slab, EmptySliceError),
    "mask_mismatch": (bad_mask, MaskMismatchError),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    make_demo_dataset(root, seed=0, size="tiny")
    return root


@pytest.fixture
def tree(pristine, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(pristine, copy)
    return copy


def _training_file(tree: Path) -> Path:
    # P001 is a training patient of the tiny tree's split (seed 42).
    return tree / "ChallengeData" / "MultiCoil" / "Mapping" / "TrainingSet" / "FullSample" / "P001" / "T1map.mat"


def _parser(tree: Path, tmp_path: Path, on_bad_data: str, **extra) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update(
        {
            "bundle_root": str(REPO),
            "dataset_dir": str(tree),
            "output_dir": str(tmp_path / "runs"),
            "ckpt_dir": str(tmp_path / "models"),
            "on_bad_data": on_bad_data,
            "num_workers": 0,
            "split_file": None,
            "val_fraction": 0.0,  # both tiny patients train, so every shape group has a good file to fall back on
            "modalities": ["Mapping"],
            **extra,
        }
    )
    return parser


def _extra(kind: str) -> dict:
    return {"official_masks": ["Uniform4"]} if kind == "mask_mismatch" else {}


@pytest.mark.parametrize("kind", sorted(FILE_LEVEL))
def test_training_skip_unreadable_file(kind, tree, tmp_path):
    bad = _training_file(tree)
    FILE_LEVEL[kind][0](bad)
    parser = _parser(tree, tmp_path, "skip")
    dataset = parser.get_parsed_content("train#dataset")
    assert dataset.data and all(item["file"] != str(bad) for item in dataset.data)
    report = parser.get_parsed_content("bad_data_report")
    assert str(bad) in report.skipped
    with pytest.raises(SkippedDataError, match="T1map.mat"):
        report.raise_if_any()


@pytest.mark.parametrize("kind", sorted(FILE_LEVEL))
def test_training_raise_unreadable_file(kind, tree, tmp_path):
    bad = _training_file(tree)
    mutate, error = FILE_LEVEL[kind]
    mutate(bad)
    parser = _parser(tree, tmp_path, "raise")
    assert str(bad) in str(_cause(error, lambda: parser.get_parsed_content("train#dataset")))


@pytest.mark.parametrize("kind", sorted(ITEM_LEVEL))
def test_training_skip_bad_item(kind, tree, tmp_path):
    bad = _training_file(tree)
    ITEM_LEVEL[kind][0](bad)
    dataset = _parser(tree, tmp_path, "skip", **_extra(kind)).get_parsed_content("train#dataset")
    index = next(i for i, item in enumerate(dataset.data) if item["file"] == str(bad) and item["t"] == 0)
    sample = dataset[(0, index)]
    assert sample["file"] != str(bad) or sample["t"] != 0
    assert str(bad) in sample["skipped"]


@pytest.mark.parametrize("kind", sorted(ITEM_LEVEL))
def test_training_raise_bad_item(kind, tree, tmp_path):
    bad = _training_file(tree)
    mutate, error = ITEM_LEVEL[kind]
    mutate(bad)
    dataset = _parser(tree, tmp_path, "raise", **_extra(kind)).get_parsed_content("train#dataset")
    index = next(i for i, item in enumerate(dataset.data) if item["file"] == str(bad) and item["t"] == 0)
    with pytest.raises(error, match="T1map.mat"):
        dataset[(0, index)]


def test_training_run_skips_bad_file_writes_outputs_and_fails_at_the_end(tree, tmp_path):
    bad = _training_file(tree)
    nan_slab(bad)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        bundle_root=str(REPO),
        dataset_dir=str(tree),
        output_dir=str(tmp_path / "runs"),
        ckpt_dir=str(tmp_path / "models"),
        modalities=["Mapping"],
        epochs=1,
        num_workers=0,
        val_max_items=2,
        **TINY_NET,
    )
    workflow.initialize()
    workflow.run()
    assert (tmp_path / "models" / "model.pt").is_file()
    assert "T1map.mat" in str(_cause(SkippedDataError, workflow.finalize))


INFERENCE_KINDS = {
    "corrupt": corrupt,
    "truncated": truncate,
    "missing_key": missing_key,
    "wrong_dims": wrong_dims,
    "nan": nan_slab,
    "all_zero": zero_slab,
    "mask_mismatch": bad_mask,
}


def test_inference_reports_every_bad_kind_and_writes_the_other_files(tree, tmp_path):
    multicoil = tree / "ChallengeData" / "MultiCoil"
    inputs = sorted((multicoil / "Cine" / "ValidationSet").rglob("*_kus_*.mat"))
    assert len(inputs) > len(INFERENCE_KINDS)
    bad = dict(zip(INFERENCE_KINDS, inputs))
    for kind, path in bad.items():
        INFERENCE_KINDS[kind](path)
    good = [p for p in inputs if p not in bad.values()]
    output = tmp_path / "out"
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(REPO),
        dataset_dir=str(tree),
        output_dir=str(output),
        load_pretrain=False,
        modalities=["Cine"],
        num_workers=0,
        **TINY_NET,
    )
    workflow.initialize()
    workflow.run()
    error = _cause(SkippedDataError, workflow.finalize)
    for kind, path in bad.items():
        assert str(path) in str(error), kind
        assert not list((output / "nifti").rglob(path.name.replace(".mat", ".nii.gz"))), kind
    for path in good:
        assert list((output / "nifti").rglob(path.name.replace(".mat", ".nii.gz"))), path
        assert list((output / "submission").rglob(path.name)), path


def test_error_messages_name_the_file_for_every_kind(tree):
    from bundle.data.checks import check_file
    from bundle.data.index import scan_dataset

    inputs = sorted((tree / "ChallengeData" / "MultiCoil" / "Aorta" / "ValidationSet").rglob("*_kus_*.mat"))
    kinds = {"nan": nan_slab, "all_zero": zero_slab, "mask_mismatch": bad_mask}
    for mutate, path in zip(kinds.values(), inputs):
        mutate(path)
    records = {r.path: r for r in scan_dataset(tree, modalities=["Aorta"])}
    for (kind, _), path in zip(kinds.items(), inputs):
        problems = check_file(records[str(path)])
        assert problems and all(p.path == str(path) for p in problems), kind
    assert isinstance(MatFileError.at("x.mat", "y"), CMRDataError)
