"""The HyperCMR multi-term loss as the reference code computes it (``docs/design.md``, "Loss").

``L = w_fid·L_fid + w_ssim·L_ssim + w_eagle·L_eagle + w_vgg·L_vgg + w_reg·L_reg``

Tensor contract:

* ``pred = (image, kspace)``: image ``(B, 1, H, W)`` float32, the RSS of the centre frame; kspace
  ``(B, C, H, W)`` complex64, the centre-frame k-space. ``H = nx`` (readout), ``W = ny`` (phase encode).
* ``target = {"target": (B, 1, H, W) float32, "kspace_target": (B, C, H, W) complex64}`` (or the tuple
  ``(image, kspace)``), both from the fully sampled centre frame.

Everything runs in fp32 with autocast disabled: k-space values are about 1e-3 and their squares underflow
in fp16. The loss does **not** divide by the gradient-accumulation count; MONAI's trainer does that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from bundle.losses.eagle import EagleLoss
from bundle.losses.ssim import ssim_gaussian
from bundle.losses.vgg import PerceptualLoss
from bundle.mri import crop_roi

__all__ = [
    "COMPONENTS",
    "minmax",
    "column_normalized_magnitude",
    "fidelity_loss",
    "kspace_regulariser",
    "ssim_criterion",
    "HyperCMRLoss",
    "TrainerLoss",
]

COMPONENTS = ("fidelity", "ssim", "eagle", "vgg", "reg")
FIDELITY_MODES = ("normalized_magnitude_mse", "complex_mse")


def minmax(u: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per-image min-max ``(u − min) / (max − min + eps)`` over the last two axes of ``(..., H, W)``.

    With ``eps = 0`` (reference parity) a constant image would give 0/0; it is mapped to 0 instead, with a
    zero gradient. Non-constant images are unaffected, so parity holds wherever the reference is finite.
    """
    lo = u.amin(dim=(-2, -1), keepdim=True)
    hi = u.amax(dim=(-2, -1), keepdim=True)
    denom = hi - lo + eps
    ok = denom > 0
    # Dividing by a placeholder 1 where denom == 0 keeps NaN out of the backward pass of torch.where.
    return torch.where(ok, (u - lo) / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(u))


def column_normalized_magnitude(k: torch.Tensor) -> torch.Tensor:
    """``nk(k) = |k| / (max over coil and kx of |k| + 1e-8)``: one max per ky column.

    ``k``: ``(B, C, H, W)`` complex -> ``(B, C, H, W)`` real. ``torch.abs`` of a complex tensor has a zero
    (not NaN) gradient at exact zeros.
    """
    mag = k.abs()
    return mag / (mag.amax(dim=(1, 2), keepdim=True) + 1e-8)


def fidelity_loss(k_pred: torch.Tensor, k_true: torch.Tensor, mode: str = "normalized_magnitude_mse") -> torch.Tensor:
    """``L_fid`` for ``(B, C, H, W)`` complex k-spaces.

    ``"normalized_magnitude_mse"`` (code): ``mean((nk(k̂) − nk(k))²)``. ``"complex_mse"`` (the paper taken
    literally, as a mean): ``mean(|k̂ − k|²)`` over the ``B·C·H·W`` complex elements.
    """
    if mode == "normalized_magnitude_mse":
        return (column_normalized_magnitude(k_pred) - column_normalized_magnitude(k_true)).square().mean()
    if mode == "complex_mse":
        return torch.view_as_real(k_pred - k_true).square().sum(-1).mean()
    raise ValueError(f"unknown fidelity_mode {mode!r}; expected one of {FIDELITY_MODES}")


def kspace_regulariser(k_pred: torch.Tensor, beta: float = 0.05) -> torch.Tensor:
    """``L_reg = ‖k̃‖₁ + β‖k̃‖₂`` with ``k̃ = k̂ / sqrt(H·W·2)`` for ``(B, C, H, W)`` complex ``k̂``.

    ``‖·‖₁ = Σ|re| + Σ|im|`` and ``‖·‖₂`` is the (unsquared) Frobenius norm, both over the **whole batch
    tensor**, so the term grows with B and C.
    """
    kr = torch.view_as_real(k_pred) / (k_pred.shape[-2] * k_pred.shape[-1] * 2) ** 0.5
    # vector_norm: same fp32 reduction as the reference's torch.norm, and a zero (not NaN) gradient at 0.
    return torch.linalg.vector_norm(kr, ord=1) + beta * torch.linalg.vector_norm(kr, ord=2)


