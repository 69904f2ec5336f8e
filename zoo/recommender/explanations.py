"""Explaining the retriever's recommendations, and measuring the explanations.

The explained output is one item's score after a history (the last user
state · the item's embedding); `ItemScores` exposes every item's score as a
`(B, N + 1)` output, so `kerasattn.explain`'s class targets pick the item.
`explain_history` scores each history item for the top recommendation;
`measure` removes each user's `k` highest-scored history items (or keeps
only them), and `k` random ones, and reports the held-out item's score and
rank change.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
import numpy as np

from kerasattn import explain
from kerasattn.explain import faithfulness
from zoo.explanations import check_methods
from zoo.explanations import random_ratio
from zoo.explanations import removal_summary
from zoo.explanations import sanity_fields
from zoo.recommender.recipe import EXPLAIN_METHODS
from zoo.recommender.recipe import TOP_K

# `zoo faithfulness` measures every method but random (its baseline row).
MEASURED_METHODS = tuple(m for m in EXPLAIN_METHODS if m != "random")
# Integrated Gradients' path points (from zero item embeddings: the
# positions alone).
IG_STEPS = 32
# Users per explanation batch.
BATCH_SIZE = 128


class ItemScores(keras.Model):
    """A `NextItemRetriever` as a scorer: every item's score after each history.

    Args:
        retriever: the `NextItemRetriever`.

    Inputs: `{"item_ids": int32 (B, T)}`, left-padded with 0.
    Outputs: float32 `(B, num_items + 1)`, the last state · each item's
    embedding (column 0, the padding, included: it is never explained).
    """

    def __init__(self, retriever, **kwargs):
        super().__init__(**kwargs)
        self.retriever = retriever

    def call(self, inputs, training=False):
        states = self.retriever(inputs, training=training)[:, -1]
        table = keras.ops.cast(self.retriever.item_embeddings, states.dtype)
        return keras.ops.matmul(states, keras.ops.transpose(table))


def history_scores(scorer: ItemScores, histories: np.ndarray, items: np.ndarray, method: str,
                   seed: int = 0) -> np.ndarray:
    """One method's `(B, T)` scores of history positions for the score of `items`.

    Args:
        scorer: an `ItemScores` of the retriever.
        histories: int `(B, T)` item ids, left-padded, `T` at most the
            model's history length.
        items: int `(B,)` the item explained per history.
        method: one of `EXPLAIN_METHODS`.
        seed: the random method's seed.

    Returns:
        float64 `(B, T)`, 0 at padding.
    """
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"expected a method in {', '.join(EXPLAIN_METHODS)}, "
                         f"received: {method!r}")
    histories = np.asarray(histories, np.int32)
    scores = np.zeros(histories.shape)
    for start in range(0, len(histories), BATCH_SIZE):
        batch = histories[start:start + BATCH_SIZE]
        length = max(1, int((batch > 0).sum(1).max()))
        batch = batch[:, -length:]
        scores[start:start + len(batch), -length:] = explain.explain(
            scorer, {"item_ids": batch}, method, target=items[start:start + len(batch)],
            position=length - 1, seed=seed + start, steps=IG_STEPS)
    return scores


def _entry(preprocessor, item: int, score: float) -> dict:
    entry = {"item": preprocessor.labels_of([item])[0], "score": round(float(score), 5)}
    title = preprocessor.title_of(item)
    if title:
        entry["title"] = title
    return entry


def explain_history(model, history: str, method: str, item: Optional[str] = None) -> dict:
    """The top recommendation after `history` (or `item`) and each history item's score for it.

    Args:
        model: a `NextItemRetriever` with a preprocessor.
        history: item labels, oldest first, comma- or space-separated.
        method: one of `EXPLAIN_METHODS`.
        item: the label of a known item to explain instead of the top
            recommendation (such as the first one `predict` shows).

    Returns:
        `{"history": [labels], "unknown": [labels the model lacks],
        "method", "recommendation": {"item", "score", "title"?},
        "items": [{"item", "score", "title"?, "position"}]}`: the items the
        model sees (its last `L` known ones), oldest first, `position` their
        index in that list.
    """
    if not hasattr(model, "recommend"):
        raise ValueError("expected a retriever (a NextItemRetriever), received: a "
                         f"{type(model).__name__}")
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"expected a method in {', '.join(EXPLAIN_METHODS)}, "
                         f"received: {method!r}")
    preprocessor = model.preprocessor
    labels = history.replace(",", " ").split()
    if not labels:
        raise ValueError("expected --history with at least one item, received: none")
    unknown = [label for label, i in zip(labels, preprocessor.item_ids(labels)) if i == 0]
    ids = np.asarray(preprocessor([" ".join(labels)])["item_ids"])
    if not ids.any():
        raise ValueError(f"expected --history with an item the model knows, received: "
                         f"{', '.join(labels)}")
    ids = ids[:, -int((ids > 0).sum()):]
    if item is None:
        items, values = model.recommend(ids, top_k=1)
        item, value = int(items[0, 0]), values[0, 0]
    else:
        item = int(preprocessor.item_ids([item])[0])
        value = float(np.asarray(model.score_all(ids))[0, item])
    scores = history_scores(ItemScores(model), ids, np.array([item]), method)[0]
    return {
        "history": labels, "unknown": unknown, "method": method,
        "recommendation": _entry(preprocessor, item, value),
        "items": [{**_entry(preprocessor, int(entry), score), "position": position}
                  for position, (entry, score) in enumerate(zip(ids[0], scores))],
    }


def remove(histories: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """`histories` without the items where `removed` is set, left-padded again.

    The remaining items close up to the right, the latest one at the last
    position, where the model reads the user state. (Replacing an item by
    the padding instead would leave no state to read when it is the latest.)

    Args:
        histories: int `(B, T)` left-padded item ids.
        removed: bool `(B, T)`, the positions to remove.

    Returns:
        int32 `(B, T)`.

    Example:

    >>> remove(np.array([[0, 5, 6, 7]]), np.array([[0, 0, 1, 0]], bool))
    array([[0, 0, 5, 7]], dtype=int32)
    """
    kept = np.where(removed, 0, histories).astype(np.int32)
    result = np.zeros_like(kept)
    for row, items in enumerate(kept):
        items = items[items > 0]
        if len(items):
            result[row, -len(items):] = items
    return result


def top_positions(scores: np.ndarray, histories: np.ndarray, k: int) -> np.ndarray:
    """bool `(B, T)`: each history's `k` highest-scored real positions (the later on ties)."""
    masked = np.where(histories > 0, scores, -np.inf)
    # Reversed so that, of equal scores, the later position comes first.
    order = np.argsort(-masked[:, ::-1], axis=1, kind="stable")[:, :k]
    chosen = np.zeros(histories.shape, bool)
    np.put_along_axis(chosen, histories.shape[1] - 1 - order, True, axis=1)
    return chosen & (histories > 0)


