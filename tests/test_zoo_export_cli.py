"""`python -m zoo export`: a saved .keras file exported, and every kind of bad input."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

import kerasattn.export
import zoo.export
from tests.test_export import classifier, gated_model, token_ids
from zoo import __main__ as cli


def run_cli(*argv):
    """Runs `zoo export ...` in this process; returns (exit status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["export", *argv])
    return code, stdout.getvalue(), stderr.getvalue()


class ZooExportCliTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.model_path = os.path.join(cls.root, "classifier.keras")
        classifier().save(cls.model_path)
        rng = np.random.default_rng(3)
        cls.sample_path = os.path.join(cls.root, "sample.npz")
        np.savez(cls.sample_path, tokens=token_ids(rng, 3, 7))
        cls.calibration_path = os.path.join(cls.root, "calibration.npz")
        np.savez(cls.calibration_path, token_ids(rng, 32, 7))  # positional: arr_0
        cls.bad_shape_path = os.path.join(cls.root, "bad_shape.npz")
        np.savez(cls.bad_shape_path, tokens=np.ones((4, 7, 2), "int32"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)
        super().tearDownClass()

    def out_dir(self):
        return os.path.join(tempfile.mkdtemp(dir=self.root), "out")

    def test_exports_a_keras_file(self):
        out = self.out_dir()
        code, stdout, stderr = run_cli(
            self.model_path,
            "--out", out,
            "--formats", "tflite,onnx",
            "--quantize", "float32,full_int8",
            "--sample-inputs", self.sample_path,
            "--representative-data", self.calibration_path,
            "--latency-runs", "2",
        )
        self.assertEqual(0, code, stderr)
        self.assertCountEqual(
            ["model_float32.tflite", "model_full_int8.tflite", "model.onnx", "manifest.json"],
            os.listdir(out),
        )
        with open(os.path.join(out, "manifest.json")) as file:
            manifest = json.load(file)
        self.assertEqual("given", manifest["sample_inputs"])
        self.assertEqual({"tokens": [3, 7]}, manifest["verified_input_shapes"][0])
        # The summary table has a row per artifact with its difference.
        for name, artifact in manifest["artifacts"].items():
            row = next(line for line in stdout.splitlines() if line.strip().startswith(name))
            self.assertIn(f"{artifact['max_abs_difference']:.2e}", row)
        self.assertIn("ms @ batch 8", stdout)

    def test_export_failure_exits_1_with_one_line(self):
        path = os.path.join(self.root, "gated.keras")
        gated_model().save(path)
        out = self.out_dir()
        code, stdout, stderr = run_cli(path, "--out", out, "--formats", "tflite")
        self.assertEqual(1, code)
        self.assertEqual(1, len(stderr.strip().splitlines()), stderr)
        self.assertRegex(
            stderr, r"^zoo export: tflite float32: .*StridedSlice.*layer 'gate' \(PadGate\)"
        )
        self.assertFalse(os.path.exists(out))

    def assert_bad_input(self, pattern, *argv):
        out = self.out_dir()
        argv = [arg.replace("OUT", out) for arg in argv]
        code, stdout, stderr = run_cli(*argv)
        self.assertEqual(2, code, stderr)
        self.assertEqual(1, len(stderr.strip().splitlines()), stderr)
        self.assertRegex(stderr.strip(), "^zoo export: " + pattern)
        self.assertFalse(os.path.exists(out))

    def test_bad_input_exits_2_with_one_line(self):
        not_a_model = os.path.join(self.root, "notes.keras")
        with open(not_a_model, "w") as file:
            file.write("not a zip\n")
        missing = os.path.join(self.root, "missing.keras")
        cases = [
            (r".*missing\.keras: no such file", missing, "--out", "OUT"),
            (r".*sample\.npz: expected a Keras model file ending in \.keras",
             self.sample_path, "--out", "OUT"),
            (r".*notes\.keras: not a loadable Keras model: ", not_a_model, "--out", "OUT"),
            (r"--quantize: expected a comma-separated list of .*received: 'float32,int4'",
             self.model_path, "--out", "OUT", "--quantize", "float32,int4"),
            (r"--formats: expected a comma-separated list of .*received: 'tflite,coreml'",
             self.model_path, "--out", "OUT", "--formats", "tflite,coreml"),
            (r"--quantize full_int8 needs --representative-data",
             self.model_path, "--out", "OUT", "--quantize", "full_int8"),
            (r"Expected `representative_data` to have shape \(None, None\) and dtype int32, "
             r"received: shape \(4, 7, 2\)",
             self.model_path, "--out", "OUT", "--quantize", "full_int8", "--representative-data",
             self.bad_shape_path),
            (r"--representative-data .*missing\.npz: expected an \.npz file",
             self.model_path, "--out", "OUT", "--quantize", "full_int8", "--representative-data",
             os.path.join(self.root, "missing.npz")),
            (r"Expected `sample_inputs` to have shape \(None, None\) and dtype int32, "
             r"received: shape \(4, 7, 2\)",
             self.model_path, "--out", "OUT", "--sample-inputs", self.bad_shape_path),
            (r"--sequence-length: expected a positive integer, received: 0",
             self.model_path, "--out", "OUT", "--sequence-length", "0"),
        ]
        for pattern, *argv in cases:
            with self.subTest(pattern=pattern):
                self.assert_bad_input(pattern, *argv)

    def test_existing_out_needs_overwrite(self):
        out = self.out_dir()
        os.makedirs(out)
        code, _, stderr = run_cli(self.model_path, "--out", out, "--formats", "saved_model")
        self.assertEqual(2, code)
        self.assertRegex(
            stderr, r"^zoo export: --out .*out: exists; pass --overwrite to replace it\n$"
        )
        self.assertEqual([], os.listdir(out))

    def test_choices_match_the_library(self):
        self.assertEqual(kerasattn.export.FORMATS, zoo.export.FORMATS)
        self.assertEqual(kerasattn.export.QUANTIZE_MODES, zoo.export.QUANTIZE_MODES)

    def test_module_entry_point(self):
        # The real `python -m zoo export`, on input it rejects before loading TensorFlow.
        result = subprocess.run(
            [sys.executable, "-m", "zoo", "export", os.path.join(self.root, "missing.keras"),
             "--out", self.out_dir()],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.assertEqual(2, result.returncode)
        self.assertRegex(result.stderr, r"(^|\n)zoo export: .*missing\.keras: no such file\n$")
