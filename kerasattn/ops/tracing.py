"""How layers trace for an exported graph."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_EXPORT_GRAPH = contextvars.ContextVar("kerasattn_export_graph", default=False)


@contextlib.contextmanager
def export_graph() -> Iterator[None]:
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
    token = _EXPORT_GRAPH.set(True)
    try:
        yield
    finally:
        _EXPORT_GRAPH.reset(token)


def export_graph_enabled() -> bool:
    return _EXPORT_GRAPH.get()
