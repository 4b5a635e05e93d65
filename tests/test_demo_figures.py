"""The READMEs' demo figures are what a run measured: scripts/demo_figures.py compares and rewrites them."""

from __future__ import annotations

from pathlib import Path

from helpers import REPO
from torch.utils.tensorboard import SummaryWriter

from scripts.demo_figures import BEGIN, END, current_table, main


def _events(folder: Path) -> Path:
    writer = SummaryWriter(str(folder))
    values = {"ssim": (0.93, 0.958), "psnr": (26.74, 28.9), "nmse": (0.0322, 0.0226)}
    for epoch in (1, 2, 3):
        for metric, (first, last) in values.items():
            writer.add_scalar(f"val_{metric}", first if epoch == 1 else last, epoch)
            writer.add_scalar(f"val_zf_{metric}", {"ssim": 0.9236, "psnr": 27.22, "nmse": 0.0361}[metric], epoch)
    writer.close()
    return folder


def _readme(path: Path) -> Path:
    path.write_text(f"intro\n{BEGIN}\n| old | table |\n{END}\nrest\n")
    return path


def test_check_fails_then_write_fixes_then_check_passes(tmp_path, capsys):
    runs = _events(tmp_path / "runs")
    docs = [_readme(tmp_path / "README.md"), _readme(tmp_path / "docs.md")]
    args = ["--runs", str(runs), "--docs", *map(str, docs)]
    assert main(args) == 1
    assert "differ from" in capsys.readouterr().err
    assert main([*args, "--write"]) == 0
    assert main(args) == 0
    table = current_table(docs[0])
    assert table.splitlines()[2:] == [
        "| zero-filled | 0.9236 | 27.22 | 0.0361 |",
        "| reconstruction after epoch 1 | 0.9300 | 26.74 | 0.0322 |",
        "| reconstruction after epoch 3 | **0.9580** | **28.90** | **0.0226** |",
    ]
    assert docs[1].read_text().startswith("intro\n") and docs[1].read_text().endswith("rest\n")


def test_a_folder_without_events_is_a_usage_error(tmp_path, capsys):
    assert main(["--runs", str(tmp_path), "--docs", str(_readme(tmp_path / "R.md"))]) == 2
    assert "run `make train` first" in capsys.readouterr().err


def test_both_readmes_show_the_same_demo_figures():
    tables = [current_table(REPO / "README.md"), current_table(REPO / "docs" / "README.md")]
    assert tables[0] == tables[1] and "reconstruction after epoch 6" in tables[0]
