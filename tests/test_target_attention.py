"""Tests for kerasattn.layers.target_attention.TargetAttention."""

import math

import keras
import numpy as np
from absl.testing import parameterized

from kerasattn.layers.target_attention import TargetAttention
from tests import harness

B, T, D, DV, TQ = 2, 5, 4, 3, 2
RNG = np.random.default_rng(0)
QUERY = RNG.normal(size=(B, D)).astype("float32")
QUERIES = RNG.normal(size=(B, TQ, D)).astype("float32")
KEYS = RNG.normal(size=(B, T, D)).astype("float32")
VALUES = RNG.normal(size=(B, T, DV)).astype("float32")
# Row 0 has a 3-item history; row 1 is an empty history (every item masked).
KEYS_MASK = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
PARTIAL_MASK = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], dtype=bool)

NUMPY_ACTIVATIONS = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}


def reference(
    layer,
    query,
    value,
    key=None,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    return_attention_scores=False,
):
    """NumPy float64 target attention, read off the layer's weights."""
    q = np.asarray(query, "float64")
    v = np.asarray(value, "float64")
    k = v if key is None else np.asarray(key, "float64")
    single = q.ndim == 2
    if single:
        q = q[:, None]
    if layer.score == "scaled":
        scores = np.einsum("bqd,btd->bqt", q, k) / math.sqrt(q.shape[-1])
    else:
        shape = (q.shape[0], q.shape[1], k.shape[1], q.shape[-1])
        qb = np.broadcast_to(q[:, :, None], shape)
        kb = np.broadcast_to(k[:, None], shape)
        h = np.concatenate([qb, kb, qb - kb, qb * kb], axis=-1)
        activation = NUMPY_ACTIVATIONS[layer.get_config()["activation"]]
        for i, dense in enumerate(layer._mlp):
            h = h @ np.asarray(dense.kernel.numpy(), "float64")
            if dense.use_bias:
                h = h + np.asarray(dense.bias.numpy(), "float64")
            if i < len(layer._mlp) - 1:
                h = activation(h)
        scores = h[..., 0]
    mask = np.ones(k.shape[:2], bool)
    for padding in (value_mask, key_mask):
        if padding is not None:
            mask = mask & np.asarray(padding, bool)
    mask = mask[:, None, :]
    if query_mask is not None:
        query_mask = np.asarray(query_mask, bool).reshape(q.shape[0], q.shape[1])
        mask = mask & query_mask[:, :, None]
    if layer.normalization == "softmax":
        weights = harness.numpy_masked_softmax(scores, mask)
    else:
        weights = np.where(mask, scores, 0.0)
    output = np.einsum("bqt,btv->bqv", weights, v)
    if single:
        output, weights = output[:, 0], weights[:, 0]
    return (output, weights) if return_attention_scores else output


def make_layer(**kwargs):
    return TargetAttention(**{"hidden_units": (8, 4), **kwargs})


def din_model(dim=4, vocab=20):
    """DIN-style scorer: candidate id + history ids (dynamic length) -> click prob."""
    item = keras.Input(shape=(1,), dtype="int32", name="item")
    history = keras.Input(shape=(None,), dtype="int32", name="history")
    item_vector = keras.layers.Reshape((dim,))(keras.layers.Embedding(vocab, dim)(item))
    history_vectors = keras.layers.Embedding(vocab, dim, mask_zero=True)(history)
    interest = TargetAttention(hidden_units=(8, 4))(item_vector, history_vectors)
    features = keras.layers.Concatenate()([item_vector, interest])
    probability = keras.layers.Dense(1, activation="sigmoid")(features)
    return keras.Model([item, history], probability)


