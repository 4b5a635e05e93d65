"""Training SSIM ``SSIM_g``: the ``pytorch_msssim.ssim`` defaults (``docs/design.md``, "Loss").

Gaussian window 11, σ = 1.5, K = (0.01, 0.03), separable **valid** filtering (no padding), mean of the SSIM
map. This is not the challenge SSIM (7×7 uniform window, skimage), which lives in :mod:`bundle.metrics`.

MONAI's ``monai.metrics.regression.compute_ssim_and_cs`` computes the same SSIM map (per-sample values agree to
about 1.2e-7) but filters with a full 11×11 kernel; the two 1-D passes here are 2.5-4.5x faster for forward plus
backward (one CPU thread: 13 ms against 61 ms on a 171×123 ROI, 385 ms against 985 ms for two 512×246 images),
and the loss runs at every training step. That speed is the only reason this is not MONAI's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim_gaussian"]


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps centred on ``size // 2``, shape ``(size,)`` float32."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-coords.square() / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Valid separable filtering of ``(B, C, H, W)`` -> ``(B, C, H − k + 1, W − k + 1)``, per channel."""
    c = x.shape[1]
    k = win.numel()
    x = F.conv2d(x, win.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, win.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_gaussian(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
) -> torch.Tensor:
    """SSIM of two ``(B, C, H, W)`` images with ``H, W >= win_size``; symmetric in ``x`` and ``y``.

    Returns a 0-dim tensor (``reduction="mean"``: mean over batch and channels) or ``(B,)``
    (``reduction="none"``: per-sample mean over channels). Computed in fp32 with autocast disabled.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim_gaussian expects two (B, C, H, W) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim_gaussian needs H, W >= win_size={win_size}, got {tuple(x.shape[-2:])}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        y = y.float()
        win = gaussian_window(win_size, sigma, device=x.device)
        c1 = (k1 * data_range) ** 2
        c2 = (k2 * data_range) ** 2
        mu_x, mu_y = _filter(x, win), _filter(y, win)
        # Population (biased) local moments, as pytorch_msssim: no N/(N-1) compensation.
        var_x = _filter(x * x, win) - mu_x.square()
        var_y = _filter(y * y, win) - mu_y.square()
        cov = _filter(x * y, win) - mu_x * mu_y
        cs = (2 * cov + c2) / (var_x + var_y + c2)
        ssim_map = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1) * cs
        per_sample = ssim_map.flatten(2).mean(-1).mean(-1)
    return per_sample.mean() if reduction == "mean" else per_sample
