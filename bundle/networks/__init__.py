"""PromptMR (v1) as used by HyperCMR: the prompt U-Net, the sensitivity network and the unrolled cascades."""

from .promptmr import PromptMR, PromptMRCascade, frame_mask, sens_expand, sens_reduce
from .promptunet import CAB, CALayer, DownBlock, NormPromptUnet, PromptBlock, PromptUnet, SkipBlock, UpBlock
from .sensnet import SensNet, cartesian_acs_columns, infer_num_low_frequencies, is_cartesian_mask

__all__ = [
    "CAB",
    "CALayer",
    "DownBlock",
    "NormPromptUnet",
    "PromptBlock",
    "PromptMR",
    "PromptMRCascade",
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
