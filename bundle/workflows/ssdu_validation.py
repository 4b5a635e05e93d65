"""Validation without references: the normalised k-space error on held-out acquired lines Γ (self-supervised runs).

Each validation item's input is Ω \\ Γ (``SSDUSplitd(mode="validate")``), and its loss keys hold y on Γ. The key
metric is the mean over items of ``‖ŷ_Γ − y_Γ‖₂² / ‖y_Γ‖₂²`` (lower is better; it selects the best model and drives
early stopping). Items whose file has a fully sampled reference also get the usual image metrics
(:class:`ReferenceImageMetric`), reported beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from bundle.losses.ssdu import masked_kspace_errors
from bundle.workflows.validation import ChallengeMetric

__all__ = ["HeldOutLinesMetric", "ReferenceImageMetric", "EarlyStopOnMetric", "lower_is_better"]

logger = logging.getLogger(__name__)


def lower_is_better(current: float, previous: float) -> bool:
    """``metric_cmp_fn`` of an evaluator whose key metric is an error."""
    return current < previous


class HeldOutLinesMetric(Metric):
    """Normalised k-space error on Γ: ``compute`` gives the mean NMSE over items; ``completed`` also puts
    ``<prefix>gamma_loss`` (the SSDU loss form, 0.5·L2 + 0.5·L1 ratios) into ``engine.state.metrics``."""

    required_output_keys = ("pred", "label")

    def __init__(self, prefix: str = "val_", output_transform: Callable = lambda x: x):
        self.prefix = prefix
        self.nmse: list[float] = []
        self.loss: list[float] = []
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self.nmse, self.loss = [], []

    def update(self, output: Sequence) -> None:
        pred, label = output
        k_pred = pred[1] if isinstance(pred, (tuple, list)) else pred
        with torch.no_grad():
            e = masked_kspace_errors(k_pred.detach(), label["kspace_loss"], label["loss_mask"])
        self.nmse.extend(e["nmse"].float().cpu().tolist())
        self.loss.extend((0.5 * e["l2"] + 0.5 * e["l1"]).float().cpu().tolist())

    def _gather(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        shards: list = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (self.nmse, self.loss))
        self.nmse = [v for s in shards for v in s[0]]
        self.loss = [v for s in shards for v in s[1]]

    def compute(self) -> float:
        if not self.nmse:
            raise RuntimeError("HeldOutLinesMetric has no items: the validation set is empty")
        return float(np.mean(self.nmse))

    def completed(self, engine: Engine, name: str) -> None:
        self._gather()
        engine.state.metrics[name] = self.compute()
        engine.state.metrics[f"{self.prefix}gamma_loss"] = float(np.mean(self.loss))


class ReferenceImageMetric(ChallengeMetric):
    """:class:`ChallengeMetric` over the items that have a fully sampled reference (``target`` in the label);
    batches without one are skipped, and with none at all no image metric is reported."""

    def update(self, output: Sequence) -> None:
        _, _, label = output
        if "target" in label:
            super().update(output)

    def completed(self, engine: Engine, name: str) -> None:
        self._gather_rows()
        if self.rows:
            super().completed(engine, name)


class EarlyStopOnMetric:
    """Stops the trainer when ``metric_name`` of ``evaluator`` has not improved for ``patience`` validations.

    Attach to the trainer after the ``ValidationHandler`` (it reads the metric the validation of the same epoch
    wrote). ``patience`` 0 disables it. Its state (best value, validations without improvement) belongs in the
    checkpoint, so a resumed run stops where the uninterrupted one would.
    """

    def __init__(self, evaluator: Engine, metric_name: str = "val_gamma", patience: int = 0, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if int(patience) < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.evaluator, self.metric_name, self.patience, self.mode = evaluator, metric_name, int(patience), mode
        self.best: float | None = None
        self.bad = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state) -> None:
        self.best, self.bad = state["best"], int(state["bad"])

    def __call__(self, engine: Engine) -> None:
        state = self.evaluator.state
        if not self.patience or getattr(state, "epoch", None) != engine.state.epoch:
            return  # off, or no validation in this epoch
        value = state.metrics.get(self.metric_name)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            logger.info(
                "early stop: %s has not improved on %.5f for %d validation(s)", self.metric_name, self.best, self.bad
            )
            engine.terminate()
