"""Transformer decoder block: causal self-attention, cross-attention, feed-forward."""

from __future__ import annotations

import keras
from keras import ops

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

    Incremental decoding: with a `self_attention_cache` (from
    `initial_cache`) and a `self_attention_cache_update_index`, the block
    takes only the new decoder positions (one token, or a chunk) and attends
    over the cache, into which it writes their keys and values; with a
    `cross_attention_cache` (from `compute_cross_attention_cache`) the
    cross-attention reuses the encoder's keys and values, projected once,
    and `encoder_sequence` may be left out. Decoding position by position
    gives the outputs of the full causal pass.

    Args:
        num_heads: number of attention heads of the self-attention (and of the
            cross-attention without `cross_attention_num_heads`).
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
        cross_attention_num_heads: number of cross-attention heads, each as
            wide as a self-attention head (`key_dim`) and grouped as they
            are (`num_heads // num_key_value_heads` query heads to a
            key/value head, which must divide it); defaults to `num_heads`.
            A pruned block (`kerasattn.prune`) may keep more of one
            attention's heads than of the other's.
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
        self_attention_cache: optional cache of the self-attention's keys
            and values over `S` decoder positions, from `initial_cache`: the
            pair `(keys, values)` of shapes `(B, K, key_dim, S)` and
            `(B, K, S, key_dim)` (`K = num_key_value_heads`; see
            `MultiHeadAttention`'s `cache`). With it,
            `decoder_sequence` holds the `Tq` positions from
            `self_attention_cache_update_index` on, `decoder_padding_mask`
            covers all `S` cached positions, `(B, S)` (the slice at the new
            positions masks the queries), and `decoder_attention_mask` is
            `(B, Tq, S)`; the decoder's implicit Keras mask masks the new
            positions' queries only.
        self_attention_cache_update_index: with a `self_attention_cache`,
            the position (int or int32 scalar tensor) of
            `decoder_sequence`'s first position in the decoded sequence.
        cross_attention_cache: optional `(keys, values)` of the encoder
            outputs, `(B, K, key_dim, Tk)` and `(B, K, Tk, key_dim)`, from
            `compute_cross_attention_cache`; `encoder_sequence` is then not
            needed (and not used), but its masks still apply.
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
        `(B, cross_attention_num_heads, Tq, Tk)` (weights after masking, before dropout), or
        `(output, self_scores)` for a block without cross-attention. With a
        `self_attention_cache`, the updated cache is appended: `(output,
        cache)`, or `(output, self_scores[, cross_scores], cache)` (the
        self-attention scores then span the `S` cached positions).

    Example:

    >>> encoder_ids = keras.Input(shape=(None,), dtype="int32")
    >>> decoder_ids = keras.Input(shape=(None,), dtype="int32")
    >>> embedding = keras.layers.Embedding(1000, 64, mask_zero=True)
    >>> encoded = TransformerEncoderBlock(4, 128)(embedding(encoder_ids))
    >>> decoded = TransformerDecoderBlock(4, 128)(embedding(decoder_ids), encoded)
    >>> decoded.shape
    (None, None, 64)

    Decoding one token at a time, the encoder's keys and values projected
    once:

    >>> block = TransformerDecoderBlock(num_heads=4, intermediate_dim=32,
    ...                                 num_key_value_heads=2)
    >>> target = keras.random.normal((2, 6, 16))
    >>> source = keras.random.normal((2, 5, 16))
    >>> source_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    >>> full = block(target, source, encoder_padding_mask=source_mask)
    >>> cache = block.initial_cache(batch_size=2, max_length=6)
    >>> cross_cache = block.compute_cross_attention_cache(source)
    >>> steps = []
    >>> for index in range(6):
    ...     output, cache = block(
    ...         target[:, index : index + 1],
    ...         encoder_padding_mask=source_mask,
    ...         self_attention_cache=cache,
    ...         self_attention_cache_update_index=index,
    ...         cross_attention_cache=cross_cache,
    ...     )
    ...     steps.append(output)
    >>> bool(np.allclose(keras.ops.concatenate(steps, axis=1), full, atol=1e-5))
    True
    """

    def __init__(self, *args, cross_attention_num_heads: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross_attention_num_heads = _validation.positive_int(
            "cross_attention_num_heads", cross_attention_num_heads, allow_none=True
        )
        group = self.num_heads // (self.num_key_value_heads or self.num_heads)
        if cross_attention_num_heads is not None and cross_attention_num_heads % group:
            raise ValueError(
                f"Expected `cross_attention_num_heads` divisible by num_heads // "
                f"num_key_value_heads={group} (grouped-query attention), received: "
                f"cross_attention_num_heads={cross_attention_num_heads}"
            )

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
            self._cross_attention = self._make_attention(
                "cross_attention", width, seed_offset=1,
                num_heads=self.cross_attention_num_heads,
            )
            self._cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
            self._cross_attention_layer_norm = self._make_layer_norm(
                "cross_attention_layer_norm", decoder_sequence_shape
            )
            self._cross_attention_dropout = self._make_dropout("cross_attention_dropout", 3)
            self._encoder_width = encoder_sequence_shape[-1]
        self._build_feedforward(decoder_sequence_shape, seed_offset=4)
        self._width = width

    # -- incremental decoding ------------------------------------------------

    def _check_built(self, method: str) -> None:
        if not self.built:
            raise ValueError(
                f"Expected a built block for `{method}` (its attention layers make the "
                "cache): call it once or build it first, received an unbuilt block"
            )

    def initial_cache(self, batch_size, max_length: int, dtype=None):
        """An empty self-attention cache for decoding up to `max_length` positions.

        Args:
            batch_size: batch size `B` (int or int scalar tensor).
            max_length: the number of decoder positions `S` the cache holds
                (int, or int scalar tensor in a graph).
            dtype: the cache's dtype; defaults to the compute dtype.

        Returns:
            `(keys, values)`: zeros of shapes `(B, K, key_dim, S)` and
            `(B, K, S, key_dim)` (`K = num_key_value_heads`), for `call`'s
            `self_attention_cache`.
        """
        self._check_built("initial_cache")
        return self._self_attention.initial_cache(batch_size, max_length, dtype=dtype)

    def compute_cross_attention_cache(self, encoder_sequence):
        """The cross-attention's keys and values of the encoder outputs.

        Computed once per source, then passed to every decoding step as
        `call`'s `cross_attention_cache`.

        Args:
            encoder_sequence: `(B, Tk, d_enc)` encoder outputs.

        Returns:
            `(keys, values)` of shapes `(B, K, key_dim, Tk)` (scaled by
            `key_dim ** -0.5`) and `(B, K, Tk, key_dim)`, `K` the
            cross-attention's key/value heads.
        """
        self._check_built("compute_cross_attention_cache")
        if self._cross_attention is None:
            raise ValueError(
                "Expected a block with cross-attention (first called with an "
                "`encoder_sequence`), received a block built without one"
            )
        return self._cross_attention.compute_cache(encoder_sequence)

    # -- calling ---------------------------------------------------------------

    def _check_call(
        self, decoder_sequence, encoder_sequence, masks, self_cache, update_index, cross_cache
    ) -> None:
        self._check_width("decoder_sequence", decoder_sequence.shape)
        _validation.last_dim("decoder_sequence", decoder_sequence.shape, self._width)
        if (self_cache is None) != (update_index is None):
            raise ValueError(
                "Expected `self_attention_cache` and `self_attention_cache_update_index` "
                f"both given or both None, received: self_attention_cache is "
                f"{'None' if self_cache is None else 'given'}, "
                f"self_attention_cache_update_index={update_index!r}"
            )
        has_cross = self._cross_attention is not None
        if cross_cache is not None and not has_cross:
            raise ValueError(
                "Expected no `cross_attention_cache`: the block was built without "
                "cross-attention (first called without an `encoder_sequence`), received one"
            )
        batch, query_length = decoder_sequence.shape[0], decoder_sequence.shape[1]
        if self_cache is not None:
            self._self_attention._check_cache(self_cache, batch)
        if cross_cache is not None:
            self._cross_attention._check_cache(cross_cache, batch)
        if encoder_sequence is None and cross_cache is None and has_cross:
            raise ValueError(
                "Expected an `encoder_sequence` (or a `cross_attention_cache`): the block "
                "was built with cross-attention (first called with one), received: "
                "encoder_sequence=None"
            )
        if encoder_sequence is not None and not has_cross:
            raise ValueError(
                "Expected no `encoder_sequence`: the block was built without "
                "cross-attention (first called without one), received: "
                f"encoder_sequence.shape={tuple(encoder_sequence.shape)}"
            )
        # With a cache, the self-attention's keys are the cache's positions.
        key_length = query_length if self_cache is None else self_cache[1].shape[2]
        check_broadcastable(masks["decoder_padding_mask"], (batch, key_length),
                            "decoder_padding_mask")
        check_broadcastable(masks["mask"], (batch, query_length), "mask")
        check_broadcastable(masks["decoder_sequence_mask"], (batch, query_length),
                            "decoder_sequence_mask")
        check_broadcastable(
            masks["decoder_attention_mask"],
            (batch, query_length, key_length),
            "decoder_attention_mask",
        )
        if encoder_sequence is None and cross_cache is None:
            for name in ("encoder_padding_mask", "encoder_attention_mask"):
                if masks[name] is not None:
                    raise ValueError(
                        f"Expected no `{name}` without an `encoder_sequence`, "
                        f"received: {name}.shape={tuple(masks[name].shape)}"
                    )
            return
        if encoder_sequence is not None:
            _validation.rank("encoder_sequence", encoder_sequence.shape, 3)
            _validation.last_dim("encoder_sequence", encoder_sequence.shape, self._encoder_width)
            encoder_dims = tuple(encoder_sequence.shape[:2])
        else:
            encoder_dims = (cross_cache[1].shape[0], cross_cache[1].shape[2])
        check_broadcastable(masks["encoder_padding_mask"], encoder_dims, "encoder_padding_mask")
        check_broadcastable(masks["encoder_sequence_mask"], encoder_dims, "encoder_sequence_mask")
        check_broadcastable(
            masks["encoder_attention_mask"],
            (batch, query_length, encoder_dims[1]),
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
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
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
        self._check_call(
            decoder_sequence, encoder_sequence, masks,
            self_attention_cache, self_attention_cache_update_index, cross_attention_cache,
        )
        cached = self_attention_cache is not None
        key_padding = merge_masks(decoder_padding_mask)
        query_padding = merge_masks(decoder_sequence_mask, mask)
        if cached and key_padding is not None:
            # The new positions' slice of the mask over the cached positions.
            if len(key_padding.shape) == 1:
                key_padding = key_padding[None]
            start = ops.cast(self_attention_cache_update_index, "int32")
            size = (ops.shape(key_padding)[0], ops.shape(decoder_sequence)[1])
            query_padding = merge_masks(ops.slice(key_padding, (0, start), size), query_padding)
        elif not cached:
            query_padding = key_padding = merge_masks(key_padding, query_padding)
        encoder_padding = merge_masks(encoder_padding_mask, encoder_sequence_mask)

        def attention(layer, value, value_mask, attention_mask, causal, **cache_args):
            # The masks are passed explicitly, so that the attention does not
            # fill them from whatever Keras mask its inputs carry.
            def sublayer(x):
                result = layer(
                    query=x,
                    value=x if value is _SELF else value,
                    query_mask=query_padding,
                    value_mask=value_mask,
                    attention_mask=attention_mask,
                    use_causal_mask=causal,
                    return_attention_scores=return_attention_scores,
                    training=training,
                    **cache_args,
                )
                # (output, [scores], [cache]) -> (output, ([scores], [cache]))
                result = result if isinstance(result, tuple) else (result,)
                return result[0], result[1:]

            return sublayer

        self_cache_args = {}
        if cached:
            self_cache_args = dict(
                cache=self_attention_cache, cache_update_index=self_attention_cache_update_index
            )
        x, self_extras = self._residual(
            decoder_sequence,
            self._self_attention_layer_norm,
            attention(
                self._self_attention,
                _SELF,
                key_padding,
                decoder_attention_mask,
                use_causal_mask,
                **self_cache_args,
            ),
            self._self_attention_dropout,
            training,
        )
        cross_extras = ()
        if self._cross_attention is not None:
            cross_cache_args = {}
            if cross_attention_cache is not None:
                cross_cache_args = dict(cache=cross_attention_cache)
            x, cross_extras = self._residual(
                x,
                self._cross_attention_layer_norm,
                attention(
                    self._cross_attention,
                    encoder_sequence,
                    encoder_padding,
                    encoder_attention_mask,
                    False,
                    **cross_cache_args,
                ),
                self._cross_attention_dropout,
                training,
            )
        x = self._feedforward(x, training)
        outputs = (x,)
        if return_attention_scores:
            outputs += self_extras[:1] + cross_extras[:1]
        if cached:
            outputs += self_extras[-1:]
        return outputs[0] if len(outputs) == 1 else outputs

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
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
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
        self._check_call(
            decoder_sequence, encoder_sequence, masks,
            self_attention_cache, self_attention_cache_update_index, cross_attention_cache,
        )
        outputs = (keras.KerasTensor(decoder_sequence.shape, dtype=self.compute_dtype),)
        batch, query_length = decoder_sequence.shape[0], decoder_sequence.shape[1]
        if return_attention_scores:
            key_length = query_length
            if self_attention_cache is not None:
                key_length = self_attention_cache[1].shape[2]
            outputs += (
                keras.KerasTensor(
                    (batch, self.num_heads, query_length, key_length), dtype=self.compute_dtype
                ),
            )
            if self._cross_attention is not None:
                encoder_length = (
                    cross_attention_cache[1].shape[2]
                    if encoder_sequence is None
                    else encoder_sequence.shape[1]
                )
                outputs += (
                    keras.KerasTensor(
                        (batch, self._cross_attention.num_heads, query_length, encoder_length),
                        dtype=self.compute_dtype,
                    ),
                )
        if self_attention_cache is not None:
            outputs += (tuple(keras.KerasTensor(part.shape, dtype=part.dtype)
                              for part in self_attention_cache),)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self) -> dict:
        return {**super().get_config(), "cross_attention_num_heads": self.cross_attention_num_heads}


# Marks the self-attention's value: the sub-layer's own input.
_SELF = object()
