"""CMRxRecon2023/2024 data: ``.mat`` I/O, the dataset index and datalist, and the per-sample loader.

``LoadCMRSliced`` and ``load_volume`` (:mod:`bundle.data.loading`) and ``make_demo_dataset``
(:mod:`bundle.data.demo`) pull in MONAI, so they are imported on first access: indexing a dataset stays cheap
and ``bundle.transforms`` can import from this package without a cycle.
"""

from __future__ import annotations

import importlib

from .index import (
    ACS_WIDTHS,
    DEFAULT_EXCLUDE,
    DEFAULT_TRIMS,
    LAYOUTS,
    FileRecord,
    assign_groups,
    build_datalist,
    build_items,
    detect_layout,
    find_multicoil,
    item_acs_width,
    load_split,
    parse_pattern,
    save_split,
    scan_dataset,
    series_type,
    series_view,
    split_by_patient,
    split_patients,
    training_patients,
)
from .matio import MatSliceReader, mat_shape, mat_variables, read_mat, write_mat, write_mat_v5

_LAZY = {
    "LoadCMRSliced": "loading",
    "load_volume": "loading",
    "make_demo_dataset": "demo",
    # self-supervised training (MONAI transforms inside)
    "undersampled_datalist": "undersampled",
    "check_ssdu_masks": "undersampled",
    "acquisition_density": "undersampled",
    "repeat_items": "undersampled",
    "LoadReferenced": "undersampled",
    "derive_undersampled_tree": "undersampled",
    "select_file": "undersampled",
}

__all__ = [
    "read_mat",
    "write_mat",
    "write_mat_v5",
    "mat_shape",
    "mat_variables",
    "MatSliceReader",
    "load_volume",
    "FileRecord",
    "scan_dataset",
    "find_multicoil",
    "detect_layout",
    "item_acs_width",
    "build_items",
    "build_datalist",
    "split_by_patient",
    "split_patients",
    "training_patients",
    "save_split",
    "load_split",
    "assign_groups",
    "series_type",
    "series_view",
    "parse_pattern",
    "LoadCMRSliced",
    "DEFAULT_EXCLUDE",
    "DEFAULT_TRIMS",
    "LAYOUTS",
    "ACS_WIDTHS",
    "make_demo_dataset",
    "undersampled_datalist",
    "check_ssdu_masks",
    "acquisition_density",
    "repeat_items",
    "LoadReferenced",
    "derive_undersampled_tree",
    "select_file",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
