"""A mixed-precision model's float32 computation, for export.

A model trained under `mixed_bfloat16` or `mixed_float16` keeps float32
weights but computes in 16 bits. LiteRT's built-in kernels take no bfloat16
(the converter stops at the first `tf.StridedSlice` or `tf.GatherV2` on
bfloat16 tensors) and CPU serving gains nothing from it, so the exporter
serves the model's float32 computation: a copy with every layer's policy set
to `float32` and the same weights. TFLite's `"float16"` quantize mode is the
way to ship 16-bit weights.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasattn.export._errors import ExportError

_SIXTEEN_BITS = ("float16", "bfloat16")


def computes_in_16_bits(model: keras.Model) -> bool:
    """Whether any layer of `model` (itself included) computes in float16 or bfloat16."""
    return any(
        getattr(layer, "compute_dtype", None) in _SIXTEEN_BITS
        for layer in model._flatten_layers(include_self=True)
    )


def layers_policy(model: keras.Model) -> str:
    """The dtype policy `model`'s layers compute with: the first 16-bit one found, else the
    model's own (a task's policy can be float32 while its backbone's is mixed)."""
    for layer in model._flatten_layers(include_self=True):
        if getattr(layer, "compute_dtype", None) in _SIXTEEN_BITS:
            return layer.dtype_policy.name
    return model.dtype_policy.name


def _policy_name(policy: Any) -> Any:
    if isinstance(policy, str):
        return policy
    if isinstance(policy, dict) and policy.get("class_name") == "DTypePolicy":
        return policy.get("config", {}).get("name")
    return None


def _as_float32(config: Any) -> Any:
    """`config` with every 16-bit or mixed dtype policy replaced by `"float32"`."""
    if isinstance(config, dict):
        rewritten = {}
        for key, value in config.items():
            name = _policy_name(value) if key == "dtype" else None
            if isinstance(name, str) and (name.startswith("mixed_") or name in _SIXTEEN_BITS):
                rewritten[key] = "float32"
            else:
                rewritten[key] = _as_float32(value)
        return rewritten
    if isinstance(config, list):
        return [_as_float32(item) for item in config]
    return config


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` itself when it computes in float32, else a float32 copy with its weights.

    The copy is built from the model's serialized config with every mixed or
    16-bit dtype policy replaced by `float32`, then takes the model's
    weights (float32 already under a mixed policy; cast where a layer kept
    16-bit weights). It has the same layers, name, inputs and outputs.

    Args:
        model: a serializable `keras.Model` (functional, Sequential or a
            subclass with `get_config` / `from_config`).

    Returns:
        A `keras.Model` computing in float32.

    Raises:
        ExportError: if the model cannot be rebuilt from its config, or the
            rebuilt model's weights do not match the original's.

    Example:

    ```python
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    keras.config.set_dtype_policy("float32")
    served = float32_copy(model)
    assert served.layers[0].compute_dtype == "float32"
    ```
    """
    if not computes_in_16_bits(model):
        return model
    config = _as_float32(keras.saving.serialize_keras_object(model))
    try:
        copy = keras.saving.deserialize_keras_object(config)
    except Exception as error:
        raise ExportError(
            f"Expected a model that can be rebuilt from its config in float32 (it computes in "
            f"{layers_policy(model)}), received {type(model).__name__} {model.name!r}: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
            "conversion",
        ) from error
    if len(copy.weights) != len(model.weights) or any(
        tuple(new.shape) != tuple(old.shape) for new, old in zip(copy.weights, model.weights)
    ):
        raise ExportError(
            f"Expected the float32 copy of {model.name!r} to have the model's "
            f"{len(model.weights)} weights, received {len(copy.weights)} of other shapes",
            "conversion",
        )
    for new, old in zip(copy.weights, model.weights):
        new.assign(keras.ops.cast(old.value, new.dtype))
    return copy


__all__ = ["computes_in_16_bits", "float32_copy", "layers_policy"]
