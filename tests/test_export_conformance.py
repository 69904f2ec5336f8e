"""Export conformance: a small model around every layer, exported to every format.

Each probe of `tests/export_probes.py` (padding masks, causal masks and
returned attention scores where its layer has them, a dynamic sequence
length) goes through `kerasattn.export.export` to a SavedModel, TFLite in
every quantize mode and ONNX; `export` runs each artifact in its own runtime
and raises unless it matches the Keras model within the default tolerances.
What cannot export is listed in `KNOWN_FAILURES` with the reason, and checked
to still fail, so that the list, and the README table made from it, stay
true.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

import keras
import numpy as np
import onnxruntime
import tensorflow as tf
from absl.testing import parameterized
from ai_edge_litert.interpreter import Interpreter

from kerasattn import layers
from kerasattn.export import DEFAULT_TOLERANCES, export
from tests import export_probes

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORMATS = ("saved_model", "tflite", "onnx")
MODES = ("float32", "float16", "dynamic_int8", "full_int8")
ARTIFACTS = ("saved_model",) + tuple(f"tflite_{mode}" for mode in MODES) + ("onnx",)
RUNTIMES = {"saved_model": "tf.saved_model.load", "tflite": "ai_edge_litert", "onnx": "onnxruntime"}
# Latency is not under test here; one timed run keeps the export quick.
LATENCY = dict(latency_runs=1, latency_batch_size=2)

CHUNKED_LOOP = (
    'implementation="chunked" runs its online softmax in a while loop whose running maximum starts '
    "at the masked score (-0.7 x float32 max); the quantizer gives that loop state an int8 scale "
    "and the LiteRT interpreter aborts (SIGABRT) preparing the quantized loop body, which `export` "
    "catches by running the file in a child process first"
)

CRF_CONSTRAINTS = (
    "a CRF `scheme` adds a fixed -1e4 score to forbidden transitions, starts and ends; "
    "full-int8 quantization gives the constrained scores an int8 range spanning -1e4 (scale "
    "about 39), so the allowed scores round to one value and the decoded tags differ (by 2 "
    "on the probe), above the tolerance"
)

# (probe, artifact) -> (how exporting it ends, why). How it ends is
# "SIGABRT" (the process dies) or "ExportError(<kind>)"; each is checked in a
# child process, which a crashing runtime cannot take the tests down with.
KNOWN_FAILURES = {
    ("multi_head_attention_chunked", "tflite_full_int8"): (
        "ExportError(verification)",
        CHUNKED_LOOP,
    ),
    ("crf_iob2", "tflite_full_int8"): ("ExportError(verification)", CRF_CONSTRAINTS),
}

# The README's table: one row per layer, one column per artifact.
README = ROOT / "README.md"
README_COLUMNS = {
    "SavedModel": "saved_model",
    "TFLite float32": "tflite_float32",
    "TFLite float16": "tflite_float16",
    "TFLite dynamic int8": "tflite_dynamic_int8",
    "TFLite full int8": "tflite_full_int8",
    "ONNX": "onnx",
}


def _export_arguments(artifact: str) -> dict:
    """The `formats` and `quantize` arguments that write just `artifact`."""
    if artifact.startswith("tflite_"):
        return dict(formats=("tflite",), quantize=(artifact[len("tflite_") :],))
    return dict(formats=(artifact,))


def _longer(inputs: dict, steps: int = 3) -> dict:
    """`inputs` with every sequence axis (axis 1) longer by `steps` tokens."""
    return {
        name: np.concatenate([array, array[:, :steps]], axis=1) if array.ndim == 2 else array
        for name, array in inputs.items()
    }


def _keras_outputs(model, inputs) -> dict:
    arrays = [inputs[tensor.name] for tensor in model.inputs]
    outputs = keras.tree.flatten(model(arrays[0] if len(arrays) == 1 else arrays, training=False))
    return {f"output_{i}": np.asarray(output) for i, output in enumerate(outputs)}


def _run_tflite(path: str, inputs: dict) -> dict:
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    return runner(**inputs)


def _run_onnx(path: str, inputs: dict) -> dict:
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


# Exports one probe's artifact and prints how that ended.
_CHILD = """
import sys
from kerasattn.export import ExportError, export
from tests import export_probes
from tests.test_export_conformance import LATENCY, _export_arguments

probe, artifact, out_dir = sys.argv[1:]
model, sample, data = export_probes.PROBES[probe]()
try:
    export(model, out_dir, sample_inputs=sample, representative_data=data,
           **_export_arguments(artifact), **LATENCY)
except ExportError as error:
    print(f"ExportError({error.kind})")
    print(error)
    sys.exit(3)
