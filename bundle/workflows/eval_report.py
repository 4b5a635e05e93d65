"""``report.html`` of an evaluation run (:func:`bundle.io.report.write_eval_report`), written at ``COMPLETED``.

During the run it keeps, per file, the first validation image of that file (zero-filled, reconstruction and
target, whole field of view, float16 on the host: about ``6 * H * W`` bytes per file); at the end it shows the
best and the worst file of each modality by the file's mean SSIM, from the tables of the
:class:`~bundle.workflows.ChallengeMetric` attached to the same engine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events

from bundle.io.report import comparison_row, write_eval_report
from bundle.mri import roi_bounds, zero_filled_image
from bundle.workflows.distributed import gather_objects

__all__ = ["EvalReportWriter", "best_and_worst"]

logger = logging.getLogger(__name__)


def best_and_worst(per_file: list[dict], key: str = "ssim") -> list[tuple[str, dict]]:
    """Per modality, ``("best <Modality>", row)`` and ``("worst <Modality>", row)`` by ``key`` (one if one file)."""
    chosen = []
    for modality in sorted({str(r["modality"]) for r in per_file}):
        rows = sorted((r for r in per_file if str(r["modality"]) == modality), key=lambda r: (-r[key], r["file"]))
        chosen.append((f"best {modality}", rows[0]))
        if len(rows) > 1:
            chosen.append((f"worst {modality}", rows[-1]))
    return chosen


class EvalReportWriter:
    """Writes ``<output_dir>/<name>`` when the evaluation completes.

    Args:
        output_dir: where to write (the evaluation ``output_dir``).
        num_adj_frames: frames stacked in the network input (to find the centre frame for zero-filling).
        name: file name of the report.
    """

    def __init__(self, output_dir: str, num_adj_frames: int = 5, name: str = "report.html"):
        self.output_dir = output_dir
        self.num_adj_frames = int(num_adj_frames)
        self.name = name
        self._images: dict[str, dict] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._images.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep)
        engine.add_event_handler(Events.COMPLETED, self)

    def _keep(self, engine: Engine) -> None:

        output = engine.state.output
        label = output["label"]
        files = [str(f) for f in label["file"]]
        wanted = [i for i, f in enumerate(files) if f not in self._images]
        if not wanted:
            return
        pred = output["pred"][0] if isinstance(output["pred"], (tuple, list)) else output["pred"]
        zero_filled = zero_filled_image(output["image"][wanted], self.num_adj_frames)
        zs, ts = label.get("z"), label.get("t")
        for k, i in enumerate(wanted):
            if files[i] in self._images:
                continue
            self._images[files[i]] = {
                "zero_filled": zero_filled[k, 0].float().cpu().numpy().astype(np.float16),
                "recon": pred[i, 0].detach().float().cpu().numpy().astype(np.float16),
                "target": label["target"][i, 0].float().cpu().numpy().astype(np.float16),
                "z": int(zs[i]) if zs is not None else -1,
                "t": int(ts[i]) if ts is not None else -1,
            }

    def __call__(self, engine: Engine) -> Path | None:
        import torch.distributed as dist

        tables = getattr(engine.state, "challenge_tables", None)
        if tables is None:
            raise RuntimeError("EvalReportWriter needs a ChallengeMetric attached to the same engine")
        chosen = best_and_worst(tables["per_file"])
        images_of = self._images
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank holds the gathered tables: the images of the chosen files come from whichever rank
            # scored them (a few small arrays each), and rank 0 writes the report.
            wanted = {str(row["file"]) for _, row in chosen}
            shards = gather_objects({f: v for f, v in self._images.items() if f in wanted}, "the report images")
            if dist.get_rank() != 0:
                return None
            images_of = {}
            for shard in reversed(shards):  # the lowest rank's copy wins (DDP pads shards by repetition)
                images_of.update(shard)
        examples = []
        for title, row in chosen:
            images = images_of.get(str(row["file"]))
            if images is None:  # scored on another process (DDP): its pixels are not here
                logger.warning("report: no image of %s on this process; not shown", row["file"])
                continue
            target = images["target"].astype(np.float32)
            picture, gain = comparison_row(images["zero_filled"], images["recon"], target, roi_bounds(*target.shape))
            where = f"slice {images['z']}, frame {images['t']}; file SSIM {row['ssim']:.4f}"
            examples.append({"title": title, "file": f"{row['file']} ({where})", "image": picture, "gain": gain})
        os.makedirs(self.output_dir, exist_ok=True)
        path = write_eval_report(
            Path(self.output_dir) / self.name, tables, getattr(engine.state, "challenge_rows", []), examples
        )
        logger.info("evaluation report: %s", path)
        return path
