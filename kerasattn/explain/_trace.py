"""One forward pass of a model that records its attention and embeddings,
with the gradients of a chosen output with respect to them.

The attention layers are found and wrapped as `kerasattn.callbacks`' attention
maps are (an instance attribute shadows each layer's `call` for the one pass
and asks it for `return_attention_scores`); the token embedding layer is
wrapped the same way, so Integrated Gradients can replace its output. Nothing
here knows a particular model.

Gradients are the one backend-specific part: `_gradient_tape` is TensorFlow's
`GradientTape` (the backend the zoo runs on and exports from); the recording
and everything after it use Keras and NumPy only. Under another backend the
methods that need no gradient still run, and the ones that do raise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Callable, Iterator, List, Optional

import keras
import numpy as np

from kerasattn.callbacks._collect import find_attention_layers
from kerasattn.layers import AttentionPooling
from kerasattn.layers import CrossLayerAttention
from kerasattn.layers import TargetAttention
from kerasattn.ops.masking import bounded_masking

TargetFunction = Callable[[Any], Any]


@dataclasses.dataclass
class AttentionRecord:
    """One call of one attention layer.

    Attributes:
        path: the layer's path in the model.
        kind: `"self"` (self-attention: the query is the value), `"layers"`
            (`CrossLayerAttention`), `"readout"` (`AttentionPooling`,
            `TargetAttention`), or `"other"` (cross-attention, left out of
            rollout and flow).
        weights: float `(B, N, Tq, Tk)`; `N = 1` without heads, `Tq = 1`
            for a single-query readout.
        gradients: the target's gradient with respect to `weights`, same
            shape, or `None` when none was asked for.
    """

    path: str
    kind: str
    weights: np.ndarray
    gradients: Optional[np.ndarray] = None


@dataclasses.dataclass
class Trace:
    """What one recorded pass returns.

    Attributes:
        records: the attention layers' calls in the order they ran.
        targets: float `(B,)` target values, or `None` without a target.
        embeddings: float `(B, T, d)` token embeddings as the model used
            them (after `embedding_transform`), or `None`.
        embedding_gradients: the target's gradient with respect to them.
    """

    records: List[AttentionRecord]
    targets: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None
    embedding_gradients: Optional[np.ndarray] = None


def _layer_kind(layer, arguments: dict) -> str:
    if isinstance(layer, CrossLayerAttention):
        return "layers"
    if isinstance(layer, (AttentionPooling, TargetAttention)):
        return "readout"
    query, value = arguments.get("query"), arguments.get("value")
    if query is not None and (value is None or value is query):
        return "self"
    return "other"


def _as_4d(weights: np.ndarray) -> np.ndarray:
    # (B, T) -> (B, 1, 1, T); (B, Tq, Tk) -> (B, 1, Tq, Tk).
    return weights.reshape(weights.shape[:1] + (1,) * (4 - weights.ndim) + weights.shape[1:])


def find_embedding_layer(model: keras.layers.Layer) -> keras.layers.Embedding:
    """The first `keras.layers.Embedding` of `model`, searched depth-first.

    Raises:
        ValueError: if the model has none.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Embedding):
            return layer
    raise ValueError(
        "Expected a model with a keras.layers.Embedding for the gradient methods "
        f"(or an `embedding_layer`), received: a {type(model).__name__} without one"
    )


@contextlib.contextmanager
def _gradient_tape(enabled: bool) -> Iterator[Any]:
    """TensorFlow's `GradientTape`, or `None` when no gradient is asked for."""
    if not enabled:
        yield None
        return
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Expected the TensorFlow backend for the gradient methods of kerasattn.explain, "
            f"received: keras.backend.backend()={keras.backend.backend()!r}"
        )
    import tensorflow as tf

    with tf.GradientTape() as tape:
        yield tape


@contextlib.contextmanager
def _calls_replaced(replacements) -> Iterator[None]:
    """Shadows each `layer.call` by a plain instance attribute for the block."""
    saved = []
    try:
        for layer, call in replacements:
            saved.append((layer, "call" in vars(layer), vars(layer).get("call")))
            # object.__setattr__: not tracked by Keras, so the model is unchanged.
            object.__setattr__(layer, "call", call)
        yield
    finally:
        for layer, had_own, own in reversed(saved):
            if had_own:
                object.__setattr__(layer, "call", own)
            else:
                object.__delattr__(layer, "call")


def _readout_gradient(output_gradient, weights, output, inputs) -> Optional[np.ndarray]:
    """d target / d weights of a layer that pools its input, `output = sum_t w_t x_t`.

    A single-query pooling returns a slice of the weights it applied, which
    lies outside the path to the output; its gradient is `g . x_t` with `g`
    the gradient at the output, once the identity is checked to hold.
    """
    weights = np.asarray(weights, np.float64)
    x = np.asarray(keras.ops.convert_to_numpy(inputs), np.float64)
    pooled = np.asarray(keras.ops.convert_to_numpy(output), np.float64)
    if weights.ndim != 2 or x.ndim != 3 or pooled.shape != (x.shape[0], x.shape[2]):
        return None
    if not np.allclose(np.einsum("bt,btd->bd", weights, x), pooled, rtol=1e-3, atol=1e-5):
        return None
    if output_gradient is None:
        return None
    return np.einsum("bd,btd->bt", keras.ops.convert_to_numpy(output_gradient), x)


