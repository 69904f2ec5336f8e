"""Multi-head attention, a drop-in for `keras.layers.MultiHeadAttention`."""

from __future__ import annotations

import functools
import math
import string
from typing import Sequence

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.layers._initializers import clone_initializer
from kerasattn.ops.attention import DEFAULT_BLOCK_SIZE
from kerasattn.ops.attention import IMPLEMENTATIONS
from kerasattn.ops.attention import dense_attention_heads_first
from kerasattn.ops.attention import dot_product_attention
from kerasattn.ops.attention import takes_dense_path
from kerasattn.ops.masking import as_bool_mask
from kerasattn.ops.masking import causal_mask
from kerasattn.ops.masking import causal_mask_between
from kerasattn.ops.masking import check_broadcastable
from kerasattn.ops.masking import masked_softmax
from kerasattn.ops.masking import merge_masks
from kerasattn.ops.masking import padding_attention_mask
from kerasattn.ops.masking import sliding_window_mask
from kerasattn.ops.masking import sliding_window_mask_between
from kerasattn.ops.tracing import export_graph_enabled
from kerasattn.ops.tracing import tensorflow_graph


def _projection_equation(free_dims: int, bound_dims: int, output_dims: int):
    """Einsum equation and bias axes of a projection, spelled like Keras's.

    The equation keeps `free_dims` leading axes, contracts `bound_dims` axes
    with the kernel and appends `output_dims` axes; the letters match Keras's
    `_build_proj_equation` so the kernels have Keras's shapes.
    """
    letters = string.ascii_lowercase
    free = letters[:free_dims]
    bound = letters[free_dims : free_dims + bound_dims]
    out = letters[free_dims + bound_dims : free_dims + bound_dims + output_dims]
    return f"{free}{bound},{bound}{out}->{free}{out}", out


def _product(dims):
    result = 1
    for dim in dims:
        result = result * dim
    return result


