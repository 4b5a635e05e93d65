"""CMRxRecon2023 layout: demo tree, layout detection, scanning, items, loading, checks, submission paths, and the
split options for a site's few patients (``allow_empty``, ``allow_overlap``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from bundle.data.checks import check_dataset
from bundle.data.demo import SERIES_2023, make_demo_dataset, series_kspace
from bundle.data.index import (
    DEFAULT_EXCLUDE,
    build_datalist,
    build_items,
    detect_layout,
    item_acs_width,
    load_split,
    save_split,
    scan_dataset,
    split_patients,
)
from bundle.data.loading import LoadCMRSliced
from bundle.data.matio import MatSliceReader, mat_variables, read_mat, write_mat
from bundle.errors import CMRDataError, EmptyDatasetError, MissingKeyError
from bundle.io.paths import submission_path
from bundle.transforms.masks import acs_bounds, make_mask

RATES = (4, 8, 10)
MODALITY = {"cine_sax": "Cine", "cine_lax": "Cine", "T1map": "Mapping", "T2map": "Mapping"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Tiny demo tree in the 2023 layout: 2 training patients, 1 validation patient."""
    return make_demo_dataset(tmp_path_factory.mktemp("d2023"), seed=0, size="tiny", layout="2023")


@pytest.fixture(scope="module")
def records(tree):
    return scan_dataset(tree)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """Tiny 2024 demo tree with a single training patient and no validation patient."""
    return make_demo_dataset(tmp_path_factory.mktemp("single"), size="tiny", num_train_patients=1, num_val_patients=0)


def _rel(tree: Path, pattern: str = "*") -> set[str]:
    return {p.relative_to(tree).as_posix() for p in tree.rglob(pattern) if p.is_file()}


def _k(shape) -> np.ndarray:
    return np.full(shape, 1 + 1j, np.complex64)


# ------------------------------------------------------------------------------------------------ demo


def test_demo_writes_2023_layout(tree):
    files = _rel(tree)
    for stem in SERIES_2023:
        base = f"{MODALITY[stem]}"
        for pid in ("P001", "P002"):
            assert f"{base}/TrainingSet/FullSample/{pid}/{stem}.mat" in files
            for r in RATES:
                assert f"{base}/TrainingSet/AccFactor{r:02d}/{pid}/{stem}.mat" in files
                assert f"{base}/TrainingSet/AccFactor{r:02d}/{pid}/{stem}_mask.mat" in files
        for r in RATES:
            assert f"{base}/ValidationSet/AccFactor{r:02d}/P001/{stem}.mat" in files
            assert f"{base}/ValidationSet/AccFactor{r:02d}/P001/{stem}_mask.mat" in files
    assert {f.split("/")[0] for f in files} == {"Cine", "Mapping"}
    assert not any("/ValidationSet/FullSample/" in f or "Task" in f for f in files)
    csvs = _rel(tree, "*.csv")
    assert "Mapping/ValidationSet/AccFactor08/P001/T1map.csv" in csvs
    assert "Mapping/TrainingSet/FullSample/P002/T2map.csv" in csvs
    assert not any(f.startswith("Cine/") for f in csvs)
    t1_times = (tree / "Mapping/TrainingSet/FullSample/P001/T1map.csv").read_text().splitlines()
    assert len(t1_times) == 1 + 9 and all(float(v) > 0 for v in t1_times[1:])
    marker = (tree.parent.parent / "DEMO_DATASET.txt").read_text()
    assert "SYNTHETIC" in marker and "CMRxRecon2023" in marker


def test_demo_2023_variables_and_masks(tree):
    folder = tree / "Cine/TrainingSet/AccFactor08/P001"
    full = read_mat(tree / "Cine/TrainingSet/FullSample/P001/cine_sax.mat", "kspace_full")
    assert set(mat_variables(folder / "cine_sax.mat")) == {"kspace_sub08"}
    assert set(mat_variables(folder / "cine_sax_mask.mat")) == {"mask08"}
    nt, nz, nc, ny, nx = full.shape
    assert (nt, nc) == (12, 10) and ny > 24
    mask = read_mat(folder / "cine_sax_mask.mat")  # auto-picks mask08
    assert mask.shape == (ny, nx)
    np.testing.assert_array_equal(mask, make_mask("Uniform", 8, 1, nx, ny, acs_width=24)[0].T)
    lo, hi = acs_bounds(ny, 24)
    assert mask[lo:hi].all() and not mask[lo - 1].any()  # 24 ACS lines; the line just below is skipped at R=8
    np.testing.assert_array_equal(read_mat(folder / "cine_sax.mat"), full * mask)
    np.testing.assert_array_equal(series_kspace("cine_sax", "P001", size="tiny", layout="2023"), full)
    with pytest.raises(ValueError, match="layout 2023"):
        series_kspace("aorta_sag", "P001", size="tiny", layout="2023")
    with pytest.raises(ValueError, match="layout"):
        make_demo_dataset(tree.parent.parent / "unused", size="tiny", layout="2022")


