"""The layers give the same results under JAX (and PyTorch, where installed)
as under TensorFlow: they use `keras.ops` only. Besides the forward
comparison, every layer passes the checks of `tests/backend_checks.py`
(serialization, masks, gradients, fresh kernels) under each backend."""

import json

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import kerasattn.layers
from tests import backend_checks
from tests import backend_probe
from tests import harness


class BackendAgreementTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("jax", "torch")
    def test_layers_match_tensorflow(self, backend):
        with harness.script_output_under_backend(
            backend, "backend_probe.py", "outputs.npz"
        ) as path:
            other = dict(np.load(path))
        self.assertEqual(backend, str(other.pop("backend")))
        for name, (make_layer, kwargs) in backend_probe.CASES.items():
            for i, want in enumerate(backend_probe.run_case(make_layer, kwargs)):
                with self.subTest(case=name, output=i):
                    self.assertAllClose(want, other[f"{name}/{i}"], atol=1e-5, rtol=1e-5)


def _failures(results: dict) -> dict:
    return {
        f"{case}/{check}": message
        for case, checks in results.items()
        for check, message in checks.items()
        if message != "ok"
    }


class BackendChecksTest(tf.test.TestCase, parameterized.TestCase):
    def test_cases_cover_every_layer(self):
        covered = {case.make_layer().__class__.__name__ for case in backend_checks.CASES.values()}
        self.assertEqual(set(kerasattn.layers.__all__), covered)

    def test_checks_pass_under_tensorflow(self):
        results = backend_checks.run_all()
        self.assertEqual({}, _failures(results))
        self.assertEqual(set(backend_checks.CASES), set(results))

    @parameterized.parameters("jax", "torch")
    def test_checks_pass_under(self, backend):
        with harness.script_output_under_backend(
            backend, "backend_checks.py", "checks.json", timeout=900
        ) as path:
            with open(path) as f:
                report = json.load(f)
        self.assertEqual(backend, report["backend"])
        self.assertEqual(set(backend_checks.CASES), set(report["results"]))
        for checks in report["results"].values():
            self.assertEqual(set(backend_checks.CHECKS), set(checks))
        self.assertEqual({}, _failures(report["results"]))

    def test_checks_catch_faults(self):
        # A layer whose two kernels share one initializer instance, whose
        # masked rows are not zero and whose config does not round-trip.
        class Faulty(keras.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.initializer = keras.initializers.GlorotUniform()

            def build(self, inputs_shape):
                shape = (inputs_shape[-1], inputs_shape[-1])
                self.a = self.add_weight(shape=shape, initializer=self.initializer)
                self.b = self.add_weight(shape=shape, initializer=self.initializer)

            def call(self, inputs, mask=None):
                return keras.ops.matmul(inputs, self.a + self.b)

            def get_config(self):
                return {**super().get_config(), "extra": 1}

        case = backend_checks.Case(
            Faulty, dict(inputs=backend_checks.QUERY), {}, zero_rows=(1,), wrt="inputs",
            zero_grad=np.ones(backend_checks.QUERY.shape, bool),
        )
        for name, check in backend_checks.CHECKS.items():
            with self.subTest(check=name):
                with self.assertRaises(Exception):
                    check(case)
