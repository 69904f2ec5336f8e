"""Tests of kerasattn.layers.attention_pooling.AttentionPooling."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from kerasattn.layers.attention_pooling import AttentionPooling
from tests import harness

BATCH, LENGTH, WIDTH = 2, 5, 4
# Sequence 0 has two padding positions; sequence 1 is all padding.
MASK = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
FULLY_MASKED_ROWS = (np.array([1]),)
# (num_queries, units) combinations: plain dot, HAN projection, several queries.
CONFIGS = ((1, None), (1, 6), (3, None), (3, 6))


def reference(layer, inputs, mask=None, return_attention_scores=False):
    """NumPy attention pooling in float64 from the layer's weights."""
    x = np.asarray(inputs, "float64")
    query = np.asarray(layer.query.numpy(), "float64")  # (N, U or D)
    if layer.units is None:
        keys, scale = x, 1.0 / np.sqrt(x.shape[-1])
    else:
        kernel = np.asarray(layer.kernel.numpy(), "float64")
        bias = np.asarray(layer.bias.numpy(), "float64")
        keys, scale = np.tanh(x @ kernel + bias), 1.0
    scores = np.einsum("btu,nu->bnt", keys, query) * scale
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask).astype(bool), x.shape[:2])[:, None, :]
    weights = harness.numpy_masked_softmax(scores, mask)
    output = weights @ x  # (B, N, D)
    if layer.num_queries == 1:
        output, weights = output[:, 0], weights[:, 0]
    return (output, weights) if return_attention_scores else output


def sequence(length=LENGTH):
    return np.random.default_rng(3).normal(size=(BATCH, length, WIDTH)).astype("float32")


