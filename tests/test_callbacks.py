"""`AttentionMapCallback`: attention maps and entropies in TensorBoard event files."""

import math
import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from kerasattn import layers
from kerasattn.callbacks import AttentionMapCallback
from kerasattn.callbacks import _collect
from kerasattn.callbacks import _heatmap

VOCAB = 20
LENGTH = 8
# Probe examples of 5, 8 and 3 real tokens, padded with id 0 to LENGTH.
PROBE_LENGTHS = (5, 8, 3)


def padded_tokens(lengths, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (len(lengths), LENGTH)).astype("int32")
    for row, length in enumerate(lengths):
        tokens[row, length:] = 0
    return tokens


def probe_batch():
    tokens = padded_tokens(PROBE_LENGTHS, seed=1)
    words = [[f"w{t}" for t in row[:length]] for row, length in zip(tokens, PROBE_LENGTHS)]
    return tokens, words


def encoder_pooling_model(seed=0):
    """Embedding(mask_zero) → TransformerEncoderBlock → AttentionPooling → Dense.

    Embeddings of unit scale give attention that is visibly not uniform.
    """
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        VOCAB, 8, mask_zero=True, name="embedding",
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
    )(tokens)
    x = layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16, name="encoder")(x)
    pooled = layers.AttentionPooling(name="pool")(x)
    model = keras.Model(tokens, keras.layers.Dense(1, activation="sigmoid", name="head")(pooled))
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    return model


def training_data(samples=32, seed=2):
    rng = np.random.default_rng(seed)
    tokens = padded_tokens(rng.integers(2, LENGTH + 1, samples), seed=seed)
    labels = (tokens == 3).sum(1, keepdims=True) > (tokens == 4).sum(1, keepdims=True)
    return tokens, labels.astype("float32")


def read_run(run_dir):
    accumulator = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def plugin(accumulator, tag):
    return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


def decode_images(event):
    """The `(H, W, 3)` images of an image-summary event, checked against the
    width and height the summary declares."""
    values = tf.make_ndarray(event.tensor_proto)
    width, height = int(values[0]), int(values[1])
    images = [tf.io.decode_png(png).numpy() for png in values[2:]]
    for image in images:
        assert image.shape == (height, width, 3), (image.shape, width, height)
    return images


def entropy_reference(weights, valid_rows, valid_keys):
    """Mean over examples, heads and valid query rows of -Σ w log w, from
    `(B, N, Tq, Tk)` weights and `(B, Tq)`, `(B, Tk)` padding masks."""
    values = []
    for b in range(weights.shape[0]):
        for n in range(weights.shape[1]):
            for q in np.flatnonzero(valid_rows[b]):
                w = weights[b, n, q][valid_keys[b]]
                values.append(-(w * np.log(w)).sum())
    return float(np.mean(values))


def is_grey(pixel):
    return int(pixel.max()) - int(pixel.min()) <= 2 and pixel.max() < 250


def is_coloured(pixel):
    return int(pixel.max()) - int(pixel.min()) > 30


