"""Ignite handlers the bundle configs attach to MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator``.

MONAI has no gradient clipping, no non-finite guard, no per-term loss logging and no shape-group sampler
epoch hook; these small handlers add them without replacing the engines' iteration logic.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from bundle.files import atomic_write
from bundle.workflows.distributed import gather_objects

__all__ = [
    "NonFiniteLossError",
    "SkippedDataError",
    "StepGuard",
    "TrainingScalars",
    "SamplerEpochHandler",
    "BadDataReport",
    "is_stepping_iteration",
]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive optimizer steps had a non-finite loss or gradient."""


class SkippedDataError(RuntimeError):
    """Raised at the very end of a run that skipped bad data, so the process exits non-zero.

    It is an expected outcome, not a crash: on the command line only its message (the run's summary) is printed,
    without a traceback (``summary_only``, see :mod:`bundle.errors`).
    """

    summary_only = True


def is_stepping_iteration(engine: Engine) -> bool:
    """Whether MONAI's trainer calls ``optimizer.step()`` in the current iteration (gradient accumulation)."""
    acc = int(getattr(engine, "accumulation_steps", 1) or 1)
    if acc <= 1:
        return True
    epoch_length = engine.state.epoch_length
    if epoch_length is None:
        return engine.state.iteration % acc == 0
    local = (engine.state.iteration - 1) % epoch_length
    return (local + 1) % acc == 0 or (local + 1) == epoch_length


def _batch_items(batch) -> list[str]:
    if not isinstance(batch, Mapping) or "file" not in batch:
        return []
    files, zs, ts = batch["file"], batch.get("z", []), batch.get("t", [])
    zs = zs.tolist() if isinstance(zs, torch.Tensor) else list(zs)
    ts = ts.tolist() if isinstance(ts, torch.Tensor) else list(ts)
    return [f"{f} (z={z}, t={t})" for f, z, t in zip(files, zs, ts)]


