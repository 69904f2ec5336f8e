"""Verified export to TensorFlow SavedModel, TFLite (LiteRT) and ONNX.

`export(model, out_dir, ...)` writes, into a temporary folder beside
`out_dir` that is renamed to `out_dir` only when everything has passed:

- `saved_model/`: `model.export(..., format="tf_saved_model")`, whose
  `serving_default` signature takes the model's inputs by name with a
  dynamic batch axis (and a dynamic sequence axis where the model's input
  has one).
- `model_<mode>.tflite` for each quantize mode, converted from that
  SavedModel with `tf.lite.TFLiteConverter` and built-in ops only
  (`TFLITE_BUILTINS`, or `TFLITE_BUILTINS_INT8` for `"full_int8"`; never
  `SELECT_TF_OPS`, so no Flex delegate is needed). A model that needs a
  non-built-in op fails with the op, the layer it came from and the graph
  node. The sequence axis stays dynamic; if that cannot convert or run and
  `sequence_length` is given, the model is converted again with the axis
  fixed to that length (recorded as `fixed_sequence_length`).
- `model.onnx`: the same signature converted with tf2onnx (opset 17), with
  the batch axis named `batch` and a dynamic sequence axis `<input>_length`.
- With a `preprocessor` (a Keras layer from raw strings to the model's
  inputs, such as `kerasattn.text.TextPreprocessor`): `saved_model/` has
  two signatures, `serving_default` taking a `(B,)` string tensor `text`
  (preprocessor, then model) and `serving_ids` taking the model's inputs;
  TFLite and ONNX are converted from `serving_ids` and take ids, and
  `vocabulary.txt` (the preprocessor's vocabulary) is written beside them.
  The string signature is checked on the sample strings against
  `model(preprocessor(strings))` (manifest key `saved_model_strings`), and
  the manifest's `preprocessing` entry describes the preprocessor and says
  which artifacts take strings and which ids.
- `manifest.json`: `dtype_policy` (what the model's layers compute with),
  `computed_in` (always `float32`: a mixed-precision model is served as its
  float32 computation, `float32_copy`, since LiteRT's built-in kernels take
  no bfloat16; for such a model `float32_vs_dtype_policy` records how far
  the float32 outputs are from the mixed-precision model's on the sample
  inputs, information rather than a check), and per artifact its path, size in bytes, runtime,
  signature, largest absolute difference from the Keras model (overall and
  per output), tolerance, and median latency at batch 1 and at
  `latency_batch_size`.

Each artifact is loaded in its own runtime — `tf.saved_model.load`, the
LiteRT interpreter (`ai_edge_litert.interpreter.Interpreter`, one thread),
onnxruntime (one intra-op and one inter-op thread) — and run on the sample
inputs; with a dynamic sequence axis, at two lengths. Every output must
satisfy `max|keras - artifact| <= tolerance * max(1, max|keras|)`: relative
to the output's scale when it exceeds 1, absolute below (probabilities,
attention weights). The default tolerances (`DEFAULT_TOLERANCES`):

- `1e-4` for the SavedModel, TFLite float32 and ONNX. They compute the same
  float32 arithmetic as Keras, differing only in operation order and
  fusion; measured differences on the test models are 0 to 3e-7. 1e-4
  leaves a margin for deeper models, while a real fault (a dropped mask, a
  wrong transpose) moves outputs by 1e-2 or more.
- `1e-2` for `"float16"`: weights are rounded to float16 (relative error up
  to 2**-11, about 5e-4) and dequantized to float32; the errors add up over
  the layers and sharp softmaxes amplify them. Measured: 5e-6 to 2e-5 on
  random small models, 5e-4 to 2e-3 on trained `zoo demo` classifiers.
- `5e-2` for `"dynamic_int8"`: weights are int8 per channel (rounding up to
  1/254 of a channel's largest weight) and the matrix products quantize
  their inputs on the fly, from each input's own range. Measured: 4e-4 to 4e-3 on the same
  models, 3e-2 on a random encoder-decoder. The converter leaves weights
  under 1024 elements in float32.
- `1e-1` for `"full_int8"`: every activation is int8 on a range calibrated
  from `representative_data`, so each op adds up to half a step (1/510) of
  its range and the steps compound. Inputs outside the calibrated ranges
  fare worse; give representative data like the inputs the model will see.

Tolerances can be set per artifact with `tolerances={"full_int8": 0.2}`;
the check fails rather than passing a model that is off.

Latency is the median of `latency_runs` timed runs after one warm-up run,
at batch 1 (the first sample row) and at `latency_batch_size` (sample rows
repeated), on one thread for LiteRT and onnxruntime. TensorFlow's thread
pools are fixed when its runtime starts, so the SavedModel is timed with
this process's setting; the manifest records its intra-op thread count, or
`null` for TensorFlow's default (all cores).
"""

from kerasattn.export._converters import convert_onnx
from kerasattn.export._converters import convert_tflite
from kerasattn.export._errors import ExportError
from kerasattn.export._exporter import DEFAULT_TOLERANCES
from kerasattn.export._exporter import FORMATS
from kerasattn.export._exporter import MANIFEST
from kerasattn.export._exporter import QUANTIZE_MODES
from kerasattn.export._exporter import check_out_dir
from kerasattn.export._exporter import export
from kerasattn.export._exporter import size_bytes
from kerasattn.export._exporter import staged
from kerasattn.export._precision import float32_copy
from kerasattn.export._runtimes import LiteRTRuntime
from kerasattn.export._runtimes import OnnxRuntime
from kerasattn.export._runtimes import SavedModelRuntime
from kerasattn.export._runtimes import median_latency_ms

# For exporters of other signatures (the recommender's retrieval SavedModel, the translator's
# decoding loop): the staging folder, the output-folder check, artifact sizes, the converters
# of one SavedModel signature, the runtimes each format is checked in, and their timing.
__all__ = [
    "DEFAULT_TOLERANCES", "ExportError", "FORMATS", "LiteRTRuntime", "MANIFEST", "OnnxRuntime",
    "QUANTIZE_MODES", "SavedModelRuntime", "check_out_dir", "convert_onnx", "convert_tflite",
    "export", "float32_copy", "median_latency_ms", "size_bytes", "staged",
]
