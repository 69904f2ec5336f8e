"""Multi-head scaled dot-product attention: the dense and the chunked path.

Shapes use `B` batch, `Tq`/`Tk` query/key length, `N` query heads, `K`
key/value heads (`N % K == 0`; `K < N` is grouped-query attention), `H` head
width and `Hv` value head width.
"""

from __future__ import annotations

from typing import Callable, Optional

from keras import ops

from kerasattn.ops.masking import MASKED_LOGIT
from kerasattn.ops.masking import as_bool_mask
from kerasattn.ops.masking import bounded_masked_softmax
from kerasattn.ops.masking import bounded_masking_enabled
from kerasattn.ops.masking import causal_mask as make_causal_mask

IMPLEMENTATIONS = ("auto", "dense", "chunked")

# At inference "auto" switches to the chunked path from this (static) key
# length on, where the (B, N, Tq, Tk) score tensor starts to dominate memory.
AUTO_CHUNKED_MIN_KEY_LENGTH = 2048
DEFAULT_BLOCK_SIZE = 512
# Real logits lie far above this and masked ones (MASKED_LOGIT) far below,
# also in float16 TFLite exports, which store constants in float16: there
# MASKED_LOGIT becomes -65504, still more than 104 (exp underflow) below.
_MIN_SHIFT = -3e4


