"""Input checks and mask collection shared by the single-head attention layers.

`AdditiveAttention` and `DotProductAttention` take the call arguments of
`MultiHeadAttention` (query, value, key and their padding masks, an explicit
attention mask, a causal flag); this module checks them and turns them into
one boolean mask broadcastable to `(B, Tq, Tk)`, `True` = may attend.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.ops import causal_mask_between
from kerasattn.ops import check_broadcastable
from kerasattn.ops import masked_softmax
from kerasattn.ops import merge_attention_masks


def check_shapes(query_shape: Sequence, value_shape: Sequence, key_shape: Sequence) -> None:
    """Raises `ValueError` unless query, value and key are rank 3 and key and
    value have the same length."""
    _validation.rank("query", query_shape, 3)
    _validation.rank("value", value_shape, 3)
    _validation.rank("key", key_shape, 3)
    _validation.same_length("key", key_shape, "value", value_shape)


def static_width(name: str, shape: Sequence) -> int:
    """The static last dimension of `shape`, which sizes a weight."""
    if shape[-1] is None:
        raise ValueError(
            f"Expected `{name}` with a static last dimension, "
            f"received: {name}.shape={tuple(shape)}"
        )
    return shape[-1]


def check_masks(
    query_shape: Sequence,
    key_shape: Sequence,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
) -> None:
    """Raises `ValueError` for a mask that does not broadcast to its target."""
    batch, query_length = query_shape[0], query_shape[1]
    key_length = key_shape[1]
    check_broadcastable(query_mask, (batch, query_length), "query_mask")
    check_broadcastable(value_mask, (batch, key_length), "value_mask")
    check_broadcastable(key_mask, (batch, key_length), "key_mask")
    check_broadcastable(attention_mask, (batch, query_length, key_length), "attention_mask")


def collect_attention_mask(
    query,
    key,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask: bool = False,
):
    """Merges every mask argument into one boolean mask broadcastable to
    `(B, Tq, Tk)`, or returns `None` when there is nothing to mask.

    A masked query gets a row with no key to attend to, hence a zero output.
    """
    check_masks(query.shape, key.shape, query_mask, value_mask, key_mask, attention_mask)
    causal = None
    if use_causal_mask:
        causal = causal_mask_between(query, key)
    return merge_attention_masks(query_mask, value_mask, key_mask, attention_mask, causal)


class SingleHeadAttention(keras.layers.Layer):
    """Base of the single-head layers: subclasses define `_scores` (float32
    `(B, Tq, Tk)` logits) and `_check_shapes`; masking, the float32 masked
    softmax, dropout, the weighted sum and the output specs live here."""

    def __init__(self, dropout: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dropout = _validation.rate("dropout", dropout)
        self.seed = seed
        self.supports_masking = True
        self._dropout_layer = keras.layers.Dropout(
            self.dropout, seed=seed, dtype=self.dtype_policy
        )

    def _check_shapes(self, query_shape, value_shape, key_shape) -> None:
        check_shapes(query_shape, value_shape, key_shape)

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores: bool = False,
        training=None,
        use_causal_mask: bool = False,
    ):
        key = value if key is None else key
        self._check_shapes(query.shape, value.shape, key.shape)
        mask = collect_attention_mask(
            query, key, query_mask, value_mask, key_mask, attention_mask, use_causal_mask
        )
        weights = masked_softmax(self._scores(query, key), mask)
        dropped = self._dropout_layer(weights, training=training)
        output = ops.matmul(ops.cast(dropped, value.dtype), value)
        if return_attention_scores:
            return output, ops.cast(weights, self.compute_dtype)
        return output

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_shapes(query_shape, value_shape, key_shape)
        return (*query_shape[:-1], value_shape[-1])

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores: bool = False,
        training=None,
        use_causal_mask: bool = False,
    ):
        key = value if key is None else key
        check_masks(
            query.shape, key.shape, query_mask, value_mask, key_mask, attention_mask
        )
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape, key.shape),
            dtype=self.compute_dtype,
        )
        if return_attention_scores:
            weights = keras.KerasTensor(
                (*query.shape[:-1], key.shape[1]), dtype=self.compute_dtype
            )
            return output, weights
        return output
