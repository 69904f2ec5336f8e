"""How layers trace: for an exported graph, and into a TensorFlow graph."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import keras

_EXPORT_GRAPH = contextvars.ContextVar("kerasattn_export_graph", default=False)


@contextlib.contextmanager
def flag_set(flag: contextvars.ContextVar) -> Iterator[None]:
    """Sets the boolean context variable `flag` for the duration of the context."""
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def export_graph() -> contextlib.AbstractContextManager:
    """Traces layers in the form their exported inference graphs run fastest.

    Where two forms compute the same values but train and export
    differently, layers traced inside this context (as `kerasattn.export`
    traces a model for its SavedModel and LiteRT files) take the export's:
    `kerasattn.layers`' dense projections of inputs of rank > 2 multiply by
    one einsum, which LiteRT converts to one `FULLY_CONNECTED`, instead of
    Keras's `tensordot`, whose shape arithmetic runs as small ops outside
    the XNNPACK delegate at dynamic lengths (and whose gradient TensorFlow
    computes faster, so training keeps it).
    """
    return flag_set(_EXPORT_GRAPH)


def export_graph_enabled() -> bool:
    return _EXPORT_GRAPH.get()


def tensorflow_graph() -> bool:
    """Whether `keras.ops` calls are being traced into a TensorFlow graph
    (`tf.function`, `model.fit`, an export) rather than run one by one.

    Where two forms of one computation differ in speed by execution mode —
    in eager execution every op costs a Python dispatch, in a graph the
    gradient's form weighs — layers ask this. False for other backends.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()
