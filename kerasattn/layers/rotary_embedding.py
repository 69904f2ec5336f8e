"""Rotary position embedding (RoPE, Su et al., RoFormer)."""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.ops.masking import sequence_positions


@keras.saving.register_keras_serializable(package="kerasattn")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding: rotates feature pairs by position angles.

    Applied to queries and keys before their dot product, so that the score
    of query position `m` and key position `n` depends on `m - n` only:
    `<RoPE(q)_m, RoPE(k)_n> = <q, R((n - m) θ) k>`. For a feature width `d`
    and position `p = (start_index + t) / scaling_factor`:

        θ_j = max_wavelength ** (-2j / d),  j = 0 ... d/2 - 1
        out[j]       = x[j] cos(p θ_j) - x[j + d/2] sin(p θ_j)
        out[j + d/2] = x[j + d/2] cos(p θ_j) + x[j] sin(p θ_j)

    This is the "half-split" (`rotate_half`) layout of
    `keras_hub.layers.RotaryEmbedding` and Hugging Face LLaMA: feature `j` is
    paired with feature `j + d/2`, not with its neighbour `j + 1` as in the
    RoFormer paper. The two layouts differ by a fixed permutation of the
    features, so weights trained with one need their projections permuted to
    be used with the other. The rotation is computed in float32 and cast to
    the compute dtype. The Keras mask of `inputs` is passed on.

    Args:
        max_wavelength: the longest wavelength of the rotations. Defaults to
            `10000`.
        scaling_factor: positions are divided by this (linear position
            interpolation, to stretch a trained context). Defaults to `1.0`.
        sequence_axis: the axis of `inputs` that indexes positions. Defaults
            to `1`.
        feature_axis: the axis of `inputs` holding the features, of even
            size. Defaults to `-1`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a query or key tensor of rank >= 2, typically `(B, T, d)` or
            `(B, T, heads, d)`. The sequence length may be dynamic; the
            feature size must be static and even.
        start_index: an integer or integer scalar tensor, the position of the
            first step (for step-by-step decoding). Defaults to 0.

    Returns:
        A tensor of the shape of `inputs`, in the layer's compute dtype.

    Example:

    >>> rope = RotaryEmbedding()
    >>> query = rope(np.random.rand(2, 10, 4, 16).astype("float32"))
    >>> key = rope(np.random.rand(2, 10, 4, 16).astype("float32"))
    >>> scores = keras.ops.einsum("bqhd,bkhd->bhqk", query, key)
    >>> tuple(scores.shape)
    (2, 4, 10, 10)
    """

    def __init__(
        self,
        max_wavelength: float = 10000,
        scaling_factor: float = 1.0,
        sequence_axis: int = 1,
        feature_axis: int = -1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_wavelength = _validation.positive_number("max_wavelength", max_wavelength)
        self.scaling_factor = _validation.positive_number("scaling_factor", scaling_factor)
        for name, value in (("sequence_axis", sequence_axis), ("feature_axis", feature_axis)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Expected `{name}` to be an integer, received: {name}={value!r}")
        self.sequence_axis = sequence_axis
        self.feature_axis = feature_axis
        self.supports_masking = True

    def _axes(self, shape):
        """The (sequence, feature) axes as non-negative ints, after checks."""
        rank = len(shape)
        axes = []
        for name, axis in (
            ("sequence_axis", self.sequence_axis),
            ("feature_axis", self.feature_axis),
        ):
            if not -rank <= axis < rank:
                raise ValueError(
                    f"Expected `{name}` to be an axis of `inputs`, "
                    f"received: {name}={axis}, inputs.shape={tuple(shape)}"
                )
            axes.append(axis % rank)
        if axes[0] == axes[1]:
            raise ValueError(
                "Expected `sequence_axis` and `feature_axis` to be different axes, "
                f"received: sequence_axis={self.sequence_axis}, "
                f"feature_axis={self.feature_axis}, inputs.shape={tuple(shape)}"
            )
        width = shape[axes[1]]
        if width is None or width % 2:
            raise ValueError(
                "Expected `inputs` with a static, even feature dimension "
                f"(axis {self.feature_axis}), received: inputs.shape={tuple(shape)}"
            )
        return axes

    def build(self, inputs_shape):
        self._axes(inputs_shape)

    def call(self, inputs, start_index=0):
        sequence_axis, feature_axis = self._axes(inputs.shape)
        rank = len(inputs.shape)
        width = inputs.shape[feature_axis]
        # Counted over the inputs' shape, not `arange` of their length: LiteRT
        # then knows every shape before it runs (see `sequence_positions`).
        positions = ops.cast(ops.reshape(sequence_positions(inputs, sequence_axis), (-1,)),
                             "float32")
        positions = (positions + ops.cast(start_index, "float32")) / self.scaling_factor
        exponents = ops.arange(width // 2, dtype="float32") * (2.0 / width)
        frequencies = ops.exp(-math.log(self.max_wavelength) * exponents)
        angles = positions[:, None] * frequencies[None, :]
        # Feature j and j + d/2 rotate together, so both halves share angles.
        angles = ops.concatenate([angles, angles], axis=-1)
        if feature_axis < sequence_axis:
            angles = ops.transpose(angles)
        broadcast_shape = [1] * rank
        broadcast_shape[sequence_axis] = -1
        broadcast_shape[feature_axis] = width
        angles = ops.reshape(angles, broadcast_shape)
        x = ops.cast(inputs, "float32")
        first, second = ops.split(x, 2, axis=feature_axis)
        rotated = ops.concatenate([-second, first], axis=feature_axis)
        output = x * ops.cos(angles) + rotated * ops.sin(angles)
        return ops.cast(output, self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        config = {
            "max_wavelength": self.max_wavelength,
            "scaling_factor": self.scaling_factor,
            "sequence_axis": self.sequence_axis,
            "feature_axis": self.feature_axis,
        }
        return {**super().get_config(), **config}
