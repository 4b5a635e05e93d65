"""Checks a run makes before any work: its output folders can be written, and the state it would resume or reuse
(checkpoints, patient split) belongs to this run's dataset and network.

Training writes a manifest ``run.json`` beside its checkpoints and beside its split: the dataset root, the sorted
training patients (and their SHA-256), the network's architecture arguments and the bundle version. A later run
with the same folders compares itself with it; files of an older version without a manifest are compared through
what they hold (the split's patients, the newest checkpoint's tensor shapes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

import bundle
from bundle.data.index import load_split, training_patients
from bundle.errors import CheckpointError, OutputDirError, RunStateError
from bundle.files import atomic_write
from bundle.io.paths import check_output_dir
from bundle.networks.pretrained import ARCHITECTURE_ARGS, NETWORK_OVERLAY_NAME, infer_network_args, read_checkpoint
from bundle.workflows.checkpoint import checkpoints_newest_first, unwrap_model
from bundle.workflows.distributed import barrier, is_main_process

__all__ = ["MANIFEST_NAME", "check_writable", "RunState"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "run.json"
_LISTED = 5


def _blocking_file(folder: Path) -> Path | None:
    """The first existing ancestor of ``folder`` (itself included) that is not a folder."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_writable(*folders: str | os.PathLike | None, dataset_dir: str | os.PathLike | None = None) -> None:
    """Create every folder and write and remove a probe file in it, before any input is read.

    With ``dataset_dir``, a folder equal to or inside the dataset is refused first (nothing is created there).

    Raises:
        UnsafePathError: a folder lies inside ``dataset_dir``.
        OutputDirError: a folder cannot be created or written; the message names it and the cause.
    """

    for folder in folders:
        if folder is None:
            continue
        if dataset_dir is not None:
            check_output_dir(folder, dataset_dir)
        path = Path(folder)
        blocker = _blocking_file(path)
        if blocker is not None:
            raise OutputDirError.at(folder, f"cannot be created: {blocker} is a file, not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputDirError.at(folder, f"cannot be created or written ({err.strerror or err})") from err


def _is_main() -> bool:
    return is_main_process()


def _barrier() -> None:
    barrier()


def _digest(patients: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(patients)).encode()).hexdigest()


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


