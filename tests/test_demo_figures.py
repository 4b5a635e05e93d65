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


def test_each_precision_is_compared_with_its_own_table_within_the_tolerance(tmp_path, capsys):
    runs = _events(tmp_path / "runs")  # last epoch: SSIM 0.958, PSNR 28.90, NMSE 0.0226
    bf16 = "| reconstruction after epoch 6 | **0.9700** | **30.00** | **0.0100** |"
    fp32 = "| reconstruction after epoch 6 | **0.9560** | **28.70** | **0.0250** |"  # within 0.003 / 0.3 / 0.003
    readme = tmp_path / "README.md"
    readme.write_text(
        f"{BEGIN}\n| | SSIM |\n|---|---|\n{bf16}\n{END}\n"
        f"<!-- demo figures fp32 -->\n| | SSIM |\n|---|---|\n{fp32}\n<!-- end demo figures fp32 -->\n"
    )
    args = ["--runs", str(runs), "--docs", str(readme)]
    assert main([*args, "--precision", "fp32"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("demo reproduced: the fp32 figures") and "limit 0.3" in out[0]
    assert main([*args, "--precision", "bf16"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("demo not reproduced: the bf16 figures") and "SSIM 0.9580 vs 0.9700 (-0.0120" in err
    assert main([*args, "--precision", "bf16", "--report"]) == 0  # make train: the verdict, no failure
    # --write touches only the table of the run's precision.
    assert main([*args, "--precision", "fp32", "--write"]) == 0
    assert bf16 in current_table(readme) and "epoch 3" in current_table(readme, "fp32")
