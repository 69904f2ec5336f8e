"""`kerasattn.explain`: rollout and flow by hand, gradients' completeness, masks, seeds."""

import keras
import numpy as np
import tensorflow as tf

from kerasattn import explain
from kerasattn import layers
from kerasattn.callbacks import _collect
from kerasattn.explain import _graph
from kerasattn.explain import _trace

# A 3-token, 2-layer example. Rows are queries.
A1 = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
A2 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# With the residual, 0.5 A + 0.5 I:
#   A1' = [[1, 0, 0], [.25, .75, 0], [0, .25, .75]]
#   A2' = [[.5, .5, 0], [0, .5, .5], [.5, 0, .5]]
READOUT = np.array([0.5, 0.0, 0.5])

VOCAB = 12
LENGTH = 6


def tiny_classifier(seed=0, num_layers=2):
    """Embedding → `num_layers` TransformerEncoderBlocks → AttentionPooling → Dense(2)."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        VOCAB, 8, mask_zero=True, name="embedding",
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
    )(tokens)
    for index in range(num_layers):
        x = layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16,
                                           name=f"block_{index}")(x)
    pooled = layers.AttentionPooling(name="pool")(x)
    return keras.Model(tokens, keras.layers.Dense(2, name="logits")(pooled))


def token_batch():
    # Three examples of 3, 6 and 4 real tokens; 0 is padding.
    return np.array([[3, 7, 1, 0, 0, 0], [2, 5, 9, 4, 11, 6], [8, 8, 2, 10, 0, 0]], "int32")


class PropagationByHandTest(tf.test.TestCase):
    def test_rollout_with_readout(self):
        # Rows 0 and 2 of A2' A1' are [.625, .375, 0] and [.5, .125, .375];
        # the readout takes half of each.
        scores = _graph.propagate([("self", A1), ("self", A2), ("readout", READOUT)], 3)
        self.assertAllClose(scores, [0.5625, 0.25, 0.1875])

    def test_rollout_at_a_position(self):
        # Row 0 of A2' A1' = .5 A1'[0] + .5 A1'[1].
        scores = _graph.propagate([("self", A1), ("self", A2)], 3, position=0)
        self.assertAllClose(scores, [0.625, 0.375, 0.0])

    def test_relevance_rule(self):
        # w (I + A2) (I + A1) = [1, .5, .5] [[2, 0, 0], [.5, 1.5, 0], [0, .5, 1.5]].
        scores = _graph.propagate([("self", A1), ("self", A2), ("readout", READOUT)], 3,
                                  rule="relevance")
        self.assertAllClose(scores, [2.25, 1.0, 0.75])

    def test_cross_layer_mixture(self):
        # Every position takes half of each block's state: row 0 of
        # .5 A1' + .5 A2' A1' = .5 [1, 0, 0] + .5 [.625, .375, 0].
        fusion = np.full((3, 2), 0.5)
        steps = [("self", A1), ("self", A2), ("layers", fusion), ("readout", np.eye(3)[0])]
        self.assertAllClose(_graph.propagate(steps, 3), [0.8125, 0.1875, 0.0])

    def test_flow(self):
        # Token 0: a0 -> a1 (1) feeds both readout edges (.5 each): 1.
        # Token 1: b0 -> b1 (.75) reaches the sink through a2 only (.5),
        #   b0 -> c1 (.25) through c2: .75.
        # Token 2: c0 -> c1 (.75) -> c2 (.5) -> sink: .5.
        scores = _graph.flow([("self", A1), ("self", A2), ("readout", READOUT)], 3)
        self.assertAllClose(scores, [1.0, 0.75, 0.5])

    def test_flow_skips_padding(self):
        scores = _graph.flow([("self", A1), ("self", A2), ("readout", READOUT)], 3,
                             valid=np.array([True, True, False]))
        # Without position 2's nodes only a2 -> sink (.5) is left: tokens 0
        # and 1 both fill it.
        self.assertEqual(scores[2], 0.0)
        self.assertAllClose(scores[:2], [0.5, 0.5])

    def test_without_readout_or_position(self):
        with self.assertRaisesRegex(ValueError, "position"):
            _graph.propagate([("self", A1)], 3)

    def test_wrong_shape(self):
        with self.assertRaisesRegex(ValueError, r"Expected a \(3, 3\) self-attention map"):
            _graph.propagate([("self", np.eye(2))], 3)


class ModelMethodsTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(3)
        self.model = tiny_classifier()
        self.tokens = token_batch()
        self.valid = self.tokens != 0

    def _collected_steps(self, example):
        """Steps from `kerasattn.callbacks`' collection, independent of `_trace`."""
        maps = _collect.collect_attention(self.model, self.tokens[example:example + 1])
        steps = []
        for attention_map in maps:
            weights = attention_map.weights[0].astype(np.float64).mean(0)
            if attention_map.path.endswith("pool"):
                steps.append(("readout", weights[0]))
            else:
                steps.append(("self", weights))
        return steps

    def test_rollout_matches_collected_maps(self):
        scores = explain.attention_rollout(self.model, self.tokens)
        for example in range(3):
            expected = _graph.propagate(self._collected_steps(example), LENGTH)
            self.assertAllClose(scores[example], expected, atol=1e-5)
            self.assertAllClose(scores[example].sum(), 1.0, atol=1e-5)

    def test_flow_matches_collected_maps(self):
        scores = explain.attention_flow(self.model, self.tokens)
        for example in range(3):
            expected = _graph.flow(self._collected_steps(example), LENGTH,
                                   valid=self.valid[example])
            self.assertAllClose(scores[example], expected, atol=1e-5)

    def test_every_method_scores_padding_zero_and_ignores_it(self):
        # The first example explained alone, unpadded, scores its tokens alike.
        alone = self.tokens[:1, :3]
        for method in explain.METHODS:
            padded = explain.explain(self.model, self.tokens, method, steps=8)
            self.assertEqual(padded.shape, self.tokens.shape)
            self.assertAllEqual(padded[~self.valid], np.zeros((~self.valid).sum()), msg=method)
            if method != "random":
                unpadded = explain.explain(self.model, alone, method, steps=8)
                self.assertAllClose(padded[0, :3], unpadded[0], atol=1e-4, msg=method)

    def test_every_method_under_mixed_precision(self):
        # The same weights in a mixed-precision model: every method runs (the
        # gradient methods need the weights returned to be the ones applied)
        # and ranks the tokens as the float32 model does, up to half precision.
        weights = self.model.get_weights()
        expected = {method: explain.explain(self.model, self.tokens, method, steps=8)
                    for method in explain.METHODS if method != "random"}
        for policy in ("mixed_bfloat16", "mixed_float16"):
            keras.config.set_dtype_policy(policy)
            try:
                model = tiny_classifier()
            finally:
                keras.config.set_dtype_policy("float32")
            model.set_weights(weights)
            for method, float32_scores in expected.items():
                scores = explain.explain(model, self.tokens, method, steps=8)
                self.assertTrue(np.isfinite(scores).all(), msg=(policy, method))
                self.assertAllEqual(scores[~self.valid], np.zeros((~self.valid).sum()))
                scale = np.abs(float32_scores).max()
                self.assertAllClose(float32_scores / scale, scores / scale, atol=0.1,
                                    msg=(policy, method))

    def test_integrated_gradients_completeness(self):
        # From the pad token's embedding the scores sum to f(x) - f(baseline)
        # (the blocks' ReLUs make f kinked along the path: 256 points).
        # (From zero embeddings the path would start inside LayerNorm's
        # epsilon, where f jumps from 0 to almost f(x) over a tiny step.)
        classes = explain.methods.predicted_classes(self.model, self.tokens)
        target = explain.methods.target_function(self.model, self.tokens, classes)
        layer = _trace.find_embedding_layer(self.model)
        pad = keras.ops.convert_to_numpy(layer.embeddings)[0]
        at_input = _trace.trace(self.model, self.tokens, target=target,
                                attention=False).targets
        at_baseline = _trace.trace(
            self.model, self.tokens, target=target, attention=False, embedding_layer=layer,
            embedding_transform=lambda e: keras.ops.zeros_like(e) + pad).targets
        scores = explain.integrated_gradients(self.model, self.tokens, baseline=0, steps=256)
        gap = at_input - at_baseline
        self.assertAllClose(scores.sum(1), gap, rtol=0.01, atol=0.0)

    def test_gradient_methods_by_hand_on_a_linear_model(self):
        # logits = mean over real tokens of e_t, times W: d logit_c / d e_t
        # = W[:, c] / n, so input x gradient = IG from zeros = e_t . W[:, c] / n.
        tokens = keras.Input(shape=(None,), dtype="int32")
        embedding = keras.layers.Embedding(VOCAB, 4, mask_zero=True)
        pooled = keras.layers.GlobalAveragePooling1D()(embedding(tokens))
        dense = keras.layers.Dense(2, use_bias=False)
        model = keras.Model(tokens, dense(pooled))
        table = keras.ops.convert_to_numpy(embedding.embeddings)
        kernel = keras.ops.convert_to_numpy(dense.kernel)
        expected = table[self.tokens] @ kernel[:, 1] / self.valid.sum(1, keepdims=True)
        expected = np.where(self.valid, expected, 0.0)
        self.assertAllClose(explain.input_x_gradient(model, self.tokens, target=1), expected,
                            atol=1e-5)
        self.assertAllClose(explain.integrated_gradients(model, self.tokens, target=1, steps=4),
                            expected, atol=1e-5)

    def test_gradient_rollout_is_class_specific(self):
        first = explain.gradient_weighted_rollout(self.model, self.tokens, target=0)
        second = explain.gradient_weighted_rollout(self.model, self.tokens, target=1)
        self.assertGreaterEqual(first.min(), 0.0)
        self.assertNotAllClose(first, second)
        # Raw attention explains the whole output: the same for any class.
        self.assertAllClose(explain.raw_attention(self.model, self.tokens).sum(1), [1.0] * 3,
                            atol=1e-5)

    def test_random_is_reproducible_by_seed(self):
        first = explain.random_scores(self.valid, seed=4)
        self.assertAllEqual(first, explain.random_scores(self.valid, seed=4))
        self.assertNotAllClose(first, explain.random_scores(self.valid, seed=5))
        self.assertAllEqual(first[~self.valid], np.zeros((~self.valid).sum()))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Expected `method` to be one of"):
            explain.explain(self.model, self.tokens, "saliency")
        with self.assertRaisesRegex(ValueError, "received: steps=0"):
            explain.integrated_gradients(self.model, self.tokens, steps=0)
        with self.assertRaisesRegex(ValueError, "received: layer='nope'"):
            explain.raw_attention(self.model, self.tokens, layer="nope")