def _score_and_rank(model, histories: np.ndarray, items: np.ndarray) -> tuple:
    """The score of `items` after each history, and its rank among all items (1 = best)."""
    scores = model.score_all(histories)
    own = scores[np.arange(len(items)), items]
    return own, 1 + (scores > own[:, None]).sum(1)


def _drops(model, histories, items, removed, reference) -> tuple:
    """Per user: the score's drop and the rank's rise when `removed` is taken out."""
    score, rank = _score_and_rank(model, remove(histories, removed), items)
    return reference[0] - score, rank - reference[1]


def _summary(removed_drops: np.ndarray, rank_rises: np.ndarray,
             kept_drops: np.ndarray) -> dict:
    """`(users, k)` arrays of the drops for k = 1..K to the reported numbers at K,
    with the held-out item's rank rises beside the score drops."""
    summary = removal_summary(removed_drops, kept_drops)
    summary["rank_increase"] = float(rank_rises[:, -1].mean())
    summary["median_rank_increase"] = float(np.median(rank_rises[:, -1]))
    for k, entry in enumerate(summary["by_k"].values()):
        entry["rank_increase"] = float(rank_rises[:, k].mean())
    return summary


def _removal_measures(model, histories, items, scores, k, reference) -> tuple:
    """`(users, k)` drops on removing the top 1..k, rank rises, drops on keeping only them."""
    columns = [[], [], []]
    valid = histories > 0
    for count in range(1, k + 1):
        top = top_positions(scores, histories, count)
        drop, rise = _drops(model, histories, items, top, reference)
        kept, _ = _drops(model, histories, items, valid & ~top, reference)
        for column, values in zip(columns, (drop, rise, kept)):
            column.append(values)
    return tuple(np.stack(column, 1) for column in columns)


