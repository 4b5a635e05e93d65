"""PromptMR (v1), the unrolled k-space network used unchanged by HyperCMR (``docs/design.md``, "Layouts").

Tensor contract: k-space is complex64 ``(B, F*C, H, W)`` with frame-major channels (``channel = f*C + c``), H the
readout and W the undersampled phase-encode axis; the centre frame is ``F // 2``. Masks are bool and broadcast
per frame as ``(B, Fm, 1, Hm, W)`` against k-space viewed as ``(B, F, C, H, W)``, so frames are never copied
across coils.

Precision: FFTs, coil combination, data consistency and RSS run on complex64/float32 tensors. Under autocast only
the convolutions and matmuls inside the U-Nets are lowered (they are the only autocast-eligible ops in the model),
and NormPromptUnet casts their output back to fp32, so no explicit ``autocast(enabled=False)`` region is needed;
one would also not compile under TorchScript, which requires a constant device type for autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..mri import fft2c, ifft2c, rss
from .promptunet import NormPromptUnet
from .sensnet import SensNet

__all__ = ["PromptMR", "PromptMRCascade", "sens_expand", "sens_reduce", "frame_mask"]


def sens_expand(x: Tensor, sens: Tensor) -> Tensor:
    """``E_S``: coil-combined frames ``(B, F, H, W)`` and maps ``(B, F, C, H, W)`` -> k-space ``(B, F, C, H, W)``."""
    return fft2c(x.unsqueeze(2) * sens)


def sens_reduce(kspace: Tensor, sens: Tensor) -> Tensor:
    """``R_S`` (adjoint of ``E_S``): k-space and maps ``(B, F, C, H, W)`` -> coil-combined ``(B, F, H, W)``."""
    return (ifft2c(kspace) * sens.conj()).sum(dim=2)


def frame_mask(mask: Tensor, num_frames: int) -> Tensor:
    """Validate a sampling mask and return it as bool ``(B, Fm, Hm, W)`` with ``Fm`` in ``{1, num_frames}``.

    Accepted: ``(B, F, H, W)``, ``(B, 1, H, W)``, ``(B, F, 1, W)``, ``(B, 1, 1, W)``, real or bool, values 0/1.
    """
    if mask.dim() != 4:
        raise ValueError("mask must be 4-D (B, F|1, H|1, W), got " + str(mask.dim()) + " dims")
    if mask.shape[1] != 1 and mask.shape[1] != num_frames:
        raise ValueError("mask frame axis must be 1 or num_adj_frames, got " + str(mask.shape[1]))
    return mask.to(torch.bool)


class PromptMRCascade(nn.Module):
    """One unrolled k-space step ``k <- k - lambda * where(M, k - y, 0) - E_S(D(R_S(k)))``.

    ``kspace``, ``ref_kspace`` ``(B, F*C, H, W)`` complex64, ``mask`` bool ``(B, Fm, 1, Hm, W)``, ``sens``
    ``(B, F, C, H, W)`` complex64 -> updated k-space ``(B, F*C, H, W)``. ``model`` maps ``(B, F, H, W)`` complex
    to the same shape; ``dc_weight`` (lambda) starts at 1.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(self, kspace: Tensor, ref_kspace: Tensor, mask: Tensor, sens: Tensor) -> Tensor:
        b, f, c, h, w = sens.shape
        k = kspace.view(b, f, c, h, w)
        soft_dc = (k - ref_kspace.view(b, f, c, h, w)).masked_fill(~mask, 0.0) * self.dc_weight
        refined = sens_expand(self.model(sens_reduce(k, sens)), sens)
        return (k - soft_dc - refined).view(b, f * c, h, w)