class StepGuard:
    """Gradient clipping and a non-finite guard, run between ``backward()`` and ``optimizer.step()``.

    On stepping iterations it unscales the gradients (AMP), clips their global norm to ``clip_norm``
    (``None`` disables clipping) and checks it. When the loss or the gradient norm is not finite the step is
    skipped: gradients are dropped (``grad = None``, which every torch optimizer skips, so neither the moments
    nor weight decay move), the items are logged, and after ``max_bad_steps`` consecutive bad steps the run
    stops with :class:`NonFiniteLossError`. Under AMP the ``GradScaler`` already skips non-finite steps, so the
    gradients are left for it to see.

    With a ``GradScaler``, gradients that overflow while the scale is above ``min_amp_scale`` are the scaler
    calibrating (fp16 starts at 2**16 and halves on each overflow): the scaler skips those steps and they are
    not counted. A non-finite loss, non-finite gradients without a scaler, and overflows that persist at a scale
    of ``min_amp_scale`` or less still count.
    """

    def __init__(self, clip_norm: float | None = 1.0, max_bad_steps: int = 5, min_amp_scale: float = 1.0):
        self.clip_norm = clip_norm
        self.max_bad_steps = int(max_bad_steps)
        self.min_amp_scale = float(min_amp_scale)
        self.consecutive_bad = 0
        self.total_bad = 0
        self.scaler_skipped = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def _params(self, engine: Engine) -> list[torch.nn.Parameter]:
        return [p for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output["loss"]
        bad = not bool(torch.isfinite(loss).all())
        stepping = is_stepping_iteration(engine)
        scaler = getattr(engine, "scaler", None) if getattr(engine, "amp", False) else None
        if stepping and not bad:
            params = self._params(engine)
            if scaler is not None and params:
                scaler.unscale_(engine.optimizer)
            if params:
                max_norm = float("inf") if self.clip_norm is None else float(self.clip_norm)
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                bad = not math.isfinite(float(norm))
                if bad and scaler is not None and scaler.is_enabled() and scaler.get_scale() > self.min_amp_scale:
                    self.scaler_skipped += 1
                    logger.debug("gradient overflow at scale %g: the AMP scaler skips this step", scaler.get_scale())
                    return
        if not bad:
            if stepping:
                self.consecutive_bad = 0
            return
        self.total_bad += 1
        self.consecutive_bad += 1
        items = "; ".join(_batch_items(engine.state.batch)) or "unknown items"
        logger.warning(
            "non-finite loss or gradient at iteration %d (loss=%s); skipping this optimizer step. Items: %s",
            engine.state.iteration,
            float(loss.detach()) if loss.numel() == 1 else "tensor",
            items,
        )
        if not (getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None):
            engine.optimizer.zero_grad(set_to_none=True)
        if self.consecutive_bad >= self.max_bad_steps:
            raise NonFiniteLossError(
                f"{self.consecutive_bad} consecutive training steps had a non-finite loss or gradient "
                f"(limit max_bad_steps={self.max_bad_steps}); stopping. Last items: {items}"
            )


def log_every(interval: int):
    """Ignite event filter: every ``interval``-th iteration and the last iteration of each epoch."""
    interval = max(1, int(interval))

    def due(engine: Engine, iteration: int) -> bool:
        epoch_length = engine.state.epoch_length
        return iteration % interval == 0 or bool(epoch_length and iteration % epoch_length == 0)

    return due


class TrainingScalars:
    """Puts the mean of every weighted loss term since the last log, and the learning rate, into
    ``engine.state.output["scalars"]`` on logging iterations (:func:`log_every`).

    In between, the terms are only added up on their device: converting a GPU tensor to a Python number waits
    for the GPU, so doing it every iteration would stall the training loop. A ``TensorBoardStatsHandler`` whose
    ``output_transform`` returns the dict, filtered with the same ``log_every(log_interval)``, writes one tag
    per entry (with ``decollate=True`` the output is a list and the dict sits in its first element).
    ``loss`` is the trainer's loss object; it exposes ``last_components`` (see ``bundle.losses.TrainerLoss``).
    """

    def __init__(
        self,
        loss=None,
        optimizer: torch.optim.Optimizer | None = None,
        prefix: str = "train",
        log_interval: int = 1,
    ):
        self.loss = loss
        self.optimizer = optimizer
        self.prefix = prefix
        self.due = log_every(log_interval)
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        # With ``decollate=True`` MONAI turns the output into one dict per sample, the loss replicated in each.
        output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
        terms = {f"{self.prefix}/loss": output["loss"]}
        for name, value in (getattr(self.loss, "last_components", None) or {}).items():
            terms[f"{self.prefix}/loss_{name}"] = value
        for tag, value in terms.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self._sums[tag] = self._sums[tag] + value if tag in self._sums else value.clone()
        self._count += 1
        if not self.due(engine, engine.state.iteration):
            return
        scalars = {tag: float(total) / self._count for tag, total in self._sums.items()}
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        if optimizer is not None:
            scalars[f"{self.prefix}/lr"] = float(optimizer.param_groups[0]["lr"])
        output["scalars"] = scalars
        self._sums, self._count = {}, 0


class SamplerEpochHandler:
    """Tells a resumable batch sampler which epoch is running and how many batches were already consumed.

    Ignite builds the epoch's data iterator right after ``EPOCH_STARTED``, and when resuming mid-epoch it
    counts the batches already done but replays the loader from its start; skipping them here keeps the
    resumed epoch identical to an uninterrupted one.
    """

    def __init__(self, sampler):
        self.sampler = sampler

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.sampler.set_epoch(engine.state.epoch - 1)
        epoch_length = engine.state.epoch_length or len(self.sampler)
        self.sampler.set_start(engine.state.iteration % epoch_length)


class BadDataReport:
    """Counts the items a run skipped (``batch["skipped"]``), logs a summary, and fails the run at the end.

    Attach it to every engine that reads data; call :meth:`raise_if_any` last (the configs' ``finalize``) so
    that the process exits non-zero after all outputs were written.
    """

    def __init__(self, name: str = "run", report_path: str | None = None):
        self.name = name
        self.report_path = report_path
        self.skipped: Counter[str] = Counter()
        self.reasons: dict[str, str] = {}
        self.written: int | None = None
        self._seen: set[str] = set()
        self.summary_rank: int | None = None  # set on ranks other than 0 by gather(): rank 0 prints the summary

    def note_written(self, file: str) -> None:
        """Count an input whose outputs were all written (for the final summary)."""
        self.written = (self.written or 0) + 1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.summarise)

    def record(self, message: str) -> None:
        """Record a problem found outside a batch (e.g. a whole file rejected at inference)."""
        if message and message not in self._seen:
            self._seen.add(message)
            path = message.split(": ", 1)[0]
            self.skipped[path] += 1
            self.reasons.setdefault(path, message[len(path) + 2 :] or message)

    def record_error(self, err: BaseException) -> None:
        """Record a file rejected before the run (e.g. by a tolerant dataset scan) and log it."""
        logger.warning("skipping bad file: %s", err)
        self.record(str(err))

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        if isinstance(batch, Mapping):
            entries = batch.get("skipped", [])
        elif isinstance(batch, list):  # decollated: one dict per sample
            entries = [item.get("skipped", "") for item in batch if isinstance(item, Mapping)]
        else:
            return
        for entry in entries:
            for message in str(entry).splitlines():
                self.record(message)

    def summarise(self, engine: Engine | None = None) -> None:
        if not self.skipped:
            return
        lines = [f"  {count:4d} item(s)  {path}" for path, count in sorted(self.skipped.items())]
        logger.warning(
            "%s skipped %d bad item(s) in %d file(s):\n%s", self.name, self.total, len(self.skipped), "\n".join(lines)
        )

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def gather(self) -> None:
        """Under torchrun: merge every rank's records into every rank's report (a no-op in one process).

        Then each rank's :meth:`raise_if_any` gives the same exit status; an item recorded by several ranks
        (DDP pads its shards by repetition) counts once. Only global rank 0 keeps ``report_path``, so
        ``skipped_files.json`` is written once.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        shards = gather_objects((sorted(self._seen), self.written), "the bad-data records")
        self.skipped, self.reasons, self._seen = Counter(), {}, set()
        for messages, _ in shards:
            for message in messages:
                self.record(message)
        written = [w for _, w in shards if w is not None]
        self.written = sum(written) if written else None
        if dist.get_rank() != 0:
            self.report_path = None
            self.summary_rank = dist.get_rank()

    def _write_report(self) -> str | None:
        if self.report_path is None:
            return None

        rows = [{"file": f, "items": n, "reason": self.reasons.get(f, "")} for f, n in sorted(self.skipped.items())]
        text = json.dumps({"run": self.name, "files_written": self.written, "skipped": rows}, indent=1) + "\n"
        atomic_write(self.report_path, lambda tmp: Path(tmp).write_text(text))
        return str(self.report_path)

    def raise_if_any(self) -> None:
        """Raise :class:`SkippedDataError` whose message is the run's summary, if anything was skipped."""
        if not self.skipped:
            return
        if self.summary_rank is not None:
            raise SkippedDataError(
                f"{self.name} skipped {self.total} bad item(s) in {len(self.skipped)} file(s) on some rank(s); "
                f"rank 0 prints the summary (this is rank {self.summary_rank})"
            )
        written = "" if self.written is None else f"{self.written} file(s) written, "
        lines = [
            f"{self.name} finished but skipped {self.total} bad item(s) in {len(self.skipped)} file(s) "
            f"({written}exit status 1):"
        ]
        lines += [f"  {f}: {self.reasons.get(f, '')}"[:300] for f in sorted(self.skipped)]
        report = self._write_report()
        if report is not None:
            lines.append(f"full report: {report}")
        raise SkippedDataError("\n".join(lines))
