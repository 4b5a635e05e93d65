"""HyperCMR's VGG term: five VGG19 convolutions chained with no ReLU, pooling or normalisation.

See ``docs/design.md``, "Loss".

Weights are never downloaded. They come from a local file in torchvision's ``vgg19`` state-dict layout
(``vgg19-dcbb9e9d.pth``, or a trimmed dict of ``features.{0,5,10,19,28}.*``), read without torchvision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VGG19_CFG",
    "VGG19_CONV_SHAPES",
    "VGG19Features",
    "normalise_vgg19_keys",
    "load_vgg19_state_dict",
    "PerceptualLoss",
]

logger = logging.getLogger(__name__)

# torchvision's configuration "E": output channels per conv, "M" for a 2×2 max-pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _conv_shapes() -> dict[int, tuple[int, int]]:
    """``features`` index -> ``(in_channels, out_channels)`` of every VGG19 conv (each conv is followed by a ReLU)."""
    shapes, idx, cin = {}, 0, 3
    for v in VGG19_CFG:
        if v == "M":
            idx += 1
        else:
            shapes[idx] = (cin, v)
            cin = v
            idx += 2
    return shapes


VGG19_CONV_SHAPES = _conv_shapes()  # {0: (3, 64), 2: (64, 64), 5: (64, 128), ..., 34: (512, 512)}


class VGG19Features(nn.Sequential):
    """Our own definition of torchvision's ``vgg19().features``: 37 modules at torchvision's indices.

    ``load_state_dict`` accepts the ``features.`` prefix and ignores ``classifier.*`` keys, so a full
    torchvision ``vgg19`` state dict loads with ``strict=True`` (see :func:`normalise_vgg19_keys`).
    Input ``(B, 3, H, W)``; output ``(B, 512, H/32, W/32)``.
    """

    def __init__(self):
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        super().__init__(*layers)

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        return super().load_state_dict(normalise_vgg19_keys(state_dict), strict=strict, assign=assign)


def normalise_vgg19_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision ``vgg19`` keys to ``features`` keys: strip ``features.``, drop ``classifier.*``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            continue
        out[key.removeprefix("features.")] = value
    return out


def load_vgg19_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torchvision-layout VGG19 state dict from ``path`` and return its conv tensors keyed ``"N.weight"``.

    Accepts the full ``vgg19`` dict (``classifier.*`` ignored) or any subset of the ``features`` convs, with
    or without the ``features.`` prefix. Every shape is checked against VGG19; errors name the file.
    Loaded with ``weights_only=True`` (no pickled code runs).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: VGG19 weights file not found (vgg_weights_path)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read a VGG19 state dict ({exc})") from exc
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict (mapping of tensors), got {type(raw).__name__}")
    out = {}
    for key, value in normalise_vgg19_keys(raw).items():
        idx, _, kind = key.partition(".")
        if not idx.isdigit() or int(idx) not in VGG19_CONV_SHAPES or kind not in ("weight", "bias"):
            raise ValueError(f"{path}: unexpected key {key!r} for a torchvision vgg19 state dict")
        cin, cout = VGG19_CONV_SHAPES[int(idx)]
        expected = (cout, cin, 3, 3) if kind == "weight" else (cout,)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{path}: {key!r} has shape {got}, VGG19 features.{key} needs {expected}")
        out[key] = value.float()
    return out


class PerceptualLoss(nn.Module):
    """Sum over the chain steps of ``mean((φ_l(pred) − φ_l(target))²)`` (``docs/design.md``, "Loss").

    The chain applies the VGG19 convs at ``layers`` (torchvision ``features`` indices; default conv1_1,
    conv2_1, conv3_1, conv4_1, conv5_1) **one directly after another**: no ReLU, no pooling, no ImageNet
    normalisation, full resolution. Inputs ``(B, 1, H, W)`` in [0, 1] are replicated to 3 channels.

    With ``weights_path=None`` the term is disabled: one WARNING is logged at construction and
    :meth:`forward` returns a zero tensor on the input's device. Nothing is ever downloaded.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, layers: Sequence[int] = (0, 5, 10, 19, 28)):
        super().__init__()
        self.layers = tuple(int(i) for i in layers)
        cin = 3
        convs = []
        for i in self.layers:
            if i not in VGG19_CONV_SHAPES:
                raise ValueError(f"VGG19 features index {i} is not a conv; convs are at {sorted(VGG19_CONV_SHAPES)}")
            if VGG19_CONV_SHAPES[i][0] != cin:
                raise ValueError(f"VGG19 conv {i} takes {VGG19_CONV_SHAPES[i][0]} channels, the chain gives it {cin}")
            cin = VGG19_CONV_SHAPES[i][1]
            convs.append(nn.Conv2d(*VGG19_CONV_SHAPES[i], kernel_size=3, padding=1))
        self.convs = nn.ModuleList(convs)
        self.enabled = weights_path is not None
        if self.enabled:
            self.load_vgg_weights(weights_path)
        else:
            logger.warning(
                "vgg_weights_path is unset: the VGG perceptual term is disabled (contributes 0), so the loss "
                "differs from the HyperCMR reference. Pass a local torchvision vgg19 state dict to enable it."
            )
        self.requires_grad_(False)
        self.eval()

    def load_vgg_weights(self, path: str | os.PathLike) -> None:
        """Copy the chain's convs from a torchvision-layout file; fails, naming the file, if one is missing."""
        weights = load_vgg19_state_dict(path)
        missing = [f"features.{i}.{k}" for i in self.layers for k in ("weight", "bias") if f"{i}.{k}" not in weights]
        if missing:
            raise ValueError(f"{os.fspath(path)}: VGG19 weights lack {missing}")
        with torch.no_grad():
            for i, conv in zip(self.layers, self.convs):
                conv.weight.copy_(weights[f"{i}.weight"])
                conv.bias.copy_(weights[f"{i}.bias"])
        self.enabled = True

    def train(self, mode: bool = True):
        # Frozen feature extractor: stays in eval mode whatever the parent module does.
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of each chain step for ``(B, 1 or 3, H, W)``: ``[(B, 64, H, W), (B, 128, H, W), ...]``."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        feats = []
        for conv in self.convs:
            x = conv(x)
            feats.append(x)
        return feats

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``(B, 1, H, W)``. Returns a 0-dim fp32 tensor (0 when disabled)."""
        if not self.enabled:
            return torch.zeros((), device=pred.device, dtype=torch.float32)
        if self.convs[0].weight.device != pred.device:
            # MONAI's trainer does not move its loss_function; follow the data once, then stay there.
            self.to(pred.device)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            fp = self.features(pred.float())
            # The target branch never needs gradients.
            with torch.no_grad():
                ft = self.features(target.float())
            return sum(F.mse_loss(a, b) for a, b in zip(fp, ft))
