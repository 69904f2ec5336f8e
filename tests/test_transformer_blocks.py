"""Tests for TransformerEncoderBlock and TransformerDecoderBlock."""

import math

import keras
import numpy as np
import tensorflow as tf

from kerasattn.layers.transformer_decoder_block import TransformerDecoderBlock
from kerasattn.layers.transformer_encoder_block import TransformerEncoderBlock
from tests import harness

RNG = np.random.default_rng(0)
PADDING = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)  # (B=2, T=5)
ENCODER_PADDING = np.array([[1, 1, 0], [1, 1, 1]], bool)  # (B=2, Tk=3)
ALL_PADDED = np.array([[0, 0, 0], [1, 1, 1]], bool)  # batch item 0 has no key


def random(*shape):
    return RNG.normal(size=shape).astype("float32")


def randomize(layer, scale=0.5):
    """Random values for every weight (biases and layer norms included), so
    the references check every parameter."""
    layer.set_weights([RNG.normal(size=w.shape) * scale for w in layer.get_weights()])


def implicit_mask(tensor):
    return getattr(tensor, "_keras_mask", None)


def without_mask(tensor):
    """The same values with no Keras mask attached."""
    return tf.convert_to_tensor(np.asarray(tensor))


# -- NumPy references (float64) --------------------------------------------------

ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))),
}


def f64(x):
    return np.asarray(x, "float64")


def numpy_layer_norm(x, layer):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * f64(layer.gamma) + f64(layer.beta)


