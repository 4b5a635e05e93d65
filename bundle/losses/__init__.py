"""Training losses: the Eagle loss (three variants), the training SSIM, HyperCMR's VGG term and the total loss.

See ``docs/design.md``, "Loss". Pass ``HyperCMRLoss(...).for_trainer()`` (a :class:`TrainerLoss`) to MONAI's
``SupervisedTrainer`` as ``loss_function``.
"""

from __future__ import annotations

from bundle.losses.eagle import EagleLoss, eagle_filter, patch_variance
from bundle.losses.hypercmr import (
    HyperCMRLoss,
    TrainerLoss,
    column_normalized_magnitude,
    fidelity_loss,
    kspace_regulariser,
    minmax,
    ssim_criterion,
)
from bundle.losses.ssdu import SSDULoss, masked_kspace_errors, ssdu_loss
from bundle.losses.ssim import ssim_gaussian
from bundle.losses.vgg import PerceptualLoss, VGG19Features, load_vgg19_state_dict

__all__ = [
    "EagleLoss",
    "eagle_filter",
    "patch_variance",
    "HyperCMRLoss",
    "TrainerLoss",
    "column_normalized_magnitude",
    "fidelity_loss",
    "kspace_regulariser",
    "minmax",
    "ssim_criterion",
    "ssim_gaussian",
    "SSDULoss",
    "masked_kspace_errors",
    "ssdu_loss",
    "PerceptualLoss",
    "VGG19Features",
    "load_vgg19_state_dict",
]
