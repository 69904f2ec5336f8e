"""Multi-head scaled dot-product attention: the dense and the chunked path.

Shapes use `B` batch, `Tq`/`Tk` query/key length, `N` query heads, `K`
key/value heads (`N % K == 0`; `K < N` is grouped-query attention), `H` head
width and `Hv` value head width.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import ops

from kerasattn.ops.masking import MASKED_LOGIT
from kerasattn.ops.masking import as_bool_mask
from kerasattn.ops.masking import bounded_masked_softmax
from kerasattn.ops.masking import bounded_masking_enabled
from kerasattn.ops.masking import causal_mask_between
from kerasattn.ops.masking import logical_and
from kerasattn.ops.masking import masking_bias
from kerasattn.ops.masking import softmax

IMPLEMENTATIONS = ("auto", "dense", "chunked")

# "auto" switches to the chunked path where the dense path's float32
# (B, N, Tq, Tk) score tensor would reach this many bytes (static key length
# required; an unknown batch counts as 1 and an unknown query length as the
# key length). The chunked path's custom gradient makes the choice the same
# in training as at inference: below this size dense is faster forward and
# backward on CPU (chunked costs about 1.1-1.25x dense's time there, see
# benchmarks/RESULTS.md), above it the score tensors and their gradients
# dominate memory (B=1, 8 heads: between 4,096 and 8,192 tokens).
AUTO_CHUNKED_MIN_SCORE_BYTES = 2**30
# The chunked path shortens its key blocks so that one block's scores,
# (B, N, Tq, block) float32, stay under this many elements (where B and Tq
# are static), with blocks of at least _MIN_AUTO_BLOCK keys.
_MAX_BLOCK_SCORE_ELEMENTS = 2**25
_MIN_AUTO_BLOCK = 64
DEFAULT_BLOCK_SIZE = 512
# Real logits lie far above this and masked ones (MASKED_LOGIT) far below,
# also in float16 TFLite exports, which store constants in float16: there
# MASKED_LOGIT becomes -65504, still more than 104 (exp underflow) below.
_MIN_SHIFT = -3e4


def _logits(query, key, num_groups: int, heads_first: bool = False):
    """float32 `(B, N, Tq, Tk)` logits of already-scaled float32 inputs:
    `(B, Tq, N, H)` and `(B, Tk, K, H)`, or with `heads_first` `(B, N, Tq, H)`
    and `(B, K, H, Tk)`."""
    if heads_first:
        if num_groups == 1:
            return ops.matmul(query, key)
        batch, num_heads, q_len, width = ops.shape(query)
        grouped = ops.reshape(
            query, (batch, num_heads // num_groups, num_groups, q_len, width)
        )
        logits = ops.matmul(grouped, ops.expand_dims(key, 2))
        return ops.reshape(logits, (batch, num_heads, q_len, ops.shape(key)[-1]))
    if num_groups == 1:
        return ops.einsum("btnh,bsnh->bnts", query, key)
    batch, q_len, num_heads, width = ops.shape(query)
    grouped = ops.reshape(
        query, (batch, q_len, num_heads // num_groups, num_groups, width)
    )
    logits = ops.einsum("btkgh,bskh->bkgts", grouped, key)
    return ops.reshape(logits, (batch, num_heads, q_len, ops.shape(key)[1]))


def _combine(weights, value, num_groups: int, heads_first: bool = False):
    """Weighted sum of values: `(B, Tq, N, Hv)` of `(B, Tk, K, Hv)` values, or
    with `heads_first` `(B, N, Tq, Hv)` of `(B, K, Tk, Hv)` values."""
    if num_groups == 1:
        if heads_first:
            return ops.matmul(weights, value)
        return ops.einsum("bnts,bsnh->btnh", weights, value)
    batch, num_heads, q_len, k_len = ops.shape(weights)
    kv_heads = num_heads // num_groups
    grouped = ops.reshape(
        weights, (batch, kv_heads, num_groups, q_len, k_len)
    )
    if heads_first:
        out = ops.matmul(grouped, ops.expand_dims(value, 2))
        return ops.reshape(out, (batch, num_heads, q_len, -1))
    out = ops.einsum("bkgts,bskh->btkgh", grouped, value)
    return ops.reshape(out, (batch, q_len, num_heads, -1))


def _as_4d_mask(mask):
    """Brings a rank 2-4 mask to rank 4 `(B|1, N|1, Tq|1, Tk|1)`."""
    mask = as_bool_mask(mask)
    rank = len(mask.shape)
    if rank == 2:
        return mask[None, None]
    if rank == 3:
        return ops.expand_dims(mask, 1)
    if rank == 4:
        return mask
    raise ValueError(
        "Expected an attention mask of rank 2 (Tq, Tk), 3 (B, Tq, Tk) or "
        f"4 (B, N, Tq, Tk), received: mask.shape={tuple(mask.shape)}"
    )


def takes_dense_path(
    implementation: str, batch, num_heads: int, query_length, key_length, needs_weights: bool
) -> bool:
    """Whether `dot_product_attention` computes dense scores for heads of
    these sizes (`None` where not static); `needs_weights`: the weights are
    returned or dropped out, which only the dense path does."""
    if implementation != "auto":
        return implementation == "dense"
    if needs_weights or key_length is None:
        return True
    # See AUTO_CHUNKED_MIN_SCORE_BYTES.
    score_bytes = 4 * (batch or 1) * num_heads * (query_length or key_length) * key_length
    return score_bytes < AUTO_CHUNKED_MIN_SCORE_BYTES


def _check_heads(query, key, value) -> int:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if len(x.shape) != 4:
            raise ValueError(
                f"Expected `{name}` of rank 4 (batch, length, heads, width), "
                f"received: {name}.shape={tuple(x.shape)}"
            )
    num_heads, kv_heads = query.shape[2], key.shape[2]
    if num_heads is None or kv_heads is None:
        raise ValueError(
            "Expected a static number of heads, received: "
            f"query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
        )
    if value.shape[2] != kv_heads or num_heads % kv_heads:
        raise ValueError(
            "Expected key and value heads equal and dividing the query heads, "
            f"received: query heads={num_heads}, key heads={kv_heads}, "
            f"value heads={value.shape[2]}"
        )
    return num_heads // kv_heads


def dot_product_attention(
    query,
    key,
    value,
    mask=None,
    *,
    causal: bool = False,
    scale: float | None = None,
    dropout: Callable | None = None,
    return_weights: bool = False,
    implementation: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    training: bool = False,
):
    """Scaled dot-product attention over heads, with masks that compose.

    softmax(scale · q kᵀ + mask) v, computed with float32 logits and softmax
    whatever the input dtype. Queries with no key to attend to (every key
    masked) get a zero output and zero weights.

    Args:
        query: `(B, Tq, N, H)`.
        key: `(B, Tk, K, H)`, `K` dividing `N` (grouped-query when `K < N`).
        value: `(B, Tk, K, Hv)`.
        mask: optional boolean mask, `True` = may attend, of rank 2
            `(Tq, Tk)`, 3 `(B, Tq, Tk)` or 4 `(B, N, Tq, Tk)`, each dimension
            possibly 1 for broadcasting.
        causal: also mask keys after the query position (query i sees key
            j <= i).
        scale: logit scale; defaults to `1 / sqrt(H)`.
        dropout: optional callable applied to the weights before they are
            combined with the values (the caller decides about training).
        return_weights: also return the `(B, N, Tq, Tk)` weights.
        implementation: "dense" materialises the score tensor; "chunked"
            processes keys in blocks of `block_size` with a running (online)
            softmax and a custom gradient that recomputes each block from
            the saved log-sum-exp, so memory grows with `Tq * block_size`
            forward and backward; "auto" picks chunked, in training as at
            inference, where the dense score tensor would reach
            `AUTO_CHUNKED_MIN_SCORE_BYTES` (static key length) and neither
            weights nor dropout are needed.
        block_size: longest key block of the chunked path (blocks are
            shortened for long static query lengths so one block's scores
            stay small).
        training: accepted for compatibility; "auto" no longer depends on
            it.

    Returns:
        `(B, Tq, N, Hv)` output in the value dtype, and with
        `return_weights=True` also the weights in the value dtype.

    Example:

    >>> query = np.random.rand(2, 5, 4, 8).astype("float32")  # N = 4 heads
    >>> key = value = np.random.rand(2, 7, 2, 8).astype("float32")  # K = 2
    >>> output, weights = dot_product_attention(
    ...     query, key, value, causal=True, return_weights=True)
    >>> tuple(output.shape), tuple(weights.shape)
    ((2, 5, 4, 8), (2, 4, 5, 7))
    >>> chunked = dot_product_attention(
    ...     query, key, value, causal=True, implementation="chunked", block_size=3)
    >>> bool(np.allclose(output, chunked, atol=1e-5))
    True
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"Expected `implementation` in {IMPLEMENTATIONS}, received: "
            f"implementation={implementation!r}"
        )
    num_groups = _check_heads(query, key, value)
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    mask = None if mask is None else _as_4d_mask(mask)
    if implementation == "auto":
        dense = takes_dense_path(
            implementation, query.shape[0], query.shape[2], query.shape[1], key.shape[1],
            return_weights or dropout is not None,
        )
        implementation = "dense" if dense else "chunked"
    if implementation == "chunked":
        if return_weights or dropout is not None:
            raise ValueError(
                "The chunked implementation never materialises attention "
                "weights, so it supports neither `return_attention_scores` "
                "nor attention dropout; received: "
                f"return_weights={return_weights}, dropout={dropout}"
            )
        return _run_chunked(
            query, key, value, mask, causal, scale, num_groups, block_size
        )
    return _dense_attention(
        query, key, value, mask, causal, scale, num_groups, dropout,
        return_weights,
    )


