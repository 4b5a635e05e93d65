"""Sections ``train`` (one optimisation step), ``loss`` (HyperCMRLoss alone) and ``ckpt`` (checkpointing off/on)."""

from __future__ import annotations

import argparse
import time

import torch

from bundle.losses import HyperCMRLoss

from .harness import PeakMemory, median, run_child, sync, timed
from .model import Bench, synthetic_batch


def section_train(bench: Bench) -> dict:
    """Forward, HyperCMRLoss (VGG off), backward and AdamW step: median time, per-phase times, peak memory."""
    args, device = bench.args, bench.device
    bench.net.train()
    for _ in range(args.warmup):
        bench.train_step()
    phases: dict[str, list[float]] = {}
    times = []
    with PeakMemory(device, args.mem_limit_gb) as mem:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            bench.train_step(phases)
            sync(device)
            times.append(time.perf_counter() - t0)
    step = median(times)
    return {
        "step_s": step,
        "times_s": times,
        "slices_per_s": args.batch / step,
        "phases_s": {k: median(v) for k, v in phases.items()},
        "checkpointing": args.checkpointing,
        "network": args.network,
        "precision": bench.precision.name,
        **mem.result(),
    }


def loss_inputs(args: argparse.Namespace, size: tuple[int, int], device: torch.device):
    """Leaf ``(image, kspace)`` predictions (perturbed targets, so no network is needed) and the target dict."""
    batch = synthetic_batch(args, *size, device)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(batch["target"].shape, generator=gen).to(device)
    image = (batch["target"] * (1 + 0.1 * noise)).requires_grad_(True)
    kspace = (batch["kspace_target"] * 0.9).requires_grad_(True)
    return (image, kspace), {"target": batch["target"], "kspace_target": batch["kspace_target"]}


def section_loss(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """HyperCMRLoss (VGG off) forward + backward alone; its share of the step is in the summary."""
    loss = HyperCMRLoss(w_vgg=0.0).to(device)
    (image, kspace), target = loss_inputs(args, size, device)

    def step() -> None:
        image.grad = kspace.grad = None
        total, _ = loss((image, kspace), target)
        total.backward()

    times = timed(step, max(args.repeats, 5), max(args.warmup, 1), device)  # cheap: a few more repeats
    return {"loss_fwd_bwd_s": median(times), "times_s": times}


def section_ckpt(args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """The training step without and with ``use_checkpoint``, each in its own subprocess (separate peaks)."""
    runs = {"on" if flag else "off": run_child(args, "train", size, checkpointing=flag) for flag in (False, True)}
    out: dict = dict(runs)
    if runs["off"].get("status") == "ok" and runs["on"].get("status") == "ok":
        off, on = runs["off"], runs["on"]
        out["memory_ratio_off_over_on"] = off["peak_mem_gb"] / on["peak_mem_gb"]
        out["time_overhead"] = on["step_s"] / off["step_s"] - 1.0
        if args.device == "cpu":
            out["memory_ratio_ru_maxrss"] = off["ru_maxrss_gb"] / on["ru_maxrss_gb"]
    return out
