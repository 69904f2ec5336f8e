"""Tests for PositionEmbedding, SinusoidalPositionEncoding and RotaryEmbedding."""

import keras
import numpy as np
import tensorflow as tf

from kerasattn.layers.position_embedding import PositionEmbedding
from kerasattn.layers.rotary_embedding import RotaryEmbedding
from kerasattn.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from tests import harness

RNG = np.random.default_rng(0)


def random(*shape):
    return RNG.normal(size=shape).astype("float32")


def implicit_mask(tensor):
    """The Keras mask a layer attached to an eager TensorFlow tensor."""
    return getattr(tensor, "_keras_mask", None)


def masked_embeddings():
    """(ids, embeddings carrying the implicit mask ids != 0)."""
    ids = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 0]], dtype="int32")
    embedding = keras.layers.Embedding(10, 6, mask_zero=True)
    return ids, embedding(ids)


# -- NumPy references (float64) --------------------------------------------------


def numpy_position_embedding(layer, inputs, start_index=0):
    table = np.asarray(layer.embeddings.numpy(), "float64")
    length = inputs.shape[1]
    if layer.align == "end":
        start_index = layer.sequence_length - length
    rows = table[start_index : start_index + length]
    return np.broadcast_to(rows, inputs.shape)


def numpy_sinusoidal(layer, inputs, start_index=0):
    _, length, width = inputs.shape
    encoding = np.zeros((length, width))
    for t in range(length):
        p = start_index + t
        for k in range(width):
            i = k // 2
            angle = p / layer.max_wavelength ** (2 * i / width)
            encoding[t, k] = np.sin(angle) if k % 2 == 0 else np.cos(angle)
    return np.broadcast_to(encoding, inputs.shape)


def numpy_rotary(layer, inputs, start_index=0):
    """Rotates each pair (j, j + d/2) by a 2x2 rotation matrix, one position
    at a time, for inputs with the sequence on axis 1 and features last."""
    x = np.asarray(inputs, "float64")
    width = x.shape[-1]
    half = width // 2
    out = np.empty_like(x)
    for t in range(x.shape[1]):
        p = (start_index + t) / layer.scaling_factor
        for j in range(half):
            theta = p * layer.max_wavelength ** (-2 * j / width)
            rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
            pair = np.stack([x[:, t, ..., j], x[:, t, ..., j + half]], axis=-1)
            rotated = pair @ rotation.T
            out[:, t, ..., j] = rotated[..., 0]
            out[:, t, ..., j + half] = rotated[..., 1]
    return out


# -- PositionEmbedding -----------------------------------------------------------


