"""The layers give the same results under JAX (and PyTorch, where installed)
as under TensorFlow: they use `keras.ops` only."""

import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import backend_probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BackendAgreementTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("jax", "torch")
    def test_layers_match_tensorflow(self, backend):
        if importlib.util.find_spec(backend) is None:
            raise unittest.SkipTest(f"{backend} is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "outputs.npz")
            env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
            subprocess.run(
                [sys.executable, os.path.join(ROOT, "tests", "backend_probe.py"), path],
                env=env, check=True, capture_output=True, timeout=600,
            )
            other = dict(np.load(path))
        self.assertEqual(backend, str(other.pop("backend")))
        for name, (make_layer, kwargs) in backend_probe.CASES.items():
            for i, want in enumerate(backend_probe.run_case(make_layer, kwargs)):
                with self.subTest(case=name, output=i):
                    self.assertAllClose(want, other[f"{name}/{i}"], atol=1e-5, rtol=1e-5)