class TargetAttentionTest(harness.LayerTestCase, parameterized.TestCase):
    def test_hand_computed_mlp_unnormalised(self):
        # hidden_units=() makes the score one Dense(1) on [q, k, q - k, q * k];
        # its kernel picks the q * k block, so s_j = q . k_j (bias 0).
        # q = [1, 2]; keys [1, 0], [0, 1], [1, 1] -> s = [1, 2, 3].
        # DIN weights are the raw scores, masked item 3 -> w = [1, 2, 0];
        # output = 1 * [1, 0] + 2 * [0, 1] = [1, 2].
        layer = TargetAttention(hidden_units=(), normalization=None)
        query = np.array([[1.0, 2.0]], "float32")
        keys = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], "float32")
        mask = np.array([[True, True, False]])
        layer(query, keys)
        kernel = np.zeros((8, 1), "float32")
        kernel[6:, 0] = 1.0
        layer.set_weights([kernel, np.zeros((1,), "float32")])
        output, weights = layer(query, keys, value_mask=mask, return_attention_scores=True)
        self.assertAllClose([[1.0, 2.0, 0.0]], weights)
        self.assertAllClose([[1.0, 2.0]], output)

    def test_lora_first_layer_takes_the_concatenated_path(self):
        # The first Dense runs factored (never building [q, k, q - k, q * k]);
        # with LoRA it runs as a plain Dense on the concatenation. LoRA starts
        # at zero, so both paths must agree.
        layer = TargetAttention(hidden_units=(8, 4))
        factored = layer(QUERIES, VALUES, KEYS, value_mask=PARTIAL_MASK)
        layer._mlp[0].enable_lora(2)
        self.assertAllClose(
            factored, layer(QUERIES, VALUES, KEYS, value_mask=PARTIAL_MASK), atol=1e-6
        )

    def test_hand_computed_scaled(self):
        # d = 4, so the scale is 1/2. q = [2, 0, 0, 0]; k_1 = 0 -> s_1 = 0;
        # k_2 = [ln 3, 0, 0, 0] -> s_2 = 2 ln 3 / 2 = ln 3; k_3 is masked.
        # softmax([0, ln 3]) = [1/4, 3/4]; values [4, 0], [0, 4], [9, 9]
        # -> output = [1, 3].
        layer = TargetAttention(score="scaled")
        query = np.array([[2.0, 0, 0, 0]], "float32")
        keys = np.array([[[0, 0, 0, 0], [math.log(3), 0, 0, 0], [100.0, 0, 0, 0]]], "float32")
        values = np.array([[[4.0, 0.0], [0.0, 4.0], [9.0, 9.0]]], "float32")
        output, weights = layer(
            query, values, keys, value_mask=np.array([[1, 1, 0]]), return_attention_scores=True
        )
        self.assertAllClose([[0.25, 0.75, 0.0]], weights)
        self.assertAllClose([[1.0, 3.0]], output)

    @parameterized.named_parameters(
        ("mlp_softmax", {}, QUERY, None),
        ("mlp_din", {"normalization": None}, QUERY, VALUES),
        ("mlp_relu_no_bias", {"activation": "relu", "use_bias": False}, QUERY, VALUES),
        ("mlp_several_candidates", {}, QUERIES, VALUES),
        ("scaled", {"score": "scaled"}, QUERY, VALUES),
        ("scaled_several_candidates", {"score": "scaled"}, QUERIES, None),
    )
    def test_matches_reference(self, kwargs, query, values):
        args = {"query": query, "value": KEYS, "value_mask": PARTIAL_MASK}
        if values is not None:
            args.update(value=values, key=KEYS)
        layer = make_layer(**kwargs)
        self.assert_matches_reference(layer, (args, {}), reference)
        self.assert_matches_reference(
            layer, (args, {"return_attention_scores": True}), reference
        )
        del args["value_mask"]
        self.assert_matches_reference(layer, (args, {}), reference)

    @parameterized.named_parameters(
        ("float32", "float32", 1e-5), ("float16", "float16", 1e-2), ("bfloat16", "bfloat16", 5e-2)
    )
    def test_masks_and_empty_history_in_dtype(self, dtype, atol):
        for kwargs in ({}, {"normalization": None}, {"score": "scaled"}):
            with self.subTest(**kwargs):
                layer = make_layer(dtype=dtype, **kwargs)
                args = {
                    "query": QUERIES,
                    "value": VALUES,
                    "key": KEYS,
                    "value_mask": KEYS_MASK,
                }
                output, weights = harness.call_eager(
                    layer, (args, {"return_attention_scores": True})
                )
                self.assertEqual(keras.backend.standardize_dtype(output.dtype), dtype)
                self.assertEqual(keras.backend.standardize_dtype(weights.dtype), dtype)
                output, weights = harness.to_numpy((output, weights))
                output, weights = output.astype("float32"), weights.astype("float32")
                want, want_weights = reference(layer, **args, return_attention_scores=True)
                self.assertAllClose(want, output, atol=atol, rtol=atol)
                self.assertAllClose(want_weights, weights, atol=atol, rtol=atol)
                # The empty history: zero weights and a zero summary, no NaN.
                self.assertAllEqual(np.zeros((TQ, DV)), output[1])
                self.assertAllEqual(np.zeros((TQ, T)), weights[1])
                # Masked items of row 0 get exactly zero weight.
                self.assertAllEqual(np.zeros((TQ, 2)), weights[0, :, 3:])

    def test_implicit_mask_from_embedding(self):
        ids = np.array([[3, 1, 4, 0, 0], [0, 0, 0, 0, 0]])
        embedding = keras.layers.Embedding(10, D, mask_zero=True)
        keys = embedding(ids)
        layer = make_layer()
        implicit = layer(QUERY, keys)
        explicit = layer(QUERY, keys, value_mask=ids > 0)
        self.assertAllClose(explicit, implicit)
        self.assertAllEqual(np.zeros((D,)), implicit[1])
        unmasked = layer(QUERY, keys, value_mask=np.ones((B, T), bool))
        self.assertNotAllClose(unmasked, implicit)

    def test_key_mask_and_query_mask(self):
        layer = make_layer()
        # key_mask is applied together with value_mask.
        both = layer(QUERIES, VALUES, KEYS, value_mask=PARTIAL_MASK, key_mask=KEYS_MASK)
        merged = layer(QUERIES, VALUES, KEYS, value_mask=PARTIAL_MASK & KEYS_MASK)
        self.assertAllClose(merged, both)
        self.assertAllEqual(np.zeros((TQ, DV)), both[1])
        # A masked candidate gets a zero summary and zero weights; the others
        # are unchanged.
        query_mask = np.array([[True, False], [True, True]])
        output, weights = layer(
            QUERIES, VALUES, KEYS, query_mask=query_mask, value_mask=PARTIAL_MASK,
            return_attention_scores=True,
        )
        plain = layer(QUERIES, VALUES, KEYS, value_mask=PARTIAL_MASK)
        self.assertAllEqual(np.zeros((DV,)), output[0, 1])
        self.assertAllEqual(np.zeros((T,)), weights[0, 1])
        self.assertAllClose(plain[0, 0], output[0, 0])
        self.assertAllClose(plain[1], output[1])
        want = reference(
            layer, QUERIES, VALUES, KEYS, query_mask=query_mask, value_mask=PARTIAL_MASK
        )
        self.assertAllClose(want, output, atol=1e-5)
        # A single candidate takes a (B,) query mask.
        single = layer(QUERY, VALUES, KEYS, query_mask=np.array([False, True]))
        self.assertAllEqual(np.zeros((DV,)), single[0])
        self.assertAllClose(layer(QUERY, VALUES, KEYS)[1], single[1])

    def test_fresh_kernels_differ(self):
        # Two hidden layers of width 4d: kernels (4d, 4d) and (4d, 4d).
        self.check_fresh_kernels_differ(
            lambda: TargetAttention(hidden_units=(4 * D, 4 * D)),
            ({"query": QUERIES, "value": VALUES, "key": KEYS}, {}),
        )

    def test_query_mask_propagated_for_several_candidates(self):
        candidate_ids = keras.Input(shape=(TQ,), dtype="int32")
        history = keras.Input(shape=(None, D))
        candidates = keras.layers.Embedding(10, D, mask_zero=True)(candidate_ids)
        several = make_layer()(candidates, history)
        self.assertIsNotNone(several._keras_mask)
        self.assertEqual((None, TQ), tuple(several._keras_mask.shape))
        single = make_layer()(keras.Input(shape=(D,)), history)
        self.assertIsNone(getattr(single, "_keras_mask", None))

    def test_return_attention_scores(self):
        layer = make_layer()
        output, weights = layer(
            QUERIES, KEYS, value_mask=PARTIAL_MASK, return_attention_scores=True
        )
        self.assertEqual((B, TQ, D), tuple(output.shape))
        self.assertEqual((B, TQ, T), tuple(weights.shape))
        self.assertAllClose(np.ones((B, TQ)), keras.ops.sum(weights, -1))
        self.assertAllEqual(np.zeros((TQ, 2)), weights[0, :, 3:])
        _, single = layer(QUERY, KEYS, return_attention_scores=True)
        self.assertEqual((B, T), tuple(single.shape))

    def test_dropout_only_in_training(self):
        layer = make_layer(dropout=0.5, seed=7)
        plain = make_layer()
        plain(QUERY, KEYS)
        layer(QUERY, KEYS)
        plain.set_weights(layer.get_weights())
        inference = layer(QUERY, KEYS, value_mask=PARTIAL_MASK, training=False)
        self.assertAllClose(plain(QUERY, KEYS, value_mask=PARTIAL_MASK), inference)
        trained, weights = layer(
            QUERY, KEYS, value_mask=PARTIAL_MASK, training=True, return_attention_scores=True
        )
        self.assertNotAllClose(inference, trained)
        # Returned weights are taken before dropout.
        _, clean = plain(QUERY, KEYS, value_mask=PARTIAL_MASK, return_attention_scores=True)
        self.assertAllClose(clean, weights)

    @parameterized.named_parameters(
        ("mlp_softmax", {}), ("mlp_din", {"normalization": None}), ("scaled", {"score": "scaled"})
    )
    def test_gradients_zero_for_masked_history(self, kwargs):
        inputs = ({"query": QUERIES, "value": KEYS, "value_mask": PARTIAL_MASK}, {})
        masked = np.broadcast_to(~PARTIAL_MASK[..., None], KEYS.shape)
        self.check_gradients(make_layer(**kwargs), inputs, "value", zero_grad_mask=masked)
        self.check_gradients(make_layer(**kwargs), inputs, "query")

    def test_serialization(self):
        inputs = ({"query": QUERY, "value": VALUES, "key": KEYS, "value_mask": PARTIAL_MASK}, {})
        self.check_serialization(
            lambda: make_layer(
                activation="relu",
                normalization=None,
                dropout=0.1,
                seed=3,
                kernel_regularizer="l2",
                bias_initializer="ones",
            ),
            inputs,
        )
        self.check_serialization(lambda: make_layer(score="scaled"), inputs)

    def test_mixed_precision(self):
        inputs = ({"query": QUERIES, "value": VALUES, "key": KEYS, "value_mask": KEYS_MASK}, {})
        for kwargs in ({}, {"normalization": None}, {"score": "scaled"}):
            with self.subTest(**kwargs):
                self.check_mixed_precision(
                    lambda: make_layer(**kwargs),
                    inputs,
                    fully_masked_rows=(1,),
                    return_attention_scores=True,
                )

    def test_xla(self):
        inputs = ({"query": QUERY, "value": KEYS, "value_mask": PARTIAL_MASK}, {})
        self.check_xla(make_layer, inputs)

    def test_output_spec(self):
        for args in (
            {"query": QUERY, "value": KEYS},
            {"query": QUERIES, "value": VALUES, "key": KEYS, "value_mask": PARTIAL_MASK},
        ):
            for kwargs in ({}, {"return_attention_scores": True}):
                for score in ("mlp", "scaled"):
                    self.check_output_spec(lambda: make_layer(score=score), (args, kwargs))
        query = keras.Input(shape=(TQ, D))
        output, weights = make_layer()(
            query, keras.Input(shape=(None, DV)), keras.Input(shape=(None, D)),
            return_attention_scores=True,
        )
        self.assertEqual((None, TQ, DV), tuple(output.shape))
        self.assertEqual((None, TQ, None), tuple(weights.shape))

    def test_constructor_errors(self):
        self.assert_value_error(lambda: TargetAttention(score="dot"), "received: score='dot'")
        self.assert_value_error(
            lambda: TargetAttention(normalization="sum"), "received: normalization='sum'"
        )
        self.assert_value_error(
            lambda: TargetAttention(score="scaled", normalization=None),
            "`normalization='softmax'` with `score='scaled'`",
            "received: normalization=None",
        )
        self.assert_value_error(
            lambda: TargetAttention(hidden_units=(8, 0)), "received: hidden_units=0"
        )
        self.assert_value_error(
            lambda: TargetAttention(hidden_units=8), "received: hidden_units=8"
        )
        self.assert_value_error(lambda: TargetAttention(dropout=1.0), "received: dropout=1.0")
        self.assert_value_error(
            lambda: TargetAttention(activation="nope"), "received: activation='nope'"
        )

    def test_call_errors(self):
        layer = make_layer()
        self.assert_value_error(
            lambda: layer(KEYS[..., None], KEYS),
            "`query` of rank 2 or 3",
            "query.shape=(2, 5, 4, 1)",
        )
        self.assert_value_error(
            lambda: layer(QUERY, QUERY), "`value` of rank 3", "value.shape=(2, 4)"
        )
        self.assert_value_error(
            lambda: layer(QUERY[:, :3], KEYS),
            "same static last dimension",
            "query.shape=(2, 3)",
            "key.shape=(2, 5, 4)",
        )
        self.assert_value_error(
            lambda: layer(QUERY[:1], KEYS),
            "same batch size",
            "query.shape=(1, 4)",
            "key.shape=(2, 5, 4)",
        )
        self.assert_value_error(
            lambda: layer(QUERY, VALUES[:, :4], KEYS),
            "same length",
            "key.shape=(2, 5, 4)",
            "value.shape=(2, 4, 3)",
        )
        self.assert_value_error(
            lambda: layer(QUERY, KEYS, value_mask=PARTIAL_MASK[:, :4]),
            "`value_mask` broadcastable to shape (2, 5)",
            "value_mask.shape=(2, 4)",
        )
        self.assert_value_error(
            lambda: layer(keras.Input(shape=(3,)), keras.Input(shape=(None, D))),
            "query.shape=(None, 3)",
            "key.shape=(None, None, 4)",
        )

    def test_din_model_with_dynamic_history_fits(self):
        model = din_model()
        items = np.array([[3], [5], [7], [2]])
        histories = np.array([[1, 4, 6, 0], [2, 0, 0, 0], [0, 0, 0, 0], [9, 8, 7, 6]])
        labels = np.array([[1.0], [0.0], [1.0], [0.0]])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        history = model.fit(
            [items, histories], labels, batch_size=2, epochs=1, steps_per_epoch=2, verbose=0
        )
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        # The history length is dynamic: other lengths run through the same model.
        for length in (2, 6):
            probabilities = model.predict([items, histories[:, :1].repeat(length, 1)], verbose=0)
            self.assertEqual((4, 1), probabilities.shape)
            self.assert_all_finite(probabilities)
        # Trailing padding does not change a prediction.
        padded = np.concatenate([histories, np.zeros((4, 3), histories.dtype)], axis=1)
        self.assertAllClose(
            model.predict([items, histories], verbose=0), model.predict([items, padded], verbose=0)
        )
