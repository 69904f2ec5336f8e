"""`export()`: every artifact written, run in its own runtime and compared."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import keras
import numpy as np

import kerasattn
from kerasattn.export import _converters
from kerasattn.export import _inputs
from kerasattn.export import _precision
from kerasattn.export import _preprocessing
from kerasattn.export import _runtimes
from kerasattn.export._errors import ExportError

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZE_MODES = ("float32", "float16", "dynamic_int8", "full_int8")

# Allowed difference, as a fraction of max(1, max|keras output|); see the
# package docstring for why each value.
DEFAULT_TOLERANCES = {
    "saved_model": 1e-4,
    "onnx": 1e-4,
    "float32": 1e-4,
    "float16": 1e-2,
    "dynamic_int8": 5e-2,
    "full_int8": 1e-1,
}

MANIFEST = "manifest.json"
# The manifest key of the SavedModel's string signature, checked separately.
STRINGS_ARTIFACT = "saved_model_strings"


def _as_choices(name: str, value: Any, choices: Sequence[str]) -> tuple:
    items = (value,) if isinstance(value, str) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if not items or any(item not in choices for item in items):
        raise ExportError(
            f"Expected `{name}` to be a non-empty sequence of {choices}, received: {name}={value!r}"
        )
    return tuple(dict.fromkeys(items))  # drop repeats, keep order


def _positive_int(name: str, value: Any, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        what = "a positive integer" + (" or None" if allow_none else "")
        raise ExportError(f"Expected `{name}` to be {what}, received: {name}={value!r}")
    return int(value)


def _tolerances(overrides: Optional[Mapping[str, float]]) -> Dict[str, float]:
    tolerances = dict(DEFAULT_TOLERANCES)
    if overrides is None:
        return tolerances
    if not isinstance(overrides, Mapping):
        raise ExportError(
            f"Expected `tolerances` to be a dict with keys from {tuple(DEFAULT_TOLERANCES)}, "
            f"received: tolerances={overrides!r}"
        )
    for key, value in overrides.items():
        if key not in DEFAULT_TOLERANCES:
            raise ExportError(
                f"Expected `tolerances` keys from {tuple(DEFAULT_TOLERANCES)}, received: {key!r}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < math.inf
        ):
            raise ExportError(
                f"Expected `tolerances[{key!r}]` to be a positive number, received: {value!r}"
            )
        tolerances[key] = float(value)
    return tolerances


def check_out_dir(out_dir: Union[str, os.PathLike], overwrite: bool) -> str:
    """`out_dir` as an absolute path, once it is known to be free (or, with
    `overwrite`, an empty folder or a previous export to replace).

    Raises:
        ExportError: for a value that is not a path, an existing file, or a
            folder that may not be replaced.
    """
    try:
        out_dir = os.path.abspath(os.fspath(out_dir))
    except TypeError:
        raise ExportError(
            f"Expected `out_dir` to be a path, received: out_dir={out_dir!r}"
        ) from None
    if os.path.lexists(out_dir):
        if not os.path.isdir(out_dir) or os.path.islink(out_dir):
            raise ExportError(
                f"Expected `out_dir` to be a folder path, received: {out_dir!r} (an existing file)"
            )
        if not overwrite:
            raise ExportError(
                f"Expected `out_dir` not to exist (or overwrite=True), received: {out_dir!r}, "
                "which exists"
            )
        # overwrite=True deletes the folder: only ever a previous export (or an empty folder).
        if os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, MANIFEST)):
            raise ExportError(
                f"Expected `out_dir` to be empty or a previous export (holding {MANIFEST}) to "
                f"overwrite, received: {out_dir!r}, which holds other files"
            )
    return out_dir


def _reference(model: keras.Model, inputs: _inputs.Inputs) -> Dict[str, np.ndarray]:
    """The Keras model's outputs by signature name: dict keys, or `output_<i>` in flat order."""
    outputs = model(_inputs.to_model_structure(model, inputs), training=False)
    if isinstance(outputs, dict):
        named = outputs
    else:
        named = {f"output_{i}": value for i, value in enumerate(keras.tree.flatten(outputs))}
    return {name: np.asarray(keras.ops.convert_to_numpy(value)) for name, value in named.items()}


