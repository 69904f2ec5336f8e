"""Explanations: one score per input position for a chosen output of a model.

Every method takes a Keras model built from `kerasattn` layers and a batch of
its inputs, and returns float64 scores `(B, T)` with exactly 0 at padding.
The attention methods read the layers' own weights (through
`return_attention_scores`); the gradient methods differentiate the chosen
output with respect to those weights or to the token embeddings.
`cross_attention` is the one that scores pairs: for each query position of an
encoder–decoder, float64 `(B, Tq, Tk)` over the key positions.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import keras
import numpy as np

from kerasattn.explain import _graph
from kerasattn.explain._trace import ClassTarget
from kerasattn.explain._trace import Trace
from kerasattn.explain._trace import find_embedding_layer
from kerasattn.explain._trace import trace

METHODS = (
    "raw_attention",
    "rollout",
    "flow",
    "gradient_rollout",
    "input_x_gradient",
    "integrated_gradients",
    "random",
)

Target = Union[None, int, Sequence[int], np.ndarray, Callable[[Any], Any]]
Position = Union[None, int, Sequence[int], np.ndarray]


def padding_of(inputs: Any, padding_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """The boolean `(B, T)` mask of real positions of a batch.

    Args:
        inputs: the model's inputs: a dict with `"padding_mask"` (the zoo's
            text models), or an integer `(B, T)` array of token ids (0 being
            padding).
        padding_mask: optional explicit mask; `True` at real positions.

    Returns:
        `padding_mask` as bool, else the one found in `inputs`.
    """
    if padding_mask is not None:
        return np.asarray(padding_mask, bool)
    if isinstance(inputs, dict) and "padding_mask" in inputs:
        return np.asarray(keras.ops.convert_to_numpy(inputs["padding_mask"]), bool)
    array = inputs if not isinstance(inputs, dict) else next(iter(inputs.values()))
    array = np.asarray(keras.ops.convert_to_numpy(array))
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "Expected a dict with 'padding_mask', integer (B, T) token ids, or a "
            f"`padding_mask`, received: inputs of shape {array.shape} and dtype {array.dtype}"
        )
    return array != 0


def _batch_size(inputs: Any) -> int:
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    return int(keras.ops.shape(first)[0])


def _repeat(inputs: Any, times: int) -> Any:
    def repeat(x):
        return np.repeat(np.asarray(keras.ops.convert_to_numpy(x)), times, axis=0)

    if isinstance(inputs, dict):
        return {key: repeat(value) for key, value in inputs.items()}
    return repeat(inputs)


def predicted_classes(model: keras.layers.Layer, inputs: Any) -> np.ndarray:
    """The argmax of the model's `(B, C)` outputs, int `(B,)`."""
    outputs = trace(model, inputs, attention=False).outputs
    if outputs is None or outputs.ndim != 2:
        raise ValueError(
            "Expected a model with (B, num_classes) outputs for a class target, received: "
            "other outputs; pass `target` as a function of the outputs"
        )
    return np.argmax(outputs, axis=-1)


def target_function(model: keras.layers.Layer, inputs: Any, target: Target,
                    repeats: int = 1) -> Union[ClassTarget, Callable[[Any], Any]]:
    """The function from the model's outputs to the `(B,)` values explained.

    Args:
        model, inputs: the model and the batch explained.
        target: a function of the outputs (used as given); a class index or
            one per example (that class's logit); `None` for each example's
            predicted class.
        repeats: how many consecutive copies of each example the batch the
            function will see holds (Integrated Gradients' path points).
    """
    if callable(target):
        return target
    if target is None and repeats == 1:
        return ClassTarget(None)  # read from the same forward pass
    batch = _batch_size(inputs)
    if target is None:
        classes = predicted_classes(model, inputs)
    else:
        classes = np.broadcast_to(np.asarray(target, np.int64), (batch,))
    return ClassTarget(np.repeat(classes, repeats).astype(np.int32))


def _positions(position: Position, batch: int) -> list:
    if position is None:
        return [None] * batch
    return list(np.broadcast_to(np.asarray(position, np.int64), (batch,)))


