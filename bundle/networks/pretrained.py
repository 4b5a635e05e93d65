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

import importlib
import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from ..files import atomic_write
from .architecture import (
    ARCHITECTURE_ARGS,
    NETWORK_OVERLAY_NAME,
    check_state_dict,
    infer_network_args,
    upgrade_state_dict,
)
from .promptmr import PromptMR

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
    check_state_dict(target, state, path)  # names the file, which PromptMR.load_state_dict cannot
    torch.nn.Module.load_state_dict(target, state)  # checked just above: PyTorch's own strict load, once
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
