"""The functional core the layers share: masks, masked softmax, attention."""

from kerasattn.ops.attention import dot_product_attention
from kerasattn.ops.masking import as_bool_mask
from kerasattn.ops.masking import bounded_masking
from kerasattn.ops.masking import causal_mask
from kerasattn.ops.masking import causal_mask_between
from kerasattn.ops.masking import check_broadcastable
from kerasattn.ops.masking import masked_softmax
from kerasattn.ops.masking import merge_attention_masks
from kerasattn.ops.masking import merge_masks
from kerasattn.ops.masking import padding_attention_mask
from kerasattn.ops.masking import sequence_positions
from kerasattn.ops.masking import sliding_window_mask
from kerasattn.ops.masking import sliding_window_mask_between

__all__ = [
    "as_bool_mask",
    "bounded_masking",
    "causal_mask",
    "causal_mask_between",
    "check_broadcastable",
    "dot_product_attention",
    "masked_softmax",
    "merge_attention_masks",
    "merge_masks",
    "padding_attention_mask",
    "sequence_positions",
    "sliding_window_mask",
    "sliding_window_mask_between",
]