class _Verifier:
    """Runs an artifact on the verification inputs and compares it with Keras.

    The Keras model runs on `sets` (its inputs); the artifact on `feeds`,
    which are `sets` themselves unless the artifact takes something else
    (the raw strings the sets were preprocessed from).
    """

    def __init__(
        self,
        model: keras.Model,
        specs: List[_inputs.InputSpec],
        sets: List[_inputs.Inputs],
        feeds: Optional[List[_inputs.Inputs]] = None,
    ):
        self.model = model
        self.specs = specs
        self.sets = sets
        self.feeds = sets if feeds is None else feeds
        self.references = [_reference(model, inputs) for inputs in sets]

    def fixed(self, length: int) -> "_Verifier":
        return _Verifier(
            self.model, self.specs, [_inputs.with_length(s, self.specs, length) for s in self.sets]
        )

    def check(self, runtime, artifact: str, path: str, tolerance: float) -> Dict[str, Any]:
        per_output: Dict[str, float] = {}
        for inputs, reference in zip(self.feeds, self.references):
            try:
                outputs = runtime.run(inputs)
            except Exception as error:
                raise ExportError(
                    f"{artifact}: {runtime.description} could not run {path} on inputs of shape "
                    f"{_inputs.shapes(inputs)}: {_converters.first_line(error)}",
                    "conversion",
                ) from error
            for name, want in reference.items():
                if name not in outputs:
                    raise ExportError(
                        f"{artifact}: expected output {name!r} in {path}, received outputs "
                        f"{sorted(outputs)}",
                        "verification",
                    )
                got = np.asarray(outputs[name])
                if got.shape != want.shape:
                    raise ExportError(
                        f"{artifact}: output {name!r} of {path} has shape {got.shape}, the Keras "
                        f"model's {want.shape} (inputs of shape {_inputs.shapes(inputs)})",
                        "verification",
                    )
                want64 = want.astype(np.float64)
                difference = float(np.max(np.abs(got.astype(np.float64) - want64)))
                scale = max(1.0, float(np.max(np.abs(want64))))
                if not difference <= tolerance * scale:
                    raise ExportError(
                        f"{artifact}: output {name!r} of {path} differs from the Keras model by "
                        f"{difference:.3g} on inputs of shape {_inputs.shapes(inputs)}, above the "
                        "allowed "
                        f"{tolerance * scale:.3g} (tolerance {tolerance:g} x max(1, max|keras| = "
                        f"{float(np.max(np.abs(want64))):.3g}))",
                        "verification",
                    )
                per_output[name] = max(per_output.get(name, 0.0), difference)
        return {
            "max_abs_difference": max(per_output.values()),
            "max_abs_difference_per_output": per_output,
            "tolerance": tolerance,
            "verified_input_shapes": [_inputs.shapes(inputs) for inputs in self.feeds],
        }


def size_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def _entry(
    runtime,
    verifier: _Verifier,
    staging: str,
    relative_path: str,
    artifact: str,
    file_format: str,
    quantization: str,
    tolerance: float,
    latency_inputs: Dict[int, _inputs.Inputs],
    latency_runs: int,
    fixed_length: Optional[int] = None,
) -> Dict[str, Any]:
    """Verifies one artifact and describes it for the manifest."""
    checked = verifier.check(runtime, artifact, relative_path, tolerance)
    if fixed_length is not None:
        latency_inputs = {
            batch_size: _inputs.with_length(inputs, verifier.specs, fixed_length)
            for batch_size, inputs in latency_inputs.items()
        }
    latency = {
        f"batch_{batch_size}": runtime.latency_ms(inputs, latency_runs)
        for batch_size, inputs in latency_inputs.items()
    }
    work = {}
    if hasattr(runtime, "graph"):
        # The work behind the batch-1 latency, and the rate it was done at.
        graph = runtime.graph(latency_inputs[1])
        work = {
            "ops": graph["ops"],
            "flops_per_example": graph["flops"],
            "gflops_per_second_batch_1": round(graph["flops"] / latency["batch_1"] / 1e6, 2),
        }
    return {
        "path": relative_path,
        "format": file_format,
        "quantization": quantization,
        "size_bytes": size_bytes(os.path.join(staging, relative_path)),
        "runtime": runtime.description,
        "signature": runtime.signature(),
        "fixed_sequence_length": fixed_length,
        **checked,
        "latency_ms": latency,
        "latency_threads": runtime.threads,
        "latency_runs": latency_runs,
        **work,
    }


