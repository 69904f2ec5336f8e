"""The chunked path's custom (FlashAttention-style) gradient agrees with the
dense path, values and gradients, on TensorFlow (eagerly, traced with
dynamic shapes, compiled with XLA) and on JAX, and keeps no per-block state
for the backward pass."""


import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from kerasattn.ops import attention
from kerasattn.ops import dot_product_attention
from tests import chunked_probe
from tests import harness

TOLERANCE = dict(atol=2e-5, rtol=2e-5)


def _value_and_grads(case, implementation, mode):
    mask = case["mask"]

    def run(q, k, v, m):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = dot_product_attention(
                q, k, v, m, causal=case["causal"],
                implementation=implementation, block_size=case["block_size"],
            )
            loss = tf.reduce_sum(out * case["probe"])
        return [out] + tape.gradient(loss, [q, k, v])

    tensors = [tf.constant(case[n]) for n in ("query", "key", "value")]
    if mask is None:
        fn = lambda q, k, v: run(q, k, v, None)  # noqa: E731
        args = tensors
        specs = [tf.TensorSpec((None, None) + t.shape[2:]) for t in tensors]
    else:
        fn, args = run, tensors + [tf.constant(mask)]
        specs = [tf.TensorSpec((None, None) + t.shape[2:]) for t in tensors]
        specs.append(tf.TensorSpec((None,) * mask.ndim, tf.bool))
    if mode == "dynamic":
        fn = tf.function(fn, input_signature=specs)
    elif mode == "xla":
        fn = tf.function(fn, jit_compile=True)
    return [x.numpy() for x in fn(*args)]


class ChunkedAttentionTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(
        case=list(chunked_probe.CASES), mode=("eager", "dynamic", "xla")
    )
    def test_values_and_gradients_match_dense(self, case, mode):
        case = chunked_probe.CASES[case]
        want = _value_and_grads(case, "dense", "eager")
        got = _value_and_grads(case, "chunked", mode)
        for name, w, g in zip(("output", "d_query", "d_key", "d_value"), want, got):
            with self.subTest(name):
                self.assertTrue(np.all(np.isfinite(g)))
                self.assertAllClose(w, g, **TOLERANCE)

    def test_rows_without_keys_get_zero_output_and_gradient(self):
        case = chunked_probe.CASES["explicit_cross"]
        out, d_query, d_key, d_value = _value_and_grads(case, "chunked", "eager")
        self.assertFalse(case["mask"][-1, 1].any())
        self.assertAllEqual(np.zeros_like(out[-1, 1]), out[-1, 1])
        self.assertAllEqual(np.zeros_like(d_query[-1, 1]), d_query[-1, 1])
        # Keys nobody may attend to get no gradient either.
        unseen = ~case["mask"].any(axis=1)  # (B, Tk)
        self.assertAllEqual(np.zeros_like(d_key[unseen]), d_key[unseen])
        self.assertAllEqual(np.zeros_like(d_value[unseen]), d_value[unseen])

    @parameterized.parameters("float16", "bfloat16")
    def test_low_precision_inputs(self, dtype):
        case = chunked_probe.CASES["causal_padding_gqa"]
        tensors = [tf.cast(case[n], dtype) for n in ("query", "key", "value")]
        results = {}
        for implementation in ("dense", "chunked"):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                out = dot_product_attention(
                    *tensors, case["mask"], causal=True,
                    implementation=implementation, block_size=4,
                )
                loss = tf.reduce_sum(tf.cast(out, "float32") * case["probe"])
            grads = tape.gradient(loss, tensors)
            self.assertEqual(dtype, out.dtype)
            self.assertEqual([dtype] * 3, [g.dtype for g in grads])
            results[implementation] = [
                tf.cast(x, "float32").numpy() for x in [out] + grads
            ]
        for dense, chunked in zip(results["dense"], results["chunked"]):
            self.assertTrue(np.all(np.isfinite(chunked)))
            scale = max(1.0, float(np.max(np.abs(dense))))
            self.assertAllClose(dense, chunked, atol=2e-2 * scale, rtol=2e-2)

    def test_gradient_keeps_no_per_block_state(self):
        # A while loop differentiated by TensorFlow pushes every iteration's
        # intermediates onto TensorLists; the custom gradient recomputes them.
        q = tf.TensorSpec((1, 64, 2, 8))

        @tf.function(input_signature=[q, q, q])
        def step(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = dot_product_attention(
                    q, k, v, causal=True, implementation="chunked", block_size=8
                )
            return tape.gradient(out, [q, k, v])

        graph = step.get_concrete_function().graph.as_graph_def()
        ops = {node.op for node in graph.node}
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
        self.assertTrue(ops & {"While", "StatelessWhile"})  # the loops are there
        self.assertEqual(set(), {op for op in ops if op.startswith("TensorList")})

    def test_key_blocks_shrink_for_long_queries(self):
        self.assertEqual(128, attention._key_block_size(512, 1, 8, 32768, 32768))
        self.assertEqual(512, attention._key_block_size(512, 1, 8, 4096, 4096))
        self.assertEqual(64, attention._key_block_size(512, 64, 8, 32768, 32768))
        self.assertEqual(3, attention._key_block_size(512, 1, 8, 3, 3))

    def test_jax_matches_tensorflow(self):
        with harness.script_output_under_backend("jax", "chunked_probe.py", "chunked.npz") as path:
            other = dict(np.load(path))
        self.assertEqual("jax", str(other.pop("backend")))
        for name, case in chunked_probe.CASES.items():
            want = _value_and_grads(case, "dense", "eager")
            for label in ("dense", "chunked", "chunked_jit"):
                for i, w in enumerate(want):
                    with self.subTest(case=name, run=label, output=i):
                        self.assertAllClose(w, other[f"{name}/{label}/{i}"], **TOLERANCE)