def dense_attention_heads_first(
    query,
    key,
    value,
    mask=None,
    *,
    scale: float | None = None,
    dropout: Callable | None = None,
    return_weights: bool = False,
):
    """`dot_product_attention`'s dense path for heads laid out as matrices.

    With the heads before the sequence axis and the keys transposed, both
    products are plain batched matrix products. In the `(B, T, N, H)` layout
    Keras's TensorFlow backend runs each as transposes around a matmul, and
    in eager execution every one of those ops costs a Python dispatch:
    `MultiHeadAttention` projects straight into this layout instead.

    Args:
        query: `(B, N, Tq, H)`.
        key: `(B, K, H, Tk)`, transposed; `K` divides `N`.
        value: `(B, K, Tk, Hv)`.
        mask, scale, dropout, return_weights: as in `dot_product_attention`
            (a causal mask goes inside `mask`).

    Returns:
        `(B, N, Tq, Hv)` output in the value dtype, and with
        `return_weights=True` also the `(B, N, Tq, Tk)` weights.
    """
    num_heads, kv_heads = query.shape[1], key.shape[1]
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    mask = None if mask is None else _as_4d_mask(mask)
    return _dense_attention(
        query, key, value, mask, False, scale, num_heads // kv_heads, dropout,
        return_weights, heads_first=True,
    )


