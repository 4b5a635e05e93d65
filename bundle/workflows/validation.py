"""Validation with the challenge metrics, the zero-filled baseline and metric tables (TensorBoard images: tb_images)."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from bundle.data.layout import site_of
from bundle.files import atomic_write
from bundle.metrics import (
    METRIC_CHOICES,
    aggregate,
    describe_metric,
    official_adjusted_means,
    official_reference,
    release_metrics,
    select_frames,
    select_slices,
    series_type,
)
from bundle.mri import crop_roi, zero_filled_image
from bundle.workflows.distributed import gather_objects, is_main_process

__all__ = ["ChallengeMetric", "MetricsTableWriter", "select_ranking_items", "validation_items"]

logger = logging.getLogger(__name__)
METRICS = ("ssim", "psnr", "nmse")


def validation_items(items: Sequence[Mapping], ranking_slices_only: bool, max_items: int | None = None) -> list[dict]:
    """The items validation scores: the ranking slices only (:func:`select_ranking_items`) or all of them, then at
    most ``max_items`` (``None``: all)."""
    chosen = select_ranking_items(items) if ranking_slices_only else [dict(item) for item in items]
    return chosen if max_items is None else chosen[:max_items]


def select_ranking_items(items: Sequence[Mapping]) -> list[dict]:
    """Keep only the (slice, frame) pairs the challenge scores (run4Ranking selection, docs/design.md "Evaluation")."""
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
        metric_release: how each image is scored (:func:`bundle.metrics.release_metrics`): ``"max"`` (default;
            each image divided by its max, the HyperCMR paper's tables) or ``"2023"``, ``"2024"``, ``"2025"``:
            exactly as that release's official scorer, its choice of reference image included.
        datalist: the items being scored; it gives the number of files per centre and vendor that the 2025
            adjusted means divide by (files that never reach the metric, e.g. skipped as bad, count as zero).
    """

    # Ignite hands ``update`` these entries of the engine output, in this order.
    required_output_keys = ("image", "pred", "label")

    def __init__(
        self,
        num_adj_frames: int = 5,
        prefix: str = "val_",
        output_transform: Callable = lambda x: x,
        metric_release: str = "max",
        datalist: Sequence[Mapping] | None = None,
    ):
        self.num_adj_frames = int(num_adj_frames)
        self.prefix = prefix
        metric_release = str(metric_release)
        if metric_release not in METRIC_CHOICES:
            raise ValueError(
                f"metric_release must be one of {METRIC_CHOICES} (or 'auto' in configs), got {metric_release!r}"
            )
        self.metric_release = metric_release
        self.expected = _expected_files(datalist or ())
        self.rows: list[dict] = []
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self.rows = []

    def update(self, output: Sequence) -> None:
        image, pred, label = output
        pred = pred[0] if isinstance(pred, (tuple, list)) else pred
        target = label["target"]
        zero_filled = zero_filled_image(image, self.num_adj_frames)
        pred_roi = crop_roi(pred.detach().float()[:, 0]).cpu().numpy()
        target_roi = crop_roi(target.detach().float()[:, 0]).cpu().numpy()
        zf_roi = crop_roi(zero_filled.detach().float()[:, 0]).cpu().numpy()
        files = _to_list(label["file"])
        references = self._references(label, len(files))
        recon = release_metrics(pred_roi, target_roi, self.metric_release, references)
        baseline = release_metrics(zf_roi, target_roi, self.metric_release, references)
        modalities = _to_list(label.get("modality", [""] * len(files)))
        zs, ts = _to_list(label.get("z", [-1] * len(files))), _to_list(label.get("t", [-1] * len(files)))
        patterns = _to_list(label.get("pattern", [""] * len(files)))
        accelerations = _to_list(label.get("acceleration", [-1] * len(files)))
        patients = _to_list(label.get("patient", [""] * len(files)))
        for i, file in enumerate(files):
            row = {"file": file, "modality": modalities[i], "z": zs[i], "t": ts[i]}
            row.update(pattern=str(patterns[i]), acceleration=int(accelerations[i]))
            center, vendor = site_of(str(patients[i]))
            if center is not None:
                row.update(center=center, vendor=vendor)
            for metric in METRICS:
                row[metric] = float(recon[metric][i])
                row[f"zf_{metric}"] = float(baseline[metric][i])
            self.rows.append(row)

    def _references(self, label: Mapping, n: int) -> list[str] | None:
        """Per item, the image the official scorer treats as reference (it depends on the file's selection)."""
        if self.metric_release == "max":
            return None
        nzs, nts = _to_list(label.get("nz", [-1] * n)), _to_list(label.get("nt", [-1] * n))
        series = _to_list(label.get("series", [""] * n))
        out = []
        for nz, nt, name in zip(nzs, nts, series):
            if int(nz) < 1 or int(nt) < 1:
                out.append("gt")
                continue
            kind = series_type(str(name))
            n_frames = len(select_frames(int(nt), kind))
            out.append(official_reference(self.metric_release, len(select_slices(int(nz))), n_frames))
        return out

    def tables(self) -> dict:
        """Per-file, per-modality and overall means of every metric (:func:`bundle.metrics.aggregate`), the
        metric used (``metric``) and, for CMRxRecon2025 data, ``per_center_vendor`` and ``official_adjusted``."""

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
        tables["metric"] = {"release": self.metric_release, "description": _describe(self.metric_release)}
        if any("center" in row for row in self.rows):
            tables.update(_site_tables(result["per_file"], grouped, columns, self.expected))
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
        shards = gather_objects(self.rows, "the metric rows")
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