def _steps(trace_result: Trace, example: int, relevance: bool) -> list:
    """The propagation steps (`_graph`) of one example of a trace."""
    steps = []
    for record in trace_result.records:
        if record.kind == "other":
            continue
        weights = record.weights[example].astype(np.float64)  # (N, Tq, Tk)
        if relevance and record.kind != "layers":
            # Chefer et al. 2021: the positive part of gradient x attention,
            # averaged over heads.
            weights = np.maximum(record.gradients[example] * weights, 0.0)
        if record.kind == "self":
            steps.append(("self", weights.mean(0)))
        elif record.kind == "layers":
            steps.append(("layers", weights[0]))
        else:
            steps.append(("readout", weights.mean(0).mean(0)))
    return steps


def _propagated(trace_result: Trace, valid: np.ndarray, position: Position,
                rule: str) -> np.ndarray:
    scores = np.zeros(valid.shape)
    for b, where in enumerate(_positions(position, valid.shape[0])):
        steps = _steps(trace_result, b, relevance=rule == "relevance")
        scores[b] = _graph.propagate(steps, valid.shape[1], rule=rule, position=where)
    return np.where(valid, scores, 0.0)


def raw_attention(model: keras.layers.Layer, inputs: Any, *, layer: Optional[str] = None,
                  padding_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """One attention layer's weights as the scores.

    Args:
        model: a Keras model built from `kerasattn` layers.
        inputs: a batch of its inputs.
        layer: the path of the attention layer to read (as
            `kerasattn.callbacks` names maps, e.g.
            `"backbone/attention_pooling"`); defaults to the last readout
            (pooling), else the last self-attention.
        padding_mask: optional `(B, T)` mask of real positions.

    Returns:
        float64 `(B, T)`: the weights averaged over heads (and, for a
        self-attention, the attention each key receives averaged over the
        real queries).

    Example:

    >>> scores = raw_attention(model, inputs)  # doctest: +SKIP
    """
    valid = padding_of(inputs, padding_mask)
    records = trace(model, inputs).records
    if layer is not None:
        chosen = [r for r in records if r.path == layer]
        if not chosen:
            raise ValueError(f"Expected `layer` to be one of {[r.path for r in records]}, "
                             f"received: layer={layer!r}")
    else:
        chosen = ([r for r in records if r.kind == "readout"]
                  or [r for r in records if r.kind == "self"])
        if not chosen:
            raise ValueError("Expected a model with a pooling or self-attention layer, "
                             "received: none among its attention layers")
    weights = chosen[-1].weights.astype(np.float64).mean(1)  # (B, Tq, Tk)
    if weights.shape[-1] != valid.shape[1]:
        raise ValueError(
            f"Expected layer `{chosen[-1].path}` to attend over the {valid.shape[1]} input "
            f"positions, received: weights over {weights.shape[-1]}"
        )
    if weights.shape[1] == 1:
        scores = weights[:, 0]
    else:
        queries = valid[:, :, None].astype(np.float64)
        scores = (weights * queries).sum(1) / np.maximum(queries.sum(1), 1.0)
    return np.where(valid, scores, 0.0)


CROSS_ATTENTION_LAYERS = ("last", "mean")


def cross_attention(model: keras.layers.Layer, inputs: Any, padding_mask: np.ndarray, *,
                    layers: str = "last") -> np.ndarray:
    """An alignment from the cross-attention of an encoder–decoder.

    The weights of the layers that attend from one sequence to another (a
    decoder's cross-attention, multi-head or additive), averaged over heads:
    for each query position (a target token), a distribution over the key
    positions (the source tokens).

    Args:
        model: a Keras model built from `kerasattn` layers, with at least
            one cross-attention layer.
        inputs: a batch of its inputs.
        padding_mask: bool `(B, Tk)`, `True` at the real key positions.
        layers: `"last"` for the last cross-attention layer the model runs,
            `"mean"` for the mean over all of them.

    Returns:
        float64 `(B, Tq, Tk)`: each row non-negative, 0 at padding and
        summing to 1 over the real keys.

    Example:

    >>> alignment = cross_attention(translator, features,
    ...                             features["encoder_padding_mask"])  # doctest: +SKIP
    """
    if layers not in CROSS_ATTENTION_LAYERS:
        raise ValueError(f"Expected `layers` in {CROSS_ATTENTION_LAYERS}, "
                         f"received: layers={layers!r}")
    valid = np.asarray(padding_mask, bool)
    records = [r for r in trace(model, inputs).records
               if r.kind == "other" and r.weights.shape[-1] == valid.shape[-1]]
    if valid.ndim != 2 or not records:
        raise ValueError(
            f"Expected a model with a cross-attention over the {valid.shape[-1]} positions of "
            f"`padding_mask`, received: padding_mask of shape {valid.shape} and "
            f"{len(records)} such layers")
    maps = [record.weights.astype(np.float64).mean(1) for record in records]  # (B, Tq, Tk)
    weights = maps[-1] if layers == "last" else np.mean(maps, axis=0)
    weights = np.where(valid[:, None, :], weights, 0.0)
    return weights / np.maximum(weights.sum(-1, keepdims=True), 1e-12)


def attention_rollout(model: keras.layers.Layer, inputs: Any, *, position: Position = None,
                      padding_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020).

    Each self-attention map, averaged over heads, is mixed with the identity
    for the residual connection (`0.5 A + 0.5 I`, rows renormalised) and the
    maps are multiplied in the order the model runs them; a
    `CrossLayerAttention` mixes the rollouts of the states it fuses, and a
    pooling (`AttentionPooling`, `TargetAttention`) reads the result out.

    Args:
        model: a Keras model built from `kerasattn` layers.
        inputs: a batch of its inputs.
        position: for a model without a pooling, the output position to
            explain (one for all, or one per example).
        padding_mask: optional `(B, T)` mask of real positions.

    Returns:
        float64 `(B, T)`, non-negative, summing to 1 over the real positions
        of each example with a readout.

    Example:

    >>> scores = attention_rollout(model, inputs)  # doctest: +SKIP
    """
    valid = padding_of(inputs, padding_mask)
    return _propagated(trace(model, inputs), valid, position, "rollout")


def attention_flow(model: keras.layers.Layer, inputs: Any, *, position: Position = None,
                   padding_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Attention flow (Abnar & Zuidema 2020): max-flow through the attention graph.

    The graph is rollout's (`attention_rollout`), with an input's score the
    maximum flow from its node to the output (networkx). Affordable for
    short inputs only: one max-flow per input position over up to `T^2`
    edges per layer; with dense attention a 25-token example through 3
    layers takes 0.6 s of CPU, 50 tokens 4.3 s, and 100 tokens through 12
    layers minutes (see `_graph.flow`).

    Args:
        model, inputs, position, padding_mask: as for `attention_rollout`.

    Returns:
        float64 `(B, T)`, non-negative.

    Example:

    >>> scores = attention_flow(model, inputs)  # doctest: +SKIP
    """
    valid = padding_of(inputs, padding_mask)
    trace_result = trace(model, inputs)
    scores = np.zeros(valid.shape)
    for b, where in enumerate(_positions(position, valid.shape[0])):
        steps = _steps(trace_result, b, relevance=False)
        scores[b] = _graph.flow(steps, valid.shape[1], position=where, valid=valid[b])
    return scores


def gradient_weighted_rollout(model: keras.layers.Layer, inputs: Any, *, target: Target = None,
                              position: Position = None,
                              padding_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Gradient-weighted attention rollout (Chefer et al. 2021), class-specific.

    Every attention map `A` becomes `mean_heads(max(dA * A, 0))`, with `dA`
    the gradient of the explained output (a class's logit) with respect to
    `A`, and relevance accumulates as `R <- R + A R` from the identity; the
    pooling's map, weighted the same way, reads it out. A
    `CrossLayerAttention` mixes the relevance of the states it fuses by its
    plain weights (a mixture, not an attention over tokens).

    Args:
        model, inputs, position, padding_mask: as for `attention_rollout`.
        target: the output explained: a class index (or one per example),
            `None` for the predicted class, or a function from the model's
            outputs to a `(B,)` tensor.

    Returns:
        float64 `(B, T)`, non-negative.

    Example:

    >>> scores = gradient_weighted_rollout(model, inputs, target=1)  # doctest: +SKIP
    """
    valid = padding_of(inputs, padding_mask)
    trace_result = trace(model, inputs, target=target_function(model, inputs, target))
    return _propagated(trace_result, valid, position, "relevance")


def _embedding_layer(model, embedding_layer):
    return find_embedding_layer(model) if embedding_layer is None else embedding_layer


def input_x_gradient(model: keras.layers.Layer, inputs: Any, *, target: Target = None,
                     embedding_layer: Optional[keras.layers.Layer] = None,
                     padding_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Input x gradient on the token embeddings, summed over the width.

    Args:
        model, inputs, target, padding_mask: as for
            `gradient_weighted_rollout`.
        embedding_layer: the layer whose output is the embeddings; defaults
            to the model's first `keras.layers.Embedding`.

    Returns:
        float64 `(B, T)`, signed: positive where the token raises the output.

    Example:

    >>> scores = input_x_gradient(model, inputs, target=1)  # doctest: +SKIP
    """
    valid = padding_of(inputs, padding_mask)
    result = trace(model, inputs, target=target_function(model, inputs, target),
                   attention=False, embedding_layer=_embedding_layer(model, embedding_layer))
    scores = (result.embeddings * result.embedding_gradients).sum(-1)
    return np.where(valid, scores, 0.0)


def _baseline_embeddings(layer: keras.layers.Layer, baseline: Union[None, int, np.ndarray],
                         embeddings: np.ndarray) -> np.ndarray:
    """The baseline as an array of the embeddings' shape."""
    if baseline is None:
        return np.zeros_like(embeddings)
    if isinstance(baseline, (int, np.integer)):
        table = getattr(layer, "embeddings", None)
        if table is None:
            raise ValueError("Expected an embedding layer with an `embeddings` table for a "
                             f"token-id baseline, received: {type(layer).__name__}")
        vector = np.asarray(keras.ops.convert_to_numpy(table), np.float64)[int(baseline)]
        return np.broadcast_to(vector, embeddings.shape)
    try:
        return np.broadcast_to(np.asarray(baseline, np.float64), embeddings.shape)
    except ValueError:
        raise ValueError(f"Expected a `baseline` broadcastable to the embeddings' shape "
                         f"{embeddings.shape}, received: shape={np.shape(baseline)}") from None


def _slice(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, dict):
        return {key: np.asarray(keras.ops.convert_to_numpy(value))[start:stop]
                for key, value in inputs.items()}
    return np.asarray(keras.ops.convert_to_numpy(inputs))[start:stop]


def integrated_gradients(model: keras.layers.Layer, inputs: Any, *, target: Target = None,
                         baseline: Union[None, int, np.ndarray] = None, steps: int = 32,
                         embedding_layer: Optional[keras.layers.Layer] = None,
                         padding_mask: Optional[np.ndarray] = None,
                         batch_size: int = 512) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017) on the token embeddings.

    The embeddings `e` are moved along the straight path from a baseline
    `e0`; the gradient is integrated along it by Gauss-Legendre quadrature
    at `steps` points and multiplied by `e - e0`. Summed over all positions,
    the scores are then about `f(e) - f(e0)` (completeness), closer as
    `steps` grows. Zero embeddings make a poor baseline for a model that
    normalises its inputs (LayerNorm): the path then starts inside the
    norm's epsilon, where `f` jumps; a token's embedding (the pad or mask
    token) keeps the path smooth.

    Args:
        model, inputs, target, embedding_layer, padding_mask: as for
            `input_x_gradient`.
        baseline: `None` for zero embeddings, a token id for that token's
            embedding at every position (such as the pad or mask token), or
            an array broadcastable to the `(B, T, d)` embeddings.
        steps: positive number of path points.
        batch_size: how many path points run in one forward pass.

    Returns:
        float64 `(B, T)`, signed.

    Example:

    >>> scores = integrated_gradients(model, inputs, target=1, steps=32)  # doctest: +SKIP
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"Expected `steps` to be a positive integer, received: steps={steps!r}")
    valid = padding_of(inputs, padding_mask)
    layer = _embedding_layer(model, embedding_layer)
    embeddings = trace(model, inputs, attention=False, embedding_layer=layer).embeddings
    origin = _baseline_embeddings(layer, baseline, embeddings)
    classes = None
    if not callable(target):
        classes = (predicted_classes(model, inputs) if target is None
                   else np.broadcast_to(np.asarray(target, np.int64), (valid.shape[0],)))
    # Gauss-Legendre nodes and weights on [0, 1] (as Captum's default): far
    # closer to the integral than as many evenly spaced points.
    nodes, node_weights = np.polynomial.legendre.leggauss(steps)
    alphas, node_weights = (nodes + 1) / 2, node_weights / 2
    per_chunk = max(1, batch_size // steps)
    scores = np.zeros(valid.shape)
    for start in range(0, valid.shape[0], per_chunk):
        stop = min(start + per_chunk, valid.shape[0])
        chunk = _slice(inputs, start, stop)
        chunk_target = target if classes is None else target_function(
            model, chunk, classes[start:stop], repeats=steps)
        e, e0 = embeddings[start:stop], origin[start:stop]
        # (size * steps, T, d): each example's path points, consecutive.
        points = (e0[:, None] + alphas[None, :, None, None] * (e - e0)[:, None]).reshape(
            (-1,) + e.shape[1:])
        result = trace(model, _repeat(chunk, steps), target=chunk_target, attention=False,
                       embedding_layer=layer, embedding_transform=points.astype(np.float32))
        gradients = result.embedding_gradients.reshape((stop - start, steps) + e.shape[1:])
        path_gradient = np.einsum("s,bs...->b...", node_weights, gradients)
        scores[start:stop] = (path_gradient * (e - e0)).sum(-1)
    return np.where(valid, scores, 0.0)


def random_scores(padding_mask: np.ndarray, seed: int) -> np.ndarray:
    """Uniform random scores at the real positions: the baseline every method must beat.

    Args:
        padding_mask: boolean `(B, T)`, `True` at real positions.
        seed: the random seed; the same seed gives the same scores.

    Returns:
        float64 `(B, T)` in [0, 1), 0 at padding.

    Example:

    >>> random_scores(np.array([[True, True, False]]), seed=0).shape
    (1, 3)
    """
    valid = np.asarray(padding_mask, bool)
    if valid.ndim != 2:
        raise ValueError(f"Expected a (B, T) `padding_mask`, received: shape={valid.shape}")
    return np.where(valid, np.random.default_rng(seed).random(valid.shape), 0.0)


def explain(model: keras.layers.Layer, inputs: Any, method: str = "gradient_rollout", *,
            target: Target = None, position: Position = None,
            padding_mask: Optional[np.ndarray] = None, seed: int = 0, steps: int = 32,
            baseline: Union[None, int, np.ndarray] = None) -> np.ndarray:
    """Scores of the input positions by any of `METHODS`.

    Args:
        model: a Keras model built from `kerasattn` layers.
        inputs: a batch of its inputs.
        method: one of `METHODS`.
        target: the output explained (see `gradient_weighted_rollout`); the
            attention methods other than gradient-weighted rollout explain
            the model's output as a whole and ignore it.
        position: the output position for a model without a pooling.
        padding_mask: optional `(B, T)` mask of real positions.
        seed: the random method's seed.
        steps, baseline: Integrated Gradients' path.

    Returns:
        float64 `(B, T)`, 0 at padding.

    Example:

    >>> scores = explain(model, inputs, "rollout")  # doctest: +SKIP
    """
    if method == "raw_attention":
        return raw_attention(model, inputs, padding_mask=padding_mask)
    if method == "rollout":
        return attention_rollout(model, inputs, position=position, padding_mask=padding_mask)
    if method == "flow":
        return attention_flow(model, inputs, position=position, padding_mask=padding_mask)
    if method == "gradient_rollout":
        return gradient_weighted_rollout(model, inputs, target=target, position=position,
                                         padding_mask=padding_mask)
    if method == "input_x_gradient":
        return input_x_gradient(model, inputs, target=target, padding_mask=padding_mask)
    if method == "integrated_gradients":
        return integrated_gradients(model, inputs, target=target, steps=steps,
                                    baseline=baseline, padding_mask=padding_mask)
    if method == "random":
        return random_scores(padding_of(inputs, padding_mask), seed)
    raise ValueError(f"Expected `method` to be one of {METHODS}, received: method={method!r}")