def _dense_attention(
    query, key, value, mask, causal, scale, num_groups, dropout, return_weights,
    heads_first: bool = False,
):
    out_dtype = value.dtype
    q, k = ops.cast(query, "float32"), ops.cast(key, "float32")
    # A scale of 1 (pre-scaled queries) skips the multiply. The heads-first
    # layout scales its transposed keys instead: a graph of scaled queries,
    # their product with the keys and a mask's addition is fused by
    # TensorFlow's optimizer (remapper, oneDNN) into a kernel that ran 100x
    # slower than the three ops (2 cores, 8 x 512 x 512, 8 heads).
    if scale != 1.0 and heads_first:
        k = k * scale
    elif scale != 1.0:
        q = q * scale
    logits = _logits(q, k, num_groups, heads_first)
    if causal:
        causal = causal_mask_between(query, key)[:, None]  # (1, 1, Tq, Tk)
        mask = (
            causal
            if mask is None
            else logical_and(mask, causal)
        )
    if mask is not None and bounded_masking_enabled():
        # Already zero for masked keys and for rows with no key: nothing is
        # left for the mask to fix below.
        weights = bounded_masked_softmax(logits, mask)
        mask = None
    else:
        if mask is not None:
            logits = logits + masking_bias(mask)
        weights = softmax(logits, axis=-1)
    # One cast of the weights, applied and returned alike: under mixed precision
    # the returned weights are then the tensor the output depends on, so that
    # gradients with respect to them exist (`kerasattn.explain`).
    if dropout is None:
        applied = returned = ops.cast(weights, out_dtype)
    else:  # the weights are cast a second time only when they are returned
        applied = ops.cast(dropout(weights), out_dtype)
        returned = ops.cast(weights, out_dtype) if return_weights else None
    output = _combine(applied, value, num_groups, heads_first)
    if mask is not None:
        # Rows whose keys are all masked got a uniform softmax: zero them on
        # the (small) output rather than on the (large) weights.
        # Cast before reshaping: TFLite's builtin slicing rejects bool tensors.
        row_has_key = ops.cast(ops.any(mask, axis=-1), out_dtype)  # (B|1, N|1, Tq|1)
        if not heads_first:
            row_has_key = ops.transpose(row_has_key, (0, 2, 1))
        output = output * ops.expand_dims(row_has_key, -1)
        if return_weights:
            returned = returned * ops.cast(mask, returned.dtype)
    if return_weights:
        return output, returned
    return output