def _logits(query, key, num_groups: int):
    """float32 `(B, N, Tq, Tk)` logits of already-scaled float32 inputs."""
    if num_groups == 1:
        return ops.einsum("btnh,bsnh->bnts", query, key)
    batch, q_len, num_heads, width = ops.shape(query)
    grouped = ops.reshape(
        query, (batch, q_len, num_heads // num_groups, num_groups, width)
    )
    logits = ops.einsum("btkgh,bskh->bkgts", grouped, key)
    return ops.reshape(logits, (batch, num_heads, q_len, ops.shape(key)[1]))


def _combine(weights, value, num_groups: int, equation_out: str):
    """Weighted sum of values; `equation_out` is "btnh" or "bnth"."""
    if num_groups == 1:
        return ops.einsum(f"bnts,bsnh->{equation_out}", weights, value)
    batch, num_heads, q_len, k_len = ops.shape(weights)
    kv_heads = num_heads // num_groups
    grouped = ops.reshape(
        weights, (batch, kv_heads, num_groups, q_len, k_len)
    )
    if equation_out == "btnh":
        out = ops.einsum("bkgts,bskh->btkgh", grouped, value)
        return ops.reshape(out, (batch, q_len, num_heads, -1))
    out = ops.einsum("bkgts,bskh->bkgth", grouped, value)
    return ops.reshape(out, (batch, num_heads, q_len, -1))


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
    scale: Optional[float] = None,
    dropout: Optional[Callable] = None,
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
            softmax so the forward pass's memory grows with
            `Tq * block_size` (its gradient keeps every block, so training
            saves no memory); "auto" picks chunked at inference for long
            static key lengths when neither weights nor dropout are needed.
        block_size: key block length of the chunked path.
        training: whether gradients will be taken ("auto" then stays dense).

    Returns:
        `(B, Tq, N, Hv)` output in the value dtype, and with
        `return_weights=True` also the weights in the value dtype.
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
        key_length = key.shape[1]
        long_keys = (
            key_length is not None
            and key_length >= AUTO_CHUNKED_MIN_KEY_LENGTH
        )
        use_chunked = (
            long_keys and not training and not return_weights and dropout is None
        )
        implementation = "chunked" if use_chunked else "dense"
    if implementation == "chunked":
        if return_weights or dropout is not None:
            raise ValueError(
                "The chunked implementation never materialises attention "
                "weights, so it supports neither `return_attention_scores` "
                "nor attention dropout; received: "
                f"return_weights={return_weights}, dropout={dropout}"
            )
        return _chunked_attention(
            query, key, value, mask, causal, scale, num_groups, block_size
        )
    return _dense_attention(
        query, key, value, mask, causal, scale, num_groups, dropout,
        return_weights,
    )


def _dense_attention(
    query, key, value, mask, causal, scale, num_groups, dropout, return_weights
):
    out_dtype = value.dtype
    q = ops.cast(query, "float32") * scale
    logits = _logits(q, ops.cast(key, "float32"), num_groups)
    if causal:
        causal = make_causal_mask(ops.shape(query)[1], ops.shape(key)[1])
        mask = (
            causal[None, None]
            if mask is None
            else ops.logical_and(mask, causal)
        )
    if mask is not None and bounded_masking_enabled():
        # Already zero for masked keys and for rows with no key: nothing is
        # left for the mask to fix below.
        weights = bounded_masked_softmax(logits, mask)
        mask = None
    else:
        if mask is not None:
            logits = ops.where(mask, logits, MASKED_LOGIT)
        weights = ops.softmax(logits, axis=-1)
    applied = weights if dropout is None else dropout(weights)
    output = _combine(ops.cast(applied, out_dtype), value, num_groups, "btnh")
    if mask is not None:
        # Rows whose keys are all masked got a uniform softmax: zero them on
        # the (small) output rather than on the (large) weights.
        # Cast before reshaping: TFLite's builtin slicing rejects bool tensors.
        row_has_key = ops.cast(ops.any(mask, axis=-1), out_dtype)  # (B|1, N|1, Tq|1)
        row_has_key = ops.expand_dims(ops.transpose(row_has_key, (0, 2, 1)), -1)
        output = output * row_has_key
        if return_weights:
            weights = weights * ops.cast(mask, weights.dtype)
    if return_weights:
        return output, ops.cast(weights, out_dtype)
    return output


def _chunked_attention(
    query, key, value, mask, causal, scale, num_groups, block_size
):
    out_dtype = value.dtype
    batch, q_len, num_heads, _ = ops.shape(query)
    k_len = ops.shape(key)[1]
    # Keys shorter than a block make one block of their own length, so short
    # sequences are not padded out to `block_size`.
    if isinstance(k_len, int):
        block_size = min(block_size, k_len)
    else:
        block_size = ops.minimum(block_size, k_len)
    value_width = value.shape[-1]
    num_blocks = (k_len + block_size - 1) // block_size
    pad = num_blocks * block_size - k_len

    def to_blocks(x):
        # (B, Tk, K, W) -> (blocks, B, block, K, W), zero-padded at the end.
        x = ops.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
        x = ops.reshape(
            x, (batch, num_blocks, block_size, x.shape[2], x.shape[3])
        )
        return ops.transpose(x, (1, 0, 2, 3, 4))

    key_blocks = to_blocks(ops.cast(key, "float32"))
    value_blocks = to_blocks(ops.cast(value, "float32"))
    # Per-key masks are cut into blocks too; masks broadcast over keys
    # (last dimension 1) apply to every block as they are.
    key_valid = ops.arange(num_blocks * block_size) < k_len
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
    q = ops.cast(query, "float32") * scale
    query_positions = ops.arange(q_len)[:, None]

    def body(j, state):
        running_max, denominator, accumulator = state
        key_positions = j * block_size + ops.arange(block_size)
        valid = ops.take(key_valid, key_positions)[None, None, None, :]
        if mask_blocks is not None:
            valid = ops.logical_and(valid, ops.take(mask_blocks, j, axis=0))
        elif mask is not None:
            valid = ops.logical_and(valid, mask)
        if causal:
            valid = ops.logical_and(
                valid, query_positions >= key_positions[None, :]
            )
        logits = _logits(q, ops.take(key_blocks, j, axis=0), num_groups)
        logits = ops.where(valid, logits, MASKED_LOGIT)
        new_max = ops.maximum(
            running_max, ops.max(logits, axis=-1, keepdims=True)
        )
        # Shifting by at least _MIN_SHIFT keeps masked logits at exp(-huge)
        # == 0 even in rows with no valid key so far (whose maximum is still
        # MASKED_LOGIT), so no multiply by the mask is needed.
        probs = ops.exp(logits - ops.maximum(new_max, _MIN_SHIFT))
        correction = ops.exp(running_max - new_max)
        denominator = correction * denominator + ops.sum(
            probs, axis=-1, keepdims=True
        )
        accumulator = correction * accumulator + _combine(
            probs, ops.take(value_blocks, j, axis=0), num_groups, "bnth"
        )
        return new_max, denominator, accumulator

    state = (
        ops.full((batch, num_heads, q_len, 1), MASKED_LOGIT, "float32"),
        ops.zeros((batch, num_heads, q_len, 1), "float32"),
        ops.zeros((batch, num_heads, q_len, value_width), "float32"),
    )

    def step(j, state):
        state = body(j, state)
        # TensorFlow runs up to ten loop iterations at once when one does not
        # depend on the last, which would keep ten blocks of scores alive;
        # tying the counter to this block's result (adding zero) makes the
        # blocks run one after another.
        return j + 1 + ops.cast(ops.sum(state[1]) * 0.0, "int32"), state

    # A while loop with `maximum_iterations` rather than `fori_loop`: XLA
    # needs the bound to compile the loop's gradient.
    _, (_, denominator, accumulator) = ops.while_loop(
        lambda j, _: j < num_blocks, step, (0, state), maximum_iterations=num_blocks
    )
    # A row with a key to attend to has a denominator >= 1 (its largest logit
    # contributes exp(0)); a fully masked row has 0 / 0, made 0 / 1. A tiny
    # floor would do the same in float32 but flush to 0 in float16 exports.
    output = accumulator / ops.maximum(denominator, 1.0)
    return ops.cast(ops.transpose(output, (0, 2, 1, 3)), out_dtype)
