"""Chunked-attention cases shared by tests/test_chunked_attention.py, and a
probe that computes their values and gradients under the current backend.

    KERAS_BACKEND=jax python tests/chunked_probe.py OUT.npz

Each case gives `(B, Tq, N, H)` queries, `(B, Tk, K, H)` keys and values, an
optional mask (True = may attend), `causal` and a key `block_size` that does
not divide every key length. The loss is `sum(output * probe)` so every
output element gets its own cotangent. Imports Keras, NumPy and kerasattn
only (never TensorFlow).
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from kerasattn.ops import dot_product_attention


def _case(seed, batch, q_len, k_len, heads, kv_heads, width, mask_kind, causal, block):
    rng = np.random.default_rng(seed)
    arrays = {
        "query": rng.normal(size=(batch, q_len, heads, width)),
        "key": rng.normal(size=(batch, k_len, kv_heads, width)),
        "value": rng.normal(size=(batch, k_len, kv_heads, width + 1)),
        "probe": rng.normal(size=(batch, q_len, heads, width + 1)),
    }
    arrays = {name: (3 * x if name != "probe" else x).astype("float32")
              for name, x in arrays.items()}
    mask = None
    if mask_kind == "padding":  # (B, Tq, Tk) from query and key padding
        q_valid = np.arange(q_len)[None] < np.array([q_len, q_len - 2])[:batch, None]
        k_valid = np.arange(k_len)[None] < np.array([k_len, k_len - 3])[:batch, None]
        mask = q_valid[:, :, None] & k_valid[:, None, :]
    elif mask_kind == "explicit":  # random, with a row that has no key at all
        mask = rng.random((batch, q_len, k_len)) > 0.5
        mask[-1, 1] = False
    elif mask_kind == "heads":  # (B, N, Tq, Tk), one head fully masked
        mask = rng.random((batch, heads, q_len, k_len)) > 0.3
        mask[0, -1] = False
    elif mask_kind == "keys":  # (B, 1, Tk): broadcast over queries
        mask = rng.random((batch, 1, k_len)) > 0.4
        mask[-1] = False  # no key for any query of the last example
    return dict(arrays, mask=mask, causal=causal, block_size=block)


CASES = {
    "plain": _case(0, 2, 9, 9, 2, 2, 4, None, False, 4),
    "padding": _case(1, 2, 9, 9, 2, 2, 4, "padding", False, 4),
    "causal": _case(2, 2, 10, 10, 2, 2, 4, None, True, 3),
    "causal_gqa": _case(9, 1, 9, 9, 4, 2, 4, None, True, 4),
    "causal_padding_gqa": _case(3, 2, 10, 10, 4, 2, 4, "padding", True, 4),
    "explicit_cross": _case(4, 2, 6, 11, 2, 2, 4, "explicit", False, 4),
    "explicit_gqa_one_kv_head": _case(5, 2, 7, 13, 4, 1, 3, "explicit", False, 5),
    "head_mask_gqa": _case(6, 2, 6, 9, 4, 2, 4, "heads", False, 4),
    "key_mask_causal": _case(7, 2, 8, 8, 2, 2, 4, "keys", True, 3),
    "one_block": _case(8, 1, 5, 5, 2, 1, 4, "explicit", True, 512),
}


def attention(case, implementation, query, key, value):
    return dot_product_attention(
        query, key, value, case["mask"], causal=case["causal"],
        implementation=implementation, block_size=case["block_size"],
    )


def value_and_grads(case, implementation, jit=False):
    """Output and gradients of `sum(output * probe)` wrt query, key, value."""
    backend = keras.backend.backend()
    tensors = [case["query"], case["key"], case["value"]]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(q, k, v):
            out = attention(case, implementation, q, k, v)
            return jnp.sum(out * case["probe"]), out

        fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
        if jit:
            fn = jax.jit(fn)
        (_, out), grads = fn(*tensors)
        return [np.asarray(x) for x in (out, *grads)]
    if backend == "tensorflow":
        import tensorflow as tf

        def run(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = attention(case, implementation, q, k, v)
                loss = tf.reduce_sum(out * case["probe"])
            return [out] + tape.gradient(loss, [q, k, v])

        if jit:
            run = tf.function(run, jit_compile=True)
        return [np.asarray(x) for x in run(*map(tf.constant, tensors))]
    raise ValueError(f"No gradient probe for backend {backend!r}")


def main(path: str) -> None:
    results = {"backend": np.array(keras.backend.backend())}
    for name, case in CASES.items():
        for label, implementation, jit in (
            ("dense", "dense", False),
            ("chunked", "chunked", False),
            ("chunked_jit", "chunked", True),
        ):
            for i, x in enumerate(value_and_grads(case, implementation, jit)):
                results[f"{name}/{label}/{i}"] = x
    np.savez(path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
