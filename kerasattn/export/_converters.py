"""SavedModel export, and TFLite and ONNX conversion from that SavedModel.

Both converters start from the SavedModel's id signature (`serving_default`,
or `serving_ids` when a preprocessor adds a string `serving_default`), so
every artifact has the same input and output names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from typing import Callable, Iterable, List, Optional, Tuple

import keras
import numpy as np

from kerasattn.export._errors import ExportError
from kerasattn.export._inputs import Inputs, InputSpec, input_structure, with_length
from kerasattn.export._runtimes import IDS_SIGNATURE, SIGNATURE, STRING_INPUT

ONNX_OPSET = 17


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, for one-line reports."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def _write_with_strings(
    model: keras.Model, path: str, specs: List[InputSpec], serve_strings: Callable, trackables: list
) -> None:
    """A SavedModel with `serving_default` taking strings and `serving_ids` taking `specs`."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    for trackable in [model, *trackables]:
        archive.track(trackable)  # the preprocessor's tables and tokenizer models
    archive.add_endpoint(
        SIGNATURE, serve_strings, [tf.TensorSpec((None,), tf.string, name=STRING_INPUT)]
    )
    # Called as `model.export` calls it: one argument, the model's input structure.
    id_signature = keras.tree.map_structure(
        lambda tensor: tf.TensorSpec(
            (None,) + tuple(tensor.shape[1:]), tensor.dtype, name=tensor.name
        ),
        input_structure(model),
    )
    archive.add_endpoint(IDS_SIGNATURE, model.__call__, [id_signature])
    archive.write_out(path, verbose=False)


def export_saved_model(
    model: keras.Model,
    path: str,
    specs: List[InputSpec],
    serve_strings: Optional[Callable] = None,
    trackables: Iterable = (),
    bounded: bool = False,
) -> str:
    """Writes `model` as a SavedModel and returns the name of its id signature.

    Without `serve_strings` the model is written by `model.export`: its
    `serving_default` signature takes `specs` by name. With it,
    `serving_default` takes a `(B,)` string tensor `text` and runs
    `serve_strings` (tracking `trackables`, the preprocessor), and the
    `serving_ids` signature takes `specs`.

    With `bounded`, masked softmaxes are traced under
    `kerasattn.ops.bounded_masking`: intermediates within about twice the
    logits' range, which full-int8 calibration needs, for a row minimum, a
    row maximum and three elementwise ops more per softmax. Only the
    full-int8 conversion uses such a SavedModel.
    """
    from kerasattn.ops import bounded_masking
    from kerasattn.ops.tracing import export_graph

    try:
        with export_graph(), bounded_masking() if bounded else contextlib.nullcontext():
            if serve_strings is None:
                model.export(path, format="tf_saved_model", verbose=False)
            else:
                _write_with_strings(model, path, specs, serve_strings, list(trackables))
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(
            f"saved_model: Keras could not export the model: {first_line(error)}", "conversion"
        ) from error
    import tensorflow as tf

    id_signature = SIGNATURE if serve_strings is None else IDS_SIGNATURE
    _, arguments = tf.saved_model.load(path).signatures[id_signature].structured_input_signature
    if sorted(arguments) != sorted(spec.name for spec in specs):
        raise ExportError(
            "Expected the SavedModel signature to take the model's inputs "
            f"{[s.name for s in specs]}, "
            f"received: {sorted(arguments)}",
            "conversion",
        )
    return id_signature


# One converter diagnostic: the graph node it is attached to, and its text.
_LOCATED_ERROR = re.compile(
    r'error: loc\(.*?fused\["[^"]*", "(?P<node>[^"@]+)@[^\n]*?\)\): (?P<message>[^\n]+)'
)
_NEEDS_FLEX = re.compile(r"'tf\.(?P<op>\w+)' op is neither a custom op nor a flex op")


