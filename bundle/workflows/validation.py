"""Validation with the challenge metrics, the zero-filled baseline and metric tables (TensorBoard images: tb_images)."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from bundle.mri import crop_roi, ifft2c, rss
from bundle.workflows.distributed import is_main_process

__all__ = ["ChallengeMetric", "MetricsTableWriter", "ReconImageWriter", "zero_filled_image", "select_ranking_items"]

logger = logging.getLogger(__name__)
METRICS = ("ssim", "psnr", "nmse")


def zero_filled_image(masked_kspace: torch.Tensor, num_adj_frames: int) -> torch.Tensor:
    """RSS of the centre frame of ``(B, F*C, H, W)`` complex masked k-space → ``(B, 1, H, W)``."""
    coils = masked_kspace.shape[1] // num_adj_frames
    centre = num_adj_frames // 2
    k = masked_kspace[:, centre * coils : (centre + 1) * coils]
    return rss(ifft2c(k.to(torch.complex64)), dim=1).unsqueeze(1)


def select_ranking_items(items: Sequence[Mapping]) -> list[dict]:
    """Keep only the (slice, frame) pairs the challenge scores (run4Ranking selection, docs/design.md "Evaluation")."""
    from bundle.metrics import select_frames, select_slices, series_type

    kept = []
    for item in items:
        slices = select_slices(int(item["nz"]))
        frames = select_frames(int(item["nt"]), series_type(str(item["series"])))
        if int(item["z"]) in slices and int(item["t"]) in frames:
            kept.append(dict(item))
    return kept


def _to_list(values) -> list:
    if isinstance(values, torch.Tensor):
        return values.tolist()
    return list(values)


class ChallengeMetric(Metric):
    """SSIM/PSNR/NMSE as the challenge computes them, for the reconstruction and the zero-filled input.

    Every 2-D image is cropped to the challenge ROI and max-normalised on its own; images are averaged per
    file, files per modality, and the overall value is the unweighted mean over modalities (as in the
    HyperCMR paper's tables). ``compute`` returns the overall SSIM (the key metric); ``completed`` also puts
    ``<name>_psnr``, ``<name>_nmse``, ``<prefix>zf_*`` and per-modality values into ``engine.state.metrics``.

    Args:
        num_adj_frames: frames stacked in the network input (to find the centre frame for zero-filling).
        prefix: prefix of every metric name, e.g. ``"val_"``.
    """

    # Ignite hands ``update`` these entries of the engine output, in this order.
    required_output_keys = ("image", "pred", "label")

    def __init__(self, num_adj_frames: int = 5, prefix: str = "val_", output_transform: Callable = lambda x: x):
        self.num_adj_frames = int(num_adj_frames)
        self.prefix = prefix
        self.rows: list[dict] = []
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self.rows = []

    def update(self, output: Sequence) -> None:
        from bundle.metrics import challenge_metrics

        image, pred, label = output
        pred = pred[0] if isinstance(pred, (tuple, list)) else pred
        target = label["target"]
        zero_filled = zero_filled_image(image, self.num_adj_frames)
        pred_roi = crop_roi(pred.detach().float()[:, 0]).cpu().numpy()
        target_roi = crop_roi(target.detach().float()[:, 0]).cpu().numpy()
        zf_roi = crop_roi(zero_filled.detach().float()[:, 0]).cpu().numpy()
        recon = challenge_metrics(pred_roi, target_roi)
        baseline = challenge_metrics(zf_roi, target_roi)
        files = _to_list(label["file"])
        modalities = _to_list(label.get("modality", [""] * len(files)))
        zs, ts = _to_list(label.get("z", [-1] * len(files))), _to_list(label.get("t", [-1] * len(files)))
        patterns = _to_list(label.get("pattern", [""] * len(files)))
        accelerations = _to_list(label.get("acceleration", [-1] * len(files)))
        for i, file in enumerate(files):
            row = {"file": file, "modality": modalities[i], "z": zs[i], "t": ts[i]}
            row.update(pattern=str(patterns[i]), acceleration=int(accelerations[i]))
            for metric in METRICS:
                row[metric] = float(recon[metric][i])
                row[f"zf_{metric}"] = float(baseline[metric][i])
            self.rows.append(row)

    def tables(self) -> dict:
        """Per-file, per-modality and overall means of every metric (:func:`bundle.metrics.aggregate`)."""
        from bundle.metrics import aggregate

        columns = list(METRICS) + [f"zf_{m}" for m in METRICS]
        grouped: dict[str, list[dict]] = defaultdict(list)
        for row in self.rows:
            grouped[row["file"]].append(row)
        files = [
            {
                "file": file,
                "modality": rows[0]["modality"],
                "images": len(rows),
                **{c: [r[c] for r in rows] for c in columns},
            }
            for file, rows in sorted(grouped.items())
        ]
        result = aggregate(files, metrics=columns)
        per_modality = [
            {"modality": modality, "files": row["n_files"], **{c: row[c] for c in columns}}
            for modality, row in result["per_modality"].items()
        ]
        overall = {"files": len(files), "images": len(self.rows), **result["overall"]}
        tables = {"per_file": result["per_file"], "per_modality": per_modality, "overall": overall}
        tables["per_modality_acceleration"] = _per_modality_acceleration(self.rows, columns)
        return tables

    def compute(self) -> float:
        if not self.rows:
            raise RuntimeError("ChallengeMetric has no images: the validation set is empty")
        return self.tables()["overall"]["ssim"]

    def _gather_rows(self) -> None:
        # Under DDP every rank scored its own shard (padded by repetition): merge and drop duplicates.
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        shards: list = [None] * dist.get_world_size()
        dist.all_gather_object(shards, self.rows)
        unique = {(r["file"], r["z"], r["t"]): r for shard in shards for r in shard}
        self.rows = [unique[key] for key in sorted(unique)]

    def completed(self, engine: Engine, name: str) -> None:
        self._gather_rows()
        tables = self.tables()
        overall = tables["overall"]
        engine.state.metrics[name] = overall["ssim"]
        for column in ("psnr", "nmse", "zf_ssim", "zf_psnr", "zf_nmse"):
            engine.state.metrics[f"{self.prefix}{column}"] = overall[column]
        for row in tables["per_modality"]:
            for column in ("ssim", "psnr", "nmse"):
                engine.state.metrics[f"{self.prefix}{column}/{row['modality']}"] = row[column]
        engine.state.challenge_tables = tables
        engine.state.challenge_rows = list(self.rows)


def _per_modality_acceleration(rows: Sequence[Mapping], columns: Sequence[str]) -> list[dict]:
    """Means per (modality, pattern, acceleration): images averaged per file first, then files (as per modality).

    A file's slices may be scored under different masks (validation draws one per item), so a file enters every
    group it has images in, with the mean of those images only.
    """
    import numpy as np

    per_file: dict[tuple, list[Mapping]] = defaultdict(list)
    for row in rows:
        key = (str(row["modality"]), str(row.get("pattern", "")), int(row.get("acceleration", -1)), row["file"])
        per_file[key].append(row)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for (modality, pattern, acceleration, _), images in per_file.items():
        groups[(modality, pattern, acceleration)].append({c: float(np.mean([r[c] for r in images])) for c in columns})
    return [
        {
            "modality": modality,
            "pattern": pattern,
            "acceleration": acceleration,
            "files": len(files),
            **{c: float(np.mean([f[c] for f in files])) for c in columns},
        }
        for (modality, pattern, acceleration), files in sorted(groups.items())
    ]


def _write_csv(path, rows: Sequence[Mapping]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class MetricsTableWriter:
    """Writes the ChallengeMetric tables (per file, per modality, overall) as CSV and JSON at ``COMPLETED``."""

    def __init__(self, output_dir: str, prefix: str = "metrics"):
        self.output_dir = output_dir
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from bundle.io.paths import atomic_write

        tables = getattr(engine.state, "challenge_tables", None)
        if tables is None:
            raise RuntimeError("MetricsTableWriter needs a ChallengeMetric attached to the same engine")
        if not is_main_process():  # under torchrun every rank holds the gathered tables; rank 0 writes them
            return
        os.makedirs(self.output_dir, exist_ok=True)
        base = Path(self.output_dir) / self.prefix

        atomic_write(f"{base}.json", lambda tmp: Path(tmp).write_text(json.dumps(tables, indent=2)))
        for level in ("per_file", "per_modality"):
            rows = tables[level]
            if rows:
                atomic_write(f"{base}_{level}.csv", lambda tmp, rows=rows: _write_csv(tmp, rows))
        overall = tables["overall"]
        logger.info(
            "overall: SSIM %.4f PSNR %.2f NMSE %.4f (zero-filled: SSIM %.4f PSNR %.2f NMSE %.4f); tables in %s",
            overall["ssim"],
            overall["psnr"],
            overall["nmse"],
            overall["zf_ssim"],
            overall["zf_psnr"],
            overall["zf_nmse"],
            self.output_dir,
        )


# The TensorBoard image handler lives in its own module; the name stays importable from here for old configs.
from bundle.workflows.tb_images import ReconImageWriter  # noqa: E402