def test_make_demo_data_cli_layout_option():
    from scripts.make_demo_data import _parse

    assert _parse(["--root", "x"]).layout == "2024"
    assert _parse(["--root", "x", "--layout", "2023"]).layout == "2023"


# ------------------------------------------------------------------------------------------------ layout


def test_detect_layout(tree, single, tmp_path):
    assert detect_layout(tree) == detect_layout(tree.parent.parent) == "2023"
    assert detect_layout(single) == "2024"
    only_full = tmp_path / "full" / "MultiCoil"
    write_mat(only_full / "Cine/TrainingSet/FullSample/P001/cine_sax.mat", kspace_full=_k((2, 1, 2, 8, 12)))
    assert detect_layout(only_full) == "2024"  # names alone cannot tell: 2024 by default
    # One AccFactor folder anywhere makes the whole tree 2023, FullSample-only modalities included ...
    write_mat(only_full / "Mapping/ValidationSet/AccFactor04/P001/T1map.mat", kspace_sub04=_k((2, 1, 2, 8, 12)))
    assert detect_layout(only_full) == "2023"
    assert {r.layout for r in scan_dataset(only_full)} == {"2023"}
    # ... unless a split folder's own siblings say 2024.
    write_mat(only_full / "Cine/TrainingSet/Mask_Task1/P001/cine_sax_mask_Uniform4.mat", mask=np.ones((8, 12)))
    layouts = {(r.modality, r.kind): r.layout for r in scan_dataset(only_full)}
    assert layouts == {("Cine", "full"): "2024", ("Mapping", "undersampled"): "2023"}


def test_scan_records(records, tree):
    full = [r for r in records if r.kind == "full"]
    under = [r for r in records if r.kind == "undersampled"]
    assert len(full) == 2 * 4 and len(under) == 3 * 3 * 4
    assert {r.layout for r in records} == {"2023"} and {r.acs_width for r in records} == {24}
    assert not any(r.path.endswith(("_mask.mat", ".csv")) for r in records)
    for r in under:
        folder = Path(r.path).parent.parent.name
        assert (r.task, r.pattern, folder) == (None, "Uniform", f"AccFactor{r.acceleration:02d}")
        assert r.mask_path == str(Path(r.path).with_name(f"{r.series}_mask.mat"))
        assert r.masks == ()
    assert {r.split for r in under} == {"TrainingSet", "ValidationSet"}
    assert {r.series for r in records} == set(SERIES_2023)


def test_scan_accfactor_file_without_mask(tmp_path):
    folder = tmp_path / "MultiCoil/Cine/TestSet/AccFactor10/P001"
    write_mat(folder / "cine_lax.mat", kspace_sub10=_k((2, 1, 2, 8, 12)))
    (record,) = scan_dataset(tmp_path)
    assert (record.kind, record.split, record.acceleration, record.mask_path) == ("undersampled", "TestSet", 10, None)
    _, problems = check_dataset(tmp_path, check_values=False)
    assert [p.kind for p in problems] == ["missing_mask"]
    assert str(folder / "cine_lax_mask.mat") in problems[0].message


# ------------------------------------------------------------------------------------------------ items


def test_items_carry_layout_and_acs_width(records, single):
    items = build_items(records)
    assert {(it["layout"], it["acs_width"]) for it in items} == {("2023", 24)}
    assert {item_acs_width(it) for it in items} == {24}
    under = [it for it in items if it["kind"] == "undersampled"]
    assert {it["acceleration"] for it in under} == set(RATES) and all(it["mask_file"] for it in under)
    assert {it["task"] for it in items} == {None}
    items24 = build_datalist(single, subset="all")
    assert {item_acs_width(it) for it in items24} == {16}
    assert {r.acs_width for r in scan_dataset(single)} == {16}


