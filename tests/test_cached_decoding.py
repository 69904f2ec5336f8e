"""Key/value-cached incremental decoding: step by step (or chunk by chunk),
`MultiHeadAttention` and `TransformerDecoderBlock` give the outputs of the
full causal pass, with padding, grouped-query heads, bfloat16, under XLA, and
under JAX (`tests/decoding_probe.py`, inside `jax.jit`)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from keras import ops

from kerasattn.layers import MultiHeadAttention
from kerasattn.layers import TransformerDecoderBlock
from tests import decoding_probe
from tests import harness

B, T, S, D = 2, 6, 5, 16
RNG = np.random.default_rng(3)
TARGET = RNG.normal(size=(B, T, D)).astype("float32")
SOURCE = RNG.normal(size=(B, S, 12)).astype("float32")
SOURCE_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
TARGET_MASK = np.array([[1] * T, [1, 1, 1, 1, 0, 0]], bool)


def chunks(sizes):
    """`[(start, stop), ...]` of consecutive chunks of the given sizes."""
    bounds = np.cumsum([0] + list(sizes))
    return list(zip(bounds[:-1], bounds[1:]))


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def cache_shapes(kv_heads, length, key_dim=4, value_dim=4):
    """A cache's `(keys, values)` shapes: heads first, the keys transposed."""
    return (B, kv_heads, key_dim, length), (B, kv_heads, length, value_dim)


def shapes(cache):
    return tuple(tuple(part.shape) for part in cache)


def symbolic_cache(kv_heads, length):
    return tuple(keras.KerasTensor(shape) for shape in cache_shapes(kv_heads, length))


