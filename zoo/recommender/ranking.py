"""Ranking evaluation for next-item recommendation, in NumPy.

Two protocols, on every user given (no sampling of users):

- sampled (SASRec's): the held-out item is ranked against `num_negatives`
  items (100 in SASRec) that the user never interacted with, drawn
  uniformly without replacement (`sampled_negatives`);
- full: the held-out item is ranked against the whole catalogue, less the
  user's earlier items (the held-out item itself always stays ranked).

A target's rank is the number of ranked candidates scoring above it; HR@k
is the share of users with rank < k, and NDCG@k the mean over all users of
`1 / log2(rank + 2)` for those and 0 for the rest (one relevant item, so
the ideal DCG is 1).

Ties: `ties="pessimistic"` (the default) counts a candidate scoring exactly
the target's score as above it, so a model that scores everything alike
ranks its targets last rather than first. `ties="optimistic"` counts only
candidates scoring strictly higher: what SASRec's
`rank = (-predictions).argsort().argsort()[0]` gives when the sort keeps the
target (listed first) ahead of equal scores. With real-valued scores the
two agree except on exact ties.

A NaN among a user's ranked scores, or as the target's score, counts as a
miss: the rank is then the number of score columns, past every real rank.

```python
interactions = read_interactions("../shared/data/sasrec/Video.txt")
split, num_items = leave_one_out(interactions), interactions.num_items
# Negatives avoid everything the user touched, the held-out items included.
negatives = sampled_negatives(split.test_history, split.test_target, num_items, seed=0)
results = evaluate_ranking(
    score_fn, pad_histories(split.test_history, 50), split.test_target,
    split.test_history, num_items, negatives)
results["sampled"]["ndcg@10"], results["full"]["hr@10"]
```
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from kerasattn.data.interactions import pad_histories

__all__ = [
    "TIES",
    "evaluate_ranking",
    "pad_histories",
    "rank_metrics",
    "sampled_negatives",
    "target_ranks",
]

TIES = ("pessimistic", "optimistic")

# Rounds of redrawing rejected negatives before drawing a row exactly.
_REDRAW_ROUNDS = 64


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer, received: {name}={value!r}")
    return int(value)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"Expected `ties` to be one of {TIES}, received: ties={ties!r}")


def _flatten(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`(lengths, concatenation)` of 1-D integer arrays, as int64."""
    lengths = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    if not lengths.sum():
        return lengths, np.zeros(0, dtype=np.int64)
    return lengths, np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in arrays])


def _check_items(name: str, items: np.ndarray, low: int, num_items: int) -> None:
    if items.size and (items.min() < low or items.max() > num_items):
        raise ValueError(
            f"Expected `{name}` to hold item ids from {low} to num_items={num_items}, "
            f"received: ids from {items.min()} to {items.max()}"
        )


