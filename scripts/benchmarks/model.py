"""The network, precision and inputs the timing sections share, all taken from the bundle's configs.

The network is ``network_def`` of ``configs/train.yaml`` (the paper widths), with ``configs/demo.yaml`` on top for
``--tiny`` (the demo widths) and ``configs/promptmr_plus.yaml`` for ``--network plus``; the flags set only the
cascade count, the frame count, checkpointing and the SensNet chunk. The autocast setting comes from
``bundle.workflows.resolve_precision``, as in the workflows.
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.bundle import ConfigParser

from bundle.losses import HyperCMRLoss
from bundle.mri import ifft2c, rss
from bundle.networks import PromptMR
from bundle.workflows import Precision, resolve_precision

from .harness import REPO, sync

CONFIGS = REPO / "configs"


def config_files(network: str = "v1", tiny: bool = False, base: str = "train.yaml") -> list[str]:
    """``base`` plus the overlays that ``--tiny`` (demo widths) and ``--network plus`` (PromptMR+) add."""
    files = [CONFIGS / base]
    if tiny:
        files.append(CONFIGS / "demo.yaml")
    if network == "plus":
        files.append(CONFIGS / "promptmr_plus.yaml")
    return [str(f) for f in files]


def network_parser(args: argparse.Namespace, use_checkpoint: bool | None = None) -> ConfigParser:
    """A ``ConfigParser`` of the configs named by ``args``, with the benchmark's network overrides applied."""
    parser = ConfigParser()
    parser.read_config(config_files(args.network, args.tiny))
    parser["bundle_root"] = str(REPO)
    parser["num_adj_frames"] = args.frames
    parser["network_def#use_checkpoint"] = args.checkpointing if use_checkpoint is None else use_checkpoint
    parser["network_def#sens_chunk_size"] = args.sens_chunk
    if args.cascades is not None:
        parser["network_def#num_cascades"] = args.cascades
    return parser


def build_network(args: argparse.Namespace, device: torch.device | str, use_checkpoint: bool | None = None) -> PromptMR:
    """``network_def`` of the configs, built with seed 0 on ``device`` (``meta`` builds it without memory)."""
    parser = network_parser(args, use_checkpoint)
    torch.manual_seed(0)
    with torch.device(device):
        net = parser.get_parsed_content("network_def")
    if not isinstance(net, PromptMR):
        raise TypeError(f"network_def of {config_files(args.network, args.tiny)} is not a PromptMR: {type(net)}")
    return net


def precision_of(amp: str, device: torch.device | str) -> Precision:
    """``--amp`` as the workflows resolve it: off (fp32), auto (the config default), bf16 or fp16."""
    if amp == "off":
        return resolve_precision(False, "auto", device)
    if amp == "auto":
        return resolve_precision("auto", "auto", device)
    return resolve_precision(True, amp, device)


def synthetic_batch(args: argparse.Namespace, h: int, w: int, device: torch.device, seed: int = 0) -> dict:
    """One training batch as the DataLoader delivers it, on ``device``.

    ``kspace_masked`` ``(B, F*C, H, W)`` complex64, ``mask`` ``(B, F, H, W)`` float32, ``target`` ``(B, 1, H, W)``
    float32 and ``kspace_target`` ``(B, C, H, W)`` complex64, with B = ``--batch``, F = ``--frames``, C =
    ``--coils``. Fully sampled k-space is complex Gaussian shaped by a ``1 / (1 + r^2/r0^2)`` envelope at the ~1e-3
    scale of CMRxRecon k-space (timings do not depend on the content, but denormals or NaNs would). The mask is
    Uniform R=4 with 16 ACS lines.
    """
    b, f, c = args.batch, args.frames, args.coils
    gen = torch.Generator().manual_seed(seed)
    ky = torch.arange(w) - w // 2
    kx = torch.arange(h) - h // 2
    envelope = 1.0 / (1.0 + (kx[:, None] ** 2 + ky[None, :] ** 2) / (0.05 * min(h, w)) ** 2)
    full = torch.randn(b, f * c, h, w, dtype=torch.complex64, generator=gen) * (1e-3 * envelope)
    line = torch.zeros(w)
    line[::4] = 1
    line[w // 2 - 8 : w // 2 + 8] = 1
    mask = line.expand(b, f, h, w).contiguous()
    masked = full * mask.repeat_interleave(c, dim=1)
    centre = full.view(b, f, c, h, w)[:, f // 2].contiguous()
    target = rss(ifft2c(centre), dim=1).unsqueeze(1)
    batch = {"kspace_masked": masked, "mask": mask, "target": target, "kspace_target": centre}
    return {k: v.to(device) for k, v in batch.items()}


class Bench:
    """Network, loss, optimiser and inputs of one size, built once and shared by the in-process sections."""

    def __init__(self, args: argparse.Namespace, size: tuple[int, int], device: torch.device):
        self.args, self.size, self.device = args, size, device
        self.precision = precision_of(args.amp, device)
        self.batch = synthetic_batch(args, *size, device)
        self.net = build_network(args, device)
        self.model = torch.compile(self.net) if args.compile else self.net
        self.loss = HyperCMRLoss(w_vgg=0.0).to(device)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=9e-5, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.grad_scaler)
        self.target = {"target": self.batch["target"], "kspace_target": self.batch["kspace_target"]}

    def forward(self, n: int | None = None):
        """The network on the first ``n`` slices of the batch (all by default), under the autocast setting."""
        with self.precision.autocast():
            return self.model(self.batch["kspace_masked"][:n], self.batch["mask"][:n])

    def train_step(self, phases: dict[str, list[float]] | None = None) -> None:
        """zero_grad, forward, loss, backward, AdamW step; ``phases`` collects per-phase wall times."""
        marks = [time.perf_counter()]

        def mark() -> None:
            if phases is not None:
                sync(self.device)
                marks.append(time.perf_counter())

        self.optimizer.zero_grad(set_to_none=True)
        pred = self.forward()
        mark()
        total, _ = self.loss(pred, self.target)
        mark()
        self.scaler.scale(total).backward()
        mark()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        mark()
        if phases is not None:
            for name, a, b in zip(("forward", "loss", "backward", "optimizer"), marks, marks[1:]):
                phases.setdefault(name, []).append(b - a)