class CachedMultiHeadAttentionTest(harness.LayerTestCase, parameterized.TestCase):
    @parameterized.product(
        options=[
            dict(),
            dict(num_key_value_heads=2),
            dict(num_key_value_heads=1, sliding_window=2),
            dict(use_gate=True),
            dict(implementation="chunked", block_size=2),
        ],
        sizes=[(1,) * T, (2, 3, 1)],
    )
    def test_self_attention_cache_equals_causal_pass(self, options, sizes):
        layer = MultiHeadAttention(num_heads=4, key_dim=4, **options)
        full = numpy(layer(TARGET, TARGET, query_mask=TARGET_MASK, value_mask=TARGET_MASK,
                           use_causal_mask=True))
        cache = layer.initial_cache(B, T)
        self.assertEqual(cache_shapes(layer.num_key_value_heads, T), shapes(cache))
        for start, stop in chunks(sizes):
            step = TARGET[:, start:stop]
            output, cache = layer(
                step, step, query_mask=TARGET_MASK[:, start:stop], value_mask=TARGET_MASK,
                use_causal_mask=True, cache=cache, cache_update_index=start,
            )
            self.assertAllClose(full[:, start:stop], output, atol=1e-5)

    def test_values_wider_than_keys(self):
        layer = MultiHeadAttention(num_heads=4, key_dim=3, value_dim=5, num_key_value_heads=2)
        full = numpy(layer(TARGET, TARGET, use_causal_mask=True))
        cache = layer.initial_cache(B, T)
        self.assertEqual(cache_shapes(2, T, key_dim=3, value_dim=5), shapes(cache))
        for index in range(T):
            step = TARGET[:, index : index + 1]
            output, cache = layer(step, step, use_causal_mask=True, cache=cache,
                                  cache_update_index=index)
            self.assertAllClose(full[:, index : index + 1], output, atol=1e-5)

    def test_an_overridden_compute_attention_decides_the_cached_call_too(self):
        class Doubled(MultiHeadAttention):
            """Twice the attention result, in Keras's `(B, T, N, H)` layout."""

            def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                                   return_attention_scores=False):
                output, scores = super()._compute_attention(
                    query, key, value, attention_mask, training, return_attention_scores)
                return 2.0 * output, scores

        layer = Doubled(num_heads=4, key_dim=4, num_key_value_heads=2)
        full = numpy(layer(TARGET, TARGET, value_mask=TARGET_MASK, use_causal_mask=True,
                           return_attention_scores=True)[1])
        cache = layer.initial_cache(B, T)
        plain = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
        plain(TARGET, TARGET)
        plain.set_weights(layer.get_weights())
        plain_cache = plain.initial_cache(B, T)
        bias = numpy(layer.output_dense.bias)
        for index in range(T):
            step = TARGET[:, index : index + 1]
            arguments = dict(value_mask=TARGET_MASK, use_causal_mask=True,
                             cache_update_index=index)
            output, scores, cache = layer(step, step, cache=cache, return_attention_scores=True,
                                          **arguments)
            expected, plain_cache = plain(step, step, cache=plain_cache, **arguments)
            self.assertAllClose(full[:, :, index : index + 1], scores, atol=1e-6)
            self.assertAllClose(2.0 * (numpy(expected) - bias) + bias, output, atol=1e-5)

    def test_cached_scores_are_rows_of_the_causal_scores(self):
        layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
        _, full = layer(TARGET, TARGET, use_causal_mask=True, return_attention_scores=True)
        cache = layer.initial_cache(B, T)
        for start, stop in chunks((3, 1, 2)):
            step = TARGET[:, start:stop]
            _, scores, cache = layer(
                step, step, use_causal_mask=True, return_attention_scores=True, cache=cache,
                cache_update_index=ops.convert_to_tensor(start),
            )
            self.assertAllClose(numpy(full)[:, :, start:stop], scores, atol=1e-6)

    @parameterized.parameters(None, 1)
    def test_cross_attention_cache_equals_uncached(self, kv_heads):
        layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=kv_heads)
        full = layer(TARGET, SOURCE, value_mask=SOURCE_MASK)
        cache = layer.compute_cache(SOURCE)
        self.assertEqual(cache_shapes(kv_heads or 4, S), shapes(cache))
        for value in (None, SOURCE):
            output, same = layer(TARGET, value, value_mask=SOURCE_MASK, cache=cache)
            self.assertAllClose(full, output, atol=1e-5)
            for part, same_part in zip(cache, same):
                self.assertAllEqual(part, same_part)
        self.assertAllEqual(np.zeros((B, D)), numpy(layer(
            TARGET[:, :1], None, value_mask=np.zeros((B, S), bool), cache=cache,
        )[0])[:, 0] - numpy(layer.output_dense.bias))

    def test_symbolic_call(self):
        layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
        layer.build((None, None, D), (None, None, D))
        output, scores, cache = layer(
            keras.KerasTensor((B, 1, D)), keras.KerasTensor((B, 1, D)),
            cache=symbolic_cache(2, T), cache_update_index=0, return_attention_scores=True,
        )
        self.assertEqual(((B, 1, D), (B, 4, 1, T), cache_shapes(2, T)),
                         (output.shape, scores.shape, shapes(cache)))

    def test_errors(self):
        layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
        step = TARGET[:, :1]
        self.assert_value_error(
            lambda: layer.compute_cache(SOURCE), "Expected a built layer"
        )
        layer(TARGET, TARGET)
        cache = layer.initial_cache(B, T)
        self.assert_value_error(
            lambda: layer(step, step, cache_update_index=0), "Expected a `cache`",
            "received: cache=None",
        )
        self.assert_value_error(
            lambda: layer(step, None, cache=cache, cache_update_index=0),
            "Expected a `value` to write", "received: value=None",
        )
        self.assert_value_error(
            lambda: layer(step, step, cache=ops.zeros((B, 2, T, 2, 4)), cache_update_index=0),
            "Expected a `cache` (keys, values) of shapes (2, 2, 4, None) and (2, 2, None, 4)",
            "received: one tensor of shape (2, 2, 6, 2, 4)",
        )
        self.assert_value_error(
            lambda: layer(step, step, cache=(cache[0], cache[1][:, :, :3]),
                          cache_update_index=0),
            "one length", "received: ((2, 2, 4, 6), (2, 2, 3, 4))",
        )
        self.assert_value_error(
            lambda: layer(step, step, cache=cache, cache_update_index=0,
                          value_mask=TARGET_MASK[:, :3]),
            "Expected `value_mask` broadcastable to shape (2, 6)",
        )
        self.assert_value_error(
            lambda: layer.initial_cache(1, 0), "received: max_length=0"
        )