def _rejected(
    candidates: np.ndarray, users: np.ndarray, seen: np.ndarray, stride: int
) -> np.ndarray:
    """The draws to redo: items the row's user has seen (`seen`, sorted keys
    `user * stride + item`), and any repeat of an earlier draw in the row."""
    keys = users[:, None] * stride + candidates
    rejected = np.zeros(candidates.shape, dtype=bool)
    if seen.size:
        rejected = seen[np.minimum(np.searchsorted(seen, keys), seen.size - 1)] == keys
    # Few rows hold a repeat: find them by sorting, then place the repeats.
    ordered = np.sort(candidates, axis=1)
    repeating = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if repeating.size:
        order = np.argsort(candidates[repeating], axis=1, kind="stable")
        ordered = np.take_along_axis(candidates[repeating], order, axis=1)
        later = np.zeros((repeating.size, candidates.shape[1]), dtype=bool)
        np.put_along_axis(later, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
        rejected[repeating] |= later
    return rejected


def sampled_negatives(
    histories: Sequence[np.ndarray],
    targets: np.ndarray | None,
    num_items: int,
    num_negatives: int = 100,
    seed: int | None = None,
) -> np.ndarray:
    """Draws, per user, items that the user never interacted with.

    Each row is a uniform draw without replacement from the user's unseen
    items, by bulk rejection sampling: every draw that is a seen item or a
    repeat within its row is drawn again, until none is (the rule treats
    all unseen items alike, so every set of them is equally likely). Users
    still rejected after 64 rounds (who have seen most of the catalogue)
    get an exact draw from their unseen items.

    Args:
        histories: one 1-D array of item ids per user (padding 0 is
            ignored).
        targets: optional int array `(U,)` or `(U, T)`, items also seen (the
            held-out ones), or `None`. Pass everything the user interacted
            with between the two, e.g. `split.test_history` and
            `split.test_target`, so that no negative is an item of theirs.
        num_items: the catalogue size; items are 1..num_items.
        num_negatives: positive integer, negatives per user. Defaults to 100.
        seed: optional integer for NumPy's `default_rng`.

    Returns:
        int32 `(U, num_negatives)`.

    Raises:
        ValueError: for ids outside 0..num_items (targets 1..num_items), or a
            user with fewer than `num_negatives` unseen items.
    """
    num_items = _positive_int("num_items", num_items)
    num_negatives = _positive_int("num_negatives", num_negatives)
    num_users = len(histories)
    lengths, items = _flatten(histories)
    _check_items("histories", items, 0, num_items)
    users = np.repeat(np.arange(num_users), lengths)
    if targets is not None:
        targets = np.asarray(targets, dtype=np.int64).reshape(num_users, -1)
        _check_items("targets", targets, 1, num_items)
        users = np.concatenate([users, np.repeat(np.arange(num_users), targets.shape[1])])
        items = np.concatenate([items, targets.ravel()])
    stride = num_items + 1
    # One sorted key per (user, item) seen, looked up with searchsorted.
    seen = np.sort(users * stride + items)
    seen = seen[np.concatenate([[True], seen[1:] != seen[:-1]])]
    seen_counts = np.bincount(seen // stride, weights=seen % stride != 0, minlength=num_users)
    unseen_counts = num_items - seen_counts.astype(np.int64)
    if (unseen_counts < num_negatives).any():
        user = int(np.argmax(unseen_counts < num_negatives))
        raise ValueError(
            f"Expected every user to have at least num_negatives={num_negatives} unseen items, "
            f"received: user {user} has {unseen_counts[user]}"
        )
    rng = np.random.default_rng(seed)
    negatives = rng.integers(1, num_items + 1, size=(num_users, num_negatives))
    rows = np.arange(num_users)
    rejected = _rejected(negatives, rows, seen, stride)
    for _ in range(_REDRAW_ROUNDS):
        again = rejected.any(axis=1)
        rows, rejected = rows[again], rejected[again]
        if not rows.size:
            break
        block = negatives[rows]
        block[rejected] = rng.integers(1, num_items + 1, size=np.count_nonzero(rejected))
        negatives[rows] = block
        rejected = _rejected(block, rows, seen, stride)
    else:  # users who have seen most of the catalogue: draw exactly
        for user in rows[rejected.any(axis=1)]:
            low, high = np.searchsorted(seen, [user * stride, (user + 1) * stride])
            allowed = np.setdiff1d(np.arange(1, num_items + 1), seen[low:high] - user * stride)
            negatives[user] = rng.choice(allowed, num_negatives, replace=False)
    return negatives.astype(np.int32)


def _ranks(
    scores: np.ndarray, targets: np.ndarray, excluded: tuple[np.ndarray, np.ndarray] | None,
    ties: str,
) -> np.ndarray:
    """The targets' ranks in `scores` (B, C), read only. `excluded` holds
    distinct (row, column) pairs, none of them a target's."""
    rows = np.arange(len(scores))
    target_scores = scores[rows, targets]
    above = np.greater_equal if ties == "pessimistic" else np.greater
    # Count over the whole row, then take back the excluded columns: cheaper
    # than copying the scores to blank those out.
    ranks = np.count_nonzero(above(scores, target_scores[:, None]), axis=1)
    if ties == "pessimistic":
        ranks -= 1  # the target ties itself
    nan_excluded = np.zeros(len(scores))
    if excluded is not None and excluded[0].size:
        excluded_rows, excluded_columns = excluded
        excluded_scores = scores[excluded_rows, excluded_columns]
        weights = above(excluded_scores, target_scores[excluded_rows])
        ranks -= np.bincount(excluded_rows, weights, len(scores)).astype(ranks.dtype)
        nan_excluded = np.bincount(excluded_rows, np.isnan(excluded_scores), len(scores))
    # A row sum is NaN if the row holds a NaN (or both infinities): look closer.
    broken = np.isnan(scores.sum(axis=1))
    if broken.any():
        broken[broken] = np.isnan(scores[broken]).sum(axis=1) > nan_excluded[broken]
    broken |= np.isnan(target_scores)
    return np.where(broken, scores.shape[1], ranks)


def _as_float(scores) -> np.ndarray:
    scores = np.asarray(scores)
    return scores.astype(np.promote_types(scores.dtype, np.float32), copy=False)


def target_ranks(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: np.ndarray | None = None,
    ties: str = "pessimistic",
) -> np.ndarray:
    """Each row's target rank among the row's other, non-excluded columns.

    Args:
        scores: float `(B, C)`, the candidates' scores.
        targets: int `(B,)`, the column of each row's target.
        exclude: optional bool `(B, C)`, True for columns not ranked; the
            target's column is ranked whatever it says.
        ties: `"pessimistic"` or `"optimistic"` (see the module's doc).
            Defaults to `"pessimistic"`.

    Returns:
        int64 `(B,)`: 0-based ranks, the number of ranked columns scoring
        above the target (or tying it, if pessimistic).
    """
    _check_ties(ties)
    scores = _as_float(scores)
    if scores.ndim != 2:
        raise ValueError(f"Expected `scores` of shape (B, C), received: {scores.shape}")
    targets = np.asarray(targets, dtype=np.int64).reshape(len(scores))
    excluded = None
    if exclude is not None:
        exclude = np.array(np.broadcast_to(exclude, scores.shape), dtype=bool)
        exclude[np.arange(len(scores)), targets] = False
        excluded = np.nonzero(exclude)
    return _ranks(scores, targets, excluded, ties)


def _metrics(ranks: np.ndarray, k: int) -> dict[str, float]:
    hits = ranks < k
    gains = np.where(hits, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
    return {f"hr@{k}": float(hits.mean()), f"ndcg@{k}": float(gains.mean())}


def rank_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: np.ndarray | None = None,
    k: int = 10,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """HR@k and NDCG@k of each row's target among the row's other columns.

    Args:
        scores: float `(B, C)`: for the sampled protocol the target and its
            negatives, for the full one the whole catalogue.
        targets: int `(B,)`, the column of each row's target (0 when the
            target is listed first; its item id for a catalogue row).
        exclude: optional bool `(B, C)`, True for columns not ranked (the
            user's earlier items, the padding column 0); the target's
            column is ranked whatever it says.
        k: positive integer, the cut-off. Defaults to 10.
        ties: `"pessimistic"` or `"optimistic"` (see the module's doc).
            Defaults to `"pessimistic"`.

    Returns:
        `{"hr@k": float, "ndcg@k": float}`, means over the rows.
    """
    k = _positive_int("k", k)
    return _metrics(target_ranks(scores, targets, exclude, ties), k)


def evaluate_ranking(
    score_fn: Callable[[np.ndarray], np.ndarray],
    histories: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
    num_items: int,
    negatives: np.ndarray | None = None,
    batch_size: int = 1024,
    k: int = 10,
    ties: str = "pessimistic",
) -> dict:
    """Scores every user once and ranks their held-out item under both protocols.

    Args:
        score_fn: maps int32 `(B, L)` left-padded histories to scores
            `(B, num_items + 1)` over the catalogue (a NumPy array or a
            tensor); column 0, the padding, is never ranked.
        histories: int `(U, L)`, the model's inputs, e.g.
            `pad_histories(split.test_history, max_length)`.
        targets: int `(U,)`, the held-out items, 1..num_items.
        exclude: one array per user of the items to leave out of the full
            ranking (all earlier items, not only the last L, e.g.
            `split.test_history`); the target stays ranked even if it is
            among them. `None` takes the items in `histories`.
        num_items: the catalogue size.
        negatives: optional int `(U, K)` from `sampled_negatives`; without
            it the sampled protocol is skipped.
        batch_size: positive integer, users per `score_fn` call. Defaults
            to 1024.
        k: positive integer, the cut-off. Defaults to 10.
        ties: `"pessimistic"` or `"optimistic"` (see the module's doc).
            Defaults to `"pessimistic"`.

    Returns:
        `{"sampled": {"hr@k", "ndcg@k"}, "full": {"hr@k", "ndcg@k"},
        "users": U}` (no `"sampled"` without `negatives`).

    Raises:
        ValueError: for inputs of the wrong shapes or ids out of range.
    """
    num_items = _positive_int("num_items", num_items)
    batch_size = _positive_int("batch_size", batch_size)
    k = _positive_int("k", k)
    _check_ties(ties)
    histories = np.asarray(histories)
    if histories.ndim != 2 or not np.issubdtype(histories.dtype, np.integer):
        raise ValueError(
            f"Expected `histories` to be an integer array (U, L), received: {histories.dtype} "
            f"{histories.shape}"
        )
    num_users = len(histories)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (num_users,):
        raise ValueError(f"Expected `targets` of shape ({num_users},), received: {targets.shape}")
    _check_items("targets", targets, 1, num_items)
    _check_items("histories", histories, 0, num_items)
    if exclude is None:
        exclude = histories
    if len(exclude) != num_users:
        raise ValueError(f"Expected `exclude` for {num_users} users, received: {len(exclude)}")
    exclude_lengths, exclude_items = _flatten(exclude)
    _check_items("exclude", exclude_items, 0, num_items)
    # Distinct (user, item) pairs to leave out, sorted by user: the padding
    # column 0 of every user plus their excluded items, less their target.
    stride = num_items + 1
    users = np.arange(num_users)
    keys = np.concatenate([np.repeat(users, exclude_lengths) * stride + exclude_items,
                           users * stride])
    keys = np.unique(keys)
    keys = keys[keys != keys // stride * stride + targets[keys // stride]]
    key_offsets = np.searchsorted(keys, np.arange(num_users + 1) * stride)
    if negatives is not None:
        negatives = np.asarray(negatives, dtype=np.int64)
        if negatives.ndim != 2 or len(negatives) != num_users:
            raise ValueError(
                f"Expected `negatives` of shape ({num_users}, K), received: {negatives.shape}"
            )
        _check_items("negatives", negatives, 1, num_items)

    full_ranks = np.empty(num_users, dtype=np.int64)
    sampled_ranks = np.empty(num_users, dtype=np.int64)
    for start in range(0, num_users, batch_size):
        stop = min(start + batch_size, num_users)
        scores = _as_float(score_fn(histories[start:stop].astype(np.int32)))
        if scores.shape != (stop - start, num_items + 1):
            raise ValueError(
                f"Expected `score_fn` to return scores of shape ({stop - start}, "
                f"{num_items + 1}), received: {scores.shape}"
            )
        batch_targets = targets[start:stop]
        if negatives is not None:
            candidates = np.concatenate(
                [scores[np.arange(stop - start), batch_targets][:, None],
                 np.take_along_axis(scores, negatives[start:stop], axis=1)],
                axis=1,
            )
            sampled_ranks[start:stop] = _ranks(
                candidates, np.zeros_like(batch_targets), None, ties
            )
        batch_keys = keys[key_offsets[start]:key_offsets[stop]]
        excluded = (batch_keys // stride - start, batch_keys % stride)
        full_ranks[start:stop] = _ranks(scores, batch_targets, excluded, ties)

    results = {"full": _metrics(full_ranks, k), "users": num_users}
    if negatives is not None:
        results = {"sampled": _metrics(sampled_ranks, k), **results}
    return results
