"""Check a demo run against the READMEs' demo figures of its precision (fp32 or bf16), within a tolerance.

Usage, from the repository root (no installation needed)::

    python scripts/demo_figures.py [--runs runs/train]            # compare; exit 1 if beyond the tolerance
    python scripts/demo_figures.py [--runs runs/train] --report   # the same one line, exit 0 (make train)
    python scripts/demo_figures.py [--runs runs/train] --write    # rewrite the READMEs' table of this precision

The figures are the validation metrics (challenge protocol) of the first and the last epoch, and of the
zero-filled input, read from the run's TensorBoard events. ``make train`` trains in fp32 on every CPU
(``configs/demo.yaml``: ``amp: false``), but fp32 kernels round differently on CPUs with AVX2 only, with AVX-512,
and with AMX (oneDNN picks other kernels and summation orders, and training amplifies the last bits), so each README
keeps one table per precision and kind of CPU, between ``<!-- demo figures <precision> <cpu> -->`` and
``<!-- end demo figures <precision> <cpu> -->``; the original ``<!-- demo figures -->`` block (fp32, AMD EPYC with
AVX-512) is the fallback, and a ``<!-- demo figures fp32 -->`` block the fallback for fp32. The run's precision is
the one demo training resolves on this CPU and its kind is read from the CPU's flags (``--precision`` and ``--cpu``
override).

The last epoch reproduces the table when |ΔSSIM| <= 0.003, |ΔPSNR| <= 0.3 dB and |ΔNMSE| <= 0.003: runs of one
precision on one kind of CPU agree to the printed digits (seeded), while the same fp32 run on an AMD EPYC with
AVX-512 and an Intel Xeon with AMX differs by 0.0031 SSIM, 0.75 dB and 0.0047 NMSE, and epochs 1 to 6 gain 0.02 SSIM and
2.2 dB; the tolerance absorbs thread and library rounding, not another CPU's arithmetic nor a run that did not
learn. One line says whether the run reproduced the figures, or by how much it did not.

Exit status: 0 when the run reproduces the table (or it was rewritten, or ``--report``), 1 when it does not,
2 on a usage error (no events: training did not run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", REPO / "docs" / "README.md")
BEGIN, END = "<!-- demo figures -->", "<!-- end demo figures -->"
METRICS = ("ssim", "psnr", "nmse")
#: Largest difference of the last epoch's figures from the table that still counts as reproduced.
TOLERANCE = {"ssim": 0.003, "psnr": 0.3, "nmse": 0.003}
PRECISIONS = ("fp32", "bf16")
CPU_KINDS = ("avx2", "avx512", "amx")
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


def markers(precision: str | None = None, cpu: str | None = None) -> tuple[str, str]:
    """The marker lines of the table of ``precision`` on CPUs of kind ``cpu`` (:func:`cpu_kind`); without a
    kind, fp32 has its own block and bf16 (and ``None``) the original one."""
    if precision and cpu:
        return f"<!-- demo figures {precision} {cpu} -->", f"<!-- end demo figures {precision} {cpu} -->"
    if precision == "fp32":
        return "<!-- demo figures fp32 -->", "<!-- end demo figures fp32 -->"
    return BEGIN, END


def _block(text: str, path: Path, precision: str | None = None, cpu: str | None = None) -> tuple[int, int]:
    # The most specific block the README has: this precision on this kind of CPU, this precision, the original.
    for candidate in ((precision, cpu), (precision, None), (None, None)):
        begin, end_marker = markers(*candidate)
        if begin in text:
            break
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no '{begin}' ... '{end_marker}' block")
    return start + len(begin), end


def current_table(path: Path, precision: str | None = None, cpu: str | None = None) -> str:
    text = path.read_text()
    start, end = _block(text, path, precision, cpu)
    return text[start:end].strip()


def write_table(path: Path, new: str, precision: str | None = None, cpu: str | None = None) -> None:
    text = path.read_text()
    start, end = _block(text, path, precision, cpu)
    path.write_text(text[:start] + "\n" + new + "\n" + text[end:])


def last_epoch(table_text: str) -> dict[str, float] | None:
    """SSIM, PSNR, NMSE of a table's last row (the last epoch), or ``None`` when it holds no figures."""
    rows = [r for r in table_text.splitlines() if r.startswith("| reconstruction after epoch")]
    if not rows:
        return None
    cells = [c.strip().strip("*") for c in rows[-1].strip("|").split("|")[1:]]
    try:
        return dict(zip(METRICS, map(float, cells)))
    except ValueError:
        return None