def _sublayers(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _strip_suffix(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def layer_of_node(model: keras.Model, node: str) -> Optional[Tuple[str, str]]:
    """The `(path, class name)` of the layer a graph node came from, if known.

    Graph nodes are named after the Keras name scopes, e.g.
    `functional_1/encoder_1/self_attention_1/StridedSlice`. When the model was
    traced more than once TensorFlow suffixes every scope (`encoder` becomes
    `encoder_1`), which the root segment tells apart from the model's name.
    """
    segments = node.split("/")[:-1]
    if not segments:
        return None
    suffixed = segments[0] != model.name
    layer, path = model, []
    for segment in segments[1:]:
        children = {child.name: child for child in _sublayers(layer)}
        names = [_strip_suffix(segment), segment] if suffixed else [segment, _strip_suffix(segment)]
        match = next((children[name] for name in names if name in children), None)
        if match is None:
            break
        layer, path = match, path + [match.name]
    if not path:
        return None
    return "/".join(path), type(layer).__name__


def describe_converter_error(error: BaseException, model: keras.Model, artifact: str) -> str:
    """One line naming what the TFLite converter rejected, and in which layer."""
    text = str(error)
    found = []
    for match in _LOCATED_ERROR.finditer(text):
        node, message = match.group("node"), match.group("message").strip()
        flex = _NEEDS_FLEX.search(message)
        if flex:
            message = f"TensorFlow op {flex.group('op')} has no TFLite built-in kernel"
        layer = layer_of_node(model, node)
        where = f"layer {layer[0]!r} ({layer[1]})" if layer else "no known layer"
        entry = f"{message} in {where}, graph node {node!r}"
        if entry not in found:
            found.append(entry)
    if not found:
        return f"{artifact}: the TFLite converter failed: {first_line(error)}"
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return (
        f"{artifact}: the TFLite converter needs ops outside the built-in set "
        f"(Flex/SELECT_TF_OPS are not allowed): {'; '.join(found[:3])}{more}"
    )


@contextlib.contextmanager
def _native_stderr_silenced():
    """Discards what native code writes to stderr (the converter prints its
    diagnostics there, which the raised error already carries)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _id_function(loaded, specs: List[InputSpec], signature_name: str, length: Optional[int]):
    """The id signature as a concrete function, its sequence axes `length` long unless `None`."""
    import tensorflow as tf

    signature = loaded.signatures[signature_name]
    if length is None:
        return signature
    fixed = {
        spec.name: tf.TensorSpec(
            (None, length) + spec.shape[2:] if spec.dynamic_sequence else spec.shape,
            spec.dtype,
            name=spec.name,
        )
        for spec in specs
    }
    return tf.function(lambda **inputs: signature(**inputs)).get_concrete_function(**fixed)


def convert_tflite(
    saved_model_dir: str,
    mode: str,
    model: keras.Model,
    specs: Optional[List[InputSpec]] = None,
    representative: Optional[List[Inputs]] = None,
    fixed_length: Optional[int] = None,
    signature: str = SIGNATURE,
) -> bytes:
    """Converts a SavedModel signature to a TFLite flatbuffer with built-in ops only.

    The flatbuffer has one signature, `serving_default`, converted from the
    SavedModel's `signature`, with its input and output names. Any
    signature converts, such as a whole decoding loop from ids to ids.

    Args:
        saved_model_dir: a SavedModel (as `export_saved_model` writes).
        mode: `"float32"`, `"float16"`, `"dynamic_int8"` or `"full_int8"`.
        model: the Keras model, to name the layer behind an unsupported op.
        specs: the model's input specs (needed with `fixed_length`).
        representative: batch-1 calibration examples (needed for `"full_int8"`).
        fixed_length: `None` keeps the sequence axes dynamic; an integer
            fixes them to that length.
        signature: the SavedModel signature to convert.

    Returns:
        The `.tflite` file's bytes.

    Raises:
        ExportError: naming the ops outside the built-in set and their layers.

    Example:

    ```python
    content = convert_tflite("out/saved_model", "float32", model, signature="generate_ids")
    ```
    """
    import tensorflow as tf

    if fixed_length is None and signature == SIGNATURE:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=[SIGNATURE]
        )
    else:
        # One concrete function converts under the key `serving_default`,
        # whichever SavedModel signature it came from.
        loaded = tf.saved_model.load(saved_model_dir)
        function = _id_function(loaded, specs, signature, fixed_length)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "full_int8":
        # Integer-only kernels inside; the inputs and outputs keep their float
        # (and int32 token) types, so callers feed the same arrays in every mode.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

        def calibration() -> Iterable[Inputs]:
            for example in representative:
                yield example if fixed_length is None else with_length(example, specs, fixed_length)

        converter.representative_dataset = calibration
    artifact = f"tflite {mode}"
    try:
        with warnings.catch_warnings(), _native_stderr_silenced():
            # The converter's calibrator uses tf.lite.Interpreter internally; we do not.
            warnings.filterwarnings(
                "ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated"
            )
            return converter.convert()
    except Exception as error:
        raise ExportError(describe_converter_error(error, model, artifact), "conversion") from error


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler for TensorFlow's Erfc (exact GELU lowers to it), which
    ONNX lacks: erfc(x) = 1 - erf(x), with ONNX's Erf."""
    from tf2onnx import utils

    x = node.input[0]
    one = np.array(1, utils.map_onnx_to_numpy_type(ctx.get_dtype(x)))
    erf = ctx.make_node("Erf", [x])
    node.type = "Sub"
    ctx.replace_inputs(
        node, [ctx.make_const(utils.make_name(f"{name}_one"), one).output[0], erf.output[0]]
    )
    return node


def _dynamic_update_slice_as_scatter(ctx, node, name, args):
    """tf2onnx handler for XLA's DynamicUpdateSlice (what `keras.ops.slice_update`
    traces to: a key/value cache written in place), which tf2onnx lacks: a
    ScatterND of the update at the index grid `start + arange(update.shape)`,
    starts clamped as XLA clamps them so that the update fits."""
    from onnx import TensorProto
    from tf2onnx import utils

    operand, update, starts = node.input
    rank = len(ctx.get_shape(operand))

    def const(value, label):
        return ctx.make_const(utils.make_name(f"{name}_{label}"), np.array(value, np.int64))

    def op(op_type, inputs, **attr):
        return ctx.make_node(op_type, inputs, attr=attr).output[0]

    update_shape = op("Shape", [update])
    starts = op("Cast", [starts], to=TensorProto.INT64)
    starts = op("Max", [op("Min", [starts, op("Sub", [op("Shape", [operand]), update_shape])]),
                        const(0, "zero").output[0]])
    columns = []
    for axis in range(rank):
        start = op("Gather", [starts, const(axis, f"axis{axis}").output[0]])
        size = op("Gather", [update_shape, const(axis, f"axis{axis}_").output[0]])
        positions = op("Range", [start, op("Add", [start, size]), const(1, "one").output[0]])
        shape = [1] * rank
        shape[axis] = -1
        positions = op("Reshape", [positions, const(shape, f"shape{axis}").output[0]])
        positions = op("Expand", [positions, update_shape])
        columns.append(op("Unsqueeze", [positions, const([-1], "last").output[0]]))
    node.type = "ScatterND"
    ctx.replace_inputs(node, [operand, op("Concat", columns, axis=-1), update])
    return node


def _name_dynamic_axes(graph_input, spec: InputSpec) -> None:
    """Names an ONNX input's dynamic axes: `batch`, `<input>_length` for axis
    1 (the sequence), `<input>_dim<i>` for others; scalars have none."""
    dims = graph_input.type.tensor_type.shape.dim
    for axis, size in enumerate(spec.shape[:len(dims)]):
        if size is None:
            dims[axis].dim_param = ("batch" if axis == 0 else f"{graph_input.name}_length"
                                    if axis == 1 else f"{graph_input.name}_dim{axis}")


def signature_specs(saved_model_dir: str, signature: str) -> List[InputSpec]:
    """The inputs of a SavedModel signature, sorted by name."""
    import tensorflow as tf

    _, arguments = tf.saved_model.load(saved_model_dir).signatures[
        signature].structured_input_signature
    return [InputSpec(name, tuple(spec.shape.as_list()), spec.dtype.name)
            for name, spec in sorted(arguments.items())]


def convert_onnx(
    saved_model_dir: str, path: str, specs: Optional[List[InputSpec]] = None,
    signature: str = SIGNATURE,
) -> None:
    """Converts a SavedModel signature (the model's id signature) to ONNX with tf2onnx.

    Args:
        saved_model_dir: a SavedModel.
        path: the `.onnx` file to write.
        specs: the signature's inputs, in the ONNX file's input order;
            `None` for all of them, sorted by name.
        signature: the SavedModel signature to convert.

    Raises:
        ExportError: naming the first op tf2onnx could not convert.

    Example:

    ```python
    convert_onnx("out/saved_model", "out/decoder_step.onnx", signature="decode_step")
    ```

    The batch axis of every input is named `batch`, a dynamic sequence axis
    `<input>_length` and any other dynamic axis `<input>_dim<i>`. XLA's
    DynamicUpdateSlice (a cache written in place) becomes a ScatterND.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    if specs is None:
        specs = signature_specs(saved_model_dir, signature)
    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures[signature]
    names = [spec.name for spec in specs]
    _, arguments = signature.structured_input_signature
    function = tf.function(lambda *inputs: signature(**dict(zip(names, inputs))))
    logger = logging.getLogger("tf2onnx")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.ERROR)  # tf2onnx logs every step at INFO
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            function,
            input_signature=[arguments[name] for name in names],
            opset=ONNX_OPSET,
            custom_op_handlers={
                "Erfc": (_erfc_as_one_minus_erf, []),
                "XlaDynamicUpdateSlice": (_dynamic_update_slice_as_scatter, []),
            },
        )
    except Exception as error:
        raise ExportError(
            f"onnx: tf2onnx could not convert the model: {first_line(error)}", "conversion"
        ) from error
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    if collect.messages:
        # tf2onnx keeps going past ops it cannot convert; their names are in its log.
        raise ExportError(
            f"onnx: tf2onnx could not convert the model: {collect.messages[0]}", "conversion"
        )
    by_name = {spec.name: spec for spec in specs}
    for graph_input in model_proto.graph.input:
        _name_dynamic_axes(graph_input, by_name[graph_input.name])
    onnx.save(model_proto, path)
