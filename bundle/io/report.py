"""Self-contained HTML reports (images inline as PNG data URIs, no scripts or styles from the network).

* :func:`write_eval_report`: evaluation tables (overall, per modality × acceleration, sortable per file), the
  per-image SSIM distribution of the model against zero-filling, and, for the best and worst file of each
  modality, a row of zero-filled | reconstruction | target | |error| × gain.
* :func:`write_inference_report`: every reconstructed file with its preview and the paths of its outputs.

Pictures are drawn as ITK-SNAP/3D Slicer draw the exported NIfTI (:mod:`bundle.io.orientation`).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bundle.files import atomic_write
from bundle.io.orientation import display_box, to_display
from bundle.io.preview import enlarge, to_uint8, window

__all__ = ["comparison_row", "png_data_uri", "ssim_histogram_svg", "write_eval_report", "write_inference_report"]

_COLUMNS = ("ssim", "psnr", "nmse")
_DIGITS = {"ssim": 4, "psnr": 2, "nmse": 4}
_ROI_COLOUR = (255, 64, 64)

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee} td.l,th.l{text-align:left}
table.sortable th{cursor:pointer} .better{color:#070} .worse{color:#a00}
figure{display:inline-block;margin:0 1em 1em 0} figcaption{font-size:90%}
.note{color:#555;font-size:90%}
td.path{font-size:85%;word-break:break-all;max-width:32em}
"""