class RunState:
    """The identity of a training run, checked against the state on disk at ``check()`` (config ``initialize``).

    Args:
        dataset_root: the run's dataset (its TrainingSet patients are listed from the folders, no file is read).
        network: the configured network (DDP wrappers are unwrapped).
        checkpoint_dir: where full training checkpoints go.
        split_file: the patient split file (``None``: no split is reused).
        model_path: the ``model.pt`` this run writes; moved aside with the rest when ``resume`` is false.
        resume: ``False`` starts fresh: existing checkpoints, split and model are moved into a
            ``previous-<time>`` folder beside them (never deleted).
    """

    def __init__(
        self,
        dataset_root: str | os.PathLike,
        network: torch.nn.Module,
        checkpoint_dir: str | os.PathLike,
        split_file: str | os.PathLike | None = None,
        model_path: str | os.PathLike | None = None,
        resume: bool = True,
    ):
        self.dataset_root = Path(dataset_root)
        self.network = network
        self.checkpoint_dir = Path(checkpoint_dir)
        self.split_file = None if split_file is None else Path(split_file)
        self.model_path = None if model_path is None else Path(model_path)
        self.resume = bool(resume)

    # ----------------------------------------------------------------------------------------- identity

    def identity(self) -> dict:
        """What this run's state belongs to, as written to ``run.json``."""

        args = getattr(unwrap_model(self.network), "network_args", {})
        patients = training_patients(self.dataset_root)
        return {
            "dataset_root": os.path.abspath(self.dataset_root),
            "patients": patients,
            "patients_sha256": _digest(patients),
            "network": {k: args[k] for k in ARCHITECTURE_ARGS if k in args},
            "bundle_version": bundle.__version__,
        }

    def _checkpoints(self) -> list[Path]:

        return checkpoints_newest_first(self.checkpoint_dir)

    def _places(self) -> list[tuple[str, list[Path], Path]]:
        """``(name, files, manifest)`` for every kind of state found on disk."""
        places = []
        checkpoints = self._checkpoints()
        if checkpoints:
            places.append((f"{self.checkpoint_dir} ({checkpoints[0].name}, ...)", checkpoints, self._manifest_ckpt))
        if self.split_file is not None and self.split_file.exists():
            places.append((str(self.split_file), [self.split_file], self._manifest_split))
        return places

    @property
    def _manifest_ckpt(self) -> Path:
        return self.checkpoint_dir / MANIFEST_NAME

    @property
    def _manifest_split(self) -> Path | None:
        return None if self.split_file is None else self.split_file.with_name(MANIFEST_NAME)

    def _recorded(self, files: list[Path], manifest: Path) -> dict:
        """The identity a place was written with: its manifest, or what its files show (older versions)."""
        if manifest is not None and manifest.is_file():
            try:
                return json.loads(manifest.read_text())
            except (OSError, ValueError) as err:
                raise RunStateError.at(
                    manifest, f"cannot read the run manifest ({err}); move the folder aside"
                ) from err
        if files[0].name.endswith(".json"):  # a split file of an older version
            train, val = load_split(files[0], allow_overlap=True)
            return {"patients": sorted(set(train) | set(val))}

        for path in files:  # newest readable checkpoint
            try:
                state = read_checkpoint(path).get("model", {})
                return {"network": infer_network_args(state)}
            except (CheckpointError, ValueError, AttributeError):
                continue
        return {}

    @staticmethod
    def _differences(recorded: Mapping, current: Mapping) -> list[str]:
        found = []
        if "patients" in recorded and sorted(recorded["patients"]) != current["patients"]:
            before, now = set(recorded["patients"]), set(current["patients"])
            where = f" ({recorded['dataset_root']})" if "dataset_root" in recorded else ""
            text = f"its dataset has {len(before)} training patients{where}, this run's has {len(now)}"
            text += f" ({current['dataset_root']})"
            if now - before:
                text += f"; new here: {_listed(now - before)}"
            if before - now:
                text += f"; missing here: {_listed(before - now)}"
            found.append(text)
        if recorded.get("network") and current["network"]:
            diffs = [
                f"{k} {recorded['network'][k]} there, {v} here"
                for k, v in current["network"].items()
                if k in recorded["network"] and recorded["network"][k] != v
            ]
            if diffs:
                found.append("its network differs: " + "; ".join(diffs))
        return found

    # ----------------------------------------------------------------------------------------- check

    def check(self) -> None:
        """Refuse, move aside (``resume=False``) or accept the state on disk, then record this run's identity."""
        current = self.identity()
        places = self._places()
        if not self.resume:
            if _is_main():
                self._move_aside([f for _, files, _ in places for f in files])
        else:
            problems = []
            for name, files, manifest in places:
                recorded = self._recorded(files, manifest)
                problems += [f"  - {name}: {d}" for d in self._differences(recorded, current)]
                if recorded.get("dataset_root") not in (None, current["dataset_root"]) and not problems:
                    logger.warning(
                        "%s was written for %s; same patients, so it is reused", name, recorded["dataset_root"]
                    )
            if problems:
                raise RunStateError(
                    "this run would resume or reuse state that belongs to another run, so it stops before any work "
                    "(nothing was changed):\n"
                    + "\n".join(problems)
                    + "\nStart fresh with --resume false (the old files are moved into a 'previous-<time>' folder "
                    "beside them, never deleted), or give this run its own --output_dir and --ckpt_dir.",
                    path=places[0][1][0],
                )
        if _is_main():
            self._write_manifests(current)
        _barrier()

    def _write_manifests(self, identity: Mapping) -> None:

        text = json.dumps(identity, indent=1) + "\n"
        for manifest in (self._manifest_ckpt, self._manifest_split):
            if manifest is not None:
                atomic_write(manifest, lambda tmp: Path(tmp).write_text(text))

    def _move_aside(self, files: list[Path]) -> None:
        extra = [self._manifest_ckpt, self._manifest_split]
        if self.model_path is not None:
            extra += [self.model_path, self.model_path.with_name(NETWORK_OVERLAY_NAME)]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path in [*files, *extra]:
            if path is None or not path.is_file():
                continue
            dest = path.parent / f"previous-{stamp}" / path.name
            dest.parent.mkdir(exist_ok=True)
            os.replace(path, dest)
            logger.warning("--resume false: moved %s to %s", path, dest)
