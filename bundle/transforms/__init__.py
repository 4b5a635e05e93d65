"""Sampling masks, k-space operations and MONAI dictionary transforms for CMRxRecon2024 samples.

``masks`` builds the challenge sampling patterns (NumPy), ``kspace`` holds plain functions over one sample
(masking, ACS, coil compression, normalisation, targets) and ``dictionary`` wraps them as ``MapTransform``
classes for the bundle configs.
"""

from bundle.transforms.dictionary import (
    ApplyMaskd,
    CheckFinited,
    CoilCompressd,
    MakeTargetd,
    NormalizeKspaced,
    RandKspaceMaskd,
    StackFramesToChannelsd,
    StackNeighboursd,
)
from bundle.transforms.kspace import (
    NORMALIZATION_MODES,
    acs_window,
    apply_coil_compression,
    centre_frame_target,
    coil_compress,
    coil_compression_matrix,
    denormalize,
    extract_acs,
    normalization_scale,
    normalize,
    undersample,
)
from bundle.transforms.masks import (
    MAX_ACCELERATION,
    PATTERNS,
    acs_bounds,
    canonical_pattern,
    effective_acceleration,
    is_cartesian,
    kt_gaussian_mask,
    kt_radial_mask,
    kt_uniform_mask,
    make_mask,
    radial_beam_count,
    sampled_fraction,
    uniform_mask,
)
from bundle.transforms.ssdu import (
    SSDUSplitd,
    holdout_lines,
    millard_chiew_weight,
    protected_lines,
    split_lines,
)

__all__ = [
    "SSDUSplitd",
    "holdout_lines",
    "millard_chiew_weight",
    "protected_lines",
    "split_lines",
    "ApplyMaskd",
    "CheckFinited",
    "CoilCompressd",
    "MakeTargetd",
    "NormalizeKspaced",
    "RandKspaceMaskd",
    "StackFramesToChannelsd",
    "StackNeighboursd",
    "NORMALIZATION_MODES",
    "apply_coil_compression",
    "centre_frame_target",
    "coil_compress",
    "coil_compression_matrix",
    "denormalize",
    "extract_acs",
    "acs_window",
    "normalization_scale",
    "normalize",
    "undersample",
    "MAX_ACCELERATION",
    "PATTERNS",
    "acs_bounds",
    "canonical_pattern",
    "effective_acceleration",
    "is_cartesian",
    "kt_gaussian_mask",
    "kt_radial_mask",
    "kt_uniform_mask",
    "make_mask",
    "radial_beam_count",
    "sampled_fraction",
    "uniform_mask",
]