class AttentionMapCallbackFitTest(tf.test.TestCase):
    """One short `fit` with `keras.callbacks.TensorBoard` on the same log dir."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(0)
        cls.log_dir = tempfile.mkdtemp()
        cls.probe, cls.words = probe_batch()
        cls.model = encoder_pooling_model()
        tokens, labels = training_data()
        cls.callback = AttentionMapCallback(
            cls.probe, cls.log_dir, every_n_epochs=2, max_examples=2, probe_tokens=cls.words
        )
        cls.model.fit(
            tokens, labels, epochs=3, batch_size=16, verbose=0,
            callbacks=[keras.callbacks.TensorBoard(cls.log_dir), cls.callback],
        )
        cls.attention = read_run(os.path.join(cls.log_dir, "attention"))

    def test_runs_share_the_log_dir(self):
        self.assertContainsSubset({"train", "attention"}, set(os.listdir(self.log_dir)))
        train = read_run(os.path.join(self.log_dir, "train"))
        self.assertEqual([0, 1, 2], [e.step for e in train.Tensors("epoch_loss")])

    def test_tags_steps_and_dashboards(self):
        images = {
            "attention/encoder/self_attention/head_0",
            "attention/encoder/self_attention/head_1",
            "attention/pool",
            "explanation/rollout",
        }
        scalars = {"attention_entropy/encoder/self_attention", "attention_entropy/pool"}
        self.assertCountEqual(images | scalars, self.attention.Tags()["tensors"])
        for tag in images:
            self.assertEqual("images", plugin(self.attention, tag))
        for tag in scalars:
            self.assertEqual("scalars", plugin(self.attention, tag))
        # every_n_epochs=2 over 3 epochs: after epochs 0 and 2.
        for tag in images | scalars:
            self.assertEqual([0, 2], [e.step for e in self.attention.Tensors(tag)], tag)

    def test_image_shapes(self):
        # Self-attention: 8 × 8 with token labels on both axes; pooling: one
        # row (not labelled: not the probe's length) × 8 labelled keys.
        expected = {
            "attention/encoder/self_attention/head_0": _heatmap.layout(LENGTH, LENGTH, True, True),
            "attention/pool": _heatmap.layout(1, LENGTH, False, True),
        }
        for tag, geometry in expected.items():
            for event in self.attention.Tensors(tag):
                images = decode_images(event)
                self.assertLen(images, 2)  # max_examples
                for image in images:
                    self.assertEqual((geometry.height, geometry.width, 3), image.shape)

    def test_padding_is_drawn_masked(self):
        # Example 0 has 5 real tokens: cells whose query or key is padding
        # are hatched grey; the others carry a colormap colour.
        maps = (("attention/encoder/self_attention/head_1", LENGTH), ("attention/pool", 1),
                ("explanation/rollout", 1))
        for tag, rows in maps:
            geometry = _heatmap.layout(rows, LENGTH, rows == LENGTH, True)
            image = decode_images(self.attention.Tensors(tag)[-1])[0]
            for i in range(rows):
                for j in range(LENGTH):
                    y = geometry.top + int((i + 0.5) * geometry.cell)
                    x = geometry.left + int((j + 0.5) * geometry.cell)
                    padded = j >= PROBE_LENGTHS[0] or (rows > 1 and i >= PROBE_LENGTHS[0])
                    check = is_grey if padded else is_coloured
                    self.assertTrue(check(image[y, x]), (tag, i, j, image[y, x]))

    def test_entropy_matches_the_trained_layers(self):
        # The scalars logged after the last epoch equal the entropies of the
        # trained layers' own weights on the probe.
        mask = self.probe != 0
        x = self.model.get_layer("embedding")(self.probe)
        encoded, self_scores = self.model.get_layer("encoder")(
            x, mask=mask, return_attention_scores=True
        )
        _, pool_weights = self.model.get_layer("pool")(
            encoded, mask=mask, return_attention_scores=True
        )
        expected = {
            "attention_entropy/encoder/self_attention": entropy_reference(
                np.asarray(self_scores), mask, mask
            ),
            "attention_entropy/pool": entropy_reference(
                np.asarray(pool_weights)[:, None, None, :], np.ones((3, 1), bool), mask
            ),
        }
        for tag, want in expected.items():
            got = float(tf.make_ndarray(self.attention.Tensors(tag)[-1].tensor_proto))
            self.assertAllClose(want, got, atol=1e-5)
            self.assertBetween(got, 0.0, math.log(LENGTH))

    def test_calls_are_restored(self):
        for layer in self.model._flatten_layers():
            self.assertNotIn("call", vars(layer), layer.name)


class CollectAttentionTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_a_block_that_asks_for_scores_still_gets_them(self):
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(tokens)
        outputs = layers.TransformerEncoderBlock(
            num_heads=2, intermediate_dim=16, name="encoder"
        )(x, return_attention_scores=True)
        model = keras.Model(tokens, outputs)
        probe, _ = probe_batch()
        maps = _collect.collect_attention(model, probe)
        self.assertEqual(["encoder/self_attention"], [m.path for m in maps])
        _, scores = model(probe)  # two outputs, as before the collection
        self.assertAllClose(np.asarray(scores), maps[0].weights)
        self.assertTrue(maps[0].multi_head)

    def test_keras_layers_and_their_masks(self):
        # keras.layers.Attention gives a padded query a softmax over the
        # real keys; the `mask=[query_mask, value_mask]` it received still
        # marks that row masked.
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(tokens)
        x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="keras_mha")(x, x)
        x = keras.layers.Attention(name="keras_attention")([x, x])
        model = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(x))
        probe, _ = probe_batch()
        maps = {m.path: m for m in _collect.collect_attention(model, probe)}
        self.assertCountEqual(["keras_mha", "keras_attention"], maps)
        self.assertEqual((3, 2, LENGTH, LENGTH), maps["keras_mha"].weights.shape)
        self.assertEqual((3, 1, LENGTH, LENGTH), maps["keras_attention"].weights.shape)
        self.assertFalse(maps["keras_attention"].multi_head)
        valid = probe != 0
        want = ~(valid[:, None, :, None] & valid[:, None, None, :])
        for attention_map in maps.values():
            masked = attention_map.masked
            self.assertAllEqual(np.broadcast_to(want, masked.shape), masked)
        self.assertAllClose(1.0, maps["keras_attention"].weights[0, 0, LENGTH - 1].sum())

    def test_masks_received_mark_cells_with_weight(self):
        # A user's layer that spreads weight over padding too: the padding
        # masks Keras passed it still mark those queries and keys masked.
        class Uniform(keras.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.supports_masking = True

            def call(self, query, value, query_mask=None, value_mask=None,
                     return_attention_scores=False):
                weights = keras.ops.ones(
                    (keras.ops.shape(query)[0], query.shape[1], value.shape[1])
                )
                weights = weights / value.shape[1]
                output = keras.ops.matmul(weights, value)
                return (output, weights) if return_attention_scores else output

        tokens = keras.Input(shape=(LENGTH,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, 4, mask_zero=True)(tokens)
        model = keras.Model(tokens, Uniform(name="uniform")(x, x))
        probe, _ = probe_batch()
        (attention_map,) = _collect.collect_attention(model, probe)
        valid = probe != 0
        self.assertAllEqual(
            ~(valid[:, None, :, None] & valid[:, None, None, :]), attention_map.masked
        )
        # Its entropy is that of the weights it really gave: uniform over 8.
        self.assertAllClose(math.log(LENGTH), _collect.mean_entropy(attention_map))

    def test_decoder_cross_layer_and_target_shapes(self):
        source = keras.Input(shape=(None,), dtype="int32")
        target = keras.Input(shape=(None,), dtype="int32")
        embedding = keras.layers.Embedding(VOCAB, 8, mask_zero=True)
        encoded = layers.TransformerEncoderBlock(2, 16, name="encoder")(embedding(source))
        decoded = layers.TransformerDecoderBlock(2, 16, name="decoder")(embedding(target), encoded)
        fused = layers.CrossLayerAttention(name="fuse")([encoded, encoded])
        summary = layers.TargetAttention(score="scaled", name="target")(
            keras.layers.GlobalAveragePooling1D()(decoded), fused
        )
        model = keras.Model([source, target], summary)
        probe = [padded_tokens((5, 8, 3)), padded_tokens((2, 4, 6), seed=3)[:, :6]]
        maps = {m.path: m for m in _collect.collect_attention(model, probe)}
        shapes = {path: m.weights.shape for path, m in maps.items()}
        self.assertEqual(
            {
                "encoder/self_attention": (3, 2, 8, 8),
                "decoder/self_attention": (3, 2, 6, 6),
                "decoder/cross_attention": (3, 2, 6, 8),
                "fuse": (3, 1, 8, 2),
                "target": (3, 1, 1, 8),
            },
            shapes,
        )
        # Cross-layer attention over depth: padded positions are masked rows.
        self.assertAllEqual(
            np.broadcast_to((probe[0] == 0)[:, None, :, None], (3, 1, 8, 2)), maps["fuse"].masked
        )
        self.assertAllEqual(
            np.broadcast_to((probe[0] == 0)[:, None, None, :], (3, 1, 1, 8)), maps["target"].masked
        )
        # Causal self-attention in the decoder: the future is masked too.
        future = np.triu(np.ones((6, 6), bool), 1)
        self.assertTrue(maps["decoder/self_attention"].masked[1, :, future].all())

    def test_calls_restored_after_a_failing_forward_pass(self):
        model = encoder_pooling_model()
        with self.assertRaises(Exception):
            _collect.collect_attention(model, np.zeros((2, 4, 3), "float32"))
        for layer in model._flatten_layers():
            self.assertNotIn("call", vars(layer), layer.name)

    def test_chunked_attention_is_left_out_with_a_warning(self):
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, 8)(tokens)
        x = layers.MultiHeadAttention(2, 4, implementation="chunked", name="chunked")(x, x)
        model = keras.Model(tokens, layers.AttentionPooling(name="pool")(x))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = _collect.find_attention_layers(model)
        self.assertEqual(["pool"], [path for path, _ in found])
        self.assertTrue(any("chunked" in str(w.message) for w in caught))


class AttentionMapCallbackArgumentsTest(tf.test.TestCase):
    def test_bad_arguments(self):
        probe, words = probe_batch()
        cases = [
            (dict(every_n_epochs=0), "every_n_epochs"),
            (dict(max_examples=True), "max_examples"),
            (dict(probe_tokens=words[:2]), "one list per probe example"),
            (dict(probe_tokens=[["a"] * (LENGTH + 1)] * 3), "at most 8 tokens"),
            (dict(probe_tokens="a b c"), "probe_tokens"),
            (dict(explanation_methods="rollout"), "explanation_methods"),
            (dict(explanation_methods=["saliency"]), "explanation_methods"),
        ]
        for kwargs, message in cases:
            with self.subTest(kwargs=kwargs), self.assertRaisesRegex(ValueError, message):
                AttentionMapCallback(probe, "logs", **kwargs)
        with self.assertRaisesRegex(ValueError, "one non-zero batch size"):
            AttentionMapCallback([probe, probe[:2]], "logs")
        with self.assertRaisesRegex(ValueError, "log_dir"):
            AttentionMapCallback(probe, None)

    def test_model_without_attention(self):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        callback = AttentionMapCallback(np.zeros((2, 4)), tempfile.mkdtemp())
        with self.assertRaisesRegex(ValueError, "return_attention_scores"):
            model.fit(np.zeros((4, 4)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[callback])


class AttentionMapCallbackExplanationTest(tf.test.TestCase):
    def test_a_model_it_cannot_explain_warns_once(self):
        # No pooling to read the rollout out of: the maps are still written.
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(tokens)
        x = layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16, name="encoder")(x)
        model = keras.Model(tokens, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
        model.compile("sgd", "mse")
        probe, _ = probe_batch()
        log_dir = tempfile.mkdtemp()
        callback = AttentionMapCallback(probe, log_dir, explanation_methods=("rollout",))
        data, labels = training_data(8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(data, labels, epochs=2, verbose=0, callbacks=[callback])
        left_out = [w for w in caught if "leaves out the rollout" in str(w.message)]
        self.assertLen(left_out, 1)
        run = read_run(os.path.join(log_dir, "attention"))
        self.assertIn("attention/encoder/self_attention/head_0", run.Tags()["tensors"])
        self.assertNotIn("explanation/rollout", run.Tags()["tensors"])
