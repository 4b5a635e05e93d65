"""TensorBoard images at every validation: one example per modality, whole field of view, worth opening.

For each modality the first validation image of that modality is shown (the same one every epoch, since the
validation order is fixed), as magnitude, drawn the way ITK-SNAP/3D Slicer draw the exported NIfTI
(:mod:`bundle.io.orientation`), with one window (from the target) shared by zero-filled, reconstruction and
target, each enlarged to at least ``min_size`` pixels on its long side. Tags (``tag`` = ``"val"``):

* ``val/<Modality>/zero_filled``, ``val/<Modality>/recon``, ``val/<Modality>/target``: grey panels;
* ``val/<Modality>/error``: ``|recon - target|`` times a whole gain, logged as text ``val/<Modality>/error_gain``;
* ``val/<Modality>/comparison``: RGB row of the four panels with the ranking ROI outlined in red.
"""

from __future__ import annotations

import numpy as np
from ignite.engine import Engine, Events

from bundle.io.orientation import to_display
from bundle.io.preview import enlarge, to_uint8, window
from bundle.io.report import comparison_row
from bundle.mri import roi_bounds, zero_filled_image

__all__ = ["ReconImageWriter"]


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


class ReconImageWriter:
    """Writes the per-modality images above at the end of every validation run (step = the trainer's epoch).

    Args:
        summary_writer: a ``SummaryWriter``; created lazily in ``log_dir`` when ``None``.
        log_dir: TensorBoard folder (the training ``output_dir``).
        num_adj_frames: frames stacked in the network input (to find the centre frame for zero-filling).
        tag: prefix of every tag.
        min_size: least long side of every panel, in pixels.
    """

    def __init__(
        self,
        summary_writer=None,
        log_dir: str = "./runs",
        num_adj_frames: int = 5,
        tag: str = "val",
        min_size: int = 256,
    ):
        self._writer = summary_writer
        self.log_dir = log_dir
        self.num_adj_frames = int(num_adj_frames)
        self.tag = tag
        self.min_size = int(min_size)
        self._examples: dict[str, dict] = {}

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def _reset(self, engine: Engine) -> None:
        self._examples = {}

    def __call__(self, engine: Engine) -> None:
        """Keep the first image of every modality not seen yet in this run (only those are copied to the host)."""

        output = engine.state.output
        label = output["label"]
        modalities = label.get("modality")
        modalities = [str(m) for m in (modalities if modalities is not None else [""] * len(label["target"]))]
        wanted = [i for i, m in enumerate(modalities) if m not in self._examples]
        if not wanted:
            return
        pred = _first(output["pred"]).detach()
        zero_filled = zero_filled_image(output["image"][wanted], self.num_adj_frames)
        for k, i in enumerate(wanted):
            if modalities[i] in self._examples:
                continue  # two images of one new modality in the same batch: the first wins
            self._examples[modalities[i]] = {
                "zero_filled": zero_filled[k, 0].float().cpu().numpy(),
                "recon": pred[i, 0].float().cpu().numpy(),
                "target": label["target"][i, 0].float().cpu().numpy(),
            }

    def write(self, engine: Engine) -> None:

        step = engine.state.epoch
        for modality, ex in sorted(self._examples.items()):
            base = f"{self.tag}/{modality}" if modality else self.tag
            row, gain = comparison_row(ex["zero_filled"], ex["recon"], ex["target"], roi_bounds(*ex["target"].shape))
            lo, hi = window(ex["target"])
            panels = {
                "zero_filled": ex["zero_filled"],
                "recon": ex["recon"],
                "target": ex["target"],
                "error": np.abs(ex["recon"] - ex["target"]) * gain,
            }
            for name, image in panels.items():
                picture = enlarge(to_uint8(to_display(np.abs(image)), lo, hi), self.min_size)
                self.writer.add_image(f"{base}/{name}", picture, step, dataformats="HW")
            self.writer.add_image(f"{base}/comparison", row, step, dataformats="HWC")
            self.writer.add_text(f"{base}/error_gain", f"|error| x {gain:g}", step)
        self.writer.flush()
