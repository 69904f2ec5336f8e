"""Tests of kerasattn.layers.dot_product_attention.DotProductAttention."""

import keras
import numpy as np

from kerasattn.layers.dot_product_attention import DotProductAttention
from tests import _single_head_checks
from tests import harness


class _ScoreChecks(_single_head_checks.SingleHeadAttentionChecks):
    score = "dot"

    def make_layer(self, **kwargs):
        return DotProductAttention(score=self.score, **kwargs)

    def numpy_scores(self, layer, query, key):
        if self.score == "general":
            query = query @ np.asarray(layer.kernel.numpy(), "float64")
        elif self.score == "scaled":
            query = query / np.sqrt(query.shape[-1])
        return query @ np.swapaxes(key, -1, -2)


class DotScoreTest(_ScoreChecks, harness.LayerTestCase):
    score = "dot"
    query_dim = key_dim = value_dim = 4

    def test_hand_computed(self):
        # q = [1, 0], keys [1, 0] and [0, 1]: scores 1 and 0.
        # Weights: sigmoid(1) = 0.7310586 and 0.2689414.
        # Output: 0.7310586 * 10 + 0.2689414 * 20 = 12.6894142.
        query = np.array([[[1.0, 0.0]]], "float32")
        key = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
        value = np.array([[[10.0], [20.0]]], "float32")
        output, weights = DotProductAttention("dot")(
            query, value, key=key, return_attention_scores=True
        )
        self.assertAllClose([[[12.6894142]]], output, atol=1e-5)
        self.assertAllClose([[[0.7310586, 0.2689414]]], weights, atol=1e-6)

    def test_matches_keras_attention_except_fully_masked_rows(self):
        args = self.tensors(key=False)
        query, value = args["query"], args["value"]
        query_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
        # Batch 1 has no valid value at all.
        value_mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], bool)
        for causal in (False, True):
            with self.subTest(use_causal_mask=causal):
                ours, our_weights = DotProductAttention("dot")(
                    query, value, query_mask=query_mask, value_mask=value_mask,
                    use_causal_mask=causal, return_attention_scores=True,
                )
                theirs, their_weights = keras.layers.Attention(use_scale=False)(
                    [query, value], mask=[query_mask, value_mask],
                    use_causal_mask=causal, return_attention_scores=True,
                )
                self.assertAllClose(theirs[0], ours[0], atol=1e-6)
                # Keras weights a masked query like any other; its output is
                # zeroed afterwards. Ours are zero on such rows.
                self.assertAllClose(their_weights[0, :2], our_weights[0, :2], atol=1e-6)
                self.assertAllEqual(np.zeros(4), our_weights[0, 2])
                # Where every key is masked Keras falls back to uniform weights
                # over all keys, the causally hidden ones included: the mean of
                # all the values. Ours are zero.
                self.assertAllEqual(np.zeros((3, self.value_dim)), ours[1])
                mean = np.broadcast_to(value[1].mean(axis=0), (3, self.value_dim))
                self.assertAllClose(mean, theirs[1], atol=1e-6)

    def test_width_mismatch_errors(self):
        args = self.tensors()
        for key_width in (3, 5):
            key = args["key"][..., :key_width] if key_width < 4 else np.ones((2, 4, key_width))
            fragments = [
                "Expected `query` and `key` of the same last dimension for score='dot'",
                "query.shape=(2, 3, 4)", f"key.shape=(2, 4, {key_width})",
            ]
            self.assert_value_error(
                lambda: DotProductAttention("dot")(args["query"], args["value"], key=key),
                *fragments,
            )
            self.assert_value_error(
                lambda: DotProductAttention("dot")(
                    keras.Input((3, 4), batch_size=2), keras.Input((4, 4), batch_size=2),
                    key=keras.Input((4, key_width), batch_size=2),
                ),
                *fragments,
            )

    def test_constructor_errors(self):
        for score in ("concat", "Dot", None):
            self.assert_value_error(
                lambda: DotProductAttention(score=score),
                "Expected `score` to be one of ('dot', 'scaled', 'general'), "
                f"received: score={score!r}",
            )
        self.assert_value_error(
            lambda: DotProductAttention(dropout=-0.1),
            "Expected `dropout` to be a float in [0, 1)", "received: dropout=-0.1",
        )


