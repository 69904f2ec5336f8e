"""Transformer decoder block: causal self-attention, cross-attention, feed-forward."""

from __future__ import annotations

import keras

from kerasattn.layers import _validation
from kerasattn.layers._transformer_block import TransformerBlockBase
from kerasattn.ops.masking import check_broadcastable
from kerasattn.ops.masking import merge_masks


@keras.saving.register_keras_serializable(package="kerasattn")
class TransformerDecoderBlock(TransformerBlockBase):
    """One Transformer decoder block (Vaswani et al., 2017).

    Causal multi-head self-attention over the decoder sequence, multi-head
    cross-attention from the decoder sequence to the encoder outputs, then a
    position-wise feed-forward network; each sub-layer sits in a residual
    connection with layer normalization, post-norm (`norm_first=False`, the
    original Transformer) or pre-norm (`norm_first=True`):

        post-norm: y = LN1(x + Drop(SelfMHA(x, x)))
                   z = LN2(y + Drop(CrossMHA(y, enc)))
                   out = LN3(z + Drop(FFN(z)))
        pre-norm:  y = x + Drop(SelfMHA(LN1(x), LN1(x)))
                   z = y + Drop(CrossMHA(LN2(y), enc))
                   out = z + Drop(FFN(LN3(z)))
        FFN(z) = activation(z W1 + b1) W2 + b2

    Decoder-only use: a block first called (built) without an
    `encoder_sequence` has no cross-attention sub-layer (GPT-style); it must
    then always be called without one, and a block built with one must always
    get one.

    Padding: padded keys (decoder or encoder) are never attended to. A padded
    decoder position gets zero attention results (only the output
    projections' biases) and then goes through the residual and feed-forward
    sub-layers, so its output is finite but meaningless; the decoder mask is
    passed on to the output.

    Args:
        num_heads: number of attention heads (both attentions).
        intermediate_dim: hidden width of the feed-forward network.
        key_dim: width of each attention head; defaults to `d // num_heads`
            (`d`, the decoder width, must then be divisible by `num_heads`).
        dropout: dropout rate on each sub-layer's output before the residual
            sum, in [0, 1).
        attention_dropout: dropout rate on the attention weights, in [0, 1).
        activation: activation of the feed-forward hidden layer. Defaults to
            `"relu"`.
        norm_first: `False` for post-norm (the default), `True` for pre-norm.
        layer_norm_epsilon: epsilon of the layer normalizations.
        num_key_value_heads: number of key/value heads for grouped-query
            attention (dividing `num_heads`); defaults to `num_heads`.
        sliding_window: optional positive int; decoder position `i` attends
            to decoder position `j` only when `|i - j| < sliding_window`
            (with the causal mask, the last `sliding_window` positions up to
            `i`). Passed to the self-attention only.
        kernel_initializer: initializer of every kernel.
        bias_initializer: initializer of every bias.
        seed: optional int seeding the dropout layers.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        decoder_sequence: `(B, Tq, d)`.
        encoder_sequence: optional `(B, Tk, d_enc)` encoder outputs; see
            "Decoder-only use" above.
        decoder_padding_mask: optional `(B, Tq)`, True = real position.
        decoder_attention_mask: optional boolean mask of the self-attention,
            broadcastable to `(B, Tq, Tq)`, True = may attend; merged with the
            causal mask.
        encoder_padding_mask: optional `(B, Tk)`, True = real position.
        encoder_attention_mask: optional boolean mask of the
            cross-attention, broadcastable to `(B, Tq, Tk)`, True = may
            attend.
        use_causal_mask: whether decoder position `i` sees only decoder
            positions `j <= i` in self-attention. Defaults to `True`.
        return_attention_scores: whether to also return the attention
            weights.
        training: whether dropout is active.
        decoder_sequence_mask, encoder_sequence_mask, mask: the implicit
            Keras masks (`mask_zero=True` upstream), filled by Keras and
            merged with the padding masks above: `mask` holds the decoder's
            when `decoder_sequence` is the only tensor argument,
            `decoder_sequence_mask` and `encoder_sequence_mask` otherwise.
            Leave them to Keras.

    Returns:
        The `(B, Tq, d)` output, carrying the decoder's Keras mask. With
        `return_attention_scores=True`, the tuple `(output, self_scores,
        cross_scores)`, of shapes `(B, num_heads, Tq, Tq)` and
        `(B, num_heads, Tq, Tk)` (weights after masking, before dropout), or
        `(output, self_scores)` for a block without cross-attention.

    Example:

    >>> encoder_ids = keras.Input(shape=(None,), dtype="int32")
    >>> decoder_ids = keras.Input(shape=(None,), dtype="int32")
    >>> embedding = keras.layers.Embedding(1000, 64, mask_zero=True)
    >>> encoded = TransformerEncoderBlock(4, 128)(embedding(encoder_ids))
    >>> decoded = TransformerDecoderBlock(4, 128)(embedding(decoder_ids), encoded)
    >>> decoded.shape
    (None, None, 64)
    """

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        width = self._check_width("decoder_sequence", decoder_sequence_shape)
        if encoder_sequence_shape is not None:
            _validation.rank("encoder_sequence", encoder_sequence_shape, 3)
        self._self_attention = self._make_attention(
            "self_attention", width, seed_offset=0, sliding_window=self.sliding_window
        )
        self._self_attention.build(decoder_sequence_shape, decoder_sequence_shape)
        self._self_attention_layer_norm = self._make_layer_norm(
            "self_attention_layer_norm", decoder_sequence_shape
        )
        self._self_attention_dropout = self._make_dropout("self_attention_dropout", 2)
        self._cross_attention = None
        if encoder_sequence_shape is not None:
            self._cross_attention = self._make_attention("cross_attention", width, seed_offset=1)
            self._cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
            self._cross_attention_layer_norm = self._make_layer_norm(
                "cross_attention_layer_norm", decoder_sequence_shape
            )
            self._cross_attention_dropout = self._make_dropout("cross_attention_dropout", 3)
            self._encoder_width = encoder_sequence_shape[-1]
        self._build_feedforward(decoder_sequence_shape, seed_offset=4)
        self._width = width

    def _check_call(self, decoder_sequence, encoder_sequence, masks) -> None:
        self._check_width("decoder_sequence", decoder_sequence.shape)
        _validation.last_dim("decoder_sequence", decoder_sequence.shape, self._width)
        has_cross = self._cross_attention is not None
        if encoder_sequence is None and has_cross:
            raise ValueError(
                "Expected an `encoder_sequence`: the block was built with cross-attention "
                "(first called with one), received: encoder_sequence=None"
            )
        if encoder_sequence is not None and not has_cross:
            raise ValueError(
                "Expected no `encoder_sequence`: the block was built without "
                "cross-attention (first called without one), received: "
                f"encoder_sequence.shape={tuple(encoder_sequence.shape)}"
            )
        batch, query_length = decoder_sequence.shape[0], decoder_sequence.shape[1]
        decoder_dims = (batch, query_length)
        check_broadcastable(masks["decoder_padding_mask"], decoder_dims, "decoder_padding_mask")
        check_broadcastable(masks["mask"], decoder_dims, "mask")
        check_broadcastable(masks["decoder_sequence_mask"], decoder_dims, "decoder_sequence_mask")
        check_broadcastable(
            masks["decoder_attention_mask"],
            (batch, query_length, query_length),
            "decoder_attention_mask",
        )
        if encoder_sequence is None:
            for name in ("encoder_padding_mask", "encoder_attention_mask"):
                if masks[name] is not None:
                    raise ValueError(
                        f"Expected no `{name}` without an `encoder_sequence`, "
                        f"received: {name}.shape={tuple(masks[name].shape)}"
                    )
            return
        _validation.rank("encoder_sequence", encoder_sequence.shape, 3)
        _validation.last_dim("encoder_sequence", encoder_sequence.shape, self._encoder_width)
        key_length = encoder_sequence.shape[1]
        encoder_dims = (encoder_sequence.shape[0], key_length)
        check_broadcastable(masks["encoder_padding_mask"], encoder_dims, "encoder_padding_mask")
        check_broadcastable(masks["encoder_sequence_mask"], encoder_dims, "encoder_sequence_mask")
        check_broadcastable(
            masks["encoder_attention_mask"],
            (batch, query_length, key_length),
            "encoder_attention_mask",
        )

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        use_causal_mask: bool = True,
        return_attention_scores: bool = False,
        training=None,
        decoder_sequence_mask=None,
        encoder_sequence_mask=None,
        mask=None,
    ):
        masks = dict(
            decoder_padding_mask=decoder_padding_mask,
            decoder_attention_mask=decoder_attention_mask,
            encoder_padding_mask=encoder_padding_mask,
            encoder_attention_mask=encoder_attention_mask,
            decoder_sequence_mask=decoder_sequence_mask,
            encoder_sequence_mask=encoder_sequence_mask,
            mask=mask,
        )
        self._check_call(decoder_sequence, encoder_sequence, masks)
        decoder_padding = merge_masks(decoder_padding_mask, decoder_sequence_mask, mask)
        encoder_padding = merge_masks(encoder_padding_mask, encoder_sequence_mask)

        def attention(layer, value, value_mask, attention_mask, causal):
            # The masks are passed explicitly, so that the attention does not
            # fill them from whatever Keras mask its inputs carry.
            def sublayer(x):
                result = layer(
                    query=x,
                    value=x if value is None else value,
                    query_mask=decoder_padding,
                    value_mask=value_mask,
                    attention_mask=attention_mask,
                    use_causal_mask=causal,
                    return_attention_scores=return_attention_scores,
                    training=training,
                )
                return result if return_attention_scores else (result, None)

            return sublayer

        x, self_scores = self._residual(
            decoder_sequence,
            self._self_attention_layer_norm,
            attention(
                self._self_attention,
                None,
                decoder_padding,
                decoder_attention_mask,
                use_causal_mask,
            ),
            self._self_attention_dropout,
            training,
        )
        cross_scores = None
        if encoder_sequence is not None:
            x, cross_scores = self._residual(
                x,
                self._cross_attention_layer_norm,
                attention(
                    self._cross_attention,
                    encoder_sequence,
                    encoder_padding,
                    encoder_attention_mask,
                    False,
                ),
                self._cross_attention_dropout,
                training,
            )
        x = self._feedforward(x, training)
        if not return_attention_scores:
            return x
        if encoder_sequence is None:
            return x, self_scores
        return x, self_scores, cross_scores

    def compute_output_spec(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        use_causal_mask: bool = True,
        return_attention_scores: bool = False,
        training=None,
        decoder_sequence_mask=None,
        encoder_sequence_mask=None,
        mask=None,
    ):
        masks = dict(
            decoder_padding_mask=decoder_padding_mask,
            decoder_attention_mask=decoder_attention_mask,
            encoder_padding_mask=encoder_padding_mask,
            encoder_attention_mask=encoder_attention_mask,
            decoder_sequence_mask=decoder_sequence_mask,
            encoder_sequence_mask=encoder_sequence_mask,
            mask=mask,
        )
        self._check_call(decoder_sequence, encoder_sequence, masks)
        output = keras.KerasTensor(decoder_sequence.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        batch, query_length = decoder_sequence.shape[0], decoder_sequence.shape[1]
        self_scores = keras.KerasTensor(
            (batch, self.num_heads, query_length, query_length), dtype=self.compute_dtype
        )
        if encoder_sequence is None:
            return output, self_scores
        cross_scores = keras.KerasTensor(
            (batch, self.num_heads, query_length, encoder_sequence.shape[1]),
            dtype=self.compute_dtype,
        )
        return output, self_scores, cross_scores
