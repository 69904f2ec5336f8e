"""Learned absolute position embeddings."""

from __future__ import annotations

import keras
from keras import ops

from kerasattn.layers import _validation
from kerasattn.layers._initializers import clone_initializer
from kerasattn.ops.masking import sequence_positions


@keras.saving.register_keras_serializable(package="kerasattn")
class PositionEmbedding(keras.layers.Layer):
    """Learned position embeddings for the positions of a sequence.

    The layer holds a trainable table `E` of shape `(sequence_length, d)` and
    returns, for inputs of shape `(B, T, d)`,

        output[b, t, :] = E[start_index + t, :]                # align="start"
        output[b, t, :] = E[sequence_length - T + t, :]        # align="end"

    `align="end"` is for left-padded sequences such as SASRec's item
    histories, whose last step always holds the latest item: it takes the
    table's last row whatever `T`, so a batch cut to its longest sequence
    (its left padding dropped) gets the same positions as at full length.

    It adds nothing itself: add its output to the token embeddings (as in
    BERT). Only the shape of `inputs` is used, never its values. The Keras
    mask of `inputs` (for example from `Embedding(mask_zero=True)`) is passed
    on to the output.

    Args:
        sequence_length: the number of positions the table holds; the
            longest sequence (plus `start_index`) the layer accepts.
        initializer: initializer of the table. Defaults to
            `"glorot_uniform"`.
        align: `"start"` (position 0 is the first step) or `"end"` (the
            last step is position `sequence_length - 1`). Defaults to
            `"start"`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a `(B, T, d)` tensor, typically token embeddings. `T` may be
            dynamic; a static `T` must not exceed `sequence_length`.
        start_index: an integer or integer scalar tensor, the position of the
            first step (for step-by-step decoding with a cache). Defaults to
            0. `start_index + T` must not exceed `sequence_length`; this is
            checked when both are Python integers. Only with
            `align="start"`.

    Returns:
        A `(B, T, d)` tensor in the layer's compute dtype: the rows
        `start_index ... start_index + T - 1` of the table, repeated over the
        batch.

    Example:

    >>> token_ids = keras.Input(shape=(None,), dtype="int32")
    >>> tokens = keras.layers.Embedding(1000, 32, mask_zero=True)(token_ids)
    >>> positions = PositionEmbedding(sequence_length=128)(tokens)
    >>> embedded = keras.layers.Add()([tokens, positions])
    >>> embedded.shape
    (None, None, 32)
    """

    def __init__(self, sequence_length: int, initializer="glorot_uniform", align: str = "start",
                 **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = _validation.positive_int("sequence_length", sequence_length)
        self.initializer = keras.initializers.get(initializer)
        if align not in ("start", "end"):
            raise ValueError(f'Expected `align` to be "start" or "end", received: align={align!r}')
        self.align = align
        self.supports_masking = True

    def _check_inputs(self, shape, start_index=0) -> None:
        if self.align == "end" and not (isinstance(start_index, int) and start_index == 0):
            raise ValueError(
                'Expected no `start_index` with align="end", received: '
                f"start_index={start_index}"
            )
        _validation.rank("inputs", shape, 3)
        if shape[-1] is None:
            raise ValueError(
                "Expected `inputs` with a static last dimension, "
                f"received: inputs.shape={tuple(shape)}"
            )
        length = shape[1]
        if isinstance(start_index, int) and not isinstance(start_index, bool):
            if start_index < 0:
                raise ValueError(
                    "Expected `start_index` to be a non-negative integer, "
                    f"received: start_index={start_index}"
                )
            if length is not None and start_index + length > self.sequence_length:
                raise ValueError(
                    "Expected `start_index + inputs.shape[1]` <= "
                    f"sequence_length={self.sequence_length}, received: "
                    f"inputs.shape={tuple(shape)}, start_index={start_index}"
                )

    def build(self, inputs_shape):
        self._check_inputs(inputs_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, inputs_shape[-1]),
            initializer=clone_initializer(self.initializer),
            trainable=True,
        )

    def call(self, inputs, start_index=0):
        self._check_inputs(inputs.shape, start_index)
        width = self.embeddings.shape[-1]
        _validation.last_dim("inputs", inputs.shape, width)
        table = ops.cast(self.embeddings, self.compute_dtype)
        # Rows gathered by positions counted over the inputs' own shape and
        # broadcast by an addition (not a slice of computed length and a
        # broadcast_to): LiteRT then knows every shape before it runs.
        positions = sequence_positions(inputs)  # (1, T)
        if self.align == "end":
            positions = (self.sequence_length - 1) - ops.flip(positions, axis=1)
        else:
            positions = positions + ops.cast(start_index, "int32")
        return ops.take(table, positions, axis=0) + ops.zeros_like(
            inputs, dtype=self.compute_dtype
        )

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        config = {
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
            "align": self.align,
        }
        return {**super().get_config(), **config}
