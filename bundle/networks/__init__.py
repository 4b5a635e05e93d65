"""PromptMR (v1) as used by HyperCMR, with the PromptMR+ options: the prompt U-Net, the sensitivity network, the
unrolled cascades, and the import of published or trained weights."""

from .pretrained import (
    ARCHITECTURE_ARGS,
    NETWORK_OVERLAY_NAME,
    check_checkpoint,
    check_state_dict,
    extract_state_dict,
    infer_network_args,
    load_network_weights,
    load_pretrained,
    read_checkpoint,
    read_network_overlay,
    save_network_overlay,
)
from .promptmr import PromptMR, PromptMRCascade, PromptMRPlusCascade, frame_mask, sens_expand, sens_reduce
from .promptunet import CAB, CABSpec, CALayer, DownBlock, NormPromptUnet, PromptBlock, PromptUnet, SkipBlock, UpBlock
from .sensnet import SensNet, cartesian_acs_columns, infer_num_low_frequencies, is_cartesian_mask

__all__ = [
    "ARCHITECTURE_ARGS",
    "NETWORK_OVERLAY_NAME",
    "check_checkpoint",
    "check_state_dict",
    "extract_state_dict",
    "infer_network_args",
    "load_network_weights",
    "load_pretrained",
    "read_checkpoint",
    "read_network_overlay",
    "save_network_overlay",
    "CAB",
    "CALayer",
    "CABSpec",
    "DownBlock",
    "NormPromptUnet",
    "PromptBlock",
    "PromptMR",
    "PromptMRCascade",
    "PromptMRPlusCascade",
    "PromptUnet",
    "SensNet",
    "SkipBlock",
    "UpBlock",
    "cartesian_acs_columns",
    "frame_mask",
    "infer_num_low_frequencies",
    "is_cartesian_mask",
    "sens_expand",
    "sens_reduce",
]
