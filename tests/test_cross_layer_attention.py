"""Tests for kerasattn.layers.cross_layer_attention.CrossLayerAttention."""

import math
from unittest import mock

import keras
import numpy as np
from absl.testing import parameterized

from kerasattn.layers.cross_layer_attention import CrossLayerAttention
from kerasattn.ops.tracing import export_graph
from tests import harness

B, T, D, L = 2, 4, 4, 3
RNG = np.random.default_rng(0)
STATES = [RNG.normal(size=(B, T, D)).astype("float32") for _ in range(L)]
# Row 0 has one padded position; row 1 is padded everywhere.
FULL_MASK = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
PADDING = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)


def reference(layer, inputs, mask=None, return_attention_scores=False):
    """NumPy float64 cross-layer attention, read off the layer's weights."""
    h = np.stack([np.asarray(x, "float64") for x in inputs], axis=2)  # (B, T, L, d)

    def dense(sublayer, x):
        y = x @ np.asarray(sublayer.kernel.numpy(), "float64")
        return y + np.asarray(sublayer.bias.numpy(), "float64") if sublayer.use_bias else y

    keys = dense(layer._key_dense, h)
    if layer.use_layer_embedding:
        keys = keys + np.asarray(layer.layer_embedding.numpy(), "float64")
    if layer.query == "last":
        query = dense(layer._query_dense, h[:, :, -1])
    else:
        learned = np.asarray(layer.query_vector.numpy(), "float64")
        query = np.broadcast_to(learned, keys[:, :, 0].shape)
    scores = np.einsum("btu,btlu->btl", query, keys) / math.sqrt(keys.shape[-1])
    masks = mask if isinstance(mask, (list, tuple)) else [mask]
    merged = np.ones(h.shape[:2], bool)
    for m in masks:
        if m is not None:
            merged = merged & np.asarray(m, bool)
    weights = harness.numpy_masked_softmax(scores, merged[..., None])
    values = dense(layer._value_dense, h) if layer.use_value_projection else h
    output = np.einsum("btl,btld->btd", weights, values)
    return (output, weights) if return_attention_scores else output


def randomize(layer, scale=0.5):
    """Random weights (biases and layer embedding included, zeros by default)."""
    layer.set_weights([scale * RNG.normal(size=w.shape) for w in layer.get_weights()])
    return layer


def built(inputs=STATES, dtype=None, **kwargs):
    layer = CrossLayerAttention(dtype=dtype, **kwargs)
    layer.build([x.shape for x in inputs])
    return randomize(layer)