class PositionEmbeddingTest(harness.LayerTestCase):
    def inputs(self, **kwargs):
        return {"inputs": random(2, 4, 6)}, kwargs

    def test_hand_computed(self):
        layer = PositionEmbedding(sequence_length=3)
        layer.build((None, 2, 2))
        # Table rows are [0, 1], [2, 3], [4, 5]; positions 1 and 2 of a
        # length-2 input starting at 1 are rows 1 and 2, for every batch item.
        layer.embeddings.assign(np.arange(6, dtype="float32").reshape(3, 2))
        out = layer(np.zeros((2, 2, 2), "float32"), start_index=1)
        self.assertAllEqual([[[2, 3], [4, 5]]] * 2, out)

    def test_hand_computed_aligned_to_the_end(self):
        layer = PositionEmbedding(sequence_length=3, align="end")
        layer.build((None, 2, 2))
        layer.embeddings.assign(np.arange(6, dtype="float32").reshape(3, 2))
        # The last step takes the last row (2) whatever the length.
        self.assertAllEqual([[[2, 3], [4, 5]]], layer(np.zeros((1, 2, 2), "float32")))
        self.assertAllEqual([[[4, 5]]], layer(np.zeros((1, 1, 2), "float32")))

    def test_matches_reference(self):
        layer = PositionEmbedding(sequence_length=6)
        self.assert_matches_reference(layer, self.inputs(), numpy_position_embedding)
        self.assert_matches_reference(
            layer, self.inputs(start_index=2), numpy_position_embedding
        )
        self.assert_matches_reference(
            PositionEmbedding(sequence_length=6, align="end"), self.inputs(),
            numpy_position_embedding,
        )

    def test_aligned_to_the_end_a_cut_sequence_keeps_its_positions(self):
        layer = PositionEmbedding(sequence_length=6, align="end")
        inputs = keras.Input(shape=(None, 6))
        model = keras.Model(inputs, layer(inputs))
        full = model(random(2, 6, 6)).numpy()
        for length in (1, 3, 6):
            self.assertAllEqual(full[:, 6 - length:], model(random(2, length, 6)))

    def test_output_does_not_depend_on_input_values(self):
        layer = PositionEmbedding(sequence_length=6)
        x = random(2, 4, 6)
        self.assertAllEqual(layer(x), layer(x * 3.0 + 1.0))

    def test_dynamic_length(self):
        layer = PositionEmbedding(sequence_length=6)
        inputs = keras.Input(shape=(None, 6))
        outputs = layer(inputs)
        self.assertEqual((None, None, 6), tuple(outputs.shape))
        model = keras.Model(inputs, outputs)
        table = layer.embeddings.numpy()
        for length in (1, 3, 6):
            got = model(random(2, length, 6))
            self.assertAllClose(np.broadcast_to(table[:length], (2, length, 6)), got)

    def test_dynamic_start_index_under_tf_function(self):
        layer = PositionEmbedding(sequence_length=6)
        x = random(2, 2, 6)
        layer(x)

        @tf.function(input_signature=[tf.TensorSpec((), tf.int32)])
        def step(start):
            return layer(x, start_index=start)

        self.assertAllClose(layer.embeddings.numpy()[3:5], step(tf.constant(3))[0])

    def test_mask_propagated(self):
        ids, embedded = masked_embeddings()
        out = PositionEmbedding(sequence_length=5)(embedded)
        self.assertAllEqual(ids != 0, implicit_mask(out))

    def test_gradient_reaches_used_rows_only(self):
        layer = PositionEmbedding(sequence_length=6)
        x = random(2, 4, 6)
        layer(x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, start_index=1))
        # The rows are gathered: the gradient comes as IndexedSlices.
        grad = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings))
        # Each used row is summed over the batch of 2; rows 0 and 5 are unused.
        expected = np.zeros((6, 6), "float32")
        expected[1:5] = 2.0
        self.assertAllEqual(expected, grad)

    def test_fresh_kernels_differ(self):
        # One table: nothing of its shape to compare it with.
        self.check_fresh_kernels_differ(
            lambda: PositionEmbedding(sequence_length=6), self.inputs(), min_pairs=0
        )

    def test_serialization(self):
        self.check_serialization(
            lambda: PositionEmbedding(sequence_length=6, initializer="random_normal"),
            self.inputs(),
        )
        self.check_serialization(
            lambda: PositionEmbedding(sequence_length=6, align="end"), self.inputs()
        )

    def test_mixed_precision(self):
        self.check_mixed_precision(lambda: PositionEmbedding(sequence_length=6), self.inputs())

    def test_xla(self):
        self.check_xla(lambda: PositionEmbedding(sequence_length=6), self.inputs())

    def test_output_spec(self):
        self.check_output_spec(lambda: PositionEmbedding(sequence_length=6), self.inputs())

    def test_errors(self):
        self.assert_value_error(
            lambda: PositionEmbedding(sequence_length=0),
            "Expected `sequence_length` to be a positive integer",
            "sequence_length=0",
        )
        self.assert_value_error(
            lambda: PositionEmbedding(sequence_length=None), "sequence_length=None"
        )
        self.assert_value_error(
            lambda: PositionEmbedding(sequence_length=3)(random(2, 4, 6)),
            "sequence_length=3",
            "inputs.shape=(2, 4, 6)",
        )
        layer = PositionEmbedding(sequence_length=6)
        self.assert_value_error(
            lambda: layer(random(2, 4, 6), start_index=3), "start_index=3"
        )
        self.assert_value_error(lambda: layer(random(2, 4, 6), start_index=-1), "start_index=-1")
        self.assert_value_error(
            lambda: PositionEmbedding(sequence_length=6, align="left"), "align='left'"
        )
        self.assert_value_error(
            lambda: PositionEmbedding(sequence_length=6, align="end")(random(2, 4, 6),
                                                                      start_index=1),
            'align="end"', "start_index=1",
        )
        self.assert_value_error(lambda: layer(random(2, 6)), "rank 3", "inputs.shape=(2, 6)")
        self.assert_value_error(
            lambda: layer(random(2, 4, 5)), "last dimension 6", "inputs.shape=(2, 4, 5)"
        )


