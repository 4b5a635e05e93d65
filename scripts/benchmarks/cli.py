"""Command line, driver and cross-section summary of the benchmark (``python scripts/benchmark.py --help``)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .data import section_data
from .flops import section_flops
from .harness import RSSMonitor, apply_malloc_tuning, machine_info, run_child
from .inference import section_infer
from .model import Bench, precision_of
from .precision import section_demo, section_precision
from .raw import section_raw
from .report import print_tables
from .training import section_ckpt, section_loss, section_train
from .weights import section_import

SECTIONS = ("train", "infer", "data", "loss", "flops")
EXTRA_SECTIONS = ("ckpt", "import", "precision", "demo", "raw")
# In-process order: the data section forks DataLoader workers, so it runs late.
RUN_ORDER = ("train", "loss", "infer", "flops", "precision", "ckpt", "data", "import", "demo", "raw")
# Sections that do not depend on --size: they run once, with the first size.
SIZE_FREE = ("import", "demo", "raw")
# Sections that start their own subprocesses (never run in a --subprocess child themselves).
OWN_SUBPROCESSES = ("ckpt",)


def parse_sizes(values: Sequence[str] | None) -> list[tuple[int, int]]:
    """``["64x128", "32x64,48x32"]`` -> ``[(64, 128), (32, 64), (48, 32)]`` (H = nx, W = ny)."""
    sizes = []
    for value in values or ["64x128"]:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            try:
                h, w = (int(n) for n in part.split("x"))
            except ValueError:
                raise argparse.ArgumentTypeError(f"size must look like 64x128 (HxW), got {part!r}") from None
            if h < 8 or w < 8:
                raise argparse.ArgumentTypeError(f"size {part!r} is too small (H, W >= 8)")
            sizes.append((h, w))
    return sizes


def parse_int_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def parse_str_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser(
    description: str = "Speed and memory benchmark of HyperCMR training and inference.",
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", action="append", help="HxW (H = readout nx, W = phase encode ny); repeatable or a, b")
    p.add_argument("--coils", type=int, default=10)
    p.add_argument("--frames", type=int, default=5, help="adjacent frames stacked per slice (odd)")
    p.add_argument("--cascades", type=int, default=None, help="network_def#num_cascades (default: the config's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--amp",
        choices=("off", "auto", "bf16", "fp16"),
        default="off",
        help="autocast of train/infer, resolved by bundle.workflows.resolve_precision (auto: the config default)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument(
        "--network", choices=("v1", "plus"), default="v1", help="PromptMR v1, or PromptMR+ (configs/promptmr_plus.yaml)"
    )
    p.add_argument("--tiny", action="store_true", help="the demo network widths (configs/demo.yaml)")
    p.add_argument("--checkpointing", action="store_true", help="per-cascade and per-SensNet-chunk checkpointing")
    p.add_argument("--sens-chunk", type=int, default=None, help="SensNet coil images per chunk (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {SECTIONS + EXTRA_SECTIONS}")
    p.add_argument("--subprocess", action="store_true", help="run each (section, size) in its own process")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    p.add_argument("--mem-limit-gb", type=float, default=None, help="RSS watchdog: exit with code 99 above this")
    p.add_argument("--case-slices", type=int, default=120, help="slices of a whole case (cine SAX: 12 x 10)")
    p.add_argument("--case-direct-max-s", type=float, default=20.0, help="time a whole case directly below this")
    p.add_argument("--data-workers", type=parse_int_list, default=[0, 1, 2], help="DataLoader num_workers list")
    p.add_argument("--data-files", type=int, default=2, help="generated .mat files (one patient each)")
    p.add_argument("--data-nz", type=parse_int_list, default=[2, 3], help="slices per file, cycled over files")
    p.add_argument("--data-batches", type=int, default=24, help="batches timed per worker count (after the first)")
    p.add_argument(
        "--data-coils",
        type=parse_int_list,
        default=None,
        help="coils per data file, e.g. 10,20 (compressed to --coils); default: --coils",
    )
    p.add_argument("--data-items", type=int, default=6, help="items timed per transform (CPU time, in-process)")
    p.add_argument("--demo-size", default="small", help="demo dataset size of the demo section (small, tiny, ...)")
    p.add_argument("--raw-items", type=int, default=8, help="raw section: slice items loaded per pass")
    p.add_argument("--raw-repeats", type=int, default=5, help="raw section: timed passes (the median is reported)")
    p.add_argument("--raw-frames", type=int, default=5, help="raw section: neighbour frames per slice item")
    p.add_argument(
        "--demo-modalities", type=parse_str_list, default=None, help="demo section: only these, e.g. Cine,Mapping"
    )
    p.add_argument("--demo-model", type=Path, default=None, help="demo section: model.pt (default: seed-0 weights)")
    p.add_argument(
        "--malloc-tuning",
        action="store_true",
        help="glibc mallopt: keep freed memory instead of returning it to the OS (avoids page-fault storms)",
    )
    p.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.sizes = parse_sizes(args.size)
    args.section_list = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.section_list) - set(SECTIONS + EXTRA_SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS + EXTRA_SECTIONS}")
    if args.frames < 1 or args.frames % 2 == 0:
        raise SystemExit("--frames must be a positive odd number")
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if args.cascades is not None and args.cascades < 1:
        raise SystemExit("--cascades must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.demo_model is not None and not args.demo_model.is_file():
        raise SystemExit(f"--demo-model {args.demo_model}: no such file")
    try:
        precision_of(args.amp, args.device)
    except ValueError as err:
        raise SystemExit(f"--amp {args.amp}: {err}") from None
    return args


def run_in_process(args: argparse.Namespace, section: str, size: tuple[int, int], bench: Bench | None) -> dict:
    device = torch.device(args.device)
    if section == "train":
        return section_train(bench)
    if section == "infer":
        return section_infer(bench)
    if section == "data":
        return section_data(args, size, device)
    if section == "loss":
        return section_loss(args, size, device)
    if section == "flops":
        return section_flops(args, size, device)
    if section == "precision":
        return section_precision(args, size, device)
    if section == "ckpt":
        return section_ckpt(args, size)
    if section == "import":
        return section_import(args)
    if section == "raw":
        return section_raw(args)
    return section_demo(args, device)


def run_all(args: argparse.Namespace) -> dict[str, list[dict]]:
    device = torch.device(args.device)
    results: dict[str, list[dict]] = {s: [] for s in RUN_ORDER if s in args.section_list}
    for index, size in enumerate(args.sizes):
        bench = None
        for section in results:
            if section in SIZE_FREE and index:
                continue
            t0 = time.perf_counter()
            if args.subprocess and section not in OWN_SUBPROCESSES:
                result = run_child(args, section, size)
            else:
                try:
                    if bench is None and section in ("train", "infer"):
                        bench = Bench(args, size, device)
                    result = {"status": "ok", **run_in_process(args, section, size, bench)}
                except torch.OutOfMemoryError as err:
                    result = {"status": "oom", "error": str(err)[:500]}
            result.setdefault("status", "ok")
            result["size"] = f"{size[0]}x{size[1]}"
            result["section_wall_s"] = time.perf_counter() - t0
            results[section].append(result)
            print(f"  [{section} {result['size']}] {result['status']} in {result['section_wall_s']:.1f} s", flush=True)
        del bench
    return results


def _first(results: dict, section: str, size: str) -> dict | None:
    for r in results.get(section, []):
        if r["size"] == size and r.get("status") == "ok":
            return r
    return None


def summarize(results: dict[str, list[dict]], sizes: Sequence[tuple[int, int]]) -> list[dict]:
    """Cross-section figures and the targets (shown, never asserted)."""
    rows = []
    for h, w in sizes:
        key = f"{h}x{w}"
        train, loss, infer = _first(results, "train", key), _first(results, "loss", key), _first(results, "infer", key)
        data, flops, ckpt = _first(results, "data", key), _first(results, "flops", key), _first(results, "ckpt", key)
        row: dict = {"size": key}
        if train and data:
            row["pipeline_over_train"] = data["best_slices_per_s"] / train["slices_per_s"]
            row["target_pipeline_3x"] = row["pipeline_over_train"] >= 3.0
        if train and loss:
            row["loss_share"] = loss["loss_fwd_bwd_s"] / train["step_s"]
            row["target_loss_share_lt_10pct"] = row["loss_share"] < 0.10
        if flops and train:
            row["train_flop_per_s"] = flops["train_flops_per_slice"] * train["slices_per_s"]
        if flops and infer:
            row["infer_flop_per_s"] = flops["forward_flops_per_slice"] / infer["per_slice_s"]
        if train:
            row["train_peak_mem_gb"] = train["peak_mem_gb"]
            row["fits_24gb"] = train["peak_mem_gb"] < 24.0
        if ckpt and "memory_ratio_off_over_on" in ckpt:
            row["ckpt_memory_ratio"] = ckpt["memory_ratio_off_over_on"]
            row["ckpt_time_overhead"] = ckpt["time_overhead"]
            row["target_ckpt_2x_memory"] = ckpt["memory_ratio_off_over_on"] >= 2.0
            row["target_ckpt_overhead_le_35pct"] = ckpt["time_overhead"] <= 0.35
        if len(row) > 1:  # sizes with no cross-section figure (e.g. only the precision section) have no row
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    malloc_tuned = apply_malloc_tuning() if args.malloc_tuning else False
    device = torch.device(args.device)
    t0 = time.perf_counter()
    monitor = None
    if args.child_out is not None and args.mem_limit_gb is not None:
        # Guards the whole child (model build, warm-up), not only the timed region.
        monitor = RSSMonitor(interval=0.02, limit_gb=args.mem_limit_gb).__enter__()
    report = {"machine": machine_info(device), "args": {k: v for k, v in vars(args).items() if k != "child_out"}}
    report["args"]["sizes"] = [f"{h}x{w}" for h, w in args.sizes]
    report["machine"]["malloc_tuning_applied"] = malloc_tuned
    for key in ("json", "size"):
        report["args"].pop(key, None)
    results = run_all(args)
    report["results"] = results
    report["summary"] = summarize(results, args.sizes)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - t0
    if monitor is not None:
        monitor.__exit__(None, None, None)
    if args.child_out is not None:
        args.child_out.write_text(json.dumps(report, default=str))
        return report
    print_tables(results, report["summary"])
    print(f"\nwall time {report['wall_s']:.1f} s on {report['machine']['device_name']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return report
