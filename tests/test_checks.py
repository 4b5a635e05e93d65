"""Dataset validation (``bundle/data/checks.py``, ``scripts/check_dataset.py``) and the tolerant scan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bundle.data.checks import Problem, bad_items_filter, check_dataset, check_file, format_problems
from bundle.data.index import build_datalist, build_items, scan_dataset
from bundle.data.matio import write_mat
from bundle.errors import EmptyDatasetError, MatFileError

REPO = Path(__file__).resolve().parent.parent
SHAPE = (4, 2, 2, 12, 16)  # h5py order (nt, nz, nc, ny, nx); 4 x 2 = 8 slabs per file
NT, NZ, _, NY, NX = SHAPE


def _kspace(seed: int = 0, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _mask(ny: int = NY, nx: int = NX) -> np.ndarray:
    mask = np.zeros((ny, nx))
    mask[::4] = 1
    mask[ny // 2 - 2 : ny // 2 + 2] = 1
    return mask


class Tree:
    """``<root>/ChallengeData/MultiCoil/Cine`` with two good training files, their masks and one kus file."""

    def __init__(self, root: Path):
        self.root = root
        self.cine = root / "ChallengeData" / "MultiCoil" / "Cine"
        self.train = self.cine / "TrainingSet"
        self.val = self.cine / "ValidationSet"
        for i, patient in enumerate(("P001", "P002")):
            write_mat(self.full(patient), kspace_full=_kspace(i))
        write_mat(self.train_mask("P001"), mask=_mask())
        write_mat(self.train / "Mask_Task2" / "P001" / "cine_sax_mask_ktUniform8.mat", mask=np.ones((NT, NY, NX)))
        write_mat(self.kus("P001"), kus=_kspace(7) * _mask().astype(np.float32))
        write_mat(self.val_mask("P001"), mask=_mask())
        self.good = {str(self.full("P001")), str(self.full("P002")), str(self.kus("P001"))}

    def full(self, patient: str) -> Path:
        return self.train / "FullSample" / patient / "cine_sax.mat"

    def train_mask(self, patient: str) -> Path:
        return self.train / "Mask_Task1" / patient / "cine_sax_mask_Uniform4.mat"

    def kus(self, patient: str) -> Path:
        return self.val / "UnderSample_Task1" / patient / "cine_sax_kus_Uniform4.mat"

    def val_mask(self, patient: str) -> Path:
        return self.val / "Mask_Task1" / patient / "cine_sax_mask_Uniform4.mat"


@pytest.fixture
def tree(tmp_path) -> Tree:
    return Tree(tmp_path / "data")


def _check(tree: Tree, **kwargs) -> tuple[set[str], list[Problem]]:
    good, problems = check_dataset(tree.root, **kwargs)
    return {r.path for r in good}, problems


def _one(problems: list[Problem], kind: str, path: Path) -> Problem:
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.kind == kind, p
    assert p.path == str(path), p
    return p


# --------------------------------------------------------------------------------------------------- clean


def test_clean_tree_has_no_problems(tree):
    good, problems = _check(tree)
    assert problems == []
    assert good == tree.good
    assert format_problems(problems, n_ok=len(good)) == "No problems found; 3 files OK."


# --------------------------------------------------------------------------------------------------- one kind each


def test_corrupt_file(tree):
    bad = tree.full("P003")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    good, problems = _check(tree)
    p = _one(problems, "unreadable", bad)
    assert "not a MATLAB" in p.message
    assert good == tree.good


def test_truncated_file(tree):
    bad = tree.full("P003")
    write_mat(bad, kspace_full=_kspace(3))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    good, problems = _check(tree)
    p = _one(problems, "unreadable", bad)
    assert "truncated" in p.message
    assert good == tree.good


def test_corrupt_chunk_fails_on_slab_read(tree):
    """A file that opens fine but whose data cannot be decoded: found only by the value check, with z and t."""
    bad = tree.full("P003")
    bad.parent.mkdir(parents=True)
    compound = np.dtype([("real", "<f4"), ("imag", "<f4")])
    with h5py.File(bad, "w", userblock_size=512) as f:
        ds = f.create_dataset("kspace_full", data=_kspace(3).view(compound), chunks=(1, 1, *SHAPE[2:]), compression=9)
        ds.attrs["MATLAB_class"] = np.bytes_("single")
        chunk = ds.id.get_chunk_info(3)  # chunk (t=1, z=1)
    with open(bad, "r+b") as fh:
        fh.seek(chunk.byte_offset + 10)
        fh.write(b"\xff" * 40)
    good, problems = _check(tree)
    p = _one(problems, "unreadable", bad)
    assert (p.z, p.t) == (1, 1)
    assert "corrupt" in p.message and "filter" in p.message  # h5py's own text is kept
    assert good == tree.good
    assert _check(tree, check_values=False)[1] == []  # metadata alone looks fine


def test_missing_key(tree):
    bad = tree.full("P003")
    write_mat(bad, data=_kspace(3), other=np.ones((2, 2)))  # no kspace_full and no single variable to pick
    good, problems = _check(tree)
    p = _one(problems, "missing_key", bad)
    assert "kspace_full" in p.message
    assert good == tree.good


def test_wrong_dimensions(tree):
    bad = tree.full("P003")
    write_mat(bad, kspace_full=_kspace(3, shape=(2, NY, NX)))
    good, problems = _check(tree)
    p = _one(problems, "bad_shape", bad)
    assert "(2, 12, 16)" in p.message
    assert good == tree.good


def test_mask_that_does_not_fit(tree):
    write_mat(tree.full("P003"), kspace_full=_kspace(3))
    bad_mask = tree.train_mask("P003")
    write_mat(bad_mask, mask=_mask(ny=NY - 2))
    good, problems = _check(tree)
    p = _one(problems, "mask_mismatch", tree.full("P003"))
    assert p.mask == str(bad_mask) and str(bad_mask) in p.message
    assert "(10, 16)" in p.message and "(12, 16)" in p.message
    assert good == tree.good


def test_task2_mask_needs_the_frame_axis(tree):
    write_mat(tree.full("P003"), kspace_full=_kspace(3))
    bad_mask = tree.train / "Mask_Task2" / "P003" / "cine_sax_mask_ktGaussian8.mat"
    write_mat(bad_mask, mask=np.ones((NT - 1, NY, NX)))  # wrong nt
    good, problems = _check(tree)
    assert _one(problems, "mask_mismatch", tree.full("P003")).mask == str(bad_mask)
    assert good == tree.good


def test_kus_mask_that_does_not_fit(tree):
    write_mat(tree.kus("P002"), kus=_kspace(3))
    write_mat(tree.val_mask("P002"), mask=_mask(nx=NX + 1))
    good, problems = _check(tree)
    assert _one(problems, "mask_mismatch", tree.kus("P002")).mask == str(tree.val_mask("P002"))
    assert good == tree.good


def test_nan_in_one_slice(tree):
    k = _kspace(3)
    k[1, 0, 1, 5, 7] = np.nan  # t=1, z=0, one coil, one sample
    write_mat(tree.full("P003"), kspace_full=k)
    good, problems = _check(tree)
    p = _one(problems, "non_finite", tree.full("P003"))
    assert (p.z, p.t) == (0, 1)
    assert good == tree.good


def test_inf_in_kus(tree):
    k = _kspace(3)
    k[3, 1, 0, 0, 0] = np.inf
    write_mat(tree.kus("P002"), kus=k)
    write_mat(tree.val_mask("P002"), mask=_mask())
    good, problems = _check(tree)
    assert (_one(problems, "non_finite", tree.kus("P002")).z, problems[0].t) == (1, 3)
    assert good == tree.good


def test_all_zero_slice(tree):
    k = _kspace(3)
    k[2, 1] = 0  # t=2, z=1, every coil
    write_mat(tree.full("P003"), kspace_full=k)
    good, problems = _check(tree)
    p = _one(problems, "all_zero_slice", tree.full("P003"))
    assert (p.z, p.t) == (1, 2)
    assert good == tree.good
    assert _check(tree, check_values=False)[1] == []


def test_missing_mask_for_kus(tree):
    write_mat(tree.kus("P002"), kus=_kspace(3))
    good, problems = _check(tree)
    p = _one(problems, "missing_mask", tree.kus("P002"))
    assert str(tree.val_mask("P002")) in p.message
    assert good == tree.good


def test_slice_problems_are_capped_with_a_summary(tree):
    k = np.zeros(SHAPE, np.complex64)
    k[0, 0, 0, 0, 0] = np.nan  # 1 non-finite slab, then 7 all-zero slabs
    write_mat(tree.full("P003"), kspace_full=k)
    _, problems = _check(tree, max_slice_problems=3)
    assert [(p.kind, p.z, p.t) for p in problems[:3]] == [
        ("non_finite", 0, 0),
        ("all_zero_slice", 1, 0),
        ("all_zero_slice", 0, 1),
    ]
    assert len(problems) == 4
    summary = problems[3]
    assert (summary.kind, summary.z, summary.t) == ("all_zero_slice", None, None)
    assert "5 more" in summary.message
    assert len(_check(tree, max_slice_problems=None)[1]) == NT * NZ


def test_check_file_never_raises_for_a_vanished_file(tree):
    records = scan_dataset(tree.root)
    record = next(r for r in records if r.path == str(tree.full("P002")))
    tree.full("P002").unlink()
    (p,) = check_file(record)
    assert p.kind == "unreadable" and p.path == record.path and "no such file" in p.message


# --------------------------------------------------------------------------------------------------- scan, table


def test_scan_on_error_skips_and_reports(tree):
    bad = tree.full("P003")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a mat file at all" * 50)
    with pytest.raises(MatFileError, match="P003"):
        scan_dataset(tree.root)  # default unchanged: raise
    errors = []
    records = scan_dataset(tree.root, on_error=errors.append)
    assert {r.path for r in records} == tree.good
    assert [e.path for e in errors] == [str(bad)]
    items = build_datalist(tree.root, subset="all", on_error=errors.append)
    assert {it["file"] for it in items} == {str(tree.full("P001")), str(tree.full("P002"))}


def test_empty_root_is_a_usage_error(tmp_path):
    with pytest.raises(EmptyDatasetError):
        check_dataset(tmp_path)
    (tmp_path / "MultiCoil" / "Cine" / "TrainingSet").mkdir(parents=True)
    with pytest.raises(EmptyDatasetError):
        check_dataset(tmp_path)


def test_all_files_bad_is_not_an_empty_dataset(tmp_path):
    bad = tmp_path / "MultiCoil" / "Cine" / "TrainingSet" / "FullSample" / "P001" / "cine_sax.mat"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * 100)
    good, problems = check_dataset(tmp_path)
    assert good == [] and [p.kind for p in problems] == ["unreadable"]


def test_format_problems_table(tree):
    problems = [
        Problem(str(tree.full("P003")), "non_finite", "k-space contains NaN or Inf", z=1, t=2),
        Problem("/elsewhere/x.mat", "unreadable", "gone"),
        Problem(str(tree.full("P003")), "all_zero_slice", "k-space slab is all zeros", z=0, t=3),
    ]
    lines = format_problems(problems, root=tree.root, n_ok=5).splitlines()
    assert lines[0].split() == ["KIND", "FILE", "Z", "T", "MESSAGE"]
    rel = "ChallengeData/MultiCoil/Cine/TrainingSet/FullSample/P003/cine_sax.mat"
    assert lines[2].split()[:4] == ["non_finite", rel, "1", "2"]
    assert lines[3].split()[:4] == ["unreadable", "/elsewhere/x.mat", "-", "-"]
    assert lines[2].index("k-space") == lines[0].index("MESSAGE")  # fixed-width columns
    assert lines[-1] == "3 problems in 2 files; 5 files OK"


# --------------------------------------------------------------------------------------------------- items


def test_bad_items_filter(tree):
    k = _kspace(3)
    k[1, 0, 0, 0, 0] = np.nan  # non-finite (z=0, t=1)
    k[2, 1] = 0  # all-zero (z=1, t=2)
    write_mat(tree.full("P003"), kspace_full=k)
    bad_mask = tree.train_mask("P002")
    write_mat(bad_mask, mask=_mask(ny=NY - 2))  # P002's only official mask does not fit
    write_mat(tree.kus("P002"), kus=_kspace(4))  # no mask file: the loader infers one, so it is kept
    broken = tree.full("P004")
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\1" * 700)
    good, problems = check_dataset(tree.root)
    records = scan_dataset(tree.root, on_error=lambda err: None)
    items = build_items(records, mask_names="all", exclude=(), trims={}) + build_items(
        records, mask_names=None, exclude=(), trims={}
    )
    items.append({"file": str(broken), "z": 0, "t": 0, "nt": NT, "mask_file": None})

    is_bad = bad_items_filter(problems)
    dropped = [it for it in items if is_bad(it)]
    assert is_bad(items[-1])  # the unreadable file
    p3 = [(it["mask_name"], it["z"], it["t"]) for it in dropped if it["file"] == str(tree.full("P003"))]
    assert sorted(p3, key=str) == sorted([(None, 0, 1), (None, 1, 2)], key=str)  # P003 has no official masks
    p2 = {(it["kind"], it["mask_name"]) for it in dropped if it.get("patient") == "P002"}
    assert p2 == {("full", "Uniform4")}  # only the items that use the mask that does not fit
    assert len([it for it in dropped if it["file"] == str(tree.full("P002"))]) == NT * NZ
    # P002 items without the bad mask, the kus file without a mask, and every P001 item survive.
    kept = [it for it in items if not is_bad(it)]
    assert all(it.get("patient") != "P001" or not is_bad(it) for it in items)
    kept_files = {it["file"] for it in kept}
    assert {str(tree.full("P002")), str(tree.kus("P002"))} <= kept_files
    assert len(dropped) == 2 + NT * NZ + 1

    # With 3 neighbour frames, the NaN in frame 1 of slice 0 also spoils targets 0 and 2 of that slice.
    is_bad3 = bad_items_filter(problems, num_adj_frames=3)
    base = {"file": str(tree.full("P003")), "nt": NT, "mask_file": None}
    assert [is_bad3({**base, "z": 0, "t": t}) for t in range(NT)] == [True, True, True, False]
    assert [is_bad3({**base, "z": 1, "t": t}) for t in range(NT)] == [False, False, True, False]
    assert [is_bad({**base, "z": 0, "t": t}) for t in range(NT)] == [False, True, False, False]


# --------------------------------------------------------------------------------------------------- CLI


def _cli(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "scripts/check_dataset.py", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_reports_problems(tree, tmp_path):
    k = _kspace(3)
    k[0, 1] = 0
    write_mat(tree.full("P003"), kspace_full=k)
    out = tmp_path / "report.json"
    res = _cli("--root", tree.root, "--json", out)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("all_zero_slice"))
    assert row.split()[1:4] == ["ChallengeData/MultiCoil/Cine/TrainingSet/FullSample/P003/cine_sax.mat", "1", "0"]
    assert res.stdout.strip().endswith("1 problem in 1 file; 3 files OK")
    report = json.loads(out.read_text())
    assert report["files_ok"] == 3
    assert report["problems"] == [
        {
            "path": str(tree.full("P003")),
            "kind": "all_zero_slice",
            "message": "k-space slab is all zeros",
            "z": 1,
            "t": 0,
            "mask": None,
        }
    ]


def test_cli_clean_tree(tree):
    res = _cli("--root", tree.root, "--no-values", "--modalities", "Cine")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No problems found; 3 files OK." in res.stdout


def test_cli_usage_errors(tmp_path):
    for root in (tmp_path, tmp_path / "missing"):
        res = _cli("--root", root)
        assert res.returncode == 2
        assert "error:" in res.stderr and str(root) in res.stderr
        assert "Traceback" not in res.stderr
