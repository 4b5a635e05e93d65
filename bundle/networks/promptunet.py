"""PromptUnet, the PromptMR (v1) denoiser, and NormPromptUnet, its normalising complex-valued wrapper.

Blocks, default sizes and quirks follow the reference PromptMR (``docs/design.md``, "Kept on purpose"):

* every convolution is bias-free except the stride-2 down-sampling convs and the prompt ``Linear`` layers;
* one activation module is *shared* by all channel-attention blocks (CABs) of a U-Net, and by every U-Net of a
  PromptMR model, except the first CAB of ``enc_level1``, which gets its own copy. This mirrors the reference
  (a default argument evaluated once) and is what makes the parameter counts match exactly;
* prompts are registered parameters that are frozen by default (``learnable_prompt=False``).

Memory layout: on CPU the U-Net runs in channels-last (NHWC). oneDNN's NCHW convolutions are slower, above all
on the SensNet's 50-image batches, which made the layout the largest avoidable cost in the model code of a CPU
training step (``docs/benchmarks.md``: 1.2-1.4x per step at 64x128). Only the layout changes, so results agree
with NCHW to float rounding; on CUDA the layout is left as it comes (not measured here).

Module names mirror the reference state-dict keys (``sens_net.norm_unet.unet.…``,
``cascades.{i}.model.unet.…``) so reference checkpoints can be imported.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Conv2d",
    "Momentum",
    "CALayer",
    "CAB",
    "DownBlock",
    "UpBlock",
    "SkipBlock",
    "PromptBlock",
    "PromptUnet",
    "NormPromptUnet",
    "rename_legacy_keys",
]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, on CPU, hands oneDNN its weight in channels-last layout.

    An NCHW weight makes oneDNN pick a plain-layout kernel for inputs whose layout is ambiguous (``(B, C, 1, 1)``
    in channel attention), whose NCHW output then flips the rest of the block back to NCHW. Converting the
    weight (a few KB) keeps every convolution channels-last; the gradient flows back through the copy, so the
    parameter itself, the state dict and the optimiser state keep their usual layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight
        if x.device.type == "cpu":
            weight = weight.contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, weight, self.bias)


def conv(in_chans: int, out_chans: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    """Stride-1 'same' convolution."""
    return Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=bias)


class CALayer(nn.Module):
    """Squeeze-and-excitation channel attention ``x * sigmoid(W2 relu(W1 GAP(x)))``; ``(B, C, H, W)`` real."""

    def __init__(self, channels: int, reduction: int = 4, bias: bool = False) -> None:
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"CALayer needs channels >= reduction, got {channels} and {reduction}")
        self.conv_du = nn.Sequential(
            Conv2d(channels, channels // reduction, 1, bias=bias),
            nn.ReLU(),
            Conv2d(channels // reduction, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(-2, -1), keepdim=True))


class CAB(nn.Module):
    """Channel-attention residual block ``CA(conv(act(conv(x)))) + x``; ``(B, C, H, W)`` real.

    ``act`` is used as given, not copied: passing the same module to many CABs shares its parameters.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        reduction: int = 4,
        bias: bool = False,
        act: Optional[nn.Module] = None,
        no_use_ca: bool = False,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels, kernel_size, bias),
            act if act is not None else nn.PReLU(),
            conv(channels, channels, kernel_size, bias),
        )
        self.CA = nn.Identity() if no_use_ca else CALayer(channels, reduction, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.CA(self.body(x)) + x


@dataclass(frozen=True)
class CABSpec:
    """The CAB settings one U-Net shares: kernel size, channel-attention reduction, conv bias, the activation and
    whether channel attention is off. ``act`` is one module: every CAB built from a spec shares its parameters
    (the reference's shared PReLU, ``docs/design.md`` "Kept on purpose")."""

    kernel_size: int = 3
    reduction: int = 4
    bias: bool = False
    act: nn.Module = field(default_factory=nn.PReLU)
    no_use_ca: bool = False

    def cab(self, channels: int, act: Optional[nn.Module] = None) -> CAB:
        act = act if act is not None else self.act
        return CAB(channels, self.kernel_size, self.reduction, self.bias, act, self.no_use_ca)

    def cabs(self, n: int, channels: int, first_act: Optional[nn.Module] = None) -> nn.Sequential:
        """``n`` CABs in a row; the first one uses ``first_act`` when given."""
        return nn.Sequential(*[self.cab(channels, first_act if j == 0 else None) for j in range(n)])


class DownBlock(nn.Module):
    """``n_cab`` CABs at ``in_chans`` (their output is the skip feature), then a stride-2 3x3 conv with bias.

    ``(B, Cin, H, W)`` -> ``((B, Cout, H/2, W/2), (B, Cin, H, W))``; H and W must be even.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        n_cab: int,
        cab: Optional[CABSpec] = None,
        first_act: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.encoder = (cab or CABSpec()).cabs(n_cab, in_chans, first_act)
        self.down = Conv2d(in_chans, out_chans, 3, stride=2, padding=1, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        enc = self.encoder(x)
        return self.down(enc), enc


class SkipBlock(nn.Module):
    """``n_cab`` CABs applied to an encoder skip feature (identity when ``n_cab == 0``); ``(B, C, H, W)``."""

    def __init__(self, channels: int, n_cab: int, cab: Optional[CABSpec] = None) -> None:
        super().__init__()
        # An empty Sequential is the identity, and keeps the key layout skip_attn.{j}.
        self.skip_attn = (cab or CABSpec()).cabs(n_cab, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_attn(x)


class PromptBlock(nn.Module):
    """Input-adaptive prompt: a softmax-weighted mix of ``len_prompt`` learned ``(Cp, S, S)`` prompts.

    ``(B, Cin, H, W)`` real -> ``(B, Cp, H, W)``: ``w = softmax(Linear(GAP(x)))`` over the prompts,
    ``p = sum_l w_l P_l``, bilinear resize to ``(H, W)``, then a 3x3 conv.
    """

    def __init__(
        self, prompt_dim: int, len_prompt: int, prompt_size: int, in_chans: int, learnable_prompt: bool = False
    ) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(
            torch.rand(1, len_prompt, prompt_dim, prompt_size, prompt_size), requires_grad=learnable_prompt
        )
        self.linear_layer = nn.Linear(in_chans, len_prompt)
        self.dec_conv3x3 = conv(prompt_dim, prompt_dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        _, n_prompt, dim, size, _ = self.prompt_param.shape
        weights = torch.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, L)
        # The weighted sum over prompts is one (B, L) @ (L, Cp*S*S) matmul instead of a broadcast + sum.
        prompt = (weights @ self.prompt_param.reshape(n_prompt, dim * size * size)).view(b, dim, size, size)
        prompt = F.interpolate(prompt, size=(h, w), mode="bilinear", align_corners=False)
        return self.dec_conv3x3(prompt)


class Momentum(nn.Sequential):
    """PromptMR+ decoder "momentum": mix a decoder input with the same level's inputs of earlier cascades.

    ``x (B, C, H, W)`` and ``history (B, n_history*C, H, W)`` (newest first; ``None`` in the first cascade, where
    ``x`` stands in for every earlier feature) -> ``CAB(conv1x1(cat[x, history]))`` ``(B, C, H, W)``.
    The 1x1 conv maps ``(n_history + 1) * C`` channels to C without bias; the CAB uses the shared activation.

    A two-element sequence, so its state-dict keys are the reference's: ``momentum.0.weight`` (the conv) and
    ``momentum.1.{body.0,body.2,CA.conv_du.0,CA.conv_du.2}.weight`` (the CAB). Bundle checkpoints saved before
    that rename (``momentum.conv.*``, ``momentum.cab.*``) are mapped on load (:func:`rename_legacy_keys`);
    :attr:`conv` and :attr:`cab` name the two parts.
    """

    __jit_unused_properties__ = ["conv", "cab"]

    def __init__(self, channels: int, n_history: int, cab: Optional[CABSpec] = None) -> None:
        if n_history < 1:
            raise ValueError(f"n_history must be positive, got {n_history}")
        cab = cab or CABSpec()
        super().__init__(conv(channels * (n_history + 1), channels, 1, cab.bias), cab.cab(channels))
        self.n_history = n_history

    @property
    def conv(self) -> nn.Module:
        return self[0]

    @property
    def cab(self) -> nn.Module:
        return self[1]

    def forward(self, x: Tensor, history: Optional[Tensor] = None) -> Tensor:
        if history is None:
            stacked = x.repeat(1, self.n_history + 1, 1, 1)
        else:
            stacked = torch.cat([x, history], dim=1)
        for layer in self:
            stacked = layer(stacked)
        return stacked


# Key parts of bundle checkpoints saved before Momentum took the reference's names.
_LEGACY_MOMENTUM = re.compile(r"(^|\.)momentum\.(conv|cab)\.")


def rename_legacy_keys(state_dict: Mapping) -> tuple[dict, int]:
    """Map the PromptMR+ momentum keys of older bundle checkpoints to the reference's names.

    ``...momentum.conv.<rest>`` -> ``...momentum.0.<rest>`` and ``...momentum.cab.<rest>`` ->
    ``...momentum.1.<rest>``; every other key (and the order) is kept. Returns ``(state_dict, n_renamed)``; the
    input is returned unchanged (not copied) when nothing needs renaming.
    """
    if not any(_LEGACY_MOMENTUM.search(k) for k in state_dict):
        return state_dict if isinstance(state_dict, dict) else dict(state_dict), 0
    renamed, count = {}, 0
    for key, value in state_dict.items():
        new = _LEGACY_MOMENTUM.sub(lambda m: f"{m.group(1)}momentum.{'0' if m.group(2) == 'conv' else '1'}.", key)
        count += new != key
        renamed[new] = value
    return renamed, count


class UpBlock(nn.Module):
    """Decoder level: fuse the prompt, reduce, upsample x2, add the skip feature, one final CAB.

    ``x (B, Cin, H, W)``, ``prompt (B, Cp, H, W)``, ``skip (B, Cout, 2H, 2W)`` -> ``(B, Cout, 2H, 2W)``.
    With ``n_history > 0`` (PromptMR+), ``x`` first passes through :class:`Momentum` with the level's
    ``history (B, n_history*Cin, H, W)``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        prompt_dim: int,
        n_cab: int,
        cab: Optional[CABSpec] = None,
        n_history: int = 0,
    ) -> None:
        super().__init__()
        cab = cab or CABSpec()
        bias = cab.bias
        self.fuse = cab.cabs(n_cab, in_chans + prompt_dim)
        self.reduce = conv(in_chans + prompt_dim, in_chans, 1, bias)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            conv(in_chans, out_chans, 1, bias),
        )
        self.ca = cab.cab(out_chans)
        # PromptMR+ decoder history; None (no module, no state-dict keys) for PromptMR v1.
        self.momentum = Momentum(in_chans, n_history, cab) if n_history else None

    def forward(self, x: Tensor, prompt: Tensor, skip: Tensor, history: Optional[Tensor] = None) -> Tensor:
        if self.momentum is not None:
            x = self.momentum(x, history)
        x = self.reduce(self.fuse(torch.cat([x, prompt], dim=1)))
        return self.ca(self.up(x) + skip)


