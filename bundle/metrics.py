"""Challenge evaluation: ``run4Ranking`` crop/selection and the skimage metrics (``docs/design.md``, "Evaluation").

Everything is NumPy in MATLAB axis order ``(nx, ny, ...)``. The metric SSIM is skimage's (7×7 uniform
window, sample covariance), which is **not** the Gaussian SSIM used for training (:mod:`bundle.losses.ssim`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bundle.data.index import series_type
from bundle.mri import crop_roi, rhu, rss_np

__all__ = [
    "METRICS",
    "series_type",
    "select_slices",
    "select_frames",
    "run4ranking",
    "challenge_metrics",
    "aggregate",
]

METRICS = ("ssim", "psnr", "nmse")


def select_slices(nz: int) -> list[int]:
    """0-based slices kept by run4Ranking: all if ``nz < 3``, else ``[r − 2, r − 1]`` with ``r = rhu(nz/2)``."""
    if nz < 1:
        raise ValueError(f"a volume needs at least one slice, got nz={nz}")
    if nz < 3:
        return list(range(nz))
    r = rhu(nz / 2)
    return [r - 2, r - 1]


def select_frames(nt: int, kind: str) -> list[int]:
    """0-based frames kept by run4Ranking: mapping -> all; cine-like -> 0, 1, 2 (fewer if ``nt < 3``)."""
    if nt < 1:
        raise ValueError(f"a series needs at least one frame, got nt={nt}")
    if kind == "mapping":
        return list(range(nt))
    if kind == "blackblood":
        return [0]
    return list(range(min(3, nt)))


def run4ranking(volume: np.ndarray, series: str | os.PathLike, coil_combined: bool = False) -> np.ndarray:
    """The official ``run4Ranking`` crop and selection, returning ``img4ranking`` (float32, MATLAB order).

    Args:
        volume: MATLAB axis order.
            ``coil_combined=False`` (default): complex coil images ``(nx, ny, nc, nz, nt)``, or
            ``(nx, ny, nc, nz)`` for BlackBlood; combined by RSS over the coil axis 2.
            ``coil_combined=True``: an already combined image ``(nx, ny, nz, nt)``, or ``(nx, ny, nz)`` for
            BlackBlood; its magnitude is taken.
        series: the file name (or stem, or path), which decides the series type (:func:`series_type`).
        coil_combined: see ``volume``.

    Returns:
        ``(sx, sy, nz_sel, nt_sel)``, or ``(sx, sy, nz_sel)`` for BlackBlood, with
        ``(sx, sy) = (rhu(nx/3), rhu(ny/2))`` centre-cropped from ``floor(n/2) + ceil(−s/2)``.
    """
    kind = series_type(series)
    vol = np.asarray(volume)
    ndim = (3 if kind == "blackblood" else 4) + (0 if coil_combined else 1)
    if kind == "blackblood" and vol.ndim == ndim + 1 and vol.shape[-1] == 1:
        vol = vol[..., 0]  # tolerate a singleton time axis on the time-less BlackBlood volume
    if vol.ndim != ndim:
        layout = "(nx, ny" + ("" if coil_combined else ", nc") + ", nz" + ("" if kind == "blackblood" else ", nt") + ")"
        raise ValueError(f"{os.fspath(series)}: expected a {kind} volume {layout}, got shape {vol.shape}")
    img = np.abs(vol) if coil_combined else rss_np(vol, axis=2)
    img = crop_roi(img, axes=(0, 1))[:, :, select_slices(img.shape[2])]
    if kind != "blackblood":
        img = img[..., select_frames(img.shape[3], kind)]
    return np.ascontiguousarray(img, dtype=np.float32)


def _normalize(x: np.ndarray, variant: str) -> np.ndarray:
    """Per-image scale: by the max (2023) or the 99.5th percentile of ``|x|`` (2025); a zero scale is skipped."""
    scale = x.max() if variant == "2023" else np.percentile(np.abs(x), 99.5)
    return x / scale if scale != 0 else x


def challenge_metrics(recon: np.ndarray, target: np.ndarray, variant: str = "2023") -> dict:
    """Per-image SSIM, PSNR and NMSE of ``(N, H, W)`` (or ``(H, W)``) magnitude images, already selected and cropped.

    Each image is normalised on its own, prediction and GT separately (variant ``"2023"``: by its max;
    ``"2025"``: by its 99.5th percentile of ``|x|``, linear interpolation, no clipping; a zero scale leaves
    the image as is). Then, with ``g'``, ``p'`` the normalised GT and prediction:

    * PSNR = ``peak_signal_noise_ratio(g', p', data_range=max(g'))``;
    * SSIM = ``structural_similarity(g', p', data_range=max(g'))``: skimage defaults, 7×7 uniform window,
      sample covariance, 3-pixel border cropped from the mean;
    * NMSE = ``‖g' − p'‖² / ‖g'‖²``.

    The 2025 evaluator swaps its arguments for 2-D/3-D inputs, so its data_range there is max(normalised
    prediction). That quirk is **not** reproduced: data_range is always max(normalised GT).

    Returns ``{"ssim", "psnr", "nmse"}`` arrays ``(N,)`` and their means ``{"ssim_mean", ...}``.
    """
    if variant not in ("2023", "2025"):
        raise ValueError(f"variant must be '2023' or '2025', got {variant!r}")
    p_all = np.asarray(recon, dtype=np.float64)
    g_all = np.asarray(target, dtype=np.float64)
    if p_all.shape != g_all.shape:
        raise ValueError(f"recon {p_all.shape} and target {g_all.shape} differ in shape")
    if p_all.ndim == 2:
        p_all, g_all = p_all[None], g_all[None]
    if p_all.ndim != 3:
        raise ValueError(f"expected (N, H, W) or (H, W) images, got shape {p_all.shape}")
    out = {m: np.empty(len(g_all)) for m in METRICS}
    for i, (p, g) in enumerate(zip(p_all, g_all)):
        g, p = _normalize(g, variant), _normalize(p, variant)
        data_range = g.max()
        with np.errstate(divide="ignore"):  # identical images: PSNR = inf, as skimage returns
            out["psnr"][i] = peak_signal_noise_ratio(g, p, data_range=data_range)
        out["ssim"][i] = structural_similarity(g, p, data_range=data_range)
        out["nmse"][i] = np.sum((g - p) ** 2) / np.sum(g**2)
    out.update({f"{m}_mean": float(out[m].mean()) for m in METRICS})
    return out


def aggregate(per_file_rows: Iterable[Mapping], metrics: Sequence[str] = METRICS) -> dict:
    """Challenge aggregation of per-file results.

    Each row is a mapping with a ``"modality"`` key (e.g. ``"Cine"``) and, per metric, either the per-image
    values of one file (averaged here) or the file's mean already. Per modality: mean over its files.
    Overall: the **unweighted** mean over modalities (the HyperCMR paper's "Overall" row).

    Returns ``{"per_file": [{"modality", metric...}], "per_modality": {modality: {metric..., "n_files"}},
    "overall": {metric...}}``.
    """
    per_file = []
    for row in per_file_rows:
        entry = {k: v for k, v in row.items() if k not in metrics}
        entry.update({m: float(np.mean(row[m])) for m in metrics})
        per_file.append(entry)
    if not per_file:
        raise ValueError("aggregate needs at least one per-file row")
    groups: dict[str, list[dict]] = {}
    for entry in per_file:
        groups.setdefault(str(entry["modality"]), []).append(entry)
    per_modality = {
        mod: {**{m: float(np.mean([e[m] for e in rows])) for m in metrics}, "n_files": len(rows)}
        for mod, rows in sorted(groups.items())
    }
    overall = {m: float(np.mean([v[m] for v in per_modality.values()])) for m in metrics}
    return {"per_file": per_file, "per_modality": per_modality, "overall": overall}