@contextlib.contextmanager
def staged(out_dir: str, overwrite: bool) -> Iterator[str]:
    """A staging folder beside `out_dir` to write an export into.

    When the block ends, the folder is renamed to `out_dir` (replacing it if
    `overwrite`); when the block raises, it is deleted, so a failed export
    leaves nothing behind.
    """
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    os.mkdir(staging)
    try:
        yield staging
        _move_into_place(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: str, out_dir: str, overwrite: bool) -> None:
    """Renames the finished staging folder to `out_dir`, replacing it if allowed."""
    if not os.path.lexists(out_dir):
        os.rename(staging, out_dir)
        return
    check_out_dir(out_dir, overwrite)
    replaced = f"{staging}.replaced"
    os.rename(out_dir, replaced)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(replaced, out_dir)
        raise
    shutil.rmtree(replaced)


def export(
    model: keras.Model,
    out_dir: Union[str, os.PathLike],
    formats: Sequence[str] = ("saved_model", "tflite", "onnx"),
    quantize: Sequence[str] = ("float32",),
    sample_inputs: Any = None,
    representative_data: Any = None,
    tolerances: Optional[Mapping[str, float]] = None,
    sequence_length: Optional[int] = None,
    latency_batch_size: int = 8,
    latency_runs: int = 20,
    overwrite: bool = False,
    preprocessor: Optional[keras.layers.Layer] = None,
) -> Dict[str, Any]:
    """Exports a Keras model to SavedModel, TFLite and ONNX, each one verified.

    Every artifact is loaded in its own runtime (`tf.saved_model.load`, the
    LiteRT interpreter from `ai_edge_litert`, onnxruntime), run on the sample
    inputs, and compared with the Keras model output by output: the export
    fails unless `max|keras - artifact| <= tolerance * max(1, max|keras|)`
    for every output. When the model has a dynamic sequence axis (axis 1 of
    an input is `None`), the check runs at two sequence lengths. Everything
    is written to a temporary folder beside `out_dir`, which is renamed to
    `out_dir` only once all artifacts have passed.

    With a `preprocessor` (raw strings to the model's inputs, e.g.
    `kerasattn.text.TextPreprocessor`), the SavedModel's `serving_default`
    signature takes a `(B,)` string tensor `text` and runs the preprocessor
    and then the model; the model's id inputs move to a second signature,
    `serving_ids`. TFLite and ONNX are converted from `serving_ids` and take
    ids; the preprocessor's vocabulary is written beside them as
    `vocabulary.txt`. The string signature is checked on the sample strings
    against `model(preprocessor(strings))` with the `"saved_model"`
    tolerance (manifest key `"saved_model_strings"`).

    Args:
        model: a `keras.Model` with defined inputs (functional or Sequential).
        out_dir: the folder to create. It holds `saved_model/`,
            `model_<mode>.tflite` per quantize mode, `model.onnx`,
            `manifest.json`, and with a preprocessor `vocabulary.txt`.
        formats: any of `"saved_model"`, `"tflite"`, `"onnx"`.
        quantize: the TFLite modes, any of `"float32"`, `"float16"`
            (float16 weights), `"dynamic_int8"` (int8 weights, activations
            quantized at run time) and `"full_int8"` (int8 weights and
            activations, calibrated on `representative_data`; inputs and
            outputs stay float32 / int32).
        sample_inputs: the inputs to verify on: an array (one-input models),
            a list of arrays in `model.inputs` order, or a dict keyed by input
            name, with a batch axis. `None` generates a batch of 4 with
            sequence length 8 (then 5): token ids below the smallest
            Embedding `input_dim`, with trailing padding on every other row.
            With a `preprocessor`: raw strings (a list or 1-D array of `str`),
            required; the id inputs are what the preprocessor makes of them.
        representative_data: calibration data for `"full_int8"`: one batch
            (an array or a dict of arrays) or an iterable of input
            structures like `sample_inputs`. Each example is one calibration
            step; a few hundred typical examples are usual. With a
            `preprocessor` it may also be raw strings.
        tolerances: overrides of `DEFAULT_TOLERANCES`, keyed by
            `"saved_model"`, `"onnx"` or a quantize mode.
        sequence_length: if converting a TFLite model with a dynamic
            sequence axis fails (in the converter or when run at another
            length), convert it again with the sequence axis fixed to this
            length; the manifest records it as `fixed_sequence_length`. Inputs
            of other lengths must then be cut or padded to it.
        latency_batch_size: the larger batch size timed besides batch 1.
        latency_runs: timed runs per batch size (after one warm-up run); the
            manifest records the median.
        overwrite: replace an existing `out_dir`, once the new export has
            passed. Only an empty folder or a previous export (a folder with
            `manifest.json`) is replaced; any other folder is refused.
        preprocessor: optional Keras layer mapping a `(B,)` string tensor to
            the model's inputs: a dict keyed by the model's input names
            (keys the model does not take are left out, such as a
            `"padding_mask"` for a model on `"token_ids"` alone), or one
            tensor for a one-input model. It must run in a `tf.function`.

    Returns:
        The manifest (also written to `out_dir/manifest.json`): the model's
        inputs, the verification shapes and, under `"artifacts"` (keyed
        `saved_model`, `saved_model_strings` with a preprocessor,
        `tflite_<mode>`, `onnx`), each artifact's path, size in bytes,
        runtime, signature, largest absolute difference from Keras (overall
        and per output), tolerance, and median latency in ms. With a
        preprocessor, `"preprocessing"` describes it: its class and config
        (less the vocabulary), `vocabulary_file` and `vocabulary_size`,
        `sequence_length`, `lower_case`, the string input and signature,
        which artifacts take strings (`takes_strings`) and which ids
        (`takes_ids`), and the ops outside TensorFlow's core that the string
        signature needs (`saved_model_custom_ops`; for `TextPreprocessor`,
        `import tensorflow_text` before `tf.saved_model.load`).

    Raises:
        ExportError: for bad arguments, a failed conversion, or an artifact
            that differs from the Keras model by more than its tolerance.

    Example:

    ```python
    manifest = export(model, "exported/", formats=("tflite", "onnx"),
                      quantize=("float32", "dynamic_int8"))
    print(manifest["artifacts"]["tflite_dynamic_int8"]["max_abs_difference"])

    # A model on `token_ids`, served from raw strings:
    preprocessor = kerasattn.text.TextPreprocessor("vocab.txt", sequence_length=64)
    export(model, "served/", preprocessor=preprocessor,
           sample_inputs=["a gripping film", "dull"])
    tf.saved_model.load("served/saved_model").signatures["serving_default"](
        text=tf.constant(["what a film"]))
    ```
    """
    if not isinstance(model, keras.Model):
        raise ExportError(f"Expected `model` to be a keras.Model, received: {type(model).__name__}")
    formats = _as_choices("formats", formats, FORMATS)
    quantize = _as_choices("quantize", quantize, QUANTIZE_MODES)
    tolerances = _tolerances(tolerances)
    sequence_length = _positive_int("sequence_length", sequence_length, allow_none=True)
    latency_batch_size = _positive_int("latency_batch_size", latency_batch_size)
    latency_runs = _positive_int("latency_runs", latency_runs)
    out_dir = check_out_dir(out_dir, overwrite)

    specs = _inputs.model_input_specs(model)
    original, model = model, _precision.float32_copy(model)
    if sequence_length is not None and not any(spec.dynamic_sequence for spec in specs):
        raise ExportError(
            "Expected `sequence_length` only for a model with a dynamic sequence axis (axis 1 "
            f"`None`), received: sequence_length={sequence_length} for inputs "
            f"{[spec.as_json() for spec in specs]}"
        )
    strings = None
    if preprocessor is not None:
        preprocessor = _preprocessing.check_preprocessor(preprocessor)
        strings = _preprocessing.check_strings(sample_inputs, "sample_inputs")
        samples = _preprocessing.preprocess(preprocessor, strings, specs, "sample_inputs")
    elif sample_inputs is None:
        samples = _inputs.generate_inputs(model, specs)
    else:
        _preprocessing.refuse_strings(sample_inputs, "sample_inputs")
        samples = _inputs.check_inputs(sample_inputs, specs, "sample_inputs")
    tflite_modes = quantize if "tflite" in formats else ()
    representative = None
    if representative_data is not None:
        if preprocessor is None:
            _preprocessing.refuse_strings(representative_data, "representative_data")
        elif _preprocessing.is_strings(representative_data):
            # Calibrate on what the preprocessor makes of the text, as served.
            representative_data = _preprocessing.preprocess(
                preprocessor,
                _preprocessing.check_strings(representative_data, "representative_data"),
                specs,
                "representative_data",
            )
        representative = _inputs.check_representative_data(representative_data, specs)
    elif "full_int8" in tflite_modes:
        raise ExportError(
            "Expected `representative_data` (calibration inputs) for quantize mode 'full_int8', "
            "received: None"
        )

    sets = [samples]
    shorter = _inputs.shorter_inputs(samples, specs)
    if shorter is not None:
        sets.append(shorter)
    verifier = _Verifier(model, specs, sets)
    precision = _precision_entry(original, model, sets, verifier.references)
    latency_inputs = _latency_inputs(samples, latency_batch_size)
    string_check = None
    if strings is not None and "saved_model" in formats:
        feed = {_runtimes.STRING_INPUT: strings}
        string_check = (
            _Verifier(model, specs, [samples], [feed]),
            _latency_inputs(feed, latency_batch_size),
        )

    with staged(out_dir, overwrite) as staging:
        if preprocessor is not None:
            vocabulary = _preprocessing.write_vocabulary(preprocessor, staging)
        artifacts, custom_ops = _write_artifacts(
            model, specs, staging, formats, tflite_modes, representative, tolerances,
            sequence_length, verifier, latency_inputs, latency_runs, preprocessor, string_check,
        )
        manifest = {
            "format_version": 1,
            "created_by": f"kerasattn {kerasattn.__version__}",
            "model": model.name,
            "signature_name": _runtimes.SIGNATURE,
            "inputs": [spec.as_json() for spec in specs],
            "sample_inputs": "generated" if sample_inputs is None else "given",
            "verified_input_shapes": [_inputs.shapes(inputs) for inputs in sets],
            "check": "max|keras - artifact| <= tolerance * max(1, max|keras|), per output",
            "latency": {
                "statistic": "median",
                "runs": latency_runs,
                "batch_sizes": sorted(latency_inputs),
                "input_shapes": {
                    f"batch_{b}": _inputs.shapes(i) for b, i in latency_inputs.items()
                },
            },
            **precision,
            "artifacts": artifacts,
        }
        if preprocessor is not None:
            manifest["preprocessing"] = _preprocessing.manifest_entry(
                preprocessor,
                vocabulary,
                string_artifacts=[name for name in artifacts if name == STRINGS_ARTIFACT],
                id_artifacts=[name for name in artifacts if name != STRINGS_ARTIFACT],
                saved_model_custom_ops=custom_ops,
            )
        with open(os.path.join(staging, MANIFEST), "w") as file:
            json.dump(manifest, file, indent=2)
    return manifest