def run_precision() -> str:
    """The precision demo training resolves on this CPU: ``amp`` of ``configs/demo.yaml`` (false: fp32 on every
    CPU), as ``make train`` runs it."""
    import yaml

    from bundle.workflows.precision import resolve_precision

    amp = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()).get("amp", "auto")
    return resolve_precision(amp, "auto", "cpu").name


def cpu_kind() -> str:
    """The kind of x86 CPU whose fp32 kernels (oneDNN) a run used: ``amx`` (Intel Xeon with AMX), ``avx512`` or
    ``avx2``. The same seeded fp32 run agrees to the printed digits on one kind and differs between kinds."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = {w for line in f if line.lower().startswith("flags") for w in line.split(":", 1)[1].split()}
    except OSError:
        flags = set()
    if "amx_bf16" in flags or "amx_tile" in flags:
        return "amx"
    return "avx512" if "avx512f" in flags else "avx2"


def compare(run: dict[str, float], expected: dict[str, float] | None) -> tuple[bool, str]:
    """Whether ``run`` is within :data:`TOLERANCE` of ``expected``, and the differences in words."""
    if expected is None:
        return False, "the README table holds no figures"
    deltas = {m: run[m] - expected[m] for m in METRICS}
    ok = all(abs(deltas[m]) <= TOLERANCE[m] + 1e-9 for m in METRICS)
    words = ", ".join(
        f"{m.upper()} {run[m]:.4f} vs {expected[m]:.4f} ({deltas[m]:+.4f}, limit {TOLERANCE[m]})"
        if m != "psnr"
        else f"PSNR {run[m]:.2f} vs {expected[m]:.2f} dB ({deltas[m]:+.2f}, limit {TOLERANCE[m]})"
        for m in METRICS
    )
    return ok, words


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "train", help="the run's TensorBoard folder")
    parser.add_argument("--docs", type=Path, nargs="+", default=list(DOCS), help="README files holding the table")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto", help="the run's precision")
    parser.add_argument("--cpu", choices=("auto", *CPU_KINDS), default="auto", help="the kind of CPU it ran on")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table of this precision")
    mode.add_argument("--report", action="store_true", help="print the verdict and exit 0 (make train)")
    args = parser.parse_args(argv)
    try:
        figures = read_figures(args.runs)
        precision = run_precision() if args.precision == "auto" else args.precision
        cpu = cpu_kind() if args.cpu == "auto" else args.cpu
        expected = table(figures)
        last = max(figures["val_ssim"])
        run = {m: figures[f"val_{m}"][last] for m in METRICS}
        verdicts = {path: compare(run, last_epoch(current_table(path, precision, cpu))) for path in args.docs}
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.write:
        for path in args.docs:
            if current_table(path, precision, cpu) != expected:
                write_table(path, expected, precision, cpu)
                print(f"updated the {precision} ({cpu}) table of {path}")
        return EXIT_OK
    different = [path for path, (ok, _) in verdicts.items() if not ok]
    words = verdicts[args.docs[0]][1]
    if different:
        print(
            f"demo not reproduced: the {precision} figures of this run ({cpu} CPU) differ from "
            + ", ".join(map(str, different))
            + f" beyond the tolerance: {words}",
            file=sys.stderr,
        )
        print(expected, file=sys.stderr)
        print(f"(python scripts/demo_figures.py --write updates the {precision} table)", file=sys.stderr)
        return EXIT_OK if args.report else EXIT_DIFFERENT
    print(
        f"demo reproduced: the {precision} figures ({cpu} CPU) of {', '.join(map(str, args.docs))} within the "
        f"tolerance: {words}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
