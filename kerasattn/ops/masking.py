"""Mask construction, merging and the masked softmax shared by every layer.

One convention everywhere: `True` (or 1) means "may attend".
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Sequence

import keras
from keras import ops

from kerasattn.ops.tracing import export_graph_enabled
from kerasattn.ops.tracing import flag_set

# Logits of masked positions are replaced by this value before the softmax.
# Softmax always runs in float32, so the value only has to be safe there; it
# matches the constant keras.ops.dot_product_attention uses, so unmasked rows
# agree with Keras bit for bit.
MASKED_LOGIT = -0.7 * 3.38953e38

_BOUNDED_MASKING = contextvars.ContextVar("kerasattn_bounded_masking", default=False)


def bounded_masking() -> contextlib.AbstractContextManager:
    """Traces masked softmaxes whose intermediates stay in the logits' range.

    Full-integer (int8) quantization calibrates one range per tensor; a
    tensor holding `MASKED_LOGIT` beside real logits gets a range so wide
    that every logit rounds to the same int8 value and attention turns
    uniform. Inside this context, layers traced (for example by
    `kerasattn.export` writing a SavedModel) compute the same weights, to
    float rounding, without that constant (`bounded_masked_softmax`: masked
    logits shifted below the row's minimum, zeroed after the softmax). It
    costs a few more passes over the logits than the default, so training
    and ordinary inference keep the default.
    """
    return flag_set(_BOUNDED_MASKING)


def bounded_masking_enabled() -> bool:
    return _BOUNDED_MASKING.get()


def bounded_masked_softmax(scores, mask, axis: int = -1):
    """`masked_softmax` on float32 `scores` whose every intermediate tensor
    lies within about twice the range of the logits (see `bounded_masking`).

    Masked logits are pushed below the row's minimum by the row's range
    plus 16, so that their share of the softmax is below e⁻¹⁶ of the largest
    valid one; multiplying by the mask then makes them exactly 0, and a row
    without a valid key (shifted uniformly, so uniform) all 0. One fused
    softmax, with no division or sum of its own: the integer kernels of a
    full-int8 graph run it (and its lookup-table `exp`) far faster.
    """
    mask = as_bool_mask(mask)
    row_min = ops.min(scores, axis=axis, keepdims=True)
    row_max = ops.max(scores, axis=axis, keepdims=True)
    keep = ops.cast(mask, "float32")
    weights = softmax(scores - (row_max - row_min + 16.0) * (1.0 - keep), axis=axis)
    return weights * keep


def _static_shape(x) -> tuple:
    return tuple(getattr(x, "shape", ()))


def as_bool_mask(mask):
    """Casts a mask of any dtype (bool, int, float) to bool; `None` passes."""
    if mask is None:
        return None
    if keras.backend.standardize_dtype(mask.dtype) == "bool":
        return mask
    return ops.greater(mask, ops.cast(0.5, mask.dtype))


def check_broadcastable(mask, target_shape: Sequence, name: str) -> None:
    """Raises `ValueError` if `mask` cannot broadcast to `target_shape`.

    Only static dimensions are checked; unknown dimensions (`None`) pass.

    Args:
        mask: the mask tensor (or `None`, which passes).
        target_shape: the shape the mask must broadcast to, for example
            `(batch, query_length, key_length)`.
        name: the argument name to put in the error message.
    """
    if mask is None:
        return
    mask_shape = _static_shape(mask)
    target_shape = tuple(target_shape)
    if len(mask_shape) > len(target_shape):
        raise ValueError(
            f"Expected `{name}` of rank <= {len(target_shape)} broadcastable "
            f"to shape {target_shape}, received: {name}.shape={mask_shape}"
        )
    for m, t in zip(reversed(mask_shape), reversed(target_shape)):
        if m is None or t is None or m == 1 or m == t:
            continue
        raise ValueError(
            f"Expected `{name}` broadcastable to shape {target_shape}, "
            f"received: {name}.shape={mask_shape}"
        )


def merge_masks(*masks):
    """Logical AND of the given masks, broadcasting; `None`s are skipped.

    Returns `None` when every mask is `None`.

    Example:

    >>> padding = np.array([[True, True, False]])
    >>> keras.ops.convert_to_numpy(merge_masks(padding, None, causal_mask(3, 3)))
    array([[ True, False, False],
           [ True,  True, False],
           [ True,  True, False]])
    """
    merged = None
    for mask in masks:
        if mask is None:
            continue
        mask = as_bool_mask(mask)
        merged = mask if merged is None else logical_and(merged, mask)
    return merged


def logical_and(a, b):
    """`ops.logical_and` of two boolean masks, broadcasting.

    In an exported float graph (`kerasattn.ops.tracing.export_graph`, but not
    full int8's `bounded_masking`) it multiplies 0/1 floats instead: LiteRT
    runs `LOGICAL_AND` in a reference kernel (about 10 µs for one 64 x 64
    mask), a float product in its XNNPACK delegate (well under 1 µs, the
    casts as little).
    """
    if not _float_export_graph():
        return ops.logical_and(a, b)
    return ops.cast(ops.cast(a, "float32") * ops.cast(b, "float32"), "bool")


def _float_export_graph() -> bool:
    """Whether masks may be computed in float32 for LiteRT's float kernels: in
    exported graphs, but not in full int8's (`bounded_masking`), whose
    converter would quantize float positions and masks to int8."""
    return export_graph_enabled() and not bounded_masking_enabled()


def causal_mask(query_length, key_length):
    """Lower-triangular `(query_length, key_length)` mask: query i sees key j <= i.

    Lengths may be Python ints or scalar tensors (dynamic lengths).
    """
    rows = ops.expand_dims(ops.arange(query_length, dtype="int32"), -1)
    cols = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)
    return ops.greater_equal(rows, cols)


def sliding_window_mask(query_length, key_length, window: int):
    """Band mask: query i sees key j when |i - j| < window."""
    rows = ops.expand_dims(ops.arange(query_length, dtype="int32"), -1)
    cols = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)
    return ops.less(ops.abs(rows - cols), window)


def sequence_positions(x, axis: int = 1):
    """int32 positions `0 .. T-1` along `axis` of `x`, shaped `(1, T)`.

    (`(0, T)` for an empty batch.) They are counted by a cumulative sum over
    ones shaped like `x` rather than by `arange(T)`: LiteRT gives `RANGE` (and
    a `SLICE` of computed size) an output shape known only when it runs,
    which keeps every later op out of its XNNPACK delegate — a Transformer
    block after such an op runs about twice as slowly.
    """
    axis = axis % len(x.shape)
    if axis == 0:
        raise ValueError("Expected a sequence axis after the batch axis, received: axis=0")
    index = tuple(
        slice(0, 1) if i == 0 else slice(None) if i == axis else 0 for i in range(len(x.shape))
    )
    return ops.cumsum(ops.ones_like(x[index], dtype="int32"), axis=1) - 1


def _position_grid(query, key, axis: int):
    # float32 positions (exact below 2^24) for LiteRT's float graphs: it runs
    # the (Tq, Tk) differences and comparisons of int32 ones in slow
    # broadcasting kernels (9 µs for 64 x 64), of float32 ones in XNNPACK.
    dtype = "float32" if _float_export_graph() else "int32"
    positions = ops.cast(sequence_positions(query, axis), dtype)
    rows = ops.expand_dims(positions, -1)  # (1, Tq, 1)
    if key is not query:  # self-attention counts once
        positions = ops.cast(sequence_positions(key, axis), dtype)
    cols = ops.expand_dims(positions, -2)  # (1, 1, Tk)
    return rows, cols


def causal_mask_between(query, key, axis: int = 1):
    """`(1, Tq, Tk)` causal mask of `query` and `key` along `axis`: query i sees
    key j <= i (`causal_mask` of their lengths, with static shapes in LiteRT)."""
    rows, cols = _position_grid(query, key, axis)
    return ops.greater_equal(rows, cols)


def sliding_window_mask_between(query, key, window: int, axis: int = 1):
    """`(1, Tq, Tk)` band mask of `query` and `key` along `axis`: query i sees
    key j when |i - j| < window (`sliding_window_mask`, static in LiteRT)."""
    rows, cols = _position_grid(query, key, axis)
    return ops.less(ops.abs(rows - cols), window)


def padding_attention_mask(query_mask=None, key_mask=None):
    """Turns `(B, Tq)` and `(B, Tk)` padding masks into a `(B, Tq, Tk)` mask.

    Either may be `None`; the result broadcasts (`(B, Tq, 1)` or `(B, 1, Tk)`)
    when only one is given and is `None` when both are.
    """
    query_mask = as_bool_mask(query_mask)
    key_mask = as_bool_mask(key_mask)
    return merge_masks(
        None if query_mask is None else ops.expand_dims(query_mask, -1),
        None if key_mask is None else ops.expand_dims(key_mask, -2),
    )


def merge_attention_masks(
    query_mask=None, value_mask=None, key_mask=None, attention_mask=None, structure=None
):
    """Merges an attention layer's mask arguments into one boolean mask.

    Args:
        query_mask: `(B, Tq)` padding mask of the queries.
        value_mask: `(B, Tk)` padding mask of the values.
        key_mask: `(B, Tk)` padding mask of the keys (ANDed with `value_mask`).
        attention_mask: explicit mask broadcastable to `(B, Tq, Tk)`.
        structure: a `(Tq, Tk)` mask from the layer's structure (causal,
            sliding window), or `None`.

    Returns:
        A boolean mask broadcastable to `(B, Tq, Tk)`, or `None` when every
        argument is `None`. A masked query gets a row with no key to attend to.
    """
    return merge_masks(
        padding_attention_mask(query_mask, merge_masks(value_mask, key_mask)),
        attention_mask,
        structure,
    )


def masking_bias(mask):
    """float32 0 where `mask` may attend, `MASKED_LOGIT` elsewhere, in the mask's
    own (broadcastable) shape: added to the logits, it masks them as a
    `where` over the logits would, to the same weights (`exp` of a masked
    logit is 0 either way), but the large tensor sees an addition, which
    LiteRT's XNNPACK delegate runs (its `SELECT_V2` it does not) and which
    broadcasts a `(B, 1, 1, T)` padding mask over heads and queries for free.
    """
    return ops.where(as_bool_mask(mask), 0.0, MASKED_LOGIT)


def softmax(x, axis: int = -1):
    """`keras.ops.softmax`, without its warning for an axis of length 1: a
    one-token sequence (or a single key) is valid input to attention."""
    if x.shape[axis] != 1:  # Keras warns only about a static length of 1
        return ops.softmax(x, axis=axis)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using a softmax over axis", UserWarning)
        return ops.softmax(x, axis=axis)


def masked_softmax(scores, mask=None, axis: int = -1):
    """Softmax over `axis` that ignores masked positions, computed in float32.

    Masked positions get weight exactly 0. A slice along `axis` whose
    positions are all masked gets all-zero weights (not a uniform
    distribution, and never NaN), in every dtype: the logits are cast to
    float32 first, so the masking constant cannot overflow float16/bfloat16.

    Args:
        scores: logits of any float dtype.
        mask: optional boolean (or 0/1) mask broadcastable to `scores`;
            `True` means "may attend".
        axis: the axis to normalise over.

    Returns:
        float32 weights of the shape of `scores`.

    Example:

    >>> scores = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    >>> mask = np.array([[True, True, False], [False, False, False]])
    >>> np.round(keras.ops.convert_to_numpy(masked_softmax(scores, mask)), 4)
    array([[0.2689, 0.7311, 0.    ],
           [0.    , 0.    , 0.    ]], dtype=float32)
    """
    scores = ops.cast(scores, "float32")
    if mask is None:
        return softmax(scores, axis=axis)
    if bounded_masking_enabled():
        return bounded_masked_softmax(scores, mask, axis)
    mask = as_bool_mask(mask)
    weights = softmax(scores + masking_bias(mask), axis=axis)
    # A fully masked slice has a uniform softmax; multiplying by the mask
    # turns it into zeros (and leaves partially masked slices unchanged,
    # their masked weights being exp(-huge) == 0 already).
    return weights * ops.cast(mask, "float32")
