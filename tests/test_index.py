"""Dataset index, shape groups, items and the patient split (``bundle/data/index.py``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bundle.data.index import (
    DEFAULT_EXCLUDE,
    DEFAULT_TRIMS,
    assign_groups,
    build_datalist,
    build_items,
    load_split,
    parse_pattern,
    save_split,
    scan_dataset,
    series_type,
    series_view,
    split_by_patient,
    split_patients,
)
from bundle.data.matio import write_mat
from bundle.errors import EmptyDatasetError, MatFileError, ShapeError

# (modality, split, folder, patient, file stem, h5py shape). Tiny sizes: only metadata matters here.
FULL = [
    ("Cine", "FullSample", "P001", "cine_sax", (12, 2, 2, 12, 16)),
    ("Cine", "FullSample", "P001", "cine_lax", (12, 3, 2, 10, 16)),
    ("Cine", "FullSample", "P002", "cine_sax", (12, 2, 2, 8, 16)),
    ("Mapping", "FullSample", "P002", "T2map", (3, 2, 2, 8, 12)),
    ("Mapping", "FullSample", "P003", "T1map", (9, 1, 2, 8, 12)),
    ("Tagging", "FullSample", "P087", "tagging", (12, 3, 2, 8, 12)),
    ("Aorta", "FullSample", "P077", "aorta_sag", (4, 2, 2, 8, 12)),
    ("Aorta", "FullSample", "P004", "aorta_sag", (4, 2, 2, 8, 12)),
]
UNDERSAMPLED = [
    ("Cine", "UnderSample_Task1", "P001", "cine_sax_kus_Uniform4", (12, 2, 2, 12, 16)),
    ("Cine", "UnderSample_Task2", "P001", "cine_lax_kus_ktGaussian8", (12, 3, 2, 10, 16)),
    ("Aorta", "UnderSample_Task1", "P077", "aorta_sag_kus_Uniform10", (4, 2, 2, 8, 12)),
    ("BlackBlood", "UnderSample_Task1", "P002", "blackblood_kus_Uniform8", (2, 2, 8, 12)),
]


def _k(shape):
    return np.full(shape, 1 + 1j, np.complex64)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``<root>/ChallengeData/MultiCoil`` with full-sample training files, masks and validation files."""
    root = tmp_path_factory.mktemp("cmr")
    mc = root / "ChallengeData" / "MultiCoil"
    for modality, folder, patient, stem, shape in FULL:
        write_mat(mc / modality / "TrainingSet" / folder / patient / f"{stem}.mat", kspace_full=_k(shape))
    train_masks = mc / "Cine" / "TrainingSet"
    write_mat(train_masks / "Mask_Task1" / "P001" / "cine_sax_mask_Uniform4.mat", mask=np.ones((12, 16)))
    write_mat(train_masks / "Mask_Task1" / "P001" / "cine_sax_mask_Uniform8.mat", mask=np.ones((12, 16)))
    write_mat(train_masks / "Mask_Task2" / "P001" / "cine_sax_mask_ktGaussian8.mat", mask=np.ones((12, 12, 16)))
    (train_masks / "ImgSnapshot" / "P001").mkdir(parents=True)
    (train_masks / "ImgSnapshot" / "P001" / "cine_sax_info.csv").write_text("ignored\n")
    for modality, folder, patient, stem, shape in UNDERSAMPLED:
        write_mat(mc / modality / "ValidationSet" / folder / patient / f"{stem}.mat", kus=_k(shape))
    val = mc / "Cine" / "ValidationSet"
    write_mat(val / "Mask_Task1" / "P001" / "cine_sax_mask_Uniform4.mat", mask=np.ones((12, 16)))
    write_mat(mc / "BlackBlood/ValidationSet/Mask_Task1/P002/blackblood_mask_Uniform8.mat", mask=np.ones((8, 12), bool))
    return root


def _by_name(records, kind="full"):
    return {(r.patient, r.series): r for r in records if r.kind == kind}


# ------------------------------------------------------------------------------------------------ naming


def test_naming_helpers():
    assert parse_pattern("ktGaussian8") == ("ktGaussian", 8)
    assert parse_pattern("Uniform10") == ("Uniform", 10)
    assert parse_pattern("ktRadial24") == ("ktRadial", 24)
    with pytest.raises(ValueError):
        parse_pattern("Gaussian")
    assert [series_view(s) for s in ("cine_sax", "cine_lvot", "aorta_tra", "T1map", "tagging", "blackblood")] == [
        "sax",
        "lvot",
        "tra",
        "t1map",
        "tagging",
        "blackblood",
    ]
    assert series_type("blackblood_kus_Uniform4") == "blackblood"
    assert series_type("T2map") == series_type("T1map_kus_ktRadial8") == "mapping"
    assert series_type("flow2d") == series_type("tagging") == series_type("aorta_sag") == "cine"


# ------------------------------------------------------------------------------------------------ scanning