class AttentionPoolingTest(harness.LayerTestCase):
    def masked_inputs(self):
        return {"inputs": sequence(), "mask": MASK}, {}

    def test_hand_computed(self):
        # units=None, D = 2, query u = [1, 1], x = [[1, 1], [0, 0]].
        # Scores u·x/√2: 2/√2 = 1.4142136 and 0.
        # Weights: sigmoid(1.4142136) = 0.8044297 and 0.1955703.
        # Output: 0.8044297 * [1, 1] + 0.1955703 * [0, 0].
        inputs = np.array([[[1.0, 1.0], [0.0, 0.0]]], "float32")
        layer = AttentionPooling()
        layer(inputs)
        layer.set_weights([np.ones((1, 2))])
        output, weights = layer(inputs, return_attention_scores=True)
        self.assertAllClose([[0.8044297, 0.8044297]], output, atol=1e-6)
        self.assertAllClose([[0.8044297, 0.1955703]], weights, atol=1e-6)
        # units=1, W = [[1], [1]], b = [0], u = [2]: keys tanh(2) = 0.9640276
        # and tanh(0) = 0; scores 1.9280552 and 0; sigmoid(1.9280552) =
        # 0.8730340, so the output is 0.8730340 * [1, 1].
        layer = AttentionPooling(units=1)
        layer(inputs)
        layer.set_weights([np.ones((2, 1)), np.zeros(1), np.full((1, 1), 2.0)])
        self.assertAllClose([[0.8730340, 0.8730340]], layer(inputs), atol=1e-6)

    def test_matches_reference(self):
        for num_queries, units in CONFIGS:
            for mask in (None, MASK):
                with self.subTest(num_queries=num_queries, units=units, mask=mask is not None):
                    args = {"inputs": sequence()}
                    if mask is not None:
                        args["mask"] = mask
                    output, weights = self.assert_matches_reference(
                        AttentionPooling(num_queries, units), (args, {}), reference,
                        return_attention_scores=True,
                    )
                    out_shape = (BATCH, WIDTH) if num_queries == 1 else (BATCH, 3, WIDTH)
                    self.assertEqual(out_shape, output.shape)
                    self.assertEqual(out_shape[:-1] + (LENGTH,), weights.shape)

    def test_mask_in_any_dtype_and_broadcast(self):
        layer = AttentionPooling(units=6)
        for mask in (MASK, MASK.astype("int32"), MASK.astype("float32"), MASK[0]):
            with self.subTest(dtype=str(mask.dtype), shape=mask.shape):
                args = {"inputs": sequence(), "mask": mask}
                self.assert_matches_reference(
                    layer, (args, {}), reference, return_attention_scores=True
                )

    def test_fully_masked_sequence_is_zero_in_every_dtype(self):
        tolerance = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}
        for dtype, tol in tolerance.items():
            for num_queries, units in CONFIGS:
                with self.subTest(dtype=dtype, num_queries=num_queries, units=units):
                    layer = AttentionPooling(num_queries, units, dtype=dtype)
                    output, weights = self.assert_matches_reference(
                        layer, self.masked_inputs(), reference, atol=tol,
                        return_attention_scores=True,
                    )
                    self.assertEqual(keras.backend.standardize_dtype(output.dtype), dtype)
                    self.assert_all_finite((output, weights))
                    self.assertAllEqual(np.zeros_like(output[1]), output[1])
                    self.assertAllEqual(np.zeros_like(weights[1]), weights[1])

    def test_implicit_mask_consumed_not_propagated(self):
        ids = np.array([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0]])
        embedding = keras.layers.Embedding(8, WIDTH, mask_zero=True)
        layer = AttentionPooling(units=6)
        embedded = embedding(ids)
        pooled = layer(embedded)
        self.assertAllClose(reference(layer, embedded.numpy(), ids > 0), pooled, atol=1e-5)
        self.assertIsNone(getattr(pooled, "_keras_mask", None))
        self.assertIsNone(layer.compute_mask(embedded, embedded._keras_mask))
        # Functional: no mask on the output and no "destroys the mask" warning.
        ids_in = keras.Input((None,), dtype="int32")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            symbolic = layer(embedding(ids_in))
            outputs = keras.layers.Dense(2)(symbolic)
        self.assertIsNone(getattr(symbolic, "_keras_mask", None))
        model = keras.Model(ids_in, [symbolic, outputs])
        self.assertAllClose(pooled, model(ids)[0], atol=1e-6)
        # Padding positions do not matter, whatever is stored there.
        noisy = embedded.numpy()
        noisy[ids == 0] = 100.0
        self.assertAllClose(pooled, layer(noisy, mask=ids > 0), atol=1e-6)

    def test_weights_before_dropout_and_dropout_only_in_training(self):
        layer = AttentionPooling(num_queries=3, dropout=0.5, seed=2)
        inputs = tf.constant(sequence())
        mask = tf.constant(MASK)
        inference, weights = layer(inputs, mask=mask, return_attention_scores=True)
        self.assertAllClose(reference(layer, sequence(), MASK), inference, atol=1e-5)
        self.assertAllClose(inference, layer(inputs, mask=mask, training=False), atol=0)
        trained, train_weights = layer(
            inputs, mask=mask, training=True, return_attention_scores=True
        )
        self.assertNotAllClose(inference, trained)
        self.assertAllClose(weights, train_weights, atol=1e-6)
        self.assertAllEqual(np.zeros((3, WIDTH)), trained[1])

    def test_gradients_finite_and_zero_at_masked_positions(self):
        for num_queries, units in CONFIGS:
            with self.subTest(num_queries=num_queries, units=units):
                self.check_gradients(
                    AttentionPooling(num_queries, units), self.masked_inputs(), "inputs",
                    zero_grad_mask=~MASK,
                )

    def test_fresh_kernels_differ(self):
        # units = width = num_queries: `W` and the queries are both (D, D).
        width = sequence().shape[-1]
        self.check_fresh_kernels_differ(
            lambda: AttentionPooling(num_queries=width, units=width), self.masked_inputs()
        )

    def test_serialization_round_trip(self):
        self.check_serialization(
            lambda: AttentionPooling(
                num_queries=2, units=3, dropout=0.1, seed=4, kernel_regularizer="l2"
            ),
            self.masked_inputs(),
        )

    def test_mixed_precision(self):
        for num_queries, units in ((1, None), (3, 6)):
            with self.subTest(num_queries=num_queries, units=units):
                self.check_mixed_precision(
                    lambda: AttentionPooling(num_queries, units), self.masked_inputs(),
                    fully_masked_rows=FULLY_MASKED_ROWS, return_attention_scores=True,
                )

    def test_xla(self):
        self.check_xla(lambda: AttentionPooling(2, units=6), self.masked_inputs())

    def test_output_spec(self):
        for num_queries, units in CONFIGS:
            for kwargs in ({}, {"return_attention_scores": True}):
                with self.subTest(num_queries=num_queries, units=units, **kwargs):
                    self.check_output_spec(
                        lambda: AttentionPooling(num_queries, units),
                        (self.masked_inputs()[0], kwargs),
                    )
        self.assertEqual((None, 3, 4), AttentionPooling(3).compute_output_shape((None, 7, 4)))

    def test_call_errors(self):
        x = sequence()
        self.assert_value_error(
            lambda: AttentionPooling()(x[:, 0]),
            "Expected `inputs` of rank 3", "inputs.shape=(2, 4)",
        )
        self.assert_value_error(
            lambda: AttentionPooling()(keras.Input((5,))), "Expected `inputs` of rank 3"
        )
        self.assert_value_error(
            lambda: AttentionPooling()(keras.Input((5, None))),
            "Expected `inputs` with a static last dimension",
        )
        for mask in (MASK[:, :3], MASK[None]):
            self.assert_value_error(
                lambda: AttentionPooling()(x, mask=mask), "`mask`", f"mask.shape={mask.shape}"
            )
            self.assert_value_error(
                lambda: AttentionPooling()(
                    keras.Input((5, 4), batch_size=2),
                    mask=keras.Input(mask.shape[1:], batch_size=mask.shape[0], dtype="bool"),
                ),
                "`mask`", f"mask.shape={mask.shape}",
            )
        for units in (None, 6):
            layer = AttentionPooling(units=units)
            layer(x)
            self.assert_value_error(
                lambda: layer(x[..., :3]),
                "Expected `inputs` with last dimension 4", "inputs.shape=(2, 5, 3)",
            )

    def test_constructor_errors(self):
        for value in (0, 1.5, None):
            self.assert_value_error(
                lambda: AttentionPooling(num_queries=value),
                "Expected `num_queries` to be a positive integer",
                f"received: num_queries={value!r}",
            )
        self.assert_value_error(
            lambda: AttentionPooling(units=0),
            "Expected `units` to be a positive integer or None", "received: units=0",
        )
        self.assert_value_error(
            lambda: AttentionPooling(dropout=1.5),
            "Expected `dropout` to be a float in [0, 1)", "received: dropout=1.5",
        )

    def test_fit_in_functional_model(self):
        ids = keras.Input((None,), dtype="int32")
        x = keras.layers.Embedding(10, WIDTH, mask_zero=True)(ids)
        layer = AttentionPooling(num_queries=2, units=6)
        x = keras.layers.Flatten()(layer(x))
        model = keras.Model(ids, keras.layers.Dense(1)(x))
        # Adam moves every weight with a nonzero gradient, however small at init.
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        rng = np.random.default_rng(1)
        data = rng.integers(1, 10, size=(6, LENGTH))
        data[:, 3:] = 0
        before = [w.numpy().copy() for w in layer.trainable_weights]
        history = model.fit(data, rng.normal(size=(6, 1)), batch_size=2, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        for old, new in zip(before, layer.trainable_weights):
            self.assertNotAllClose(old, new.numpy(), msg=new.name)
