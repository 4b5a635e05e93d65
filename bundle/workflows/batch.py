"""From a transformed sample dict to the network call and the loss target.

``default_prepare_batch`` drops any label that is not a tensor, and the HyperCMR loss needs two targets (the
RSS image and the fully sampled k-space), so batches go through :class:`PrepareReconBatch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines.utils import PrepareBatch
from monai.transforms import MapTransform

__all__ = ["META_KEYS", "PackReconSampled", "PrepareReconBatch", "batch_acs_width"]

# Plain metadata kept in every batch: enough to name the file and slice and to aggregate metrics.
META_KEYS = (
    "file",
    "z",
    "t",
    "nt",
    "nz",
    "modality",
    "series",
    "group",
    "patient",
    "pattern",
    "acceleration",
    "acs_width",
)
TENSOR_KEYS = ("kspace_masked", "mask", "target", "kspace_target", "scale")
# Kept only where items have them (scanner raw data): which series of which file, in which format and release.
OPTIONAL_META_KEYS = ("entry", "raw_group", "format", "layout")


class PackReconSampled(MapTransform):
    """Keep the tensors and plain metadata a batch needs, with collatable types.

    ``None`` metadata becomes ``""`` (strings) or ``-1`` (integers) because the default collate rejects ``None``.
    Tensor keys that are absent (e.g. ``target`` at inference) are simply left out.
    """

    def __init__(self, meta_keys: Sequence[str] = META_KEYS, tensor_keys: Sequence[str] = TENSOR_KEYS):
        super().__init__(keys=list(tensor_keys), allow_missing_keys=True)
        self.meta_keys = tuple(meta_keys)

    def __call__(self, data: Mapping) -> dict:
        out: dict = {}
        for key in self.keys:
            if key in data:
                value = data[key]
                out[key] = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        for key in self.meta_keys:
            value = data.get(key)
            if value is None:
                value = -1 if key in ("z", "t", "nt", "nz", "acceleration", "acs_width") else ""
            out[key] = value if isinstance(value, (int, float)) else str(value)
        for key in OPTIONAL_META_KEYS:
            if key in data:
                out[key] = "" if data[key] is None else str(data[key])
        out["skipped"] = str(data.get("skipped", ""))
        if "bad" in data:  # set by LoadCMRSliced(mark_bad=True): the item's file must not be written
            out["bad"] = str(data["bad"])
        return out


def batch_acs_width(batchdata: Mapping) -> int | None:
    """The one ACS width (central ky lines) of a batch's items, or ``None`` when the items do not say.

    CMRxRecon2024 files have 16 ACS lines, CMRxRecon2023 files 24 and CMRxRecon2025 files 20; the index (or the
    loader, for a width measured from an official mask) records it per item. Widths measured from the official
    masks of different files can differ by a line or two (a sampled line touching the band counts), and the
    network takes one width per call: a batch mixing widths gets the smallest, a band every item has fully
    sampled.
    """
    widths = batchdata.get("acs_width")
    if widths is None:
        return None
    found = {int(w) for w in (widths.tolist() if isinstance(widths, torch.Tensor) else widths)} - {-1}
    return min(found) if found else None


class PrepareReconBatch(PrepareBatch):
    """Returns ``(masked_kspace, label, (mask,), kwargs)`` for MONAI engines.

    ``label`` is a dict with ``target`` (B, 1, H, W), ``kspace_target`` (B, C, H, W) complex and the batch
    metadata (file, z, t, modality, ...), or ``None`` at inference when the batch has no target. ``kwargs`` is
    ``{"acs_width": w}`` when the items carry their ACS width (:func:`batch_acs_width`). The network decides
    whether it uses that width, its configured one or the mask's (``PromptMR.acs_width``, its ``acs_source``;
    ``docs/design.md``, "ACS width: where it comes from"); this class only hands the items' width on.
    """

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        def move(x):
            return x.to(device=device, non_blocking=non_blocking, **kwargs) if isinstance(x, torch.Tensor) else x

        inputs = move(batchdata["kspace_masked"])
        mask = move(batchdata["mask"])
        label = {key: value for key, value in batchdata.items() if key not in ("kspace_masked", "mask")}
        label = {key: move(value) for key, value in label.items()}
        acs_width = batch_acs_width(batchdata)
        return inputs, label, (mask,), {} if acs_width is None else {"acs_width": acs_width}
