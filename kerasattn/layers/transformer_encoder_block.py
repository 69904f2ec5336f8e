"""Transformer encoder block: self-attention and feed-forward sub-layers."""

from __future__ import annotations

import keras

from kerasattn.layers import _validation
from kerasattn.layers._transformer_block import TransformerBlockBase
from kerasattn.ops.masking import check_broadcastable
from kerasattn.ops.masking import merge_masks


@keras.saving.register_keras_serializable(package="kerasattn")
class TransformerEncoderBlock(TransformerBlockBase):
    """One Transformer encoder block (Vaswani et al., 2017).

    Multi-head self-attention then a position-wise feed-forward network, each
    wrapped in a residual connection with layer normalization, either after
    the residual sum (post-norm, the original Transformer, `norm_first=False`)
    or before the sub-layer (pre-norm, `norm_first=True`):

        post-norm: y = LN1(x + Drop(MHA(x, x)));  out = LN2(y + Drop(FFN(y)))
        pre-norm:  y = x + Drop(MHA(LN1(x), LN1(x)));  out = y + Drop(FFN(LN2(y)))
        FFN(y) = activation(y W1 + b1) W2 + b2

    with `MHA` the kerasattn `MultiHeadAttention`.

    Padding: a padded position is never attended to. A padded query position
    gets a zero attention result (only the output projection's bias) and
    then goes through the residual and feed-forward sub-layers like any other
    position, so its output is finite but meaningless; the mask is passed on
    to the output for the next layer to ignore it.

    Args:
        num_heads: number of attention heads.
        intermediate_dim: hidden width of the feed-forward network.
        key_dim: width of each attention head; defaults to `d // num_heads`
            (`d`, the input width, must then be divisible by `num_heads`).
        dropout: dropout rate on each sub-layer's output before the residual
            sum, in [0, 1).
        attention_dropout: dropout rate on the attention weights, in [0, 1).
        activation: activation of the feed-forward hidden layer. Defaults to
            `"relu"`.
        norm_first: `False` for post-norm (the default), `True` for pre-norm.
        layer_norm_epsilon: epsilon of the layer normalizations.
        num_key_value_heads: number of key/value heads for grouped-query
            attention (dividing `num_heads`); defaults to `num_heads`.
        sliding_window: optional positive int; position `i` attends to
            position `j` only when `|i - j| < sliding_window` (local
            attention; with `use_causal_mask`, the last `sliding_window`
            positions up to `i`). Passed to the self-attention.
        kernel_initializer: initializer of every kernel.
        bias_initializer: initializer of every bias.
        seed: optional int seeding the dropout layers.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: optional `(B, T)` padding mask, True = real position.
        attention_mask: optional boolean mask broadcastable to `(B, T, T)`,
            True = may attend.
        use_causal_mask: whether position `i` sees only positions `j <= i`.
        return_attention_scores: whether to also return the attention
            weights.
        training: whether dropout is active.
        mask, inputs_mask: the implicit Keras mask of `inputs`
            (`mask_zero=True` upstream), filled by Keras (`mask` when
            `inputs` is the only tensor argument, `inputs_mask` otherwise)
            and merged with `padding_mask`. Leave them to Keras (`mask=`
            works as in any Keras layer).

    Returns:
        The `(B, T, d)` output, carrying the input's Keras mask; with
        `return_attention_scores=True` the tuple `(output, scores)`, scores
        the `(B, num_heads, T, T)` attention weights after masking and before
        dropout.

    Example:

    >>> token_ids = keras.Input(shape=(None,), dtype="int32")
    >>> x = keras.layers.Embedding(1000, 64, mask_zero=True)(token_ids)
    >>> x = TransformerEncoderBlock(num_heads=4, intermediate_dim=128)(x)
    >>> x.shape
    (None, None, 64)
    """

    def build(self, inputs_shape):
        width = self._check_width("inputs", inputs_shape)
        self._self_attention = self._make_attention(
            "self_attention", width, seed_offset=0, sliding_window=self.sliding_window
        )
        self._self_attention.build(inputs_shape, inputs_shape)
        self._self_attention_layer_norm = self._make_layer_norm(
            "self_attention_layer_norm", inputs_shape
        )
        self._self_attention_dropout = self._make_dropout("self_attention_dropout", 1)
        self._build_feedforward(inputs_shape, seed_offset=2)
        self._width = width

    def _check_call(self, inputs, padding_mask, mask, inputs_mask, attention_mask) -> None:
        self._check_width("inputs", inputs.shape)
        _validation.last_dim("inputs", inputs.shape, self._width)
        batch, length = inputs.shape[0], inputs.shape[1]
        check_broadcastable(padding_mask, (batch, length), "padding_mask")
        check_broadcastable(mask, (batch, length), "mask")
        check_broadcastable(inputs_mask, (batch, length), "inputs_mask")
        check_broadcastable(attention_mask, (batch, length, length), "attention_mask")

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask: bool = False,
        return_attention_scores: bool = False,
        training=None,
        mask=None,
        inputs_mask=None,
    ):
        self._check_call(inputs, padding_mask, mask, inputs_mask, attention_mask)
        padding = merge_masks(padding_mask, mask, inputs_mask)

        def self_attention(x):
            # The masks are passed explicitly, so that the attention does not
            # fill them from whatever Keras mask `x` carries.
            result = self._self_attention(
                query=x,
                value=x,
                query_mask=padding,
                value_mask=padding,
                attention_mask=attention_mask,
                use_causal_mask=use_causal_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            return result if return_attention_scores else (result, None)

        x, scores = self._residual(
            inputs,
            self._self_attention_layer_norm,
            self_attention,
            self._self_attention_dropout,
            training,
        )
        x = self._feedforward(x, training)
        if return_attention_scores:
            return x, scores
        return x

    def compute_output_spec(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask: bool = False,
        return_attention_scores: bool = False,
        training=None,
        mask=None,
        inputs_mask=None,
    ):
        self._check_call(inputs, padding_mask, mask, inputs_mask, attention_mask)
        output = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        batch, length = inputs.shape[0], inputs.shape[1]
        scores = keras.KerasTensor(
            (batch, self.num_heads, length, length), dtype=self.compute_dtype
        )
        return output, scores
