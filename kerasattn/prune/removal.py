"""Physical removal of heads and feed-forward units, and gating them off.

`prune_model` rebuilds a model whose pruned layers have fewer heads and
units (smaller dense kernels, which is what runs faster in LiteRT and ONNX
Runtime) and copies every weight over, slicing the kernels of the pruned
layers. `gated` scales heads and units in place instead, which is what
removing them computes.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Mapping, Optional, Sequence

import keras
import numpy as np

from kerasattn.prune._structure import HEADS
from kerasattn.prune._structure import PrunableGroup
from kerasattn.prune._structure import find_prunable

Keep = Mapping[str, Sequence[int]]
Rebuild = Callable[[keras.Model, dict], keras.Model]


def _groups_by_path(model) -> dict[str, PrunableGroup]:
    return {group.path: group for group in find_prunable(model)}


def _checked_keep(group: PrunableGroup, kept: Sequence[int]) -> list[int]:
    """`kept` as a sorted list, checked: in range, not empty, whole key/value groups."""
    indices = sorted({int(index) for index in kept})
    if not indices or indices[0] < 0 or indices[-1] >= group.size:
        raise ValueError(
            f"Expected between 1 and {group.size} indices in [0, {group.size}) to keep "
            f"at {group.path!r}, received: {list(kept)!r}"
        )
    if group.group_size > 1:
        by_kv_head: dict[int, int] = {}
        for index in indices:
            by_kv_head[index // group.group_size] = by_kv_head.get(
                index // group.group_size, 0) + 1
        if any(count != group.group_size for count in by_kv_head.values()):
            raise ValueError(
                f"Expected whole key/value groups of {group.group_size} query heads to keep "
                f"at {group.path!r} (grouped-query attention), received: {list(kept)!r}"
            )
    return indices


def _slices(group: PrunableGroup, kept: list[int]) -> list[tuple[object, int, list[int]]]:
    """`(variable, axis, indices)` for each variable of `group` that pruning slices."""
    layer = group.layer
    if group.kind == HEADS:
        kv_kept = sorted({index // group.group_size for index in kept})
        slices = [(layer.output_dense.kernel, 0, kept)]
        projections = [(layer.query_dense, kept), (layer.key_dense, kv_kept),
                       (layer.value_dense, kv_kept)]
        if layer._use_gate:
            projections.append((layer._gate_dense, kept))
        for projection, indices in projections:
            slices.append((projection.kernel, 1, indices))
            if projection.bias is not None:
                slices.append((projection.bias, 0, indices))
        return slices
    intermediate = layer._feedforward_intermediate_dense
    slices = [(intermediate.kernel, 1, kept), (layer._feedforward_output_dense.kernel, 0, kept)]
    if intermediate.bias is not None:
        slices.append((intermediate.bias, 0, kept))
    return slices


def _edit_layer_configs(serialized: dict, prefix: str, updates: dict, applied: set) -> None:
    """Applies `updates` (layer path -> config entries) to the configs of a
    serialized functional or sequential model, nested models included."""
    layers = serialized.get("config", {}).get("layers")
    if not isinstance(layers, list):
        return
    for entry in layers:
        name = entry.get("config", {}).get("name")
        path = f"{prefix}/{name}" if prefix else name
        if path in updates:
            entry["config"].update(updates[path])
            applied.add(path)
        _edit_layer_configs(entry, path, updates, applied)


def rebuild_from_config(model: keras.Model, updates: dict) -> keras.Model:
    """A new model from `model`'s config with `updates` applied to its layers' configs.

    For functional and sequential models (their configs list their layers).

    Args:
        model: the model to rebuild.
        updates: layer path (`find_prunable`'s `owner_path`) -> config entries.

    Returns:
        The new model, built, with freshly initialised weights.

    Raises:
        ValueError: if a layer of `updates` is not in the config (a model
            whose config holds its constructor's arguments instead of its
            layers needs its own `rebuild`).
    """
    serialized = copy.deepcopy(keras.saving.serialize_keras_object(model))
    applied: set = set()
    _edit_layer_configs(serialized, "", updates, applied)
    missing = sorted(set(updates) - applied)
    if missing:
        raise ValueError(
            f"Expected the layers {missing} in the config of the {type(model).__name__} "
            "(a model whose config does not list its layers needs a `rebuild` function), "
            "received: a config without them"
        )
    return keras.saving.deserialize_keras_object(serialized)


def prune_model(model: keras.Model, keep: Keep, rebuild: Optional[Rebuild] = None) -> keras.Model:
    """A copy of `model` with only the heads and feed-forward units in `keep`.

    The new model's pruned layers are smaller (`MultiHeadAttention` with
    fewer heads: query, key, value and gate kernels sliced on their heads
    axis, the output kernel on its input axis; blocks with a smaller
    `intermediate_dim`), so it saves, reloads and exports like any model.
    With grouped-query attention whole key/value groups are removed (every
    query head sharing a key/value head), so `num_heads //
    num_key_value_heads` stays what it was. Every other weight is copied.

    Args:
        model: a built model.
        keep: group path (see `find_prunable`) -> indices of the query
            heads or units to keep; groups left out keep everything.
        rebuild: `rebuild(model, updates)` returning the new model built
            with `updates` (layer path -> config entries such as
            `{"num_heads": 3, "key_dim": 16}`) applied; defaults to
            `rebuild_from_config`, which handles functional and sequential
            models. The zoo's models rebuild from their own arguments.

    Returns:
        The new model (not compiled).

    Example:

    ```python
    inputs = keras.Input((None, 32))
    outputs = TransformerEncoderBlock(num_heads=4, intermediate_dim=64, name="block")(inputs)
    model = keras.Model(inputs, outputs)
    pruned = prune_model(model, {"block/self_attention": [0, 2], "block/feedforward": range(40)})
    ```
    """
    groups = _groups_by_path(model)
    unknown = sorted(set(keep) - set(groups))
    if unknown:
        raise ValueError(
            f"Expected paths of prunable groups ({sorted(groups)}), received: {unknown}"
        )
    # Per owner: what its groups pin, then what they change (over the pins).
    fixed: dict[str, dict] = {}
    changed: dict[str, dict] = {}
    slices: dict[int, tuple[int, list[int]]] = {}
    for path, kept in keep.items():
        group = groups[path]
        indices = _checked_keep(group, kept)
        fixed.setdefault(group.owner_path, {}).update(group.fixed_config)
        changed.setdefault(group.owner_path, {}).update(group.config_updates(len(indices)))
        for variable, axis, variable_indices in _slices(group, indices):
            slices[id(variable)] = (axis, variable_indices)
    updates = {path: {**fixed[path], **entries} for path, entries in changed.items()}
    pruned = (rebuild or rebuild_from_config)(model, updates)
    old_weights, new_weights = model.weights, pruned.weights
    if len(old_weights) != len(new_weights):
        raise ValueError(
            f"Expected the rebuilt model to have {len(old_weights)} weights like the "
            f"original, received: {len(new_weights)}"
        )
    for old, new in zip(old_weights, new_weights):
        value = keras.ops.convert_to_numpy(old)
        if id(old) in slices:
            axis, indices = slices[id(old)]
            value = np.take(value, indices, axis=axis)
        if old.name != new.name or tuple(value.shape) != tuple(new.shape):
            raise ValueError(
                f"Expected the rebuilt model's weights to match the original's, received: "
                f"{new.path} {tuple(new.shape)} for {old.path} {tuple(value.shape)}"
            )
        new.assign(value)
    return pruned


@contextlib.contextmanager
def gated(model: keras.Model, gates: Mapping[str, Sequence[float]]) -> Iterator[None]:
    """Scales heads and feed-forward units by gates while the block runs.

    Gate `g_i` of head (unit) `i` multiplies that head's attention result
    (that unit's activation) before the output projection, which is the
    same as scaling row `i` of the output kernel; a gate of 0 computes what
    removing the head (unit) computes. The kernels are restored on exit.

    Args:
        model: a built model.
        gates: group path -> one gate per query head or unit.

    Example:

    ```python
    with gated(model, {"block/self_attention": [1.0, 0.0, 1.0, 1.0]}):
        without_head_1 = model(x)
    ```
    """
    groups = _groups_by_path(model)
    saved = []
    try:
        for path, values in gates.items():
            if path not in groups:
                raise ValueError(
                    f"Expected paths of prunable groups ({sorted(groups)}), received: {path!r}"
                )
            kernel = groups[path].output_kernel
            values = np.asarray(values, dtype="float32")
            if values.shape != (kernel.shape[0],):
                raise ValueError(
                    f"Expected {kernel.shape[0]} gates at {path!r}, "
                    f"received: {values.shape[0] if values.ndim else values!r}"
                )
            original = keras.ops.convert_to_numpy(kernel)
            saved.append((kernel, original))
            scale = values.reshape((-1,) + (1,) * (original.ndim - 1))
            kernel.assign((original * scale).astype(original.dtype))
        yield
    finally:
        for kernel, original in reversed(saved):
            kernel.assign(original)