def ssim_criterion(image: torch.Tensor, target: torch.Tensor, minmax_eps: float = 0.0) -> torch.Tensor:
    """Validation criterion ``1 − SSIM_g(mm(crop(x̂)), mm(crop(x)))`` for ``(B, 1, H, W)`` images, 0-dim."""
    with torch.autocast(device_type=image.device.type, enabled=False):
        p = minmax(crop_roi(image.float()), minmax_eps)
        t = minmax(crop_roi(target.float()), minmax_eps)
        return 1.0 - ssim_gaussian(p, t)


def _as_complex(k: torch.Tensor) -> torch.Tensor:
    """Complex64 view of a complex tensor or of a real one with a trailing ``(re, im)`` axis of 2."""
    if k.is_complex():
        return k.to(torch.complex64)
    if k.shape[-1] != 2:
        raise ValueError(f"k-space must be complex or have a trailing (re, im) axis of 2, got {tuple(k.shape)}")
    return torch.view_as_complex(k.float().contiguous())


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` fp32 from ``(B, 1, H, W)`` or ``(B, H, W)``."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W) or (B, H, W), got {tuple(x.shape)}")
    return x.float()


def _split_target(target) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(target, Mapping):
        return target["target"], target["kspace_target"]
    if isinstance(target, Sequence) and len(target) == 2:
        return target[0], target[1]
    raise TypeError('target must be {"target": image, "kspace_target": kspace} or a tuple (image, kspace)')


class HyperCMRLoss(nn.Module):
    """HyperCMR total loss. Defaults are the paper's weights; :meth:`code_preset` gives the code's.

    Args:
        w_fidelity, w_ssim, w_eagle, w_vgg, w_reg: term weights. A term with weight 0 is not computed and is
            reported as 0.
        fidelity_mode: ``"normalized_magnitude_mse"`` (code) or ``"complex_mse"`` (paper, literal).
        eagle_filter, eagle_patch, eagle_cutoff: the :class:`EagleLoss` variant; ``eagle_cutoff=None`` takes the
            variant's default (0.35 for ``"hypercmr"``/``"highpass"``, 0.5 for ``"gaussian"``).
        eagle_roi_weight: ``L_eagle = r·Eagle(ROI) + (1 − r)·Eagle(full image)``.
        reg_beta: β of ``L_reg``.
        minmax_eps: ε of the per-image min-max; 0 keeps parity (constant images map to 0, see :func:`minmax`).
        vgg_weights_path: local torchvision vgg19 state dict. ``None`` disables the VGG term with a WARNING.

    ``forward(pred, target) -> (total, components)``: ``total`` is a 0-dim tensor with gradients;
    ``components`` holds the **weighted**, detached terms keyed ``fidelity, ssim, eagle, vgg, reg``, which sum
    to ``total``.
    """

    def __init__(
        self,
        w_fidelity: float = 1.0,
        w_ssim: float = 1.0,
        w_eagle: float = 0.05,
        w_vgg: float = 0.1,
        w_reg: float = 0.01,
        fidelity_mode: str = "normalized_magnitude_mse",
        eagle_filter: str = "hypercmr",
        eagle_patch: int = 5,
        eagle_cutoff: float | None = None,
        eagle_roi_weight: float = 0.6,
        reg_beta: float = 0.05,
        minmax_eps: float = 0.0,
        vgg_weights_path: str | os.PathLike | None = None,
    ):
        super().__init__()
        if fidelity_mode not in FIDELITY_MODES:
            raise ValueError(f"unknown fidelity_mode {fidelity_mode!r}; expected one of {FIDELITY_MODES}")
        if not 0.0 <= eagle_roi_weight <= 1.0:
            raise ValueError(f"eagle_roi_weight must be in [0, 1], got {eagle_roi_weight}")
        self.weights = {"fidelity": w_fidelity, "ssim": w_ssim, "eagle": w_eagle, "vgg": w_vgg, "reg": w_reg}
        for name, w in self.weights.items():
            if w < 0:
                raise ValueError(f"loss weight for {name!r} must be >= 0, got {w}")
        self.fidelity_mode = fidelity_mode
        self.eagle_roi_weight = float(eagle_roi_weight)
        self.reg_beta = float(reg_beta)
        self.minmax_eps = float(minmax_eps)
        self.eagle = EagleLoss(patch_size=eagle_patch, cutoff=eagle_cutoff, filter=eagle_filter) if w_eagle else None
        # Built only when used, so a zero VGG weight neither warns nor allocates the 3.9 M conv weights.
        self.vgg = PerceptualLoss(vgg_weights_path) if w_vgg else None
        active = [n for n, w in self.weights.items() if w and (n != "vgg" or self.vgg.enabled)]
        if not active:
            raise ValueError("every HyperCMR loss term is disabled (all weights 0, or only an unloaded VGG term)")

    @classmethod
    def code_preset(cls, **overrides) -> HyperCMRLoss:
        """The reference code's weights: as the defaults but ``w_vgg = 0.01`` (the paper says 0.1)."""
        return cls(**{"w_vgg": 0.01, **overrides})

    def for_trainer(self) -> TrainerLoss:
        """Wrap this loss for ``SupervisedTrainer(loss_function=...)``; see :class:`TrainerLoss`."""
        return TrainerLoss(self)

    def extra_repr(self) -> str:
        w = ", ".join(f"w_{k}={v}" for k, v in self.weights.items())
        return f"{w}, fidelity_mode={self.fidelity_mode!r}, eagle_roi_weight={self.eagle_roi_weight}"

    def forward(self, pred, target) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``pred = (image (B,1,H,W), kspace (B,C,H,W) complex)``; ``target`` as in the module docstring."""
        img_p, k_p = pred
        img_t, k_t = _split_target(target)
        with torch.autocast(device_type=img_p.device.type, enabled=False):
            img_p, img_t = _as_image(img_p), _as_image(img_t)
            k_p, k_t = _as_complex(k_p), _as_complex(k_t)
            zero = img_p.new_zeros(())
            terms = dict.fromkeys(COMPONENTS, zero)
            w = self.weights
            if w["fidelity"]:
                terms["fidelity"] = w["fidelity"] * fidelity_loss(k_p, k_t, self.fidelity_mode)
            if w["reg"]:
                terms["reg"] = w["reg"] * kspace_regulariser(k_p, self.reg_beta)
            need_roi = w["ssim"] or (w["eagle"] and self.eagle_roi_weight) or (w["vgg"] and self.vgg.enabled)
            if need_roi:
                # Crop first, then min-max (reference order); shared by SSIM, Eagle(ROI) and VGG.
                roi_p = minmax(crop_roi(img_p), self.minmax_eps)
                roi_t = minmax(crop_roi(img_t), self.minmax_eps)
            if w["ssim"]:
                terms["ssim"] = w["ssim"] * (1.0 - ssim_gaussian(roi_p, roi_t))
            if w["eagle"]:
                r = self.eagle_roi_weight
                eagle = zero
                if r:
                    eagle = eagle + r * self.eagle(roi_p, roi_t)
                if r < 1:
                    full_p = minmax(img_p, self.minmax_eps)
                    full_t = minmax(img_t, self.minmax_eps)
                    eagle = eagle + (1.0 - r) * self.eagle(full_p, full_t)
                terms["eagle"] = w["eagle"] * eagle
            if w["vgg"] and self.vgg.enabled:
                terms["vgg"] = w["vgg"] * self.vgg(roi_p, roi_t)
            total = sum(terms.values(), zero)
        return total, {name: t.detach() for name, t in terms.items()}


class TrainerLoss(nn.Module):
    """Adapter to pass as MONAI ``SupervisedTrainer(loss_function=...)``.

    The trainer calls ``loss_function(pred, label).mean()`` and needs one tensor, so :meth:`forward` returns
    only the total and keeps the weighted components of the last call in ``self.last_components``
    (``{name: detached 0-dim tensor}``) for a logging handler. They stay tensors so logging decides when to
    synchronise with the GPU (``float(t)``).
    """

    def __init__(self, loss: HyperCMRLoss):
        super().__init__()
        self.loss = loss
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, pred, label) -> torch.Tensor:
        total, self.last_components = self.loss(pred, label)
        return total
