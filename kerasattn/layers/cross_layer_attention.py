"""Cross-layer attention: each position attends over its own per-layer states."""

from __future__ import annotations

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.layers._dense import Dense
from kerasattn.layers._dense import last_axis_product
from kerasattn.layers._initializers import clone_initializer
from kerasattn.ops import check_broadcastable
from kerasattn.ops import masked_softmax
from kerasattn.ops import merge_masks
from kerasattn.ops.tracing import export_graph_enabled

QUERIES = ("last", "learned")


def _shapes(inputs):
    """Static shapes of a list of tensors, or the one shape of a tensor."""
    if isinstance(inputs, (list, tuple)):
        return [tuple(x.shape) for x in inputs]
    return tuple(inputs.shape)


@keras.saving.register_keras_serializable(package="kerasattn")
class CrossLayerAttention(keras.layers.Layer):
    """Fuses the outputs of several encoder layers by attention over depth.

    Given the outputs `H_1 ... H_L` of `L` encoder layers (each `(B, T, d)`),
    every position `t` attends over its own `L` representations:

        q_t     = W_q H_L[t]          (query="last")   or a learned q (query="learned")
        k_{t,l} = W_k H_l[t] (+ e_l)  (e_l: learned layer embedding)
        w_{t,l} = softmax_l(q_t . k_{t,l} / sqrt(units))
        out[t]  = sum_l w_{t,l} v_{t,l},  v_{t,l} = H_l[t] (or W_v H_l[t])

    Scores and softmax run in float32. Padded positions (mask `False`) get
    zero weights and a zero output; the padding mask is propagated.

    Args:
        units: width of the query/key projections; defaults to `d`.
        query: `"last"` projects the last layer's representation of the
            position; `"learned"` uses one learned query vector for every
            position.
        use_value_projection: project the values with a learned `W_v` (`d` to
            `d`) instead of using the `H_l[t]` themselves.
        use_layer_embedding: add a learned per-layer (depth) embedding to the
            projected keys, so the scores know which layer a key comes from.
        dropout: dropout rate on the attention weights, in training only.
        use_bias: whether the projections use a bias.
        kernel_initializer: initializer of the projection kernels and of the
            learned query.
        bias_initializer: initializer of the projection biases.
        layer_embedding_initializer: initializer of the layer embedding;
            zeros start the fusion from content-only scores.
        kernel_regularizer: optional regularizer of the projection kernels and
            of the learned query.
        bias_regularizer: optional regularizer of the projection biases.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list or tuple of `L >= 2` tensors `(B, T, d)` of one shape,
            ordered from the first layer to the last.
        mask: optional `(B, T)` padding mask, `True` = real position. Keras
            passes the inputs' implicit masks here as a list; they are
            combined with a logical AND.
        return_attention_scores: also return the attention weights.
        training: whether dropout is active.

    Returns:
        The fused sequence `(B, T, d)`, and with
        `return_attention_scores=True` also the weights over layers after
        masking and before dropout, `(B, T, L)`.

    Example:

    >>> tokens = keras.Input(shape=(None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 8, mask_zero=True)(tokens)
    >>> states = []
    >>> for _ in range(3):
    ...     x = keras.layers.Dense(8, activation="relu")(x)
    ...     states.append(x)
    >>> fused = CrossLayerAttention()(states)
    >>> fused.shape
    (None, None, 8)
    """

    def __init__(
        self,
        units: int | None = None,
        query: str = "last",
        use_value_projection: bool = False,
        use_layer_embedding: bool = True,
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        layer_embedding_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _validation.positive_int("units", units, allow_none=True)
        self.query = _validation.one_of("query", query, QUERIES)
        self.use_value_projection = use_value_projection
        self.use_layer_embedding = use_layer_embedding
        self.dropout = _validation.rate("dropout", dropout)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.layer_embedding_initializer = keras.initializers.get(
            layer_embedding_initializer
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.seed = seed
        self._dropout_layer = keras.layers.Dropout(
            self.dropout, seed=seed, dtype=self.dtype_policy, name="dropout"
        )
        self.num_layers = None

    def _dense(self, units: int, name: str) -> Dense:
        return Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _check_inputs(self, shapes) -> None:
        """Validates the list of (static) input shapes.

        A single tensor instead of a list arrives as one shape, a tuple of
        dimensions, which the first check turns away.
        """
        if not all(isinstance(shape, (list, tuple)) for shape in shapes):
            raise ValueError(
                "Expected `inputs` to be a list of at least 2 tensors "
                f"(B, T, d), received: inputs.shape={tuple(shapes)}"
            )
        if len(shapes) < 2:
            raise ValueError(
                "Expected `inputs` to be a list of at least 2 tensors "
                f"(B, T, d), received: len(inputs)={len(shapes)}"
            )
        for i, shape in enumerate(shapes):
            _validation.rank(f"inputs[{i}]", shape, 3)
        first = tuple(shapes[0])
        for i, shape in enumerate(shapes[1:], start=1):
            shape = tuple(shape)
            if any(a is not None and b is not None and a != b for a, b in zip(first, shape)):
                raise ValueError(
                    "Expected every entry of `inputs` with the shape of inputs[0], "
                    f"received: inputs[0].shape={first}, inputs[{i}].shape={shape}"
                )
        if first[-1] is None:
            raise ValueError(
                "Expected `inputs` with a static last dimension, received: "
                f"inputs[0].shape={first}"
            )
        if self.num_layers is not None and len(shapes) != self.num_layers:
            raise ValueError(
                f"Expected `inputs` to hold {self.num_layers} tensors, as when "
                f"the layer was built, received: len(inputs)={len(shapes)}"
            )

    def build(self, inputs_shape):
        self._check_inputs(inputs_shape)
        self.num_layers = len(inputs_shape)
        width = inputs_shape[0][-1]
        units = self.units or width
        self._key_dense = self._dense(units, "key")
        self._key_dense.build((None, None, None, width))
        if self.query == "last":
            self._query_dense = self._dense(units, "query")
            self._query_dense.build((None, None, width))
        else:
            self.query_vector = self.add_weight(
                name="query_vector",
                shape=(units,),
                initializer=clone_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer,
            )
        if self.use_value_projection:
            self._value_dense = self._dense(width, "value")
            self._value_dense.build((None, None, None, width))
        if self.use_layer_embedding:
            self.layer_embedding = self.add_weight(
                name="layer_embedding",
                shape=(self.num_layers, units),
                initializer=clone_initializer(self.layer_embedding_initializer),
            )
        self._dropout_layer.build(None)
        self.built = True

    def _merged_mask(self, mask, shape):
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        for i, m in enumerate(masks):
            check_broadcastable(m, shape[:2], "mask" if len(masks) == 1 else f"mask[{i}]")
        return merge_masks(*masks)

    def _scores_of_folded_kernels(self, inputs, scale):
        """The `(B, T, L)` scores as exported graphs compute them.

        With the query `q` (`h_L W_q + b_q`, or the learned vector) and the
        keys `k_l = h_l W_k + c_l` (`c_l`: the key bias plus the layer
        embedding), `scale * q . k_l` is `h_l . r + s_l` with
        `r = scale * q W_kᵀ` and `s_l = scale * q . c_l`: one product per
        position instead of a key projection of each of its `L` states. The
        kernels are constants in an exported graph, so the converter
        multiplies them together once. Each state is multiplied on its own:
        LiteRT stacks them (`PACK`) outside its XNNPACK delegate.
        """

        def query_times(right):  # q @ right for a constant right (units, n)
            if self.query == "learned":
                return ops.matmul(ops.cast(self.query_vector, "float32"), right)
            kernel = ops.cast(self._query_dense.kernel, "float32")
            product = last_axis_product(ops.cast(inputs[-1], "float32"), ops.matmul(kernel, right))
            if not self.use_bias:
                return product
            return product + ops.matmul(ops.cast(self._query_dense.bias, "float32"), right)

        key_kernel = ops.cast(self._key_dense.kernel, "float32")  # (d, units)
        r = query_times(ops.transpose(key_kernel) * scale)  # (B, T, d) or (d,)
        scores = ops.concatenate(
            [ops.sum(r * ops.cast(x, "float32"), axis=-1, keepdims=True) for x in inputs], axis=-1
        )
        offsets = []
        if self.use_bias:
            offsets.append(ops.cast(self._key_dense.bias, "float32")[None])
        if self.use_layer_embedding:
            offsets.append(ops.cast(self.layer_embedding, "float32"))  # (L, units)
        if offsets:
            # (L,) or (B, T, L); with a key bias alone L is 1 and broadcasts.
            scores = scores + query_times(ops.transpose(sum(offsets[1:], offsets[0])) * scale)
        return scores

    def call(
        self,
        inputs,
        mask=None,
        return_attention_scores: bool = False,
        training=None,
    ):
        self._check_inputs(_shapes(inputs))
        mask = self._merged_mask(mask, inputs[0].shape)
        scale = float(self.units or inputs[0].shape[-1]) ** -0.5
        # Products and sums rather than einsums: with L of a few layers the
        # einsums become (B*T) tiny batched matmuls behind dynamic reshapes,
        # which cost LiteRT as much as a whole attention layer.
        projections = [self._key_dense] + ([self._query_dense] if self.query == "last" else [])
        stacked = None
        if export_graph_enabled() and all(p.quantization_mode is None for p in projections):
            scores = self._scores_of_folded_kernels(inputs, scale)
        else:
            stacked = ops.stack(inputs, axis=2)  # (B, T, L, d)
            keys = self._key_dense(stacked)
            if self.use_layer_embedding:
                keys = keys + ops.cast(self.layer_embedding, keys.dtype)
            keys = ops.cast(keys, "float32")
            if self.query == "last":
                query = ops.cast(self._query_dense(inputs[-1]), "float32")
                scores = ops.sum(ops.expand_dims(query * scale, 2) * keys, axis=-1)
            else:
                query = ops.cast(self.query_vector, "float32")
                scores = ops.sum((query * scale) * keys, axis=-1)
        weights = masked_softmax(
            scores, None if mask is None else ops.expand_dims(mask, -1)
        )
        weights = ops.cast(weights, self.compute_dtype)
        applied = self._dropout_layer(weights, training=training)
        if stacked is None:  # the exported form: a weighted sum of the states, unstacked
            values = [self._value_dense(x) for x in inputs] if self.use_value_projection else inputs
            output = sum(applied[:, :, i : i + 1] * v for i, v in enumerate(values))
        else:
            values = self._value_dense(stacked) if self.use_value_projection else stacked
            output = ops.sum(ops.expand_dims(applied, -1) * values, axis=2)
        if return_attention_scores:
            return output, weights
        return output

    def compute_mask(self, inputs, mask=None):
        return self._merged_mask(mask, inputs[0].shape)

    def compute_output_spec(
        self,
        inputs,
        mask=None,
        return_attention_scores: bool = False,
        training=None,
    ):
        self._check_inputs(_shapes(inputs))
        self._merged_mask(mask, inputs[0].shape)
        shape = tuple(inputs[0].shape)
        output = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        weights = keras.KerasTensor((*shape[:2], len(inputs)), dtype=self.compute_dtype)
        return output, weights

    def get_config(self):
        config = {
            "units": self.units,
            "query": self.query,
            "use_value_projection": self.use_value_projection,
            "use_layer_embedding": self.use_layer_embedding,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "layer_embedding_initializer": keras.initializers.serialize(
                self.layer_embedding_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
