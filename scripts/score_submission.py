"""Score a submission folder against a ground-truth folder as the organisers' validation script does.

Usage, from the repository root::

    python scripts/score_submission.py SUBMISSION_DIR GT_DIR [--sheet FILE] [--release 2025] [--out DIR]

SUBMISSION_DIR holds the task folders (2025: ``TaskR1/MultiCoil/...``; 2024: ``Task1/...``; 2023:
``MultiCoil/...``), as inference writes them under ``submission/``. GT_DIR holds ``img4ranking`` files in the
layout of ``docs/outputs.md`` ("Scoring a submission offline"). ``--sheet`` is the organisers' patient sheet
(CSV or XLSX; 2025 only): TaskR1 is then grouped by its Center and Manufacturer, the other tasks by its
Disease1-4. Writes ``<out>/<task>/results.json`` (the organisers' summary, 4 decimals), ``summary.csv`` and
``files.csv``, and prints the summary. ``--demo-ground-truth DEMO_ROOT`` first writes GT_DIR from a demo tree
made by ``scripts/make_demo_data.py`` (same ``--seed`` and ``--size``).

Exit status: 0 when scored, 2 on bad input (the message names the file and what is wrong).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundle.errors import CMRDataError  # noqa: E402
from bundle.scoring import score_tree, summary_table, write_demo_ground_truth, write_results  # noqa: E402


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", type=Path, help="the submission folder (the task folders inside)")
    parser.add_argument("gt", type=Path, help="the ground-truth folder")
    parser.add_argument("--sheet", type=Path, default=None, help="the organisers' patient sheet, .csv or .xlsx")
    parser.add_argument("--release", choices=("2023", "2024", "2025"), default="2025", help="default 2025")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default <submission>/../Result)")
    parser.add_argument(
        "--demo-ground-truth",
        type=Path,
        default=None,
        metavar="DEMO_ROOT",
        help="first write GT_DIR from this demo tree (scripts/make_demo_data.py --root)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the demo tree's seed (with --demo-ground-truth)")
    parser.add_argument("--size", default="small", help="the demo tree's size (with --demo-ground-truth)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out = args.out or args.submission.resolve().parent / "Result"
    try:
        if args.demo_ground_truth is not None:
            files = write_demo_ground_truth(args.demo_ground_truth, args.gt, args.release, args.seed, args.size)
            print(f"wrote {len(files)} ground-truth files under {args.gt}")
        results = score_tree(args.submission, args.gt, args.release, args.sheet)
        written = write_results(results, out)
    except (CMRDataError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(results))
    print(f"wrote {len(written)} files under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
