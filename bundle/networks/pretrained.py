"""Published and trained PromptMR (v1 or PromptMR+) weights: safe loading, format detection, architecture, checks.

Formats recognised by :func:`load_pretrained` (the network keys are those of :class:`PromptMR`):

==============================  =======================================================================
PyTorch Lightning (PromptMR v1   ``{"state_dict": {"promptmr.<key>": ..., "loss.w": ...}, "hyper_parameters"
and PromptMR+)                   : {...}, "epoch", "global_step", "optimizer_states", "lr_schedulers", ...}``;
                                 PromptMR+ saves ``model_version: "promptmr_v2"`` (the bundle's ``"plus"``)
HyperCMR training checkpoint     ``{"model_state_dict": {["module."]<key>: ...}, "optimizer_state_dict",
                                 "scaler_state_dict", "epoch", ...}`` (``checkpoint.pth.tar``,
                                 ``model_best.pth.tar``)
this bundle's training state     ``{"model": {<key>: ...}, "optimizer": ..., "trainer": ...}``
                                 (``models/checkpoints/checkpoint_e*_i*.pt``)
plain state dict                 ``{["module."]<key>: tensor}`` (this bundle's ``models/model.pt``)
==============================  =======================================================================

Files are read with ``torch.load(weights_only=True)`` only: a file that needs arbitrary pickled objects would run
code from the file while loading, so it is refused, never loaded another way. numpy arrays and scalars are the one
exception, because they are plain data that training frameworks leave in their checkpoints.

The architecture comes from the Lightning ``hyper_parameters`` when they are present, otherwise from the tensor
shapes (:func:`infer_network_args`); either way every key and shape is then checked against a network built with
those arguments.

The ACS handling (``acs_source``, ``num_low_frequencies``) is set to what the published model's own inference
used where the format tells (:func:`published_acs`), and otherwise left to the base config
(``docs/design.md``, "ACS width: where it comes from").
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from .promptunet import rename_legacy_keys

__all__ = [
    "ARCHITECTURE_ARGS",
    "NETWORK_OVERLAY_NAME",
    "read_checkpoint",
    "extract_state_dict",
    "infer_network_args",
    "check_state_dict",
    "upgrade_state_dict",
    "published_acs",
    "PretrainedWeights",
    "import_pretrained",
    "load_pretrained",
    "load_network_weights",
    "check_checkpoint",
    "save_network_overlay",
    "read_network_overlay",
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

#: The ``PromptMR`` arguments that decide the ACS width of a call; an import sets both or neither.
ACS_ARGS = ("acs_source", "num_low_frequencies")

# Lightning hyper-parameter names that differ from PromptMR's argument names.
_LIGHTNING_NAMES = {"num_adj_slices": "num_adj_frames"}
# The PromptMR+ Lightning module's model_version (the module file it imports) -> this bundle's model_version.
_LIGHTNING_VERSIONS = {"promptmr_v2": "plus"}
# The width PromptMR+'s CMRxRecon2024 inference passes to its network (a fixed 16, not inferred from the mask).
_PROMPTMR_PLUS_ACS = 16
# Prefixes under which trainers store the network (Lightning attribute, DDP wrapper, both).
_PREFIXES = ("", "module.", "promptmr.", "module.promptmr.", "model.", "module.model.")
_ANCHOR = "cascades.0.dc_weight"
# numpy globals are data (arrays, scalars, dtypes), not code; anything else stays refused.
_DATA_GLOBALS = re.compile(
    r"^numpy\.(_core|core)\.multiarray\.(scalar|_reconstruct)$|^numpy\.(ndarray|dtype)$|^numpy\.dtypes\.\w+DType$"
)
_MAX_LISTED = 8


# --------------------------------------------------------------------------------------------------- reading


def _allowed_numpy_globals(path: str) -> list:
    """The numpy data globals ``path`` needs, or raise :class:`UnsafeCheckpointError` for anything else."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) files cannot be inspected; torch.load's own refusal then applies
        return []
    refused = [name for name in needed if not _DATA_GLOBALS.match(name)]
    if refused:
        raise UnsafeCheckpointError.at(
            path,
            "refused: loading it would unpickle arbitrary Python objects ("
            + ", ".join(refused[:_MAX_LISTED])
            + "), which can run code from the file. Only tensors, numbers, strings and containers are loaded "
            "(torch.load weights_only=True). If you trust the file, re-save just its tensors where it was made, "
            "e.g. torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt'), and import that.",
        )
    if not needed:
        return []
    import importlib

    import numpy as np

    allowed = [getattr(importlib.import_module(m), a) for m, _, a in (n.rpartition(".") for n in needed)]
    # The dtype classes are reached while unpickling, not listed up front.
    return allowed + [cls for name, cls in vars(np.dtypes).items() if name.endswith("DType") and isinstance(cls, type)]


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> object:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what is wrong.

    Raises:
        CheckpointError: missing, a folder, truncated or not a PyTorch file.
        UnsafeCheckpointError: the file needs pickled objects other than tensors, containers and numpy data.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError.at(path, "no such model file")
    if os.path.isdir(path):
        raise CheckpointError.at(path, "is a folder, not a model file")
    allowed = _allowed_numpy_globals(path)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = re.search(r"(Unsupported global: [^\n]+|but got [^\n]+)", str(err))
        if reason is None:  # not a refusal: the bytes are not a pickle at all
            raise CheckpointError.at(path, f"cannot be read as a PyTorch file (truncated or corrupt?): {err}") from err
        raise UnsafeCheckpointError.at(
            path,
            "refused: it needs arbitrary pickled Python objects to load, which can run code from the file "
            f"({reason.group(1).strip()}). Only weights_only=True loading is used.",
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError.at(path, f"cannot be read as a PyTorch file (truncated or corrupt?): {err}") from err


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefix(raw: Mapping, path: str) -> dict:
    """Network keys of ``raw`` without the trainer's prefix; keys outside that prefix (``loss.w``) are dropped."""
    prefix = next((p for p in _PREFIXES if p + _ANCHOR in raw), None)
    if prefix is None:
        sample = ", ".join(list(raw)[:3])
        raise CheckpointError.at(
            path, f"holds no PromptMR weights (no '{_ANCHOR}' key under any prefix; keys: {sample} ...)"
        )
    if not prefix:
        return dict(raw)
    dropped = [k for k in raw if not k.startswith(prefix)]
    if dropped:
        logger.info("%s: ignoring %d non-network entries: %s", path, len(dropped), ", ".join(dropped[:_MAX_LISTED]))
    return {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}


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


def extract_state_dict(checkpoint: object, path: str | os.PathLike = "<checkpoint>") -> tuple[str, dict, dict | None]:
    """``(format, network state dict, Lightning hyper-parameters or None)`` from a loaded checkpoint.

    ``format`` is ``'lightning'``, ``'hypercmr'``, ``'bundle-checkpoint'`` or ``'state-dict'``.
    """
    path = os.fspath(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError.at(path, f"is not a checkpoint dictionary (it holds a {type(checkpoint).__name__})")
    if isinstance(checkpoint.get("state_dict"), Mapping):
        hparams = checkpoint.get("hyper_parameters")
        hparams = dict(hparams) if hparams else None
        _check_model_version(hparams, path)
        return "lightning", upgrade_state_dict(_strip_prefix(checkpoint["state_dict"], path), path), hparams
    if isinstance(checkpoint.get("model_state_dict"), Mapping):
        return "hypercmr", upgrade_state_dict(_strip_prefix(checkpoint["model_state_dict"], path), path), None
    if _is_tensor_dict(checkpoint.get("model")) and not _is_tensor_dict(checkpoint):
        return "bundle-checkpoint", upgrade_state_dict(_strip_prefix(checkpoint["model"], path), path), None
    if _is_tensor_dict(checkpoint):
        return "state-dict", upgrade_state_dict(_strip_prefix(checkpoint, path), path), None
    raise CheckpointError.at(
        path,
        "unknown checkpoint format: expected a Lightning checkpoint ('state_dict'), a HyperCMR checkpoint "
        f"('model_state_dict'), a bundle checkpoint ('model') or a state dict; found keys {sorted(checkpoint)[:8]}",
    )


def _check_model_version(hparams: Mapping | None, path) -> None:
    """Refuse Lightning checkpoints of a network this bundle does not implement, before reading any tensor."""
    version = (hparams or {}).get("model_version")
    if version is None or version in _LIGHTNING_VERSIONS or version in ("v1", "plus"):
        return
    if version == "promptmr":
        raise CheckpointError.at(
            path,
            "is a PromptMR+ checkpoint of the k-space form (model_version 'promptmr', models/promptmr.py of "
            "PromptMR-plus), a different function from the image-domain PromptMR+ (model_version 'promptmr_v2') "
            "that this bundle implements: its weights cannot be imported. Use a 'promptmr_v2' checkpoint (the "
            "published CMRxRecon2024 ones are), or a PromptMR v1 checkpoint (no model_version)",
        )
    raise CheckpointError.at(
        path,
        f"has model_version {version!r} in its hyper-parameters; this bundle imports PromptMR v1 (no model_version) "
        "and PromptMR+ 'promptmr_v2' checkpoints only",
    )


# --------------------------------------------------------------------------------------------------- shapes


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


def _from_hparams(hparams: Mapping, inferred: Mapping) -> dict:
    """Architecture from Lightning hyper-parameters; arguments they lack come from ``inferred``."""
    args = dict(inferred)
    for key, value in hparams.items():
        name = _LIGHTNING_NAMES.get(key, key)
        if name == "model_version":
            value = _LIGHTNING_VERSIONS.get(value, value)
        if name in ARCHITECTURE_ARGS:
            args[name] = [int(v) for v in value] if isinstance(value, (list, tuple)) else value
    return args


def _arch_of(network: torch.nn.Module) -> dict:
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
        ckpt_args, net_args = infer_network_args(state_dict), _arch_of(network)
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


# --------------------------------------------------------------------------------------------------- import


def published_acs(fmt: str, hparams: Mapping | None, path: str | os.PathLike) -> tuple[dict | None, str]:
    """The ACS handling of the pipeline that made a checkpoint: ``({acs_source, num_low_frequencies} or None, why)``.

    * PromptMR+ Lightning (``model_version: promptmr_v2``): its CMRxRecon2024 inference passes a fixed 16, so
      ``network`` with 16.
    * PromptMR v1 Lightning (no ``model_version``) and HyperCMR checkpoints: their inference passes no width and
      the sensitivity network infers it from each mask, so ``mask``.
    * This bundle's own files: what the ``network.yaml`` beside them records (that is what the model was trained
      with); without one, ``None``: the base config's setting applies.
    * A plain state dict of unknown origin: ``None``.
    """
    if fmt == "lightning":
        if (hparams or {}).get("model_version") == "promptmr_v2":
            why = f"PromptMR+ inference passes a fixed ACS width of {_PROMPTMR_PLUS_ACS}"
            return {"acs_source": "network", "num_low_frequencies": _PROMPTMR_PLUS_ACS}, why
        return {"acs_source": "mask", "num_low_frequencies": None}, "PromptMR v1 inference infers the width per mask"
    if fmt == "hypercmr":
        return {"acs_source": "mask", "num_low_frequencies": None}, "HyperCMR inference infers the width per mask"
    folder = Path(path).parent
    for overlay in (folder / NETWORK_OVERLAY_NAME, folder.parent / NETWORK_OVERLAY_NAME):
        if overlay.is_file() and (folder.name == "checkpoints" or overlay.parent == folder):
            recorded = read_network_overlay(overlay)
            if "acs_source" in recorded:
                acs = {name: recorded.get(name) for name in ACS_ARGS}
                return acs, f"as recorded in {overlay}"
            if recorded.get("num_low_frequencies") is not None:
                # Written before acs_source existed: training passed the items' widths, so "item".
                acs = {"acs_source": "item", "num_low_frequencies": recorded["num_low_frequencies"]}
                return acs, f"{overlay} predates acs_source; the bundle trained with the items' widths"
    return None, "the file does not say; the base config's setting applies"


@dataclass(frozen=True)
class PretrainedWeights:
    """What :func:`import_pretrained` read from one file.

    ``state``: the network state dict (checked against ``PromptMR(**network_args)``); ``network_args``: every
    ``PromptMR`` argument (run-time options at ``PromptMR``'s defaults, the ACS handling from ``acs`` where
    known); ``acs``: the ACS arguments the source pipeline used, or ``None`` when the file does not say (the
    overlay then leaves them to the base config); ``acs_reason``: why; ``fmt``: the checkpoint format.
    """

    state: dict
    network_args: dict
    acs: dict | None
    acs_reason: str
    fmt: str

    def overlay_args(self) -> dict:
        """The arguments ``network.yaml`` sets: all of them, less the ACS ones when the source does not say."""
        if self.acs is not None:
            return dict(self.network_args)
        return {k: v for k, v in self.network_args.items() if k not in ACS_ARGS}


def import_pretrained(path: str | os.PathLike, map_location="cpu") -> PretrainedWeights:
    """Read PromptMR v1 or PromptMR+ weights in any known format (see the module docstring).

    Raises:
        CheckpointError / UnsafeCheckpointError: the file cannot be read safely, is not a PromptMR checkpoint,
            or is a network this bundle does not implement (PromptMR+'s k-space form, ``model_version: promptmr``).
        CheckpointMismatchError: its tensors do not form the network its hyper-parameters describe.
    """
    from .promptmr import PromptMR

    path = os.fspath(path)
    fmt, state, hparams = extract_state_dict(read_checkpoint(path, map_location), path)
    try:
        inferred = infer_network_args(state)
    except ValueError as err:
        raise CheckpointMismatchError.at(path, f"is not a PromptMR state dict: {err}") from err
    arch = _from_hparams(hparams, inferred) if hparams else inferred
    acs, reason = published_acs(fmt, hparams, path)
    # The meta device gives every shape without allocating the ~80 M parameters.
    with torch.device("meta"):
        network = PromptMR(**arch, **(acs or {}))
    check_state_dict(network, state, path)
    version = "PromptMR+" if arch["model_version"] == "plus" else "PromptMR v1"
    logger.info("%s: %s format, %s, %d tensors, %d cascades", path, fmt, version, len(state), arch["num_cascades"])
    if acs is None:
        logger.info("%s: ACS width: %s", path, reason)
    else:
        width = acs["num_low_frequencies"]
        logger.info(
            "%s: ACS width: acs_source %s%s (%s)",
            path,
            acs["acs_source"],
            "" if width is None else f", num_low_frequencies {width}",
            reason,
        )
    return PretrainedWeights(state, dict(network.network_args), acs, reason, fmt)


def load_pretrained(path: str | os.PathLike, map_location="cpu") -> tuple[dict, dict]:
    """``(state_dict, network_args)`` of :func:`import_pretrained`.

    ``state_dict`` has exactly the keys and shapes of ``PromptMR(**network_args)`` (checked);
    ``network_args`` holds every ``PromptMR`` argument: the architecture from the Lightning hyper-parameters or
    the tensor shapes, the ACS handling of the source pipeline where known, and ``PromptMR``'s defaults for the
    other run-time options.
    """
    weights = import_pretrained(path, map_location)
    return weights.state, weights.network_args


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else network


def load_network_weights(network: torch.nn.Module, path: str | os.PathLike, map_location="cpu") -> torch.nn.Module:
    """Load the weights of a model file in any known format into ``network`` (unwrapping DDP), checked first.

    Used for ``init_weights`` (fine-tuning): the network only, no optimizer or schedule state.
    """
    target = _unwrap(network)
    _, state, _ = extract_state_dict(read_checkpoint(path, map_location), path)
    check_state_dict(target, state, path)
    target.load_state_dict(state)
    logger.info("initialised the network from %s", path)
    return network


def check_checkpoint(network: torch.nn.Module, path: str | os.PathLike, map_location="cpu") -> None:
    """Before any work: ``path`` exists, loads safely, is a plain state dict, and fits ``network``.

    A Lightning or HyperCMR checkpoint is refused with the import command, since the bundle's loaders take
    plain state dicts (``model.pt``).
    """
    target = _unwrap(network)
    fmt, state, _ = extract_state_dict(read_checkpoint(path, map_location), path)
    if fmt in ("lightning", "hypercmr"):
        raise CheckpointError.at(
            path,
            f"is a {fmt} training checkpoint; import it first: python scripts/import_weights.py {path} --out-dir DIR, "
            "then use DIR/model.pt with the overlay DIR/network.yaml",
        )
    check_state_dict(target, state, path)


# --------------------------------------------------------------------------------------------------- overlay


def save_network_overlay(path: str | os.PathLike, network_args: Mapping, source: str | None = None) -> Path:
    """Write ``network.yaml``: a config overlay that sets every ``network_def`` argument (atomically)."""
    from ..files import atomic_write

    lines = [
        "# PromptMR arguments of the weights beside this file. Add it after the base config, e.g.",
        "#   --config_file \"['configs/inference.yaml','" + Path(path).as_posix() + "']\"",
    ]
    if source:
        lines.append(f"# imported from {source}")
    if "acs_source" not in network_args:
        lines.append(
            "# acs_source and num_low_frequencies are not set: the source does not say, the base config's apply"
        )
    body = {"num_adj_frames": int(network_args["num_adj_frames"])}
    body.update({f"network_def#{k}": (list(v) if isinstance(v, tuple) else v) for k, v in network_args.items()})
    text = "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_network_overlay(path: str | os.PathLike) -> dict:
    """The ``PromptMR`` arguments set by a ``network.yaml`` written by :func:`save_network_overlay`."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError.at(path, f"cannot read the network overlay: {err}") from err
    if not isinstance(data, Mapping):
        raise CheckpointError.at(path, "is not a network overlay (expected 'network_def#<argument>: value' lines)")
    return {k.split("#", 1)[1]: v for k, v in data.items() if k.startswith("network_def#")}