def test_scan_finds_every_file_from_any_root(tree):
    records = scan_dataset(tree)
    assert len(records) == len(FULL) + len(UNDERSAMPLED)
    paths = [r.path for r in records]
    assert paths == [r.path for r in scan_dataset(tree / "ChallengeData")]
    assert paths == [r.path for r in scan_dataset(tree / "ChallengeData" / "MultiCoil")]
    assert {r.modality for r in scan_dataset(tree, modalities=["cine"])} == {"Cine"}


def test_record_fields(tree):
    records = scan_dataset(tree)
    full = _by_name(records)
    sax = full[("P001", "cine_sax")]
    assert (sax.kind, sax.split, sax.task, sax.modality, sax.view) == ("full", "TrainingSet", None, "Cine", "sax")
    assert (sax.shape, sax.nt, sax.nz, sax.nc, sax.ny, sax.nx) == ((12, 2, 2, 12, 16), 12, 2, 2, 12, 16)
    assert sax.pattern is None and sax.acceleration is None and sax.mask_path is None
    assert sorted(name for name, _ in sax.masks) == ["Uniform4", "Uniform8", "ktGaussian8"]
    assert all("Mask_Task2" in p for name, p in sax.masks if name.startswith("kt"))
    assert full[("P001", "cine_lax")].masks == ()
    assert full[("P003", "T1map")].view == "t1map"
    assert sax.shape_key == "cine_sax_12x16"


def test_undersampled_files_pair_with_masks(tree):
    kus = _by_name(scan_dataset(tree), "undersampled")
    sax = kus[("P001", "cine_sax")]
    assert (sax.split, sax.task, sax.pattern, sax.acceleration) == ("ValidationSet", 1, "Uniform", 4)
    assert sax.mask_path.endswith("Cine/ValidationSet/Mask_Task1/P001/cine_sax_mask_Uniform4.mat")
    lax = kus[("P001", "cine_lax")]
    assert (lax.task, lax.pattern, lax.acceleration, lax.mask_path) == (2, "ktGaussian", 8, None)
    bb = kus[("P002", "blackblood")]
    assert (bb.nt, bb.nz, bb.shape) == (1, 2, (2, 2, 8, 12))
    assert bb.mask_path.endswith("blackblood_mask_Uniform8.mat")


def test_empty_or_missing_root(tmp_path):
    with pytest.raises(EmptyDatasetError, match=str(tmp_path)):
        scan_dataset(tmp_path)
    (tmp_path / "MultiCoil" / "Cine" / "TrainingSet" / "FullSample" / "P001").mkdir(parents=True)
    with pytest.raises(EmptyDatasetError, match=str(tmp_path)):
        scan_dataset(tmp_path)
    with pytest.raises(EmptyDatasetError, match="does not exist"):
        scan_dataset(tmp_path / "absent")


def test_unreadable_or_wrong_file_is_named(tmp_path):
    folder = tmp_path / "MultiCoil" / "Cine" / "TrainingSet" / "FullSample" / "P001"
    folder.mkdir(parents=True)
    bad = folder / "cine_sax.mat"
    bad.write_bytes(b"\x00garbage" * 40)
    with pytest.raises(MatFileError, match=str(bad)):
        scan_dataset(tmp_path)
    write_mat(bad, kspace_full=_k((8, 12)))
    with pytest.raises(ShapeError, match=str(bad)):
        scan_dataset(tmp_path)


# ------------------------------------------------------------------------------------------------ groups


def test_groups_suffix_only_series_with_several_shapes(tree):
    records = assign_groups(scan_dataset(tree))
    groups = {(r.patient, r.series, r.kind): r.group for r in records}
    assert groups[("P001", "cine_sax", "full")] == "cine_sax12"
    assert groups[("P002", "cine_sax", "full")] == "cine_sax8"
    assert groups[("P001", "cine_lax", "full")] == "cine_lax"
    assert groups[("P003", "T1map", "full")] == "T1map"

    # Same ny, different nx: ny alone is ambiguous, so both get the full size.
    base = records[0]
    twins = [dataclasses.replace(base, ny=8, nx=12), dataclasses.replace(base, ny=8, nx=14)]
    twins.append(dataclasses.replace(base, ny=10, nx=12))
    assert [r.group for r in assign_groups(twins)] == [f"{base.series}8x12", f"{base.series}8x14", f"{base.series}10"]


# ------------------------------------------------------------------------------------------------ items


def test_item_counts_exclusions_and_trims(tree):
    full = [r for r in scan_dataset(tree) if r.kind == "full"]
    everything = build_items(full, exclude=(), trims={})
    assert len(everything) == sum(s[0] * s[1] for *_, s in FULL)
    json.dumps(everything)  # a MONAI datalist must be serialisable

    items = build_items(full)  # known-bad defaults: P077_aorta_sag dropped, P087_tagging trimmed
    assert "P077_aorta_sag" in DEFAULT_EXCLUDE and "P087_tagging" in DEFAULT_TRIMS
    tagging = [it for it in items if it["series"] == "tagging"]
    assert len(tagging) == (12 - 3) * (3 - 1)
    assert {it["nt"] for it in tagging} == {9} and {it["z"] for it in tagging} == {0, 1}
    assert not any(it["patient"] == "P077" for it in items)
    assert len(items) == len(everything) - 4 * 2 - (12 * 3 - 9 * 2)

    custom = build_items(full, exclude=(), trims={"P001_cine_lax": {"drop_slices": [1], "drop_last_frames": 2}})
    lax = [it for it in custom if it["series"] == "cine_lax"]
    assert len(lax) == 10 * 2 and {it["z"] for it in lax} == {0, 2}
    with pytest.raises(ValueError, match="unknown keys"):
        build_items(full, trims={"P001_cine_lax": {"drop_first_frames": 1}})


