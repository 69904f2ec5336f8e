"""Raw-string serving: a preprocessor layer in front of the model.

With a preprocessor, the SavedModel gets a `serving_default` signature that
takes a `(B,)` string tensor `text`, runs the preprocessor and then the
model, beside the id signature `serving_ids`. TFLite and ONNX are converted
from the id signature; the preprocessor's vocabulary is written beside them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import keras
import numpy as np

from kerasattn.export._errors import ExportError
from kerasattn.export._inputs import Inputs, InputSpec, check_inputs, to_model_structure
from kerasattn.export._converters import first_line
from kerasattn.export._runtimes import IDS_SIGNATURE, SIGNATURE, STRING_INPUT

VOCABULARY_FILE = "vocabulary.txt"


def _describe(value: Any) -> str:
    """A short description of a received value for error messages."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        dtype = keras.backend.standardize_dtype(value.dtype)
        return f"one tensor of dtype {dtype} and shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(value)}"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(item).__name__ for item in value})
        return f"a {type(value).__name__} of {len(value)} items ({', '.join(kinds) or 'empty'})"
    return type(value).__name__


def _is_string_tensor(value: Any) -> bool:
    return (
        hasattr(value, "numpy") and getattr(getattr(value, "dtype", None), "name", None) == "string"
    )


def is_strings(value: Any) -> bool:
    """Whether `value` is text: a non-empty list, tuple or array of `str`/`bytes`, or a
    string tensor."""
    if _is_string_tensor(value):
        return True
    if isinstance(value, np.ndarray):
        items = value.ravel().tolist() if value.dtype.kind in "USO" else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return False
    return bool(items) and all(isinstance(item, (str, bytes)) for item in items)


def check_preprocessor(preprocessor: Any) -> keras.layers.Layer:
    if not isinstance(preprocessor, keras.layers.Layer):
        raise ExportError(
            "Expected `preprocessor` to be a Keras layer mapping a (B,) string tensor to the "
            "model's inputs (e.g. kerasattn.text.TextPreprocessor), received: "
            f"{type(preprocessor).__name__}"
        )
    return preprocessor


def check_strings(value: Any, argument: str) -> np.ndarray:
    """Returns raw strings as a `(B,)` object array of UTF-8 `bytes`.

    Raises `ExportError` naming `argument` unless `value` is a non-empty
    list, tuple, 1-D array or string tensor of `str` or `bytes`.
    """
    if not is_strings(value):
        raise ExportError(
            f"Expected `{argument}` to be raw strings (a non-empty list or 1-D array of str) "
            f"for `preprocessor`, received: {_describe(value)}"
        )
    array = np.asarray(value.numpy() if _is_string_tensor(value) else value, dtype=object)
    if array.ndim != 1:
        raise ExportError(
            f"Expected `{argument}` strings of shape (B,), received: shape {array.shape}"
        )
    return np.array(
        [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in array],
        dtype=object,
    )


def refuse_strings(value: Any, argument: str) -> None:
    """Raises a clear `ExportError` for strings given without a preprocessor."""
    if is_strings(value):
        raise ExportError(
            "Expected `preprocessor` (a layer from strings to the model's inputs) for the strings "
            f"of `{argument}`, received: preprocessor=None"
        )


def select_model_inputs(outputs: Any, specs: List[InputSpec]) -> Dict[str, Any]:
    """The preprocessor's outputs that feed the model, by model input name.

    A dict output is matched by key (keys the model does not take, such as
    a mask it does not use, are left out); a single tensor feeds a
    one-input model.
    """
    names = [spec.name for spec in specs]
    if isinstance(outputs, Mapping):
        missing = [name for name in names if name not in outputs]
        if missing:
            raise ExportError(
                f"Expected the outputs of `preprocessor` to include every model input {names} by "
                f"name, received: outputs {sorted(outputs)} (none for {missing})"
            )
        return {name: outputs[name] for name in names}
    if len(names) == 1 and hasattr(outputs, "shape"):
        return {names[0]: outputs}
    raise ExportError(
        f"Expected `preprocessor` to return a dict keyed by the model inputs {names}"
        f"{' (or one tensor)' if len(names) == 1 else ''}, received: {_describe(outputs)}"
    )


def preprocess(
    preprocessor: keras.layers.Layer, strings: np.ndarray, specs: List[InputSpec], argument: str
) -> Inputs:
    """Runs the preprocessor on `strings` and checks the model inputs it makes against `specs`."""
    import tensorflow as tf

    try:
        outputs = preprocessor(tf.constant(strings, tf.string))
    except Exception as error:
        raise ExportError(
            "Expected `preprocessor` to take a (B,) string tensor, received: an error on "
            f"`{argument}`: {first_line(error)}"
        ) from error
    selected = select_model_inputs(outputs, specs)
    arrays = {
        name: np.asarray(keras.ops.convert_to_numpy(value)) for name, value in selected.items()
    }
    return check_inputs(arrays, specs, f"preprocessor({argument})")


def string_serving_function(
    model: keras.Model, preprocessor: keras.layers.Layer, specs: List[InputSpec]
):
    """`text -> model(preprocessor(text))`, the function behind the string signature."""

    def serve(text):
        selected = select_model_inputs(preprocessor(text), specs)
        inputs = {spec.name: keras.ops.cast(selected[spec.name], spec.dtype) for spec in specs}
        return model(to_model_structure(model, inputs), training=False)

    return serve


def custom_ops(function) -> List[str]:
    """Ops of a concrete function (and the functions it calls) outside TensorFlow's core op set."""
    import tensorflow as tf

    graph = function.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops.update(
        node.op for library_function in graph.library.function for node in library_function.node_def
    )
    return sorted(op for op in ops if not hasattr(tf.raw_ops, op))


def write_vocabulary(preprocessor: keras.layers.Layer, folder: str) -> Optional[List[str]]:
    """Writes the preprocessor's `vocabulary` (if it has one) to `folder/vocabulary.txt`."""
    vocabulary = getattr(preprocessor, "vocabulary", None)
    if not isinstance(vocabulary, (list, tuple)):
        return None
    from kerasattn.text import save_vocabulary

    try:
        save_vocabulary(vocabulary, os.path.join(folder, VOCABULARY_FILE))
    except ValueError as error:
        raise ExportError(
            f"Expected `preprocessor.vocabulary` to be a valid vocabulary, received: {error}"
        ) from error
    return list(vocabulary)


def manifest_entry(
    preprocessor: keras.layers.Layer,
    vocabulary: Optional[List[str]],
    string_artifacts: List[str],
    id_artifacts: List[str],
    saved_model_custom_ops: List[str],
) -> Dict[str, Any]:
    """The manifest's `preprocessing` entry."""
    try:
        config = dict(preprocessor.get_config())
    except NotImplementedError:
        config = None
    if config is not None:
        config.pop("vocabulary", None)  # it is in vocabulary.txt
        config = json.loads(json.dumps(config, default=repr))
    cls = type(preprocessor)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": config,
        "vocabulary_file": VOCABULARY_FILE if vocabulary is not None else None,
        "vocabulary_size": len(vocabulary) if vocabulary is not None else None,
        "sequence_length": getattr(preprocessor, "sequence_length", None),
        "lower_case": getattr(preprocessor, "lower_case", None),
        "string_input": {"name": STRING_INPUT, "shape": [None], "dtype": "string"},
        "string_signature": SIGNATURE if string_artifacts else None,
        "id_signature": IDS_SIGNATURE,
        "takes_strings": string_artifacts,
        "takes_ids": id_artifacts,
        "saved_model_custom_ops": saved_model_custom_ops,
    }