_TF_GRAPH_CHUNKED = None


def _run_chunked(query, key, value, mask, causal, scale, num_groups, block_size):
    """`_chunked_attention`, run as one traced graph when TensorFlow executes
    eagerly.

    Executed op by op, its loops run every block's ops eagerly: each result
    is a fresh allocation (no buffer is reused in place) and the blocks
    cost about twice their traced time on CPU. Traced once per shape (and
    static argument) with `tf.function` (shapes stay static, so the key
    blocks are sized for them), an eager `GradientTape` records one
    call, whose gradient runs the traced custom gradient. Other backends and
    code already being traced call `_chunked_attention` directly.
    """
    global _TF_GRAPH_CHUNKED
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            if _TF_GRAPH_CHUNKED is None:
                _TF_GRAPH_CHUNKED = tf.function(
                    _chunked_attention, autograph=False
                )
            return _TF_GRAPH_CHUNKED(
                query, key, value, mask, causal, scale, num_groups, block_size
            )
    return _chunked_attention(
        query, key, value, mask, causal, scale, num_groups, block_size
    )


def _chunked_attention(
    query, key, value, mask, causal, scale, num_groups, block_size
):
    """Blockwise attention with a FlashAttention-style custom gradient.

    The forward pass walks the key blocks with an online softmax and keeps
    only the output and each query's log-sum-exp; the backward pass walks the
    key blocks again, recomputes the probabilities from the log-sum-exp and
    accumulates dQ (carried) and dK, dV (one slice per block). Nothing of
    size `Tq * Tk` outlives one block, in training as at inference.

    Internally queries are laid out as rows `(B, K, G * Tq, H)` (`G` query
    heads per key/value head), so every product is a plain batched matmul of
    a `(B, K, rows, ·)` tensor with one key/value block, grouped-query heads
    included, with no broadcast and no transpose inside the loops.
    """
    out_dtype = value.dtype
    batch, q_len, num_heads, width = ops.shape(query)
    k_len = ops.shape(key)[1]
    kv_heads = num_heads // num_groups
    value_width = value.shape[-1]
    block_size = _key_block_size(block_size, batch, num_heads, q_len, k_len)
    num_blocks = (k_len + block_size - 1) // block_size
    pad = num_blocks * block_size - k_len
    # Keys past the end (padding of the last block) need masking unless the
    # blocks are known to tile the keys exactly.
    needs_key_valid = not (isinstance(pad, int) and pad == 0)

    def to_blocks(x, transpose_last):
        # (B, Tk, K, W) -> (blocks, B, K, block, W) (or (.., W, block)),
        # zero-padded at the end.
        x = ops.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
        x = ops.reshape(
            x, (batch, num_blocks, block_size, x.shape[2], x.shape[3])
        )
        order = (1, 0, 3, 4, 2) if transpose_last else (1, 0, 3, 2, 4)
        return ops.transpose(x, order)

    def from_blocks(x):
        # (blocks, B, K, block, W) -> (B, Tk, K, W)
        x = ops.transpose(x, (1, 0, 3, 2, 4))
        x = ops.reshape(
            x, (batch, num_blocks * block_size, x.shape[3], x.shape[4])
        )
        return x[:, :k_len]

    def to_rows(x):
        # (B, Tq, N, W) -> (B, K, G * Tq, W)
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, (batch, kv_heads, num_groups * q_len, x.shape[-1]))

    def from_rows(x):
        # (B, K, G * Tq, W) -> (B, Tq, N, W)
        x = ops.reshape(x, (batch, num_heads, q_len, x.shape[-1]))
        return ops.transpose(x, (0, 2, 1, 3))

    # Per-key masks are cut into blocks too; masks broadcast over keys
    # (last dimension 1) apply to every block as they are.
    mask_blocks = None
    if mask is not None and mask.shape[-1] != 1:
        padded = ops.pad(
            # int32, not int8: TFLite's builtin Pad and Greater take no int8
            # outside quantized models.
            ops.cast(mask, "int32"), ((0, 0), (0, 0), (0, 0), (0, pad))
        )
        shape = ops.shape(padded)
        padded = ops.reshape(
            padded, (shape[0], shape[1], shape[2], num_blocks, block_size)
        )
        mask_blocks = ops.transpose(padded, (3, 0, 1, 2, 4)) > 0
    key_valid = ops.arange(num_blocks * block_size) < k_len
    query_positions = ops.arange(q_len)[:, None]

    def block_valid(j):
        """Boolean `(B|1, N|1, Tq|1, block)` mask of block `j`, or None."""
        valid = None
        key_positions = j * block_size + ops.arange(block_size)
        if needs_key_valid:
            valid = ops.take(key_valid, key_positions)[None, None, None, :]
        for part in (
            ops.take(mask_blocks, j, axis=0) if mask_blocks is not None else mask,
            (query_positions >= key_positions[None, :]) if causal else None,
        ):
            if part is not None:
                valid = part if valid is None else ops.logical_and(valid, part)
        return valid

    def scores(q_rows, key_block, j):
        """Masked float32 logits `(B, K, G * Tq, block)` of block `j`."""
        logits = ops.matmul(q_rows, key_block)
        valid = block_valid(j)
        if valid is None:
            return logits
        if num_groups == 1:  # rows are queries: the mask applies as it is
            return ops.where(valid, logits, MASKED_LOGIT)
        # Grouped-query heads: (B|1, N|1, ...) -> (B|1, K|1, G|1, ...) to
        # match the scores seen as (B, K, G, Tq, block).
        if len(valid.shape) < 4:  # causal only: (Tq, block) broadcasts
            pass
        elif valid.shape[1] != 1:
            valid_shape = ops.shape(valid)
            valid = ops.reshape(
                valid,
                (valid_shape[0], kv_heads, num_groups, valid_shape[2], valid_shape[3]),
            )
        else:
            valid = ops.expand_dims(valid, 1)
        logits = ops.reshape(
            logits, (batch, kv_heads, num_groups, q_len, block_size)
        )
        logits = ops.where(valid, logits, MASKED_LOGIT)
        return ops.reshape(
            logits, (batch, kv_heads, num_groups * q_len, block_size)
        )

    def sequential(j, value):
        # TensorFlow runs up to ten loop iterations at once when one does not
        # depend on the last, which would keep ten blocks of scores alive;
        # tying the counter to this block's result (adding zero) makes the
        # blocks run one after another.
        return j + 1 + ops.cast(ops.sum(value[..., :1, :1]) * 0.0, "int32")

    rows = num_groups * q_len

    def attend(q, k, v):
        q_rows = to_rows(q) * scale
        key_blocks = to_blocks(k, transpose_last=True)  # (n, B, K, H, block)
        value_blocks = to_blocks(v, transpose_last=False)  # (n, B, K, block, Hv)

        def step(j, state):
            running_max, denominator, accumulator = state
            logits = scores(q_rows, ops.take(key_blocks, j, axis=0), j)
            new_max = ops.maximum(
                running_max, ops.max(logits, axis=-1, keepdims=True)
            )
            # Shifting by at least _MIN_SHIFT keeps masked logits at
            # exp(-huge) == 0 even in rows with no valid key so far (whose
            # maximum is still MASKED_LOGIT), so no multiply by the mask is
            # needed.
            probs = ops.exp(logits - ops.maximum(new_max, _MIN_SHIFT))
            correction = ops.exp(running_max - new_max)
            denominator = correction * denominator + ops.sum(
                probs, axis=-1, keepdims=True
            )
            accumulator = correction * accumulator + ops.matmul(
                probs, ops.take(value_blocks, j, axis=0)
            )
            return sequential(j, denominator), (new_max, denominator, accumulator)

        state = (
            ops.full((batch, kv_heads, rows, 1), MASKED_LOGIT, "float32"),
            ops.zeros((batch, kv_heads, rows, 1), "float32"),
            ops.zeros((batch, kv_heads, rows, value_width), "float32"),
        )
        # A while loop with `maximum_iterations` rather than `fori_loop`: XLA
        # needs the bound (and JAX a static one).
        _, (running_max, denominator, accumulator) = ops.while_loop(
            lambda j, _: j < num_blocks, step, (0, state),
            maximum_iterations=num_blocks,
        )
        # A row with a key to attend to has a denominator >= 1 (its largest
        # logit contributes exp(0)); a fully masked row has 0 / 0, made
        # 0 / 1. A tiny floor would do the same in float32 but flush to 0 in
        # float16 exports.
        denominator = ops.maximum(denominator, 1.0)
        out_rows = accumulator / denominator
        # exp(logit - lse) is a row's probability; a row with no key gets
        # lse = _MIN_SHIFT, where masked logits still give exp(-huge) == 0.
        lse = ops.maximum(running_max, _MIN_SHIFT) + ops.log(denominator)

        def grad(*args, upstream=None, variables=None):
            # TensorFlow and JAX call grad(upstream); PyTorch calls
            # grad(*inputs, upstream=upstream).
            if upstream is None:
                upstream = args[0]
            d_out = to_rows(ops.cast(upstream, "float32"))
            # D_i = sum_j P_ij dP_ij = dO_i · O_i.
            delta = ops.sum(d_out * out_rows, axis=-1, keepdims=True)

            def back_step(j, state):
                d_q, d_keys, d_values = state
                key_block = ops.take(key_blocks, j, axis=0)  # (B, K, H, block)
                value_block = ops.take(value_blocks, j, axis=0)  # (B, K, block, Hv)
                probs = ops.exp(scores(q_rows, key_block, j) - lse)
                # Contractions over rows as einsums: they map to batched
                # matmuls with a transposed operand, never copying a
                # (rows, block) tensor into a transposed layout.
                d_probs = ops.einsum("bkrh,bksh->bkrs", d_out, value_block)
                d_logits = probs * (d_probs - delta)
                d_q = d_q + ops.einsum("bkrs,bkhs->bkrh", d_logits, key_block)
                d_key = ops.einsum("bkrs,bkrh->bksh", d_logits, q_rows)
                d_value = ops.einsum("bkrs,bkrh->bksh", probs, d_out)
                d_keys = ops.slice_update(d_keys, (j, 0, 0, 0, 0), d_key[None])
                d_values = ops.slice_update(d_values, (j, 0, 0, 0, 0), d_value[None])
                return sequential(j, d_q), (d_q, d_keys, d_values)

            state = (
                ops.zeros((batch, kv_heads, rows, width), "float32"),
                ops.zeros((num_blocks, batch, kv_heads, block_size, width), "float32"),
                ops.zeros(
                    (num_blocks, batch, kv_heads, block_size, value_width), "float32"
                ),
            )
            _, (d_q, d_keys, d_values) = ops.while_loop(
                lambda j, _: j < num_blocks, back_step, (0, state),
                maximum_iterations=num_blocks,
            )
            grads = (from_rows(d_q * scale), from_blocks(d_keys), from_blocks(d_values))
            if variables is not None:  # TensorFlow, if `attend` read any
                return grads, [None] * len(variables)
            return grads

        return from_rows(out_rows), grad

    output = ops.custom_gradient(attend)(
        ops.cast(query, "float32"), ops.cast(key, "float32"), ops.cast(value, "float32")
    )
    return ops.cast(output, out_dtype)


def _key_block_size(block_size, batch, num_heads, q_len, k_len):
    """The key block length: `block_size`, shortened so that one block's
    scores stay under _MAX_BLOCK_SCORE_ELEMENTS (for static B and Tq), and
    never longer than the keys."""
    if isinstance(batch, int) and isinstance(q_len, int):
        fitting = _MAX_BLOCK_SCORE_ELEMENTS // max(batch * num_heads * q_len, 1)
        block_size = min(block_size, max(fitting, _MIN_AUTO_BLOCK))
    # Keys shorter than a block make one block of their own length, so short
    # sequences are not padded out to `block_size`.
    if isinstance(k_len, int):
        return min(block_size, k_len)
    return ops.minimum(block_size, k_len)
