"""Reusable checks for kerasattn layers.

A layer's test case subclasses `LayerTestCase` and calls the checks below
with a layer factory and its call inputs, instead of re-writing the same
save/load, precision, XLA and gradient code in every test file.

The checks that depend most on the backend (serialization, masks and fully
masked rows, gradients, fresh kernels) also run for every layer under JAX (and
PyTorch, where installed): `tests/backend_checks.py` holds them without
TensorFlow, and `tests/test_backends.py` runs them in a subprocess per backend.

Call inputs are given as `(args, kwargs)`: `args` is a dict of named tensor
arguments (NumPy arrays, or lists of them) that become `keras.Input`s in a
functional model; `kwargs` holds non-tensor call arguments such as
`use_causal_mask=True`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tests import backend_checks

CallInputs = Tuple[Dict[str, Any], Dict[str, Any]]

PRECISION_TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 1e-1}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def script_output_under_backend(
    backend: str, script: str, filename: str, timeout: int = 600
) -> Iterator[str]:
    """Runs `tests/<script> OUT` with `KERAS_BACKEND=backend` in a subprocess.

    Skips the test when `backend` is not installed; yields the path of the
    file OUT (named `filename`, in a temporary folder) that the script wrote.
    """
    if importlib.util.find_spec(backend) is None:
        raise unittest.SkipTest(f"{backend} is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, filename)
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "tests", script), path],
            env=env, check=True, capture_output=True, timeout=timeout,
        )
        yield path


def first_output(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def to_numpy(x):
    return tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), x)


def functional_model(layer: keras.layers.Layer, inputs: CallInputs) -> keras.Model:
    """Wraps `layer` in a functional model whose inputs mirror `inputs`.

    The batch dimension is left dynamic; all other dimensions are static.
    """
    args, kwargs = inputs
    symbolic = backend_checks.symbolic_inputs(args)
    outputs = layer(**symbolic, **kwargs)
    return keras.Model(inputs=symbolic, outputs=outputs)


def call_eager(layer: keras.layers.Layer, inputs: CallInputs, **extra):
    args, kwargs = inputs
    tensors = tree.map_structure(keras.ops.convert_to_tensor, args)
    return layer(**tensors, **kwargs, **extra)


class LayerTestCase(tf.test.TestCase):
    """`tf.test.TestCase` with the layer checks every kerasattn layer passes."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1234)
        self._policy = keras.config.dtype_policy()

    def tearDown(self):
        keras.config.set_dtype_policy(self._policy)
        super().tearDown()

    # -- numerics -----------------------------------------------------------

    def assert_matches_reference(
        self,
        layer: keras.layers.Layer,
        inputs: CallInputs,
        reference: Callable[..., Any],
        atol: float = 1e-5,
        **call_extra,
    ):
        """Compares the layer's eager output with `reference(layer, **args)`.

        `reference` is a plain-NumPy implementation of the layer's formula; it
        receives the built layer (to read its weights) and the NumPy inputs
        plus the static call kwargs, and returns arrays structured like the
        layer's outputs.
        """
        outputs = to_numpy(call_eager(layer, inputs, **call_extra))
        args, kwargs = inputs
        expected = reference(layer, **args, **kwargs, **call_extra)
        for got, want in zip(tree.flatten(outputs), tree.flatten(expected)):
            self.assertAllClose(want, got, atol=atol, rtol=atol)
        return outputs

    def assert_all_finite(self, structure):
        for x in tree.flatten(to_numpy(structure)):
            self.assertTrue(np.all(np.isfinite(x.astype("float32"))), "found NaN or inf")

    # -- gradients ----------------------------------------------------------

    def check_gradients(
        self,
        layer: keras.layers.Layer,
        inputs: CallInputs,
        wrt: str,
        zero_grad_mask: Optional[np.ndarray] = None,
        **call_extra,
    ):
        """Gradients of the output sum w.r.t. input `wrt` (a tensor argument,
        or every tensor of a list argument) and the weights are finite; where
        `zero_grad_mask` is True the input gradient is zero (for example,
        keys no query may attend to).

        Returns the input gradients (a list, one per watched tensor) followed
        by the weight gradients."""
        args, kwargs = inputs
        tensors = tree.map_structure(tf.convert_to_tensor, args)
        watched = tree.flatten(tensors[wrt])
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outputs = layer(**tensors, **kwargs, **call_extra, training=False)
            loss = tf.reduce_sum(tf.cast(first_output(outputs), "float32"))
        grads = tape.gradient(loss, watched + layer.trainable_variables)
        for grad in grads[: len(watched)]:
            self.assertIsNotNone(grad, f"no gradient reaches `{wrt}`")
        for grad in grads:
            if grad is not None:
                self.assertTrue(np.all(np.isfinite(grad.numpy())), "non-finite gradient")
        if zero_grad_mask is not None:
            for grad in grads[: len(watched)]:
                masked = grad.numpy()[np.asarray(zero_grad_mask)]
                self.assertAllClose(np.zeros_like(masked), masked, atol=1e-7)
        return grads

    # -- serialization ------------------------------------------------------

    def check_serialization(self, make_layer: Callable[[], keras.layers.Layer], inputs: CallInputs):
        """`get_config` -> `from_config` restores the config, and a `.keras`
        file reloads with no `custom_objects` to identical outputs."""
        layer = make_layer()
        config = layer.get_config()
        restored = layer.__class__.from_config(config)
        self.assertEqual(config, restored.get_config())

        model = functional_model(layer, inputs)
        expected = to_numpy(model(inputs[0]))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        got = to_numpy(reloaded(inputs[0]))
        for want, have in zip(tree.flatten(expected), tree.flatten(got)):
            self.assertAllClose(want, have, atol=0, rtol=0)
        inner = [inner for inner in reloaded.layers if inner.__class__ is layer.__class__]
        self.assertLen(inner, 1, "the reloaded model lost the layer's class")

    # -- precision ----------------------------------------------------------

    def check_mixed_precision(
        self,
        make_layer: Callable[[], keras.layers.Layer],
        inputs: CallInputs,
        fully_masked_rows: Optional[Tuple] = None,
        policies=("mixed_float16", "mixed_bfloat16"),
        **call_extra,
    ):
        """Under each policy the layer keeps float32 variables, returns its
        compute dtype, stays finite, agrees with float32 within the policy's
        tolerance, and (where `fully_masked_rows` indexes the main output)
        returns exact zeros for rows with nothing to attend to."""
        reference_layer = make_layer()
        reference = to_numpy(call_eager(reference_layer, inputs, **call_extra))
        weights = reference_layer.get_weights()
        for policy in policies:
            with self.subTest(policy=policy):
                keras.config.set_dtype_policy(policy)
                try:
                    layer = make_layer()
                    outputs = call_eager(layer, inputs, **call_extra)
                    layer.set_weights(weights)
                    outputs = call_eager(layer, inputs, **call_extra)
                finally:
                    keras.config.set_dtype_policy(self._policy)
                compute_dtype = policy.split("_")[1]
                for variable in layer.weights:
                    self.assertEqual(variable.dtype, "float32")
                main = first_output(outputs)
                self.assertEqual(keras.backend.standardize_dtype(main.dtype), compute_dtype)
                self.assert_all_finite(outputs)
                tol = PRECISION_TOLERANCE[policy]
                for want, got in zip(tree.flatten(reference), tree.flatten(to_numpy(outputs))):
                    self.assertAllClose(want, got.astype("float32"), atol=tol, rtol=tol)
                if fully_masked_rows is not None:
                    rows = np.asarray(to_numpy(main), "float32")[fully_masked_rows]
                    self.assertAllEqual(np.zeros_like(rows), rows)

    # -- compilation --------------------------------------------------------

    def check_xla(self, make_layer: Callable[[], keras.layers.Layer], inputs: CallInputs):
        """The layer in a functional model compiled with `jit_compile=True`
        predicts what it computes eagerly, and trains with `fit`."""
        layer = make_layer()
        model = functional_model(layer, inputs)
        eager = to_numpy(model(inputs[0]))
        model.compile(optimizer="adam", loss="mse", jit_compile=True)
        compiled = model.predict(inputs[0], verbose=0)
        for want, got in zip(tree.flatten(eager), tree.flatten(compiled)):
            self.assertAllClose(want, got, atol=1e-5, rtol=1e-5)
        targets = tree.map_structure(np.zeros_like, compiled)
        history = model.fit(
            inputs[0], targets, epochs=1, batch_size=len(tree.flatten(inputs[0])[0]), verbose=0
        )
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    # -- initialization -----------------------------------------------------

    def check_fresh_kernels_differ(
        self,
        make_layer: Callable[[], keras.layers.Layer],
        inputs: CallInputs,
        min_pairs: int = 1,
    ):
        """Freshly built, no two weights of one shape hold the same values.

        Each kernel must get its own initializer instance (Keras 3's unseeded
        initializers repeat their values on every call of one instance).
        Constant weights (zero biases, unit scales) are left out. At least
        `min_pairs` pairs of same-shape weights must be compared, so that the
        check has something to find."""
        layer = make_layer()
        call_eager(layer, inputs)
        compared, identical = backend_checks.identical_fresh_weights(layer)
        self.assertEqual([], identical, "weights initialized to identical values")
        self.assertGreaterEqual(compared, min_pairs, "too few same-shape weights to compare")

    # -- symbolic shapes ----------------------------------------------------

    def check_output_spec(self, make_layer: Callable[[], keras.layers.Layer], inputs: CallInputs):
        """Symbolic output shapes (from a functional model) equal the real ones."""
        model = functional_model(make_layer(), inputs)
        real = to_numpy(model(inputs[0]))
        for symbolic, got in zip(tree.flatten(model.outputs), tree.flatten(real)):
            self.assertEqual(tuple(symbolic.shape)[1:], got.shape[1:])

    # -- errors -------------------------------------------------------------

    def assert_value_error(self, fn: Callable[[], Any], *fragments: str):
        """`fn()` raises ValueError whose message contains every fragment."""
        with self.assertRaises(ValueError) as context:
            fn()
        message = str(context.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)


def numpy_masked_softmax(scores: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Reference softmax over the last axis; masked weights are 0, and rows
    with every position masked are all zeros."""
    scores = scores.astype("float64")
    if mask is None:
        mask = np.ones_like(scores, dtype=bool)
    mask = np.broadcast_to(mask.astype(bool), scores.shape)
    shifted = np.where(mask, scores, -np.inf)
    row_max = np.max(np.where(mask, scores, -1e300), axis=-1, keepdims=True)
    exp = np.where(mask, np.exp(shifted - row_max), 0.0)
    total = exp.sum(axis=-1, keepdims=True)
    return np.where(total > 0, exp / np.where(total > 0, total, 1.0), 0.0)


def numpy_causal_mask(query_length: int, key_length: int) -> np.ndarray:
    return np.tril(np.ones((query_length, key_length), dtype=bool))


def requires_gpu(test_fn):
    """Skips a GPU-only test, with a reason, when no GPU is present."""
    import unittest

    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return unittest.skipUnless(has_gpu, "no GPU found by tf.config.list_physical_devices")(test_fn)
