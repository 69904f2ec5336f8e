"""Single-head dot-product attention: Luong `dot` and `general`, Vaswani `scaled`."""

from __future__ import annotations

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from kerasattn.layers import _single_head
from kerasattn.layers import _validation
from kerasattn.layers._initializers import clone_initializer

SCORES = ("dot", "scaled", "general")


@keras.saving.register_keras_serializable(package="kerasattn")
class DotProductAttention(_single_head.SingleHeadAttention):
    """Dot-product attention layer with a choice of score function.

    Each query scores each key with

        "dot"     (Luong):   score(q_i, k_j) = q_iᵀ k_j
        "scaled"  (Vaswani): score(q_i, k_j) = q_iᵀ k_j / √d
        "general" (Luong):   score(q_i, k_j) = q_iᵀ W k_j

    then weights_ij = masked_softmax_j(score(q_i, k_j)) and
    output_i = Σ_j weights_ij value_j. `d` is the query (= key) width and `W`
    a learned `(query_dim, key_dim)` matrix, so with "general" query and key
    may differ in width; "dot" and "scaled" need equal widths. Scores and
    softmax are computed in float32 under every dtype policy.

    Unlike `keras.layers.Attention`, "scaled" divides by the fixed √d (Keras's
    `use_scale=True` learns a scalar instead), and a query with every key
    masked gets a zero output (Keras returns the mean of the values).

    Args:
        score: one of "dot", "scaled", "general". Defaults to "dot".
        dropout: float in [0, 1), dropout rate on the attention weights.
            Defaults to `0.0`.
        kernel_initializer: initializer for `W` ("general" only).
        kernel_regularizer: regularizer for `W` ("general" only).
        kernel_constraint: constraint for `W` ("general" only).
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
    >>> layer = DotProductAttention(score="general")
    >>> output, weights = layer(query, value, return_attention_scores=True)
    >>> tuple(output.shape), tuple(weights.shape)
    ((2, 3, 6), (2, 3, 5))
    """

    def __init__(
        self,
        score: str = "dot",
        dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.score = _validation.one_of("score", score, SCORES)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.kernel = None

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_shapes(query_shape, value_shape, key_shape)
        if self.score == "general":
            query_dim = _single_head.static_width("query", query_shape)
            key_dim = _single_head.static_width("key", key_shape)
            # Scores are computed in float32, so `W` is never autocast.
            self.kernel = self.add_weight(
                name="kernel",
                shape=(query_dim, key_dim),
                initializer=clone_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
                autocast=False,
            )

    def _check_shapes(self, query_shape, value_shape, key_shape):
        _single_head.check_shapes(query_shape, value_shape, key_shape)
        if self.score == "general":
            if self.built:
                _validation.last_dim("query", query_shape, self.kernel.shape[0])
                _validation.last_dim("key", key_shape, self.kernel.shape[1])
            return
        q_dim, k_dim = query_shape[-1], key_shape[-1]
        if q_dim is not None and k_dim is not None and q_dim != k_dim:
            raise ValueError(
                f"Expected `query` and `key` of the same last dimension for "
                f"score={self.score!r} (use score='general' for different widths), "
                f"received: query.shape={tuple(query_shape)}, key.shape={tuple(key_shape)}"
            )

    def _scores(self, query, key):
        """float32 `(B, Tq, Tk)` scores."""
        query = ops.cast(query, "float32")
        if self.score == "scaled":
            query = query * float(query.shape[-1]) ** -0.5
        elif self.score == "general":
            query = ops.matmul(query, ops.cast(self.kernel, "float32"))
        return ops.matmul(query, ops.swapaxes(ops.cast(key, "float32"), -2, -1))

    def get_config(self):
        config = {
            "score": self.score,
            "dropout": self.dropout,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
