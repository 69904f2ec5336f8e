"""Sampling with temperature, top-k and top-p (nucleus) filtering."""

from __future__ import annotations

import keras
from keras import ops

from kerasattn.generation import _loop
from kerasattn.generation._loop import NextFn


def _int32(value: int):
    """A 32-bit pattern as an int32 constant (`value` in [0, 2**32))."""
    return ops.convert_to_tensor(value - 2**32 if value >= 2**31 else value, dtype="int32")


def _shift_right(x, bits: int):
    """Logical right shift of int32 bit patterns. `ops.right_shift` shifts
    signed ints arithmetically: the copies of the sign bit are cleared."""
    sign = ops.right_shift(x, _int32(31))  # 0 or -1
    return ops.bitwise_xor(ops.right_shift(x, _int32(bits)), sign * _int32(2 ** (32 - bits)))


def _hash(x):
    """A 32-bit integer mix (Chris Wellons's "lowbias32"): consecutive
    inputs give unrelated outputs. In int32, whose products wrap around as
    uint32's do, because the PyTorch backend and TFLite's built-in ops lack
    unsigned arithmetic."""
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = ops.multiply(x, _int32(0x7FEB352D))
    x = ops.bitwise_xor(x, _shift_right(x, 15))
    x = ops.multiply(x, _int32(0x846CA68B))
    return ops.bitwise_xor(x, _shift_right(x, 16))


def _gumbel_noise(seed, index, shape):
    """Gumbel(0, 1) noise of `shape` `(B, V)`, a pure function of the
    (`seed`, `index`) pair and the position in the tensor.

    Keras's random ops draw from a stateful seed, which a `while_loop` body
    cannot advance on every backend (JAX); a counter-based hash is
    stateless, so each step derives its own noise from its index.
    """
    step = _hash(ops.bitwise_xor(_hash(ops.cast(seed, "int32")), ops.cast(index, "int32")))
    rows = ops.expand_dims(ops.arange(shape[0], dtype="int32"), 1)
    cols = ops.expand_dims(ops.arange(shape[1], dtype="int32"), 0)
    counter = rows * ops.cast(shape[1], "int32") + cols
    bits = _hash(_hash(ops.bitwise_xor(counter, step)) + step)
    # The top 24 bits, centred in their interval: uniform in (0, 1).
    uniform = (ops.cast(_shift_right(bits, 8), "float32") + 0.5) / 2.0**24
    return -ops.log(-ops.log(uniform))


def filter_logits(logits, top_k: int | None = None, top_p: float | None = None):
    """Sets the logits outside the top-k / top-p (nucleus) set to -inf.

    Args:
        logits: `(B, V)` float logits.
        top_k: keep the `top_k` largest logits of each row.
        top_p: keep the smallest set of largest logits whose probabilities
            (softmax of the logits, after `top_k`) sum to at least `top_p`.

    Returns:
        float32 logits, `(B, V)`; tokens tied with the last kept one are
        kept too.
    """
    logits = ops.cast(logits, "float32")
    removed = float("-inf")
    if top_k is not None:
        k = min(top_k, logits.shape[-1]) if logits.shape[-1] is not None else top_k
        kth = ops.top_k(logits, k=k)[0][:, -1:]
        logits = ops.where(ops.less(logits, kth), removed, logits)
    if top_p is not None:
        ordered = ops.flip(ops.sort(logits, axis=-1), axis=-1)  # descending
        probabilities = ops.softmax(ordered, axis=-1)
        # A token is needed while the mass before it is still short of top_p;
        # the most likely token always is.
        before = ops.cumsum(probabilities, axis=-1) - probabilities
        needed = ops.less(before, top_p)
        cutoff = ops.min(ops.where(needed, ordered, float("inf")), axis=-1, keepdims=True)
        logits = ops.where(ops.less(logits, cutoff), removed, logits)
    return logits


def sample(
    next_fn: NextFn,
    prompt,
    cache=None,
    *,
    max_length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed=None,
    end_id: int | None = None,
    pad_id: int = 0,
):
    """Decodes by sampling each token from the model's distribution.

    The logits are divided by `temperature`, restricted to the `top_k`
    likeliest tokens and then to the top-p nucleus (`filter_logits`), and a
    token is drawn from their softmax (by the Gumbel-max trick). The draws
    are a pure function of `seed`, the position and the row, so a seed
    reproduces its ids, on every backend, eagerly, traced or compiled.

    Written with `keras.ops.while_loop`, so it runs eagerly, traces into a
    `tf.function` (and a SavedModel), and compiles with XLA or `jax.jit`.

    Args:
        next_fn: `next_fn(ids, cache, index) -> (logits, cache)`, as in
            `greedy_search`.
        prompt: `(B, P)` integer ids the output starts with (`P >= 1`,
            static).
        cache: the initial cache, any nest of tensors (or `None`).
        max_length: length of the output, prompt included: an int, or in a
            TensorFlow graph a scalar integer tensor (a length chosen per
            batch; the output's second axis is then dynamic).
        temperature: positive divisor of the logits; below 1 sharpens the
            distribution, above 1 flattens it.
        top_k: optional positive int, sample among the `top_k` likeliest
            tokens only.
        top_p: optional float in (0, 1], sample within the nucleus only.
        seed: int or int32 scalar tensor (pass one when tracing or
            exporting, so that calls can differ); `None` draws one from
            Keras's global seed generator (`keras.utils.set_random_seed`).
        end_id: optional end-of-sequence id: a row that emits it is padded
            with `pad_id` afterwards, and decoding stops once every row has.
        pad_id: the id after `end_id`.

    Returns:
        int32 ids `(B, max_length)`.

    Example:

    >>> def next_fn(ids, cache, index):
    ...     logits = keras.ops.convert_to_tensor([[2.0, 1.0, 0.5, -1.0]])
    ...     return keras.ops.tile(logits, (ids.shape[0], 1)), cache
    >>> start = np.zeros((3, 1), "int32")
    >>> first = sample(next_fn, start, max_length=6, top_k=2, seed=7)
    >>> again = sample(next_fn, start, max_length=6, top_k=2, seed=7)
    >>> bool(np.array_equal(first, again)), set(np.ravel(first[:, 1:])) <= {0, 1}
    (True, True)
    """
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature > 0
    ):
        raise ValueError(
            f"Expected `temperature` to be a positive number, received: temperature={temperature!r}"
        )
    _loop.check_int("top_k", top_k, 1, allow_none=True)
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"Expected `top_p` in (0, 1] or None, received: top_p={top_p!r}")
    if seed is None:
        seed = keras.random.randint((), 0, 2**31 - 1, dtype="int32")
    elif isinstance(seed, (bool, float)):
        raise ValueError(f"Expected `seed` to be an int or an int tensor, received: seed={seed!r}")
    seed = ops.convert_to_tensor(seed, dtype="int32")

    def choose(logits, index):
        logits = filter_logits(ops.cast(logits, "float32") / temperature, top_k, top_p)
        return _loop.argmax(logits + _gumbel_noise(seed, index, ops.shape(logits)))

    return _loop.decode(next_fn, prompt, cache, max_length, end_id, pad_id, choose)
