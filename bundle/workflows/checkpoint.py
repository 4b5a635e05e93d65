"""Crash-safe checkpoints and exact resume.

MONAI's ``CheckpointSaver`` disables Ignite's atomic save (``atomic=False``) and rewrites ``model.pt`` in place,
so a crash during a save can destroy the only good checkpoint. Every file here is written to a temporary file
in the same folder, flushed to disk and renamed over the target; older checkpoints are deleted only after the
new one is complete. Everything saved is loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from monai.networks.utils import get_state_dict

from bundle.errors import CheckpointError
from bundle.files import atomic_write
from bundle.networks.pretrained import NETWORK_OVERLAY_NAME, check_state_dict, read_checkpoint, save_network_overlay
from bundle.workflows.distributed import is_main_process
from bundle.workflows.handlers import is_stepping_iteration

__all__ = [
    "checkpoint_state",
    "RNGState",
    "atomic_torch_save",
    "AtomicCheckpointSaver",
    "ResumeFromCheckpoint",
    "BestModelSaver",
    "EpochModelSaver",
    "save_model",
    "latest_checkpoint",
    "newest_readable_checkpoint",
    "checkpoints_newest_first",
    "unwrap_model",
]

logger = logging.getLogger(__name__)
_CKPT_RE = re.compile(r"checkpoint_e(\d+)_i(\d+)\.pt$")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper.

    For attributes of the network (``network_args``); state dicts come from MONAI's ``get_state_dict``.
    """
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through the bundle's one atomic writer (:func:`bundle.io.paths.atomic_write`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    atomic_write(path, write)


