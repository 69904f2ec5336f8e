"""A `keras.layers.Dense` that exports products over the last axis as one einsum."""

from __future__ import annotations

import keras
from keras import ops

from kerasattn.ops.tracing import export_graph_enabled

_LETTERS = "abcdefg"


def last_axis_product(inputs, kernel):
    """`inputs @ kernel` over the last axis of `inputs`, in the form of the trace
    (see `Dense`): Keras's `ops.matmul`, or an einsum under `export_graph`."""
    rank = len(inputs.shape)
    if rank <= 2 or not export_graph_enabled():
        return ops.matmul(inputs, kernel)
    batch = _LETTERS[: rank - 1]
    return ops.einsum(f"{batch}y,yz->{batch}z", inputs, kernel)


@keras.saving.register_keras_serializable(package="kerasattn")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense`; traced for export, inputs of rank > 2 go through an einsum.

    Keras's TensorFlow backend multiplies such inputs with `tf.tensordot`,
    which flattens them through shape arithmetic computed when the graph runs
    (`SHAPE`, `GATHER`, `REDUCE_PROD`, `PACK`, `RESHAPE`): in an exported
    graph of dynamic length LiteRT runs those small ops between the matrix
    products, outside its XNNPACK delegate. Under
    `kerasattn.ops.tracing.export_graph` the product is `"aby,yz->abz"`
    (one `FULLY_CONNECTED` in LiteRT, as fast in TensorFlow's forward pass);
    otherwise Keras's own, whose gradient TensorFlow computes faster.
    Weights, config and results are Keras's.
    """

    def call(self, inputs, training=None):
        x = last_axis_product(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x