def numpy_mha(mha, query, value, query_mask, key_mask, attention_mask, causal):
    """Multi-head attention from the projections' weights: (output, weights)."""
    num_heads, kv_heads = mha.num_heads, mha.num_key_value_heads
    group = num_heads // kv_heads

    def project(x, dense):
        return np.einsum("btd,dnh->btnh", x, f64(dense.kernel)) + f64(dense.bias)

    q = project(query, mha.query_dense)
    k = np.repeat(project(value, mha.key_dense), group, axis=2)  # head n uses kv head n // group
    v = np.repeat(project(value, mha.value_dense), group, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    batch, q_len, k_len = query.shape[0], query.shape[1], value.shape[1]
    mask = np.ones((batch, q_len, k_len), bool)
    if query_mask is not None:
        mask &= np.asarray(query_mask, bool)[:, :, None]
    if key_mask is not None:
        mask &= np.asarray(key_mask, bool)[:, None, :]
    if attention_mask is not None:
        mask &= np.broadcast_to(np.asarray(attention_mask, bool), mask.shape)
    if causal:
        mask &= harness.numpy_causal_mask(q_len, k_len)
    weights = harness.numpy_masked_softmax(logits, mask[:, None])
    attended = np.einsum("bnts,bsnh->btnh", weights, v)
    output = np.einsum("btnh,nhd->btd", attended, f64(mha.output_dense.kernel))
    return output + f64(mha.output_dense.bias), weights


def numpy_residual(block, x, layer_norm, sublayer):
    if block.norm_first:
        out, extra = sublayer(numpy_layer_norm(x, layer_norm))
        return x + out, extra
    out, extra = sublayer(x)
    return numpy_layer_norm(x + out, layer_norm), extra


def numpy_feedforward(block, x):
    activation = ACTIVATIONS[keras.activations.serialize(block.activation)]
    inner, outer = block._feedforward_intermediate_dense, block._feedforward_output_dense
    hidden = activation(x @ f64(inner.kernel) + f64(inner.bias))
    return hidden @ f64(outer.kernel) + f64(outer.bias), None


def numpy_encoder(
    block,
    inputs,
    padding_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    return_attention_scores=False,
    mask=None,
):
    x = f64(inputs)
    if mask is not None:
        padding_mask = mask if padding_mask is None else np.logical_and(padding_mask, mask)
    if block.sliding_window is not None:
        length = x.shape[1]
        positions = np.arange(length)
        window = np.abs(positions[:, None] - positions[None, :]) < block.sliding_window
        attention_mask = window if attention_mask is None else attention_mask & window

    def attention(h):
        return numpy_mha(
            block._self_attention, h, h, padding_mask, padding_mask, attention_mask,
            use_causal_mask,
        )

    x, scores = numpy_residual(block, x, block._self_attention_layer_norm, attention)
    x, _ = numpy_residual(
        block, x, block._feedforward_layer_norm, lambda h: numpy_feedforward(block, h)
    )
    return (x, scores) if return_attention_scores else x


def numpy_decoder(
    block,
    decoder_sequence,
    encoder_sequence=None,
    decoder_padding_mask=None,
    decoder_attention_mask=None,
    encoder_padding_mask=None,
    encoder_attention_mask=None,
    use_causal_mask=True,
    return_attention_scores=False,
):
    x = f64(decoder_sequence)
    pad = decoder_padding_mask

    def self_attention(h):
        return numpy_mha(
            block._self_attention, h, h, pad, pad, decoder_attention_mask, use_causal_mask
        )

    x, self_scores = numpy_residual(block, x, block._self_attention_layer_norm, self_attention)
    outputs = [self_scores]
    if encoder_sequence is not None:

        def cross_attention(h):
            return numpy_mha(
                block._cross_attention,
                h,
                f64(encoder_sequence),
                pad,
                encoder_padding_mask,
                encoder_attention_mask,
                False,
            )

        x, cross_scores = numpy_residual(
            block, x, block._cross_attention_layer_norm, cross_attention
        )
        outputs.append(cross_scores)
    x, _ = numpy_residual(
        block, x, block._feedforward_layer_norm, lambda h: numpy_feedforward(block, h)
    )
    return tuple([x] + outputs) if return_attention_scores else x


def scores_in_all_precisions(test, make_layer, inputs, index, rows):
    """Under float32, mixed_float16 and mixed_bfloat16 the outputs are finite
    and the weights `outputs[index][rows]` of queries with no key are exact
    zeros. (The harness's `fully_masked_rows` indexes the main output, which
    for a block is not zero there: the residual and feed-forward follow.)"""
    for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
        with test.subTest(policy=policy):
            keras.config.set_dtype_policy(policy)
            try:
                outputs = harness.call_eager(make_layer(), inputs)
            finally:
                keras.config.set_dtype_policy(test._policy)
            test.assert_all_finite(outputs)
            weights = np.asarray(outputs[index], "float32")[rows]
            test.assertAllEqual(np.zeros_like(weights), weights)


# -- TransformerEncoderBlock -----------------------------------------------------


def encoder(**kwargs):
    kwargs.setdefault("num_heads", 2)
    kwargs.setdefault("intermediate_dim", 12)
    return TransformerEncoderBlock(**kwargs)


class TransformerEncoderBlockTest(harness.LayerTestCase):
    def inputs(self, mask=PADDING, **kwargs):
        args = {"inputs": random(2, 5, 8)}
        if mask is not None:
            args["padding_mask"] = mask
        return args, kwargs

    def built(self, **kwargs):
        block = encoder(**kwargs)
        block(random(2, 5, 8))
        randomize(block)
        return block

    def test_hand_computed(self):
        # d = 2, one head of width 2, pre-norm, layer_norm_epsilon ~ 0: the
        # layer norms (gamma 1, beta 0) map [1, 2] to [-1, 1] and [6, 3] to
        # [1, -1]. Query and key kernels are 0, so every visible key gets the
        # same weight; value and output projections are the identity, biases
        # 0. The feed-forward kernels are 0 and its output bias is 0.5.
        block = TransformerEncoderBlock(
            num_heads=1, intermediate_dim=2, norm_first=True, layer_norm_epsilon=1e-12
        )
        x = np.array([[[1.0, 2.0], [6.0, 3.0]]], "float32")
        block(x)
        mha = block._self_attention
        eye = np.eye(2, dtype="float32")
        mha.query_dense.kernel.assign(np.zeros((2, 1, 2)))
        mha.key_dense.kernel.assign(np.zeros((2, 1, 2)))
        mha.value_dense.kernel.assign(eye[:, None, :])
        mha.output_dense.kernel.assign(eye[None])
        block._feedforward_intermediate_dense.kernel.assign(np.zeros((2, 2)))
        block._feedforward_output_dense.kernel.assign(np.zeros((2, 2)))
        block._feedforward_output_dense.bias.assign([0.5, 0.5])

        # No mask: both queries average [-1, 1] and [1, -1] = [0, 0], so the
        # output is x + 0.5.
        out, scores = block(x, return_attention_scores=True)
        self.assertAllClose([[[1.5, 2.5], [6.5, 3.5]]], out)
        self.assertAllClose(np.full((1, 1, 2, 2), 0.5), scores)
        # Position 1 padded: query 0 sees only [-1, 1] (x0 + [-1, 1] + 0.5 =
        # [0.5, 3.5]); the padded query 1 gets a zero attention result and
        # keeps x1 + 0.5 = [6.5, 3.5] with all-zero weights.
        out, scores = block(x, mask=np.array([[True, False]]), return_attention_scores=True)
        self.assertAllClose([[[0.5, 3.5], [6.5, 3.5]]], out)
        self.assertAllClose([[[[1.0, 0.0], [0.0, 0.0]]]], scores)
        # Causal: query 0 sees key 0 only, query 1 both (mean [0, 0]).
        out, scores = block(x, use_causal_mask=True, return_attention_scores=True)
        self.assertAllClose([[[0.5, 3.5], [6.5, 3.5]]], out)
        self.assertAllClose([[[[1.0, 0.0], [0.5, 0.5]]]], scores)

    def test_matches_reference_post_norm(self):
        block = self.built()
        self.assert_matches_reference(block, self.inputs(mask=None), numpy_encoder)
        self.assert_matches_reference(
            block, self.inputs(return_attention_scores=True), numpy_encoder
        )

    def test_matches_reference_pre_norm(self):
        block = self.built(norm_first=True, activation="gelu")
        self.assert_matches_reference(
            block, self.inputs(return_attention_scores=True), numpy_encoder
        )

    def test_matches_reference_masks(self):
        block = self.built()
        explicit = RNG.random((2, 5, 5)) > 0.3
        args, _ = self.inputs()
        args["attention_mask"] = explicit
        kwargs = {"use_causal_mask": True, "return_attention_scores": True}
        self.assert_matches_reference(block, (args, kwargs), numpy_encoder)

    def test_matches_reference_grouped_query_and_key_dim(self):
        block = encoder(num_heads=4, num_key_value_heads=2, key_dim=3)
        block(random(2, 5, 8))
        randomize(block)
        self.assertEqual((8, 2, 3), tuple(block._self_attention.key_dense.kernel.shape))
        self.assert_matches_reference(
            block, self.inputs(return_attention_scores=True), numpy_encoder
        )

    def test_padding(self):
        # Changing padded positions changes nothing at the real ones, and the
        # padded rows are finite.
        block = self.built()
        x = random(2, 5, 8)
        changed = x.copy()
        changed[0, 3:] = 100.0
        out = block(x, mask=PADDING).numpy()
        out_changed = block(changed, mask=PADDING).numpy()
        self.assertAllClose(out[0, :3], out_changed[0, :3], atol=1e-5)
        self.assertAllClose(out[1], out_changed[1], atol=1e-5)
        self.assert_all_finite(out_changed)

    def test_causal(self):
        block = self.built()
        x = random(2, 5, 8)
        changed = x.copy()
        changed[:, 3] += 1.0
        out = block(x, use_causal_mask=True).numpy()
        out_changed = block(changed, use_causal_mask=True).numpy()
        self.assertAllClose(out[:, :3], out_changed[:, :3], atol=1e-5)
        self.assertGreater(np.abs(out[:, 4] - out_changed[:, 4]).max(), 1e-3)

    def test_fully_masked_rows(self):
        mask = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
        scores_in_all_precisions(
            self,
            encoder,
            self.inputs(mask=mask, return_attention_scores=True),
            index=1,
            rows=(0,),
        )

    def test_implicit_mask(self):
        ids = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 5]], "int32")
        embedded = keras.layers.Embedding(10, 8, mask_zero=True)(ids)
        block = self.built()
        explicit = block(without_mask(embedded), mask=ids != 0)
        # Only tensor argument: Keras fills `mask`.
        out = block(embedded)
        self.assertAllClose(explicit, out)
        self.assertAllEqual(ids != 0, implicit_mask(out))
        # With `attention_mask` too: Keras fills `inputs_mask`.
        band = np.tril(np.ones((5, 5), bool), 1)
        self.assertAllClose(
            block(without_mask(embedded), mask=ids != 0, attention_mask=band),
            block(embedded, attention_mask=band),
        )
        # In a functional model.
        token_ids = keras.Input(shape=(5,), dtype="int32")
        embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        model = keras.Model(token_ids, block(embedding(token_ids)))
        expected = block(without_mask(embedding(ids)), mask=ids != 0)
        self.assertAllClose(expected, model(ids))

    def test_return_attention_scores(self):
        block = self.built()
        out, scores = block(random(2, 5, 8), mask=PADDING, return_attention_scores=True)
        self.assertEqual((2, 5, 8), tuple(out.shape))
        self.assertEqual((2, 2, 5, 5), tuple(scores.shape))
        # Real queries' weights sum to 1; padded queries (batch 0, rows 3-4)
        # have none; nobody attends to padded keys.
        row_sums = np.broadcast_to(PADDING[:, None, :], (2, 2, 5)).astype("float32")
        self.assertAllClose(row_sums, np.sum(scores, -1), atol=1e-5)
        self.assertAllEqual(np.zeros((2, 5, 2)), scores[0, :, :, 3:])

    def test_dropout(self):
        block = encoder(dropout=0.5, attention_dropout=0.5, seed=3)
        x = random(2, 5, 8)
        self.assertAllClose(block(x, training=False), block(x))
        self.assertNotAllClose(block(x, training=False), block(x, training=True))
        no_dropout = encoder()
        no_dropout(x)
        self.assertAllClose(no_dropout(x), no_dropout(x, training=True))

    def test_sliding_window(self):
        # The window reaches the self-attention: the block matches the
        # reference with the band |i - j| < 2, and keys outside it get no
        # weight.
        block = self.built(sliding_window=2)
        self.assertEqual(2, block._self_attention.get_config()["sliding_window"])
        self.assert_matches_reference(
            block, self.inputs(return_attention_scores=True), numpy_encoder
        )
        self.assert_matches_reference(
            block, self.inputs(use_causal_mask=True, return_attention_scores=True),
            numpy_encoder,
        )
        _, scores = block(random(2, 5, 8), return_attention_scores=True)
        positions = np.arange(5)
        outside = np.abs(positions[:, None] - positions[None, :]) >= 2
        self.assertAllEqual(np.zeros((2, 2, int(outside.sum()))), scores.numpy()[..., outside])
        # Equal to a plain block given the band as its attention mask.
        plain = encoder()
        plain(random(2, 5, 8))
        plain.set_weights(block.get_weights())
        x = random(2, 5, 8)
        self.assertAllClose(plain(x, attention_mask=~outside), block(x), atol=1e-6)

    def test_padding_mask_and_keras_mask_agree(self):
        block = self.built()
        x = random(2, 5, 8)
        explicit = block(x, padding_mask=PADDING)
        self.assertAllClose(explicit, block(x, mask=PADDING))
        self.assertAllClose(explicit, block(x, PADDING))
        self.assertNotAllClose(explicit, block(x))
        # Both given: ANDed.
        other = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
        self.assertAllClose(
            block(x, padding_mask=PADDING & other), block(x, padding_mask=PADDING, mask=other)
        )

    def test_fresh_kernels_differ(self):
        # Query, key and value kernels are (8, 2, 4) each.
        self.check_fresh_kernels_differ(encoder, self.inputs())

    def test_gradients(self):
        self.check_gradients(self.built(), self.inputs(), wrt="inputs")

    def test_serialization(self):
        self.check_serialization(
            lambda: encoder(
                norm_first=True,
                activation="gelu",
                num_key_value_heads=1,
                sliding_window=3,
                dropout=0.1,
                seed=2,
                kernel_initializer="he_normal",
            ),
            self.inputs(return_attention_scores=True),
        )

    def test_mixed_precision(self):
        self.check_mixed_precision(encoder, self.inputs())
        self.check_mixed_precision(lambda: encoder(norm_first=True), self.inputs())

    def test_xla(self):
        self.check_xla(encoder, self.inputs(return_attention_scores=True))

    def test_output_spec(self):
        self.check_output_spec(encoder, self.inputs(return_attention_scores=True))
        inputs = keras.Input(shape=(None, 8))
        out, scores = encoder()(inputs, return_attention_scores=True)
        self.assertEqual((None, None, 8), tuple(out.shape))
        self.assertEqual((None, 2, None, None), tuple(scores.shape))

    def test_constructor_errors(self):
        cases = [
            (dict(num_heads=0), "Expected `num_heads` to be a positive integer", "num_heads=0"),
            (dict(intermediate_dim=-1), "intermediate_dim=-1"),
            (dict(key_dim=0), "Expected `key_dim` to be a positive integer or None"),
            (dict(dropout=1.0), "Expected `dropout` to be a float in [0, 1)", "dropout=1.0"),
            (dict(attention_dropout=-0.1), "attention_dropout=-0.1"),
            (dict(norm_first="yes"), "Expected `norm_first` to be one of", "norm_first='yes'"),
            (dict(layer_norm_epsilon=0), "layer_norm_epsilon=0"),
            (
                dict(num_heads=4, num_key_value_heads=3),
                "Expected `num_key_value_heads` to divide num_heads=4",
                "num_key_value_heads=3",
            ),
            (dict(seed="x"), "Expected `seed` to be an integer or None", "seed='x'"),
            (
                dict(sliding_window=0),
                "Expected `sliding_window` to be a positive integer or None",
                "sliding_window=0",
            ),
        ]
        for kwargs, *fragments in cases:
            with self.subTest(**{k: repr(v) for k, v in kwargs.items()}):
                self.assert_value_error(lambda: encoder(**kwargs), *fragments)

    def test_call_errors(self):
        self.assert_value_error(
            lambda: encoder(num_heads=3)(random(2, 5, 8)),
            "divisible by num_heads=3",
            "inputs.shape=(2, 5, 8)",
        )
        self.assert_value_error(
            lambda: encoder()(random(2, 8)), "Expected `inputs` of rank 3", "inputs.shape=(2, 8)"
        )
        block = self.built()
        self.assert_value_error(
            lambda: block(random(2, 5, 6)), "last dimension 8", "inputs.shape=(2, 5, 6)"
        )
        self.assert_value_error(
            lambda: block(random(2, 5, 8), mask=np.ones((2, 4), bool)),
            "Expected `mask` broadcastable to shape (2, 5)",
            "mask.shape=(2, 4)",
        )
        self.assert_value_error(
            lambda: block(random(2, 5, 8), attention_mask=np.ones((2, 5, 4), bool)),
            "Expected `attention_mask` broadcastable to shape (2, 5, 5)",
            "attention_mask.shape=(2, 5, 4)",
        )