# Sorting by clicking a header: numbers compare by their data-value, text alphabetically. Inline, no network.
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
      if (x !== undefined && y !== undefined) return dir * (parseFloat(x) - parseFloat(y));
      return dir * a.cells[col].textContent.localeCompare(b.cells[col].textContent);
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def png_data_uri(image) -> str:
    """``data:image/png;base64,...`` of a uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB array, or of PNG bytes."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _num(value: float, metric: str) -> str:
    """A table cell holding the exact value (``data-value``) and a rounded display."""
    digits = _DIGITS.get(metric, 4)
    return f'<td data-value="{float(value)!r}">{float(value):.{digits}f}</td>'


def _diff(model: float, baseline: float, metric: str) -> str:
    diff = float(model) - float(baseline)
    better = diff < 0 if metric == "nmse" else diff > 0  # NMSE: lower is better
    css = "better" if better else "worse" if diff else ""
    digits = _DIGITS.get(metric, 4)
    return f'<td class="{css}" data-value="{diff!r}">{diff:+.{digits}f}</td>'


def _comparison_table(rows: Sequence[Mapping], keys: Sequence[str], table_id: str) -> str:
    """One row per entry: its key columns, then per metric model | zero-filled | difference."""
    head = "".join(f'<th class="l">{html.escape(k)}</th>' for k in keys)
    for metric in _COLUMNS:
        name = metric.upper()
        head += f"<th>{name} model</th><th>{name} zero-filled</th><th>{name} diff</th>"
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"l path" if k == "file" else "l"}">{html.escape(str(row.get(k, "")))}</td>' for k in keys
        )
        for metric in _COLUMNS:
            cells += _num(row[metric], metric) + _num(row[f"zf_{metric}"], metric)
            cells += _diff(row[metric], row[f"zf_{metric}"], metric)
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def comparison_row(zero_filled, recon, target, roi_bounds=None, min_size: int = 256) -> tuple[np.ndarray, float]:
    """RGB row ``zero-filled | reconstruction | target | |error| × gain`` of ``(nx, ny)`` magnitude slices.

    One window (from the target) for the whole row; the error is multiplied by a whole ``gain`` so that its 99.5th
    percentile reaches about half the window. ``roi_bounds`` (array bounds, :func:`bundle.mri.roi_bounds`) is
    outlined in red on every panel. Returns ``(uint8 (H, 4W + gaps, 3), gain)``.
    """
    zf, rec, tgt = (np.abs(np.asarray(a, dtype=np.float32)) for a in (zero_filled, recon, target))
    err = np.abs(rec - tgt)
    lo, hi = window(tgt)
    top = float(np.percentile(err, 99.5))
    gain = float(min(100, max(1, math.floor(0.5 * (hi - lo) / top)))) if top > 0 else 1.0
    panels = [enlarge(to_uint8(to_display(p), lo, hi), min_size) for p in (zf, rec, tgt, err * gain)]
    factor = panels[0].shape[0] // tgt.shape[1]
    gap = 4
    h, w = panels[0].shape
    canvas = np.full((h, 4 * w + 3 * gap, 3), 255, dtype=np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, panel in enumerate(panels):
        left = i * (w + gap)
        image.paste(Image.fromarray(panel).convert("RGB"), (left, 0))
        if roi_bounds is not None:
            t, b, lft, rgt = display_box(roi_bounds, tgt.shape)
            draw.rectangle(
                [left + lft * factor, t * factor, left + rgt * factor - 1, b * factor - 1], outline=_ROI_COLOUR, width=2
            )
    return np.asarray(image), gain


def ssim_histogram_svg(model: Sequence[float], baseline: Sequence[float], bins: int = 20) -> str:
    """Inline SVG: histograms of per-image SSIM for the model (blue) and zero-filling (orange)."""
    model, baseline = np.asarray(model, float), np.asarray(baseline, float)
    lo = float(min(model.min(), baseline.min()))
    hi = float(max(model.max(), baseline.max()))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(v, edges)[0] for v in (model, baseline)]
    top = max(1, int(max(c.max() for c in counts)))
    width, height, pad = 520, 240, 40
    bar = (width - 2 * pad) / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" '
        f'aria-label="per-image SSIM histogram">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>',
        f'<line x1="{pad}" y1="{1.2 * pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>',
    ]
    for k, (colour, offset) in enumerate((("#1f77b4", 0.0), ("#ff7f0e", 0.5))):
        for i, count in enumerate(counts[k]):
            if count:
                bh = (height - 2.2 * pad) * count / top  # leaves the top strip to the legend
                x = pad + i * bar + offset * bar
                parts.append(
                    f'<rect x="{x:.1f}" y="{height - pad - bh:.1f}" width="{bar / 2:.1f}" height="{bh:.1f}" '
                    f'fill="{colour}"><title>{int(count)} image(s)</title></rect>'
                )
    for value in (lo, (lo + hi) / 2, hi):
        x = pad + (value - lo) / (hi - lo) * (width - 2 * pad)
        parts.append(
            f'<text x="{x:.1f}" y="{height - pad + 15}" font-size="11" text-anchor="middle">{value:.3f}</text>'
        )
    parts.append(f'<text x="{pad - 5}" y="{1.2 * pad + 4}" font-size="11" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 8}" font-size="12" text-anchor="middle">SSIM per image</text>')
    parts.append(
        f'<rect x="{width - 190}" y="8" width="10" height="10" fill="#1f77b4"/>'
        f'<text x="{width - 175}" y="17" font-size="12">model (n={model.size})</text>'
        f'<rect x="{width - 190}" y="24" width="10" height="10" fill="#ff7f0e"/>'
        f'<text x="{width - 175}" y="33" font-size="12">zero-filled (n={baseline.size})</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
        f"<script>{_SORT_JS}</script></body></html>\n"
    )


def write_eval_report(
    path: str | os.PathLike, tables: Mapping, rows: Sequence[Mapping], examples: Sequence[Mapping]
) -> Path:
    """Write the evaluation report (atomically).

    Args:
        tables: :meth:`bundle.workflows.ChallengeMetric.tables` (what ``metrics.json`` holds).
        rows: per-image rows (``ssim``, ``zf_ssim``, ...) for the SSIM distribution.
        examples: per shown file ``{"title", "file", "image": RGB uint8 row, "gain"}``.
    """
    overall = tables["overall"]
    metric = tables.get("metric") or {"release": "max", "description": "each image normalised by its maximum"}
    parts = [
        f'<p class="note"><b>Metric: {html.escape(str(metric["release"]))}</b> ({html.escape(metric["description"])}). '
        "SSIM, PSNR and NMSE of each image cropped to the ranking ROI; averaged per file, then per modality; Overall "
        "is the unweighted mean over modalities. Zero-filled = root-sum-of-squares of the undersampled k-space. "
        "Difference = model minus "
        f"zero-filled (NMSE: lower is better). {int(overall['files'])} files, {int(overall['images'])} images.</p>",
        "<h2>Overall</h2>",
        _comparison_table([{"set": "overall", **overall}], ["set"], "overall"),
        "<h2>Per modality</h2>",
        _comparison_table(tables["per_modality"], ["modality", "files"], "per_modality"),
    ]
    if tables.get("per_modality_acceleration"):
        parts += [
            "<h2>Per modality and acceleration</h2>",
            _comparison_table(
                tables["per_modality_acceleration"],
                ["modality", "pattern", "acceleration", "files"],
                "per_modality_acceleration",
            ),
        ]
    if tables.get("per_center_vendor"):
        parts += [
            "<h2>Per centre and vendor</h2>",
            _comparison_table(tables["per_center_vendor"], ["center", "vendor", "files"], "per_center_vendor"),
        ]
    adjusted = tables.get("official_adjusted")
    if adjusted:
        cells = "".join(f"<td>{adjusted[k]:.4f}</td>" for k in ("ssim_adj", "psnr_adj", "nmse_adj"))
        parts += [
            "<h2>Official adjusted means (CMRxRecon2025 scorer)</h2>",
            '<p class="note">Per centre and vendor: SSIM and PSNR summed over scored files and divided by the files '
            "expected (a missing file counts as zero); NMSE mean × (2 − scored/expected); then the unweighted mean "
            f"over {int(adjusted['n_groups'])} groups.</p>",
            f'<table id="official_adjusted"><thead><tr><th>SSIM</th><th>PSNR</th><th>NMSE</th></tr></thead>'
            f"<tbody><tr>{cells}</tr></tbody></table>",
        ]
    if rows:
        parts += [
            "<h2>Per-image SSIM distribution</h2>",
            ssim_histogram_svg([r["ssim"] for r in rows], [r["zf_ssim"] for r in rows]),
        ]
    if examples:
        parts.append(
            '<h2>Best and worst files per modality</h2><p class="note">Each row: zero-filled | reconstruction | '
            "target | |error| × gain, whole field of view, one shared window per row; red box = ranking ROI. "
            "Slices are drawn as ITK-SNAP/3D Slicer draw the exported NIfTI (R/A/S labels not anatomical).</p>"
        )
        for ex in examples:
            caption = f"{ex['title']}: {ex['file']} (|error| × {ex['gain']:g})"
            parts.append(
                f'<figure><img src="{png_data_uri(ex["image"])}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts += [
        "<h2>Per file (click a header to sort)</h2>",
        _comparison_table(tables["per_file"], ["file", "modality", "images"], "per_file"),
    ]
    text = _page("Evaluation report", "".join(parts))
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_inference_report(
    path: str | os.PathLike, rows: Sequence[Mapping], output_dir: str | os.PathLike, dataset_dir: str | os.PathLike
) -> Path:
    """Write ``report.html``: per file, its preview (inline) and its outputs relative to ``output_dir``.

    ``rows``: ``{"file", "outputs": [paths], "earlier": bool}`` (``earlier``: done by a previous, resumed run).
    """
    output_dir = Path(output_dir)
    body = [
        f'<p class="note">{sum(not r.get("earlier") for r in rows)} file(s) reconstructed in this run, '
        f"{sum(bool(r.get('earlier')) for r in rows)} found done by an earlier run (marked). Previews are drawn as "
        "ITK-SNAP/3D Slicer draw the NIfTI; R/A/S labels are not anatomical. AI reconstruction from undersampled "
        "k-space; not for diagnostic use.</p>",
        '<table id="files" class="sortable"><thead><tr><th class="l">input</th><th class="l">preview</th>'
        '<th class="l">outputs</th></tr></thead><tbody>',
    ]
    for row in rows:
        outputs = [Path(p) for p in row["outputs"]]
        try:
            source = Path(row["file"]).resolve().relative_to(Path(dataset_dir).resolve()).as_posix()
        except ValueError:
            source = str(row["file"])
        preview = next((p for p in outputs if p.suffix == ".png" and p.is_file()), None)
        image = f'<img src="{png_data_uri(preview.read_bytes())}" alt="preview">' if preview else "(no preview)"
        listed = "<br>".join(html.escape(_relative(p, output_dir)) for p in outputs)
        body.append(
            f'<tr><td class="l path">{html.escape(source)}{" (earlier run)" if row.get("earlier") else ""}</td>'
            f'<td class="l">{image}</td>'
            f'<td class="l path">{listed}</td></tr>'
        )
    body.append("</tbody></table>")
    text = _page("Inference report", "".join(body))
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
