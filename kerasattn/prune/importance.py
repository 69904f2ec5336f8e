"""Importance of heads and feed-forward units, and which to remove.

After Michel, Levy and Neubig (2019), "Are Sixteen Heads Really Better than
One?": the importance of head `h` is the expected absolute gradient of the
loss with respect to a gate `g_h` multiplying the head's output, at
`g_h = 1`, accumulated over batches of the user's data and normalised per
layer (L2). Feed-forward units are scored the same way, one gate per unit.

No gate is added to the model: a gate on head (unit) `i` scales row `i` of
the output projection's kernel `W`, so `d loss / d g_i = sum(W[i] * d loss /
d W[i])`, read from the gradient of that kernel.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

import keras
import numpy as np

from kerasattn.prune._gradients import LossFunction
from kerasattn.prune._gradients import gradient_function
from kerasattn.prune._structure import HEADS
from kerasattn.prune._structure import UNITS
from kerasattn.prune._structure import PrunableGroup
from kerasattn.prune._structure import find_prunable

Scores = Mapping[str, np.ndarray]


def importance(
    model: keras.Model,
    batches: Iterable,
    loss: Optional[LossFunction] = None,
    max_batches: Optional[int] = None,
) -> dict[str, np.ndarray]:
    """Per-head and per-unit importance of `model` on `batches`.

    Args:
        model: a built model with `MultiHeadAttention` layers or Transformer
            blocks (see `find_prunable`).
        batches: an iterable of `(x, y)` or `(x, y, sample_weight)` batches
            (a `tf.data.Dataset`, a list), `x` what the model takes.
        loss: `loss(y_true, y_pred, sample_weight)` returning a scalar, such
            as a `keras.losses.Loss` instance; `None` for the model's own
            `compute_loss` (its compiled loss, or a task's override).
        max_batches: stop after this many batches (`None`: all of them;
            required for a repeating dataset).

    Returns:
        Group path -> scores, one per query head or unit, the absolute gate
        gradients summed over batches (per batch, as Michel et al.'s code
        does) and divided by their L2 norm within the group.

    Raises:
        ValueError: if there are no batches, or the backend has no gradient
            function here (see `kerasattn.prune._gradients`).

    Example:

    ```python
    scores = importance(model, dataset, keras.losses.SparseCategoricalCrossentropy(True),
                        max_batches=50)
    scores["block/self_attention"]  # one score per head, L2-normalised
    ```
    """
    if max_batches is not None and (isinstance(max_batches, bool) or max_batches <= 0):
        raise ValueError(f"Expected max_batches > 0 or None, received: max_batches={max_batches!r}")
    groups = find_prunable(model)
    kernels = [group.output_kernel for group in groups]
    gradients = gradient_function(model, loss, kernels)
    totals = [np.zeros(group.size, dtype="float64") for group in groups]
    count = 0
    for batch in batches:
        if max_batches is not None and count >= max_batches:
            break
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        for index, gradient in enumerate(gradients(x, y, sample_weight)):
            kernel = keras.ops.convert_to_numpy(kernels[index]).astype("float64")
            product = kernel * keras.ops.convert_to_numpy(gradient).astype("float64")
            gate_gradient = product.reshape(product.shape[0], -1).sum(axis=1)
            totals[index] += np.abs(gate_gradient)
        count += 1
    if not count:
        raise ValueError("Expected at least one batch to score on, received: no batches")
    scores = {}
    for group, total in zip(groups, totals):
        norm = np.linalg.norm(total)
        scores[group.path] = total / norm if norm > 0 else total
    return scores


def _ranked_removals(groups: list[PrunableGroup], scores: Scores) -> list[tuple]:
    """`(score, group, item)` of every removable item, least important first;
    an item is a key/value group of heads (its query heads' summed scores) or a unit."""
    items = []
    for group in groups:
        values = np.asarray(scores[group.path], dtype="float64")
        if values.shape != (group.size,):
            raise ValueError(
                f"Expected {group.size} scores at {group.path!r}, received: {values.shape}"
            )
        per_item = values.reshape(group.num_removable, group.group_size).sum(axis=1)
        items += [(float(score), group, item) for item, score in enumerate(per_item)]
    # Ties (such as scores of 0) go to the earlier group and item, deterministically.
    return sorted(items, key=lambda entry: entry[0])


def select(
    model: keras.Model, scores: Scores, remove_heads: int = 0, remove_units: int = 0
) -> dict[str, list[int]]:
    """Which heads and units to keep: the least important go, across layers.

    Heads and units are ranked globally (the scores are normalised per
    layer, as in Michel et al.), the lowest removed until `remove_heads`
    query heads and `remove_units` units are gone, never the last key/value
    group of an attention layer or the last unit of a block. With
    grouped-query attention a whole key/value group goes at once, so fewer
    heads than asked may go when a group would overshoot.

    Args:
        model: the model the scores are of.
        scores: `importance`'s result.
        remove_heads: number of query heads to remove in all.
        remove_units: number of feed-forward units to remove in all.

    Returns:
        Group path -> sorted indices to keep, for every group (`prune_model`'s
        `keep`).
    """
    for name, value in (("remove_heads", remove_heads), ("remove_units", remove_units)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"Expected `{name}` to be an int >= 0, received: {name}={value!r}")
    groups = find_prunable(model)
    missing = sorted({group.path for group in groups} - set(scores))
    if missing:
        raise ValueError(f"Expected scores of every prunable group, received none for {missing}")
    removed: dict[str, set[int]] = {group.path: set() for group in groups}
    for kind, target in ((HEADS, remove_heads), (UNITS, remove_units)):
        of_kind = [group for group in groups if group.kind == kind]
        gone = 0
        for _, group, item in _ranked_removals(of_kind, scores):
            left = group.num_removable - len(removed[group.path])
            if gone + group.group_size > target or left == 1:
                continue
            removed[group.path].add(item)
            gone += group.group_size
    keep = {}
    for group in groups:
        keep[group.path] = [
            index for index in range(group.size)
            if index // group.group_size not in removed[group.path]
        ]
    return keep


def counts(model: keras.Model) -> dict[str, int]:
    """`{"heads": query heads, "units": feed-forward units}` summed over `model`'s groups."""
    totals = {HEADS: 0, UNITS: 0}
    for group in find_prunable(model):
        totals[group.kind] += group.size
    return totals
