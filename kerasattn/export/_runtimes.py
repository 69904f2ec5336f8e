"""Each artifact loaded and run in its own runtime, on named inputs and outputs.

A runtime takes a dict `input name -> array` and returns a dict
`output name -> array`, using the names of the serving signature, which
are the same in the SavedModel, the TFLite models and the ONNX model.
"""

from __future__ import annotations

import copy
import importlib.metadata
import math
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from kerasattn.export._errors import ExportError
from kerasattn.export._inputs import Inputs

# The ops whose multiply-adds `LiteRTRuntime.graph` counts.
_MATMUL_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")

SIGNATURE = "serving_default"
# With a preprocessor, the SavedModel's `serving_default` takes strings under
# this name, and the model's id inputs move to the `serving_ids` signature.
STRING_INPUT = "text"
IDS_SIGNATURE = "serving_ids"


def _version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def _tensor_json(name: str, shape, dtype) -> Dict[str, Any]:
    dims = [None if d is None or isinstance(d, str) or d < 0 else int(d) for d in shape]
    return {
        "name": name,
        "shape": dims,
        "dtype": dtype if dtype == "string" else np.dtype(dtype).name,
    }


def _tf_dtype(dtype) -> Any:
    """A TensorFlow dtype for `_tensor_json`: `"string"`, or the NumPy type."""
    return "string" if dtype.name == "string" else dtype.as_numpy_dtype


def median_latency_ms(call: Callable[[], Any], runs: int) -> float:
    """Median wall time of `call()` over `runs` runs, after one warm-up run."""
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


class SavedModelRuntime:
    """A SavedModel reloaded with `tf.saved_model.load`, run through one signature.

    `signature` names it: `serving_default`, or, for a model exported with
    a preprocessor, `serving_ids` (the model's id inputs); `function` is its
    concrete function. TensorFlow fixes
    its thread pools when its runtime starts, so latency is measured with
    this process's setting: `threads` is the configured intra-op thread
    count, or `None` for TensorFlow's default (all cores).
    """

    def __init__(self, path: str, signature: str = SIGNATURE):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(path)
        self._name = signature
        self.function = self._loaded.signatures[signature]
        self.description = f"tensorflow {tf.__version__} (tf.saved_model.load)"
        self.threads: Optional[int] = tf.config.threading.get_intra_op_parallelism_threads() or None

    def with_signature(self, signature: str) -> "SavedModelRuntime":
        """A runtime of another signature of the same loaded SavedModel (no second load)."""
        other = copy.copy(self)
        other._name = signature
        other.function = self._loaded.signatures[signature]
        return other

    def signature(self) -> Dict[str, Any]:
        _, inputs = self.function.structured_input_signature
        outputs = self.function.structured_outputs
        return {
            "name": self._name,
            "inputs": [
                _tensor_json(name, spec.shape.as_list(), _tf_dtype(spec.dtype))
                for name, spec in sorted(inputs.items())
            ],
            "outputs": [
                _tensor_json(name, spec.shape.as_list(), _tf_dtype(spec.dtype))
                for name, spec in sorted(outputs.items())
            ],
        }

    def _call(self, tensors) -> Dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self.function(**tensors).items()}

    def run(self, inputs: Inputs) -> Dict[str, np.ndarray]:
        return self._call({name: self._tf.constant(array) for name, array in inputs.items()})

    def latency_ms(self, inputs: Inputs, runs: int) -> float:
        tensors = {name: self._tf.constant(array) for name, array in inputs.items()}
        return median_latency_ms(lambda: self._call(tensors), runs)


# Loads a .tflite file and runs its serving signature once on zeros (dynamic
# dimensions set to 2), importing nothing but the interpreter and NumPy.
_SMOKE_RUN = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
inputs = interpreter.get_signature_runner(sys.argv[2]).get_input_details().values()
shapes = [[2 if n < 0 else n for n in d["shape_signature"]] for d in inputs]
for d, shape in zip(inputs, shapes):
    interpreter.resize_tensor_input(d["index"], shape, strict=True)
interpreter.allocate_tensors()
for d, shape in zip(inputs, shapes):
    interpreter.set_tensor(d["index"], np.zeros(shape, d["dtype"]))
