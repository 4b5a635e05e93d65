"""The printed report: every table is a :class:`Table` spec over the results, printed by :func:`print_tables`.

A table takes the results of one section (a list of records), optionally expands nested mappings into one row
per entry (:attr:`Table.expand`), and reads each column by a dotted key (``"phases_s.forward"``). Adding a number
to the report means adding a column here, not code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """``header`` shows the value at dotted ``key`` of a row, multiplied by ``scale`` when it is a number."""

    header: str
    key: str
    scale: float = 1.0


@dataclass(frozen=True)
class Table:
    """One printed table.

    Attributes:
        title: the line above the table.
        section: the results key whose records are the rows (``"summary"`` for the cross-section summary).
        columns: the fixed columns.
        expand: ``(key, name)`` pairs: each record becomes one row per entry of the mapping at ``key``, the
            entry's fields merged into the row and its key bound to ``name``; applied in order (nested).
        dynamic: dotted key of a mapping whose keys become extra columns (the union over all rows, sorted).
        only_ok: leave out records whose ``status`` is not ``ok``.
        require: leave out records without this key.
    """

    title: str
    section: str
    columns: tuple[Column, ...]
    expand: tuple[tuple[str, str], ...] = ()
    dynamic: str | None = None
    only_ok: bool = False
    require: str | None = None


def lookup(row: Mapping, key: str):
    """The value at dotted ``key`` of ``row`` (``None`` where any part is missing)."""
    value = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def table_rows(table: Table, records: Sequence[Mapping]) -> list[dict]:
    """The rows of ``table``: the kept records, expanded as :attr:`Table.expand` says."""
    rows = [
        dict(r)
        for r in records
        if (not table.only_ok or r.get("status") == "ok") and (table.require is None or table.require in r)
    ]
    for key, name in table.expand:
        expanded = []
        for row in rows:
            for entry, value in (lookup(row, key) or {}).items():
                expanded.append({**row, **(value if isinstance(value, Mapping) else {}), name: entry})
        rows = expanded
    return rows


def table_columns(table: Table, rows: Sequence[Mapping]) -> list[Column]:
    if table.dynamic is None:
        return list(table.columns)
    names = sorted({name for row in rows for name in (lookup(row, table.dynamic) or {})})
    return list(table.columns) + [Column(name, f"{table.dynamic}.{name}") for name in names]


def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def render(table: Table, records: Sequence[Mapping]) -> list[str]:
    """The lines of one table (none when it has no rows): title, header, rows; columns padded to width."""
    rows = table_rows(table, records)
    if not rows:
        return []
    columns = table_columns(table, rows)
    cells = []
    for row in rows:
        line = []
        for c in columns:
            value = lookup(row, c.key)
            if c.scale != 1.0 and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = value * c.scale
            line.append(fmt(value))
        cells.append(line)
    widths = [max(len(c.header), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    out = ["", table.title, "  ".join(c.header.ljust(n) for c, n in zip(columns, widths))]
    out += ["  ".join(v.ljust(n) for v, n in zip(line, widths)) for line in cells]
    return out


C = Column
TABLES: tuple[Table, ...] = (
    Table(
        "Training step (forward + loss + backward + AdamW)",
        "train",
        (
            C("size", "size"),
            C("status", "status"),
            C("precision", "precision"),
            C("step s", "step_s"),
            C("slices/s", "slices_per_s"),
            C("fwd s", "phases_s.forward"),
            C("bwd s", "phases_s.backward"),
            C("opt s", "phases_s.optimizer"),
            C("peak GB", "peak_mem_gb"),
            C("memory measured as", "peak_mem_method"),
        ),
    ),
    Table(
        "Inference (eval, no_grad)",
        "infer",
        (
            C("size", "size"),
            C("status", "status"),
            C("precision", "precision"),
            C("per slice s", "per_slice_s"),
            C("slices/s", "slices_per_s"),
            C("case s", "case_s"),
            C("case method", "case_method"),
            C("peak GB", "peak_mem_gb"),
        ),
    ),
    Table(
        "Inference fp32 against bf16 autocast (synthetic batch, same weights, alternating)",
        "precision",
        (
            C("size", "size"),
            C("network", "network"),
            C("cascades", "num_cascades"),
            C("native bf16", "native_bf16"),
            C("fp32 s/slice", "fp32.per_slice_s"),
            C("bf16 s/slice", "bf16.per_slice_s"),
            C("bf16 speed-up", "bf16_speedup"),
            C("fp32 CPU s", "fp32.cpu_per_slice_s"),
            C("bf16 CPU s", "bf16.cpu_per_slice_s"),
            C("CPU speed-up", "bf16_speedup_cpu"),
            C("rel L2 image", "rel_l2_image"),
        ),
        only_ok=True,
    ),
    Table(
        "Inference workflow fp32 against bf16 on the demo validation tree (per slice)",
        "demo",
        (
            C("slices", "slices"),
            C("native bf16", "native_bf16"),
            C("fp32 run s", "fp32.run_per_slice_s"),
            C("bf16 run s", "bf16.run_per_slice_s"),
            C("fp32 network s", "fp32.network_per_slice_s"),
            C("bf16 network s", "bf16.network_per_slice_s"),
            C("network speed-up", "bf16_speedup_network"),
            C("fp32 network CPU s", "fp32.network_cpu_per_slice_s"),
            C("bf16 network CPU s", "bf16.network_cpu_per_slice_s"),
            C("CPU speed-up", "bf16_speedup_network_cpu"),
            C("rel L2 worst file", "rel_l2_worst"),
            C("rel L2 median", "rel_l2_median"),
        ),
        only_ok=True,
    ),
    Table(
        "Data pipeline (DataLoader over train#preprocessing; wall time)",
        "data",
        (
            C("size", "size"),
            C("file coils", "file coils"),
            C("workers", "workers"),
            C("slices/s", "slices_per_s"),
            C("first batch s", "first_batch_s"),
            C("slices", "slices"),
        ),
        expand=(("by_coils", "file coils"), ("workers", "workers")),
        only_ok=True,
    ),
    Table(
        "Data pipeline per worker core (CPU ms per item and transform, one thread)",
        "data",
        (C("size", "size"), C("file coils", "file coils"), C("items/CPU s", "items_per_cpu_s")),
        expand=(("by_coils", "file coils"),),
        dynamic="transform_ms",
        only_ok=True,
    ),
    Table(
        "Loss (HyperCMRLoss, VGG off) forward + backward",
        "loss",
        (C("size", "size"), C("status", "status"), C("loss s", "loss_fwd_bwd_s")),
    ),
    Table(
        "Model FLOPs (FlopCounterMode)",
        "flops",
        (
            C("size", "size"),
            C("fwd GFLOP/slice", "forward_flops_per_slice", 1e-9),
            C("train GFLOP/slice", "train_flops_per_slice", 1e-9),
            C("train MFLOP/pixel", "train_flops_per_pixel", 1e-6),
        ),
        only_ok=True,
    ),
    Table(
        "Gradient checkpointing (train step, off vs on, separate subprocesses)",
        "ckpt",
        (
            C("size", "size"),
            C("off s", "off.step_s"),
            C("on s", "on.step_s"),
            C("off GB", "off.peak_mem_gb"),
            C("on GB", "on.peak_mem_gb"),
            C("memory ratio", "memory_ratio_off_over_on"),
            C("time overhead", "time_overhead"),
        ),
        require="off",
    ),
    Table(
        "Weight import (synthetic Lightning checkpoint -> model.pt + network.yaml)",
        "import",
        (
            C("cascades", "cascades"),
            C("parameters", "parameters"),
            C("ckpt GB", "checkpoint_gb"),
            C("model.pt GB", "model_pt_gb"),
            C("read+check s", "read_and_validate_s"),
            C("import s", "import_s"),
            C("equal", "tensors_equal"),
        ),
        only_ok=True,
    ),
    Table(
        "Scanner raw data (ISMRMRD) against .mat: indexing in a fresh process, one slice with its neighbour frames",
        "raw",
        (
            C("matrix", "matrix"),
            C("file MB", "raw_file_mb"),
            C("readouts", "readouts"),
            C("index s", "index_s"),
            C("readouts/s", "readouts_per_s"),
            C("MB/s", "mb_per_s"),
            C(".mat index s", "mat_index_s"),
            C("first item ms", "first_item_ms"),
            C("raw item ms", "raw_item_ms"),
            C("uncached ms", "uncached_item_ms"),
            C(".mat item ms", "mat_item_ms"),
            C("raw/.mat", "raw_over_mat"),
        ),
        only_ok=True,
    ),
    Table(
        "Summary (targets are shown, not asserted)",
        "summary",
        tuple(
            C(k, k)
            for k in (
                "size",
                "pipeline_over_train",
                "loss_share",
                "train_flop_per_s",
                "infer_flop_per_s",
                "train_peak_mem_gb",
                "ckpt_memory_ratio",
                "ckpt_time_overhead",
            )
        ),
    ),
)


def report_lines(results: Mapping[str, Sequence[Mapping]], summary: Sequence[Mapping]) -> list[str]:
    """Every table of :data:`TABLES` that has rows, as text lines."""
    records = {**results, "summary": summary}
    return [line for table in TABLES for line in render(table, records.get(table.section, []))]


def print_tables(results: Mapping[str, Sequence[Mapping]], summary: Sequence[Mapping]) -> None:
    print("\n".join(report_lines(results, summary)))
