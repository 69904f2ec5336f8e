"""Multi-head attention, a drop-in for `keras.layers.MultiHeadAttention`."""

from __future__ import annotations

import functools
import math
import string
from typing import Optional, Sequence

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.ops.attention import DEFAULT_BLOCK_SIZE
from kerasattn.ops.attention import IMPLEMENTATIONS
from kerasattn.ops.attention import dot_product_attention
from kerasattn.ops.masking import as_bool_mask
from kerasattn.ops.masking import check_broadcastable
from kerasattn.ops.masking import merge_attention_masks
from kerasattn.ops.masking import merge_masks
from kerasattn.ops.masking import sliding_window_mask


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
            with an online softmax: at inference memory grows with
            `Tq * block_size`, but no attention scores and no dropout) or
            "auto" (chunked at inference for static key lengths from 2048
            on when neither is needed; dense otherwise).
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
            attention axes>, <key attention axes>)`), True = may attend.
        return_attention_scores: also return the attention weights.
        training: whether dropout is active.
        use_causal_mask: query `i` sees only keys `j <= i`.

    Returns:
        The output `(B, Tq, E)`, `E` the query's last dimension or
        `output_shape`, carrying the query's Keras mask; with
        `return_attention_scores=True` also the weights `(B, N, Tq, Tk)`
        (with attention axes `(B, <other axes>, N, <query attention axes>,
        <key attention axes>)`) after masking and before dropout.

    Example:

    >>> layer = MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=2)
    >>> query = keras.random.normal((2, 5, 16))
    >>> value = keras.random.normal((2, 7, 16))
    >>> output, scores = layer(query, value, return_attention_scores=True)
    >>> tuple(output.shape), tuple(scores.shape)
    ((2, 5, 16), (2, 4, 5, 7))
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: Optional[int] = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_shape=None,
        attention_axes=None,
        sliding_window: Optional[int] = None,
        flash_attention: Optional[bool] = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate: bool = False,
        seed: Optional[int] = None,
        num_key_value_heads: Optional[int] = None,
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

    def _check_call(self, query, value, key, masks, return_attention_scores) -> None:
        self._check_shapes(query.shape, value.shape, None if key is None else key.shape)
        for name, x, width in (
            ("query", query, self._query_width),
            ("value", value, self._value_width),
            ("key", value if key is None else key, self._key_width),
        ):
            _validation.last_dim(name, x.shape, width)
        if return_attention_scores and self._implementation == "chunked":
            raise ValueError(
                'Expected return_attention_scores=False with implementation="chunked" '
                "(the chunked path never materialises the attention weights), "
                "received: return_attention_scores=True"
            )
        query_dims = tuple(query.shape[:-1])
        key_dims = tuple(value.shape[:-1])
        check_broadcastable(masks["query_mask"], query_dims, "query_mask")
        check_broadcastable(masks["value_mask"], key_dims, "value_mask")
        check_broadcastable(masks["key_mask"], key_dims, "key_mask")
        axes, others = self._axes(len(query.shape))
        target = (
            (query.shape[0],)
            + tuple(query.shape[axis] for axis in others)
            + tuple(query.shape[axis] for axis in axes)
            + tuple(value.shape[axis] for axis in axes)
        )
        check_broadcastable(masks["attention_mask"], target, "attention_mask")

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
            kernel_initializer=self._kernel_initializer.__class__.from_config(
                self._kernel_initializer.get_config()
            ),
            bias_initializer=self._bias_initializer.__class__.from_config(
                self._bias_initializer.get_config()
            ),
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

    def _attention_mask(self, query, value, query_mask, value_mask, key_mask, attention_mask):
        """The merged `(B|1, Tq|1, Tk|1)` mask (or `None`), rank-3 inputs."""
        window = None
        if self._sliding_window is not None:
            window = sliding_window_mask(
                ops.shape(query)[1], ops.shape(value)[1], self._sliding_window
            )
        return merge_attention_masks(query_mask, value_mask, key_mask, attention_mask, window)

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
        masks = dict(
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
        )
        self._check_call(query, value, key, masks, return_attention_scores)
        if key is None:
            key = value
        rank = len(query.shape)
        gate = self._gate_dense(query) if self._use_gate else None
        query_heads = self._query_dense(query)  # (B, Tq, N, H)
        key_heads = self._key_dense(key)  # (B, Tk, K, H)
        value_heads = self._value_dense(value)  # (B, Tk, K, Hv)

        if rank > 3:
            flat = _FlattenedAxes(query, value, *self._axes(rank))
            query_heads = flat.heads(query_heads, flat.query_length)
            key_heads = flat.heads(key_heads, flat.key_length)
            value_heads = flat.heads(value_heads, flat.key_length)
            query_mask = flat.padding(query_mask, ops.shape(query)[:-1], flat.query_length)
            key_dims = ops.shape(value)[:-1]
            key_mask = merge_masks(
                flat.padding(value_mask, key_dims, flat.key_length),
                flat.padding(key_mask, key_dims, flat.key_length),
            )
            value_mask = None
            attention_mask = flat.attention(attention_mask)
        mask = self._attention_mask(
            query_heads, key_heads, query_mask, value_mask, key_mask, attention_mask
        )

        dropout = None
        if self._dropout > 0 and training:
            dropout = functools.partial(self._dropout_layer, training=training)

        result = dot_product_attention(
            query_heads,
            key_heads,
            value_heads,
            mask,
            causal=use_causal_mask,
            scale=self._inverse_sqrt_key_dim,
            dropout=dropout,
            return_weights=return_attention_scores,
            implementation=self._implementation,
            training=bool(training),
            block_size=self._block_size,
        )
        attended, scores = result if return_attention_scores else (result, None)
        if rank > 3:
            attended = flat.unflatten_output(attended)
            if scores is not None:
                scores = flat.unflatten_scores(scores)
        if gate is not None:
            attended = attended * gate
        output = self._output_dense(attended)
        if return_attention_scores:
            return output, scores
        return output

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
    ):
        masks = dict(
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
        )
        self._check_call(query, value, key, masks, return_attention_scores)
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

    def __init__(self, query, value, axes: Sequence[int], others: Sequence[int]):
        # Permutation of the input axes but the last: batch, others, attention.
        self.perm = (0,) + tuple(others) + tuple(axes)
        self.num_others = len(others)
        query_dims = ops.shape(query)[:-1]
        key_dims = ops.shape(value)[:-1]
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

    def padding(self, mask, dims, length):
        """`(B, <axes>)` padding mask -> `(B', T)`."""
        if mask is None:
            return None
        mask = ops.broadcast_to(as_bool_mask(mask), dims)
        return ops.reshape(ops.transpose(mask, self.perm), (-1, length))

    def attention(self, mask):
        """`(B, <others>, <query axes>, <key axes>)` mask -> `(B', Tq, Tk)`."""
        if mask is None:
            return None
        dims = self.batch_dims + self.query_dims + self.key_dims
        mask = ops.broadcast_to(as_bool_mask(mask), dims)
        return ops.reshape(mask, (-1, self.query_length, self.key_length))

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
