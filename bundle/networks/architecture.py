"""What a PromptMR network is made of: the arguments that decide its tensors, read back from a state dict, checked.

Both the network (:meth:`bundle.networks.PromptMR.load_state_dict`) and the checkpoint layer
(:mod:`bundle.networks.pretrained`) use these, so they live below both.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointMismatchError
from .promptunet import rename_legacy_keys

__all__ = [
    "ARCHITECTURE_ARGS",
    "NETWORK_OVERLAY_NAME",
    "infer_network_args",
    "network_architecture",
    "check_state_dict",
    "upgrade_state_dict",
]

logger = logging.getLogger(__name__)

#: ``PromptMR`` arguments that decide which tensors the network has, and their shapes.
ARCHITECTURE_ARGS = (
    "num_cascades",
    "num_adj_frames",
    "n_feat0",
    "feature_dim",
    "prompt_dim",
    "sens_n_feat0",
    "sens_feature_dim",
    "sens_prompt_dim",
    "len_prompt",
    "prompt_size",
    "n_enc_cab",
    "n_dec_cab",
    "n_skip_cab",
    "n_bottleneck_cab",
    "no_use_ca",
    # PromptMR+ options. model_version changes no tensor by itself, but the network it names computes something
    # else, so it is part of the architecture wherever arguments are compared (resume, mismatch messages).
    "model_version",
    "adaptive_input",
    "n_buffer",
    "n_history",
    "use_sens_adj",
)
#: The overlay written beside every saved ``model.pt``.
NETWORK_OVERLAY_NAME = "network.yaml"

_MAX_LISTED = 8


def upgrade_state_dict(state_dict: Mapping, path: str | os.PathLike | None = None) -> dict:
    """``state_dict`` with the PromptMR+ momentum keys of older bundle checkpoints renamed to the reference's
    (``momentum.conv.*`` -> ``momentum.0.*``, ``momentum.cab.*`` -> ``momentum.1.*``), logged once per call."""
    state, renamed = rename_legacy_keys(state_dict)
    if renamed:
        logger.info(
            "%s: renamed %d PromptMR+ momentum keys of an older bundle checkpoint (momentum.conv/cab -> momentum.0/1)",
            os.fspath(path) if path is not None else "checkpoint",
            renamed,
        )
    return state


def _count(keys: list[str], pattern: str) -> int:
    """``1 + max index`` captured by ``pattern`` over ``keys`` (0 when nothing matches)."""
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _shape(state: Mapping, key: str) -> tuple[int, ...]:
    if key not in state:
        raise KeyError(key)
    return tuple(state[key].shape)


def _unet_args(state: Mapping, prefix: str) -> dict:
    """Widths and block counts of the PromptUnet whose keys start with ``prefix``."""
    keys = [k[len(prefix) :] for k in state if k.startswith(prefix)]
    p = re.escape
    d0, in_chans = _shape(state, prefix + "feat_extract.weight")[:2]
    prompts = [_shape(state, f"{prefix}prompt_level{k}.prompt_param") for k in (1, 2, 3)]
    return {
        "in_chans": in_chans,
        "n_feat0": d0,
        "feature_dim": [_shape(state, f"{prefix}enc_level{k}.down.weight")[0] for k in (1, 2, 3)],
        "prompt_dim": [s[2] for s in prompts],
        "len_prompt": [s[1] for s in prompts],
        "prompt_size": [s[3] for s in prompts],
        "n_enc_cab": [_count(keys, rf"{p(f'enc_level{k}.encoder.')}(\d+)\.") for k in (1, 2, 3)],
        "n_dec_cab": [_count(keys, rf"{p(f'dec_level{k}.fuse.')}(\d+)\.") for k in (1, 2, 3)],
        "n_skip_cab": [_count(keys, rf"{p(f'skip_attn{k}.skip_attn.')}(\d+)\.") for k in (1, 2, 3)],
        "n_bottleneck_cab": _count(keys, r"bottleneck\.(\d+)\."),
        "no_use_ca": not any(".CA.conv_du." in k for k in keys),
    }


_SHARED = ("len_prompt", "prompt_size", "n_enc_cab", "n_dec_cab", "n_skip_cab", "n_bottleneck_cab", "no_use_ca")


def _history_length(state: Mapping, prefix: str) -> int:
    """PromptMR+ decoder-history length of the U-Net under ``prefix`` (0 when it has no momentum blocks)."""
    key = prefix + "dec_level3.momentum.0.weight"
    if key not in state:
        return 0
    out_chans, in_chans = _shape(state, key)[:2]
    return in_chans // out_chans - 1


def infer_network_args(state_dict: Mapping) -> dict:
    """The :data:`ARCHITECTURE_ARGS` of the PromptMR (v1 or PromptMR+) network that has exactly these tensors.

    Cascades are counted from ``cascades.<i>.dc_weight``; widths come from the first convolution, the stride-2
    convolutions and the prompt tensors; CAB counts from the block indices of the first cascade's and the
    sensitivity U-Net's keys.

    PromptMR+ options: ``use_sens_adj`` from the sensitivity U-Net's input width (2F instead of 2), ``n_history``
    from the momentum convolutions, ``adaptive_input`` from a cascade input of 5F complex channels, which can be
    told apart from 5F frames only when the sensitivity U-Net shows F (``use_sens_adj``). ``model_version`` is
    ``"plus"`` when any cascade-side option is present; a PromptMR+ network with neither adaptive input nor
    history has v1's tensors and reads as ``"v1"``. The ``network.yaml`` written beside every saved model
    records all arguments, so none of this guessing is needed for the bundle's own files.

    Raises:
        ValueError: a key needed to read the architecture is missing, or the sensitivity and cascade U-Nets
            differ in an argument that :class:`PromptMR` shares between them (not a v1 network).
    """
    keys = list(state_dict)
    num_cascades = _count(keys, r"cascades\.(\d+)\.dc_weight$")
    if num_cascades == 0:
        raise ValueError("no 'cascades.<i>.dc_weight' keys: not a PromptMR state dict")
    try:
        cascade = _unet_args(state_dict, "cascades.0.model.unet.")
        sens = _unet_args(state_dict, "sens_net.norm_unet.unet.")
    except KeyError as err:
        raise ValueError(f"missing key {err.args[0]!r}, needed to read the architecture") from None
    use_sens_adj = sens["in_chans"] != 2
    frames = sens["in_chans"] // 2 if use_sens_adj else cascade["in_chans"] // 2
    groups = cascade["in_chans"] // (2 * frames)
    if groups not in (1, 5) or groups * 2 * frames != cascade["in_chans"]:
        raise ValueError(
            f"the cascade U-Net takes {cascade['in_chans']} channels and the sensitivity U-Net {sens['in_chans']}: "
            "neither PromptMR v1 (2F and 2) nor PromptMR+ (2F or 10F, and 2F with adjacent-frame sensitivities)"
        )
    n_history = _history_length(state_dict, "cascades.0.model.unet.")
    adaptive_input = groups == 5
    differ = [name for name in _SHARED if cascade[name] != sens[name]]
    if differ:
        raise ValueError(
            "the sensitivity and cascade U-Nets differ in " + ", ".join(differ) + ", which PromptMR shares between them"
        )
    args = {
        "num_cascades": num_cascades,
        "num_adj_frames": frames,
        "n_feat0": cascade["n_feat0"],
        "feature_dim": cascade["feature_dim"],
        "prompt_dim": cascade["prompt_dim"],
        "sens_n_feat0": sens["n_feat0"],
        "sens_feature_dim": sens["feature_dim"],
        "sens_prompt_dim": sens["prompt_dim"],
    }
    args.update({name: cascade[name] for name in _SHARED})
    args.update(
        model_version="plus" if (adaptive_input or n_history) else "v1",
        adaptive_input=adaptive_input,
        n_buffer=4,
        n_history=n_history,
        use_sens_adj=use_sens_adj,
    )
    return {name: args[name] for name in ARCHITECTURE_ARGS}


def network_architecture(network: torch.nn.Module) -> dict:
    """The :data:`ARCHITECTURE_ARGS` of a built network (its ``network_args``, else read from its tensors)."""
    args = getattr(network, "network_args", None)
    if args is None:
        args = infer_network_args(network.state_dict())
    return {name: args[name] for name in ARCHITECTURE_ARGS}


def _describe(value) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


def check_state_dict(network: torch.nn.Module, state_dict: Mapping, path: str | os.PathLike | None = None) -> None:
    """Raise one :class:`CheckpointMismatchError` unless ``state_dict`` has exactly ``network``'s keys and shapes.

    The message names the file, the architecture arguments that differ (checkpoint against network) when they
    can be read from the shapes, the first mismatching tensors, and the overlay that describes the checkpoint.
    """
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    resized = [k for k in expected if k in given and given[k] != expected[k]]
    not_tensors = [k for k in expected if k in state_dict and k not in given]
    if not (missing or unexpected or resized or not_tensors):
        return
    where = os.fspath(path) if path is not None else "the checkpoint"
    lines = [f"{where} does not fit the configured network ({type(network).__name__})."]
    diffs: list[str] = []
    try:
        ckpt_args, net_args = infer_network_args(state_dict), network_architecture(network)
        diffs = [
            f"{name}: {_describe(ckpt_args[name])} in the checkpoint, {_describe(net_args[name])} in the config"
            for name in ARCHITECTURE_ARGS
            if ckpt_args[name] != net_args[name]
        ]
        if diffs:
            lines.append("Arguments that differ: " + "; ".join(diffs) + ".")
    except ValueError as err:
        lines.append(f"Its architecture cannot be read from the tensor shapes ({err}).")
    details = [f"size of {k}: {given[k]} in the checkpoint, {expected[k]} in the network" for k in resized]
    details += [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected]
    details += [f"{k} is not a tensor" for k in not_tensors]
    lines.append(
        f"{len(missing)} missing, {len(unexpected)} unexpected, {len(resized)} resized tensor(s); first: "
        + "; ".join(details[: 3 if diffs else _MAX_LISTED])
        + "."
    )
    overlay = Path(where).with_name(NETWORK_OVERLAY_NAME) if path is not None else None
    if overlay is not None and overlay.is_file():
        lines.append(
            f"Add the overlay written beside it: --config_file \"['configs/<base>.yaml','{overlay}']\" "
            "(the same for inference, evaluation and ckpt_export)."
        )
    else:
        lines.append(
            "Add the network overlay that describes the checkpoint (training and scripts/import_weights.py write "
            f"{NETWORK_OVERLAY_NAME} beside model.pt): --config_file \"['configs/<base>.yaml','<dir>/"
            f"{NETWORK_OVERLAY_NAME}']\", or the overlay it was trained with (e.g. configs/demo.yaml)."
        )
    raise CheckpointMismatchError(" ".join(lines), path=path, problem=" ".join(lines[1:]))