# -- SinusoidalPositionEncoding --------------------------------------------------


class SinusoidalPositionEncodingTest(harness.LayerTestCase):
    def inputs(self, width=6, **kwargs):
        return {"inputs": random(2, 4, width)}, kwargs

    def test_hand_computed(self):
        # d = 4: features 0, 1 have frequency 1 and features 2, 3 frequency
        # 10000 ** (-2/4) = 1/100. Position 0 is [sin 0, cos 0, sin 0, cos 0];
        # position 1 is [sin 1, cos 1, sin 0.01, cos 0.01].
        out = SinusoidalPositionEncoding()(np.zeros((1, 2, 4), "float32"))
        expected = [
            [0.0, 1.0, 0.0, 1.0],
            [np.sin(1.0), np.cos(1.0), np.sin(0.01), np.cos(0.01)],
        ]
        self.assertAllClose([expected], out, atol=1e-6)

    def test_matches_reference(self):
        layer = SinusoidalPositionEncoding()
        self.assert_matches_reference(layer, self.inputs(), numpy_sinusoidal)
        self.assert_matches_reference(layer, self.inputs(start_index=7), numpy_sinusoidal)
        self.assert_matches_reference(
            SinusoidalPositionEncoding(max_wavelength=50.0), self.inputs(), numpy_sinusoidal
        )

    def test_odd_width(self):
        # The last feature of an odd width is a sine without its cosine.
        self.assert_matches_reference(
            SinusoidalPositionEncoding(), self.inputs(width=5), numpy_sinusoidal
        )

    def test_start_index_shifts_positions(self):
        layer = SinusoidalPositionEncoding()
        x = random(2, 6, 4)
        self.assertAllClose(layer(x)[:, 2:], layer(x[:, :4], start_index=2), atol=1e-6)

    def test_dynamic_length_and_start_index(self):
        inputs = keras.Input(shape=(None, 4))
        model = keras.Model(inputs, SinusoidalPositionEncoding()(inputs))
        x = random(2, 5, 4)
        layer = SinusoidalPositionEncoding()
        self.assertAllClose(numpy_sinusoidal(layer, x), model(x), atol=1e-6)

        @tf.function(input_signature=[tf.TensorSpec((), tf.int32)])
        def step(start):
            return layer(x[:, :1], start_index=start)

        self.assertAllClose(numpy_sinusoidal(layer, x[:, :1], 3), step(tf.constant(3)), atol=1e-6)

    def test_no_weights(self):
        layer = SinusoidalPositionEncoding()
        layer(random(2, 3, 4))
        self.assertEqual([], layer.weights)

    def test_mask_propagated(self):
        ids, embedded = masked_embeddings()
        out = SinusoidalPositionEncoding()(embedded)
        self.assertAllEqual(ids != 0, implicit_mask(out))

    def test_serialization(self):
        self.check_serialization(
            lambda: SinusoidalPositionEncoding(max_wavelength=500), self.inputs()
        )

    def test_fresh_kernels_differ(self):
        # No weights at all.
        self.check_fresh_kernels_differ(SinusoidalPositionEncoding, self.inputs(), min_pairs=0)

    def test_mixed_precision(self):
        self.check_mixed_precision(SinusoidalPositionEncoding, self.inputs())

    def test_xla(self):
        self.check_xla(SinusoidalPositionEncoding, self.inputs())

    def test_output_spec(self):
        self.check_output_spec(SinusoidalPositionEncoding, self.inputs(width=5))

    def test_errors(self):
        self.assert_value_error(
            lambda: SinusoidalPositionEncoding(max_wavelength=0),
            "Expected `max_wavelength` to be a positive number",
            "max_wavelength=0",
        )
        self.assert_value_error(
            lambda: SinusoidalPositionEncoding(max_wavelength="big"), "max_wavelength='big'"
        )
        self.assert_value_error(
            lambda: SinusoidalPositionEncoding()(random(2, 4)), "rank 3", "inputs.shape=(2, 4)"
        )


