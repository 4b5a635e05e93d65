"""PromptMR (v1), the unrolled k-space network used unchanged by HyperCMR (``docs/design.md``, "Layouts"), and,
as options of the same class, the PromptMR+ extras (image-domain cascades, adaptive input, decoder history,
adjacent-frame sensitivities; ``docs/promptmr_plus.md``).

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
from .architecture import check_state_dict, upgrade_state_dict
from .promptunet import NormPromptUnet
from .sensnet import SensNet

__all__ = ["PromptMR", "PromptMRCascade", "PromptMRPlusCascade", "sens_expand", "sens_reduce", "frame_mask"]

MODEL_VERSIONS = ("v1", "plus")
#: Where the Cartesian ACS width of a call comes from (``docs/design.md``, "ACS width: where it comes from").
ACS_SOURCES = ("item", "network", "mask")


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


class PromptMRPlusCascade(nn.Module):
    """One PromptMR+ image-domain step ``x <- x - lambda * (A^H A x - x0) - D(x, buffer)``.

    ``A^H A x = R_S(where(M, E_S(x), 0))`` is the normal operator of the masked multi-coil forward model, so
    ``A^H A x - x0`` is the gradient of the data term (``x0 = R_S(y)``).

    ``x``, ``x0``, ``latent`` ``(B, F, H, W)`` complex64; ``mask`` bool ``(B, Fm, 1, Hm, W)``; ``sens``
    ``(B, F, C, H, W)`` complex64; ``history`` ``[]`` or the three decoder-history tensors of the previous cascade
    (:meth:`PromptUnet.forward_history`). Returns ``(x, latent, history)`` for the next cascade.

    With ``adaptive_input`` the denoiser sees ``cat[x, A^H A x, latent, x0, A^H A x - x0]`` (5F complex channels)
    and returns 5F: the first F are the update and the third group of F is the next ``latent``. Without it the
    denoiser maps ``x`` (F channels) to the update and ``latent`` is passed through unchanged.
    """

    # A TorchScript constant, so scripting compiles only the branch this cascade uses.
    __constants__ = ["adaptive_input"]

    def __init__(self, model: NormPromptUnet, adaptive_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.adaptive_input = adaptive_input
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self, x: Tensor, x0: Tensor, latent: Tensor, mask: Tensor, sens: Tensor, history: list[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        f = x.shape[1]
        normal = sens_reduce(sens_expand(x, sens).masked_fill(~mask, 0.0), sens)
        grad = normal - x0
        if self.adaptive_input:
            out, history = self.model.forward_history(torch.cat([x, normal, latent, x0, grad], dim=1), history)
            latent = out[:, 2 * f : 3 * f]
        else:
            out, history = self.model.forward_history(x, history)
        return x - self.dc_weight * grad - out[:, :f], latent, history


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
        num_low_frequencies: the configured Cartesian ACS width; ``None`` infers it per sample from the mask.
        acs_source: where the ACS width of a call comes from (``docs/design.md``, "ACS width: where it comes
            from"): ``"item"`` the data item's width (the ``acs_width`` the batch passes: 16 in CMRxRecon2024, 24
            in 2023, 20 in 2025), else ``num_low_frequencies``; ``"network"`` always ``num_low_frequencies``;
            ``"mask"`` inferred from each sample's mask (the published PromptMR v1 and HyperCMR pipelines).
            ``None`` (the default) means ``"item"`` when ``num_low_frequencies`` is set (what the bundle's configs
            train with), else ``"mask"``; the resolved value is what :attr:`network_args` records.
        sens_mask_type, reference_radial_bug, radial_acs_size: radial-mask handling of :class:`SensNet`.
        model_version: ``"v1"`` (k-space cascades, above) or ``"plus"`` (PromptMR+ image-domain cascades,
            :class:`PromptMRPlusCascade`).
        adaptive_input, n_buffer: PromptMR+ adaptive input: the denoiser also sees a 4-image buffer (``n_buffer``
            must be 4) and carries a latent image between cascades. Needs ``model_version="plus"``.
        n_history: PromptMR+ decoder history: each decoder level mixes in its inputs of the last ``n_history``
            cascades (0: off). Needs ``model_version="plus"``.
        use_sens_adj: PromptMR+ adjacent-frame sensitivity estimation (one SensNet item per coil, all frames).

    With every PromptMR+ option off (the defaults) the network, its state-dict keys and its outputs are PromptMR
    v1's. The PromptMR+ 2024 settings (``model_version="plus"``, ``adaptive_input=True``, ``n_buffer=4``,
    ``n_history=11``, ``use_sens_adj=True``, 12 cascades) have 92,859,005 parameters, 82,491,005 trainable.
    """

    # A TorchScript constant (a bool: string comparisons are not folded), so scripting compiles only the
    # cascade loop of this version.
    __constants__ = ["image_domain"]

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
        acs_source: Optional[str] = None,
        sens_mask_type: str = "auto",
        reference_radial_bug: bool = False,
        radial_acs_size: int = 16,
        model_version: str = "v1",
        adaptive_input: bool = False,
        n_buffer: int = 4,
        n_history: int = 0,
        use_sens_adj: bool = False,
    ) -> None:
        super().__init__()
        if num_adj_frames < 1:
            raise ValueError(f"num_adj_frames must be positive, got {num_adj_frames}")
        if model_version not in MODEL_VERSIONS:
            raise ValueError(f"model_version must be one of {MODEL_VERSIONS}, got {model_version!r}")
        if (adaptive_input or n_history) and model_version != "plus":
            raise ValueError("adaptive_input and n_history are PromptMR+ options: they need model_version='plus'")
        if adaptive_input and n_buffer != 4:
            raise ValueError(
                f"n_buffer must be 4 with adaptive_input (A^H A x, latent, x0, A^H A x - x0), got {n_buffer}"
            )
        if n_history < 0:
            raise ValueError(f"n_history must be >= 0, got {n_history}")
        if acs_source is None:
            acs_source = "item" if num_low_frequencies is not None else "mask"
        if acs_source not in ACS_SOURCES:
            raise ValueError(f"acs_source must be one of {ACS_SOURCES}, got {acs_source!r}")
        if acs_source == "network" and num_low_frequencies is None:
            raise ValueError("acs_source 'network' needs num_low_frequencies (the fixed ACS width); got None")
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
            "acs_source": str(acs_source),
            "sens_mask_type": str(sens_mask_type),
            "reference_radial_bug": bool(reference_radial_bug),
            "radial_acs_size": int(radial_acs_size),
            "model_version": str(model_version),
            "adaptive_input": bool(adaptive_input),
            "n_buffer": int(n_buffer),
            "n_history": int(n_history),
            "use_sens_adj": bool(use_sens_adj),
        }
        self.num_adj_frames = num_adj_frames
        self.use_checkpoint = use_checkpoint
        self.num_low_frequencies = num_low_frequencies
        self.acs_source = str(acs_source)
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
            use_sens_adj=use_sens_adj,
            **shared,
        )
        self.image_domain = model_version == "plus"
        if not self.image_domain:
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
        else:
            # The denoiser sees x plus the 4-image buffer: 5F complex = 10F real channels in and out.
            chans = 2 * num_adj_frames * (1 + n_buffer if adaptive_input else 1)
            self.cascades = nn.ModuleList(
                [
                    PromptMRPlusCascade(
                        NormPromptUnet(
                            chans,
                            chans,
                            n_feat0=n_feat0,
                            feature_dim=feature_dim,
                            prompt_dim=prompt_dim,
                            n_history=n_history,
                            **shared,
                        ),
                        adaptive_input,
                    )
                    for _ in range(num_cascades)
                ]
            )

    __jit_ignored_attributes__ = ["network_args"]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; with ``strict``, a checkpoint of another architecture raises one
        :class:`~bundle.errors.CheckpointMismatchError` that names the differing arguments, instead of
        PyTorch's list of every mismatching tensor. PromptMR+ momentum keys of older bundle checkpoints
        (``momentum.conv.*``, ``momentum.cab.*``) are mapped to the reference's names first, with a log line."""
        state_dict = upgrade_state_dict(state_dict)
        if strict:
            check_state_dict(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def acs_width(self, num_low_frequencies: Optional[int] = None, acs_width: Optional[int] = None) -> Optional[int]:
        """The Cartesian ACS width of one call; ``None`` means inferred per sample from the mask.

        An explicit ``num_low_frequencies`` (a direct caller's override) wins. Otherwise :attr:`acs_source`
        decides: ``"item"`` takes ``acs_width`` (the batch items' width), falling back to the configured
        ``num_low_frequencies``; ``"network"`` takes the configured width; ``"mask"`` gives ``None``.
        """
        if num_low_frequencies is not None:
            return num_low_frequencies
        if self.acs_source == "mask":
            return None
        if self.acs_source == "item" and acs_width is not None:
            return acs_width
        return self.num_low_frequencies

    def forward(
        self,
        masked_kspace: Tensor,
        mask: Tensor,
        num_low_frequencies: Optional[int] = None,
        is_radial: Optional[Tensor] = None,
        acs_width: Optional[int] = None,
    ) -> tuple[Tensor, Tensor]:
        """Reconstruct the centre frame.

        Args:
            masked_kspace: ``(B, F*C, H, W)`` complex, frame-major; C is inferred.
            mask: ``(B, F|1, H|1, W)`` real or bool sampling mask, per sample.
            num_low_frequencies: Cartesian ACS width for this call, overriding everything; ``None``: the
                width :meth:`acs_width` chooses.
            is_radial: optional ``(B,)`` bool from metadata, overriding SensNet's mask-type rule.
            acs_width: the ACS width the data items carry (``PrepareReconBatch`` passes it); used only with
                ``acs_source="item"``.

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
        n_low = self.acs_width(num_low_frequencies, acs_width)

        sens = self.sens_net(ref_kspace, mask, n_low, is_radial).view(b, f, c, h, w)
        mask5 = mask.unsqueeze(2)
        if self.image_domain:
            return self._forward_plus(ref_kspace.view(b, f, c, h, w), mask5, sens)
        kspace = ref_kspace
        for cascade in self.cascades:
            if torch.jit.is_scripting() or not (self.training and self.use_checkpoint):
                kspace = cascade(kspace, ref_kspace, mask5, sens)
            else:
                kspace = checkpoint(cascade, kspace, ref_kspace, mask5, sens, use_reentrant=False)

        centre = kspace.view(b, f, c, h, w)[:, f // 2].contiguous()
        image = rss(ifft2c(centre), dim=1).unsqueeze(1)
        return image, centre

    def _forward_plus(self, ref_kspace: Tensor, mask: Tensor, sens: Tensor) -> tuple[Tensor, Tensor]:
        """PromptMR+ cascades in the image domain: ``ref_kspace``, ``sens`` ``(B, F, C, H, W)``, ``mask``
        ``(B, Fm, 1, Hm, W)`` -> ``(image (B, 1, H, W), centre k-space (B, C, H, W))``."""
        f = self.num_adj_frames
        x0 = sens_reduce(ref_kspace, sens)
        x, latent = x0, x0
        history: list[Tensor] = []
        for cascade in self.cascades:
            if torch.jit.is_scripting() or not (self.training and self.use_checkpoint):
                x, latent, history = cascade(x, x0, latent, mask, sens, history)
            else:
                x, latent, history = checkpoint(cascade, x, x0, latent, mask, sens, history, use_reentrant=False)
        # Maps have unit RSS per frame, so |x_c| = RSS_c |x_c S_c|; the coil images also give the k-space output.
        coil_images = x[:, f // 2].unsqueeze(1) * sens[:, f // 2]
        return rss(coil_images, dim=1).unsqueeze(1), fft2c(coil_images)
