"""Checks shared by the tests of the single-head attention layers.

`AdditiveAttention` and `DotProductAttention` take MultiHeadAttention's call
arguments (query, value, key, their padding masks, an attention mask, a causal
flag), so the same mask, dtype, save and compile checks apply to both. A test
class mixes `SingleHeadAttentionChecks` into `harness.LayerTestCase` and
supplies `make_layer` and a float64 NumPy `numpy_scores`; the NumPy reference
below adds the masks, the softmax and the weighted sum of the values.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tests import harness

BATCH, Q_LEN, K_LEN = 2, 3, 4

# Masks used by most checks: query (1, 2) is padding, key (0, 3) is padding,
# and the explicit mask leaves query (0, 1) with no key at all.
QUERY_MASK = np.array([[1, 1, 1], [1, 1, 0]], bool)
VALUE_MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
ATTENTION_MASK = np.array(
    [
        [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]],
        [[1, 1, 1, 1], [0, 1, 0, 1], [1, 0, 1, 0]],
    ],
    bool,
)
# Rows of the (B, Tq, Dv) output with nothing to attend to.
FULLY_MASKED_ROWS = (np.array([0, 1]), np.array([1, 2]))
FULLY_MASKED = np.zeros((BATCH, Q_LEN), bool)
FULLY_MASKED[FULLY_MASKED_ROWS] = True


def numpy_attention_mask(
    query_length,
    key_length,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask=False,
):
    """`(B|1, Tq, Tk)` boolean mask from the call's mask arguments."""
    mask = np.ones((1, query_length, key_length), bool)
    if query_mask is not None:
        mask = mask & np.asarray(query_mask).astype(bool)[:, :, None]
    for key_padding in (value_mask, key_mask):
        if key_padding is not None:
            mask = mask & np.asarray(key_padding).astype(bool)[:, None, :]
    if attention_mask is not None:
        mask = mask & np.asarray(attention_mask).astype(bool)
    if use_causal_mask:
        mask = mask & harness.numpy_causal_mask(query_length, key_length)
    return mask


