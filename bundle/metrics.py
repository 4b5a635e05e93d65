"""Challenge evaluation: ``run4Ranking`` crop/selection and the skimage metrics (``docs/design.md``, "Evaluation").

Everything is NumPy in MATLAB axis order ``(nx, ny, ...)``. The metric SSIM is skimage's (7×7 uniform
window, sample covariance), which is **not** the Gaussian SSIM used for training (:mod:`bundle.losses.ssim`).

Two families of metrics live here:

* :func:`challenge_metrics`: one clean rule for every release (GT is always the reference), the numbers the
  bundle has always reported;
* :func:`official_scores` and :func:`official_adjusted_means`: the organisers' scorers of CMRxRecon 2023,
  2024 and 2025, reproduced with their quirks, so that numbers compare with the leaderboards
  (``docs/design.md``, "Official scorers").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

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
    "METRIC_CHOICES",
    "matlab_shape",
    "official_reference",
    "release_metrics",
    "METRIC_RELEASES",
    "describe_metric",
    "official_scores",
    "official_adjusted_means",
]

METRICS = ("ssim", "psnr", "nmse")

METRIC_RELEASES = ("2023", "2024", "2025")

_DESCRIPTIONS = {
    "2023": "2023: each image / its max; skimage PSNR and SSIM (7x7 uniform), data_range = max(GT'); "
    "GT is the reference; NMSE = |GT'-P'|^2/|GT'|^2 (CmrxRecon/CMRxRecon Evaluation/Evaluation.py)",
    "2024": "2024: each image z-scored, (x - mean)/std, no epsilon; skimage PSNR and SSIM (7x7 uniform), "
    "data_range = max(ref'); ref = submission for 4-D arrays, GT for 3-D (calmetric(gt, recon) quirk) "
    "(CmrxRecon/CMRxRecon2025-snippets evaluation-2024/Evaluation.py)",
    "2025": "2025: each |image| / its 99.5th percentile, no clipping, left as is if 0; skimage PSNR and SSIM "
    "(7x7 uniform), data_range = max(ref'); ref = submission for 4-D arrays, GT for 3-D and 2-D (calmetric(gt, "
    "recon) quirk) (CmrxRecon/CMRxRecon2025-snippets evaluation-2025/Evaluation.py, commit deecc8e)",
}


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


def matlab_shape(img4ranking: np.ndarray) -> np.ndarray:
    """``img4ranking`` as MATLAB holds it: trailing singleton axes beyond the first two dropped.

    run4Ranking_2025 assigns ``(x, y, slices, frames)``; MATLAB then stores ``(x, y, 2)`` for one frame of two
    slices and ``(x, y)`` for one slice, and the 2025 scorer drops a submission whose shape differs from the GT's.
    """
    arr = np.asarray(img4ranking)
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _normalize(x: np.ndarray, variant: str) -> np.ndarray:
    """Per-image scale: by the max (2023), z-score (2024) or the 99.5th percentile of ``|x|`` (2025).

    A zero scale is skipped (2024: the mean is still subtracted).
    """
    if variant == "2024":
        centred = x - x.mean()
        std = x.std()
        return centred / std if std != 0 else centred
    scale = x.max() if variant == "2023" else np.percentile(np.abs(x), 99.5)
    return x / scale if scale != 0 else x


def challenge_metrics(recon: np.ndarray, target: np.ndarray, variant: str = "2023") -> dict:
    """Per-image SSIM, PSNR and NMSE of ``(N, H, W)`` (or ``(H, W)``) magnitude images, already selected and cropped.

    Each image is normalised on its own, prediction and GT separately (variant ``"2023"``: by its max;
    ``"2024"``: z-score ``(x − mean(x)) / std(x)``, population std, a zero std leaves ``x − mean(x)``;
    ``"2025"``: by its 99.5th percentile of ``|x|``, linear interpolation, no clipping; a zero scale leaves
    the image as is). Then, with ``g'``, ``p'`` the normalised GT and prediction:

    * PSNR = ``peak_signal_noise_ratio(g', p', data_range=max(g'))``;
    * SSIM = ``structural_similarity(g', p', data_range=max(g'))``: skimage defaults, 7×7 uniform window,
      sample covariance, 3-pixel border cropped from the mean;
    * NMSE = ``‖g' − p'‖² / ‖g'‖²``.

    The official 2024 and 2025 scorers make the submission the reference for 4-D arrays (data_range =
    max(normalised prediction) there). That quirk is **not** reproduced here: data_range is always
    max(normalised GT), and everything is computed in float64. :func:`official_scores` reproduces the scorers.

    Returns ``{"ssim", "psnr", "nmse"}`` arrays ``(N,)`` and their means ``{"ssim_mean", ...}``.
    """
    if variant not in METRIC_RELEASES:
        raise ValueError(f"variant must be one of {METRIC_RELEASES}, got {variant!r}")
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


# --- The organisers' scorers, quirks included ("docs/design.md", "Official scorers") -----------------------------


def _release_name(release: str | int) -> str:
    name = str(release).strip()
    if name not in METRIC_RELEASES:
        raise ValueError(f"metric release must be one of {METRIC_RELEASES} (str or int), got {release!r}")
    return name


def describe_metric(release: str | int) -> str:
    """One line naming the normalisation, data_range, reference and source of a release's official scorer."""
    return _DESCRIPTIONS[_release_name(release)]


def _by_max(x: np.ndarray) -> np.ndarray:
    """2023: ``x / max(x)``; no guard, so an all-zero image gives NaN (0/0) as in the official code."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return x / x.max()


def _by_zscore(x: np.ndarray) -> np.ndarray:
    """2024: ``(x − mean) / std`` (population std, no epsilon); a constant image gives NaN (0/0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x - np.mean(x)) / np.std(x)


def _by_percentile(x: np.ndarray) -> np.ndarray:
    """2025: ``|x| / P99.5(|x|)`` (numpy linear interpolation, no clip); if the percentile is 0, ``|x|`` as is."""
    mag = np.abs(x)
    scale = np.percentile(mag, 99.5)
    if scale == 0:
        return mag
    return mag / scale


# release -> (per-image normalisation, the submission is the reference for 4-D arrays)
_OFFICIAL: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {
    "2023": (_by_max, False),  # Main_Score.py calls calmetric(pred, gt), as declared: GT is always the reference
    "2024": (_by_zscore, True),  # Val_Score2024.py calls calmetric(gt, recon) against a (pred, gt) signature
    "2025": (_by_percentile, True),  # Val_Score2025.py likewise
}


def _official_image(ref: np.ndarray, test: np.ndarray) -> tuple[float, float, float]:
    """PSNR, SSIM, NMSE of one normalised 2-D pair, ``ref`` being the image the official code treats as GT."""
    data_range = ref.max()
    with np.errstate(divide="ignore", invalid="ignore"):
        psnr = peak_signal_noise_ratio(ref, test, data_range=data_range)
        ssim = structural_similarity(ref, test, data_range=data_range)
        nmse = np.linalg.norm(ref - test) ** 2 / np.linalg.norm(ref) ** 2
    return float(psnr), float(ssim), float(nmse)


def official_scores(recon: np.ndarray, target: np.ndarray, release: str | int) -> dict:
    """Per-image SSIM, PSNR and NMSE of one submission file, exactly as the organisers' scorer of ``release``.

    Args:
        recon: the submitted ``img4ranking``, as loaded from the file (MATLAB order): ``(x, y, n)`` or
            ``(x, y, slices, frames)``. Its dtype is kept (float32 for a single-precision file): the official
            code does not cast, so skimage computes SSIM in float32 for float32 input.
        target: the GT ``img4ranking``, same shape.
        release: ``"2023"``, ``"2024"`` or ``"2025"`` (ints accepted).

    What the official code does, and so what this does:

    * per image (one ``[:, :, i, j]`` of a 4-D array, slices outer and frames inner, or one ``[:, :, j]`` of a
      3-D array), each of the two images is normalised on its own: 2023 ``x / max(x)``; 2024
      ``(x − mean) / std``; 2025 ``|x| / P99.5(|x|)`` (``|x|`` unchanged if the percentile is 0). The 2023 and
      2024 rules have no zero guard, so an all-zero (2023) or constant (2024) image scores NaN;
    * with ``ref`` the image the code treats as ground truth: PSNR = ``peak_signal_noise_ratio(ref, test,
      data_range=max(ref))``, SSIM = ``structural_similarity(ref, test, data_range=max(ref))`` (7×7 uniform
      window), NMSE = ``‖ref − test‖² / ‖ref‖²``;
    * ``ref`` is the GT in 2023. The 2024 and 2025 validation scripts call ``calmetric(gt, recon)`` against a
      ``calmetric(pred_recon, gt_recon)`` signature, and the 3-D branch swaps the pair back: ``ref`` is the
      **submission** for 4-D arrays and the GT for 3-D arrays;
    * a file's score is the plain ``np.mean`` over its images (NaN propagates).

    A 2-D array, which MATLAB writes for ``(x, y, 1)`` (one slice, one frame): the 2025 scorer since commit
    deecc8e ("TaskS1 and TaskS2 evaluation support", June 2025) has a 2-D branch that scores it as one image,
    both normalised, GT the reference. The 2023 and 2024 scorers (and the first 2025 upload, 60dd0ca) fail on
    it (their 3-D branch indexes ``[:, :, j]``), so for them it is refused here with a ValueError. So is a shape
    mismatch (the official scripts drop such a file as unscored, see :func:`official_adjusted_means`).

    Returns:
        ``{"ssim", "psnr", "nmse"}``: float64 arrays ``(n_images,)`` in the official loop order;
        ``{"ssim_mean", "psnr_mean", "nmse_mean"}``: floats; ``"release"``; ``"reference"``: ``"gt"`` or
        ``"recon"``, the image used as reference for this array's dimensionality.
    """
    name = _release_name(release)
    normalise, recon_is_ref_4d = _OFFICIAL[name]
    pred, gt = np.asarray(recon), np.asarray(target)
    if pred.shape != gt.shape:
        raise ValueError(
            f"recon {pred.shape} and target {gt.shape} differ in shape; the official scorer drops such a file"
        )
    for label, arr in (("recon", pred), ("target", gt)):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{label} must be a real image array (img4ranking), got dtype {arr.dtype}")
    if gt.ndim == 2 and name != "2025":
        raise ValueError(
            f"a 2-D img4ranking {gt.shape} cannot be scored: the official {name} scorer indexes [:, :, j] in its "
            "3-D branch and fails with an IndexError on 2-D arrays"
        )
    if gt.ndim not in (2, 3, 4) or 0 in gt.shape:
        raise ValueError(f"img4ranking must be (x, y, n) or (x, y, slices, frames), got shape {gt.shape}")
    if gt.ndim == 2:  # the 2-D branch of the 2025 scorer (deecc8e): one image, GT the reference
        grid = (1, 1)
        planes = [(pred, gt)]
        recon_is_ref = False
    elif gt.ndim == 4:
        grid = gt.shape[2:]
        planes = [(pred[:, :, i, j], gt[:, :, i, j]) for i in range(grid[0]) for j in range(grid[1])]
        recon_is_ref = recon_is_ref_4d
    else:
        grid = (1, gt.shape[2])
        planes = [(pred[:, :, j], gt[:, :, j]) for j in range(grid[1])]
        recon_is_ref = False
    values = np.zeros((3,) + grid)  # psnr, ssim, nmse on the official (i, j) grid, float64 as np.zeros gives
    for k, (p, g) in enumerate(planes):
        p_n, g_n = normalise(p), normalise(g)
        ref, test = (p_n, g_n) if recon_is_ref else (g_n, p_n)
        values[(slice(None),) + np.unravel_index(k, grid)] = _official_image(ref, test)
    out: dict = {"release": name, "reference": "recon" if recon_is_ref else "gt"}
    for m, arr in zip(("psnr", "ssim", "nmse"), values):
        out[m] = arr.reshape(-1)
        out[f"{m}_mean"] = float(np.mean(arr))
    return out


#: Metric names the evaluation accepts: the official scorers, and ``"max"``, :func:`challenge_metrics` as the
#: HyperCMR paper computed it (each image divided by its max, float64, data_range = max(GT'), zero scale skipped).
METRIC_CHOICES = ("max", *METRIC_RELEASES)


def official_reference(release: str | int, n_slices: int, n_frames: int) -> str:
    """Which image the official scorer of ``release`` treats as reference for a file whose run4Ranking selection
    keeps ``n_slices`` slices and ``n_frames`` frames: ``"recon"`` or ``"gt"``.

    MATLAB drops trailing singleton axes, so ``img4ranking`` is 4-D ``(x, y, slices, frames)`` exactly when more
    than one frame is kept; only 4-D arrays swap the reference in the 2024 and 2025 scorers.
    """
    name = _release_name(release)
    return "recon" if _OFFICIAL[name][1] and n_frames > 1 else "gt"


def release_metrics(
    recon: np.ndarray, target: np.ndarray, release: str, references: Sequence[str] | None = None
) -> dict:
    """Per-image SSIM, PSNR and NMSE of ``(N, H, W)`` images (already selected and cropped) under one metric.

    ``release`` is one of :data:`METRIC_CHOICES`. ``"max"`` is :func:`challenge_metrics` (variant ``"2023"``). A
    release computes each image exactly as its official scorer does (:func:`official_scores`: the dtype is kept,
    each image normalised on its own), with ``references[i]`` (``"gt"`` or ``"recon"``, see
    :func:`official_reference`; default ``"gt"``) the image the scorer treats as reference for image ``i``'s
    file. Returns ``{"ssim", "psnr", "nmse"}`` arrays ``(N,)`` and their means ``{"ssim_mean", ...}``.
    """
    if release == "max":
        return challenge_metrics(recon, target)
    normalise = _OFFICIAL[_release_name(release)][0]
    pred, gt = np.asarray(recon), np.asarray(target)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"expected two (N, H, W) arrays of one shape, got {pred.shape} and {gt.shape}")
    references = ["gt"] * len(gt) if references is None else list(references)
    out = {m: np.empty(len(gt)) for m in METRICS}
    for i, (p, g) in enumerate(zip(pred, gt)):
        p_n, g_n = normalise(p), normalise(g)
        ref, test = (p_n, g_n) if references[i] == "recon" else (g_n, p_n)
        out["psnr"][i], out["ssim"][i], out["nmse"][i] = _official_image(ref, test)
    out.update({f"{m}_mean": float(out[m].mean()) for m in METRICS})
    return out


def official_adjusted_means(
    rows: Iterable[Mapping],
    expected: Mapping,
    group_keys: Sequence[str] = ("center", "vendor"),
    metrics: Sequence[str] = ("psnr", "ssim", "nmse"),
) -> dict:
    """The 2025 validation scorer's group aggregation with its missing-file penalty (``Val_Score2025.py``).

    Args:
        rows: one mapping per **scored** file (submitted, with a GT of the same shape), holding the group fields
            ``group_keys`` and the file's mean of each metric (a scalar, or its per-image values, averaged here).
            Files the scorer drops (missing, shape mismatch) are simply absent. A group field holding a list or
            tuple puts the file in each of its groups (TaskR2 groups by disease, a patient counting once for
            each of its diseases).
        expected: number of GT files per group, keyed by the tuple of group values (a bare value is accepted
            when there is one group key).
        group_keys: the row fields that form a group (TaskR1: centre and manufacturer; TaskR2: disease).

    Per group with at least one scored file: ``PSNR_adj = Σ PSNR / expected`` and ``SSIM_adj`` likewise (a
    missing file counts as 0), ``NMSE_adj = mean(NMSE) · (2 − submitted / expected)``, the mean being over the
    scored files; NaN values are skipped by the sums and the mean, as pandas does, but count as submitted.
    The final score is the unweighted mean over groups. As in the official code, a group with **no** scored
    file does not enter the final mean at all (it is not a zero), and a group with no expected count (0 or
    absent) is skipped. Values are not rounded (the official JSON rounds each to 4 decimals).

    Returns:
        ``{"per_group": {group: {"psnr_adj", "ssim_adj", "nmse_adj", "submitted", "expected"}},
        "psnr_adj", "ssim_adj", "nmse_adj": final means, "n_groups", "groups_without_files",
        "groups_without_expected"}``.
    """
    keys = tuple(group_keys)
    if not keys:
        raise ValueError("official_adjusted_means needs at least one group key")
    want = {(k if isinstance(k, tuple) else (k,)): int(v) for k, v in expected.items()}
    members: dict[tuple, list[dict]] = {}
    for n, row in enumerate(rows):
        missing = [k for k in (*keys, *metrics) if k not in row]
        if missing:
            raise ValueError(f"row {n} lacks {missing} (has {sorted(row)})")
        values = {m: float(np.mean(row[m])) for m in metrics}
        choices = [list(row[k]) if isinstance(row[k], list | tuple | set | frozenset) else [row[k]] for k in keys]
        for group in _product(choices):
            members.setdefault(group, []).append(values)
    per_group: dict[tuple, dict] = {}
    skipped = []
    for group in sorted(members, key=lambda g: tuple(map(str, g))):
        files, total = members[group], want.get(group, 0)
        if not total:
            skipped.append(group)
            continue
        col = {m: np.array([f[m] for f in files]) for m in metrics}
        entry = {"submitted": len(files), "expected": total}
        for m in metrics:
            if m == "nmse":
                mean = float(np.nanmean(col[m])) if np.any(~np.isnan(col[m])) else math.nan
                entry[f"{m}_adj"] = mean * (2 - len(files) / total)
            else:
                entry[f"{m}_adj"] = float(np.nansum(col[m])) / total
        per_group[group] = entry
    if not per_group:
        raise ValueError(
            f"no group has both scored files and an expected count (groups with files: {sorted(members)}, "
            f"expected: {sorted(want)}); the official scorer divides by zero here"
        )
    out: dict = {"per_group": per_group, "n_groups": len(per_group)}
    for m in metrics:
        out[f"{m}_adj"] = sum(e[f"{m}_adj"] for e in per_group.values()) / len(per_group)
    out["groups_without_files"] = sorted((g for g in want if g not in members), key=lambda g: tuple(map(str, g)))
    out["groups_without_expected"] = skipped
    return out


def _product(choices: list[list]) -> list[tuple]:
    """All tuples taking one value from each list, duplicates within a list counted once, order kept."""
    groups: list[tuple] = [()]
    for values in choices:
        groups = [g + (v,) for g in groups for v in dict.fromkeys(values)]
    return groups