def _expected_files(items: Sequence[Mapping]) -> dict[tuple[str, str], int]:
    """Number of distinct files per ``(center, vendor)`` among ``items`` (CMRxRecon2025 items only)."""
    files: dict[tuple[str, str], set] = defaultdict(set)
    for item in items:
        center, vendor = site_of(str(item.get("patient", "")))
        if center is not None:
            files[(center, vendor)].add(item["file"])
    return {site: len(names) for site, names in files.items()}


def _describe(metric_release: str) -> str:
    if metric_release == "max":
        return (
            "each image divided by its max (float64), skimage SSIM/PSNR with data_range = max of the normalised GT "
            "(the HyperCMR paper's tables; the CMRxRecon2023 rule)"
        )
    return describe_metric(metric_release)


def _site_tables(per_file: Sequence[Mapping], grouped: Mapping, columns: Sequence[str], expected: Mapping) -> dict:
    """Per (centre, vendor) means and the 2025 scorer's adjusted means (missing files count as zero)."""
    sites: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in per_file:
        first = grouped[row["file"]][0]
        sites[(first["center"], first["vendor"])].append(row)
    per_site = [
        {"center": c, "vendor": v, "files": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in columns}}
        for (c, v), rows in sorted(sites.items())
    ]
    rows = [
        {"center": grouped[r["file"]][0]["center"], "vendor": grouped[r["file"]][0]["vendor"], **r} for r in per_file
    ]
    counts = {site: max(n, len(sites.get(site, []))) for site, n in expected.items()} or {
        site: len(files) for site, files in sites.items()
    }
    adjusted = official_adjusted_means(rows, counts, group_keys=("center", "vendor"), metrics=("psnr", "ssim", "nmse"))
    per_group = [{"center": c, "vendor": v, **values} for (c, v), values in adjusted["per_group"].items()]
    official = {k: adjusted[k] for k in ("psnr_adj", "ssim_adj", "nmse_adj", "n_groups")}
    return {"per_center_vendor": per_site, "official_adjusted": {**official, "per_group": per_group}}


def _per_modality_acceleration(rows: Sequence[Mapping], columns: Sequence[str]) -> list[dict]:
    """Means per (modality, pattern, acceleration): images averaged per file first, then files (as per modality).

    A file's slices may be scored under different masks (validation draws one per item), so a file enters every
    group it has images in, with the mean of those images only.
    """
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
        tables = getattr(engine.state, "challenge_tables", None)
        if tables is None:
            raise RuntimeError("MetricsTableWriter needs a ChallengeMetric attached to the same engine")
        if not is_main_process():  # under torchrun every rank holds the gathered tables; rank 0 writes them
            return
        os.makedirs(self.output_dir, exist_ok=True)
        base = Path(self.output_dir) / self.prefix

        atomic_write(f"{base}.json", lambda tmp: Path(tmp).write_text(json.dumps(tables, indent=2)))
        metric = tables.get("metric", {}).get("release", "max")
        for level in ("per_file", "per_modality", "per_center_vendor"):
            rows = [{**row, "metric": metric} for row in tables.get(level, [])]  # the CSV names its metric too
            if rows:
                atomic_write(f"{base}_{level}.csv", lambda tmp, rows=rows: _write_csv(tmp, rows))
        overall = tables["overall"]
        logger.info(
            "overall (metric %s): SSIM %.4f PSNR %.2f NMSE %.4f (zero-filled: SSIM %.4f PSNR %.2f NMSE %.4f); "
            "tables in %s",
            metric,
            overall["ssim"],
            overall["psnr"],
            overall["nmse"],
            overall["zf_ssim"],
            overall["zf_psnr"],
            overall["zf_nmse"],
            self.output_dir,
        )
