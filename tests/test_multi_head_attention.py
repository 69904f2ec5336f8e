"""Tests of kerasattn.layers.MultiHeadAttention."""

import functools
import warnings
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from kerasattn.layers.multi_head_attention import MultiHeadAttention
from kerasattn.ops.tracing import export_graph
from tests import harness

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def padding(lengths, max_length):
    return np.arange(max_length)[None, :] < np.asarray(lengths)[:, None]


def numpy_mha(
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
    """Float64 reference for rank-3 inputs from the formula, reading the
    layer's weights: per head softmax(q kᵀ / sqrt(key_dim)) v, grouped heads
    sharing key/value heads, then the (optionally gated) output projection."""

    def project(dense, x):
        out = np.einsum("btd,dnh->btnh", np.float64(x), np.float64(dense.kernel.numpy()))
        if dense.bias is not None:
            out = out + np.float64(dense.bias.numpy())
        return out

    key = value if key is None else key
    q = project(layer.query_dense, query)
    k = project(layer.key_dense, key)
    v = project(layer.value_dense, value)
    groups = layer.num_heads // layer.num_key_value_heads
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(layer.key_dim)
    batch, q_len, k_len = query.shape[0], query.shape[1], value.shape[1]
    mask = np.ones((batch, q_len, k_len), bool)
    if query_mask is not None:
        mask &= np.asarray(query_mask, bool)[:, :, None]
    for padding_mask in (value_mask, key_mask):
        if padding_mask is not None:
            mask &= np.asarray(padding_mask, bool)[:, None, :]
    if attention_mask is not None and np.ndim(attention_mask) < 4:
        mask &= np.asarray(attention_mask, bool)
    if use_causal_mask:
        mask &= harness.numpy_causal_mask(q_len, k_len)
    mask = mask[:, None]  # (B, 1, Tq, Tk)
    if attention_mask is not None and np.ndim(attention_mask) == 4:
        mask = mask & np.asarray(attention_mask, bool)  # per head
    weights = harness.numpy_masked_softmax(logits, mask)
    attended = np.einsum("bnts,bsnh->btnh", weights, v)
    if layer._use_gate:
        attended = attended / (1 + np.exp(-project(layer._gate_dense, query)))
    output = np.einsum(
        "btnh,nhe->bte", attended, np.float64(layer.output_dense.kernel.numpy())
    )
    if layer.output_dense.bias is not None:
        output = output + np.float64(layer.output_dense.bias.numpy())
    return (output, weights) if return_attention_scores else output


class MultiHeadAttentionTest(harness.LayerTestCase):
    def setUp(self):
        super().setUp()
        self.query = normal(2, 4, 8)
        self.value = normal(2, 6, 8)
        self.key = normal(2, 6, 5)
        self.query_mask = padding([4, 2], 4)
        self.value_mask = padding([6, 3], 6)

    # -- numerics ------------------------------------------------------------

    def test_hand_computed(self):
        # One head of width 1, every kernel 1, biases 0 except the output
        # bias 0.25, on x = [1, 0] (so q = k = v = x):
        #   query 0: logits [1, 0] -> weights [e/(1+e), 1/(1+e)]
        #            = [0.731059, 0.268941] -> 0.731059 -> 0.981059
        #   query 1: logits [0, 0] -> weights [0.5, 0.5] -> 0.5 -> 0.75
        # With key 1 masked every query sees only key 0 (value 1) -> 1.25.
        # With query 1 padded it has no key: result 0, output the bias 0.25
        # (Keras would give the mean of the values, 0.75).
        layer = MultiHeadAttention(num_heads=1, key_dim=1)
        x = np.array([[[1.0], [0.0]]], "float32")
        layer(x, x)
        ones = np.ones((1, 1, 1), "float32")
        zeros = np.zeros((1, 1), "float32")
        layer.set_weights([ones, zeros] * 3 + [ones, np.array([0.25], "float32")])
        output, weights = layer(x, x, return_attention_scores=True)
        self.assertAllClose([[[0.981059], [0.75]]], output, atol=1e-6)
        self.assertAllClose([[[[0.731059, 0.268941], [0.5, 0.5]]]], weights, atol=1e-6)
        output = layer(x, x, value_mask=np.array([[True, False]]))
        self.assertAllClose([[[1.25], [1.25]]], output, atol=1e-6)
        output, weights = layer(
            x, x, query_mask=np.array([[True, False]]), return_attention_scores=True
        )
        self.assertAllClose([[[0.981059], [0.25]]], output, atol=1e-6)
        self.assertAllEqual([[[[0.0, 0.0]]]], weights[:, :, 1:])

    def test_matches_keras(self):
        q, v, k = self.query, self.value, self.key
        attention_mask = RNG.random((2, 4, 6)) > 0.4
        attention_mask[..., 0] = True  # every query keeps a key: Keras is right
        cases = {
            "self": ({}, (q, q), {}),
            "cross": ({}, (q, v), {}),
            "key_not_value": (dict(value_dim=3), (q, v, k), {}),
            "value_mask": ({}, (q, v, k), dict(value_mask=self.value_mask)),
            "key_mask": ({}, (q, v, k), dict(key_mask=self.value_mask)),
            "causal_self": ({}, (q, q), dict(use_causal_mask=True)),
            "causal_cross": ({}, (q, v), dict(use_causal_mask=True)),
            "attention_mask": ({}, (q, v), dict(attention_mask=attention_mask)),
            "output_shape": (dict(output_shape=(2, 3)), (q, v), {}),
            "gate": (dict(use_gate=True, value_dim=3), (q, v, k), {}),
            "sliding_window": (dict(sliding_window=2), (q, q), {}),
            "causal_window": (dict(sliding_window=2), (q, q), dict(use_causal_mask=True)),
            "dropout_zero": (dict(dropout=0.0), (q, v), dict(training=True)),
            "dropout_inference": (dict(dropout=0.5), (q, v), dict(training=False)),
            "no_bias": (dict(use_bias=False), (q, v), {}),
        }
        for name, (config, args, call) in cases.items():
            with self.subTest(name):
                self._assert_same_as_keras(dict(num_heads=2, key_dim=4, **config), args, call)

    def test_matches_keras_attention_axes(self):
        image = normal(2, 3, 4, 5)
        other = normal(2, 3, 2, 5)
        mask = RNG.random((2, 3, 4, 2)) > 0.4
        mask[..., 0] = True
        cases = {
            "all_axes": (dict(attention_axes=None), (image, image), {}),
            "axes_1_2": (dict(attention_axes=(1, 2)), (image, image), {}),
            "axes_2_1": (dict(attention_axes=(2, 1)), (image, image), {}),
            "axis_1": (dict(attention_axes=1), (image, image), {}),
            "negative": (dict(attention_axes=(-2,)), (image, other), {}),
            "mask": (dict(attention_axes=(2,)), (image, other), dict(attention_mask=mask)),
        }
        for name, (config, args, call) in cases.items():
            with self.subTest(name):
                self._assert_same_as_keras(dict(num_heads=2, key_dim=3, **config), args, call)

    def _assert_same_as_keras(self, config, args, call):
        reference = keras.layers.MultiHeadAttention(**config)
        layer = MultiHeadAttention(**config)
        reference(*args, **call)
        layer(*args, **call)
        self.assertEqual(
            [w.shape for w in reference.get_weights()], [w.shape for w in layer.get_weights()]
        )
        layer.set_weights(reference.get_weights())
        want = reference(*args, return_attention_scores=True, **call)
        got = layer(*args, return_attention_scores=True, **call)
        for a, b in zip(want, got):
            self.assertEqual(a.shape, b.shape)
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)

    def test_matches_keras_padded_queries(self):
        # Keras gives padded query rows the mean of the values; we give them
        # zero attention (the output bias); the other rows agree.
        ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 0, 0]])
        embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        reference = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        reference(self.query, self.query)
        layer(self.query, self.query)
        layer.set_weights(reference.get_weights())
        # A fresh embedding output for each: Keras strips its inputs' masks.
        got = layer(embedding(ids), embedding(ids))
        x = embedding(ids)
        want = reference(x, x)
        rows = ids != 0
        self.assertAllClose(np.asarray(want)[rows], np.asarray(got)[rows], atol=1e-5)
        bias = layer.output_dense.bias.numpy()
        self.assertAllClose(np.broadcast_to(bias, (2, 8)), np.asarray(got)[~rows])

    def test_matches_numpy_reference(self):
        attention_mask = RNG.random((2, 4, 6)) > 0.3
        cases = {
            "padding": dict(query_mask=self.query_mask, value_mask=self.value_mask),
            "causal": dict(value_mask=self.value_mask, use_causal_mask=True),
            "attention_mask": dict(attention_mask=attention_mask),
            "fully_masked": dict(value_mask=padding([6, 0], 6)),
        }
        for name, masks in cases.items():
            kwargs = {"use_causal_mask": masks.pop("use_causal_mask", False)}
            for kv_heads in (None, 2, 1):
                with self.subTest(name, num_key_value_heads=kv_heads):
                    layer = MultiHeadAttention(
                        num_heads=4, key_dim=3, value_dim=2, num_key_value_heads=kv_heads,
                        use_gate=True, bias_initializer="random_normal",
                    )
                    args = dict(query=self.query, value=self.value, key=self.key, **masks)
                    self.assert_matches_reference(
                        layer, (args, kwargs), numpy_mha, return_attention_scores=True
                    )

    def test_sequences_attend_heads_first(self):
        # Rank-3 inputs on the dense path take the heads-first layout: run
        # eagerly, projected by the sub-layers' kernels (one einsum each, not
        # the sub-layers' calls); in a tf.function by the sub-layers and
        # transposes; traced for export by flattened kernels with the bias
        # and the keys' scale folded in. All give the same values as the
        # sub-layers and `_compute_attention`, which a subclass overriding it
        # takes.
        class Overridden(MultiHeadAttention):
            def _compute_attention(self, *args, **kwargs):
                return super()._compute_attention(*args, **kwargs)

        masks = dict(query_mask=self.query_mask, value_mask=self.value_mask)
        cases = {
            "heads": (dict(num_heads=2, key_dim=4), {}),
            "grouped_masked": (dict(num_heads=4, key_dim=4, num_key_value_heads=2), masks),
            "causal_scores": (
                dict(num_heads=2, key_dim=4),
                dict(use_causal_mask=True, return_attention_scores=True),
            ),
            "value_dim_no_bias": (
                dict(num_heads=2, key_dim=4, value_dim=3, use_bias=False), masks
            ),
            "output_shape": (dict(num_heads=2, key_dim=4, output_shape=(2, 3)), {}),
            "mixed_bfloat16": (dict(num_heads=2, key_dim=4, dtype="mixed_bfloat16"), masks),
        }
        inputs = (self.query, self.value, self.key)
        for name, (config, kwargs) in cases.items():
            with self.subTest(name):
                layer, reference = MultiHeadAttention(**config), Overridden(**config)
                layer(*inputs)
                reference(*inputs)
                reference.set_weights(layer.get_weights())
                spy = mock.patch.object(
                    layer.query_dense, "call", wraps=layer.query_dense.call
                )
                with spy as query_call:
                    got = layer(*inputs, **kwargs)
                self.assertEqual(0, query_call.call_count)
                output = got[0] if isinstance(got, tuple) else got
                self.assertEqual(layer.compute_dtype, keras.backend.standardize_dtype(output.dtype))
                # bfloat16 keeps 8 bits of mantissa: the two orders may round apart.
                atol = 2e-2 if "dtype" in config else 1e-6
                self.assertAllClose(reference(*inputs, **kwargs), got, atol=atol)
                traced = tf.function(lambda *x: layer(*x, **kwargs))
                self.assertAllClose(got, traced(*inputs), atol=atol)
                with export_graph():
                    exported = tf.function(lambda *x: layer(*x, **kwargs))(*inputs)
                self.assertAllClose(got, exported, atol=atol)
                if "output_shape" not in config and "dtype" not in config:
                    self.assertAllClose(numpy_mha(layer, *inputs, **kwargs), got, atol=1e-5)
        # Elsewhere each sub-layer is called: more attention axes, a gate,
        # the chunked path, a quantized kernel, an activity regularizer.
        x = normal(2, 4, 8)
        for name, config, inputs in (
            ("attention_axes", dict(attention_axes=(1, 2)), normal(2, 3, 4, 8)),
            ("gate", dict(use_gate=True), x),
            ("chunked", dict(implementation="chunked"), x),
        ):
            with self.subTest(name):
                layer = MultiHeadAttention(num_heads=2, key_dim=4, **config)
                layer(inputs, inputs)
                spy = mock.patch.object(layer.query_dense, "call", wraps=layer.query_dense.call)
                with spy as query_call:
                    layer(inputs, inputs)
                self.assertEqual(1, query_call.call_count)
        quantized = MultiHeadAttention(num_heads=2, key_dim=4)
        quantized(x, x)
        quantized.value_dense.quantize("int8")
        dense = quantized.value_dense
        with mock.patch.object(dense, "quantized_call", wraps=dense.quantized_call) as call:
            quantized(x, x)
        self.assertEqual(1, call.call_count)
        regularized = MultiHeadAttention(num_heads=2, key_dim=4, activity_regularizer="l2")
        regularized(x, x)
        self.assertLen(regularized.losses, 4)

    def test_grouped_query_matches_keras_gqa(self):
        reference = keras.layers.GroupQueryAttention(
            head_dim=4, num_query_heads=4, num_key_value_heads=2
        )
        layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
        reference(self.query, self.value, self.key)
        layer(self.query, self.value, self.key)
        self.assertEqual((5, 2, 4), tuple(layer.key_dense.kernel.shape))
        layer.set_weights(reference.get_weights())
        want = reference(self.query, self.value, self.key, return_attention_scores=True)
        got = layer(self.query, self.value, self.key, return_attention_scores=True)
        for a, b in zip(want, got):
            self.assertAllClose(a, b, atol=1e-5)

    def test_per_head_attention_mask(self):
        # A rank-4 (B, N, Tq, Tk) mask, as Keras takes it: each head its own
        # mask; a head whose row is all False gives that head zero weights.
        per_head = RNG.random((2, 2, 4, 6)) > 0.4
        per_head[1, 0, 2] = False  # head 0 of query 2 sees nothing
        per_head[0, 1] = True
        for implementation in ("dense", "chunked"):
            with self.subTest(implementation):
                layer = MultiHeadAttention(
                    num_heads=2, key_dim=4, implementation=implementation, block_size=4
                )
                layer(self.query, self.value)
                for kwargs in (
                    {},
                    dict(query_mask=self.query_mask, value_mask=self.value_mask),
                    dict(use_causal_mask=True),
                ):
                    args = dict(query=self.query, value=self.value, attention_mask=per_head)
                    args.update(kwargs)
                    output = layer(**args)
                    want = numpy_mha(layer, **args)
                    self.assertAllClose(want, output, atol=1e-5)
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        _, scores = layer(
            self.query, self.value, attention_mask=per_head, return_attention_scores=True
        )
        self.assertAllEqual(np.zeros(6), scores[1, 0, 2])
        self.assertAllClose(np.ones(4), np.sum(scores[0, 1], -1), atol=1e-6)
        self.assertAllEqual(np.zeros_like(scores.numpy())[~per_head], scores.numpy()[~per_head])
        # Symbolically too, in a functional model.
        self.check_output_spec(
            lambda: MultiHeadAttention(num_heads=2, key_dim=4),
            (
                {"query": self.query, "value": self.value, "attention_mask": per_head},
                {"return_attention_scores": True},
            ),
        )
        # The same head mask for every head equals the rank-3 mask.
        shared = per_head[:, :1].repeat(2, 1)
        self.assertAllClose(
            layer(self.query, self.value, attention_mask=per_head[:, 0]),
            layer(self.query, self.value, attention_mask=shared),
            atol=1e-6,
        )

    def test_per_head_attention_mask_attention_axes_matches_keras(self):
        # Inputs (B, 3, 4, D) attending over axis 2; a per-head mask laid out
        # like the scores, (B, 3, N, 4, 4).
        x = normal(2, 3, 4, 8)
        mask = RNG.random((2, 3, 2, 4, 4)) > 0.4
        mask[..., 0] = True  # every query keeps a key: Keras is right
        ours = MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(2,))
        theirs = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(2,))
        ours(x, x)
        theirs(x, x)
        ours.set_weights(theirs.get_weights())
        want, want_scores = theirs(x, x, attention_mask=mask, return_attention_scores=True)
        got, scores = ours(x, x, attention_mask=mask, return_attention_scores=True)
        self.assertAllClose(want, got, atol=1e-5)
        self.assertAllClose(want_scores, scores, atol=1e-5)

    def test_compute_attention_is_the_call_path(self):
        # `call` goes through `_compute_attention`: an override changes the
        # result, and sees the merged mask (padding and causal, folded in
        # because an override gets no causal flag).
        seen = {}

        class Silenced(MultiHeadAttention):
            def _compute_attention(
                self, query, key, value, attention_mask=None, training=None,
                return_attention_scores=False,
            ):
                seen["mask"] = attention_mask
                output, scores = super()._compute_attention(
                    query, key, value, attention_mask, training, return_attention_scores
                )
                return output * 0.0, scores

        for implementation in ("dense", "chunked"):
            with self.subTest(implementation):
                layer = Silenced(num_heads=2, key_dim=4, implementation=implementation)
                output = layer(
                    self.query, self.value, value_mask=self.value_mask, use_causal_mask=True
                )
                bias = layer.output_dense.bias.numpy()
                self.assertAllClose(np.broadcast_to(bias, output.shape), output)
                want = padding([6, 3], 6)[:, None, :] & np.tril(np.ones((4, 6), bool))
                self.assertAllEqual(want, np.broadcast_to(seen["mask"], want.shape))

        # An override that calls the base unchanged gives the base's results.
        class Passthrough(MultiHeadAttention):
            def _compute_attention(self, *args, **kwargs):
                return super()._compute_attention(*args, **kwargs)

        base = MultiHeadAttention(num_heads=2, key_dim=4)
        other = Passthrough(num_heads=2, key_dim=4)
        base(self.query, self.value)
        other(self.query, self.value)
        other.set_weights(base.get_weights())
        for kwargs in ({}, dict(use_causal_mask=True, query_mask=self.query_mask)):
            self.assertAllClose(
                base(self.query, self.value, **kwargs),
                other(self.query, self.value, **kwargs),
                atol=1e-6,
            )

    def test_compute_attention_keras_signature(self):
        # Called directly, as keras-hub's cached attention does: projected
        # (B, T, N, H) heads, a (B, Tq, Tk) mask, and a causal flag that it
        # honours together with the mask.
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        layer(self.query, self.query)
        q, k, v = normal(2, 4, 2, 4), normal(2, 4, 2, 4), normal(2, 4, 2, 4)
        extra = np.ones((2, 4, 4), bool)
        extra[:, 3, 1] = False
        extra[1, 2] = False  # a row with no key
        causal = np.tril(np.ones((4, 4), bool))
        both, scores = layer._compute_attention(
            q, k, v, attention_mask=extra, use_causal_mask=True, return_attention_scores=True
        )
        merged, _ = layer._compute_attention(q, k, v, attention_mask=extra & causal)
        self.assertAllClose(merged, both, atol=1e-6)
        self.assertEqual((2, 4, 2, 4), tuple(both.shape))
        self.assertAllEqual(np.zeros((2, 4)), both[1, 2])
        logits = np.einsum("btnh,bsnh->bnts", q, k) / 2.0
        want = harness.numpy_masked_softmax(logits, (extra & causal)[:, None])
        self.assertAllClose(want, scores, atol=1e-6)
        self.assertIsNone(layer._compute_attention(q, k, v)[1])

    def test_masked_softmax_helper(self):
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        scores = keras.ops.cast(normal(2, 2, 3, 4), "float16")
        mask = np.ones((2, 3, 4), bool)
        mask[0, 1] = False
        weights = layer._masked_softmax(scores, mask)
        self.assertEqual("float16", keras.backend.standardize_dtype(weights.dtype))
        self.assertAllEqual(np.zeros((2, 4)), weights[0, :, 1])
        self.assertAllClose(np.ones((2, 2)), np.sum(np.float32(weights[:, :, 0]), -1), atol=1e-3)

    def test_fresh_kernels_differ(self):
        # Query, key and value kernels are (8, 2, 4) each.
        inputs = ({"query": self.query, "value": self.value}, {})
        self.check_fresh_kernels_differ(
            lambda: MultiHeadAttention(num_heads=2, key_dim=4), inputs, min_pairs=3
        )
        self.check_fresh_kernels_differ(
            lambda: MultiHeadAttention(
                num_heads=2, key_dim=4, use_gate=True,
                kernel_initializer=keras.initializers.GlorotUniform(),
            ),
            inputs,
            min_pairs=6,
        )

    def test_fully_masked_rows_are_zero(self):
        # No output bias, so rows with nothing to attend to are exactly zero.
        value_mask = padding([6, 0], 6)
        layer = MultiHeadAttention(num_heads=2, key_dim=4, use_bias=False)
        output, weights = layer(
            self.query, self.value, value_mask=value_mask, return_attention_scores=True
        )
        self.assertAllEqual(np.zeros((4, 8)), output[1])
        self.assertAllEqual(np.zeros((2, 4, 6)), weights[1])
        inputs = ({"query": self.query, "value": self.value, "value_mask": value_mask}, {})
        self.check_mixed_precision(
            lambda: MultiHeadAttention(num_heads=2, key_dim=4, use_bias=False),
            inputs,
            fully_masked_rows=(1,),
        )

    def test_mixed_precision(self):
        args = {
            "query": self.query, "value": self.value, "key": self.key,
            "query_mask": self.query_mask, "value_mask": self.value_mask,
        }
        self.check_mixed_precision(
            lambda: MultiHeadAttention(
                num_heads=4, key_dim=4, num_key_value_heads=2, use_gate=True, use_bias=False
            ),
            (args, {"use_causal_mask": True}),
            fully_masked_rows=(1, slice(2, None)),
            return_attention_scores=True,
        )

    # -- chunked path ---------------------------------------------------------

    def test_chunked_matches_dense(self):
        long = normal(2, 11, 8)
        short = normal(2, 6, 8)
        cases = {
            "self_causal_padding": (
                dict(), long, long, padding([11, 7], 11), padding([11, 7], 11), True
            ),
            "cross_gqa_empty_row": (
                dict(num_key_value_heads=1, use_gate=True), short, long,
                padding([6, 4], 6), padding([9, 0], 11), False,
            ),
        }
        for name, (config, query, value, query_mask, value_mask, causal) in cases.items():
            dense = MultiHeadAttention(num_heads=2, key_dim=4, implementation="dense", **config)
            chunked = MultiHeadAttention(
                num_heads=2, key_dim=4, implementation="chunked", block_size=4, **config
            )
            dense(query, value)
            chunked(query, value)
            chunked.set_weights(dense.get_weights())
            probe = tf.constant(normal(*query.shape))

            def run(layer, q, v, k, q_mask, v_mask):
                with tf.GradientTape() as tape:
                    tape.watch([q, v, k])
                    out = layer(
                        q, v, k, query_mask=q_mask, value_mask=v_mask, use_causal_mask=causal
                    )
                    loss = tf.reduce_sum(out * probe)
                return [out] + tape.gradient(loss, [q, v, k] + layer.trainable_variables)

            tensors = [tf.constant(x) for x in (query, value, value, query_mask, value_mask)]
            spec = [tf.TensorSpec((None, None, 8))] * 3 + [tf.TensorSpec((None, None), "bool")] * 2
            for shapes in ("static", "dynamic"):
                with self.subTest(name, shapes=shapes):
                    results = []
                    for layer in (dense, chunked):
                        fn = functools.partial(run, layer)
                        if shapes == "dynamic":
                            fn = tf.function(fn, input_signature=spec)
                        results.append(fn(*tensors))
                    for want, got in zip(*results):
                        self.assertAllClose(want, got, atol=1e-5, rtol=1e-5)
                    if name == "cross_gqa_empty_row":  # no key: just the output bias
                        bias = chunked.output_dense.bias.numpy()
                        self.assertAllClose(np.broadcast_to(bias, (6, 8)), results[1][0][1])

    def test_chunked_xla(self):
        x = normal(2, 11, 8)
        self.check_xla(
            lambda: MultiHeadAttention(
                num_heads=2, key_dim=4, implementation="chunked", block_size=4
            ),
            ({"query": x, "value": x}, {"use_causal_mask": True}),
        )

    # -- masks ----------------------------------------------------------------

    def test_keras_mask_consumed_and_propagated(self):
        ids = np.array([[3, 1, 4, 1], [5, 9, 0, 0]])
        x = keras.layers.Embedding(10, 8, mask_zero=True)(ids)
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            output, weights = layer(x, x, return_attention_scores=True)
        self.assertEmpty([w for w in caught if "mask" in str(w.message)])
        self.assertAllEqual(ids != 0, output._keras_mask)
        self.assertAllEqual(ids != 0, x._keras_mask)  # the input keeps its mask
        self.assertAllEqual(np.zeros((2, 4, 2)), weights[1, :, :, 2:])
        self.assertAllEqual(np.zeros((2, 2, 4)), weights[1, :, 2:, :])
        plain = tf.identity(x)
        explicit = layer(plain, plain, query_mask=ids != 0, value_mask=ids != 0)
        self.assertAllClose(explicit, output)

    def test_keras_mask_in_functional_model_fits(self):
        ids = keras.Input((None,), dtype="int32")
        context = keras.Input((None,), dtype="int32")
        embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        query, value = embedding(ids), embedding(context)
        attended = MultiHeadAttention(num_heads=2, key_dim=4)(query, value)
        self.assertIsNotNone(attended._keras_mask)
        pooled = keras.layers.GlobalAveragePooling1D()(attended)
        model = keras.Model([ids, context], keras.layers.Dense(1)(pooled))
        model.compile(optimizer="adam", loss="mse")
        x = [np.array([[1, 2, 0], [3, 0, 0]]), np.array([[4, 5, 6, 0], [7, 8, 0, 0]])]
        history = model.fit(x, np.ones((2, 1)), epochs=3, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))

    # -- scores, dropout, gradients --------------------------------------------

    def test_return_attention_scores_shape_and_spec(self):
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        output, weights = layer(self.query, self.value, return_attention_scores=True)
        self.assertEqual((2, 4, 8), tuple(output.shape))
        self.assertEqual((2, 2, 4, 6), tuple(weights.shape))
        self.assertAllClose(np.ones((2, 2, 4)), np.sum(weights, axis=-1))
        spec = layer.compute_output_spec(
            keras.KerasTensor((None, 4, 8)), keras.KerasTensor((None, 6, 8)),
            return_attention_scores=True,
        )
        self.assertEqual([(None, 4, 8), (None, 2, 4, 6)], [tuple(s.shape) for s in spec])
        args = {"query": self.query, "value": self.value, "key": self.key}
        for config, inputs in (
            (dict(output_shape=(2, 3), num_key_value_heads=1), args),
            (dict(attention_axes=(2,)), {"query": normal(2, 3, 4, 5), "value": normal(2, 3, 2, 5)}),
        ):
            with self.subTest(**config):
                self.check_output_spec(
                    lambda: MultiHeadAttention(num_heads=2, key_dim=4, **config),
                    (inputs, {"return_attention_scores": True}),
                )
        self.assertEqual(
            (None, 4, 2, 3),
            MultiHeadAttention(2, 4, output_shape=(2, 3)).compute_output_shape(
                (None, 4, 8), (None, 6, 8)
            ),
        )

    def test_dropout(self):
        layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=3)
        plain = MultiHeadAttention(num_heads=2, key_dim=4)
        inference = layer(self.query, self.value)
        plain(self.query, self.value)
        plain.set_weights(layer.get_weights())
        self.assertAllClose(plain(self.query, self.value), inference)
        self.assertAllClose(inference, layer(self.query, self.value, training=False))
        output, weights = layer(
            self.query, self.value, training=True, return_attention_scores=True
        )
        self.assertNotAllClose(inference, output)
        # Returned weights are taken before dropout: rows still sum to one.
        self.assertAllClose(np.ones((2, 2, 4)), np.sum(weights, axis=-1))

    def test_gradients(self):
        value_mask = padding([6, 3], 6)
        inputs = ({"query": self.query, "value": self.value, "value_mask": value_mask}, {})
        layer = MultiHeadAttention(num_heads=4, key_dim=2, num_key_value_heads=2)
        self.check_gradients(layer, inputs, wrt="value", zero_grad_mask=~value_mask)
        self.check_gradients(layer, inputs, wrt="query")

    # -- saving, compiling -----------------------------------------------------

    def test_serialization(self):
        args = {"query": self.query, "value": self.value, "key": self.key}
        self.check_serialization(
            lambda: MultiHeadAttention(
                num_heads=4, key_dim=3, value_dim=2, num_key_value_heads=2, use_gate=True,
                output_shape=6, sliding_window=3, implementation="dense", block_size=8,
                kernel_regularizer="l2", seed=1,
            ),
            (args, {"use_causal_mask": True}),
        )
        keras_config = keras.layers.MultiHeadAttention(2, 4, attention_axes=2).get_config()
        layer = MultiHeadAttention.from_config(keras_config)
        self.assertEqual((2,), layer.attention_axes)

    def test_xla(self):
        args = {
            "query": self.query, "value": self.value,
            "query_mask": self.query_mask, "value_mask": self.value_mask,
        }
        self.check_xla(
            lambda: MultiHeadAttention(num_heads=4, key_dim=2, num_key_value_heads=2, dropout=0.1),
            (args, {}),
        )

    # -- errors ----------------------------------------------------------------

    def test_constructor_errors(self):
        cases = [
            (dict(num_heads=0, key_dim=4), "num_heads=0"),
            (dict(num_heads=2.0, key_dim=4), "num_heads=2.0"),
            (dict(num_heads=2, key_dim=-1), "key_dim=-1"),
            (dict(num_heads=2, key_dim=4, value_dim=0), "value_dim=0"),
            (dict(num_heads=4, key_dim=4, num_key_value_heads=3), "num_key_value_heads=3"),
            (dict(num_heads=2, key_dim=4, implementation="flash"), "implementation='flash'"),
            (dict(num_heads=2, key_dim=4, flash_attention=True), 'implementation="chunked"'),
            (dict(num_heads=2, key_dim=4, dropout=1.5), "dropout=1.5"),
            (dict(num_heads=2, key_dim=4, output_shape=(4, 0)), "output_shape=(4, 0)"),
            (dict(num_heads=2, key_dim=4, attention_axes="1"), "attention_axes='1'"),
            (dict(num_heads=2, key_dim=4, sliding_window=0), "sliding_window=0"),
            (dict(num_heads=2, key_dim=4, block_size=0), "block_size=0"),
            (dict(num_heads=2, key_dim=4, implementation="chunked", dropout=0.1), "dropout=0.1"),
        ]
        for config, fragment in cases:
            with self.subTest(fragment):
                self.assert_value_error(
                    lambda: MultiHeadAttention(**config), "Expected", fragment
                )

    def test_call_errors(self):
        q, v = self.query, self.value
        layer = MultiHeadAttention(num_heads=2, key_dim=4)
        k = normal(2, 6, 5)
        layer(q, v, k)
        chunked = MultiHeadAttention(num_heads=2, key_dim=4, implementation="chunked")
        cases = [
            (lambda: layer(q, v, normal(2, 5, 5)), "key.shape=(2, 5, 5)"),
            (lambda: layer(q, normal(3, 6, 8), normal(3, 6, 5)), "value.shape=(3, 6, 8)"),
            (lambda: layer(q, normal(2, 6, 8, 1)), "value.shape=(2, 6, 8, 1)"),
            (lambda: layer(normal(2, 8), v), "query.shape=(2, 8)"),
            (lambda: layer(normal(2, 4, 6), v), "query.shape=(2, 4, 6)"),
            (lambda: layer(q, normal(2, 6, 6)), "value.shape=(2, 6, 6)"),
            (lambda: layer(q, v, normal(2, 6, 8)), "key.shape=(2, 6, 8)"),
            (
                lambda: layer(q, v, k, attention_mask=np.ones((2, 4, 5), bool)),
                "attention_mask.shape=(2, 4, 5)", "(2, 4, 6)",
            ),
            (
                lambda: layer(q, v, k, value_mask=np.ones((2, 4), bool)),
                "value_mask.shape=(2, 4)",
            ),
            (
                lambda: chunked(q, v, return_attention_scores=True),
                "return_attention_scores=True",
            ),
            (
                lambda: MultiHeadAttention(2, 4, attention_axes=(-1,))(
                    normal(2, 3, 4, 5), normal(2, 3, 4, 5)
                ),
                "attention_axes=(-1,)",
            ),
            (
                lambda: MultiHeadAttention(2, 4, attention_axes=2)(
                    normal(2, 3, 4, 5), normal(2, 2, 4, 5)
                ),
                "query.shape=(2, 3, 4, 5)", "value.shape=(2, 2, 4, 5)",
            ),
        ]
        for fn, *fragments in cases:
            with self.subTest(fragments[0]):
                self.assert_value_error(fn, "Expected", *fragments)
        self.assert_value_error(
            lambda: MultiHeadAttention(2, 4)(keras.Input((4, None)), keras.Input((6, 8))),
            "query.shape=(None, 4, None)",
        )
        symbolic = keras.Input((4, 8))
        self.assert_value_error(
            lambda: chunked(symbolic, symbolic, return_attention_scores=True),
            "return_attention_scores=True",
        )


if __name__ == "__main__":
    tf.test.main()