interpreter.invoke()
"""


def check_litert_survives(path: str, artifact: str) -> None:
    """Runs a `.tflite` file once in a child process first.

    The LiteRT interpreter aborts the whole process on some graphs it cannot
    prepare (seen: a full-int8 while loop, from MultiHeadAttention's chunked
    path); an export has to report that, not die of it.
    """
    result = subprocess.run(
        [sys.executable, "-c", _SMOKE_RUN, path, SIGNATURE],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode == 0:
        return
    if result.returncode < 0:
        reason = f"it was killed by {signal.Signals(-result.returncode).name}"
    else:
        # A Python exception's own line ("ValueError: ...") says most.
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "Error:" in line]
        reason = (errors or lines or [f"exit status {result.returncode}"])[-1]
    raise ExportError(
        f"{artifact}: the LiteRT interpreter cannot run {path.rsplit('/', 1)[-1]}: {reason}",
        "verification",
    )


class LiteRTRuntime:
    """A `.tflite` file in the LiteRT interpreter (`ai_edge_litert`) on one thread.

    Inputs and outputs are found through the serving signature; an input
    whose shape differs from the current one is resized with
    `resize_tensor_input(..., strict=True)` (only dimensions that are `-1`
    in its `shape_signature` may change) before `allocate_tensors()`.
    """

    def __init__(self, path: str, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
        runner = self._interpreter.get_signature_runner(SIGNATURE)
        self._inputs = runner.get_input_details()
        self._outputs = runner.get_output_details()
        self._shapes: Dict[str, tuple] = {}
        self.description = (
            f"ai-edge-litert {_version('ai-edge-litert')} (ai_edge_litert.interpreter.Interpreter)"
        )
        self.threads: Optional[int] = num_threads

    def signature(self) -> Dict[str, Any]:
        return {
            "name": SIGNATURE,
            "inputs": [
                _tensor_json(name, d["shape_signature"], d["dtype"])
                for name, d in sorted(self._inputs.items())
            ],
            "outputs": [
                _tensor_json(name, d["shape_signature"], d["dtype"])
                for name, d in sorted(self._outputs.items())
            ],
        }

    def _prepare(self, inputs: Inputs) -> Dict[int, np.ndarray]:
        feed = {}
        resized = False
        for name, array in inputs.items():
            details = self._inputs[name]
            if self._shapes.get(name) != array.shape:
                self._interpreter.resize_tensor_input(
                    details["index"], list(array.shape), strict=True
                )
                self._shapes[name] = array.shape
                resized = True
            feed[details["index"]] = array.astype(details["dtype"], copy=False)
        if resized:
            self._interpreter.allocate_tensors()
        return feed

    def _invoke(self, feed: Dict[int, np.ndarray]) -> Dict[str, np.ndarray]:
        for index, array in feed.items():
            self._interpreter.set_tensor(index, array)
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(d["index"]) for name, d in self._outputs.items()}

    def run(self, inputs: Inputs) -> Dict[str, np.ndarray]:
        return self._invoke(self._prepare(inputs))

    def latency_ms(self, inputs: Inputs, runs: int) -> float:
        feed = self._prepare(inputs)
        return median_latency_ms(lambda: self._invoke(feed), runs)

    def graph(self, inputs: Inputs) -> Dict[str, int]:
        """`{"ops", "flops"}` of the file's graph at these inputs' shapes.

        FLOPs count its matrix products (`FULLY_CONNECTED`, `BATCH_MATMUL`,
        `CONV_2D`, `DEPTHWISE_CONV_2D`), two per multiply-add, for the whole
        batch. A second interpreter without the default delegate lists every
        op as converted; it runs once, since shapes computed in the graph are
        known only then.
        """
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_litert.interpreter import OpResolverType

        interpreter = Interpreter(
            model_path=self.path,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        details = interpreter.get_signature_runner(SIGNATURE).get_input_details()
        for name, array in inputs.items():
            interpreter.resize_tensor_input(details[name]["index"], list(array.shape))
        interpreter.allocate_tensors()
        for name, array in inputs.items():
            interpreter.set_tensor(details[name]["index"], array.astype(details[name]["dtype"]))
        interpreter.invoke()
        shapes = {t["index"]: tuple(int(d) for d in t["shape"])
                  for t in interpreter.get_tensor_details()}
        ops = interpreter._get_ops_details()
        flops = 0
        for op in ops:
            name = op["op_name"]
            if name not in _MATMUL_OPS:
                continue
            out = shapes[op["outputs"][0]]
            first, second = shapes[op["inputs"][0]], shapes[op["inputs"][1]]
            if name == "FULLY_CONNECTED":
                depth = first[-1]
            elif name == "BATCH_MATMUL":
                # (..., M, K) x (..., K, N) -> (..., M, N), either side maybe adjoint.
                depth = math.prod(first) * out[-1] // max(1, math.prod(out))
            elif name == "CONV_2D":
                depth = math.prod(second[1:])  # filter (Cout, kh, kw, Cin)
            else:
                depth = second[1] * second[2]  # filter (1, kh, kw, C)
            flops += 2 * math.prod(out) * depth
        return {"ops": len(ops), "flops": int(flops)}


class OnnxRuntime:
    """An `.onnx` file in an onnxruntime CPU session with one intra-op and one inter-op thread."""

    def __init__(self, path: str, num_threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = num_threads
        options.log_severity_level = 3  # errors only: shape-inference warnings are noise here
        self._session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        self._output_names = [output.name for output in self._session.get_outputs()]
        self._input_types = {
            i.name: _ONNX_TYPES.get(i.type, "float32") for i in self._session.get_inputs()
        }
        self.description = f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
        self.threads: Optional[int] = num_threads

    def signature(self) -> Dict[str, Any]:
        return {
            "name": SIGNATURE,
            "inputs": [
                _tensor_json(i.name, i.shape, _ONNX_TYPES.get(i.type, "float32"))
                for i in sorted(self._session.get_inputs(), key=lambda i: i.name)
            ],
            "outputs": [
                _tensor_json(o.name, o.shape, _ONNX_TYPES.get(o.type, "float32"))
                for o in sorted(self._session.get_outputs(), key=lambda o: o.name)
            ],
        }

    def _feed(self, inputs: Inputs) -> Dict[str, np.ndarray]:
        return {
            name: array.astype(self._input_types[name], copy=False)
            for name, array in inputs.items()
        }

    def run(self, inputs: Inputs) -> Dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(None, self._feed(inputs))))

    def latency_ms(self, inputs: Inputs, runs: int) -> float:
        feed = self._feed(inputs)
        return median_latency_ms(lambda: self._session.run(None, feed), runs)


_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