class PromptUnet(nn.Module):
    """Three-level PromptMR U-Net with channel attention and prompt-conditioned decoder.

    Real ``(B, in_chans, H, W)`` -> ``(B, out_chans, H, W)``; H and W must be multiples of 8 (NormPromptUnet pads).
    Defaults are the reference cascade U-Net (6,638,610 parameters, 829,440 of them frozen prompts).

    Args:
        act: activation shared by every CAB except the first of ``enc_level1``, which gets a deep copy
            (the reference's PReLU quirk). ``None`` creates a fresh ``nn.PReLU()``; pass one module to several
            U-Nets to share it across a whole model.
        learnable_prompt: train the prompts; by default they are frozen but still registered and saved.
        n_history: PromptMR+ decoder history length (0: PromptMR v1); see :class:`Momentum` and
            :meth:`forward_history`.
    """

    def __init__(
        self,
        in_chans: int = 10,
        out_chans: int = 10,
        n_feat0: int = 48,
        feature_dim: Sequence[int] = (72, 96, 120),
        prompt_dim: Sequence[int] = (24, 48, 72),
        len_prompt: Sequence[int] = (5, 5, 5),
        prompt_size: Sequence[int] = (64, 32, 16),
        n_enc_cab: Sequence[int] = (2, 3, 3),
        n_dec_cab: Sequence[int] = (2, 2, 3),
        n_skip_cab: Sequence[int] = (1, 1, 1),
        n_bottleneck_cab: int = 3,
        kernel_size: int = 3,
        reduction: int = 4,
        act: Optional[nn.Module] = None,
        bias: bool = False,
        no_use_ca: bool = False,
        learnable_prompt: bool = False,
        n_history: int = 0,
    ) -> None:
        super().__init__()
        if n_history < 0:
            raise ValueError(f"n_history must be >= 0, got {n_history}")
        self.n_history = n_history
        for name, seq in (
            ("feature_dim", feature_dim),
            ("prompt_dim", prompt_dim),
            ("len_prompt", len_prompt),
            ("prompt_size", prompt_size),
            ("n_enc_cab", n_enc_cab),
            ("n_dec_cab", n_dec_cab),
            ("n_skip_cab", n_skip_cab),
        ):
            if len(seq) != 3:
                raise ValueError(f"{name} must have 3 entries (one per level), got {list(seq)}")
        act = act if act is not None else nn.PReLU()
        cab = CABSpec(kernel_size, reduction, bias, act, no_use_ca)
        d0, (d1, d2, d3) = n_feat0, feature_dim

        self.feat_extract = conv(in_chans, d0, kernel_size, bias)
        self.enc_level1 = DownBlock(d0, d1, n_enc_cab[0], cab, first_act=copy.deepcopy(act))
        self.enc_level2 = DownBlock(d1, d2, n_enc_cab[1], cab)
        self.enc_level3 = DownBlock(d2, d3, n_enc_cab[2], cab)

        self.skip_attn1 = SkipBlock(d0, n_skip_cab[0], cab)
        self.skip_attn2 = SkipBlock(d1, n_skip_cab[1], cab)
        self.skip_attn3 = SkipBlock(d2, n_skip_cab[2], cab)

        self.bottleneck = cab.cabs(n_bottleneck_cab, d3)

        self.prompt_level3 = PromptBlock(prompt_dim[2], len_prompt[2], prompt_size[2], d3, learnable_prompt)
        self.dec_level3 = UpBlock(d3, d2, prompt_dim[2], n_dec_cab[2], cab, n_history=n_history)
        self.prompt_level2 = PromptBlock(prompt_dim[1], len_prompt[1], prompt_size[1], d2, learnable_prompt)
        self.dec_level2 = UpBlock(d2, d1, prompt_dim[1], n_dec_cab[1], cab, n_history=n_history)
        self.prompt_level1 = PromptBlock(prompt_dim[0], len_prompt[0], prompt_size[0], d1, learnable_prompt)
        self.dec_level1 = UpBlock(d1, d0, prompt_dim[0], n_dec_cab[0], cab, n_history=n_history)

        self.conv_last = conv(d0, out_chans, 5, bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> contiguous ``(B, out_chans, H, W)``; channels-last inside on CPU."""
        return self.forward_history(x, [])[0]

    def forward_history(self, x: Tensor, history: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """PromptMR+ form: also takes and returns the decoder history.

        ``history`` is ``[]`` (first cascade, or ``n_history == 0``) or the three tensors this method returned
        for the previous cascade: levels 3, 2, 1, each ``(B, n_history*C_k, H_k, W_k)`` with the newest feature
        first. Returns ``(output, new_history)``; ``new_history`` is ``[]`` when ``n_history == 0``.
        """
        if x.device.type == "cpu":
            out, new_history = self._forward(x.contiguous(memory_format=torch.channels_last), history)
            return out.contiguous(), new_history
        return self._forward(x, history)

    def _push(self, x: Tensor, history: list[Tensor], level: int) -> list[Tensor]:
        """Decoder input ``x`` pushed to the front of the level's history, the oldest feature dropped."""
        if self.n_history == 0:
            return []
        if len(history) == 0:
            return [x.repeat(1, self.n_history, 1, 1)]
        return [torch.cat([x, history[level][:, : x.shape[1] * (self.n_history - 1)]], dim=1)]

    def _forward(self, x: Tensor, history: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if len(history) not in (0, 3):
            raise ValueError("history must be empty or hold one tensor per decoder level (3)")
        x = self.feat_extract(x)
        x, enc1 = self.enc_level1(x)
        x, enc2 = self.enc_level2(x)
        x, enc3 = self.enc_level3(x)
        x = self.bottleneck(x)
        h3: Optional[Tensor] = history[0] if len(history) == 3 else None
        h2: Optional[Tensor] = history[1] if len(history) == 3 else None
        h1: Optional[Tensor] = history[2] if len(history) == 3 else None
        new_history = self._push(x, history, 0)
        x = self.dec_level3(x, self.prompt_level3(x), self.skip_attn3(enc3), h3)
        new_history += self._push(x, history, 1)
        x = self.dec_level2(x, self.prompt_level2(x), self.skip_attn2(enc2), h2)
        new_history += self._push(x, history, 2)
        x = self.dec_level1(x, self.prompt_level1(x), self.skip_attn1(enc1), h1)
        return self.conv_last(x), new_history


class NormPromptUnet(nn.Module):
    """PromptUnet on complex images with per-sample normalisation and padding to a multiple of 8.

    ``(B, C, H, W)`` complex -> ``(B, C_out, H, W)`` complex64, with ``in_chans = 2C`` and ``out_chans = 2C_out``
    real U-Net channels ordered ``[re_0 .. re_{C-1}, im_0 .. im_{C-1}]`` (``docs/design.md``, "Layouts").

    Mean and unbiased std are taken per sample over all ``2C*H*W`` values with no eps, as in the reference; an
    all-zero sample therefore gives NaN. Statistics, padding and the inverse map run in fp32: the U-Net output is
    cast back to fp32 before un-normalising, so under autocast only the U-Net itself runs in reduced precision.

    Keyword arguments other than ``in_chans``/``out_chans`` are passed to :class:`PromptUnet`.
    """

    def __init__(self, in_chans: int = 10, out_chans: int = 10, **unet_kwargs) -> None:
        super().__init__()
        if in_chans % 2 or out_chans % 2:
            raise ValueError(
                f"in_chans and out_chans count real channels and must be even, got {in_chans}, {out_chans}"
            )
        self.unet = PromptUnet(in_chans, out_chans, **unet_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_history(x, [])[0]

    def forward_history(self, x: Tensor, history: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``forward`` that also passes the U-Net's decoder history (:meth:`PromptUnet.forward_history`).

        The history lives in the U-Net's own (normalised, padded) feature space, so it is passed through as is.
        """
        b, _, h, w = x.shape
        x = x.to(torch.complex64)
        x = torch.cat([x.real, x.imag], dim=1)
        std, mean = torch.std_mean(x.reshape(b, -1), dim=1, keepdim=True)
        std, mean = std.view(b, 1, 1, 1), mean.view(b, 1, 1, 1)
        x = (x - mean) / std

        # Pad after normalising so the padding is zero in normalised units; floor/ceil split as the reference.
        dh, dw = (h + 7) // 8 * 8 - h, (w + 7) // 8 * 8 - w
        top, left = dh // 2, dw // 2
        x = F.pad(x, [left, dw - left, top, dh - top])

        new_history: list[Tensor] = []
        if self.unet.n_history == 0:
            x = self.unet(x)  # the module call, so hooks on the U-Net still fire
        else:
            x, new_history = self.unet.forward_history(x, history)
        x = x.float()[..., top : top + h, left : left + w]
        x = x * std + mean
        c_out = x.shape[1] // 2
        return torch.complex(x[:, :c_out], x[:, c_out:]), new_history