def test_item_fields(tree):
    items = build_items([r for r in scan_dataset(tree) if r.series == "T2map"])
    assert len(items) == 3 * 2
    it = items[0]
    expected_keys = {"file", "mask_file", "mask_name", "z", "t", "nt", "nz", "nc", "nx", "ny", "modality", "series"}
    expected_keys |= {"view", "patient", "acceleration", "pattern", "task", "group", "shape_key", "kind", "split"}
    assert set(it) == expected_keys
    assert (it["nt"], it["nz"], it["nc"], it["nx"], it["ny"]) == (3, 2, 2, 12, 8)
    assert (it["group"], it["shape_key"], it["kind"], it["mask_file"]) == ("T2map", "T2map_8x12", "full", None)
    assert [(i["z"], i["t"]) for i in items] == [(z, t) for z in range(2) for t in range(3)]


def test_official_mask_selection(tree):
    full = [r for r in scan_dataset(tree) if r.kind == "full"]
    items = build_items(full, mask_names=["Uniform4"])
    assert len(items) == 12 * 2 and {it["patient"] for it in items} == {"P001"}
    assert {(it["pattern"], it["acceleration"], it["task"]) for it in items} == {("Uniform", 4, 1)}
    assert all(it["mask_file"].endswith("cine_sax_mask_Uniform4.mat") for it in items)
    every = build_items(full, mask_names="all")
    assert len(every) == 3 * 12 * 2
    assert {it["task"] for it in every if it["mask_name"] == "ktGaussian8"} == {2}


def test_undersampled_items_keep_validation_ids(tree):
    kus = [r for r in scan_dataset(tree) if r.kind == "undersampled"]
    items = build_items(kus)  # P077 is only a known-bad *training* id
    assert len(items) == 12 * 2 + 12 * 3 + 4 * 2 + 1 * 2
    bb = [it for it in items if it["series"] == "blackblood"]
    assert {(it["t"], it["nt"]) for it in bb} == {(0, 1)} and bb[0]["mask_file"] is not None


# ------------------------------------------------------------------------------------------------ split


def test_patient_split_is_disjoint_and_seeded():
    ids = [f"P{i:03d}" for i in range(1, 51)]
    train, val = split_patients(ids, 0.2, seed=42)
    assert len(val) == 10 and sorted(train + val) == ids and not set(train) & set(val)
    assert split_patients(reversed(ids), 0.2, seed=42) == (train, val)
    assert split_patients(ids, 0.2, seed=7)[1] != val
    assert split_patients(["P1", "P2"], 0.2) in ((["P1"], ["P2"]), (["P2"], ["P1"]))
    assert split_patients(["P1", "P2", "P3"], 0.99)[0] != []


def test_split_by_patient_on_items(tree, tmp_path):
    items = build_items([r for r in scan_dataset(tree) if r.kind == "full"])
    train, val = split_by_patient(items, 0.4, seed=3)
    assert len(train) + len(val) == len(items)
    assert train and val and not {it["patient"] for it in train} & {it["patient"] for it in val}
    assert split_by_patient(items, 0.4, seed=3) == (train, val)

    save_split(tmp_path / "split.json", ["P2", "P1"], ["P3"])
    assert load_split(tmp_path / "split.json") == (["P1", "P2"], ["P3"])
    with pytest.raises(ValueError):
        save_split(tmp_path / "bad.json", ["P1"], ["P1"])


def test_build_datalist_subsets(tree, tmp_path):
    split_file = tmp_path / "split.json"
    train = build_datalist(tree, subset="train", val_fraction=0.4, seed=1, split_file=split_file)
    assert split_file.exists()
    val = build_datalist(tree, subset="val", split_file=split_file)  # reuses the file, not the new fraction
    assert not {it["patient"] for it in train} & {it["patient"] for it in val}
    assert len(train) + len(val) == len(build_datalist(tree, subset="all"))
    # Groups are named over all training files, so a split never renames them.
    assert {it["group"] for it in train + val if it["series"] == "cine_sax"} == {"cine_sax12", "cine_sax8"}
    kus = build_datalist(tree, subset="undersampled", modalities=["BlackBlood"])
    assert len(kus) == 2 and all(it["kind"] == "undersampled" for it in kus)
    assert len(build_datalist(tree, subset="all", max_items=5)) == 5
    with pytest.raises(ValueError):
        build_datalist(tree, subset="test")
