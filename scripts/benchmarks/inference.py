"""Section ``infer``: eval-mode ``no_grad`` forward per batch, per slice and per whole case (synthetic input)."""

from __future__ import annotations

import time

import torch

from .harness import PeakMemory, median, sync, timed
from .model import Bench


def section_infer(bench: Bench) -> dict:
    """Per-slice inference time; a whole case of ``--case-slices`` is timed directly when that is estimated to
    take at most ``--case-direct-max-s``, otherwise extrapolated (the result says which)."""
    args, device = bench.args, bench.device
    bench.net.eval()

    def run() -> None:
        with torch.no_grad():
            bench.forward()

    with PeakMemory(device, args.mem_limit_gb) as mem:
        times = timed(run, args.repeats, args.warmup, device)
    per_batch = median(times)
    per_slice = per_batch / args.batch
    out = {
        "network": args.network,
        "precision": bench.precision.name,
        "batch_s": per_batch,
        "times_s": times,
        "per_slice_s": per_slice,
        "slices_per_s": 1.0 / per_slice,
        "case_slices": args.case_slices,
        "case_s_extrapolated": per_slice * args.case_slices,
        **mem.result(),
    }
    if per_slice * args.case_slices <= args.case_direct_max_s:
        # A whole case in batches of --batch (the last batch may be partial, as in a real case).
        t0 = time.perf_counter()
        done = 0
        with torch.no_grad():
            while done < args.case_slices:
                n = min(args.batch, args.case_slices - done)
                bench.forward(n)
                done += n
        sync(device)
        out["case_s"] = time.perf_counter() - t0
        out["case_method"] = "timed directly"
    else:
        out["case_s"] = out["case_s_extrapolated"]
        out["case_method"] = f"extrapolated: per-slice time x {args.case_slices}"
    return out