class SingleHeadAttentionChecks:
    """Test methods for a layer with MultiHeadAttention's call signature."""

    query_dim = 5
    key_dim = 6
    value_dim = 3

    def make_layer(self, **kwargs) -> keras.layers.Layer:
        raise NotImplementedError

    def numpy_scores(self, layer, query, key) -> np.ndarray:
        """float64 `(B, Tq, Tk)` scores from the layer's weights."""
        raise NotImplementedError

    # -- reference and inputs -------------------------------------------------

    def reference(
        self,
        layer,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
    ):
        key = value if key is None else key
        query, key, value = (np.asarray(x, "float64") for x in (query, key, value))
        scores = self.numpy_scores(layer, query, key)
        mask = numpy_attention_mask(
            query.shape[1], key.shape[1], query_mask, value_mask, key_mask,
            attention_mask, use_causal_mask,
        )
        weights = harness.numpy_masked_softmax(scores, mask)
        output = weights @ value
        return (output, weights) if return_attention_scores else output

    def tensors(self, q_len=Q_LEN, k_len=K_LEN, key=True):
        rng = np.random.default_rng(7)
        args = {
            "query": rng.normal(size=(BATCH, q_len, self.query_dim)).astype("float32"),
            "value": rng.normal(size=(BATCH, k_len, self.value_dim)).astype("float32"),
        }
        if key:
            args["key"] = rng.normal(size=(BATCH, k_len, self.key_dim)).astype("float32")
        return args

    def masked_inputs(self):
        args = self.tensors()
        args.update(
            query_mask=QUERY_MASK, value_mask=VALUE_MASK, attention_mask=ATTENTION_MASK
        )
        return args, {}

    # -- numerics and masks ---------------------------------------------------

    def test_matches_reference_without_masks(self):
        self.assert_matches_reference(
            self.make_layer(), (self.tensors(), {}), self.reference,
            return_attention_scores=True,
        )

    def test_key_defaults_to_value(self):
        layer = self.make_layer()
        args = self.tensors(key=False)
        implicit = self.assert_matches_reference(layer, (args, {}), self.reference)
        explicit = harness.call_eager(layer, ({**args, "key": args["value"]}, {}))
        self.assertAllClose(implicit, explicit, atol=0, rtol=0)

    def test_padding_masks(self):
        args = self.tensors()
        args.update(query_mask=QUERY_MASK, value_mask=VALUE_MASK)
        self.assert_matches_reference(
            self.make_layer(), (args, {}), self.reference, return_attention_scores=True
        )
        # key_mask applies on top of value_mask.
        args["key_mask"] = np.array([[0, 1, 1, 1], [1, 1, 0, 1]], bool)
        _, weights = self.assert_matches_reference(
            self.make_layer(), (args, {}), self.reference, return_attention_scores=True
        )
        self.assertAllEqual(np.zeros(3), weights[0, :, 0])
        self.assertAllEqual(np.zeros(2), weights[1, :2, 2])

    def test_causal_mask(self):
        args = self.tensors()
        args["value_mask"] = VALUE_MASK
        _, weights = self.assert_matches_reference(
            self.make_layer(), (args, {"use_causal_mask": True}), self.reference,
            return_attention_scores=True,
        )
        future = np.triu(np.ones((Q_LEN, K_LEN), bool), 1)
        self.assertAllEqual(np.zeros((BATCH, future.sum())), weights[:, future])

    def test_explicit_attention_mask_in_any_dtype_and_rank(self):
        layer = self.make_layer()
        for mask in (
            ATTENTION_MASK,
            ATTENTION_MASK.astype("int32"),
            ATTENTION_MASK.astype("float32"),
            ATTENTION_MASK[1],  # (Tq, Tk), broadcast over the batch
            ATTENTION_MASK[:, :1],  # (B, 1, Tk), broadcast over the queries
        ):
            with self.subTest(dtype=str(mask.dtype), shape=mask.shape):
                args = self.tensors()
                args["attention_mask"] = mask
                self.assert_matches_reference(
                    layer, (args, {}), self.reference, return_attention_scores=True
                )

    def test_fully_masked_rows_are_zero_in_every_dtype(self):
        args, _ = self.masked_inputs()
        tolerance = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}
        for dtype, tol in tolerance.items():
            with self.subTest(dtype=dtype):
                layer = self.make_layer(dtype=dtype)
                output, weights = self.assert_matches_reference(
                    layer, (args, {}), self.reference, atol=tol,
                    return_attention_scores=True,
                )
                self.assertEqual(keras.backend.standardize_dtype(output.dtype), dtype)
                self.assert_all_finite((output, weights))
                self.assertAllEqual(np.zeros((2, self.value_dim)), output[FULLY_MASKED_ROWS])
                self.assertAllEqual(np.zeros((2, K_LEN)), weights[FULLY_MASKED_ROWS])

    def test_implicit_masks_consumed_and_propagated(self):
        query_ids = np.array([[1, 2, 3], [4, 5, 0]])
        value_ids = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
        query_embedding = keras.layers.Embedding(8, self.query_dim, mask_zero=True)
        value_embedding = keras.layers.Embedding(8, self.value_dim, mask_zero=True)
        layer = self.make_layer()
        # Eager: the masks ride on the tensors.
        query, value = query_embedding(query_ids), value_embedding(value_ids)
        output = layer(query, value)
        expected = self.reference(
            layer, query.numpy(), value.numpy(),
            query_mask=query_ids > 0, value_mask=value_ids > 0,
        )
        self.assertAllClose(expected, output, atol=1e-5)
        self.assertAllEqual(query_ids > 0, output._keras_mask)
        # Functional: the same, and a downstream layer sees the query mask.
        query_in = keras.Input((Q_LEN,), dtype="int32")
        value_in = keras.Input((K_LEN,), dtype="int32")
        attended = layer(query_embedding(query_in), value_embedding(value_in))
        self.assertIsNotNone(attended._keras_mask)
        pooled = keras.layers.GlobalAveragePooling1D()(attended)
        model = keras.Model([query_in, value_in], [attended, pooled])
        got, got_pooled = model([query_ids, value_ids])
        self.assertAllClose(expected, got, atol=1e-5)
        counts = (query_ids > 0).sum(axis=1, keepdims=True)
        self.assertAllClose(expected.sum(axis=1) / counts, got_pooled, atol=1e-5)

    def test_weights_before_dropout_and_dropout_only_in_training(self):
        args, _ = self.masked_inputs()
        tensors = {k: tf.convert_to_tensor(v) for k, v in args.items()}
        layer = self.make_layer(dropout=0.5, seed=3)
        inference, weights = layer(**tensors, return_attention_scores=True, training=False)
        again = layer(**tensors, training=False)
        self.assertAllClose(inference, again, atol=0, rtol=0)
        expected, expected_weights = self.reference(
            layer, **args, return_attention_scores=True
        )
        self.assertAllClose(expected, inference, atol=1e-5)
        trained, train_weights = layer(**tensors, return_attention_scores=True, training=True)
        self.assertNotAllClose(inference, trained)
        # Returned weights are taken before dropout; dropped rows stay zero.
        self.assertAllClose(expected_weights, train_weights, atol=1e-5)
        self.assertAllEqual(np.zeros((2, self.value_dim)), trained.numpy()[FULLY_MASKED_ROWS])

    def test_gradients_finite_and_zero_at_masked_positions(self):
        args, _ = self.masked_inputs()
        masked_keys = ~VALUE_MASK
        self.check_gradients(self.make_layer(), (args, {}), "key", zero_grad_mask=masked_keys)
        self.check_gradients(self.make_layer(), (args, {}), "value", zero_grad_mask=masked_keys)
        self.check_gradients(self.make_layer(), (args, {}), "query", zero_grad_mask=FULLY_MASKED)

    # -- saving, precision, compilation, shapes ------------------------------

    def test_serialization_round_trip(self):
        self.check_serialization(
            lambda: self.make_layer(dropout=0.1, seed=5), self.masked_inputs()
        )

    def test_mixed_precision(self):
        self.check_mixed_precision(
            self.make_layer, self.masked_inputs(), fully_masked_rows=FULLY_MASKED_ROWS,
            return_attention_scores=True,
        )

    def test_xla(self):
        self.check_xla(self.make_layer, self.masked_inputs())
        args, _ = self.masked_inputs()
        self.check_xla(self.make_layer, (args, {"use_causal_mask": True}))

    def test_output_spec(self):
        for q_len, k_len in ((2, 5), (5, 2)):
            args = self.tensors(q_len, k_len)
            for kwargs in (
                {},
                {"return_attention_scores": True},
                {"return_attention_scores": True, "use_causal_mask": True},
            ):
                with self.subTest(q_len=q_len, k_len=k_len, **kwargs):
                    self.check_output_spec(self.make_layer, (args, kwargs))
        layer = self.make_layer()
        self.assertEqual(
            (None, 2, self.value_dim),
            layer.compute_output_shape(
                (None, 2, self.query_dim), (None, 5, self.value_dim), (None, 5, self.key_dim)
            ),
        )

    # -- errors ---------------------------------------------------------------

    def test_call_errors(self):
        args = self.tensors()
        query, value, key = args["query"], args["value"], args["key"]
        cases = [
            (dict(query=query[:, 0], value=value, key=key),
             ["Expected `query` of rank 3", f"query.shape=(2, {self.query_dim})"]),
            (dict(query=query, value=value[..., None], key=key), ["Expected `value` of rank 3"]),
            (dict(query=query, value=value, key=key[:, :3]),
             ["Expected `key` and `value` of the same length", "key.shape=(2, 3,"]),
            (dict(query=query, value=value, key=key, query_mask=QUERY_MASK[:, :2]),
             ["Expected `query_mask` broadcastable to shape (2, 3)",
              "query_mask.shape=(2, 2)"]),
            (dict(query=query, value=value, key=key, value_mask=VALUE_MASK[:, :3]),
             ["Expected `value_mask` broadcastable", "value_mask.shape=(2, 3)"]),
            (dict(query=query, value=value, key=key, key_mask=VALUE_MASK[:1, :2]),
             ["Expected `key_mask` broadcastable", "key_mask.shape=(1, 2)"]),
            (dict(query=query, value=value, key=key, attention_mask=ATTENTION_MASK[..., :3]),
             ["Expected `attention_mask` broadcastable to shape (2, 3, 4)",
              "attention_mask.shape=(2, 3, 3)"]),
            (dict(query=query, value=value, key=key, attention_mask=ATTENTION_MASK[None]),
             ["Expected `attention_mask` of rank <= 3"]),
        ]
        for kwargs, fragments in cases:
            with self.subTest(fragments[0]):
                self.assert_value_error(lambda: self.make_layer()(**kwargs), *fragments)
                symbolic = {
                    k: keras.Input(v.shape[1:], batch_size=v.shape[0], dtype=str(v.dtype))
                    for k, v in kwargs.items()
                }
                self.assert_value_error(lambda: self.make_layer()(**symbolic), *fragments)

    # -- training -------------------------------------------------------------

    def test_fit_in_functional_model(self):
        ids = keras.Input((None,), dtype="int32")
        x = keras.layers.Embedding(10, self.query_dim, mask_zero=True)(ids)
        layer = self.make_layer()
        x = layer(x, x)
        outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
        model = keras.Model(ids, outputs)
        # Adam moves every weight with a nonzero gradient, however small at init.
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        rng = np.random.default_rng(1)
        data = rng.integers(1, 10, size=(6, 4))
        data[:, 3:] = 0
        before = [w.numpy().copy() for w in layer.trainable_weights]
        history = model.fit(data, rng.normal(size=(6, 1)), batch_size=2, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        for old, new in zip(before, layer.trainable_weights):
            self.assertNotAllClose(old, new.numpy(), msg=new.name)
