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
import weakref
from typing import Any, Callable, Iterator, List, Optional, Union

import keras
import numpy as np

from kerasattn.callbacks._collect import calls_replaced
from kerasattn.callbacks._collect import find_attention_layers
from kerasattn.callbacks._collect import forcing_scores
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
        outputs: the model's outputs when they are one tensor, else `None`.
    """

    records: List[AttentionRecord]
    targets: Optional[np.ndarray] = None
    outputs: Optional[np.ndarray] = None
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


# Relative tolerance of `_readout_gradient`'s identity check, by the output's dtype.
_IDENTITY_TOLERANCE = {"bfloat16": 2e-2, "float16": 4e-3}


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
    # The identity holds to the output's precision (a mixed-precision pooling's).
    tolerance = _IDENTITY_TOLERANCE.get(keras.backend.standardize_dtype(output.dtype), 1e-3)
    if not np.allclose(np.einsum("bt,btd->bd", weights, x), pooled, rtol=tolerance,
                       atol=tolerance / 100):
        return None
    if output_gradient is None:
        return None
    return np.einsum("bd,btd->bt", keras.ops.convert_to_numpy(output_gradient), x)


@dataclasses.dataclass(frozen=True)
class ClassTarget:
    """The logit of a class per example as the explained output.

    Attributes:
        classes: int `(B,)`, or `None` for each example's predicted class
            (the argmax of the same forward pass).
    """

    classes: Optional[np.ndarray] = None

    def __call__(self, outputs):
        if isinstance(outputs, (dict, list, tuple)) or len(outputs.shape) != 2:
            raise ValueError(
                "Expected a model with (B, num_classes) outputs for a class target, received: "
                f"{type(outputs).__name__} outputs; pass `target` as a function of the outputs"
            )
        if self.classes is None:
            chosen = keras.ops.expand_dims(keras.ops.argmax(outputs, axis=-1), -1)
        else:
            chosen = keras.ops.expand_dims(keras.ops.cast(self.classes, "int32"), -1)
        return keras.ops.take_along_axis(outputs, chosen, axis=-1)[:, 0]


def _record(model, inputs, attention_layers, target, embedding_layer, embedding_transform):
    """The body of one recorded pass, eager or traced: tensors, and per
    attention call its `(path, kind)`."""
    recorded: List[tuple] = []
    embedded: List[Any] = []
    with _gradient_tape(target is not None) as tape:

        def watch(tensor):
            if tape is not None:
                tape.watch(tensor)
            return tensor

        def attention_call(path, layer):
            def on_call(outputs, arguments):
                kind = _layer_kind(layer, arguments)
                pooled_input = (arguments.get("inputs", arguments.get("value"))
                                if kind == "readout" else None)
                recorded.append((path, kind, outputs[0], watch(outputs[1]), pooled_input))

            return forcing_scores(layer, on_call)

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
        with calls_replaced(replacements), bounded_masking():
            outputs = model(inputs, training=False)
            target_values = None if target is None else target(outputs)
            target_sum = None if target is None else keras.ops.sum(target_values)
    if len(embedded) > 1:
        raise ValueError(
            f"Expected the embedding layer `{embedding_layer.name}` to be called once, "
            f"received: {len(embedded)} calls"
        )
    gradients = None
    if tape is not None:
        # One backward pass for every source: the weights, each readout's
        # output (for `_readout_gradient`) and the embeddings.
        sources = ([r[3] for r in recorded] + [r[2] if r[1] == "readout" else r[3]
                                                for r in recorded] + embedded)
        gradients = tape.gradient(target_sum, sources)
    count = len(recorded)
    tensors = {
        "weights": [r[3] for r in recorded],
        "readout_outputs": [r[2] if r[1] == "readout" else None for r in recorded],
        "readout_inputs": [r[4] for r in recorded],
        "weight_gradients": None if gradients is None else gradients[:count],
        "output_gradients": None if gradients is None else [
            g if r[1] == "readout" else None
            for g, r in zip(gradients[count:2 * count], recorded)],
        "embeddings": embedded[0] if embedded else None,
        "embedding_gradients": None if gradients is None or not embedded else gradients[-1],
        "targets": target_values,
        "outputs": outputs if keras.ops.is_tensor(outputs) else None,
    }
    return tensors, [(r[0], r[1]) for r in recorded]


class _GraphRecorder:
    """`_record` traced once into a `tf.function` for one model and one set of options.

    Class targets and embedding values are inputs of the function, so that
    explaining another batch (another length, other classes) reuses it.
    """

    def __init__(self, model, attention_layers, embedding_layer, gradients: bool,
                 given_classes: bool, given_embeddings: bool):
        import tensorflow as tf

        self.metadata: List[tuple] = []

        def body(inputs, classes, embeddings):
            target = None
            if gradients:
                target = ClassTarget(classes if given_classes else None)
            transform = ((lambda output: keras.ops.cast(embeddings, output.dtype))
                         if given_embeddings else None)
            tensors, self.metadata = _record(model, inputs, attention_layers, target,
                                             embedding_layer, transform)
            return tensors

        self.function = tf.function(body, reduce_retracing=True)

    def __call__(self, inputs, classes, embeddings):
        return self.function(inputs, classes, embeddings), self.metadata


# Per model, its graph recorders by options (a model's layers do not change).
_RECORDERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _as_tensors(inputs):
    if isinstance(inputs, dict):
        return {key: keras.ops.convert_to_tensor(value) for key, value in inputs.items()}
    return keras.ops.convert_to_tensor(inputs)


def trace(
    model: keras.layers.Layer,
    inputs: Any,
    target: Union[None, ClassTarget, TargetFunction] = None,
    attention: bool = True,
    embedding_layer: Optional[keras.layers.Layer] = None,
    embedding_transform: Union[None, np.ndarray, Callable[[Any], Any]] = None,
) -> Trace:
    """Runs `model(inputs, training=False)` once, recording what is asked for.

    Under TensorFlow, with a `ClassTarget` (or no target) and embeddings
    given as an array (or none), the pass runs as a `tf.function` traced
    once per model and options; anything else runs eagerly.

    Args:
        model: a built Keras model made of `kerasattn` layers.
        inputs: what the model is called with.
        target: optional `ClassTarget`, or a function from the model's
            outputs to a `(B,)` tensor; with it the gradients of its sum are
            recorded (per example, the examples being independent).
        attention: whether to record the attention layers.
        embedding_layer: a layer whose output to record (and replace);
            `None` records no embeddings.
        embedding_transform: what the model uses instead of the embedding
            layer's output: an array of its shape, or a function of it
            (Integrated Gradients' path points).

    Returns:
        A `Trace`.
    """
    attention_layers = find_attention_layers(model) if attention else []
    graph = (keras.backend.backend() == "tensorflow"
             and (target is None or isinstance(target, ClassTarget))
             and (embedding_transform is None or isinstance(embedding_transform, np.ndarray)))
    if graph:
        given_classes = target is not None and target.classes is not None
        given_embeddings = embedding_transform is not None
        key = (attention, id(embedding_layer), target is not None, given_classes,
               given_embeddings)
        recorders = _RECORDERS.setdefault(model, {})
        if key not in recorders:
            recorders[key] = _GraphRecorder(model, attention_layers, embedding_layer,
                                            target is not None, given_classes, given_embeddings)
        classes = np.asarray(target.classes if given_classes else [0], np.int32)
        embeddings = (np.asarray(embedding_transform, np.float32) if given_embeddings
                      else np.zeros((1, 1, 1), np.float32))
        tensors, metadata = recorders[key](_as_tensors(inputs), classes, embeddings)
    else:
        if isinstance(embedding_transform, np.ndarray):
            values = embedding_transform
            embedding_transform = lambda output: keras.ops.cast(values, output.dtype)  # noqa: E731
        tensors, metadata = _record(model, inputs, attention_layers, target, embedding_layer,
                                    embedding_transform)
    return _to_trace(tensors, metadata, target is not None)


def _numpy(tensor, dtype=np.float64) -> Optional[np.ndarray]:
    return None if tensor is None else np.asarray(keras.ops.convert_to_numpy(tensor), dtype)


def _to_trace(tensors: dict, metadata: List[tuple], gradients: bool) -> Trace:
    records = []
    for index, (path, kind) in enumerate(metadata):
        weights = _numpy(tensors["weights"][index], np.float32)
        grad = None
        if gradients:
            grad = _numpy(tensors["weight_gradients"][index], np.float32)
            if grad is None and kind == "readout":
                grad = _readout_gradient(tensors["output_gradients"][index], weights,
                                         tensors["readout_outputs"][index],
                                         tensors["readout_inputs"][index])
            if grad is None and kind != "other":
                raise ValueError(
                    f"Expected the output to depend on the attention weights of layer "
                    f"`{path}`, received: no gradient with respect to them"
                )
        records.append(AttentionRecord(
            path=path, kind=kind, weights=_as_4d(weights),
            gradients=None if grad is None else _as_4d(np.asarray(grad, np.float32)),
        ))
    result = Trace(records=records, targets=_numpy(tensors["targets"]),
                   embeddings=_numpy(tensors["embeddings"]), outputs=_numpy(tensors["outputs"]))
    if gradients and tensors["embeddings"] is not None:
        if tensors["embedding_gradients"] is None:
            raise ValueError("Expected the output to depend on the embedding layer, "
                             "received: no gradient with respect to it")
        result.embedding_gradients = _numpy(tensors["embedding_gradients"])
    return result