def sample_users(histories: Sequence[np.ndarray], targets: np.ndarray, length: int, k: int,
                 users: Optional[int], seed: int = 0) -> tuple:
    """Left-padded histories and held-out items of up to `users` random users
    with more than `k` items among their last `length`.

    Returns:
        `(histories int32 (U, T), items int32 (U,), eligible)`, `T` the
        longest sampled history (at most `length`), `eligible` how many
        users qualified.
    """
    recent = [np.asarray(h[-length:], np.int32) for h in histories]
    eligible = np.flatnonzero([len(h) > k for h in recent])
    if not len(eligible):
        raise ValueError(f"expected users with more than {k} history items, received: none")
    chosen = eligible
    if users is not None and users < len(eligible):
        chosen = np.sort(np.random.default_rng(seed).choice(eligible, users, replace=False))
    longest = max(len(recent[i]) for i in chosen)
    padded = np.zeros((len(chosen), longest), np.int32)
    for row, user in enumerate(chosen):
        padded[row, longest - len(recent[user]):] = recent[user]
    return padded, np.asarray(targets, np.int32)[chosen], len(eligible)


def measure(
    model,
    histories: np.ndarray,
    items: np.ndarray,
    methods: Sequence[str] = MEASURED_METHODS,
    k: int = TOP_K,
    random_seeds: int = 10,
    sanity_examples: int = 100,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Faithfulness of each method: the held-out item's score and rank without the top-`k` items.

    Each method explains the held-out item's score; its `k` highest-scored
    history items are removed ("comprehensiveness": the mean score drop),
    or kept alone ("sufficiency": the drop with every other item removed),
    against `k` random items over `random_seeds` seeds.

    Args:
        model: a `NextItemRetriever`.
        histories: int `(U, T)` left-padded histories, each longer than `k`.
        items: int `(U,)` the held-out items.
        methods: names from `MEASURED_METHODS`.
        k: history items removed.
        random_seeds: seeds of the random row.
        sanity_examples: how many of the first users the weight
            randomisation check explains.
        progress: called with a label after each unit of work.

    Returns:
        `{"methods": {name: {"comprehensiveness", "sufficiency", "aopc" (the
        mean of comprehensiveness - sufficiency over 1..k items),
        "interval", "sufficiency_interval", "rank_increase",
        "median_rank_increase", "by_k", "random_ratio" (comprehensiveness /
        random's), "sanity_spearman", "sanity_cascade"}}, "random": {...},
        "examples", "k", "random_seeds", "baseline": {"score", "rank"}}`: the
        random row's numbers are means over its seeds.
    """
    check_methods(methods, MEASURED_METHODS)
    histories, items = np.asarray(histories, np.int32), np.asarray(items, np.int32)
    lengths = (histories > 0).sum(1)
    if lengths.min() <= k:
        raise ValueError(f"expected histories of more than k={k} items, received: one of "
                         f"{lengths.min()}")

    step = progress or (lambda label: None)
    scorer = ItemScores(model)
    reference = _score_and_rank(model, histories, items)
    explanations = {}
    for method in methods:
        explanations[method] = history_scores(scorer, histories, items, method)
        step(f"explained: {method}")
    random_runs = [_removal_measures(model, histories, items,
                                     explain.random_scores(histories > 0, seed), k, reference)
                   for seed in range(random_seeds)]
    random_row = _summary(*(np.mean([run[i] for run in random_runs], 0) for i in range(3)))
    rows = {}
    for method in methods:
        rows[method] = _summary(*_removal_measures(model, histories, items,
                                                   explanations[method], k, reference))
        rows[method]["random_ratio"] = random_ratio(rows[method], random_row)
        step(f"removed: {method}")
    sanity_histories, sanity_items = histories[:sanity_examples], items[:sanity_examples]
    report_methods = {}
    for method in methods:
        check = faithfulness.sanity_check(
            scorer, lambda m, method=method: history_scores(m, sanity_histories, sanity_items,
                                                            method),
            sanity_histories > 0)
        step(f"sanity: {method}")
        report_methods[method] = {**rows[method], **sanity_fields(check)}
    return {
        "methods": report_methods,
        "random": random_row,
        "examples": int(len(items)),
        "k": k,
        "random_seeds": random_seeds,
        "baseline": {"score": float(reference[0].mean()), "rank": float(reference[1].mean())},
    }


def progress_steps(methods: Sequence[str]) -> int:
    """How many times `measure` calls `progress`."""
    return 3 * len(methods)