class RNGState:
    """Python, NumPy and torch (CPU and CUDA) random states as a checkpointable object.

    The states are stored as tensors and plain numbers so that ``torch.load(weights_only=True)`` accepts them.
    """

    def state_dict(self) -> dict:
        np_state = np.random.get_state()  # noqa: NPY002 - the global legacy stream is what must be restored
        py_state = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
            "numpy_has_gauss": int(np_state[3]),
            "numpy_gauss": float(np_state[4]),
            "python_version": int(py_state[0]),
            "python_state": torch.tensor(py_state[1], dtype=torch.int64),
            "python_gauss": py_state[2],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(  # noqa: NPY002
            (
                "MT19937",
                state["numpy_keys"].numpy().astype(np.uint32),
                state["numpy_pos"],
                state["numpy_has_gauss"],
                state["numpy_gauss"],
            )
        )
        random.setstate((state["python_version"], tuple(state["python_state"].tolist()), state["python_gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints_newest_first(directory: str | os.PathLike) -> list[Path]:
    """The ``checkpoint_e*_i*.pt`` files of ``directory``, highest iteration first."""
    found = []
    for name in glob.glob(os.path.join(glob.escape(str(directory)), "checkpoint_e*_i*.pt")):
        match = _CKPT_RE.search(name)
        if match:
            found.append((int(match.group(2)), Path(name)))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The ``checkpoint_e*_i*.pt`` file with the highest iteration in ``directory``, or ``None``."""
    found = checkpoints_newest_first(directory)
    return found[0] if found else None


class AtomicCheckpointSaver:
    """Saves ``save_dict`` (model, optimizer, scheduler, trainer, sampler, RNG, scaler...) during training.

    A checkpoint is written every ``save_interval`` iterations (postponed to the next optimizer step when
    gradient accumulation is mid-window, so a checkpoint never holds half-accumulated gradients), at the end of
    every epoch and when training completes. The newest ``n_saved`` files are kept.
    """

    def __init__(self, save_dir: str, save_dict: Mapping, save_interval: int = 0, n_saved: int = 2):
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.n_saved = max(1, int(n_saved))
        self._pending = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _on_iteration(self, engine: Engine) -> None:
        if self.save_interval > 0 and engine.state.iteration % self.save_interval == 0:
            self._pending = True
        if self._pending and is_stepping_iteration(engine):
            self.save(engine)

    def save(self, engine: Engine) -> Path:
        self._pending = False
        path = self.save_dir / f"checkpoint_e{engine.state.epoch}_i{engine.state.iteration}.pt"
        atomic_torch_save({key: get_state_dict(obj) for key, obj in self.save_dict.items()}, path)
        logger.info("saved checkpoint %s", path)
        self._prune(keep=path)
        return path

    def _prune(self, keep: Path) -> None:
        for old in checkpoints_newest_first(self.save_dir)[self.n_saved :]:
            if old != keep:
                old.unlink(missing_ok=True)


class TrainerScaler:
    """The AMP ``GradScaler`` of ``trainer`` as a checkpoint entry.

    MONAI's ``Trainer.run()`` creates a new ``GradScaler`` each time it starts, so a scaler taken from the trainer
    when the config is built is not the one that trains. This looks the current one up whenever it is saved or
    loaded (loading happens at ``STARTED``, after ``run()`` replaced it).
    """

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict:
        scaler = getattr(self.trainer, "scaler", None)
        return scaler.state_dict() if scaler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        scaler = getattr(self.trainer, "scaler", None)
        if scaler is not None and state:
            scaler.load_state_dict(dict(state))


def checkpoint_state(objects: Mapping, trainer, precision) -> dict:
    """What a training checkpoint holds: ``objects`` (model, optimizer, ...) plus the trainer's AMP loss scaler
    when the precision uses one (fp16 on CUDA), as one mapping shared by the saver and the resumer."""
    state = dict(objects)
    if getattr(precision, "grad_scaler", False):
        state["scaler"] = TrainerScaler(trainer)
    return state


def newest_readable_checkpoint(directory: str | os.PathLike, network: torch.nn.Module | None = None) -> Path | None:
    """The newest ``checkpoint_e*_i*.pt`` of ``directory`` that can be read, or ``None`` when there is none.

    An unreadable one (truncated by a crash, corrupt) is named in a warning and the previous one tried; when none
    can be read, :class:`~bundle.errors.CheckpointError` says what to do. With ``network``, the checkpoint's
    ``model`` entry must fit it (:func:`~bundle.networks.pretrained.check_state_dict`, one clear message).
    """

    candidates = checkpoints_newest_first(directory)
    for path in candidates:
        try:
            checkpoint = read_checkpoint(path, "cpu")
        except CheckpointError as err:
            logger.warning("cannot resume from %s; trying the previous checkpoint", err)
            continue
        if isinstance(network, torch.nn.Module) and isinstance(checkpoint, Mapping) and "model" in checkpoint:
            check_state_dict(unwrap_model(network), checkpoint["model"], path)
        return path
    if candidates:
        raise CheckpointError.at(
            directory, "no checkpoint here can be read; move the folder aside or pass --resume false"
        )
    return None


class ResumeFromCheckpoint(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` on the newest readable checkpoint of ``checkpoint_dir``, chosen at ``STARTED``.

    Loading (DDP unwrapping, strict keys, keeping the configured ``max_epochs`` so that a finished run can be
    extended) is MONAI's; this class only picks the file (:func:`newest_readable_checkpoint`) and does nothing
    when there is none or ``enabled`` is false.
    """

    def __init__(self, checkpoint_dir: str, load_dict: Mapping, enabled: bool = True, map_location="cpu"):
        super().__init__(load_path=os.fspath(checkpoint_dir), load_dict=dict(load_dict), map_location=map_location)
        self.checkpoint_dir = checkpoint_dir
        self.enabled = enabled
        self.loaded_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        path = newest_readable_checkpoint(self.checkpoint_dir, self.load_dict.get("model"))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            box = [path]  # global rank 0's choice: every node resumes from the same file
            torch.distributed.broadcast_object_list(box, src=0)
            path = box[0]
        if path is None:
            logger.info("no checkpoint in %s: training starts from scratch", self.checkpoint_dir)
            return
        self.load_path = os.fspath(path)
        super().__call__(engine)
        self.loaded_from = path
        logger.info("resumed from %s at epoch %d, iteration %d", path, engine.state.epoch, engine.state.iteration)


def save_model(network: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write the network's weights (a plain state dict) and, beside them, ``network.yaml`` with its arguments.

    The overlay makes the file self-describing: inference, evaluation and export add it to their configs.
    """

    atomic_torch_save(get_state_dict(network), path)
    args = getattr(unwrap_model(network), "network_args", None)
    if args is not None:
        save_network_overlay(Path(path).with_name(NETWORK_OVERLAY_NAME), args)
    return Path(path)


class BestModelSaver:
    """Writes the network's weights (a plain state dict) atomically whenever ``metric_name`` improves.

    Attach to the evaluator. The file is what ``evaluate.yaml``/``inference.yaml`` and ``ckpt_export`` load;
    ``network.yaml`` beside it holds the network's arguments (:func:`save_model`).
    """

    def __init__(self, save_path: str, network: torch.nn.Module, metric_name: str = "val_ssim", mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.save_path = save_path
        self.network = network
        self.metric_name = metric_name
        self.mode = mode
        self.best: float | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping) -> None:
        self.best = state["best"]

    def __call__(self, engine: Engine) -> None:
        value = engine.state.metrics.get(self.metric_name)
        if value is None:
            return
        value = float(value)
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best = value
            if is_main_process():  # every rank tracks the best value (resume); rank 0 writes the file
                save_model(self.network, self.save_path)
                logger.info("new best %s=%.5f: saved %s", self.metric_name, value, self.save_path)


class EpochModelSaver:
    """Without validation there is no best model: write the weights (and ``network.yaml``) after every epoch.

    Attach to the trainer in place of the validation handler; ``attach`` logs that the run has no validation.
    """

    def __init__(self, save_path: str, network: torch.nn.Module):
        self.save_path = save_path
        self.network = network

    def attach(self, engine: Engine) -> None:
        logger.warning(
            "no validation patients (val_fraction=0 or too few patients): training runs without validation and "
            "saves %s at the end of every epoch",
            self.save_path,
        )
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if is_main_process():
            save_model(self.network, self.save_path)
            logger.info("epoch %d: saved %s", engine.state.epoch, self.save_path)
