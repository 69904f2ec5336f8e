"""Initializer cloning shared by the layers."""

from __future__ import annotations

import keras


def clone_initializer(initializer):
    """A fresh instance of `initializer`, for one weight or sub-layer.

    Keras 3's unseeded initializers return the same values on every call of
    one instance, so an instance shared by several weights of one shape gives
    them identical initial values. Like Keras core and keras-hub, every weight
    and sub-layer gets its own instance, rebuilt from the config (an unseeded
    one draws a new seed; a seeded one keeps its seed). Strings and dicts are
    resolved by `keras.initializers.get`, which makes a new instance anyway.
    """
    if not isinstance(initializer, keras.initializers.Initializer):
        return keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def add_float32_kernel(layer: keras.layers.Layer, name: str, shape: tuple):
    """Adds a kernel that is never autocast, with its own initializer instance.

    For layers that compute their scores in float32 under mixed precision;
    `layer` holds `kernel_initializer`, `kernel_regularizer` and
    `kernel_constraint`.
    """
    return layer.add_weight(
        name=name,
        shape=shape,
        initializer=clone_initializer(layer.kernel_initializer),
        regularizer=layer.kernel_regularizer,
        constraint=layer.kernel_constraint,
        autocast=False,
    )