# -- TransformerDecoderBlock -----------------------------------------------------


def decoder(**kwargs):
    kwargs.setdefault("num_heads", 2)
    kwargs.setdefault("intermediate_dim", 12)
    return TransformerDecoderBlock(**kwargs)


class TransformerDecoderBlockTest(harness.LayerTestCase):
    def inputs(self, encoder_padding=ENCODER_PADDING, cross=True, **kwargs):
        """Decoder (B=2, Tq=5, 8) over encoder outputs (B=2, Tk=3, 6)."""
        args = {"decoder_sequence": random(2, 5, 8), "decoder_padding_mask": PADDING}
        if cross:
            args["encoder_sequence"] = random(2, 3, 6)
            args["encoder_padding_mask"] = encoder_padding
        return args, kwargs

    def built(self, cross=True, **kwargs):
        block = decoder(**kwargs)
        block(random(2, 5, 8), random(2, 3, 6) if cross else None)
        randomize(block)
        return block

    def test_matches_reference_post_norm(self):
        block = self.built()
        self.assert_matches_reference(block, self.inputs(), numpy_decoder)
        self.assert_matches_reference(
            block, self.inputs(return_attention_scores=True), numpy_decoder
        )

    def test_matches_reference_pre_norm(self):
        block = self.built(norm_first=True, activation="gelu", num_key_value_heads=1)
        self.assert_matches_reference(
            block, self.inputs(return_attention_scores=True), numpy_decoder
        )

    def test_matches_reference_explicit_masks(self):
        block = self.built()
        args, _ = self.inputs()
        args["decoder_attention_mask"] = RNG.random((2, 5, 5)) > 0.3
        args["encoder_attention_mask"] = RNG.random((2, 5, 3)) > 0.3
        self.assert_matches_reference(
            block, (args, {"return_attention_scores": True}), numpy_decoder
        )
        self.assert_matches_reference(
            block,
            (args, {"use_causal_mask": False, "return_attention_scores": True}),
            numpy_decoder,
        )

    def test_matches_reference_decoder_only(self):
        block = self.built(cross=False)
        self.assertIsNone(block._cross_attention)
        out = self.assert_matches_reference(
            block, self.inputs(cross=False, return_attention_scores=True), numpy_decoder
        )
        self.assertLen(out, 2)

    def test_scores_shapes(self):
        block = self.built()
        out, self_scores, cross_scores = block(
            random(2, 5, 8), random(2, 3, 6), return_attention_scores=True
        )
        self.assertEqual((2, 5, 8), tuple(out.shape))
        self.assertEqual((2, 2, 5, 5), tuple(self_scores.shape))
        self.assertEqual((2, 2, 5, 3), tuple(cross_scores.shape))
        # Causal self-attention: nothing above the diagonal.
        rows, cols = np.triu_indices(5, 1)
        self.assertAllEqual(np.zeros((2, 2, 10)), self_scores.numpy()[..., rows, cols])

    def test_causal(self):
        block = self.built()
        x, enc = random(2, 5, 8), random(2, 3, 6)
        changed = x.copy()
        changed[:, 3] += 1.0
        out = block(x, enc).numpy()
        out_changed = block(changed, enc).numpy()
        self.assertAllClose(out[:, :3], out_changed[:, :3], atol=1e-5)
        self.assertGreater(np.abs(out[:, 4] - out_changed[:, 4]).max(), 1e-3)
        # Without the causal mask the future leaks into the past.
        out = block(x, enc, use_causal_mask=False).numpy()
        out_changed = block(changed, enc, use_causal_mask=False).numpy()
        self.assertGreater(np.abs(out[:, 0] - out_changed[:, 0]).max(), 1e-3)

    def test_encoder_padding(self):
        block = self.built()
        x, enc = random(2, 5, 8), random(2, 3, 6)
        changed = enc.copy()
        changed[0, 2] = 100.0  # a padded encoder position
        out = block(x, enc, encoder_padding_mask=ENCODER_PADDING)
        out_changed = block(x, changed, encoder_padding_mask=ENCODER_PADDING)
        self.assertAllClose(out, out_changed, atol=1e-5)

    def test_fully_masked_rows(self):
        # Batch item 0 has no encoder key: its cross-attention weights are 0.
        scores_in_all_precisions(
            self,
            decoder,
            self.inputs(encoder_padding=ALL_PADDED, return_attention_scores=True),
            index=2,
            rows=(0,),
        )

    def test_implicit_masks(self):
        dec_ids = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 5]], "int32")
        enc_ids = np.array([[6, 2, 0], [1, 1, 1]], "int32")
        dec_embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        enc_embedding = keras.layers.Embedding(10, 6, mask_zero=True)
        dec, enc = dec_embedding(dec_ids), enc_embedding(enc_ids)
        block = self.built()
        explicit = block(
            without_mask(dec),
            without_mask(enc),
            decoder_padding_mask=dec_ids != 0,
            encoder_padding_mask=enc_ids != 0,
        )
        # Keras fills `decoder_sequence_mask` and `encoder_sequence_mask`.
        out = block(dec, enc)
        self.assertAllClose(explicit, out)
        self.assertAllEqual(dec_ids != 0, implicit_mask(out))
        # In a functional model.
        dec_input = keras.Input(shape=(5,), dtype="int32")
        enc_input = keras.Input(shape=(3,), dtype="int32")
        model = keras.Model(
            [dec_input, enc_input], block(dec_embedding(dec_input), enc_embedding(enc_input))
        )
        self.assertAllClose(explicit, model([dec_ids, enc_ids]))
        # Decoder-only, the decoder the only tensor: Keras fills `mask`.
        decoder_only = self.built(cross=False)
        self.assertAllClose(
            decoder_only(without_mask(dec), decoder_padding_mask=dec_ids != 0),
            decoder_only(dec),
        )

    def test_dropout(self):
        block = decoder(dropout=0.5, attention_dropout=0.5, seed=3)
        x, enc = random(2, 5, 8), random(2, 3, 6)
        self.assertAllClose(block(x, enc, training=False), block(x, enc))
        self.assertNotAllClose(block(x, enc, training=False), block(x, enc, training=True))

    def test_gradients(self):
        # Padded encoder positions get no gradient.
        zero = np.broadcast_to(~ENCODER_PADDING[:, :, None], (2, 3, 6))
        self.check_gradients(
            self.built(), self.inputs(), wrt="encoder_sequence", zero_grad_mask=zero
        )
        self.check_gradients(self.built(), self.inputs(), wrt="decoder_sequence")

    def test_sliding_window(self):
        # Only the self-attention gets the window; the cross-attention does not.
        block = self.built(sliding_window=2)
        self.assertEqual(2, block._self_attention.get_config()["sliding_window"])
        self.assertIsNone(block._cross_attention.get_config()["sliding_window"])
        plain = self.built()
        plain.set_weights(block.get_weights())
        args, _ = self.inputs()
        positions = np.arange(5)
        band = np.abs(positions[:, None] - positions[None, :]) < 2
        windowed, self_scores, cross_scores = block(**args, return_attention_scores=True)
        expected = plain(**args, decoder_attention_mask=band, return_attention_scores=True)
        self.assertAllClose(expected[0], windowed, atol=1e-6)
        self.assertAllClose(expected[1], self_scores, atol=1e-6)
        self.assertAllEqual(np.zeros((2, 2, int((~band).sum()))), self_scores.numpy()[..., ~band])
        self.assertNotAllClose(plain(**args), windowed)

    def test_fresh_kernels_differ(self):
        self.check_fresh_kernels_differ(decoder, self.inputs())

    def test_serialization(self):
        self.check_serialization(
            lambda: decoder(
                norm_first=True, num_key_value_heads=1, dropout=0.1, seed=1, sliding_window=2
            ),
            self.inputs(return_attention_scores=True),
        )
        self.check_serialization(decoder, self.inputs(cross=False))

    def test_mixed_precision(self):
        self.check_mixed_precision(decoder, self.inputs())
        self.check_mixed_precision(lambda: decoder(norm_first=True), self.inputs())

    def test_xla(self):
        self.check_xla(decoder, self.inputs(return_attention_scores=True))

    def test_output_spec(self):
        self.check_output_spec(decoder, self.inputs(return_attention_scores=True))
        self.check_output_spec(decoder, self.inputs(cross=False, return_attention_scores=True))

    def test_errors(self):
        with_cross = self.built()
        self.assert_value_error(
            lambda: with_cross(random(2, 5, 8)),
            "Expected an `encoder_sequence`",
            "encoder_sequence=None",
        )
        self.assert_value_error(
            lambda: with_cross(random(2, 5, 8), random(2, 3, 4)),
            "last dimension 6",
            "encoder_sequence.shape=(2, 3, 4)",
        )
        self.assert_value_error(
            lambda: with_cross(random(2, 5, 8), random(2, 3, 6), encoder_padding_mask=PADDING),
            "Expected `encoder_padding_mask` broadcastable to shape (2, 3)",
        )
        self.assert_value_error(
            lambda: with_cross(
                random(2, 5, 8), random(2, 3, 6), encoder_attention_mask=np.ones((2, 5, 5), bool)
            ),
            "Expected `encoder_attention_mask` broadcastable to shape (2, 5, 3)",
        )
        self.assert_value_error(
            lambda: with_cross(
                random(2, 5, 8), random(2, 3, 6), decoder_attention_mask=np.ones((2, 5, 3), bool)
            ),
            "Expected `decoder_attention_mask` broadcastable to shape (2, 5, 5)",
        )
        self.assert_value_error(
            lambda: with_cross(
                random(2, 5, 8), random(2, 3, 6), decoder_padding_mask=np.ones((2, 3), bool)
            ),
            "Expected `decoder_padding_mask` broadcastable to shape (2, 5)",
        )
        decoder_only = self.built(cross=False)
        self.assert_value_error(
            lambda: decoder_only(random(2, 5, 8), random(2, 3, 6)),
            "Expected no `encoder_sequence`",
            "encoder_sequence.shape=(2, 3, 6)",
        )
        self.assert_value_error(
            lambda: decoder_only(random(2, 5, 8), encoder_padding_mask=ENCODER_PADDING),
            "Expected no `encoder_padding_mask` without an `encoder_sequence`",
        )
        self.assert_value_error(
            lambda: decoder()(random(2, 5, 8), random(2, 3)),
            "Expected `encoder_sequence` of rank 3",
        )
        self.assert_value_error(
            lambda: decoder(num_heads=3)(random(2, 5, 8)),
            "`decoder_sequence` divisible by num_heads=3",
        )


class TransformerFitTest(harness.LayerTestCase):
    def test_encoder_decoder_fit(self):
        # Token ids -> encoder block -> decoder block over it -> logits; two
        # steps of fit with padded batches stay finite and move the weights.
        enc_ids = keras.Input(shape=(4,), dtype="int32")
        dec_ids = keras.Input(shape=(5,), dtype="int32")
        embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        encoded = encoder(dropout=0.1)(embedding(enc_ids))
        decoder_block = decoder(norm_first=True, dropout=0.1)
        decoded = decoder_block(embedding(dec_ids), encoded)
        logits = keras.layers.Dense(10)(decoded)
        model = keras.Model([enc_ids, dec_ids], logits)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
        before = [w.numpy().copy() for w in decoder_block.trainable_weights]
        enc_data = RNG.integers(1, 10, size=(4, 4)).astype("int32")
        enc_data[:, 3] = 0
        dec_data = RNG.integers(1, 10, size=(4, 5)).astype("int32")
        history = model.fit(
            [enc_data, dec_data], dec_data, epochs=2, batch_size=2, verbose=0
        )
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        after = decoder_block.trainable_weights
        self.assertTrue(any(np.abs(a.numpy() - b).max() > 0 for a, b in zip(after, before)))