def test_official_masks_of_2023_training_files(records):
    full = [r for r in records if r.kind == "full"]
    assert {tuple(n for n, _ in r.masks) for r in full} == {("Uniform4", "Uniform8", "Uniform10")}
    n_slabs = sum(r.nt * r.nz for r in full)
    items = build_items(full, mask_names=["Uniform4"])
    assert len(items) == n_slabs
    assert {(it["mask_name"], it["pattern"], it["acceleration"], it["task"]) for it in items} == {
        ("Uniform4", "Uniform", 4, None)
    }
    for it in items:
        mask = Path(it["mask_file"])
        assert (mask.parent.parent.name, mask.parent.name) == ("AccFactor04", it["patient"])
        assert mask.name == f"{it['series']}_mask.mat"
    every = build_items(full, mask_names="all")
    assert len(every) == 3 * n_slabs and {it["acceleration"] for it in every} == set(RATES)


def test_auto_known_bad_lists_apply_to_2024_files_only(records):
    base = next(r for r in records if r.kind == "full" and r.series == "cine_sax")
    trimmed = dataclasses.replace(base, patient="P109", group="g")  # DEFAULT_TRIMS: P109_cine_sax drops 3 frames
    bad = dataclasses.replace(base, patient="P077", series="aorta_sag", group="g")  # in DEFAULT_EXCLUDE
    as_2024 = [dataclasses.replace(r, layout="2024") for r in (trimmed, bad)]

    def frames(items):
        return {(it["patient"], it["series"]): it["nt"] for it in items}

    assert frames(build_items([trimmed, bad])) == {("P109", "cine_sax"): 12, ("P077", "aorta_sag"): 12}
    assert frames(build_items(as_2024)) == {("P109", "cine_sax"): 9}
    # Explicit tables apply to every record, whatever its layout.
    assert frames(build_items([trimmed, bad], exclude=DEFAULT_EXCLUDE, trims=None)) == {("P109", "cine_sax"): 12}
    assert frames(build_items(as_2024, exclude=None, trims=None)) == {
        ("P109", "cine_sax"): 12,
        ("P077", "aorta_sag"): 12,
    }
    with pytest.raises(ValueError, match="exclude"):
        build_items([trimmed], exclude="P077_aorta_sag")


# ------------------------------------------------------------------------------------------------ loading


def test_loader_reads_2023_undersampled_item(tree):
    items = build_datalist(tree, subset="undersampled", splits=["ValidationSet"], modalities=["Cine"])
    item = next(it for it in items if it["acceleration"] == 8 and it["t"] == 0)
    loader = LoadCMRSliced(num_adj_frames=3)
    out = loader(item)
    assert "kspace_masked" in out and "kspace_full" not in out
    expected = read_mat(item["mask_file"]).T  # (ny, nx) -> (nx, ny), the same for every frame
    assert out["mask"].shape == (3, item["nx"], item["ny"])
    np.testing.assert_array_equal(out["mask"], np.broadcast_to(expected, out["mask"].shape))
    assert not out["kspace_masked"][..., expected == 0].any()
    # Without a kind, the variable name (kspace_sub08) says undersampled.
    bare = {k: item[k] for k in ("file", "z", "t")}
    assert "kspace_masked" in loader(bare)
    with MatSliceReader(item["file"]) as reader:
        assert reader.key == "kspace_sub08"
    loader.close()


def test_auto_pick_refuses_two_kspace_sub_variables(tmp_path):
    path = tmp_path / "two.mat"
    write_mat(path, kspace_sub04=_k((2, 1, 2, 8, 12)), kspace_sub08=_k((2, 1, 2, 8, 12)))
    with pytest.raises(MissingKeyError, match="kspace_sub"):
        read_mat(path)
    assert read_mat(path, "kspace_sub08").shape == (2, 1, 2, 8, 12)


# ------------------------------------------------------------------------------------------------ checks


def test_check_dataset_on_clean_2023_tree(tree):
    from scripts.check_dataset import main

    good, problems = check_dataset(tree)
    assert problems == [] and len(good) == 2 * 4 + 3 * 3 * 4
    assert main(["--root", str(tree.parent.parent), "--no-values"]) == 0


