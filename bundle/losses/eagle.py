"""Eagle loss: a frequency-weighted L1 between the patch-variance maps of two images' gradients.

Three variants (``docs/design.md``, "Loss"):

* ``"hypercmr"``: the HyperCMR code, the parity target. Its "Butterworth high-pass" is ``1 − 1/(1 + (c/f)^4)``,
  which equals ``1/(1 + (f/c)^4)``: a **low-pass** in effect.
* ``"highpass"``: what the HyperCMR paper describes, ``1/(1 + (c/f)^4)``.
* ``"gaussian"``: the original EAGLE loss (CT paper), ``1 − exp(−(f − c)²/2)`` with no ε, no padding, no z-score.

Inputs are ``(B, 1, H, W)`` real images, already min-max normalised by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EagleLoss", "eagle_filter", "next_pow2", "patch_variance", "FILTERS", "DEFAULT_CUTOFFS"]

FILTERS = ("hypercmr", "highpass", "gaussian")

# The Gaussian variant was published with c = 0.5; the HyperCMR variants use 0.35.
DEFAULT_CUTOFFS = {"hypercmr": 0.35, "highpass": 0.35, "gaussian": 0.5}


def next_pow2(n: int) -> int:
    """Smallest power of two ``>= n`` (``1`` for ``n = 1``)."""
    return 1 << (n - 1).bit_length()


def eagle_filter(
    kind: str, h: int, w: int, cutoff: float, order: int = 2, eps: float = 1e-8, device=None
) -> torch.Tensor:
    """Frequency weight ``W(f)`` on the unshifted ``fftfreq(h) × fftfreq(w)`` grid, shape ``(h, w)`` float32.

    ``f = sqrt(fx² + fy²)`` in cycles/sample. The ε inside ``c/(f + ε)`` keeps the DC bin finite; in fp32
    ``(c/ε)^4 ≈ 1.5e30`` is still representable, so DC gets exactly 1 ("hypercmr") or 0 ("highpass").
    """
    fx = torch.fft.fftfreq(h, device=device, dtype=torch.float32)
    fy = torch.fft.fftfreq(w, device=device, dtype=torch.float32)
    f = torch.sqrt(fx[:, None].square() + fy[None, :].square())
    if kind == "gaussian":
        return 1.0 - torch.exp(-0.5 * (f - cutoff).square())
    butter = 1.0 / (1.0 + (cutoff / (f + eps)) ** (2 * order))
    if kind == "hypercmr":
        return 1.0 - butter
    if kind == "highpass":
        return butter
    raise ValueError(f"unknown Eagle filter {kind!r}; expected one of {FILTERS}")


def patch_variance(g: torch.Tensor, p: int, eps: float) -> torch.Tensor:
    """Unbiased variance (+ ``eps``) of non-overlapping ``p×p`` tiles, ``(B, C, H, W) -> (B, C, H//p, W//p)``.

    Tiles start at the top-left corner; the remainder rows/columns are dropped (what ``nn.Unfold`` with
    stride ``p`` does). The row-major tile order equals the ``nn.Unfold`` order.
    """
    b, c, hh, ww = g.shape
    h, w = hh // p, ww // p
    tiles = g[..., : h * p, : w * p].reshape(b, c, h, p, w, p).transpose(3, 4).reshape(b, c, h, w, p * p)
    return tiles.var(dim=-1, unbiased=True) + eps


def _safe_magnitude(z: torch.Tensor) -> torch.Tensor:
    """``sqrt(re² + im²)`` whose gradient is 0 (not NaN) at exact zeros, for the ε-free Gaussian variant."""
    sq = z.real.square() + z.imag.square()
    nonzero = sq > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))


class EagleLoss(nn.Module):
    """Eagle loss between two ``(B, 1, H, W)`` real images; returns a scalar tensor.

    Args:
        patch_size: tile size ``p`` for the gradient variance map (5 in HyperCMR, 3 in the EAGLE example).
        cutoff: filter cutoff ``c`` in cycles/sample. ``None`` picks the variant's published default:
            0.35 for ``"hypercmr"``/``"highpass"``, 0.5 for ``"gaussian"``.
        filter: ``"hypercmr"`` (default, parity with the reference code), ``"highpass"`` or ``"gaussian"``.
        order: Butterworth order ``n`` (exponent ``2n``); unused by ``"gaussian"``.
        pad_pow2: zero-pad the variance map bottom/right to powers of two before the FFT and keep the
            top-left ``[:h, :w]`` bins afterwards (the reference behaviour). Ignored by ``"gaussian"``.
        eps: the reference's ε (variance, magnitude, z-score, filter). ``"gaussian"`` uses no ε at all.

    The whole computation runs in fp32 with autocast disabled, on the input's device. The z-score of the
    HyperCMR variants runs over the **whole batch**, so the loss of a batch is not the mean of per-sample losses.
    """

    def __init__(
        self,
        patch_size: int = 5,
        cutoff: float | None = None,
        filter: str = "hypercmr",
        order: int = 2,
        pad_pow2: bool = True,
        eps: float = 1e-8,
    ):
        super().__init__()
        if filter not in FILTERS:
            raise ValueError(f"unknown Eagle filter {filter!r}; expected one of {FILTERS}")
        if patch_size < 2:
            raise ValueError(f"patch_size must be >= 2 (a variance needs two samples), got {patch_size}")
        self.patch_size = int(patch_size)
        self.filter = filter
        self.cutoff = float(DEFAULT_CUTOFFS[filter] if cutoff is None else cutoff)
        self.order = int(order)
        self.pad_pow2 = bool(pad_pow2)
        self.eps = float(eps)
        kx = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]])
        # Buffers, not parameters: they move with .to() and never reach an optimiser. No 1/32 scaling (parity).
        self.register_buffer("kernel_x", kx.view(1, 1, 3, 3), persistent=False)
        self.register_buffer("kernel_y", kx.t().contiguous().view(1, 1, 3, 3), persistent=False)

    def extra_repr(self) -> str:
        return f"filter={self.filter!r}, patch_size={self.patch_size}, cutoff={self.cutoff}, order={self.order}"

    def weights(self, h: int, w: int, device=None) -> torch.Tensor:
        """The frequency weight grid ``(h, w)`` this loss applies to an ``h×w`` FFT (before any padding)."""
        return eagle_filter(self.filter, h, w, self.cutoff, self.order, self.eps, device=device)

    def _frequency_term(self, vp: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
        """Frequency term ``F(Vp, Vt)`` of two ``(B, 1, h, w)`` variance maps.

        Pad to powers of two, FFT, z-score over the batch, weight, L1 on the top-left ``[:h, :w]`` block.
        """
        h, w = vp.shape[-2:]
        if self.filter == "gaussian":
            mp = _safe_magnitude(torch.fft.fft2(vp))
            mt = _safe_magnitude(torch.fft.fft2(vt))
            wgt = self.weights(h, w, device=vp.device)
            return (wgt * mp - wgt * mt).abs().mean()
        hp, wp = (next_pow2(h), next_pow2(w)) if self.pad_pow2 else (h, w)
        wgt = self.weights(hp, wp, device=vp.device)
        terms = []
        for v in (vp, vt):
            z = torch.fft.fft2(F.pad(v, (0, wp - w, 0, hp - h)))
            a = torch.sqrt(z.real.square() + z.imag.square() + self.eps)
            # z-score over every element of the batch tensor, pred and target separately (reference behaviour).
            a = (a - a.mean()) / (a.std(unbiased=True) + self.eps)
            terms.append(wgt * a)
        # Top-left block of the padded grid: low positive frequencies plus some wrapped negative ones.
        return (terms[0] - terms[1])[..., :h, :w].abs().mean()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``(B, 1, H, W)`` real, ``H, W >= patch_size``. Returns a 0-dim fp32 tensor."""
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 1:
            raise ValueError(
                f"EagleLoss expects two (B, 1, H, W) images, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if min(pred.shape[-2:]) < self.patch_size:
            raise ValueError(f"EagleLoss needs H, W >= patch_size={self.patch_size}, got {tuple(pred.shape[-2:])}")
        eps = 0.0 if self.filter == "gaussian" else self.eps
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = pred.float()
            target = target.float()
            total = pred.new_zeros(())
            # .to() is a no-op once the module sits on the input's device; it saves callers a forgotten .to().
            for kernel in (self.kernel_x.to(pred), self.kernel_y.to(pred)):
                vp = patch_variance(F.conv2d(pred, kernel, padding=1), self.patch_size, eps)
                vt = patch_variance(F.conv2d(target, kernel, padding=1), self.patch_size, eps)
                total = total + self._frequency_term(vp, vt)
        return total