class PromptMR(nn.Module):
    """PromptMR v1: SensNet + ``num_cascades`` k-space cascades, each with its own NormPromptUnet(2F -> 2F).

    Defaults are the HyperCMR/PromptMR paper configuration (81,528,317 parameters, 71,160,317 trainable).
    All U-Nets share one PReLU except the first CAB of each ``enc_level1`` (see :class:`PromptUnet`).

    Args:
        num_adj_frames: F, frames stacked in the channel axis; the output is frame ``F // 2``.
        n_feat0, feature_dim, prompt_dim: cascade U-Net widths; ``sens_*`` are the sensitivity U-Net's.
        len_prompt, prompt_size, n_enc_cab, n_dec_cab, n_skip_cab, n_bottleneck_cab: shared by both U-Net kinds.
        no_use_ca: drop channel attention; learnable_prompt: train the (by default frozen) prompts.
        use_checkpoint: gradient-checkpoint every cascade and every SensNet chunk while training.
        sens_chunk_size: SensNet processes at most this many coil images at once (``None``: all B*F*C).
        num_low_frequencies: Cartesian ACS width; ``None`` infers it per sample from the mask (pass 16 for
            CMRxRecon2024, since inference can overshoot on random masks).
        sens_mask_type, reference_radial_bug, radial_acs_size: radial-mask handling of :class:`SensNet`.
    """

    def __init__(
        self,
        num_cascades: int = 12,
        num_adj_frames: int = 5,
        n_feat0: int = 48,
        feature_dim: Sequence[int] = (72, 96, 120),
        prompt_dim: Sequence[int] = (24, 48, 72),
        sens_n_feat0: int = 24,
        sens_feature_dim: Sequence[int] = (36, 48, 60),
        sens_prompt_dim: Sequence[int] = (12, 24, 36),
        len_prompt: Sequence[int] = (5, 5, 5),
        prompt_size: Sequence[int] = (64, 32, 16),
        n_enc_cab: Sequence[int] = (2, 3, 3),
        n_dec_cab: Sequence[int] = (2, 2, 3),
        n_skip_cab: Sequence[int] = (1, 1, 1),
        n_bottleneck_cab: int = 3,
        no_use_ca: bool = False,
        learnable_prompt: bool = False,
        use_checkpoint: bool = False,
        sens_chunk_size: Optional[int] = None,
        num_low_frequencies: Optional[int] = None,
        sens_mask_type: str = "auto",
        reference_radial_bug: bool = False,
        radial_acs_size: int = 16,
    ) -> None:
        super().__init__()
        if num_adj_frames < 1:
            raise ValueError(f"num_adj_frames must be positive, got {num_adj_frames}")
        # Every constructor argument, as plain JSON/YAML values: written as network.yaml beside saved weights.
        self.network_args = {
            "num_cascades": int(num_cascades),
            "num_adj_frames": int(num_adj_frames),
            "n_feat0": int(n_feat0),
            "feature_dim": [int(v) for v in feature_dim],
            "prompt_dim": [int(v) for v in prompt_dim],
            "sens_n_feat0": int(sens_n_feat0),
            "sens_feature_dim": [int(v) for v in sens_feature_dim],
            "sens_prompt_dim": [int(v) for v in sens_prompt_dim],
            "len_prompt": [int(v) for v in len_prompt],
            "prompt_size": [int(v) for v in prompt_size],
            "n_enc_cab": [int(v) for v in n_enc_cab],
            "n_dec_cab": [int(v) for v in n_dec_cab],
            "n_skip_cab": [int(v) for v in n_skip_cab],
            "n_bottleneck_cab": int(n_bottleneck_cab),
            "no_use_ca": bool(no_use_ca),
            "learnable_prompt": bool(learnable_prompt),
            "use_checkpoint": bool(use_checkpoint),
            "sens_chunk_size": None if sens_chunk_size is None else int(sens_chunk_size),
            "num_low_frequencies": None if num_low_frequencies is None else int(num_low_frequencies),
            "sens_mask_type": str(sens_mask_type),
            "reference_radial_bug": bool(reference_radial_bug),
            "radial_acs_size": int(radial_acs_size),
        }
        self.num_adj_frames = num_adj_frames
        self.use_checkpoint = use_checkpoint
        self.num_low_frequencies = num_low_frequencies
        # Created once and handed to every U-Net, but not registered here, so it is not an extra state-dict key.
        act = nn.PReLU()
        shared = dict(
            len_prompt=len_prompt,
            prompt_size=prompt_size,
            n_enc_cab=n_enc_cab,
            n_dec_cab=n_dec_cab,
            n_skip_cab=n_skip_cab,
            n_bottleneck_cab=n_bottleneck_cab,
            no_use_ca=no_use_ca,
            learnable_prompt=learnable_prompt,
            act=act,
        )
        self.sens_net = SensNet(
            num_adj_frames,
            n_feat0=sens_n_feat0,
            feature_dim=sens_feature_dim,
            prompt_dim=sens_prompt_dim,
            mask_type=sens_mask_type,
            reference_radial_bug=reference_radial_bug,
            radial_acs_size=radial_acs_size,
            chunk_size=sens_chunk_size,
            use_checkpoint=use_checkpoint,
            **shared,
        )
        self.cascades = nn.ModuleList(
            [
                PromptMRCascade(
                    NormPromptUnet(
                        2 * num_adj_frames,
                        2 * num_adj_frames,
                        n_feat0=n_feat0,
                        feature_dim=feature_dim,
                        prompt_dim=prompt_dim,
                        **shared,
                    )
                )
                for _ in range(num_cascades)
            ]
        )

    __jit_ignored_attributes__ = ["network_args"]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; with ``strict``, a checkpoint of another architecture raises one
        :class:`~bundle.errors.CheckpointMismatchError` that names the differing arguments, instead of
        PyTorch's list of every mismatching tensor."""
        if strict:
            from .pretrained import check_state_dict

            check_state_dict(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(
        self,
        masked_kspace: Tensor,
        mask: Tensor,
        num_low_frequencies: Optional[int] = None,
        is_radial: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        """Reconstruct the centre frame.

        Args:
            masked_kspace: ``(B, F*C, H, W)`` complex, frame-major; C is inferred.
            mask: ``(B, F|1, H|1, W)`` real or bool sampling mask, per sample.
            num_low_frequencies: Cartesian ACS width for this call; ``None`` uses the constructor's value.
            is_radial: optional ``(B,)`` bool from metadata, overriding SensNet's mask-type rule.

        Returns:
            ``image`` ``(B, 1, H, W)`` float32, the RSS magnitude of the centre frame, and ``kspace``
            ``(B, C, H, W)`` complex64, the centre frame's k-space after the last cascade.
        """
        b, fc, h, w = masked_kspace.shape
        f = self.num_adj_frames
        if fc % f != 0:
            raise ValueError("channels (" + str(fc) + ") must be a multiple of num_adj_frames (" + str(f) + ")")
        c = fc // f
        ref_kspace = masked_kspace.to(torch.complex64).contiguous()
        mask = frame_mask(mask, f)
        n_low = num_low_frequencies if num_low_frequencies is not None else self.num_low_frequencies

        sens = self.sens_net(ref_kspace, mask, n_low, is_radial).view(b, f, c, h, w)
        mask5 = mask.unsqueeze(2)
        kspace = ref_kspace
        for cascade in self.cascades:
            if torch.jit.is_scripting() or not (self.training and self.use_checkpoint):
                kspace = cascade(kspace, ref_kspace, mask5, sens)
            else:
                kspace = checkpoint(cascade, kspace, ref_kspace, mask5, sens, use_reentrant=False)

        centre = kspace.view(b, f, c, h, w)[:, f // 2].contiguous()
        image = rss(ifft2c(centre), dim=1).unsqueeze(1)
        return image, centre
