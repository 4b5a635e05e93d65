"""Coil-sensitivity estimation for PromptMR (v1 / HyperCMR form, and PromptMR+'s adjacent-frame form).

``docs/design.md``, "Inferred ACS width" and "Radial ACS", explains the two reference rules kept here.

The auto-calibration (ACS) region of the undersampled k-space is transformed to coil images; each coil image of
each frame is refined by a NormPromptUnet(2 -> 2) as a separate item, and the maps of every frame are normalised
to unit root-sum-of-squares over coils.

Everything is vectorised over the batch: each sample gets its own ACS width and its own Cartesian/radial decision,
computed on the device without host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..mri import centered_window, ifft2c, is_cartesian_mask, rss
from .promptunet import NormPromptUnet

__all__ = ["SensNet", "infer_num_low_frequencies", "cartesian_acs_columns", "is_cartesian_mask"]

_MASK_TYPES = ("auto", "cartesian", "radial")


def infer_num_low_frequencies(line: Tensor) -> Tensor:
    """ACS width per sample from a ky sampling line ``(B, W)`` bool -> ``(B,)`` int64.

    Counts the consecutive sampled lines going down from ``c - 1`` and up from ``c = W // 2`` and returns
    ``max(2 * min(left, right), 1)``: the reference rule, which can exceed 16 on random masks.
    """
    line = line.to(torch.long)
    c = line.shape[-1] // 2
    # cumprod stays 1 while the run of sampled lines is unbroken, so its sum is the run length.
    right = line[:, c:].cumprod(dim=1).sum(dim=1)
    left = line[:, :c].flip(dims=[1]).cumprod(dim=1).sum(dim=1)
    return torch.clamp(2 * torch.minimum(left, right), min=1)


def cartesian_acs_columns(mask: Tensor, num_low_frequencies: Optional[int] = None) -> Tensor:
    """Bool ky columns ``[pad, pad + n_low)`` kept for sensitivity estimation, ``(B, 1, 1, W)``.

    ``mask`` is ``(B, Fm, Hm, W)`` bool; with ``num_low_frequencies=None`` the width is inferred per sample from
    ``mask[:, 0, 0, :]``. ``pad = (W - n_low + 1) // 2`` as in the reference (for odd W this is one column right of
    MATLAB's centring).
    """
    b, w = mask.shape[0], mask.shape[-1]
    if num_low_frequencies is None:
        n_low = infer_num_low_frequencies(mask[:, 0, 0, :])
    else:
        n_low = torch.full((b,), num_low_frequencies, dtype=torch.long, device=mask.device)
    pad = torch.div(w - n_low + 1, 2, rounding_mode="floor").unsqueeze(1)
    cols = torch.arange(w, device=mask.device).unsqueeze(0)
    return ((cols >= pad) & (cols < pad + n_low.unsqueeze(1))).view(b, 1, 1, w)


class SensNet(nn.Module):
    """Sensitivity maps from the ACS region of multi-frame, multi-coil k-space.

    ``masked_kspace (B, F*C, H, W)`` complex, frame-major channels, plus a bool mask ``(B, Fm, Hm, W)`` with
    ``Fm in {1, F}`` and ``Hm in {1, H}`` -> maps ``(B, F*C, H, W)`` complex64 with unit RSS over coils per frame.

    Args:
        num_adj_frames: F, the number of frames stacked in the channel axis.
        mask_type: ``"cartesian"`` (ACS = central ky columns), ``"radial"`` (ACS = central
            ``radial_acs_size``-square block of the sampled k-space) or ``"auto"`` (per sample: Cartesian iff the
            central ``radial_acs_size`` ky columns are fully sampled). A per-sample ``is_radial`` passed to
            :meth:`forward` overrides it.
        reference_radial_bug: reproduce HyperCMR, whose radial branch is a no-op: radial samples use the whole
            undersampled k-space.
        radial_acs_size: side of the radial ACS block and width of the auto-detection band (16 in CMRxRecon).
        num_low_frequencies: default Cartesian ACS width; ``None`` infers it per sample from the mask.
        chunk_size: run the U-Net on at most this many items at a time (``None``: all): B*F*C coil images, or
            B*C coils with ``use_sens_adj``. 1 is the reference's per-coil memory option.
        use_checkpoint: gradient-checkpoint each U-Net chunk while training.
        act: activation shared by the U-Net's CABs (see :class:`PromptUnet`).
        use_sens_adj: PromptMR+ adjacent-frame estimation: per coil, the F frames go through one
            NormPromptUnet(2F -> 2F) together (normalised over all F frames) instead of F separate 2 -> 2 items.

    The per-frame RSS normalisation has no eps (as the reference): a pixel where every coil map is exactly zero
    gives NaN. The U-Net output is ``x*std + mean`` with nonzero statistics, so this does not happen in practice,
    but an all-zero coil (zero std) would make that coil's map NaN.
    """

    def __init__(
        self,
        num_adj_frames: int = 5,
        n_feat0: int = 24,
        feature_dim: Sequence[int] = (36, 48, 60),
        prompt_dim: Sequence[int] = (12, 24, 36),
        len_prompt: Sequence[int] = (5, 5, 5),
        prompt_size: Sequence[int] = (64, 32, 16),
        n_enc_cab: Sequence[int] = (2, 3, 3),
        n_dec_cab: Sequence[int] = (2, 2, 3),
        n_skip_cab: Sequence[int] = (1, 1, 1),
        n_bottleneck_cab: int = 3,
        no_use_ca: bool = False,
        learnable_prompt: bool = False,
        act: Optional[nn.Module] = None,
        mask_type: str = "auto",
        reference_radial_bug: bool = False,
        radial_acs_size: int = 16,
        num_low_frequencies: Optional[int] = None,
        chunk_size: Optional[int] = None,
        use_checkpoint: bool = False,
        use_sens_adj: bool = False,
    ) -> None:
        super().__init__()
        if mask_type not in _MASK_TYPES:
            raise ValueError(f"mask_type must be one of {_MASK_TYPES}, got {mask_type!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, got {chunk_size}")
        self.num_adj_frames = num_adj_frames
        self.mask_type = mask_type
        self.reference_radial_bug = reference_radial_bug
        self.radial_acs_size = radial_acs_size
        self.num_low_frequencies = num_low_frequencies
        self.chunk_size = chunk_size
        self.use_checkpoint = use_checkpoint
        self.use_sens_adj = use_sens_adj
        # Adjacent-frame form: one item per coil holding all F frames, so 2F real channels in and out.
        unet_chans = 2 * num_adj_frames if use_sens_adj else 2
        self.norm_unet = NormPromptUnet(
            unet_chans,
            unet_chans,
            n_feat0=n_feat0,
            feature_dim=feature_dim,
            prompt_dim=prompt_dim,
            len_prompt=len_prompt,
            prompt_size=prompt_size,
            n_enc_cab=n_enc_cab,
            n_dec_cab=n_dec_cab,
            n_skip_cab=n_skip_cab,
            n_bottleneck_cab=n_bottleneck_cab,
            act=act,
            no_use_ca=no_use_ca,
            learnable_prompt=learnable_prompt,
        )

    def acs_mask(
        self, mask: Tensor, height: int, num_low_frequencies: Optional[int] = None, is_radial: Optional[Tensor] = None
    ) -> Tensor:
        """Bool k-space region used for estimation, broadcastable to ``(B, Fm, H, W)``.

        ``mask`` is ``(B, Fm, Hm, W)`` bool; ``is_radial`` is an optional ``(B,)`` bool.
        """
        n_low = num_low_frequencies if num_low_frequencies is not None else self.num_low_frequencies
        b, w = mask.shape[0], mask.shape[-1]
        if is_radial is not None:
            radial_samples = is_radial.to(torch.bool).view(-1, 1, 1, 1)
        elif self.mask_type == "cartesian":
            return cartesian_acs_columns(mask, n_low)
        elif self.mask_type == "radial":
            radial_samples = torch.ones(b, 1, 1, 1, dtype=torch.bool, device=mask.device)
        else:
            radial_samples = ~is_cartesian_mask(mask, self.radial_acs_size).view(b, 1, 1, 1)
        if self.reference_radial_bug:
            radial = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=mask.device)
        else:
            rows = centered_window(height, self.radial_acs_size, mask.device)
            cols = centered_window(w, self.radial_acs_size, mask.device)
            radial = mask & (rows.unsqueeze(1) & cols.unsqueeze(0))
        return torch.where(radial_samples, radial, cartesian_acs_columns(mask, n_low))

    def forward(
        self,
        masked_kspace: Tensor,
        mask: Tensor,
        num_low_frequencies: Optional[int] = None,
        is_radial: Optional[Tensor] = None,
    ) -> Tensor:
        """``masked_kspace (B, F*C, H, W)`` complex, ``mask (B, Fm, Hm, W)`` -> maps ``(B, F*C, H, W)`` complex64.

        ``num_low_frequencies`` overrides the constructor's ACS width; ``is_radial`` ``(B,)`` bool overrides
        ``mask_type`` per sample.
        """
        b, fc, h, w = masked_kspace.shape
        f = self.num_adj_frames
        c = fc // f
        keep = self.acs_mask(mask.to(torch.bool), h, num_low_frequencies, is_radial)
        acs = masked_kspace.to(torch.complex64).reshape(b, f, c, h, w).masked_fill(~keep.unsqueeze(2), 0.0)
        images = ifft2c(acs)
        if self.use_sens_adj:
            # (B, F, C, H, W) -> (B*C, F, H, W): each coil's F frames form one item, normalised together.
            items = images.transpose(1, 2).reshape(b * c, f, h, w)
            sens = self._refine(items).view(b, c, f, h, w).transpose(1, 2)
        else:
            sens = self._refine(images.view(b * f * c, 1, h, w)).view(b, f, c, h, w)
        sens = sens / rss(sens, dim=2).unsqueeze(2)
        return sens.reshape(b, fc, h, w)

    def _refine(self, images: Tensor) -> Tensor:
        """NormPromptUnet over ``(N, 1|F, H, W)`` complex items, in chunks; each item is normalised on its own."""
        n = images.shape[0]
        step = n
        if self.chunk_size is not None:
            step = min(self.chunk_size, n)
        outs: list[Tensor] = []
        for start in range(0, n, step):
            chunk = images[start : start + step]
            if torch.jit.is_scripting() or not (self.training and self.use_checkpoint):
                outs.append(self.norm_unet(chunk))
            else:
                outs.append(checkpoint(self.norm_unet, chunk, use_reentrant=False))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
