"""Section ``flops``: model FLOPs per slice (``FlopCounterMode``), counted without running anything heavy."""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from bundle.losses import HyperCMRLoss

from .model import build_network, synthetic_batch
from .training import loss_inputs


def section_flops(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """Forward and forward + backward FLOPs per slice of the network, and those of the loss.

    The network runs on the ``meta`` device (shapes only, no data, no time), without checkpoint recomputation;
    its backward is driven by ``image.sum() + kspace.sum()``, whose own cost is not counted. HyperCMRLoss cannot
    run on ``meta`` (it opens an autocast region for the input's device type), so its forward + backward is
    counted on ``device`` with real tensors, where it is cheap. Convolutions and matmuls only.
    """
    meta = torch.device("meta")
    net = build_network(args, meta, use_checkpoint=False)
    batch = synthetic_batch(args, *size, meta)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.eval()(batch["kspace_masked"], batch["mask"])
    fwd = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        image, kspace = net.train()(batch["kspace_masked"], batch["mask"])
        (image.sum() + torch.view_as_real(kspace).sum()).backward()
    net_train = counter.get_total_flops()

    loss = HyperCMRLoss(w_vgg=0.0).to(device)
    pred, target = loss_inputs(args, size, device)
    counter = FlopCounterMode(display=False)
    with counter:
        loss(pred, target)[0].backward()
    loss_flops = counter.get_total_flops()
    h, w = size
    b = args.batch
    return {
        "forward_flops_per_slice": fwd / b,
        "train_flops_per_slice": (net_train + loss_flops) / b,
        "train_flops_per_pixel": (net_train + loss_flops) / b / (h * w),
        "loss_flops_per_slice": loss_flops / b,
        "counted": "FlopCounterMode: conv/matmul only (FFTs, element-wise ops not counted); network on meta",
    }
