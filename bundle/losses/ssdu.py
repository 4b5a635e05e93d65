"""The SSDU loss: normalised k-space error on the loss lines Λ of the centre frame (Yaman et al., MRM 2020).

``L = 0.5·‖y_Λ − ŷ_Λ‖₂ / ‖y_Λ‖₂ + 0.5·‖y_Λ − ŷ_Λ‖₁ / ‖y_Λ‖₁`` per sample, then the batch mean. The norms run over
the real and imaginary parts of every coil and location of Λ, so the value does not change with ρ, R or the
number of zeros in the tensor. No image target and no sensitivity maps enter the loss.

Tensor contract: ``pred = (image, kspace)`` as the network returns it (``kspace`` ``(B, C, H, W)`` complex, the
centre frame); ``target`` a mapping with ``kspace_loss`` ``(B, C, H, W)`` complex (y on Λ), ``loss_mask``
``(B, 1, H, W)`` (Λ) and optionally ``loss_weight`` ``(B, 1, H, W)`` (Millard–Chiew, applied to both residual and
reference as the SSDU normalisation requires).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from bundle.losses.hypercmr import TrainerLoss

__all__ = ["masked_kspace_errors", "ssdu_loss", "SSDULoss"]


def masked_kspace_errors(
    k_pred: torch.Tensor, k_true: torch.Tensor, loss_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-sample ``(B,)`` ratios on the mask: ``l2`` = ‖r‖₂/‖y‖₂, ``l1`` = ‖r‖₁/‖y‖₁, ``nmse`` = ‖r‖₂²/‖y‖₂².

    ``k_pred``, ``k_true`` ``(B, C, H, W)`` complex; ``loss_mask`` (and ``weight``) broadcastable to them.
    A sample whose reference is zero on the mask gives 0 (nothing to score), not NaN.
    """
    m = loss_mask.to(torch.float32)
    if weight is not None:
        m = m * weight.to(torch.float32)
    r = torch.view_as_real((k_pred.to(torch.complex64) - k_true.to(torch.complex64)) * m)
    y = torch.view_as_real(k_true.to(torch.complex64) * m)
    dims = tuple(range(1, r.dim()))
    r2, y2 = r.square().sum(dims), y.square().sum(dims)
    r1, y1 = r.abs().sum(dims), y.abs().sum(dims)

    def ratio(a, b):
        ok = b > 0
        return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))

    return {"l2": ratio(r2.sqrt(), y2.sqrt()), "l1": ratio(r1, y1), "nmse": ratio(r2, y2)}


def ssdu_loss(
    k_pred: torch.Tensor, k_true: torch.Tensor, loss_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch mean of ``0.5·l2 + 0.5·l1`` (:func:`masked_kspace_errors`); 0-dim."""
    e = masked_kspace_errors(k_pred, k_true, loss_mask, weight)
    return (0.5 * e["l2"] + 0.5 * e["l1"]).mean()


class SSDULoss(nn.Module):
    """SSDU k-space loss for ``SupervisedTrainer`` (through :meth:`for_trainer`).

    Args:
        w_l2, w_l1: weights of the two normalised terms (SSDU: 0.5 each).
        weighted: use the batch's ``loss_weight`` (Millard–Chiew) when present.

    ``forward(pred, target) -> (total, {"l2", "l1"})``, the weighted, detached terms summing to ``total``.
    """

    def __init__(self, w_l2: float = 0.5, w_l1: float = 0.5, weighted: bool = True):
        super().__init__()
        if w_l2 < 0 or w_l1 < 0 or not (w_l2 or w_l1):
            raise ValueError(f"w_l2 and w_l1 must be >= 0 and not both 0, got {w_l2}, {w_l1}")
        self.w_l2, self.w_l1, self.weighted = float(w_l2), float(w_l1), bool(weighted)

    def for_trainer(self) -> TrainerLoss:
        return TrainerLoss(self)

    def forward(self, pred, target: Mapping) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        k_pred = pred[1] if isinstance(pred, (tuple, list)) else pred
        if "kspace_loss" not in target or "loss_mask" not in target:
            raise KeyError("SSDULoss needs the batch's kspace_loss and loss_mask (add bundle.transforms.SSDUSplitd)")
        weight = target.get("loss_weight") if self.weighted else None
        with torch.autocast(device_type=k_pred.device.type, enabled=False):
            e = masked_kspace_errors(k_pred, target["kspace_loss"], target["loss_mask"], weight)
            terms = {"l2": self.w_l2 * e["l2"].mean(), "l1": self.w_l1 * e["l1"].mean()}
            total = terms["l2"] + terms["l1"]
        return total, {k: v.detach() for k, v in terms.items()}
