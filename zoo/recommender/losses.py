"""Next-item training losses on `keras.ops`, for any backend.

Each takes the sequence model's output at every position, `user_states`
`(B, L, d)`, and the item embedding table `item_embeddings` `(N + 1, d)`
(row 0 the padding); an item's logit is the dot product of the two. Each
averages over the real positions, `mask` (by default `positives != 0`); the
logits are cast to float32 before the loss, whatever the inputs' dtype.

- `bce_one_negative_loss`: SASRec's binary cross-entropy, the positive
  against one sampled negative per position;
- `sampled_softmax_loss`: softmax cross-entropy over the positive and K
  sampled negatives, with the logQ correction for the sampling
  distribution (Yi et al., 2019), as gSASRec compares;
- `full_softmax_loss`: softmax cross-entropy over the whole catalogue
  (items 1..N; the padding is never a class).
"""

from __future__ import annotations

import keras
from keras import ops

# The logit of a negative that is the positive itself: out of the softmax.
_REMOVED_LOGIT = -1e9


def _masked_mean(losses, positives, mask):
    if mask is None:
        mask = ops.not_equal(positives, 0)
    mask = ops.cast(mask, "bool")
    total = ops.sum(ops.where(mask, losses, ops.zeros_like(losses)))
    count = ops.sum(ops.cast(mask, "float32"))
    return total / ops.maximum(count, 1.0)


def _logits(user_states, item_embeddings, items):
    """`user_states` (B, L, d) against the embeddings of `items` (B, L)."""
    embedded = ops.take(item_embeddings, ops.cast(items, "int32"), axis=0)
    return ops.cast(ops.sum(user_states * embedded, axis=-1), "float32")


def bce_one_negative_loss(user_states, item_embeddings, positives, negatives, mask=None):
    """SASRec's loss: -log σ(positive logit) - log(1 - σ(negative logit)), per position.

    Args:
        user_states: `(B, L, d)`, the model's output at each position.
        item_embeddings: `(N + 1, d)`, the item embedding table.
        positives: int `(B, L)`, the next item at each position (0 padding).
        negatives: int `(B, L)`, one sampled item per position.
        mask: optional bool `(B, L)`, the positions to average over.
            Defaults to `positives != 0`.

    Returns:
        A float32 scalar: the mean over the masked positions (0 if none).
    """
    positive_logits = _logits(user_states, item_embeddings, positives)
    negative_logits = _logits(user_states, item_embeddings, negatives)
    # softplus(-x) = -log σ(x), softplus(x) = -log(1 - σ(x)), without overflow.
    losses = keras.activations.softplus(-positive_logits) + keras.activations.softplus(
        negative_logits
    )
    return _masked_mean(losses, positives, mask)


def sampled_softmax_loss(
    user_states,
    item_embeddings,
    positives,
    negatives,
    log_q=None,
    mask=None,
    remove_accidental_hits: bool = True,
):
    """Softmax cross-entropy of the positive against K sampled negatives.

    With `log_q`, every logit (the positive's too) has its item's log
    sampling probability subtracted, so the sampled softmax estimates the
    full one without favouring the often-sampled items (logQ correction).

    Args:
        user_states: `(B, L, d)`, the model's output at each position.
        item_embeddings: `(N + 1, d)`, the item embedding table.
        positives: int `(B, L)`, the next item at each position (0 padding).
        negatives: int `(B, L, K)`, negatives per position, or `(K,)`,
            shared by every position (far cheaper: one `(B, L, K)` product
            instead of a gather of `(B, L, K, d)` embeddings).
        log_q: optional float `(N + 1,)`, each item's log probability of
            being sampled as a negative; `None` for no correction (the
            right thing for uniform sampling, where it is a constant).
        mask: optional bool `(B, L)`, the positions to average over.
            Defaults to `positives != 0`.
        remove_accidental_hits: leave out of the softmax a negative that is
            the position's positive. Defaults to `True`.

    Returns:
        A float32 scalar: the mean over the masked positions (0 if none).
    """
    negatives = ops.cast(negatives, "int32")
    positive_logits = _logits(user_states, item_embeddings, positives)
    negative_embeddings = ops.take(item_embeddings, negatives, axis=0)
    # Shared (K,) negatives broadcast against (B, L, 1) below.
    if len(negatives.shape) == 1:
        negative_logits = ops.einsum("bld,kd->blk", user_states, negative_embeddings)
    else:
        negative_logits = ops.einsum("bld,blkd->blk", user_states, negative_embeddings)
    negative_logits = ops.cast(negative_logits, "float32")
    if log_q is not None:
        log_q = ops.cast(log_q, "float32")
        positive_logits = positive_logits - ops.take(log_q, ops.cast(positives, "int32"))
        negative_logits = negative_logits - ops.take(log_q, negatives)
    if remove_accidental_hits:
        hits = ops.equal(negatives, ops.expand_dims(ops.cast(positives, "int32"), -1))
        negative_logits = ops.where(hits, _REMOVED_LOGIT, negative_logits)
    logits = ops.concatenate([ops.expand_dims(positive_logits, -1), negative_logits], axis=-1)
    losses = ops.logsumexp(logits, axis=-1) - positive_logits
    return _masked_mean(losses, positives, mask)


def full_softmax_loss(user_states, item_embeddings, positives, mask=None):
    """Softmax cross-entropy of the next item over the whole catalogue, items 1..N.

    Args:
        user_states: `(B, L, d)`, the model's output at each position.
        item_embeddings: `(N + 1, d)`, the item embedding table (row 0,
            the padding, is not a class).
        positives: int `(B, L)`, the next item at each position (0 padding).
        mask: optional bool `(B, L)`, the positions to average over.
            Defaults to `positives != 0`.

    Returns:
        A float32 scalar: the mean over the masked positions (0 if none).
    """
    item_embeddings = ops.convert_to_tensor(item_embeddings)
    logits = ops.cast(ops.matmul(user_states, ops.transpose(item_embeddings[1:])), "float32")
    # Items 1..N are classes 0..N-1; padding positions get class 0 and are masked.
    classes = ops.maximum(ops.cast(positives, "int32") - 1, 0)
    losses = ops.sparse_categorical_crossentropy(classes, logits, from_logits=True)
    return _masked_mean(losses, positives, mask)
