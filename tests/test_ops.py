"""kerasattn.ops against NumPy references: masks, masked softmax, attention."""

import contextlib

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from kerasattn import ops as ka_ops
from kerasattn.ops import attention
from kerasattn.ops import tracing
from tests import harness


def numpy_attention(q, k, v, mask=None, causal=False, scale=None):
    """Reference multi-head attention in float64; q (B,Tq,N,H), k/v (B,Tk,K,*)."""
    q, k, v = (x.astype("float64") for x in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k = np.repeat(k, groups, axis=2)
    v = np.repeat(v, groups, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    full = np.ones(logits.shape, bool)
    if mask is not None:
        mask = mask[:, None] if mask.ndim == 3 else mask
        full &= np.broadcast_to(mask, logits.shape)
    if causal:
        full &= harness.numpy_causal_mask(q.shape[1], k.shape[1])
    weights = harness.numpy_masked_softmax(logits, full)
    return np.einsum("bnts,bsnh->btnh", weights, v), weights


class MaskingTest(tf.test.TestCase):
    def test_masked_softmax_hand_computed(self):
        # Row 0: logits [0, ln 3, 5(masked)] -> weights [1/4, 3/4, 0].
        # Row 1: every position masked -> zeros, not a uniform distribution.
        scores = np.array([[0.0, np.log(3.0), 5.0], [1.0, 2.0, 3.0]], "float32")
        mask = np.array([[True, True, False], [False, False, False]])
        got = ka_ops.masked_softmax(scores, mask).numpy()
        self.assertAllClose([[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]], got)

    def test_one_key_is_valid_input_without_warnings(self):
        # Keras's softmax warns about an axis of length 1; a one-token
        # sequence is ordinary input to attention.
        import warnings

        x = np.ones((2, 1, 2, 4), "float32")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.assertAllClose([[1.0]], ka_ops.masked_softmax(np.ones((1, 1), "float32")))
            self.assertAllClose(x, ka_ops.dot_product_attention(x, x, x))

    def test_masked_softmax_low_precision_has_no_nan(self):
        for dtype in ("float16", "bfloat16"):
            scores = tf.constant([[60000.0, -60000.0], [1.0, 2.0]], dtype)
            mask = tf.constant([[True, False], [False, False]])
            got = ka_ops.masked_softmax(scores, mask)
            self.assertEqual(got.dtype, tf.float32)
            self.assertAllClose([[1.0, 0.0], [0.0, 0.0]], got.numpy())

    def test_masked_softmax_gradient_finite_and_zero_where_masked(self):
        scores = tf.Variable(np.random.randn(3, 4).astype("float32"))
        mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
        with tf.GradientTape() as tape:
            weights = ka_ops.masked_softmax(scores, mask)
            loss = tf.reduce_sum(weights * tf.range(4, dtype="float32"))
        grad = tape.gradient(loss, scores).numpy()
        self.assertTrue(np.all(np.isfinite(grad)))
        self.assertAllEqual(np.zeros(6), grad[~mask])

    def test_masked_softmax_accepts_integer_masks(self):
        scores = np.zeros((1, 3), "float32")
        got = ka_ops.masked_softmax(scores, np.array([[1, 0, 1]], "int32")).numpy()
        self.assertAllClose([[0.5, 0.0, 0.5]], got)

    def test_causal_and_sliding_window_masks(self):
        self.assertAllEqual(harness.numpy_causal_mask(3, 4), ka_ops.causal_mask(3, 4))
        band = ka_ops.sliding_window_mask(4, 4, 2).numpy()
        self.assertAllEqual(np.abs(np.subtract.outer(range(4), range(4))) < 2, band)

    def test_masks_between_tensors_match_the_masks_of_their_lengths(self):
        # Positions count along axis 1 of any rank, whatever the batch.
        self.assertAllEqual([[0, 1, 2]], ka_ops.sequence_positions(np.zeros((2, 3, 5))))
        self.assertAllEqual([[0, 1]], ka_ops.sequence_positions(np.zeros((1, 4, 2, 7)), 2))
        self.assertEqual((0, 3), tuple(ka_ops.sequence_positions(np.zeros((0, 3, 5))).shape))
        query, key = np.zeros((2, 3, 5), "float32"), np.zeros((2, 4, 5), "float32")
        causal = ka_ops.causal_mask_between(query, key)
        self.assertAllEqual(harness.numpy_causal_mask(3, 4)[None], causal)
        band = ka_ops.sliding_window_mask_between(key, key, 2)
        self.assertAllEqual((np.abs(np.subtract.outer(range(4), range(4))) < 2)[None], band)

    def test_padding_attention_mask_and_merge(self):
        q_mask = np.array([[1, 1, 0]], bool)
        k_mask = np.array([[1, 0]], bool)
        got = ka_ops.padding_attention_mask(q_mask, k_mask).numpy()
        self.assertAllEqual(q_mask[:, :, None] & k_mask[:, None, :], got)
        self.assertIsNone(ka_ops.padding_attention_mask(None, None))
        self.assertIsNone(ka_ops.merge_masks(None, None))
        self.assertEqual(ka_ops.padding_attention_mask(None, k_mask).shape, (1, 1, 2))

    def test_merge_attention_masks(self):
        q_mask = np.array([[1, 1, 0]], bool)
        v_mask = np.array([[1, 1, 1, 0]], bool)
        k_mask = np.array([[0, 1, 1, 1]], bool)
        explicit = np.array([[[1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1]]], bool)
        causal = ka_ops.causal_mask(3, 4)
        got = ka_ops.merge_attention_masks(q_mask, v_mask, k_mask, explicit, causal).numpy()
        # Row 0 keeps key 0 only by causality, and key 0 is padding: nothing left.
        expected = np.array([[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]], bool)
        self.assertAllEqual(expected, got)
        self.assertIsNone(ka_ops.merge_attention_masks())
        self.assertEqual(ka_ops.merge_attention_masks(structure=causal).shape, (3, 4))

    def test_exported_float_graphs_compute_masks_in_float(self):
        # Traced for export, masks merge by float products and positions
        # compare as float32 (LiteRT's boolean and int32 broadcasting kernels
        # are slow); full int8's trace (bounded masking) keeps bool and int32,
        # which its converter leaves unquantized. The values never change.
        x = np.zeros((2, 5, 3), "float32")
        x[1, 3:] = 1.0  # the second row's last two positions are padding
        spec = tf.TensorSpec((None, None, 3), tf.float32)

        def masks(x):
            padding = ka_ops.padding_attention_mask(x[..., 0] < 0.5, x[..., 0] < 0.5)
            window = ka_ops.sliding_window_mask_between(x, x, 2)
            return ka_ops.merge_masks(padding, window, ka_ops.causal_mask_between(x, x))

        def traced(*contexts):
            with contextlib.ExitStack() as stack:
                for context in contexts:
                    stack.enter_context(context)
                function = tf.function(masks).get_concrete_function(spec)
            operations = function.graph.get_operations()
            types = {op.type for op in operations}
            (distance,) = [op.outputs[0].dtype for op in operations if op.type == "Abs"]
            return function(tf.constant(x)), types, distance

        want = masks(x)
        plain, plain_ops, plain_distance = traced()
        exported, exported_ops, exported_distance = traced(tracing.export_graph())
        full_int8, full_int8_ops, full_int8_distance = traced(
            tracing.export_graph(), ka_ops.bounded_masking()
        )
        for got in (plain, exported, full_int8):
            self.assertAllEqual(want, got)
        self.assertIn("LogicalAnd", plain_ops)
        self.assertNotIn("LogicalAnd", exported_ops)
        self.assertIn("LogicalAnd", full_int8_ops)
        distances = [plain_distance, exported_distance, full_int8_distance]
        self.assertEqual([tf.int32, tf.float32, tf.int32], distances)

    def test_check_broadcastable_names_argument_and_shapes(self):
        ka_ops.check_broadcastable(np.ones((2, 1, 5)), (2, 3, 5), "attention_mask")
        ka_ops.check_broadcastable(None, (2, 3, 5), "attention_mask")
        with self.assertRaisesRegex(ValueError, r"`attention_mask`.*\(2, 3, 5\).*\(2, 4, 5\)"):
            ka_ops.check_broadcastable(np.ones((2, 4, 5)), (2, 3, 5), "attention_mask")
        with self.assertRaisesRegex(ValueError, "rank <= 3"):
            ka_ops.check_broadcastable(np.ones((1, 2, 3, 5)), (2, 3, 5), "attention_mask")


class DotProductAttentionTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.q = rng.normal(size=(2, 5, 4, 3)).astype("float32")
        self.k = rng.normal(size=(2, 7, 2, 3)).astype("float32")
        self.v = rng.normal(size=(2, 7, 2, 6)).astype("float32")
        mask = rng.random((2, 5, 7)) > 0.4
        mask[1, 2] = False  # a query with nothing to attend to
        self.mask = mask

    @parameterized.product(
        implementation=("dense", "chunked"), causal=(False, True), masked=(False, True)
    )
    def test_matches_numpy(self, implementation, causal, masked):
        mask = self.mask if masked else None
        got = ka_ops.dot_product_attention(
            self.q, self.k, self.v, mask, causal=causal,
            implementation=implementation, block_size=3,
        )
        want, _ = numpy_attention(self.q, self.k, self.v, mask, causal)
        self.assertAllClose(want, got, atol=1e-5)
        if masked:
            self.assertAllEqual(np.zeros((4, 6)), got[1, 2])

    def test_weights_are_masked_and_rows_without_keys_are_zero(self):
        out, weights = ka_ops.dot_product_attention(
            self.q, self.k, self.v, self.mask, return_weights=True, implementation="dense"
        )
        _, want = numpy_attention(self.q, self.k, self.v, self.mask)
        self.assertAllClose(want, weights, atol=1e-6)
        self.assertAllEqual(np.zeros((4, 7)), weights[1, :, 2])

    def test_heads_first_layout_matches_numpy(self):
        # Queries and values (B, N, T, H), keys (B, K, H, T): grouped heads, a
        # query with no key (zero output and weights), in and out of a graph.
        q = np.transpose(self.q, (0, 2, 1, 3))
        k = np.transpose(self.k, (0, 2, 3, 1))
        v = np.transpose(self.v, (0, 2, 1, 3))
        want_out, want_weights = numpy_attention(self.q, self.k, self.v, self.mask)
        for run in (attention.dense_attention_heads_first,
                    tf.function(attention.dense_attention_heads_first)):
            out, weights = run(q, k, v, self.mask, return_weights=True)
            self.assertAllClose(np.transpose(want_out, (0, 2, 1, 3)), out, atol=1e-5)
            self.assertAllClose(want_weights, weights, atol=1e-6)
            self.assertAllEqual(np.zeros((4, 6)), out[1, :, 2])

    def test_tensorflow_graph_tells_tracing_from_eager_execution(self):
        self.assertFalse(tracing.tensorflow_graph())
        self.assertTrue(tf.function(lambda: tf.constant(tracing.tensorflow_graph()))())

    def test_rank4_and_rank2_masks_broadcast(self):
        head_mask = np.ones((2, 4, 5, 7), bool)
        head_mask[:, 1] = False
        out = ka_ops.dot_product_attention(self.q, self.k, self.v, head_mask).numpy()
        self.assertAllEqual(np.zeros_like(out[:, :, 1]), out[:, :, 1])
        shared = harness.numpy_causal_mask(5, 7)
        got = ka_ops.dot_product_attention(self.q, self.k, self.v, shared)
        want = ka_ops.dot_product_attention(self.q, self.k, self.v, causal=True)
        self.assertAllClose(want, got)

    def test_chunked_gradients_match_dense(self):
        tensors = [tf.constant(x) for x in (self.q, self.k, self.v)]
        grads = {}
        for implementation in ("dense", "chunked"):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                out = ka_ops.dot_product_attention(
                    *tensors, self.mask, causal=True,
                    implementation=implementation, block_size=3,
                )
                loss = tf.reduce_sum(out * tf.sin(out))
            grads[implementation] = tape.gradient(loss, tensors)
        for dense, chunked in zip(grads["dense"], grads["chunked"]):
            self.assertTrue(np.all(np.isfinite(chunked.numpy())))
            self.assertAllClose(dense, chunked, atol=1e-5)

    def test_chunked_with_dynamic_lengths_in_tf_function(self):
        spec = lambda w, h: tf.TensorSpec((None, None, w, h))  # noqa: E731
        fn = tf.function(
            lambda q, k, v, m: ka_ops.dot_product_attention(
                q, k, v, m, implementation="chunked", block_size=3
            ),
            input_signature=[spec(4, 3), spec(2, 3), spec(2, 6),
                             tf.TensorSpec((None, None, None), tf.bool)],
        )
        want, _ = numpy_attention(self.q, self.k, self.v, self.mask)
        self.assertAllClose(want, fn(self.q, self.k, self.v, self.mask), atol=1e-5)

    def test_low_precision_inputs_compute_in_float32(self):
        for dtype in ("float16", "bfloat16"):
            q, k, v = (tf.cast(x * 100, dtype) for x in (self.q, self.k, self.v))
            out = ka_ops.dot_product_attention(q, k, v, self.mask)
            self.assertEqual(out.dtype, dtype)
            self.assertTrue(np.all(np.isfinite(tf.cast(out, "float32").numpy())))
            self.assertAllEqual(np.zeros((4, 6)), tf.cast(out, "float32")[1, 2])

    def test_auto_is_chunked_where_dense_scores_are_large_training_or_not(self):
        from unittest import mock

        from kerasattn.ops import attention

        # (B, N, Tq, Tk) float32 scores of exactly AUTO_CHUNKED_MIN_SCORE_BYTES;
        # the paths are mocked, so nothing this large is computed.
        side = int((attention.AUTO_CHUNKED_MIN_SCORE_BYTES // 16) ** 0.5)
        q = np.zeros((1, side, 4, 2), "float32")
        long_k = np.zeros((1, side, 4, 2), "float32")
        short_k = long_k[:, : side // 2]
        with mock.patch.object(attention, "_run_chunked") as chunked, \
                mock.patch.object(attention, "_dense_attention") as dense:
            ka_ops.dot_product_attention(q, long_k, long_k)
            ka_ops.dot_product_attention(q, long_k, long_k, training=True)
            self.assertEqual(2, chunked.call_count)
            ka_ops.dot_product_attention(q, long_k, long_k, return_weights=True)
            ka_ops.dot_product_attention(q, short_k, short_k)
            ka_ops.dot_product_attention(q, long_k, long_k, dropout=lambda w: w)
            self.assertEqual(2, chunked.call_count)
            self.assertEqual(3, dense.call_count)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "implementation.*'fast'"):
            ka_ops.dot_product_attention(self.q, self.k, self.v, implementation="fast")
        with self.assertRaisesRegex(ValueError, "query heads=4, key heads=3"):
            ka_ops.dot_product_attention(self.q, self.q[:, :, :3], self.q[:, :, :3])
        with self.assertRaisesRegex(ValueError, "`query` of rank 4"):
            ka_ops.dot_product_attention(self.q[0], self.k, self.v)
        with self.assertRaisesRegex(ValueError, "neither"):
            ka_ops.dot_product_attention(
                self.q, self.k, self.v, implementation="chunked", return_weights=True
            )
        with self.assertRaisesRegex(ValueError, "rank 2"):
            ka_ops.dot_product_attention(self.q, self.k, self.v, np.ones((7,), bool))


class DeviceTest(tf.test.TestCase):
    @harness.requires_gpu
    def test_gpu_matches_cpu(self):
        rng = np.random.default_rng(1)
        q, k, v = (rng.normal(size=(2, 33, 4, 8)).astype("float32") for _ in range(3))
        mask = rng.random((2, 33, 33)) > 0.2
        results = {}
        for device in ("/CPU:0", "/GPU:0"):
            with tf.device(device):
                results[device] = [
                    ka_ops.dot_product_attention(
                        q, k, v, mask, causal=True, implementation=impl, block_size=8
                    ).numpy()
                    for impl in ("dense", "chunked")
                ]
        for cpu, gpu in zip(results["/CPU:0"], results["/GPU:0"]):
            self.assertAllClose(cpu, gpu, atol=1e-4)


class BoundedMaskingTest(tf.test.TestCase):
    """The export-time masking mode computes the same weights, and no
    intermediate leaves the range of the logits."""

    def test_masked_softmax_matches_default(self):
        rng = np.random.default_rng(3)
        scores = (rng.normal(size=(2, 3, 5)) * 20).astype("float32")
        mask = rng.random((2, 3, 5)) > 0.4
        mask[0, 1] = False
        want = harness.numpy_masked_softmax(scores, mask)
        with ka_ops.bounded_masking():
            got = ka_ops.masked_softmax(scores, mask).numpy()
        self.assertAllClose(want, got, atol=1e-6)
        self.assertAllEqual(np.zeros(5), got[0, 1])

    def test_attention_matches_default_and_gradients_are_finite(self):
        rng = np.random.default_rng(4)
        q, k, v = (rng.normal(size=(2, 4, 2, 3)).astype("float32") for _ in range(3))
        mask = rng.random((2, 4, 4)) > 0.5
        mask[1, 0] = False
        tensors = [tf.constant(x) for x in (q, k, v)]
        for causal in (False, True):
            want = ka_ops.dot_product_attention(q, k, v, mask, causal=causal)
            with ka_ops.bounded_masking(), tf.GradientTape() as tape:
                tape.watch(tensors)
                got = ka_ops.dot_product_attention(*tensors, mask, causal=causal)
                grads = tape.gradient(tf.reduce_sum(got), tensors)
            self.assertAllClose(want, got, atol=1e-6)
            for grad in grads:
                self.assertTrue(np.all(np.isfinite(grad.numpy())))

    def test_no_large_constant_in_the_traced_graph(self):
        spec = tf.TensorSpec((2, 3, 5))
        fn = tf.function(lambda s: ka_ops.masked_softmax(s, s > 0), input_signature=[spec])
        with ka_ops.bounded_masking():
            graph = fn.get_concrete_function().graph
        constants = [
            op.get_attr("value") for op in graph.get_operations() if op.type == "Const"
        ]
        values = [tf.make_ndarray(c) for c in constants]
        self.assertLess(max(float(np.max(np.abs(v))) if v.size else 0.0 for v in values), 1e10)
