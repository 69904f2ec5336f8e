"""The gradients importance needs, the one backend-specific part of `kerasattn.prune`.

Keras has no backend-agnostic gradient call outside `fit`, so this module
computes `d loss / d variables` per backend: TensorFlow (a
`tf.GradientTape` in one traced function) and JAX (`jax.grad` of the
model's `stateless_call`). Other backends raise a one-line error.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras

LossFunction = Callable[..., object]


def _loss_value(model, loss: Optional[LossFunction], x, y, sample_weight, predictions):
    """`loss(y, predictions, sample_weight)`, or with `loss=None` the model's own
    `compute_loss` (its compiled loss, or a task's override such as a CRF's)."""
    if loss is None:
        return model.compute_loss(x=x, y=y, y_pred=predictions, sample_weight=sample_weight,
                                  training=False)
    return loss(y, predictions, sample_weight)


def gradient_function(model: keras.Model, loss: Optional[LossFunction], variables: Sequence):
    """`f(x, y, sample_weight)` -> the gradients of `loss(y, model(x), sample_weight)`
    (`model.compute_loss` with `loss=None`) with respect to `variables`, the
    model run with `training=False`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def tensorflow_gradients(x, y, sample_weight):
            with tf.GradientTape() as tape:
                value = _loss_value(model, loss, x, y, sample_weight, model(x, training=False))
            return tape.gradient(value, list(variables))

        return tensorflow_gradients
    if backend == "jax":
        import jax

        trainable = model.trainable_variables
        positions = {id(variable): index for index, variable in enumerate(trainable)}
        missing = [variable.path for variable in variables if id(variable) not in positions]
        if missing:
            raise ValueError(
                f"Expected trainable variables to score, received non-trainable: {missing}"
            )

        def loss_of(trainable_values, non_trainable_values, x, y, sample_weight):
            predictions, _ = model.stateless_call(
                trainable_values, non_trainable_values, x, training=False
            )
            return _loss_value(model, loss, x, y, sample_weight, predictions)

        gradient = jax.jit(jax.grad(loss_of))

        def jax_gradients(x, y, sample_weight):
            values = [variable.value for variable in trainable]
            fixed = [variable.value for variable in model.non_trainable_variables]
            grads = gradient(values, fixed, x, y, sample_weight)
            return [grads[positions[id(variable)]] for variable in variables]

        return jax_gradients
    raise ValueError(
        "Expected the TensorFlow or JAX backend for importance scores (gradients outside "
        f"`fit`), received: backend={backend!r}"
    )