class ScaledScoreTest(_ScoreChecks, harness.LayerTestCase):
    score = "scaled"
    query_dim = key_dim = value_dim = 4

    def test_hand_computed(self):
        # As in the dot case with d = 2: scores 1/√2 = 0.7071068 and 0.
        # Weights: sigmoid(0.7071068) = 0.6697615 and 0.3302385.
        # Output: 0.6697615 * 10 + 0.3302385 * 20 = 13.3023845.
        query = np.array([[[1.0, 0.0]]], "float32")
        key = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
        value = np.array([[[10.0], [20.0]]], "float32")
        output = DotProductAttention("scaled")(query, value, key=key)
        self.assertAllClose([[[13.3023845]]], output, atol=1e-5)

    def test_matches_keras_attention_with_scale_fixed(self):
        # Keras's use_scale=True learns a scalar (initialised to 1); set to
        # 1/√d it computes our fixed scaling.
        args = self.tensors()
        value_mask = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool)
        keras_layer = keras.layers.Attention(use_scale=True)
        keras_layer([args["query"], args["value"], args["key"]])
        keras_layer.scale.assign(self.query_dim ** -0.5)
        theirs = keras_layer(
            [args["query"], args["value"], args["key"]], mask=[None, value_mask]
        )
        ours = DotProductAttention("scaled")(
            args["query"], args["value"], key=args["key"], value_mask=value_mask
        )
        self.assertAllClose(theirs, ours, atol=1e-6)

    def test_no_weights(self):
        layer = self.make_layer()
        layer(**self.tensors())
        self.assertEqual([], layer.weights)


class GeneralScoreTest(_ScoreChecks, harness.LayerTestCase):
    # "general" lets query and key differ in width.
    score = "general"
    query_dim = 5
    key_dim = 6
    value_dim = 3

    def test_fresh_kernels_differ(self):
        # One kernel `W`: no weight of its shape to compare it with; the check
        # still runs, for a future second kernel.
        self.check_fresh_kernels_differ(self.make_layer, (self.tensors(), {}), min_pairs=0)
        layer = self.make_layer()
        layer(**self.tensors())
        self.assertLen(layer.weights, 1)

    def test_hand_computed(self):
        # W = [[0, 2], [0, 0]], q = [1, 0]: qᵀW = [0, 2]; keys [1, 0], [0, 1]
        # give scores 0 and 2. Weights: sigmoid(-2) = 0.1192029 and 0.8807971.
        # Output: 0.1192029 * 10 + 0.8807971 * 20 = 18.8079708.
        layer = DotProductAttention("general")
        query = np.array([[[1.0, 0.0]]], "float32")
        key = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
        value = np.array([[[10.0], [20.0]]], "float32")
        layer(query, value, key=key)
        layer.set_weights([np.array([[0.0, 2.0], [0.0, 0.0]])])
        output, weights = layer(query, value, key=key, return_attention_scores=True)
        self.assertAllClose([[[18.8079708]]], output, atol=1e-5)
        self.assertAllClose([[[0.1192029, 0.8807971]]], weights, atol=1e-6)

    def test_kernel(self):
        layer = DotProductAttention(
            "general", kernel_initializer="ones", kernel_regularizer="l2",
            kernel_constraint="non_neg",
        )
        layer(**self.tensors())
        self.assertEqual([(5, 6)], [tuple(w.shape) for w in layer.weights])
        self.assertAllEqual(np.ones((5, 6)), layer.kernel.numpy())
        self.assertLen(layer.losses, 1)

    def test_width_errors(self):
        layer = self.make_layer()
        args = self.tensors()
        layer(**args)
        self.assert_value_error(
            lambda: layer(args["query"][..., :4], args["value"], key=args["key"]),
            "Expected `query` with last dimension 5", "query.shape=(2, 3, 4)",
        )
        self.assert_value_error(
            lambda: layer(args["query"], args["value"], key=args["key"][..., :2]),
            "Expected `key` with last dimension 6", "key.shape=(2, 4, 2)",
        )
        self.assert_value_error(
            lambda: self.make_layer()(keras.Input((3, 5)), keras.Input((4, None))),
            "Expected `key` with a static last dimension",
        )