def make_block(**options):
    return TransformerDecoderBlock(num_heads=4, intermediate_dim=24, **options)


def decode_in_chunks(block, sizes, with_source=True, **masks):
    """Outputs of `block` decoding `TARGET` chunk by chunk with its caches."""
    cache = block.initial_cache(B, T)
    cross = {}
    if with_source:
        cross = dict(cross_attention_cache=block.compute_cross_attention_cache(SOURCE),
                     encoder_padding_mask=SOURCE_MASK)
    outputs = []
    for start, stop in chunks(sizes):
        output, cache = block(
            TARGET[:, start:stop], self_attention_cache=cache,
            self_attention_cache_update_index=start, **cross, **masks,
        )
        outputs.append(numpy(output))
    return np.concatenate(outputs, axis=1)


class CachedDecoderBlockTest(harness.LayerTestCase, parameterized.TestCase):
    @parameterized.product(
        norm_first=[False, True],
        num_key_value_heads=[None, 2, 1],
        sizes=[(1,) * T, (2, 3, 1)],
    )
    def test_decode_equals_causal_pass(self, norm_first, num_key_value_heads, sizes):
        block = make_block(norm_first=norm_first, num_key_value_heads=num_key_value_heads)
        full = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK)
        self.assertAllClose(full, decode_in_chunks(block, sizes), atol=1e-5)

    def test_source_padding_is_honoured(self):
        # Whatever the padded source positions hold, the decode is the same.
        block = make_block(num_key_value_heads=2)
        block(TARGET, SOURCE)
        cache = block.compute_cross_attention_cache(SOURCE)
        garbage = SOURCE.copy()
        garbage[1, 3:] = 100.0
        changed = block.compute_cross_attention_cache(garbage)
        for cross in (cache, changed):
            output, _ = block(
                TARGET[:, :1], encoder_padding_mask=SOURCE_MASK, cross_attention_cache=cross,
                self_attention_cache=block.initial_cache(B, T),
                self_attention_cache_update_index=0,
            )
            self.assertAllClose(block(TARGET[:, :1], SOURCE, encoder_padding_mask=SOURCE_MASK),
                                output, atol=1e-5)

    def test_decoder_padding_mask_spans_the_cache(self):
        block = make_block(num_key_value_heads=2)
        full = block(TARGET, SOURCE, decoder_padding_mask=TARGET_MASK,
                     encoder_padding_mask=SOURCE_MASK)
        stepped = decode_in_chunks(block, (2, 1, 3), decoder_padding_mask=TARGET_MASK)
        self.assertAllClose(full, stepped, atol=1e-5)

    def test_decoder_only_block(self):
        block = make_block(num_key_value_heads=1, sliding_window=3, norm_first=True)
        full = block(TARGET)
        self.assertAllClose(full, decode_in_chunks(block, (1, 2, 3), with_source=False),
                            atol=1e-5)

    def test_attention_scores_with_caches(self):
        block = make_block(num_key_value_heads=2)
        _, self_full, cross_full = block(
            TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK, return_attention_scores=True
        )
        cache = block.initial_cache(B, T)
        output, self_scores, cross_scores, cache = block(
            TARGET[:, :2], encoder_padding_mask=SOURCE_MASK, return_attention_scores=True,
            self_attention_cache=cache, self_attention_cache_update_index=0,
            cross_attention_cache=block.compute_cross_attention_cache(SOURCE),
        )
        self.assertAllClose(numpy(self_full)[:, :, :2], self_scores, atol=1e-6)
        self.assertAllClose(numpy(cross_full)[:, :, :2], cross_scores, atol=1e-6)

    def test_encoder_sequence_without_cross_cache(self):
        # The self-attention cached, the cross-attention computed each step.
        block = make_block()
        full = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK)
        output, _ = block(
            TARGET[:, :3], SOURCE, encoder_padding_mask=SOURCE_MASK,
            self_attention_cache=block.initial_cache(B, T), self_attention_cache_update_index=0,
        )
        self.assertAllClose(numpy(full)[:, :3], output, atol=1e-5)

    def test_symbolic_call(self):
        block = make_block(num_key_value_heads=2)
        block(TARGET, SOURCE)
        output, cache = block(
            keras.KerasTensor((B, 1, D)),
            self_attention_cache=symbolic_cache(2, T),
            self_attention_cache_update_index=2,
            cross_attention_cache=symbolic_cache(2, S),
            encoder_padding_mask=keras.KerasTensor((B, S), dtype="bool"),
        )
        self.assertEqual(((B, 1, D), cache_shapes(2, T)), (output.shape, shapes(cache)))

    def test_errors(self):
        block = make_block()
        self.assert_value_error(lambda: block.initial_cache(B, T), "Expected a built block")
        block(TARGET, SOURCE)
        cache = block.initial_cache(B, T)
        step = TARGET[:, :1]
        self.assert_value_error(
            lambda: block(step, SOURCE, self_attention_cache=cache),
            "both given or both None", "self_attention_cache_update_index=None",
        )
        self.assert_value_error(
            lambda: block(step), "Expected an `encoder_sequence` (or a `cross_attention_cache`)"
        )
        self.assert_value_error(
            lambda: block(step, SOURCE, self_attention_cache=cache,
                          self_attention_cache_update_index=0,
                          decoder_padding_mask=TARGET_MASK[:, :3]),
            "Expected `decoder_padding_mask` broadcastable to shape (2, 6)",
        )
        decoder_only = make_block()
        decoder_only(TARGET)
        self.assert_value_error(
            lambda: decoder_only.compute_cross_attention_cache(SOURCE),
            "Expected a block with cross-attention",
        )
        cross = block.compute_cross_attention_cache(SOURCE)
        self.assert_value_error(
            lambda: decoder_only(step, cross_attention_cache=cross),
            "Expected no `cross_attention_cache`",
        )


