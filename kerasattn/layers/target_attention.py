"""Target attention: a candidate item attends over a user's behaviour history."""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.layers._dense import Dense
from kerasattn.layers._initializers import clone_initializer
from kerasattn.ops import as_bool_mask
from kerasattn.ops import check_broadcastable
from kerasattn.ops import masked_softmax
from kerasattn.ops import merge_attention_masks

SCORES = ("mlp", "scaled")
NORMALIZATIONS = ("softmax", None)


@keras.saving.register_keras_serializable(package="kerasattn")
class TargetAttention(keras.layers.Layer):
    """Target (candidate-to-history) attention, as in DIN and BST-style scorers.

    A candidate item `q` attends over the user's behaviour history
    `k_1 ... k_T` and returns the history summary `sum_j w_j v_j`. The call
    arguments follow `keras.layers.MultiHeadAttention`: the history is the
    `value` (and, unless a separate `key` is given, the keys).

    With `score="mlp"` (the "activation unit" of DIN, Zhou et al. 2018) each
    history item is scored by a small MLP on the interaction features:

        s_j = MLP([q, k_j, q - k_j, q * k_j])

    and the weights are either the raw scores (`normalization=None`, as in
    the original DIN, with masked items weighted 0) or
    `w = masked_softmax(s)` (`normalization="softmax"`). With
    `score="scaled"` the weights are `w = masked_softmax(q . k_j / sqrt(d))`.

    Scores are normalised in float32; under mixed precision the MLP runs in
    the compute dtype like any `Dense` stack. An empty history (every item
    masked) gives a zero summary, never NaN.

    Args:
        score: `"mlp"` (DIN activation unit) or `"scaled"` (scaled dot
            product).
        hidden_units: widths of the MLP's hidden `Dense` layers (`score="mlp"`
            only). An empty tuple makes the score linear in the features.
        activation: activation of the hidden layers, any name or callable
            that `keras.activations.get` accepts. DIN used PReLU/Dice;
            `"sigmoid"` is the default here.
        normalization: `"softmax"` normalises the scores over the history;
            `None` uses the raw MLP scores as weights (DIN's choice).
            `score="scaled"` requires `"softmax"`.
        dropout: dropout rate on the attention weights, in training only.
        use_bias: whether the MLP's `Dense` layers use a bias.
        kernel_initializer: initializer of the MLP kernels (each `Dense`
            gets its own instance).
        bias_initializer: initializer of the MLP biases.
        kernel_regularizer: optional regularizer of the MLP kernels.
        bias_regularizer: optional regularizer of the MLP biases.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: the candidate, `(B, d)`, or several candidates `(B, Tq, d)`.
        value: the history, `(B, T, dv)`; `T` may be dynamic.
        key: optional `(B, T, d)` keys of the history; defaults to `value`.
        query_mask: optional `(B,)` or `(B, Tq)` mask of the candidates,
            `True` = real candidate; a masked candidate gets a zero summary.
        value_mask: optional `(B, T)` mask of the history, `True` = real
            item.
        key_mask: optional `(B, T)` mask of the keys, applied together with
            `value_mask`. Keras fills each of these three from the implicit
            mask of its tensor (for example from `Embedding(mask_zero=True)`).
        return_attention_scores: also return the attention weights.
        training: whether dropout is active.

    Returns:
        The history summary, `(B, dv)` or `(B, Tq, dv)`, and with
        `return_attention_scores=True` also the weights after masking and
        before dropout, `(B, T)` or `(B, Tq, T)`. Several candidates keep
        their implicit mask.

    Example:

    >>> item = keras.Input(shape=(), dtype="int32")
    >>> history = keras.Input(shape=(None,), dtype="int32")
    >>> table = keras.layers.Embedding(1000, 16, mask_zero=True)
    >>> interest = TargetAttention(hidden_units=(32, 16))(
    ...     table(item), table(history))
    >>> interest.shape
    (None, 16)
    """

    def __init__(
        self,
        score: str = "mlp",
        hidden_units=(80, 40),
        activation="sigmoid",
        normalization: str | None = "softmax",
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.score = _validation.one_of("score", score, SCORES)
        self.normalization = _validation.one_of(
            "normalization", normalization, NORMALIZATIONS
        )
        if score == "scaled" and normalization != "softmax":
            raise ValueError(
                "Expected `normalization='softmax'` with `score='scaled'`, "
                f"received: normalization={normalization!r}"
            )
        if not isinstance(hidden_units, (list, tuple)):
            raise ValueError(
                "Expected `hidden_units` to be a tuple of positive integers, "
                f"received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = tuple(
            _validation.positive_int("hidden_units", units)
            for units in hidden_units
        )
        try:
            self.activation = keras.activations.get(activation)
        except ValueError:
            raise ValueError(
                "Expected `activation` to be a Keras activation, received: "
                f"activation={activation!r}"
            ) from None
        self.dropout = _validation.rate("dropout", dropout)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.seed = seed
        self._mlp = []
        self._dropout_layer = keras.layers.Dropout(
            self.dropout, seed=seed, dtype=self.dtype_policy, name="dropout"
        )

    def _check_shapes(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        _validation.rank("query", query_shape, (2, 3))
        _validation.rank("value", value_shape, 3)
        _validation.rank("key", key_shape, 3)
        if query_shape[-1] is None or query_shape[-1] != key_shape[-1]:
            raise ValueError(
                "Expected `query` and `key` (the `value` when no `key` is given) with the "
                f"same static last dimension, received: query.shape={tuple(query_shape)}, "
                f"key.shape={tuple(key_shape)}"
            )
        if None not in (query_shape[0], key_shape[0]) and query_shape[0] != key_shape[0]:
            raise ValueError(
                "Expected `query` and `key` with the same batch size, received: "
                f"query.shape={tuple(query_shape)}, key.shape={tuple(key_shape)}"
            )
        _validation.same_length("key", key_shape, "value", value_shape)

    def _check_masks(self, query, value, query_mask, value_mask, key_mask) -> None:
        history = (value.shape[0], value.shape[1])
        check_broadcastable(query_mask, tuple(query.shape[:-1]), "query_mask")
        check_broadcastable(value_mask, history, "value_mask")
        check_broadcastable(key_mask, history, "key_mask")

    def build(self, query_shape, value_shape, key_shape=None):
        self._check_shapes(query_shape, value_shape, key_shape)
        self._mlp = []
        if self.score == "mlp":
            width = 4 * query_shape[-1]
            widths = self.hidden_units + (1,)
            for i, units in enumerate(widths):
                last = i == len(widths) - 1
                dense = Dense(
                    units,
                    activation=None if last else self.activation,
                    use_bias=self.use_bias,
                    kernel_initializer=clone_initializer(self.kernel_initializer),
                    bias_initializer=clone_initializer(self.bias_initializer),
                    kernel_regularizer=self.kernel_regularizer,
                    bias_regularizer=self.bias_regularizer,
                    dtype=self.dtype_policy,
                    name="score" if last else f"hidden_{i}",
                )
                dense.build((None, None, None, width))
                self._mlp.append(dense)
                width = units
        self._dropout_layer.build(None)

    def _scores(self, query, key):
        """float32 `(B, Tq, T)` scores of a `(B, Tq, d)` query."""
        if self.score == "scaled":
            scale = 1.0 / math.sqrt(query.shape[-1])
            return ops.einsum(
                "bqd,btd->bqt",
                ops.cast(query, "float32") * scale,
                ops.cast(key, "float32"),
            )
        q = ops.expand_dims(query, 2)  # (B, Tq, 1, d)
        k = ops.expand_dims(key, 1)  # (B, 1, T, d)
        first, rest = self._mlp[0], self._mlp[1:]
        if getattr(first, "quantization_mode", None) or getattr(first, "lora_enabled", False):
            diff = q - k
            shape = ops.shape(diff)
            features = first(ops.concatenate(
                [ops.broadcast_to(q, shape), ops.broadcast_to(k, shape), diff, q * k],
                axis=-1,
            ))
        else:
            features = first.activation(self._first_layer(first, query, key))
        for dense in rest:
            features = dense(features)
        return ops.cast(ops.squeeze(features, -1), "float32")

    def _first_layer(self, dense, query, key):
        """The first `Dense` on `[q, k, q - k, q * k]` without building that tensor.

        With the kernel split as `[W_q; W_k; W_d; W_p]` the pre-activation is
        `q (W_q + W_d) + k (W_k - W_d) + (q * k) W_p + b`: the first two terms
        are computed once per candidate and once per history item, so only
        `(q * k) W_p` runs over all `(candidate, item)` pairs — a quarter of
        the concatenated features' work, with the same weights.
        """
        kernel = ops.cast(dense.kernel, self.compute_dtype)
        w_q, w_k, w_d, w_p = ops.split(kernel, 4, axis=0)
        per_query = ops.matmul(query, w_q + w_d)  # (B, Tq, h)
        per_key = ops.matmul(key, w_k - w_d)  # (B, T, h)
        pairs = ops.matmul(ops.expand_dims(query, 2) * ops.expand_dims(key, 1), w_p)
        outputs = pairs + ops.expand_dims(per_query, 2) + ops.expand_dims(per_key, 1)
        if dense.use_bias:
            outputs = outputs + ops.cast(dense.bias, self.compute_dtype)
        return outputs

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        return_attention_scores: bool = False,
        training=None,
    ):
        key = value if key is None else key
        self._check_shapes(query.shape, value.shape, key.shape)
        self._check_masks(query, value, query_mask, value_mask, key_mask)
        single = len(query.shape) == 2
        if single:
            query = ops.expand_dims(query, 1)
            if query_mask is not None:
                query_mask = ops.expand_dims(as_bool_mask(query_mask), -1)  # (B, 1)
        scores = self._scores(query, key)
        # (B, Tq|1, T|1): masked candidates and masked history items.
        mask = merge_attention_masks(query_mask, value_mask, key_mask)
        if self.normalization == "softmax":
            weights = masked_softmax(scores, mask)
        elif mask is not None:
            weights = scores * ops.cast(mask, "float32")
        else:
            weights = scores
        weights = ops.cast(weights, self.compute_dtype)
        applied = self._dropout_layer(weights, training=training)
        output = ops.einsum("bqt,btv->bqv", applied, value)
        if single:
            output = ops.squeeze(output, 1)
            weights = ops.squeeze(weights, 1)
        if return_attention_scores:
            return output, weights
        return output

    def compute_mask(self, query, previous_mask):
        # Several candidates keep their axis, and their padding mask with it;
        # a single candidate's output has no sequence axis to mask.
        if previous_mask is None or len(query.shape) == 2:
            return None
        return previous_mask

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        return_attention_scores: bool = False,
        training=None,
    ):
        key = value if key is None else key
        self._check_shapes(query.shape, value.shape, key.shape)
        self._check_masks(query, value, query_mask, value_mask, key_mask)
        output = keras.KerasTensor(
            (*query.shape[:-1], value.shape[-1]), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return output
        weights = keras.KerasTensor(
            (*query.shape[:-1], value.shape[1]), dtype=self.compute_dtype
        )
        return output, weights

    def get_config(self):
        config = {
            "score": self.score,
            "hidden_units": list(self.hidden_units),
            "activation": keras.activations.serialize(self.activation),
            "normalization": self.normalization,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
