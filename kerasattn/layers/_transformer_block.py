"""What the Transformer encoder and decoder blocks share.

Constructor arguments and their checks, the sub-layer factories, the
residual wrapper (pre- or post-norm) and the feed-forward sub-layer.
"""

from __future__ import annotations

from typing import Callable

import keras

from kerasattn.layers import _validation
from kerasattn.layers._dense import Dense
from kerasattn.layers._initializers import clone_initializer
from kerasattn.layers.multi_head_attention import MultiHeadAttention


class TransformerBlockBase(keras.layers.Layer):
    """Arguments, sub-layer factories and residual logic of the blocks."""

    def __init__(
        self,
        num_heads: int,
        intermediate_dim: int,
        key_dim: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation="relu",
        norm_first: bool = False,
        layer_norm_epsilon: float = 1e-5,
        num_key_value_heads: int | None = None,
        sliding_window: int | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _validation.positive_int("num_heads", num_heads)
        self.intermediate_dim = _validation.positive_int("intermediate_dim", intermediate_dim)
        self.key_dim = _validation.positive_int("key_dim", key_dim, allow_none=True)
        self.dropout = _validation.rate("dropout", dropout)
        self.attention_dropout = _validation.rate("attention_dropout", attention_dropout)
        self.activation = keras.activations.get(activation)
        self.norm_first = _validation.one_of("norm_first", norm_first, (False, True))
        self.layer_norm_epsilon = _validation.positive_number(
            "layer_norm_epsilon", layer_norm_epsilon
        )
        self.num_key_value_heads = _validation.positive_int(
            "num_key_value_heads", num_key_value_heads, allow_none=True
        )
        if num_key_value_heads is not None and num_heads % num_key_value_heads:
            raise ValueError(
                f"Expected `num_key_value_heads` to divide num_heads={num_heads}, "
                f"received: num_key_value_heads={num_key_value_heads}"
            )
        self.sliding_window = _validation.positive_int(
            "sliding_window", sliding_window, allow_none=True
        )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Expected `seed` to be an integer or None, received: seed={seed!r}")
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    # -- sub-layer factories -----------------------------------------------------

    def _check_width(self, name: str, shape) -> int:
        """The static width of a `(B, T, d)` input; `d` must split into heads
        when `key_dim` is not given."""
        _validation.rank(name, shape, 3)
        width = shape[-1]
        if width is None:
            raise ValueError(
                f"Expected `{name}` with a static last dimension, "
                f"received: {name}.shape={tuple(shape)}"
            )
        if self.key_dim is None and width % self.num_heads:
            raise ValueError(
                f"Expected the last dimension of `{name}` divisible by "
                f"num_heads={self.num_heads} (or an explicit `key_dim`), "
                f"received: {name}.shape={tuple(shape)}"
            )
        return width

    def _seed(self, offset: int) -> int | None:
        # Distinct seeds, so that the dropout layers draw different masks.
        return None if self.seed is None else self.seed + offset

    def _make_attention(
        self,
        name: str,
        width: int,
        seed_offset: int,
        sliding_window: int | None = None,
        num_heads: int | None = None,
    ) -> MultiHeadAttention:
        """A sub-layer attention of `num_heads` heads (default `self.num_heads`),
        each `key_dim` wide, grouped `num_heads // num_key_value_heads` query heads
        to a key/value head as the block's own."""
        num_heads = num_heads or self.num_heads
        num_key_value_heads = None
        if self.num_key_value_heads is not None:
            num_key_value_heads = num_heads // (self.num_heads // self.num_key_value_heads)
        return MultiHeadAttention(
            num_heads=num_heads,
            key_dim=self.key_dim or width // self.num_heads,
            dropout=self.attention_dropout,
            num_key_value_heads=num_key_value_heads,
            sliding_window=sliding_window,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            seed=self._seed(seed_offset),
            dtype=self.dtype_policy,
            name=name,
        )

    def _make_layer_norm(self, name: str, shape) -> keras.layers.LayerNormalization:
        layer = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        layer.build(shape)
        return layer

    def _make_dropout(self, name: str, seed_offset: int) -> keras.layers.Dropout:
        return keras.layers.Dropout(
            rate=self.dropout, seed=self._seed(seed_offset), dtype=self.dtype_policy, name=name
        )

    def _build_feedforward(self, shape, seed_offset: int) -> None:
        width = shape[-1]
        self._feedforward_layer_norm = self._make_layer_norm("feedforward_layer_norm", shape)
        self._feedforward_intermediate_dense = Dense(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward_intermediate_dense",
        )
        self._feedforward_intermediate_dense.build(shape)
        self._feedforward_output_dense = Dense(
            width,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward_output_dense",
        )
        self._feedforward_output_dense.build(tuple(shape[:-1]) + (self.intermediate_dim,))
        self._feedforward_dropout = self._make_dropout("feedforward_dropout", seed_offset)

    # -- calling -----------------------------------------------------------------

    def _residual(self, x, layer_norm, sublayer: Callable, dropout, training):
        """`x + f(LN(x))` (pre-norm) or `LN(x + f(x))` (post-norm).

        `sublayer` returns `(output, extras)`; the extras (attention scores)
        are passed through.
        """
        residual = x
        if self.norm_first:
            x = layer_norm(x)
        x, extras = sublayer(x)
        x = residual + dropout(x, training=training)
        if not self.norm_first:
            x = layer_norm(x)
        return x, extras

    def _feedforward(self, x, training):
        def feedforward(x):
            hidden = self._feedforward_intermediate_dense(x)
            return self._feedforward_output_dense(hidden), None

        x, _ = self._residual(
            x, self._feedforward_layer_norm, feedforward, self._feedforward_dropout, training
        )
        return x

    def get_config(self) -> dict:
        config = {
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation": keras.activations.serialize(self.activation),
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "num_key_value_heads": self.num_key_value_heads,
            "sliding_window": self.sliding_window,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