def _precision_entry(
    original: keras.Model,
    served: keras.Model,
    sets: List[_inputs.Inputs],
    served_outputs: List[Dict[str, np.ndarray]],
) -> Dict[str, Any]:
    """The manifest's record of the precision served: the model's policy, the float32 the
    artifacts compute in, and, for a mixed-precision model, how far its float32 computation's
    outputs are from its own on the sample inputs (information, not a check)."""
    entry = {"dtype_policy": _precision.layers_policy(original), "computed_in": "float32"}
    if served is not original:
        largest: Dict[str, float] = {}
        for inputs, exact in zip(sets, served_outputs):
            mixed = _reference(original, inputs)
            for name, value in exact.items():
                difference = float(np.max(np.abs(
                    value.astype(np.float64) - mixed[name].astype(np.float64)
                )))
                largest[name] = max(largest.get(name, 0.0), difference)
        entry["float32_vs_dtype_policy"] = {"max_abs_difference_per_output": largest}
    return entry


def _latency_inputs(inputs: _inputs.Inputs, batch_size: int) -> Dict[int, _inputs.Inputs]:
    """The inputs timed: the first row alone, and `batch_size` rows."""
    return {
        1: _inputs.batch_of({name: array[:1] for name, array in inputs.items()}, 1),
        batch_size: _inputs.batch_of(inputs, batch_size),
    }