class CachedTranslatorTest(harness.LayerTestCase):
    """The cached decode of a two-block encoder-decoder (`decoding_probe`)
    inside `keras.ops.while_loop` equals its full causal pass."""

    def probe_inputs(self):
        return (ops.convert_to_tensor(decoding_probe.SOURCE),
                ops.convert_to_tensor(decoding_probe.SOURCE_MASK))

    def test_while_loop_decode_equals_forward(self):
        outputs = decoding_probe.eager_outputs()
        self.assertAllClose(outputs["forward"], outputs["step_logits"], atol=1e-5)

    def test_xla_decode_equals_forward(self):
        model = decoding_probe.TinyTranslator()
        args = self.probe_inputs()
        target = decoding_probe.TARGET
        compiled = tf.function(
            lambda source, mask: model.step_logits(source, mask, target), jit_compile=True
        )
        self.assertAllClose(model.forward(*args, target), compiled(*args), atol=1e-5)

    def test_mixed_bfloat16_decode_equals_forward(self):
        weights = [numpy(v) for v in decoding_probe.TinyTranslator().variables]
        keras.config.set_dtype_policy("mixed_bfloat16")
        model = decoding_probe.TinyTranslator()
        for variable, value in zip(model.variables, weights):
            variable.assign(value)
        args = self.probe_inputs()
        target = decoding_probe.TARGET
        forward = model.forward(*args, target)
        self.assertEqual("bfloat16", keras.backend.standardize_dtype(forward.dtype))
        cache = model.initial_cache(*args)
        self.assertEqual("bfloat16", keras.backend.standardize_dtype(cache[0][0][0].dtype))
        stepped = numpy(model.step_logits(*args, target))
        tolerance = harness.PRECISION_TOLERANCE["mixed_bfloat16"]
        self.assertAllClose(numpy(forward).astype("float32"), stepped, atol=tolerance,
                            rtol=tolerance)
        keras.config.set_dtype_policy("float32")
        float32 = decoding_probe.eager_outputs()["forward"]
        self.assertAllClose(float32, stepped, atol=tolerance, rtol=tolerance)

    def test_jax_jit_decode_equals_forward(self):
        other = decoding_probe.outputs_under("jax")
        self.assertEqual("jax", str(other["backend"]))
        self.assertAllClose(other["forward"], other["step_logits"], atol=1e-5)
        tensorflow = decoding_probe.eager_outputs()["forward"]
        self.assertAllClose(tensorflow, other["step_logits"], atol=1e-5)


if __name__ == "__main__":
    tf.test.main()
