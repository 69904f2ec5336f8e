"""Bahdanau (additive) attention with learned query and key projections."""

from __future__ import annotations

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from kerasattn.layers import _single_head
from kerasattn.layers import _validation
from kerasattn.layers._initializers import add_float32_kernel
from kerasattn.layers._initializers import clone_initializer


@keras.saving.register_keras_serializable(package="kerasattn")
class AdditiveAttention(_single_head.SingleHeadAttention):
    """Additive attention layer, a.k.a. Bahdanau-style attention.

    Each query scores each key with a one-hidden-layer network:

        score(q_i, k_j) = vᵀ tanh(W_q q_i + W_k k_j + b)
        weights_ij = masked_softmax_j(score(q_i, k_j))
        output_i = Σ_j weights_ij value_j

    `W_q` projects the query width and `W_k` the key width to `units`, so
    query and key may differ in width (`keras.layers.AdditiveAttention` has no
    projections and needs equal widths). Scores and softmax are computed in
    float32 under every dtype policy.

    Args:
        units: optional positive integer, the width of the hidden layer (of
            `W_q q`, `W_k k`, `b` and `v`). Defaults to `None`: the query's
            last dimension `Dq`.
        use_bias: whether to add the bias `b`. Defaults to `True`.
        dropout: float in [0, 1), dropout rate on the attention weights.
            Defaults to `0.0`.
        kernel_initializer: initializer for `W_q`, `W_k` and `v` (each
            gets its own instance, so they start different).
        bias_initializer: initializer for `b`.
        kernel_regularizer: regularizer for `W_q`, `W_k` and `v`.
        bias_regularizer: regularizer for `b`.
        kernel_constraint: constraint for `W_q`, `W_k` and `v`.
        bias_constraint: constraint for `b`.
        seed: optional integer seed of the dropout.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        query: `(B, Tq, Dq)` queries.
        value: `(B, Tk, Dv)` values.
        key: optional `(B, Tk, Dk)` keys; defaults to `value`.
        query_mask: optional `(B, Tq)` padding mask of the queries (filled in
            from a Keras implicit mask); masked queries get a zero output.
        value_mask: optional `(B, Tk)` padding mask of the values.
        key_mask: optional `(B, Tk)` padding mask of the keys, applied
            together with `value_mask`.
        attention_mask: optional boolean mask broadcastable to
            `(B, Tq, Tk)`; `True` means "may attend".
        return_attention_scores: if `True`, also return the weights.
        training: whether dropout is active.
        use_causal_mask: if `True`, query `i` attends only to keys `j <= i`.

    Returns:
        `(B, Tq, Dv)` output, and with `return_attention_scores=True` also the
        `(B, Tq, Tk)` weights (after masking, before dropout). A query with
        every key masked gets zero weights and a zero output. The query's
        implicit mask is propagated to the output.

    Example:

    >>> query = np.random.rand(2, 3, 4)  # (B, Tq, Dq)
    >>> value = np.random.rand(2, 5, 6)  # (B, Tk, Dv), also the keys
    >>> layer = AdditiveAttention(units=8)
    >>> output, weights = layer(query, value, return_attention_scores=True)
    >>> tuple(output.shape), tuple(weights.shape)
    ((2, 3, 6), (2, 3, 5))
    """

    def __init__(
        self,
        units: int | None = None,
        use_bias: bool = True,
        dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.units = _validation.positive_int("units", units, allow_none=True)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_shapes(query_shape, value_shape, key_shape)
        query_dim = _single_head.static_width("query", query_shape)
        key_dim = _single_head.static_width("key", key_shape)
        units = self.units or query_dim

        self.query_kernel = add_float32_kernel(self, "query_kernel", (query_dim, units))
        self.key_kernel = add_float32_kernel(self, "key_kernel", (key_dim, units))
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(units,),
                initializer=clone_initializer(self.bias_initializer),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,
            )
        self.score_kernel = add_float32_kernel(self, "score_kernel", (units,))

    def _check_shapes(self, query_shape, value_shape, key_shape):
        _single_head.check_shapes(query_shape, value_shape, key_shape)
        if self.built:
            _validation.last_dim("query", query_shape, self.query_kernel.shape[0])
            _validation.last_dim("key", key_shape, self.key_kernel.shape[0])

    def _scores(self, query, key):
        """float32 `(B, Tq, Tk)` scores vᵀ tanh(W_q q_i + W_k k_j + b)."""

        def f32(x):
            return ops.cast(x, "float32")

        projected_query = ops.matmul(f32(query), f32(self.query_kernel))
        projected_key = ops.matmul(f32(key), f32(self.key_kernel))
        if self.bias is not None:
            projected_key = projected_key + f32(self.bias)
        hidden = ops.tanh(
            ops.expand_dims(projected_query, 2) + ops.expand_dims(projected_key, 1)
        )
        return ops.einsum("bqku,u->bqk", hidden, f32(self.score_kernel))

    def get_config(self):
        config = {
            "units": self.units,
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