def _write_artifacts(
    model, specs, staging, formats, tflite_modes, representative, tolerances,
    sequence_length, verifier, latency_inputs, latency_runs, preprocessor, string_check,
) -> Tuple[Dict[str, Dict[str, Any]], Optional[List[str]]]:
    """Writes and checks every artifact; returns their manifest entries and the
    custom ops of the SavedModel's string signature (`None` without one)."""
    artifacts: Dict[str, Dict[str, Any]] = {}
    # TFLite and ONNX are converted from the SavedModel, so it is always
    # written; without "saved_model" in `formats` it is removed at the end.
    saved_model = "saved_model" if "saved_model" in formats else ".saved_model"
    saved_model_dir = os.path.join(staging, saved_model)
    serve_strings = None
    if preprocessor is not None:
        serve_strings = _preprocessing.string_serving_function(model, preprocessor, specs)
    trackables = [] if preprocessor is None else [preprocessor]
    id_signature = _converters.export_saved_model(
        model, saved_model_dir, specs, serve_strings, trackables=trackables
    )
    bounded_dir = None
    if "full_int8" in tflite_modes:
        # Full int8 alone is converted from a graph with the bounded masked softmax.
        bounded_dir = os.path.join(staging, ".saved_model_bounded")
        _converters.export_saved_model(
            model, bounded_dir, specs, serve_strings, trackables=trackables, bounded=True
        )
    common = dict(staging=staging, latency_inputs=latency_inputs, latency_runs=latency_runs)
    custom_ops = None
    if "saved_model" in formats:
        artifacts["saved_model"] = _entry(
            _runtimes.SavedModelRuntime(saved_model_dir, id_signature),
            verifier,
            relative_path=saved_model,
            artifact="saved_model",
            file_format="saved_model",
            quantization="float32",
            tolerance=tolerances["saved_model"],
            **common,
        )
    if string_check is not None:
        string_verifier, string_latency_inputs = string_check
        runtime = _runtimes.SavedModelRuntime(saved_model_dir, _runtimes.SIGNATURE)
        artifacts[STRINGS_ARTIFACT] = _entry(
            runtime, string_verifier, staging=staging, relative_path=saved_model,
            artifact=STRINGS_ARTIFACT, file_format="saved_model", quantization="float32",
            tolerance=tolerances["saved_model"], latency_inputs=string_latency_inputs,
            latency_runs=latency_runs,
        )
        custom_ops = _preprocessing.custom_ops(runtime.function)
    for mode in tflite_modes:
        artifact = f"tflite_{mode}"
        path = f"model_{mode}.tflite"

        def write_and_check(fixed_length: Optional[int]) -> Dict[str, Any]:
            content = _converters.convert_tflite(
                bounded_dir if mode == "full_int8" else saved_model_dir, mode, model, specs,
                representative, fixed_length, id_signature,
            )
            with open(os.path.join(staging, path), "wb") as file:
                file.write(content)
            checker = verifier if fixed_length is None else verifier.fixed(fixed_length)
            if mode == "full_int8":  # quantized graphs are where LiteRT has aborted
                _runtimes.check_litert_survives(os.path.join(staging, path), artifact)
            return _entry(
                _runtimes.LiteRTRuntime(os.path.join(staging, path)), checker, relative_path=path,
                artifact=artifact, file_format="tflite", quantization=mode,
                tolerance=tolerances[mode], fixed_length=fixed_length, **common,
            )

        try:
            artifacts[artifact] = write_and_check(None)
        except ExportError as error:
            dynamic = any(spec.dynamic_sequence for spec in specs)
            if error.kind != "conversion" or not dynamic:
                raise
            if sequence_length is None:
                raise ExportError(
                    f"{error} (or pass sequence_length=N to convert with a fixed sequence length)",
                    error.kind,
                ) from error
            artifacts[artifact] = write_and_check(sequence_length)
    if "onnx" in formats:
        _converters.convert_onnx(
            saved_model_dir, os.path.join(staging, "model.onnx"), specs, id_signature
        )
        artifacts["onnx"] = _entry(
            _runtimes.OnnxRuntime(os.path.join(staging, "model.onnx")),
            verifier,
            relative_path="model.onnx",
            artifact="onnx",
            file_format="onnx",
            quantization="float32",
            tolerance=tolerances["onnx"],
            **common,
        )
    if saved_model != "saved_model":
        shutil.rmtree(saved_model_dir)
    if bounded_dir is not None:
        shutil.rmtree(bounded_dir)
    return artifacts, custom_ops
