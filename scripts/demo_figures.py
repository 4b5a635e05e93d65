"""Keep the demo figures in the READMEs equal to what `make train` measures.

Usage, from the repository root (no installation needed)::

    python scripts/demo_figures.py [--runs runs/train]            # compare; exit 1 if the READMEs differ
    python scripts/demo_figures.py [--runs runs/train] --write    # rewrite the READMEs' figure tables

The figures are the validation metrics (challenge protocol) of the first and the last epoch, and of the
zero-filled input, read from the run's TensorBoard events. In each README they sit between the two marker lines
``<!-- demo figures -->`` and ``<!-- end demo figures -->``. `make train` runs the comparison at the end.

Exit status: 0 when every README matches (or was rewritten), 1 when one differs, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", REPO / "docs" / "README.md")
BEGIN, END = "<!-- demo figures -->", "<!-- end demo figures -->"
METRICS = ("ssim", "psnr", "nmse")
EXIT_OK, EXIT_DIFFERENT, EXIT_USAGE = 0, 1, 2


def read_figures(runs: Path) -> dict[str, dict[int, float]]:
    """``{'val_ssim': {epoch: value}, ..., 'val_zf_ssim': ...}`` from the TensorBoard events under ``runs``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    wanted = [f"val_{m}" for m in METRICS] + [f"val_zf_{m}" for m in METRICS]
    missing = [t for t in wanted if t not in tags]
    if missing:
        raise ValueError(f"{runs}: no validation scalars {missing} in the TensorBoard events (run `make train` first)")
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in wanted}


def table(figures: dict[str, dict[int, float]]) -> str:
    """The Markdown table of the zero-filled input and the first and last epochs."""
    epochs = sorted(figures["val_ssim"])
    first, last = epochs[0], epochs[-1]

    def row(name: str, prefix: str, epoch: int, bold: bool = False) -> str:
        values = [figures[f"{prefix}{m}"][epoch] for m in METRICS]
        cells = [f"{values[0]:.4f}", f"{values[1]:.2f}", f"{values[2]:.4f}"]
        return f"| {name} | " + " | ".join(f"**{c}**" if bold else c for c in cells) + " |"

    lines = ["| | SSIM | PSNR (dB) | NMSE |", "|---|---|---|---|", row("zero-filled", "val_zf_", last)]
    lines.append(row(f"reconstruction after epoch {first}", "val_", first))
    if last != first:
        lines.append(row(f"reconstruction after epoch {last}", "val_", last, bold=True))
    return "\n".join(lines)


def _block(text: str, path: Path) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no '{BEGIN}' ... '{END}' block")
    return start + len(BEGIN), end


def current_table(path: Path) -> str:
    text = path.read_text()
    start, end = _block(text, path)
    return text[start:end].strip()


def write_table(path: Path, new: str) -> None:
    text = path.read_text()
    start, end = _block(text, path)
    path.write_text(text[:start] + "\n" + new + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "train", help="the run's TensorBoard folder")
    parser.add_argument("--docs", type=Path, nargs="+", default=list(DOCS), help="README files holding the table")
    parser.add_argument("--write", action="store_true", help="rewrite the tables instead of comparing")
    args = parser.parse_args(argv)
    try:
        expected = table(read_figures(args.runs))
        different = [path for path in args.docs if current_table(path) != expected]
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.write:
        for path in different:
            write_table(path, expected)
            print(f"updated {path}")
        return EXIT_OK
    if different:
        print("the demo figures of this run differ from " + ", ".join(map(str, different)) + ":", file=sys.stderr)
        print(expected, file=sys.stderr)
        print("(python scripts/demo_figures.py --write updates them)", file=sys.stderr)
        return EXIT_DIFFERENT
    print(f"the demo figures in {', '.join(map(str, args.docs))} match this run:\n{expected}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
