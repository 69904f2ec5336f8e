"""Fixed sinusoidal position encoding (Vaswani et al., 2017)."""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.ops.masking import sequence_positions


@keras.saving.register_keras_serializable(package="kerasattn")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """The fixed sine/cosine position encoding of "Attention Is All You Need".

    For inputs of shape `(B, T, d)` and positions `p = start_index + t`:

        PE[p, 2i]     = sin(p / max_wavelength ** (2i / d))
        PE[p, 2i + 1] = cos(p / max_wavelength ** (2i / d))

    Sines and cosines are interleaved (even features are sines, odd features
    cosines), as in the paper and in `keras_hub.layers.SinePositionEncoding`.
    An odd `d` is accepted: the last feature is then a sine whose cosine
    partner would fall outside the width. The layer has no weights and adds
    nothing itself: add its output to the token embeddings. Angles are
    computed in float32 and cast to the compute dtype at the end, so long
    positions keep their precision under mixed precision. The Keras mask of
    `inputs` is passed on to the output.

    Args:
        max_wavelength: the longest wavelength of the sinusoids (over `2π`).
            Defaults to `10000`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a `(B, T, d)` tensor; only its shape is used. `T` may be
            dynamic.
        start_index: an integer or integer scalar tensor, the position of the
            first step (for step-by-step decoding). Defaults to 0.

    Returns:
        The `(B, T, d)` encodings in the layer's compute dtype.

    Example:

    >>> token_ids = keras.Input(shape=(None,), dtype="int32")
    >>> tokens = keras.layers.Embedding(1000, 32)(token_ids)
    >>> positions = SinusoidalPositionEncoding()(tokens)
    >>> embedded = keras.layers.Add()([tokens, positions])
    >>> embedded.shape
    (None, None, 32)
    """

    def __init__(self, max_wavelength: float = 10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = _validation.positive_number("max_wavelength", max_wavelength)
        self.supports_masking = True

    def call(self, inputs, start_index=0):
        _validation.rank("inputs", inputs.shape, 3)
        shape = ops.shape(inputs)
        width = shape[2]
        # (1, T): counted over the inputs' shape (static in LiteRT; see sequence_positions).
        positions = ops.cast(sequence_positions(inputs), "float32") + ops.cast(
            start_index, "float32"
        )
        features = ops.arange(width)
        # Feature 2i and 2i + 1 share the frequency max_wavelength ** (-2i / d).
        exponents = ops.cast(2 * (features // 2), "float32") / ops.cast(width, "float32")
        frequencies = ops.exp(-math.log(self.max_wavelength) * exponents)
        angles = ops.expand_dims(positions, -1) * frequencies
        encoding = ops.where(features % 2 == 0, ops.sin(angles), ops.cos(angles))
        encoding = ops.cast(encoding, self.compute_dtype)
        # Broadcast by an addition: a broadcast_to a computed shape is another
        # op whose output shape LiteRT learns only when it runs.
        return encoding + ops.zeros_like(inputs, dtype=self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
