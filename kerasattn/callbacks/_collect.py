"""Collecting the attention weights of every attention layer of a model.

An attention layer is one whose `call` accepts `return_attention_scores`.
Each such layer's `call` is wrapped, for one forward pass only, by an
instance attribute that asks for the scores, keeps them and returns what the
caller asked for; the model itself is not rebuilt or changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import keras
import numpy as np

# Call arguments that carry the padding of the query or of the key axis
# (the Keras names, filled in from implicit masks by `Layer.__call__`).
QUERY_MASK_ARGS = ("query_mask",)
KEY_MASK_ARGS = ("value_mask", "key_mask")


@dataclasses.dataclass
class AttentionMap:
    """The weights of one call of one attention layer on the probe batch.

    Attributes:
        path: the layer's path in the model, `outer/inner/...` by layer
            names, with `/call_<k>` appended when the layer is called more
            than once in a forward pass.
        weights: float32 `(B, N, Tq, Tk)`; `N = 1` for a layer without heads
            (`(B, Tq, Tk)` weights, or `(B, T)` pooling weights as `Tq = 1`).
        multi_head: whether the layer returned per-head `(B, N, Tq, Tk)`
            weights.
        masked: boolean `(B, N, Tq, Tk)`, `True` where the cell is masked:
            its query or key is padding according to the masks the layer
            received, or the layer gave it exactly zero weight (masked keys,
            fully masked queries and causal cells all get exact zeros).
    """

    path: str
    weights: np.ndarray
    multi_head: bool
    masked: np.ndarray


def accepts_attention_scores(layer: keras.layers.Layer) -> bool:
    return "return_attention_scores" in inspect.signature(layer.call).parameters


def _children(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    return layer._flatten_layers(include_self=False, recursive=False)


def find_attention_layers(model: keras.layers.Layer) -> List[Tuple[str, keras.layers.Layer]]:
    """`(path, layer)` for the innermost attention layers of `model`.

    A block that accepts `return_attention_scores` only to pass on the scores
    of an attention layer inside it (such as `TransformerEncoderBlock`) is
    skipped in favour of that inner layer, so every map is collected once and
    named after the layer that computes it. A layer reachable by several paths
    is listed once, under the first.
    """
    found: List[Tuple[str, keras.layers.Layer]] = []
    seen = set()

    def visit(layer, path) -> bool:
        """Lists the attention layers under `layer`; whether there were any."""
        if id(layer) in seen:
            return accepts_attention_scores(layer)
        seen.add(id(layer))
        inner = False
        for child in _children(layer):
            inner = visit(child, f"{path}/{child.name}" if path else child.name) or inner
        if inner:
            return True
        if path and accepts_attention_scores(layer):
            if getattr(layer, "implementation", None) == "chunked":
                warnings.warn(
                    f"Layer `{path}` uses implementation=\"chunked\", which never "
                    "materialises its attention weights; it is left out of the "
                    "attention maps."
                )
                return False
            found.append((path, layer))
            return True
        return False

    visit(model, "")
    return found


def _padding(value, batch: int, length: int) -> Optional[np.ndarray]:
    """A `(B, length)` boolean padding mask from a call argument, or `None`
    when the argument is absent or is not a padding mask of that shape."""
    if value is None or isinstance(value, (list, tuple)):
        return None
    array = np.asarray(keras.ops.convert_to_numpy(value)).astype(bool)
    try:
        return np.broadcast_to(array, (batch, length))
    except ValueError:
        return None


def _all_valid(masks: List[Optional[np.ndarray]], batch: int, length: int) -> np.ndarray:
    valid = np.ones((batch, length), bool)
    for mask in masks:
        if mask is not None:
            valid &= mask
    return valid


def _as_map(path, layer, weights, arguments) -> Optional[AttentionMap]:
    weights = np.asarray(keras.ops.convert_to_numpy(weights), dtype=np.float32)
    rank = weights.ndim
    if rank not in (2, 3, 4):
        warnings.warn(
            f"Expected attention weights of rank 2, 3 or 4 from layer `{path}`, "
            f"received: weights.shape={weights.shape}; the layer is left out of "
            "the attention maps."
        )
        return None
    multi_head = rank == 4
    # (B, T) -> (B, 1, 1, T); (B, Tq, Tk) -> (B, 1, Tq, Tk).
    weights = weights.reshape(weights.shape[:1] + (1,) * (4 - rank) + weights.shape[1:])
    batch, _, query_length, key_length = weights.shape
    query_masks = [arguments.get(name) for name in QUERY_MASK_ARGS]
    key_masks = [arguments.get(name) for name in KEY_MASK_ARGS]
    mask = arguments.get("mask")
    if isinstance(layer, keras.layers.Attention) and isinstance(mask, (list, tuple)):
        # keras.layers.Attention takes `mask=[query_mask, value_mask]`.
        query_masks.append(mask[0])
        key_masks.append(mask[1] if len(mask) > 1 else None)
    query_valid = _all_valid(
        [_padding(m, batch, query_length) for m in query_masks], batch, query_length
    )
    key_valid = _all_valid([_padding(m, batch, key_length) for m in key_masks], batch, key_length)
    masked = (
        ~query_valid[:, None, :, None]
        | ~key_valid[:, None, None, :]
        | (weights == 0)
    )
    return AttentionMap(path=path, weights=weights, multi_head=multi_head, masked=masked)


@contextlib.contextmanager
def calls_replaced(replacements) -> Iterator[None]:
    """Shadows each `layer.call` of `(layer, call)` pairs by a plain instance
    attribute for the block, and restores it after."""
    saved = []
    try:
        for layer, call in replacements:
            saved.append((layer, "call" in vars(layer), vars(layer).get("call")))
            # object.__setattr__: an attribute Keras does not track, so the
            # model itself is not changed.
            object.__setattr__(layer, "call", call)
        yield
    finally:
        for layer, had_own, own in reversed(saved):
            if had_own:
                object.__setattr__(layer, "call", own)
            else:
                object.__delattr__(layer, "call")


def forcing_scores(layer: keras.layers.Layer,
                   on_call: Callable[[Any, Dict[str, Any]], None]) -> Callable:
    """A replacement for `layer.call` that asks for the attention scores.

    Each call passes the layer's full outputs and its bound arguments to
    `on_call`, then returns what the caller asked for: a caller that asked
    for the scores itself (a block returning its attention's scores) still
    gets them.
    """
    original = layer.call
    signature = inspect.signature(original)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        wanted = bound.arguments.get("return_attention_scores", False)
        bound.arguments["return_attention_scores"] = True
        outputs = original(*bound.args, **bound.kwargs)
        on_call(outputs, dict(bound.arguments))
        return outputs if wanted else outputs[0]

    return call


def collect_attention(
    model: keras.layers.Layer,
    inputs: Any,
    layers: Optional[List[Tuple[str, keras.layers.Layer]]] = None,
) -> List[AttentionMap]:
    """Runs `model(inputs, training=False)` eagerly and returns the attention
    maps of its attention layers, in the order they were called.

    Args:
        model: a built Keras model (or layer).
        inputs: what `model` is called with.
        layers: `(path, layer)` pairs to collect from; defaults to
            `find_attention_layers(model)`.

    Returns:
        A list of `AttentionMap`, one per call of each attention layer (and
        per weights tensor, for a layer that returns several).
    """
    if layers is None:
        layers = find_attention_layers(model)
    calls: Dict[int, List[Tuple[Any, Dict[str, Any]]]] = {id(layer): [] for _, layer in layers}

    def keep(path, layer):
        def on_call(outputs, arguments):
            if not isinstance(outputs, (tuple, list)) or len(outputs) < 2:
                raise ValueError(
                    f"Expected layer `{path}` called with return_attention_scores=True "
                    "to return (outputs, scores, ...), received: "
                    f"{type(outputs).__name__}"
                )
            calls[id(layer)].append((outputs[1:], arguments))

        return on_call

    with calls_replaced([(layer, forcing_scores(layer, keep(path, layer)))
                         for path, layer in layers]):
        model(inputs, training=False)

    maps = []
    for path, layer in layers:
        layer_calls = calls[id(layer)]
        for k, (all_weights, arguments) in enumerate(layer_calls):
            call_path = path if len(layer_calls) == 1 else f"{path}/call_{k}"
            for i, weights in enumerate(all_weights):
                map_path = call_path if len(all_weights) == 1 else f"{call_path}/scores_{i}"
                attention_map = _as_map(map_path, layer, weights, arguments)
                if attention_map is not None:
                    maps.append(attention_map)
    return maps


def mean_entropy(attention_map: AttentionMap) -> Optional[float]:
    """Mean entropy, in nats, of the attention distributions of a map.

    The mean runs over examples, heads and query rows that are not entirely
    masked (padded queries are left out); a row's entropy is `-Σ w log w`
    over its keys, between 0 (all weight on one key) and `log(n)` (uniform
    over `n` keys; masked keys get zero weight and add nothing). `None` when
    the weights are not distributions (some negative, or rows not summing to
    1, as with un-normalised scores).
    """
    weights = attention_map.weights
    rows = ~attention_map.masked.all(-1)
    if (weights < 0).any() or not rows.any():
        return None
    if not np.allclose(weights.sum(-1)[rows], 1.0, atol=1e-2):
        return None
    safe = np.where(weights > 0, weights, 1.0)
    entropy = -(weights * np.log(safe)).sum(-1)
    return float(entropy[rows].mean())