print("EXPORTED")
"""


class ExportConformanceTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.out_dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.out_dir, ignore_errors=True)

    def test_every_layer_has_a_probe(self):
        every_layer = {getattr(layers, name) for name in layers.__all__}
        self.assertEqual(every_layer, set(export_probes.PROBE_LAYERS.values()))
        self.assertEqual(set(export_probes.PROBES), set(export_probes.PROBE_LAYERS))

    def test_known_failures_name_probes_and_artifacts(self):
        for (probe, artifact), (how, reason) in KNOWN_FAILURES.items():
            self.assertIn(probe, export_probes.PROBES)
            self.assertIn(artifact, ARTIFACTS)
            self.assertRegex(how, r"^(SIGABRT|ExportError\((argument|conversion|verification)\))$")
            self.assertTrue(reason)

    def test_readme_table_lists_every_layer_and_known_failure(self):
        text = README.read_text()
        self.assertIn("### Export support", text)
        section = text.split("### Export support", 1)[1].split("\n#", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("|")]
        header = [cell.strip() for cell in rows[0].strip("|").split("|")]
        self.assertEqual(["layer", *README_COLUMNS], header)
        table = {}
        for row in rows[2:]:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            table[cells[0].strip("`")] = dict(zip(README_COLUMNS.values(), cells[1:]))
        self.assertCountEqual(layers.__all__, table)
        for layer_name, cells in table.items():
            probes = [
                p for p, cls in export_probes.PROBE_LAYERS.items() if cls.__name__ == layer_name
            ]
            for artifact, cell in cells.items():
                failing = any((probe, artifact) in KNOWN_FAILURES for probe in probes)
                passing = any((probe, artifact) not in KNOWN_FAILURES for probe in probes)
                with self.subTest(layer=layer_name, artifact=artifact):
                    self.assertEqual(failing, "✗" in cell, cell)
                    self.assertEqual(passing, "✓" in cell, cell)

    @parameterized.named_parameters((name, name) for name in export_probes.PROBES)
    def test_exports_to_every_format_with_parity(self, probe):
        model, sample, data = export_probes.PROBES[probe]()
        expected = [a for a in ARTIFACTS if (probe, a) not in KNOWN_FAILURES]
        modes = [a[len("tflite_") :] for a in expected if a.startswith("tflite_")]
        out_dir = os.path.join(self.out_dir, probe)
        manifest = export(
            model, out_dir, formats=FORMATS, quantize=modes, sample_inputs=sample,
            representative_data=data, **LATENCY,
        )

        self.assertCountEqual(expected, manifest["artifacts"])
        with open(os.path.join(out_dir, "manifest.json")) as file:
            self.assertEqual(json.loads(json.dumps(manifest)), json.load(file))
        # Every probe has a dynamic sequence axis: checked at two lengths.
        self.assertLen(manifest["verified_input_shapes"], 2)
        # The bound `export` checked: tolerance x max(1, max|keras|) on the
        # sample and on the sample cut to the second length.
        cut = [
            {
                name: array[:, : shapes[name][1]] if array.ndim == 2 else array
                for name, array in sample.items()
            }
            for shapes in manifest["verified_input_shapes"]
        ]
        keras_outputs = _keras_outputs(model, sample)
        scale = max(
            1.0,
            *(
                float(np.max(np.abs(x)))
                for inputs in cut
                for x in _keras_outputs(model, inputs).values()
            ),
        )
        for name, artifact in manifest["artifacts"].items():
            with self.subTest(artifact=name):
                path = os.path.join(out_dir, artifact["path"])
                self.assertTrue(os.path.exists(path), path)
                self.assertGreater(artifact["size_bytes"], 0)
                self.assertIn(RUNTIMES[artifact["format"]], artifact["runtime"])
                self.assertIsNone(artifact["fixed_sequence_length"])
                mode = artifact["quantization"] if artifact["format"] == "tflite" else name
                self.assertEqual(DEFAULT_TOLERANCES[mode], artifact["tolerance"])
                self.assertLessEqual(artifact["max_abs_difference"], artifact["tolerance"] * scale)
                self.assertCountEqual(keras_outputs, artifact["max_abs_difference_per_output"])

        # Independently of `export`: the float32 TFLite and the ONNX model at
        # a length they were never checked at.
        longer = _longer(sample)
        want = _keras_outputs(model, longer)
        for name, run in (("tflite_float32", _run_tflite), ("onnx", _run_onnx)):
            got = run(os.path.join(out_dir, manifest["artifacts"][name]["path"]), longer)
            for output, value in want.items():
                self.assertAllClose(
                    value, got[output], atol=1e-4, rtol=1e-4, msg=f"{name} {output}"
                )

    @parameterized.named_parameters(
        (f"{probe}_{artifact}", probe, artifact) for probe, artifact in KNOWN_FAILURES
    )
    def test_known_failure_still_fails(self, probe, artifact):
        expected, reason = KNOWN_FAILURES[(probe, artifact)]
        out_dir = os.path.join(self.out_dir, "out")
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, probe, artifact, out_dir],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        lines = child.stdout.splitlines()
        if child.returncode == -signal.SIGABRT:
            ended = "SIGABRT"
        elif lines and lines[0].startswith(("ExportError(", "EXPORTED")):
            ended = lines[0]
        else:
            ended = f"exit status {child.returncode}: {child.stderr.strip()[-500:]}"
        self.assertEqual(
            expected, ended,
            f"{probe} / {artifact} {' '.join(lines)[:500]}; update KNOWN_FAILURES and the "
            f"README's export table (listed because: {reason})",
        )
        self.assertFalse(os.path.exists(out_dir))