def trace(
    model: keras.layers.Layer,
    inputs: Any,
    target: Optional[TargetFunction] = None,
    attention: bool = True,
    embedding_layer: Optional[keras.layers.Layer] = None,
    embedding_transform: Optional[Callable[[Any], Any]] = None,
) -> Trace:
    """Runs `model(inputs, training=False)` once, recording what is asked for.

    Args:
        model: a built Keras model made of `kerasattn` layers.
        inputs: what the model is called with.
        target: optional function from the model's outputs to a `(B,)`
            tensor; with it the gradients of its sum are recorded (per
            example, the examples being independent).
        attention: whether to record the attention layers.
        embedding_layer: a layer whose output to record (and transform);
            `None` records no embeddings.
        embedding_transform: optional function applied to the embedding
            layer's output before the model uses it (Integrated Gradients'
            interpolation).

    Returns:
        A `Trace`.
    """
    attention_layers = find_attention_layers(model) if attention else []
    recorded: List[tuple] = []
    embedded: List[Any] = []
    with _gradient_tape(target is not None) as tape:

        def watch(tensor):
            if tape is not None:
                tape.watch(tensor)
            return tensor

        def attention_call(path, layer):
            original = layer.call
            signature = inspect.signature(original)

            def call(*args, **kwargs):
                bound = signature.bind(*args, **kwargs)
                wanted = bound.arguments.get("return_attention_scores", False)
                bound.arguments["return_attention_scores"] = True
                outputs = original(*bound.args, **bound.kwargs)
                recorded.append((path, layer, dict(bound.arguments), outputs[0],
                                 watch(outputs[1])))
                return outputs if wanted else outputs[0]

            return call

        def embedding_call(layer):
            original = layer.call

            def call(*args, **kwargs):
                output = original(*args, **kwargs)
                if embedding_transform is not None:
                    output = embedding_transform(output)
                embedded.append(watch(output))
                return output

            return call

        replacements = [(layer, attention_call(path, layer)) for path, layer in attention_layers]
        if embedding_layer is not None:
            replacements.append((embedding_layer, embedding_call(embedding_layer)))
        # Bounded masking: the attention weights a layer returns are then the
        # very tensor it applied, so gradients with respect to them exist.
        with _calls_replaced(replacements), bounded_masking():
            outputs = model(inputs, training=False)
            target_values = None if target is None else target(outputs)
            target_sum = None if target is None else keras.ops.sum(target_values)

    if len(embedded) > 1:
        raise ValueError(
            f"Expected the embedding layer `{embedding_layer.name}` to be called once, "
            f"received: {len(embedded)} calls"
        )
    gradients: List[Any] = []
    if tape is not None:
        # One backward pass for every source: the weights, each readout's
        # output (for `_readout_gradient`) and the embeddings.
        sources = ([weights for *_, weights in recorded]
                   + [output for _, _, _, output, _ in recorded] + embedded)
        gradients = tape.gradient(target_sum, sources)
    records = []
    for index, (path, layer, arguments, output, weights) in enumerate(recorded):
        kind = _layer_kind(layer, arguments)
        weights_array = np.asarray(keras.ops.convert_to_numpy(weights), np.float32)
        grad = None
        if tape is not None:
            grad = gradients[index]
            if grad is not None:
                grad = np.asarray(keras.ops.convert_to_numpy(grad), np.float32)
            elif kind == "readout":
                grad = _readout_gradient(gradients[len(recorded) + index], weights_array,
                                         output, arguments.get("inputs", arguments.get("value")))
            if grad is None and kind != "other":
                raise ValueError(
                    f"Expected the output to depend on the attention weights of layer "
                    f"`{path}`, received: no gradient with respect to them"
                )
        records.append(AttentionRecord(
            path=path, kind=kind, weights=_as_4d(weights_array),
            gradients=None if grad is None else _as_4d(np.asarray(grad, np.float32)),
        ))
    trace_result = Trace(records=records)
    if target is not None:
        trace_result.targets = np.asarray(keras.ops.convert_to_numpy(target_values), np.float64)
    if embedded:
        trace_result.embeddings = np.asarray(keras.ops.convert_to_numpy(embedded[0]), np.float64)
        if tape is not None:
            if gradients[-1] is None:
                raise ValueError(
                    f"Expected the output to depend on the embedding layer "
                    f"`{embedding_layer.name}`, received: no gradient with respect to it"
                )
            trace_result.embedding_gradients = np.asarray(
                keras.ops.convert_to_numpy(gradients[-1]), np.float64)
    return trace_result