class CrossLayerAttentionTest(harness.LayerTestCase, parameterized.TestCase):
    def test_hand_computed(self):
        # L = 2, d = 2, units = 1 (scale 1), no bias, no layer embedding;
        # W_q = [[1], [0]], W_k = [[ln 3], [0]].
        # t=0: H_1 = [0, 0], H_2 = [1, 0]: q = 1, k = [0, ln 3] -> s = [0, ln 3]
        #      -> w = [1/4, 3/4] -> out = 3/4 * [1, 0] = [0.75, 0].
        # t=1: H_1 = [0, 2], H_2 = [0, 1]: q = 0 -> s = [0, 0] -> w = [1/2, 1/2]
        #      -> out = 1/2 * [0, 2] + 1/2 * [0, 1] = [0, 1.5].
        # t=2: padded -> w = [0, 0], out = [0, 0].
        h1 = np.array([[[0.0, 0.0], [0.0, 2.0], [5.0, 5.0]]], "float32")
        h2 = np.array([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]], "float32")
        layer = CrossLayerAttention(units=1, use_bias=False, use_layer_embedding=False)
        layer.build([h1.shape, h2.shape])
        layer._query_dense.kernel.assign([[1.0], [0.0]])
        layer._key_dense.kernel.assign([[math.log(3.0)], [0.0]])
        output, weights = layer(
            [h1, h2], mask=np.array([[True, True, False]]), return_attention_scores=True
        )
        self.assertAllClose([[[0.25, 0.75], [0.5, 0.5], [0.0, 0.0]]], weights)
        self.assertAllClose([[[0.75, 0.0], [0.0, 1.5], [0.0, 0.0]]], output)

    @parameterized.named_parameters(
        ("last", {}),
        ("learned", {"query": "learned"}),
        ("value_projection", {"use_value_projection": True}),
        ("no_layer_embedding_units", {"use_layer_embedding": False, "units": 3}),
        ("learned_no_bias", {"query": "learned", "use_bias": False, "units": 2}),
        ("last_no_bias", {"use_bias": False}),
    )
    def test_matches_reference(self, kwargs):
        layer = built(**kwargs)
        for args in ({"inputs": STATES}, {"inputs": STATES, "mask": PADDING}):
            self.assert_matches_reference(layer, (args, {}), reference)
            self.assert_matches_reference(
                layer, (args, {"return_attention_scores": True}), reference
            )
        # Traced for export, the scores come from the folded kernels, with
        # no key projection of the states, and the states are not stacked.
        key_dense = layer._key_dense
        with export_graph(), mock.patch.object(
            key_dense, "call", wraps=key_dense.call
        ) as key, mock.patch.object(keras.ops, "stack", wraps=keras.ops.stack) as stack:
            got = layer(STATES, mask=PADDING, return_attention_scores=True)
        self.assertEqual(0, key.call_count)
        self.assertEqual(0, stack.call_count)
        want = reference(layer, STATES, mask=PADDING, return_attention_scores=True)
        self.assertAllClose(want, got, atol=1e-5)

    @parameterized.named_parameters(
        ("float32", "float32", 1e-5), ("float16", "float16", 2e-2), ("bfloat16", "bfloat16", 1e-1)
    )
    def test_padding_and_fully_masked_rows_in_dtype(self, dtype, atol):
        for kwargs in ({}, {"query": "learned", "use_value_projection": True}):
            with self.subTest(**kwargs):
                layer = built(dtype=dtype, **kwargs)
                output, weights = layer(STATES, mask=FULL_MASK, return_attention_scores=True)
                self.assertEqual(keras.backend.standardize_dtype(output.dtype), dtype)
                self.assertEqual(keras.backend.standardize_dtype(weights.dtype), dtype)
                output, weights = (x.astype("float32") for x in harness.to_numpy((output, weights)))
                want, want_weights = reference(layer, STATES, FULL_MASK, True)
                self.assertAllClose(want, output, atol=atol, rtol=atol)
                self.assertAllClose(want_weights, weights, atol=atol, rtol=atol)
                padded = ~FULL_MASK
                self.assertAllEqual(np.zeros((padded.sum(), D)), output[padded])
                self.assertAllEqual(np.zeros((padded.sum(), L)), weights[padded])

    def test_implicit_mask_consumed_and_propagated(self):
        ids = np.array([[3, 1, 4, 0], [2, 7, 0, 0]])
        x = keras.layers.Embedding(10, D, mask_zero=True)(ids)
        states = []
        for _ in range(L):
            x = keras.layers.Dense(D, activation="tanh")(x)
            states.append(x)
        layer = CrossLayerAttention()
        implicit = layer(states)
        self.assertAllEqual(ids > 0, implicit._keras_mask)
        self.assertAllClose(layer(states, mask=ids > 0), implicit)
        self.assertAllEqual(np.zeros((3, D)), np.asarray(implicit)[ids == 0])
        # Symbolically: the mask flows through the functional graph too.
        tokens = keras.Input(shape=(None,), dtype="int32")
        y = keras.layers.Embedding(10, D, mask_zero=True)(tokens)
        fused = CrossLayerAttention()([keras.layers.Dense(D)(y), keras.layers.Dense(D)(y)])
        self.assertEqual((None, None), tuple(fused._keras_mask.shape))

    def test_list_of_masks_combined_with_and(self):
        layer = built()
        first = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
        last = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
        output = layer(STATES, mask=[first, None, last])
        self.assertAllClose(layer(STATES, mask=first & last), output)
        self.assertAllClose(reference(layer, STATES, [first, None, last]), output, atol=1e-5)
        self.assertAllEqual(first & last, layer.compute_mask(STATES, [first, None, last]))
        self.assertIsNone(layer.compute_mask(STATES, [None, None, None]))

    def test_return_attention_scores(self):
        layer = built()
        output, weights = layer(STATES, mask=PADDING, return_attention_scores=True)
        self.assertEqual((B, T, D), tuple(output.shape))
        self.assertEqual((B, T, L), tuple(weights.shape))
        self.assertAllClose(PADDING.astype("float32"), keras.ops.sum(weights, -1))

    def test_dropout_only_in_training(self):
        layer = built(dropout=0.5, seed=3)
        plain = CrossLayerAttention()
        plain.build([x.shape for x in STATES])
        plain.set_weights(layer.get_weights())
        inference = layer(STATES, mask=PADDING, training=False)
        self.assertAllClose(plain(STATES, mask=PADDING), inference)
        trained, weights = layer(STATES, mask=PADDING, training=True, return_attention_scores=True)
        self.assertNotAllClose(inference, trained)
        _, clean = plain(STATES, mask=PADDING, return_attention_scores=True)
        self.assertAllClose(clean, weights)

    def test_gradients_zero_at_padded_positions(self):
        for kwargs in ({}, {"query": "learned", "use_value_projection": True}):
            with self.subTest(**kwargs):
                layer = built(**kwargs)
                grads = self.check_gradients(
                    layer, ({"inputs": STATES, "mask": PADDING}, {}), "inputs",
                    zero_grad_mask=~PADDING,
                )
                for grad in grads[:L]:
                    self.assertGreater(np.abs(grad.numpy()[PADDING]).sum(), 0.0)

    def test_fresh_kernels_differ(self):
        # The key and query projections are both (d, units); they started
        # equal when they shared one initializer instance.
        inputs = ({"inputs": STATES, "mask": PADDING}, {})
        self.check_fresh_kernels_differ(CrossLayerAttention, inputs)
        self.check_fresh_kernels_differ(
            lambda: CrossLayerAttention(
                use_value_projection=True,
                kernel_initializer=keras.initializers.GlorotUniform(),
            ),
            inputs,
            min_pairs=3,
        )

    def test_serialization(self):
        inputs = ({"inputs": STATES, "mask": PADDING}, {})
        self.check_serialization(
            lambda: CrossLayerAttention(
                units=3,
                query="learned",
                use_value_projection=True,
                dropout=0.1,
                seed=5,
                bias_initializer="random_normal",
                layer_embedding_initializer="random_normal",
                kernel_regularizer="l2",
            ),
            inputs,
        )
        self.check_serialization(CrossLayerAttention, ({"inputs": STATES}, {}))

    def test_mixed_precision(self):
        inputs = ({"inputs": STATES, "mask": FULL_MASK}, {})
        for kwargs in ({}, {"query": "learned", "use_value_projection": True}):
            with self.subTest(**kwargs):
                self.check_mixed_precision(
                    lambda: CrossLayerAttention(
                        layer_embedding_initializer="random_normal", **kwargs
                    ),
                    inputs,
                    fully_masked_rows=np.nonzero(~FULL_MASK),
                    return_attention_scores=True,
                )

    def test_xla(self):
        self.check_xla(CrossLayerAttention, ({"inputs": STATES, "mask": PADDING}, {}))

    def test_output_spec(self):
        for args in ({"inputs": STATES}, {"inputs": STATES[:2], "mask": PADDING}):
            for kwargs in ({}, {"return_attention_scores": True}):
                self.check_output_spec(CrossLayerAttention, (args, kwargs))
        states = [keras.Input(shape=(None, D)) for _ in range(L)]
        output, weights = CrossLayerAttention()(states, return_attention_scores=True)
        self.assertEqual((None, None, D), tuple(output.shape))
        self.assertEqual((None, None, L), tuple(weights.shape))

    def test_constructor_errors(self):
        self.assert_value_error(lambda: CrossLayerAttention(units=0), "received: units=0")
        self.assert_value_error(
            lambda: CrossLayerAttention(query="first"), "received: query='first'"
        )
        self.assert_value_error(
            lambda: CrossLayerAttention(dropout=-0.1), "received: dropout=-0.1"
        )

    def test_call_errors(self):
        h = STATES[0]

        def call(inputs, **kwargs):
            return lambda: CrossLayerAttention()(inputs, **kwargs)

        self.assert_value_error(call([h]), "at least 2", "len(inputs)=1")
        self.assert_value_error(call(h), "at least 2", "inputs.shape=(2, 4, 4)")
        self.assert_value_error(
            call([h, h[..., None]]), "`inputs[1]` of rank 3", "inputs[1].shape=(2, 4, 4, 1)"
        )
        self.assert_value_error(
            call([h, h, h[:, :, :3]]), "inputs[0].shape=(2, 4, 4)", "inputs[2].shape=(2, 4, 3)"
        )
        self.assert_value_error(
            call([h, h], mask=PADDING[:, :3]),
            "`mask` broadcastable to shape (2, 4)",
            "mask.shape=(2, 3)",
        )
        self.assert_value_error(
            call([h, h], mask=[PADDING, PADDING[:, :3]]), "mask[1].shape=(2, 3)"
        )
        symbolic = [keras.Input(shape=(None, D)), keras.Input(shape=(None, 5))]
        self.assert_value_error(call(symbolic), "inputs[1].shape=(None, None, 5)")
        layer = CrossLayerAttention()
        layer([h, h, h])
        self.assert_value_error(lambda: layer([h, h]), "hold 3 tensors", "len(inputs)=2")

    def test_fit_in_functional_model_with_dynamic_length(self):
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(20, D, mask_zero=True)(tokens)
        states = []
        for _ in range(L):
            x = keras.layers.Dense(D, activation="relu")(x)
            states.append(x)
        fused = CrossLayerAttention(dropout=0.1)(states)
        pooled = keras.layers.GlobalAveragePooling1D()(fused)
        model = keras.Model(tokens, keras.layers.Dense(1, activation="sigmoid")(pooled))
        model.compile(optimizer="adam", loss="binary_crossentropy")
        ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0], [7, 8, 9, 10]])
        history = model.fit(
            ids, np.array([1.0, 0.0, 1.0, 0.0]), batch_size=2, epochs=1, steps_per_epoch=2,
            verbose=0,
        )
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        padded = np.concatenate([ids, np.zeros((4, 2), ids.dtype)], axis=1)
        self.assertAllClose(model.predict(ids, verbose=0), model.predict(padded, verbose=0))
