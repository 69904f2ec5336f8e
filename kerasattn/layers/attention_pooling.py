"""Learned-query attention pooling of a sequence into one or several vectors."""

from __future__ import annotations

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from kerasattn.layers import _single_head
from kerasattn.layers import _validation
from kerasattn.layers._dense import last_axis_product
from kerasattn.layers._initializers import add_float32_kernel
from kerasattn.layers._initializers import clone_initializer
from kerasattn.ops import check_broadcastable
from kerasattn.ops import masked_softmax


@keras.saving.register_keras_serializable(package="kerasattn")
class AttentionPooling(keras.layers.Layer):
    """Attention pooling layer: learned queries pool a sequence.

    Each of `num_queries` learned queries `u_n` attends over the positions
    `x_t` of the sequence and returns their weighted sum:

        units=None: score(u_n, x_t) = u_nᵀ x_t / √D
        units=U:    score(u_n, x_t) = u_nᵀ tanh(W x_t + b)   (HAN)
        weights_nt = masked_softmax_t(score(u_n, x_t))
        output_n = Σ_t weights_nt x_t

    With `units`, positions are scored through a `tanh` projection of width
    `U` and the queries have width `U` (the word/sentence attention of
    Hierarchical Attention Networks); without, the queries have the input
    width `D`. The pooled vectors are always sums of the unprojected inputs.
    Scores and softmax are computed in float32 under every dtype policy.

    Args:
        num_queries: positive integer, how many learned queries (pooled
            vectors). Defaults to `1`.
        units: optional positive integer, the width of the `tanh` projection
            of the keys; `None` scores the inputs directly. Defaults to `None`.
        dropout: float in [0, 1), dropout rate on the attention weights.
            Defaults to `0.0`.
        kernel_initializer: initializer for the queries and `W`.
        bias_initializer: initializer for `b`.
        kernel_regularizer: regularizer for the queries and `W`.
        bias_regularizer: regularizer for `b`.
        kernel_constraint: constraint for the queries and `W`.
        bias_constraint: constraint for `b`.
        seed: optional integer seed of the dropout.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: `(B, T, D)` sequence.
        mask: optional `(B, T)` padding mask, `True` = may attend (filled in
            from a Keras implicit mask).
        return_attention_scores: if `True`, also return the weights.
        training: whether dropout is active.

    Returns:
        `(B, D)` when `num_queries == 1`, else `(B, num_queries, D)`; with
        `return_attention_scores=True` also the weights, `(B, T)` or
        `(B, num_queries, T)` (after masking, before dropout). A sequence
        with every position masked pools to a zero vector. The sequence axis
        is gone, so no mask is propagated.

    Example:

    >>> tokens = keras.Input(shape=(None,), dtype="int32")
    >>> x = keras.layers.Embedding(1000, 16, mask_zero=True)(tokens)
    >>> pooled = AttentionPooling(units=32)(x)  # padding ignored
    >>> pooled.shape
    (None, 16)
    >>> outputs = keras.layers.Dense(2, activation="softmax")(pooled)
    >>> model = keras.Model(tokens, outputs)
    """

    def __init__(
        self,
        num_queries: int = 1,
        units: int | None = None,
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
        super().__init__(**kwargs)
        self.num_queries = _validation.positive_int("num_queries", num_queries)
        self.units = _validation.positive_int("units", units, allow_none=True)
        self.dropout = _validation.rate("dropout", dropout)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.seed = seed
        self.kernel = None
        self.bias = None
        self._dropout_layer = keras.layers.Dropout(
            self.dropout, seed=seed, dtype=self.dtype_policy
        )

    def build(self, input_shape):
        _validation.rank("inputs", input_shape, 3)
        width = _single_head.static_width("inputs", input_shape)

        if self.units is not None:
            self.kernel = add_float32_kernel(self, "kernel", (width, self.units))
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=clone_initializer(self.bias_initializer),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,
            )
        self.query = add_float32_kernel(self, "query", (self.num_queries, self.units or width))

    def _check_inputs(self, inputs, mask):
        _validation.rank("inputs", inputs.shape, 3)
        if self.built:
            width = self.query.shape[1] if self.kernel is None else self.kernel.shape[0]
            _validation.last_dim("inputs", inputs.shape, width)
        check_broadcastable(mask, inputs.shape[:2], "mask")

    def call(self, inputs, mask=None, return_attention_scores: bool = False, training=None):
        self._check_inputs(inputs, mask)
        def f32(x):
            return ops.cast(x, "float32")

        keys, query = f32(inputs), f32(self.query)
        if self.kernel is None:
            query = query * float(inputs.shape[-1]) ** -0.5
        else:
            keys = ops.tanh(last_axis_product(keys, f32(self.kernel)) + f32(self.bias))
        scores = ops.einsum("btu,nu->bnt", keys, query)
        if mask is not None:
            mask = ops.expand_dims(mask, -2)  # (B, 1, T): the same for every query
        weights = masked_softmax(scores, mask)
        # Without dropout, the weights returned are the tensor applied (one
        # cast), so that gradients with respect to them exist under mixed
        # precision (`kerasattn.explain`).
        applied = weights = ops.cast(weights, inputs.dtype)
        if training and self.dropout > 0:
            applied = self._dropout_layer(weights, training=training)
        output = ops.einsum("bnt,btd->bnd", applied, inputs)
        if self.num_queries == 1:
            output, weights = output[:, 0], weights[:, 0]
        if return_attention_scores:
            return output, weights
        return output

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        _validation.rank("inputs", input_shape, 3)
        if self.num_queries == 1:
            return (input_shape[0], input_shape[-1])
        return (input_shape[0], self.num_queries, input_shape[-1])

    def compute_output_spec(
        self, inputs, mask=None, return_attention_scores: bool = False, training=None
    ):
        self._check_inputs(inputs, mask)
        output = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return output
        weights_shape = (inputs.shape[0], self.num_queries, inputs.shape[1])
        if self.num_queries == 1:
            weights_shape = (inputs.shape[0], inputs.shape[1])
        return output, keras.KerasTensor(weights_shape, dtype=self.compute_dtype)

    def get_config(self):
        config = {
            "num_queries": self.num_queries,
            "units": self.units,
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