# -- RotaryEmbedding -------------------------------------------------------------


class RotaryEmbeddingTest(harness.LayerTestCase):
    def inputs(self, shape=(2, 4, 6), **kwargs):
        return {"inputs": random(*shape)}, kwargs

    def test_hand_computed(self):
        # d = 4, max_wavelength = 100: pairs (0, 2) and (1, 3) turn at
        # frequencies 1 and 100 ** (-2/4) = 0.1. At position 1, x = [1, 2, 0, 0]
        # becomes [cos 1, 2 cos 0.1, sin 1, 2 sin 0.1]; position 0 is unchanged.
        layer = RotaryEmbedding(max_wavelength=100)
        x = np.array([[[1, 2, 0, 0], [1, 2, 0, 0]]], "float32")
        expected = [[[1, 2, 0, 0], [np.cos(1), 2 * np.cos(0.1), np.sin(1), 2 * np.sin(0.1)]]]
        self.assertAllClose(expected, layer(x), atol=1e-6)

    def test_matches_reference(self):
        layer = RotaryEmbedding()
        self.assert_matches_reference(layer, self.inputs(), numpy_rotary)
        self.assert_matches_reference(layer, self.inputs(start_index=5), numpy_rotary)
        self.assert_matches_reference(
            RotaryEmbedding(max_wavelength=30, scaling_factor=2.5),
            self.inputs(),
            numpy_rotary,
        )

    def test_heads_axis(self):
        self.assert_matches_reference(
            RotaryEmbedding(), self.inputs(shape=(2, 5, 3, 4), start_index=1), numpy_rotary
        )

    def test_custom_axes(self):
        # (B, heads, d, T) with the sequence last equals the default layout
        # of the transposed tensor.
        x = random(2, 3, 4, 5)
        custom = RotaryEmbedding(sequence_axis=-1, feature_axis=2)(x)
        standard = RotaryEmbedding()(np.transpose(x, (0, 3, 1, 2)))
        self.assertAllClose(np.transpose(standard, (0, 2, 3, 1)), custom, atol=1e-6)

    def test_scores_depend_on_relative_position_only(self):
        # The same query vector at every position and the same key vector at
        # every position: the score matrix S[m, n] = <RoPE(q)_m, RoPE(k)_n>
        # must be constant along diagonals (a function of m - n), whatever
        # the start index.
        layer = RotaryEmbedding(max_wavelength=10)
        q = np.tile(random(1, 1, 8), (1, 6, 1))
        k = np.tile(random(1, 1, 8), (1, 6, 1))
        scores = np.einsum("bmd,bnd->bmn", layer(q).numpy(), layer(k).numpy())[0]
        for offset in range(-5, 6):
            diagonal = np.diagonal(scores, offset)
            self.assertAllClose(np.full_like(diagonal, diagonal[0]), diagonal, atol=1e-5)
        self.assertGreater(np.ptp(scores), 1e-2)  # the scores do vary with m - n
        shifted = np.einsum(
            "bmd,bnd->bmn",
            layer(q, start_index=11).numpy(),
            layer(k, start_index=11).numpy(),
        )[0]
        self.assertAllClose(scores, shifted, atol=1e-5)

    def test_preserves_norm(self):
        x = random(2, 4, 6)
        out = RotaryEmbedding()(x)
        self.assertAllClose(np.linalg.norm(x, axis=-1), np.linalg.norm(out, axis=-1), atol=1e-5)

    def test_dynamic_length_and_start_index(self):
        layer = RotaryEmbedding()
        inputs = keras.Input(shape=(None, 2, 4))
        model = keras.Model(inputs, layer(inputs))
        x = random(2, 5, 2, 4)
        self.assertAllClose(numpy_rotary(layer, x), model(x), atol=1e-5)

        @tf.function(input_signature=[tf.TensorSpec((), tf.int32)])
        def step(start):
            return layer(x[:, :1], start_index=start)

        self.assertAllClose(numpy_rotary(layer, x[:, :1], 4), step(tf.constant(4)), atol=1e-5)

    def test_mask_propagated(self):
        ids, embedded = masked_embeddings()
        out = RotaryEmbedding()(embedded)
        self.assertAllEqual(ids != 0, implicit_mask(out))

    def test_gradients(self):
        self.check_gradients(RotaryEmbedding(), self.inputs(), wrt="inputs")

    def test_fresh_kernels_differ(self):
        # No weights at all.
        self.check_fresh_kernels_differ(RotaryEmbedding, self.inputs(), min_pairs=0)

    def test_serialization(self):
        self.check_serialization(
            lambda: RotaryEmbedding(max_wavelength=500, scaling_factor=2.0, feature_axis=3),
            self.inputs(shape=(2, 4, 3, 2)),
        )

    def test_mixed_precision(self):
        self.check_mixed_precision(RotaryEmbedding, self.inputs())

    def test_xla(self):
        self.check_xla(RotaryEmbedding, self.inputs())

    def test_output_spec(self):
        self.check_output_spec(RotaryEmbedding, self.inputs(shape=(2, 4, 3, 2)))

    def test_errors(self):
        self.assert_value_error(
            lambda: RotaryEmbedding(scaling_factor=0.0),
            "Expected `scaling_factor` to be a positive number",
            "scaling_factor=0.0",
        )
        self.assert_value_error(lambda: RotaryEmbedding(max_wavelength=-1), "max_wavelength=-1")
        self.assert_value_error(
            lambda: RotaryEmbedding(sequence_axis=1.0), "Expected `sequence_axis` to be an integer"
        )
        self.assert_value_error(
            lambda: RotaryEmbedding()(random(2, 4, 5)),
            "static, even feature dimension",
            "inputs.shape=(2, 4, 5)",
        )
        self.assert_value_error(
            lambda: RotaryEmbedding(feature_axis=1)(random(2, 4, 6)),
            "different axes",
            "sequence_axis=1, feature_axis=1",
        )
        self.assert_value_error(
            lambda: RotaryEmbedding(sequence_axis=3)(random(2, 4, 6)),
            "Expected `sequence_axis` to be an axis of `inputs`",
            "sequence_axis=3",
        )


class PositionEncodingsFitTest(harness.LayerTestCase):
    def test_fit_in_functional_model(self):
        # Token ids -> embeddings + learned + sinusoidal positions -> RoPE on
        # a (B, T, heads, d) view -> pooled -> logit. Two steps of fit move
        # the position table.
        ids = keras.Input(shape=(5,), dtype="int32")
        tokens = keras.layers.Embedding(10, 8)(ids)
        learned = PositionEmbedding(sequence_length=5)
        x = keras.layers.Add()([tokens, learned(tokens), SinusoidalPositionEncoding()(tokens)])
        x = keras.layers.Reshape((5, 2, 4))(x)
        x = RotaryEmbedding()(x)
        x = keras.layers.Flatten()(x)
        model = keras.Model(ids, keras.layers.Dense(1)(x))
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        before = learned.embeddings.numpy().copy()
        data = RNG.integers(1, 10, size=(4, 5)).astype("int32")
        history = model.fit(data, np.ones((4, 1)), epochs=2, batch_size=2, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertGreater(np.abs(learned.embeddings.numpy() - before).max(), 0.0)