# ------------------------------------------------------------------------------------------------ submission


def test_submission_path_2023_and_2024(tmp_path):
    root, out = tmp_path / "ChallengeData" / "MultiCoil", tmp_path / "sub"
    for subset in ("TrainingSet", "ValidationSet", "TestSet"):
        kus = root / "Mapping" / subset / "AccFactor10" / "P003" / "T1map.mat"
        got = submission_path(kus, root.parent, out)
        assert got.relative_to(out).as_posix() == f"MultiCoil/Mapping/{subset}/AccFactor10/P003/T1map.mat"
    kus24 = root / "Cine" / "ValidationSet" / "UnderSample_Task1" / "P001" / "cine_sax_kus_Uniform4.mat"
    got24 = submission_path(kus24, root, out).relative_to(out).as_posix()
    assert got24 == "Task1/Cine/ValidationSet/Task1/P001/cine_sax_kus_Uniform4.mat"
    with pytest.raises(CMRDataError, match="CMRxRecon2023.*modality folder 'Aorta'"):
        submission_path(root / "Aorta/ValidationSet/AccFactor04/P001/aorta_sag.mat", root, out)
    with pytest.raises(CMRDataError, match="nor a mask"):
        submission_path(root / "Cine/ValidationSet/AccFactor04/P001/cine_sax_mask.mat", root, out)
    with pytest.raises(CMRDataError, match="UnderSample_Task1"):  # not AccFactor: the 2024 message, unchanged
        submission_path(root / "Cine/ValidationSet/Task9/P001/cine_sax_kus_Uniform4.mat", root, out)


# ------------------------------------------------------------------------------------------------ splits


def test_split_options_for_a_single_patient(single, caplog):
    assert split_patients(["P001"], 0.2) == split_patients(["P001"], 0.5) == (["P001"], [])
    with caplog.at_level(logging.INFO, logger="bundle.data.index"):
        assert build_datalist(single, subset="val", val_fraction=0.2, allow_empty=True) == []
    notes = [r for r in caplog.records if "no validation patients" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    with pytest.raises(EmptyDatasetError, match="has no items"):
        build_datalist(single, subset="val", val_fraction=0.2)
    train = build_datalist(single, subset="train", val_fraction=0.2)
    assert train and {it["patient"] for it in train} == {"P001"}
    # allow_empty only covers a missing validation side: an empty training side still raises.
    with pytest.raises(EmptyDatasetError, match="has no items"):
        build_datalist(single, subset="train", val_fraction=1.0, allow_empty=True)


def test_overlapping_split_needs_allow_overlap(tree, tmp_path, caplog):
    path = tmp_path / "split.json"
    with pytest.raises(ValueError, match="both sides"):
        save_split(path, ["P001", "P002"], ["P002"])
    with caplog.at_level(logging.WARNING, logger="bundle.data.index"):
        save_split(path, ["P001", "P002"], ["P002"], allow_overlap=True)
    assert any("not independent of training" in r.getMessage() for r in caplog.records)
    with pytest.raises(CMRDataError, match="both sides"):
        load_split(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bundle.data.index"):
        assert load_split(path, allow_overlap=True) == (["P001", "P002"], ["P002"])
    assert [r.levelno for r in caplog.records if "not independent of training" in r.getMessage()] == [logging.WARNING]
    with pytest.raises(CMRDataError, match="both sides"):
        build_datalist(tree, subset="val", split_file=path)
    val = build_datalist(tree, subset="val", split_file=path, split_allow_overlap=True)
    train = build_datalist(tree, subset="train", split_file=path, split_allow_overlap=True)
    assert {it["patient"] for it in val} == {"P002"} and {it["patient"] for it in train} == {"P001", "P002"}


def test_undersampled_subset_by_split(tree):
    every = build_datalist(tree, subset="undersampled")
    assert {it["split"] for it in every} == {"TrainingSet", "ValidationSet"}
    val = build_datalist(tree, subset="undersampled", splits=["ValidationSet"])
    assert {it["split"] for it in val} == {"ValidationSet"} and 0 < len(val) < len(every)
    with pytest.raises(ValueError, match="splits"):
        build_datalist(tree, subset="undersampled", splits=["Validation"])