@keras.saving.register_keras_serializable(package="kerasattn")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with grouped-query heads and a chunked path.

    A drop-in for `keras.layers.MultiHeadAttention` (same arguments, call
    signature, sub-layers and weights, so `set_weights(keras_mha.get_weights())`
    reproduces it), computed by `kerasattn.ops.dot_product_attention`:

    ```
    head_i = softmax(mask(q W_q,i · (k W_k,j)ᵀ / sqrt(key_dim))) · v W_v,j
    output = concat(head_1 … head_N) W_o        (j = i // (N / K))
    ```

    with `N = num_heads` query heads and `K = num_key_value_heads` key/value
    heads (`K = N` by default; `K < N` is grouped-query attention, each
    key/value head shared by `N / K` consecutive query heads).

    Unlike Keras, a query with no key to attend to (every key masked, which
    includes padded query positions) gets all-zero attention weights and a
    zero attention result, so its output is just the bias of the output
    projection; Keras returns the mean of the values there.

    As in Keras, `call` projects the inputs, merges the masks
    (`_compute_attention_mask`) and hands the projected heads to
    `_compute_attention(query, key, value, attention_mask=None,
    training=None, return_attention_scores=False, use_causal_mask=False)`,
    which subclasses may override (keras-hub's cached attention does).
    Where it is not overridden, sequences (rank-3 inputs) with plain
    projections and no gate take a shortcut on the dense path: the same
    products, projected with the heads before the sequence axis, so the
    attention runs without the transposes of Keras's layout (fewer ops,
    which eager execution pays for one by one).

    Args:
        num_heads: number of query heads `N`.
        key_dim: width of each query and key head.
        value_dim: width of each value head; defaults to `key_dim`.
        dropout: dropout rate on the attention weights, in [0, 1).
        use_bias: whether the projections have biases.
        output_shape: shape of the output besides the batch and sequence
            axes (int or tuple); defaults to the query's last dimension.
        attention_axes: input axes to attend over (int or tuple); defaults
            to every axis but the batch and feature axes. With several axes,
            they are flattened, in the order given, into one sequence, which
            is also the order `use_causal_mask` and `sliding_window` follow.
        sliding_window: optional positive int; query `i` sees key `j` only
            when `|i - j| < sliding_window`.
        flash_attention: `None` or `False` only; there is no flash kernel
            here. For long sequences use `implementation="chunked"`.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        kernel_regularizer: regularizer of the projection kernels.
        bias_regularizer: regularizer of the projection biases.
        activity_regularizer: regularizer of the projections' outputs.
        kernel_constraint: constraint of the projection kernels.
        bias_constraint: constraint of the projection biases.
        use_gate: multiply the attention result by a sigmoid gate projected
            from the query (Gated Attention, arXiv:2505.06708).
        seed: optional int seeding the dropout.
        num_key_value_heads: number of key/value heads `K`, dividing
            `num_heads`; defaults to `num_heads`.
        implementation: "dense", "chunked" (keys in blocks of `block_size`
            with an online softmax and a recomputing gradient: memory grows
            with `Tq * block_size` in training as at inference, but no
            attention scores and no dropout) or "auto" (chunked, training or
            not, where the dense float32 scores `(B, N, Tq, Tk)` would reach
            1 GiB, for a static key length, when neither is needed; dense
            otherwise).
        block_size: key block length of the chunked path.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, Tq, dim)` (or `(B, <query axes>, dim)`).
        value: `(B, Tk, dim_v)` (or `(B, <key axes>, dim_v)`).
        key: optional `(B, Tk, dim_k)`; defaults to `value`.
        query_mask: optional `(B, Tq)` padding mask of the query, True = real
            position; filled from the query's Keras mask when not given.
        value_mask: optional `(B, Tk)` padding mask of the value; filled from
            the value's Keras mask when not given.
        key_mask: optional `(B, Tk)` padding mask of the key; filled from the
            key's Keras mask when not given.
        attention_mask: optional boolean mask broadcastable to
            `(B, Tq, Tk)` (with attention axes `(B, <other axes>, <query
            attention axes>, <key attention axes>)`), or a per-head mask
            laid out like the scores, `(B, N, Tq, Tk)` (`(B, <other axes>,
            N, <query attention axes>, <key attention axes>)`); True = may
            attend.
        return_attention_scores: also return the attention weights.
        training: whether dropout is active.
        use_causal_mask: query `i` sees only keys `j <= i`.
        cache: optional key/value cache for incremental decoding (rank-3
            inputs), from `initial_cache` or `compute_cache`: the pair
            `(keys, values)` of the projected heads over `S` positions, heads
            first so that both attention products read it without a copy —
            `keys` `(B, K, key_dim, S)`, transposed and already scaled by
            `key_dim ** -0.5`, `values` `(B, K, S, value_dim)`. With a cache
            the layer attends over the cache's `S` positions, and the padding
            masks of the value and key and `attention_mask` describe those
            `S` positions: `(B, S)` and `(B, Tq, S)`.
        cache_update_index: with a `cache`, the position (int or int32
            scalar tensor) of the first query: the projected key and value
            (`(B, Tq, dim)` each) are written into the cache at
            positions `[index, index + Tq)` before attending, and `use_causal_mask`
            and `sliding_window` count the query positions from there.
            `None` attends over the cache as it is (a cross-attention cache;
            `value` and `key` may then be `None`, and are not used). The
            positions not yet written hold zeros: hide them with
            `use_causal_mask=True` (or `attention_mask`).

    Returns:
        The output `(B, Tq, E)`, `E` the query's last dimension or
        `output_shape`, carrying the query's Keras mask; with
        `return_attention_scores=True` also the weights `(B, N, Tq, Tk)`
        (with attention axes `(B, <other axes>, N, <query attention axes>,
        <key attention axes>)`) after masking and before dropout. With a
        `cache`, the updated cache comes last: `(output, cache)` or
        `(output, scores, cache)`.

    Example:

    >>> layer = MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=2)
    >>> query = keras.random.normal((2, 5, 16))
    >>> value = keras.random.normal((2, 7, 16))
    >>> output, scores = layer(query, value, return_attention_scores=True)
    >>> tuple(output.shape), tuple(scores.shape)
    ((2, 5, 16), (2, 4, 5, 7))

    Decoding step by step with a self-attention cache equals the causal pass:

    >>> cache = layer.initial_cache(batch_size=2, max_length=5)
    >>> steps = []
    >>> for index in range(5):
    ...     step = query[:, index : index + 1]
    ...     output, cache = layer(step, step, use_causal_mask=True, cache=cache,
    ...                           cache_update_index=index)
    ...     steps.append(output)
    >>> full = layer(query, query, use_causal_mask=True)
    >>> bool(np.allclose(keras.ops.concatenate(steps, axis=1), full, atol=1e-5))
    True
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_shape=None,
        attention_axes=None,
        sliding_window: int | None = None,
        flash_attention: bool | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate: bool = False,
        seed: int | None = None,
        num_key_value_heads: int | None = None,
        implementation: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self._num_heads = _validation.positive_int("num_heads", num_heads)
        self._key_dim = _validation.positive_int("key_dim", key_dim)
        value_dim = _validation.positive_int("value_dim", value_dim, allow_none=True)
        self._value_dim = value_dim or key_dim
        kv_heads = _validation.positive_int(
            "num_key_value_heads", num_key_value_heads, allow_none=True
        )
        if kv_heads is not None and num_heads % kv_heads:
            raise ValueError(
                f"Expected `num_key_value_heads` to divide num_heads={num_heads}, "
                f"received: num_key_value_heads={kv_heads}"
            )
        self._num_key_value_heads = kv_heads
        self._dropout = _validation.rate("dropout", dropout)
        self._use_bias = use_bias
        self._use_gate = use_gate
        if isinstance(output_shape, int):
            output_shape = (output_shape,)
        if output_shape is not None:
            if not isinstance(output_shape, (list, tuple)) or not all(
                isinstance(dim, int) and not isinstance(dim, bool) and dim > 0
                for dim in output_shape
            ):
                raise ValueError(
                    "Expected `output_shape` to be a positive int or a tuple of positive "
                    f"ints, received: output_shape={output_shape!r}"
                )
            output_shape = tuple(output_shape) or None
        self._output_shape = output_shape
        if isinstance(attention_axes, int):
            attention_axes = (attention_axes,)
        if attention_axes is not None:
            if not isinstance(attention_axes, (list, tuple)) or not all(
                isinstance(axis, int) for axis in attention_axes
            ):
                raise ValueError(
                    "Expected `attention_axes` to be an int or a tuple of ints, "
                    f"received: attention_axes={attention_axes!r}"
                )
            attention_axes = tuple(attention_axes) or None
        self._attention_axes = attention_axes
        self._sliding_window = _validation.positive_int(
            "sliding_window", sliding_window, allow_none=True
        )
        if flash_attention:
            raise ValueError(
                "Expected `flash_attention` to be None or False: kerasattn has no "
                'flash kernel; for memory-efficient attention use implementation="chunked". '
                f"Received: flash_attention={flash_attention!r}"
            )
        self._implementation = _validation.one_of(
            "implementation", implementation, IMPLEMENTATIONS
        )
        if implementation == "chunked" and self._dropout > 0:
            raise ValueError(
                'Expected dropout=0 with implementation="chunked" (the chunked path never '
                f"materialises the attention weights), received: dropout={dropout!r}"
            )
        self._block_size = _validation.positive_int("block_size", block_size)
        # Input widths, known once built; calls are checked against them.
        self._query_width = self._value_width = self._key_width = None
        self._kernel_initializer = keras.initializers.get(kernel_initializer)
        self._bias_initializer = keras.initializers.get(bias_initializer)
        self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._bias_regularizer = keras.regularizers.get(bias_regularizer)
        self._activity_regularizer = keras.regularizers.get(activity_regularizer)
        self._kernel_constraint = keras.constraints.get(kernel_constraint)
        self._bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = seed
        self._inverse_sqrt_key_dim = 1.0 / math.sqrt(float(self._key_dim))
        self._dropout_layer = keras.layers.Dropout(
            rate=self._dropout, seed=seed, dtype=self.dtype_policy
        )

    # Same read-only properties as Keras (no `output_shape`, which would clash
    # with `Functional.summary()`).
    @property
    def num_heads(self) -> int:
        return self._num_heads

    @property
    def key_dim(self) -> int:
        return self._key_dim

    @property
    def value_dim(self) -> int:
        return self._value_dim

    @property
    def dropout(self) -> float:
        return self._dropout

    @property
    def use_bias(self) -> bool:
        return self._use_bias

    @property
    def attention_axes(self):
        return self._attention_axes

    @property
    def num_key_value_heads(self) -> int:
        return self._num_key_value_heads or self._num_heads

    @property
    def implementation(self) -> str:
        return self._implementation

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def query_dense(self):
        return self._query_dense

    @property
    def key_dense(self):
        return self._key_dense

    @property
    def value_dense(self):
        return self._value_dense

    @property
    def output_dense(self):
        return self._output_dense

    # -- shapes --------------------------------------------------------------

    def _axes(self, rank: int):
        """(attention axes, other non-batch axes) of an input of `rank`."""
        if self._attention_axes is None:
            return tuple(range(1, rank - 1)), ()
        # Negative axes count from the end of the input, as in Keras.
        axes = tuple(axis + rank if axis < 0 else axis for axis in self._attention_axes)
        if len(set(axes)) != len(axes) or not all(1 <= axis <= rank - 2 for axis in axes):
            raise ValueError(
                f"Expected `attention_axes` distinct and within [1, {rank - 2}] (neither "
                f"the batch nor the feature axis) for inputs of rank {rank}, received: "
                f"attention_axes={self._attention_axes}"
            )
        others = tuple(axis for axis in range(1, rank - 1) if axis not in axes)
        return axes, others

    def _check_shapes(self, query_shape, value_shape, key_shape) -> None:
        """Ranks, key/value agreement and attention axes (static dims only)."""
        query_shape, value_shape = tuple(query_shape), tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        rank = len(query_shape)
        if rank < 3:
            raise ValueError(
                "Expected `query` of rank >= 3 (batch, <axes>, features), "
                f"received: query.shape={query_shape}"
            )
        _validation.rank("value", value_shape, rank)
        _validation.rank("key", key_shape, rank)

        def agree(a, b):
            return all(x is None or y is None or x == y for x, y in zip(a, b))

        if not agree(key_shape[1:-1], value_shape[1:-1]):
            raise ValueError(
                "Expected `key` and `value` with equal dimensions but the last, "
                f"received: key.shape={key_shape}, value.shape={value_shape}"
            )
        # The batch axis and the axes not attended over pair queries with keys.
        shared = (0,) + self._axes(rank)[1]
        if not agree([query_shape[a] for a in shared], [value_shape[a] for a in shared]):
            raise ValueError(
                f"Expected `query` and `value` with equal dimensions on the axes {shared} "
                "(batch and axes not attended over), received: "
                f"query.shape={query_shape}, value.shape={value_shape}"
            )

    def _check_scores_available(self, return_attention_scores) -> None:
        if return_attention_scores and self._implementation == "chunked":
            raise ValueError(
                'Expected return_attention_scores=False with implementation="chunked" '
                "(the chunked path never materialises the attention weights), "
                "received: return_attention_scores=True"
            )

    def _check_call(self, query, value, key, query_mask, value_mask, key_mask, attention_mask,
                    return_attention_scores) -> None:
        """The checks `call` and `compute_output_spec` share: the inputs' shapes
        and widths, the masks' shapes, and `return_attention_scores`."""
        self._check_shapes(query.shape, value.shape, None if key is None else key.shape)
        for name, x, width in (
            ("query", query, self._query_width),
            ("value", value, self._value_width),
            ("key", value if key is None else key, self._key_width),
        ):
            _validation.last_dim(name, x.shape, width)
        self._check_scores_available(return_attention_scores)
        query_dims = tuple(query.shape[:-1])
        key_dims = tuple(value.shape[:-1])
        check_broadcastable(query_mask, query_dims, "query_mask")
        check_broadcastable(value_mask, key_dims, "value_mask")
        check_broadcastable(key_mask, key_dims, "key_mask")
        target = self._mask_shape(tuple(query.shape), tuple(value.shape))
        if attention_mask is not None and len(attention_mask.shape) == len(target) + 1:
            # A per-head mask, laid out like the attention scores.
            target = self._scores_shape(tuple(query.shape), tuple(value.shape))
        check_broadcastable(attention_mask, target, "attention_mask")

    def _mask_shape(self, query_shape, value_shape) -> tuple:
        """`(B, <other axes>, <query attention axes>, <key attention axes>)`."""
        axes, others = self._axes(len(query_shape))
        return (
            (query_shape[0],)
            + tuple(query_shape[axis] for axis in others)
            + tuple(query_shape[axis] for axis in axes)
            + tuple(value_shape[axis] for axis in axes)
        )

    def _scores_shape(self, query_shape, value_shape) -> tuple:
        axes, others = self._axes(len(query_shape))
        return (
            (query_shape[0],)
            + tuple(query_shape[axis] for axis in others)
            + (self._num_heads,)
            + tuple(query_shape[axis] for axis in axes)
            + tuple(value_shape[axis] for axis in axes)
        )

    # -- building ------------------------------------------------------------

    def _sublayer_kwargs(self) -> dict:
        # Fresh initializer instances, so that the projections do not share
        # (stateless, hence identical) initial values.
        return dict(
            kernel_initializer=clone_initializer(self._kernel_initializer),
            bias_initializer=clone_initializer(self._bias_initializer),
            kernel_regularizer=self._kernel_regularizer,
            bias_regularizer=self._bias_regularizer,
            activity_regularizer=self._activity_regularizer,
            kernel_constraint=self._kernel_constraint,
            bias_constraint=self._bias_constraint,
            dtype=self.dtype_policy,
        )

    def _projection(self, rank: int, heads: int, width: int, name: str, activation=None):
        equation, bias_axes = _projection_equation(rank - 1, 1, 2)
        layer = keras.layers.EinsumDense(
            equation,
            output_shape=[None] * (rank - 2) + [heads, width],
            bias_axes=bias_axes if self._use_bias else None,
            activation=activation,
            name=name,
            **self._sublayer_kwargs(),
        )
        # The projections keep the sequence axes, so passing the inputs' Keras
        # masks through them is harmless and avoids "destroys the mask" warnings.
        layer.supports_masking = True
        return layer

    def build(self, query_shape, value_shape, key_shape=None):
        if value_shape is None:
            raise ValueError(
                "Expected a `value` to build the layer from (a layer called with a "
                "`cache` and no `value` must have been built before), received: value=None"
            )
        self._check_shapes(query_shape, value_shape, key_shape)
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if shape[-1] is None:
                raise ValueError(
                    f"Expected `{name}` with a static last dimension (it sizes the "
                    f"projection kernels), received: {name}.shape={tuple(shape)}"
                )
        rank = len(query_shape)
        kv_heads = self.num_key_value_heads
        # Built in Keras's order, so the weights line up with Keras's.
        self._query_dense = self._projection(rank, self._num_heads, self._key_dim, "query")
        self._query_dense.build(query_shape)
        self._key_dense = self._projection(rank, kv_heads, self._key_dim, "key")
        self._key_dense.build(key_shape)
        if self._use_gate:
            self._gate_dense = self._projection(
                rank, self._num_heads, self._value_dim, "gate", activation="sigmoid"
            )
            self._gate_dense.build(query_shape)
        self._value_dense = self._projection(rank, kv_heads, self._value_dim, "value")
        self._value_dense.build(value_shape)
        output_shape = self._output_shape or (query_shape[-1],)
        equation, bias_axes = _projection_equation(rank - 1, 2, len(output_shape))
        self._output_dense = keras.layers.EinsumDense(
            equation,
            output_shape=[None] * (rank - 2) + list(output_shape),
            bias_axes=bias_axes if self._use_bias else None,
            name="attention_output",
            **self._sublayer_kwargs(),
        )
        self._output_dense.build(
            tuple(query_shape[:-1]) + (self._num_heads, self._value_dim)
        )
        self._query_width = query_shape[-1]
        self._value_width = value_shape[-1]
        self._key_width = key_shape[-1]

    # -- calling -------------------------------------------------------------

    def _plain_projections(self) -> bool:
        """Whether the four projections compute just their products: plain
        `EinsumDense` layers (not quantized, not replaced by a subclass) and
        no activity regularizer, which a call of each would apply to its own
        output."""
        projections = (self._query_dense, self._key_dense, self._value_dense, self._output_dense)
        return self._activity_regularizer is None and all(
            type(layer) is keras.layers.EinsumDense and layer.quantization_mode is None
            for layer in projections
        )

    def _weights_dropout(self, training):
        """The attention weights' dropout, or `None` where it does nothing."""
        if self._dropout > 0 and training:
            return functools.partial(self._dropout_layer, training=training)
        return None

    def _attends_heads_first(self, query, value, return_attention_scores, training) -> bool:
        """Whether `call` may project straight into `dense_attention_heads_first`'s
        layout: sequences (rank 3) on the dense path, with plain projections
        and no gate."""
        if len(query.shape) != 3 or self._use_gate or not self._plain_projections():
            return False
        return takes_dense_path(
            self._implementation,
            query.shape[0],
            self._num_heads,
            query.shape[1],
            value.shape[1],
            return_attention_scores or self._weights_dropout(training) is not None,
        )

    def _attend_heads_first(self, query, value, key, mask, training, return_attention_scores):
        """`call` for `_attends_heads_first`: the same values as the
        sub-layers and `_compute_attention` give, with the heads before the
        sequence axis and the keys transposed, so that both attention
        products are plain batched matrix products (in Keras's `(B, T, N, H)`
        layout each runs as transposes around a matmul)."""
        graph = tensorflow_graph()
        scale = self._inverse_sqrt_key_dim
        if export_graph_enabled():
            # One product per projection with its bias (one LiteRT
            # FULLY_CONNECTED, the bias fused), the keys' scale folded into
            # their kernel, then the split into heads.
            def split_heads(layer, x, permutation, factor=1.0):
                kernel = layer.kernel * factor
                flat = ops.einsum("abc,cd->abd", x, ops.reshape(kernel, (kernel.shape[0], -1)))
                if self._use_bias:
                    flat = flat + ops.reshape(layer.bias * factor, (-1,))
                shape = ops.shape(x)
                split = ops.reshape(flat, (shape[0], shape[1]) + tuple(kernel.shape[1:]))
                return ops.transpose(split, permutation)

            query_heads = split_heads(self._query_dense, query, (0, 2, 1, 3))
            key_heads = split_heads(self._key_dense, key, (0, 2, 3, 1), scale)
            value_heads = split_heads(self._value_dense, value, (0, 2, 1, 3))
            scale = 1.0
        elif graph:
            # The sub-layers' own products (a matmul, whose gradient
            # TensorFlow computes faster than an einsum's), then transposes.
            query_heads = ops.transpose(self._query_dense(query), (0, 2, 1, 3))
            key_heads = ops.transpose(self._key_dense(key), (0, 2, 3, 1))
            value_heads = ops.transpose(self._value_dense(value), (0, 2, 1, 3))
        else:
            # Op by op, each projection is one einsum straight into the layout:
            # fewer ops, each of which costs a dispatch.
            def heads(layer, x, equation, bias_axis):
                projected = ops.einsum(equation, x, layer.kernel)
                if not self._use_bias:
                    return projected
                return projected + ops.expand_dims(layer.bias, bias_axis)

            query_heads = heads(self._query_dense, query, "abc,cde->adbe", 1)  # (B, N, Tq, H)
            key_heads = heads(self._key_dense, key, "abc,cde->adeb", -1)  # (B, K, H, Tk)
            value_heads = heads(self._value_dense, value, "abc,cde->adbe", 1)  # (B, K, Tk, Hv)
        result = dense_attention_heads_first(
            query_heads,
            key_heads,
            value_heads,
            mask,
            scale=scale,
            dropout=self._weights_dropout(training),
            return_weights=return_attention_scores,
        )
        attended, scores = result if return_attention_scores else (result, None)
        if graph:
            output = self._output_dense(ops.transpose(attended, (0, 2, 1, 3)))
        else:
            out = string.ascii_lowercase[4 : 4 + len(self._output_dense.kernel.shape) - 2]
            output = ops.einsum(f"abcd,bd{out}->ac{out}", attended, self._output_dense.kernel)
            if self._use_bias:
                output = output + self._output_dense.bias
        if return_attention_scores:
            return output, scores
        return output

    def _compute_attention_mask(
        self,
        query,
        value,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask: bool = False,
    ):
        """Merges the mask arguments into one boolean mask, or `None`.

        The padding masks, the sliding window, the causal mask (when
        `use_causal_mask`) and `attention_mask` are ANDed into a mask
        broadcastable to `(B, <other axes>, <query attention axes>, <key
        attention axes>)` (`(B, Tq, Tk)` for rank-3 inputs), or, when
        `attention_mask` is a per-head mask of one more axis, to the scores'
        `(B, <other axes>, N, <query attention axes>, <key attention axes>)`.
        `query` and `value` are the layer's (unprojected) inputs.
        """
        rank = len(query.shape)
        axes, others = self._axes(rank)
        num_axes = len(axes)
        permutation = (0,) + others + axes

        def laid_out(mask, x, before_axes: int):
            # (B, <input axes>) -> (B, <others>, <attention axes>) with
            # `num_axes` unit axes inserted `before_axes` axes from the end.
            if mask is None:
                return None
            mask = as_bool_mask(mask)
            if rank > 3:
                mask = ops.broadcast_to(mask, ops.shape(x)[:-1])
                mask = ops.transpose(mask, permutation)
            for _ in range(num_axes):
                mask = ops.expand_dims(mask, -1 - before_axes)
            return mask

        padding = merge_masks(
            laid_out(query_mask, query, 0),
            laid_out(value_mask, value, num_axes),
            laid_out(key_mask, value, num_axes),
        )
        structure = None
        if self._sliding_window is not None or use_causal_mask:
            if num_axes == 1:
                # Masks of the tensors themselves: static-shaped in LiteRT.
                if self._sliding_window is not None:
                    structure = sliding_window_mask_between(
                        query, value, self._sliding_window, axes[0]
                    )
                if use_causal_mask:
                    structure = merge_masks(
                        structure, causal_mask_between(query, value, axes[0])
                    )
            else:
                # Several attention axes: masks over their flattened lengths.
                query_dims = tuple(ops.shape(query)[axis] for axis in axes)
                key_dims = tuple(ops.shape(value)[axis] for axis in axes)
                query_length, key_length = _product(query_dims), _product(key_dims)
                if self._sliding_window is not None:
                    structure = sliding_window_mask(
                        query_length, key_length, self._sliding_window
                    )
                if use_causal_mask:
                    structure = merge_masks(structure, causal_mask(query_length, key_length))
                structure = ops.reshape(structure, query_dims + key_dims)
        merged = merge_masks(padding, structure)
        if attention_mask is not None:
            attention_mask = as_bool_mask(attention_mask)
            if merged is not None and len(attention_mask.shape) == 2 * num_axes + len(others) + 2:
                # A per-head mask: the other masks are the same for every head.
                merged = ops.expand_dims(merged, -1 - 2 * num_axes)
                while len(merged.shape) < len(attention_mask.shape):
                    merged = ops.expand_dims(merged, 0)
            merged = merge_masks(merged, attention_mask)
        return merged

    def _masked_softmax(self, attention_scores, attention_mask=None):
        """Keras's helper for `_compute_attention` overrides: a float32 masked
        softmax over the last axis, in the scores' dtype; a row with every key
        masked gets zeros. `attention_mask` is expanded at the head axis, as
        in Keras."""
        if attention_mask is not None:
            num_axes = len(self._axes(len(attention_scores.shape) - 1)[0])
            for _ in range(len(attention_scores.shape) - len(attention_mask.shape)):
                attention_mask = ops.expand_dims(attention_mask, -2 * num_axes - 1)
        weights = masked_softmax(attention_scores, attention_mask)
        return ops.cast(weights, attention_scores.dtype)

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores: bool = False,
        use_causal_mask: bool = False,
    ):
        """Attention of the projected heads, the override point Keras has.

        `call` computes every projection and mask and then calls this method,
        so a subclass that overrides it (keras-hub's cached attention, for
        example) changes what the layer computes.

        Args:
            query: projected queries `(B, <query axes>, N, key_dim)`.
            key: projected keys `(B, <key axes>, K, key_dim)`.
            value: projected values `(B, <key axes>, K, value_dim)`.
            attention_mask: boolean mask from `_compute_attention_mask`, or
                `None`.
            training: whether dropout is active.
            return_attention_scores: whether to compute the weights.
            use_causal_mask: also mask keys after the query position (in the
                flattened order of the attention axes). `call` passes it only
                to this method, not to overrides, whose masks already hold
                the causal mask.

        Returns:
            `(attention_output, attention_scores)`: the output
            `(B, <query axes>, N, value_dim)` and the weights laid out like
            the layer's returned scores, or `None` when not requested.
        """
        rank = len(query.shape) - 1  # the rank of the layer's inputs
        flat = None
        if rank > 3:
            axes, others = self._axes(rank)
            flat = _FlattenedAxes(
                ops.shape(query)[:-2], ops.shape(key)[:-2], axes, others
            )
            per_head = (
                attention_mask is not None
                and len(attention_mask.shape) == 2 * len(axes) + len(others) + 2
            )
            query = flat.heads(query, flat.query_length)
            key = flat.heads(key, flat.key_length)
            value = flat.heads(value, flat.key_length)
            attention_mask = flat.attention(attention_mask, self._num_heads if per_head else None)
        elif attention_mask is not None:
            attention_mask = as_bool_mask(attention_mask)
            while len(attention_mask.shape) < 2:
                attention_mask = ops.expand_dims(attention_mask, 0)

        result = dot_product_attention(
            query,
            key,
            value,
            attention_mask,
            causal=use_causal_mask,
            scale=self._inverse_sqrt_key_dim,
            dropout=self._weights_dropout(training),
            return_weights=return_attention_scores,
            implementation=self._implementation,
            training=bool(training),
            block_size=self._block_size,
        )
        output, scores = result if return_attention_scores else (result, None)
        if flat is not None:
            output = flat.unflatten_output(output)
            if scores is not None:
                scores = flat.unflatten_scores(scores)
        return output, scores

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
        cache=None,
        cache_update_index=None,
    ):
        if cache is not None or cache_update_index is not None:
            return self._call_with_cache(
                query, value, key, query_mask, value_mask, key_mask, attention_mask,
                return_attention_scores, training, use_causal_mask, cache, cache_update_index,
            )
        self._check_call(query, value, key, query_mask, value_mask, key_mask, attention_mask,
                         return_attention_scores)
        if key is None:
            key = value
        # Our own `_compute_attention` takes the causal mask as a flag (the
        # chunked path never builds it); an override gets the causal mask
        # inside the mask, and no flag it may not know about. So does the
        # heads-first shortcut: the mask of the layer's inputs counts the
        # positions once in self-attention.
        own_attention = type(self)._compute_attention is MultiHeadAttention._compute_attention
        heads_first = own_attention and self._attends_heads_first(
            query, value, return_attention_scores, training
        )
        causal_flag = use_causal_mask and own_attention and not heads_first
        mask = self._compute_attention_mask(
            query,
            value,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask and not causal_flag,
        )
        if heads_first:
            return self._attend_heads_first(
                query, value, key, mask, training, return_attention_scores
            )
        gate = self._gate_dense(query) if self._use_gate else None
        query_heads = self._query_dense(query)  # (B, Tq, N, H)
        key_heads = self._key_dense(key)  # (B, Tk, K, H)
        value_heads = self._value_dense(value)  # (B, Tk, K, Hv)
        extra = {"use_causal_mask": True} if causal_flag else {}
        attended, scores = self._compute_attention(
            query_heads,
            key_heads,
            value_heads,
            mask,
            training,
            return_attention_scores,
            **extra,
        )
        if gate is not None:
            attended = attended * gate
        output = self._output_dense(attended)
        if return_attention_scores:
            return output, scores
        return output

    # -- incremental decoding ------------------------------------------------

    def _cache_shapes(self, batch_size, length) -> tuple:
        """The shapes of a cache's keys `(B, K, key_dim, S)` and values `(B, K, S, value_dim)`."""
        heads = self.num_key_value_heads
        return ((batch_size, heads, self._key_dim, length),
                (batch_size, heads, length, self._value_dim))

    def initial_cache(self, batch_size, max_length: int, dtype=None) -> tuple:
        """An empty (all-zero) self-attention cache for incremental decoding.

        Args:
            batch_size: batch size `B` (int or int scalar tensor).
            max_length: number of positions `S` the cache holds, the longest
                sequence to decode (int, or int scalar tensor for a length
                chosen per batch in a graph).
            dtype: the cache's dtype; defaults to the layer's compute dtype.

        Returns:
            `(keys, values)`: zeros of shapes `(B, K, key_dim, S)` and
            `(B, K, S, value_dim)`, for `call`'s `cache` with a
            `cache_update_index`.
        """
        if not ops.is_tensor(max_length):
            max_length = _validation.positive_int("max_length", max_length)
        dtype = dtype or self.compute_dtype
        return tuple(ops.zeros(shape, dtype=dtype)
                     for shape in self._cache_shapes(batch_size, max_length))

    def _cache_entries(self, key, value, dtype) -> tuple:
        """`key` and `value` `(B, T, dim)` projected into the cache's layout:
        keys `(B, K, key_dim, T)` scaled, values `(B, K, T, value_dim)`."""
        keys = ops.transpose(self._key_dense(key), (0, 2, 3, 1)) * ops.cast(
            self._inverse_sqrt_key_dim, self.compute_dtype)
        values = ops.transpose(self._value_dense(value), (0, 2, 1, 3))
        return ops.cast(keys, dtype), ops.cast(values, dtype)

    def compute_cache(self, value, key=None) -> tuple:
        """The projected keys and values of `value` (and `key`), computed once.

        For cross-attention, where every decoding step attends to the same
        encoder outputs: pass the result as `call`'s `cache` with
        `cache_update_index=None`.

        Args:
            value: `(B, S, dim_v)`.
            key: optional `(B, S, dim_k)`; defaults to `value`.

        Returns:
            `(keys, values)` of shapes `(B, K, key_dim, S)` (scaled by
            `key_dim ** -0.5`) and `(B, K, S, value_dim)`, in the layer's
            compute dtype.
        """
        if not self.built:
            raise ValueError(
                "Expected a built layer (its projections make the cache): call it once "
                "or build it first, received an unbuilt layer"
            )
        key = value if key is None else key
        for name, x, width in (("value", value, self._value_width), ("key", key, self._key_width)):
            _validation.rank(name, x.shape, 3)
            _validation.last_dim(name, x.shape, width)
        _validation.same_length("key", key.shape, "value", value.shape)
        return self._cache_entries(key, value, self.compute_dtype)

    def _check_cache(self, cache, batch) -> None:
        """A `(keys, values)` pair of the shapes `_cache_shapes` gives, one length `S`."""
        expected = self._cache_shapes(batch, None)
        shapes = None
        if isinstance(cache, (tuple, list)) and len(cache) == 2:
            shapes = tuple(tuple(getattr(part, "shape", ())) for part in cache)
        fits = shapes is not None and all(
            len(got) == 4 and all(w is None or g is None or w == g for w, g in zip(want, got))
            for want, got in zip(expected, shapes)
        )
        if fits and None not in (shapes[0][3], shapes[1][2]):
            fits = shapes[0][3] == shapes[1][2]
        if not fits:
            received = shapes
            if shapes is None:
                received = (f"one tensor of shape {tuple(cache.shape)}" if hasattr(cache, "shape")
                            else type(cache).__name__)
            raise ValueError(
                f"Expected a `cache` (keys, values) of shapes {expected[0]} and {expected[1]} "
                "(batch, key/value heads, key_dim, length) and (batch, key/value heads, "
                f"length, value_dim), one length, received: {received}"
            )

    def _check_cached_call(
        self, query, value, key, query_mask, value_mask, key_mask, attention_mask,
        return_attention_scores, cache, cache_update_index,
    ) -> None:
        """`_check_call` for calls with a cache: rank-3 inputs, the cache's
        shapes, and masks over the cache's positions."""
        if cache is None:
            raise ValueError(
                "Expected a `cache` with a `cache_update_index`, received: cache=None, "
                f"cache_update_index={cache_update_index!r}"
            )
        _validation.rank("query", query.shape, 3)
        _validation.last_dim("query", query.shape, self._query_width)
        self._check_cache(cache, query.shape[0])
        if cache_update_index is not None and value is None:
            raise ValueError(
                "Expected a `value` to write into the cache at `cache_update_index`, "
                "received: value=None"
            )
        for name, x, width in (("value", value, self._value_width), ("key", key, self._key_width)):
            if x is not None:
                _validation.rank(name, x.shape, 3)
                _validation.last_dim(name, x.shape, width)
        self._check_scores_available(return_attention_scores)
        batch, query_length = query.shape[0], query.shape[1]
        cache_length = cache[1].shape[2]
        check_broadcastable(query_mask, (batch, query_length), "query_mask")
        check_broadcastable(value_mask, (batch, cache_length), "value_mask")
        check_broadcastable(key_mask, (batch, cache_length), "key_mask")
        target = (batch, query_length, cache_length)
        if attention_mask is not None and len(attention_mask.shape) == 4:
            target = (batch, self._num_heads, query_length, cache_length)
        check_broadcastable(attention_mask, target, "attention_mask")

    def _cached_attention_mask(
        self, query, cache_length, cache_update_index, query_mask, value_mask, key_mask,
        attention_mask, use_causal_mask,
    ):
        """`_compute_attention_mask` over the cache's positions, the queries
        at positions `cache_update_index + i`."""
        padding = padding_attention_mask(query_mask, merge_masks(value_mask, key_mask))
        structure = None
        if use_causal_mask or self._sliding_window is not None:
            start = 0 if cache_update_index is None else cache_update_index
            rows = ops.arange(ops.shape(query)[1], dtype="int32") + ops.cast(start, "int32")
            rows = ops.expand_dims(rows, -1)
            cols = ops.expand_dims(ops.arange(cache_length, dtype="int32"), 0)
            if use_causal_mask:
                # Also hides the positions not yet written.
                structure = ops.greater_equal(rows, cols)
            if self._sliding_window is not None:
                window = ops.less(ops.abs(rows - cols), self._sliding_window)
                structure = merge_masks(structure, window)
        merged = merge_masks(padding, structure)
        if attention_mask is not None:
            attention_mask = as_bool_mask(attention_mask)
            if merged is not None and len(attention_mask.shape) == 4:
                merged = ops.expand_dims(merged, -3)
            merged = merge_masks(merged, attention_mask)
        return merged

    def _call_with_cache(
        self, query, value, key, query_mask, value_mask, key_mask, attention_mask,
        return_attention_scores, training, use_causal_mask, cache, cache_update_index,
    ):
        self._check_cached_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            return_attention_scores, cache, cache_update_index,
        )
        keys, values = cache
        if cache_update_index is not None:
            # In-place updates of the new positions, each in its own tensor:
            # nothing of the cache is copied, split or transposed per step.
            new_keys, new_values = self._cache_entries(
                value if key is None else key, value, keys.dtype)
            index = ops.cast(cache_update_index, "int32")
            keys = ops.slice_update(keys, (0, 0, 0, index), new_keys)
            values = ops.slice_update(values, (0, 0, index, 0), new_values)
        mask = self._cached_attention_mask(
            query, ops.shape(values)[2], cache_update_index, query_mask, value_mask,
            key_mask, attention_mask, use_causal_mask,
        )
        query_heads = self._query_dense(query)  # (B, Tq, N, H)
        if type(self)._compute_attention is MultiHeadAttention._compute_attention:
            result = dense_attention_heads_first(
                ops.transpose(query_heads, (0, 2, 1, 3)),
                ops.cast(keys, query_heads.dtype),
                ops.cast(values, query_heads.dtype),
                mask,
                scale=1.0,  # the cache's keys are scaled
                dropout=self._weights_dropout(training),
                return_weights=return_attention_scores,
            )
            attended, scores = result if return_attention_scores else (result, None)
            attended = ops.transpose(attended, (0, 2, 1, 3))  # (B, Tq, N, Hv)
        else:
            # An override gets Keras's layout and unscaled keys; the causal
            # mask sits in `mask` (offset by the index), never in the flag,
            # which would count the key positions from the queries'.
            key_heads = ops.transpose(keys, (0, 3, 1, 2)) / ops.cast(
                self._inverse_sqrt_key_dim, keys.dtype)
            attended, scores = self._compute_attention(
                query_heads,
                ops.cast(key_heads, query_heads.dtype),
                ops.cast(ops.transpose(values, (0, 2, 1, 3)), query_heads.dtype),
                mask, training, return_attention_scores,
            )
        if self._use_gate:
            attended = attended * self._gate_dense(query)
        output = self._output_dense(attended)
        if return_attention_scores:
            return output, scores, (keys, values)
        return output, (keys, values)

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        self._check_shapes(query_shape, value_shape, key_shape)
        query_shape = tuple(query_shape)
        if self._output_shape:
            return query_shape[:-1] + self._output_shape
        return query_shape

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
        cache=None,
        cache_update_index=None,
    ):
        if cache is not None or cache_update_index is not None:
            self._check_cached_call(
                query, value, key, query_mask, value_mask, key_mask, attention_mask,
                return_attention_scores, cache, cache_update_index,
            )
            shape = tuple(query.shape[:-1]) + (self._output_shape or (query.shape[-1],))
            outputs = (keras.KerasTensor(shape, dtype=self.compute_dtype),)
            if return_attention_scores:
                scores_shape = (query.shape[0], self._num_heads, query.shape[1],
                                cache[1].shape[2])
                outputs += (keras.KerasTensor(scores_shape, dtype=self.compute_dtype),)
            return outputs + (tuple(keras.KerasTensor(part.shape, dtype=part.dtype)
                                    for part in cache),)
        self._check_call(query, value, key, query_mask, value_mask, key_mask, attention_mask,
                         return_attention_scores)
        output_shape = self.compute_output_shape(
            query.shape, value.shape, None if key is None else key.shape
        )
        output = keras.KerasTensor(output_shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        scores_shape = self._scores_shape(tuple(query.shape), tuple(value.shape))
        return output, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)

    def get_config(self) -> dict:
        config = {
            "num_heads": self._num_heads,
            "key_dim": self._key_dim,
            "value_dim": self._value_dim,
            "dropout": self._dropout,
            "use_bias": self._use_bias,
            "use_gate": self._use_gate,
            "output_shape": self._output_shape,
            "attention_axes": self._attention_axes,
            "sliding_window": self._sliding_window,
            "kernel_initializer": keras.initializers.serialize(self._kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self._bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self._kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self._bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self._activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self._kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self._bias_constraint),
            "seed": self.seed,
            "num_key_value_heads": self._num_key_value_heads,
            "implementation": self._implementation,
            "block_size": self._block_size,
        }
        return {**super().get_config(), **config}


class _FlattenedAxes:
    """Maps inputs with several attention axes to and from one sequence axis.

    The axes not attended over join the batch; the attention axes, in the
    order given, become the sequence axis. Shapes are read at call time, so
    unknown (dynamic) dimensions work.
    """

    def __init__(self, query_dims, key_dims, axes: Sequence[int], others: Sequence[int]):
        # `query_dims`, `key_dims`: the inputs' shapes without the last axis.
        # Permutation of the input axes but the last: batch, others, attention.
        self.perm = (0,) + tuple(others) + tuple(axes)
        self.num_others = len(others)
        self.batch_dims = tuple(query_dims[axis] for axis in (0,) + tuple(others))
        self.query_dims = tuple(query_dims[axis] for axis in axes)
        self.key_dims = tuple(key_dims[axis] for axis in axes)
        self.query_length = _product(self.query_dims)
        self.key_length = _product(self.key_dims)

    def heads(self, x, length):
        """`(B, <axes>, heads, width)` -> `(B', T, heads, width)`."""
        rank = len(x.shape)
        x = ops.transpose(x, self.perm + (rank - 2, rank - 1))
        return ops.reshape(x, (-1, length) + tuple(x.shape[-2:]))

    def attention(self, mask, num_heads=None):
        """`(B, <others>, <query axes>, <key axes>)` mask -> `(B', Tq, Tk)`, or
        with `num_heads` a per-head `(B, <others>, N, ...)` one -> `(B', N, Tq, Tk)`."""
        if mask is None:
            return None
        heads = () if num_heads is None else (num_heads,)
        dims = self.batch_dims + heads + self.query_dims + self.key_dims
        mask = ops.broadcast_to(as_bool_mask(mask), dims)
        return ops.reshape(mask, (-1,) + heads + (self.query_length, self.key_length))

    def unflatten_output(self, x):
        """`(B', Tq, N, Hv)` -> `(B, <query axes>, N, Hv)` in input order."""
        x = ops.reshape(x, self.batch_dims + self.query_dims + tuple(x.shape[-2:]))
        inverse = [0] * len(self.perm)
        for position, axis in enumerate(self.perm):
            inverse[axis] = position
        rank = len(inverse)
        return ops.transpose(x, tuple(inverse) + (rank, rank + 1))

    def unflatten_scores(self, scores):
        """`(B', N, Tq, Tk)` -> `(B, <others>, N, <query axes>, <key axes>)`."""
        num_heads = scores.shape[1]
        return ops.reshape(
            scores, self.batch_dims + (num_heads,) + self.query_dims + self.key_dims
        )
