"""Tests of kerasattn.layers.additive_attention.AdditiveAttention."""

import keras
import numpy as np

from kerasattn.layers.additive_attention import AdditiveAttention
from tests import _single_head_checks
from tests import harness


class AdditiveAttentionTest(_single_head_checks.SingleHeadAttentionChecks, harness.LayerTestCase):
    # Query and key of different widths: the projections make that possible.
    query_dim = 5
    key_dim = 6
    value_dim = 3

    def make_layer(self, **kwargs):
        return AdditiveAttention(units=4, **kwargs)

    def numpy_scores(self, layer, query, key):
        weights = {w.name: np.asarray(w.numpy(), "float64") for w in layer.weights}
        bias = weights.get("bias", 0.0)
        projected_query = query @ weights["query_kernel"]  # (B, Tq, U)
        projected_key = key @ weights["key_kernel"] + bias  # (B, Tk, U)
        hidden = np.tanh(projected_query[:, :, None, :] + projected_key[:, None, :, :])
        return hidden @ weights["score_kernel"]

    def test_hand_computed(self):
        # units=1, W_q = [[1], [1]], W_k = [[1]], b = [0], v = [1].
        # query [0.25, 0.25] projects to 0.5; keys [0.5], [-0.5] project to
        # 0.5, -0.5. Scores: tanh(0.5 + 0.5) = 0.7615942, tanh(0.5 - 0.5) = 0.
        # Weights: sigmoid(0.7615942) = 0.6816997 and 0.3183003.
        # Output: 0.6816997 * 2 + 0.3183003 * 4 = 2.6366005.
        layer = AdditiveAttention(units=1)
        query = np.array([[[0.25, 0.25]]], "float32")
        key = np.array([[[0.5], [-0.5]]], "float32")
        value = np.array([[[2.0], [4.0]]], "float32")
        layer(query, value, key=key)
        layer.set_weights([np.ones((2, 1)), np.ones((1, 1)), np.zeros(1), np.ones(1)])
        output, weights = layer(query, value, key=key, return_attention_scores=True)
        self.assertAllClose([[[2.6366005]]], output, atol=1e-6)
        self.assertAllClose([[[0.6816997, 0.3183003]]], weights, atol=1e-6)
        # Masking the first key leaves all the weight on the second.
        masked = layer(query, value, key=key, key_mask=np.array([[False, True]]))
        self.assertAllClose([[[4.0]]], masked, atol=1e-6)

    def test_without_bias(self):
        layer = AdditiveAttention(units=3, use_bias=False)
        args, _ = self.masked_inputs()
        self.assert_matches_reference(layer, (args, {}), self.reference)
        self.assertEqual(
            ["query_kernel", "key_kernel", "score_kernel"], [w.name for w in layer.weights]
        )

    def test_weights_and_regularizers(self):
        layer = AdditiveAttention(
            units=4, kernel_regularizer="l2", bias_regularizer="l2",
            kernel_constraint="non_neg", bias_initializer="ones",
        )
        layer(**self.tensors())
        shapes = {w.name: tuple(w.shape) for w in layer.weights}
        self.assertEqual(
            {"query_kernel": (5, 4), "key_kernel": (6, 4), "bias": (4,), "score_kernel": (4,)},
            shapes,
        )
        self.assertLen(layer.losses, 4)
        self.assertAllEqual(np.ones(4), layer.bias.numpy())

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
            lambda: self.make_layer()(keras.Input((3, None)), keras.Input((4, 3))),
            "Expected `query` with a static last dimension",
        )

    def test_units_default_to_query_width(self):
        layer = AdditiveAttention()
        args, _ = self.masked_inputs()
        self.assert_matches_reference(layer, (args, {}), self.reference)
        shapes = {w.name: tuple(w.shape) for w in layer.weights}
        self.assertEqual(
            {"query_kernel": (5, 5), "key_kernel": (6, 5), "bias": (5,), "score_kernel": (5,)},
            shapes,
        )
        self.assertIsNone(layer.get_config()["units"])
        self.check_serialization(AdditiveAttention, (args, {}))

    def test_fresh_kernels_differ(self):
        # Equal query and key widths: W_q and W_k have one shape, and must
        # not start equal (they did when they shared an initializer).
        inputs = ({"query": self.tensors()["query"], "value": self.tensors()["query"]}, {})
        self.check_fresh_kernels_differ(lambda: AdditiveAttention(units=4), inputs)
        self.check_fresh_kernels_differ(
            lambda: AdditiveAttention(
                units=4, kernel_initializer=keras.initializers.GlorotUniform()
            ),
            inputs,
        )

    def test_constructor_errors(self):
        for value in (0, -1, 2.5, True):
            self.assert_value_error(
                lambda: AdditiveAttention(units=value),
                "Expected `units` to be a positive integer", f"received: units={value!r}",
            )
        self.assert_value_error(
            lambda: AdditiveAttention(units=2, dropout=1.0),
            "Expected `dropout` to be a float in [0, 1)", "received: dropout=1.0",
        )
