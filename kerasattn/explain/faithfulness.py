"""How faithful an explanation is: what happens to the prediction when the
tokens it ranks highest are removed, or kept alone.

ERASER's measures (DeYoung et al. 2020), for each example and its predicted
class `c` with probability `p(c | x)`:

- comprehensiveness at `k %`: `p(c | x) - p(c | x without its top k %)`:
  large when the tokens the explanation ranks highest carry the prediction;
- sufficiency at `k %`: `p(c | x) - p(c | only its top k %)`: small (or
  negative) when they suffice for it;
- AOPC: each one's mean over the bins `k = 1, 5, 10, 20, 50`.

The top `k %` of an example's `n` real tokens is `ceil(k n / 100)` tokens, at
least one; ties in the scores go to the earlier position. Tokens are removed
by deleting them (the rest close up) or by replacing them with a mask or pad
token (positions unchanged). Every explanation is compared with random
scores over several seeds, with bootstrap 95 % intervals over the examples.

`sanity_check` is Adebayo et al. (2018)'s cascading randomisation: the
model's layers are randomised from the top down and the explanation of the
randomised model is rank-correlated (Spearman) with the trained one's. An
explanation that reflects what the model learned changes (a correlation
below about 0.5); one that does not is blind to the weights.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import keras
import numpy as np

BINS = (1, 5, 10, 20, 50)
STRATEGIES = ("delete", "replace")
# `predict_proba(token_ids, padding_mask)`: class probabilities `(N, C)`; with
# `row_inputs`, `predict_proba(token_ids, padding_mask, row_inputs)`.
PredictFunction = Callable[..., np.ndarray]


def _check_batch(token_ids: np.ndarray, padding_mask: np.ndarray, scores: np.ndarray) -> None:
    if token_ids.ndim != 2 or padding_mask.shape != token_ids.shape:
        raise ValueError(
            "Expected (N, T) `token_ids` and a `padding_mask` of the same shape, received: "
            f"token_ids.shape={token_ids.shape}, padding_mask.shape={padding_mask.shape}"
        )
    if scores.shape != token_ids.shape:
        raise ValueError(f"Expected `scores` of shape {token_ids.shape}, "
                         f"received: scores.shape={scores.shape}")


def top_count(length: int, percent: float) -> int:
    """How many of `length` tokens are the top `percent` %: at least 1, at most all."""
    return min(length, max(1, math.ceil(percent * length / 100 - 1e-9)))


def erase(
    token_ids: np.ndarray,
    padding_mask: np.ndarray,
    scores: np.ndarray,
    percent: float,
    keep: bool = False,
    strategy: str = "delete",
    replacement_id: int = 0,
) -> tuple:
    """Removes (or keeps only) each example's top `percent` % of tokens by `scores`.

    Args:
        token_ids: int `(N, T)`.
        padding_mask: bool `(N, T)`, `True` at real tokens.
        scores: float `(N, T)`; higher means more important.
        percent: in (0, 100].
        keep: `False` removes the top tokens (comprehensiveness); `True`
            removes all the others (sufficiency).
        strategy: `"delete"` (the remaining tokens close up, the sequence
            gets shorter) or `"replace"` (removed tokens become
            `replacement_id`, still attended).
        replacement_id: the token id of `"replace"`.

    Returns:
        `(token_ids, padding_mask)` of the same shape `(N, T)`.

    Example:

    >>> ids = np.array([[5, 6, 7, 0]]); mask = ids != 0
    >>> erase(ids, mask, np.array([[0.1, 0.9, 0.5, 0.0]]), 34)[0]
    array([[5, 0, 0, 0]])
    """
    token_ids, padding_mask = np.asarray(token_ids), np.asarray(padding_mask, bool)
    scores = np.asarray(scores, np.float64)
    _check_batch(token_ids, padding_mask, scores)
    if strategy not in STRATEGIES:
        raise ValueError(f"Expected `strategy` in {STRATEGIES}, received: strategy={strategy!r}")
    if not 0 < percent <= 100:
        raise ValueError(f"Expected `percent` in (0, 100], received: percent={percent!r}")
    new_ids, new_mask = token_ids.copy(), padding_mask.copy()
    for row in range(token_ids.shape[0]):
        real = np.flatnonzero(padding_mask[row])
        if not len(real):
            continue
        count = top_count(len(real), percent)
        ranked = real[np.argsort(-scores[row, real], kind="stable")]
        removed = ranked[count:] if keep else ranked[:count]
        if strategy == "replace":
            new_ids[row, removed] = replacement_id
            continue
        remaining = np.setdiff1d(real, removed)  # sorted: the original order
        new_ids[row] = 0
        new_mask[row] = False
        new_ids[row, :len(remaining)] = token_ids[row, remaining]
        new_mask[row, :len(remaining)] = True
    return new_ids, new_mask


def _predict_in_batches(predict_proba: PredictFunction, token_ids, padding_mask,
                        batch_size: int, row_inputs: Optional[Dict[str, np.ndarray]] = None
                        ) -> np.ndarray:
    # Rows sorted by length and each batch cut to its longest: deletion
    # shortens sequences, and short rows then run without long padding.
    lengths = padding_mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    parts = []
    for start in range(0, token_ids.shape[0], batch_size):
        rows = order[start:start + batch_size]
        length = max(1, int(lengths[rows].max()))
        ids, mask = token_ids[rows, :length], padding_mask[rows, :length]
        if row_inputs is None:
            parts.append(np.asarray(predict_proba(ids, mask), np.float64))
        else:
            given = {key: value[rows] for key, value in row_inputs.items()}
            parts.append(np.asarray(predict_proba(ids, mask, given), np.float64))
    probabilities = np.empty((token_ids.shape[0], parts[0].shape[-1]))
    probabilities[order] = np.concatenate(parts)
    return probabilities


def erasure_scores(
    predict_proba: PredictFunction,
    token_ids: np.ndarray,
    padding_mask: np.ndarray,
    scores: np.ndarray,
    bins: Sequence[float] = BINS,
    strategy: str = "delete",
    replacement_id: int = 0,
    batch_size: int = 256,
    row_inputs: Optional[Dict[str, np.ndarray]] = None,
) -> Dict[str, np.ndarray]:
    """Per-example comprehensiveness and sufficiency at each bin.

    Args:
        predict_proba: `(token_ids, padding_mask) -> (N, C)` probabilities.
        token_ids, padding_mask, scores: the examples and one explanation.
        bins: percentages of tokens.
        strategy, replacement_id: as for `erase`.
        batch_size: examples per `predict_proba` call.
        row_inputs: optional per-example arrays `(N, ...)` the model reads
            beside the erased tokens (such as a translation's target side);
            `predict_proba` then gets them, cut to the rows of its batch, as
            a third argument `{name: array}`.

    Returns:
        `{"comprehensiveness": (N, bins), "sufficiency": (N, bins),
        "probability": (N,), "classes": (N,)}`: the predicted class and its
        probability on the whole input.
    """
    token_ids, padding_mask = np.asarray(token_ids), np.asarray(padding_mask, bool)
    full = _predict_in_batches(predict_proba, token_ids, padding_mask, batch_size, row_inputs)
    classes = full.argmax(-1)
    probability = full[np.arange(len(classes)), classes]
    measures = {}
    for name, keep in (("comprehensiveness", False), ("sufficiency", True)):
        erased = [erase(token_ids, padding_mask, scores, k, keep, strategy, replacement_id)
                  for k in bins]
        ids = np.concatenate([e[0] for e in erased])
        mask = np.concatenate([e[1] for e in erased])
        tiled = None if row_inputs is None else {
            key: np.concatenate([value] * len(bins)) for key, value in row_inputs.items()}
        changed = _predict_in_batches(predict_proba, ids, mask, batch_size, tiled)
        changed = changed.reshape(len(bins), -1, changed.shape[-1])
        measures[name] = (probability[None] - changed[:, np.arange(len(classes)), classes]).T
    return {**measures, "probability": probability, "classes": classes}


def bootstrap_interval(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> List[float]:
    """The 95 % percentile bootstrap interval of the mean of `values`.

    Example:

    >>> bootstrap_interval(np.array([1.0, 1.0, 1.0]))
    [1.0, 1.0]
    """
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def summarize(comprehensiveness: np.ndarray, sufficiency: np.ndarray,
              bins: Sequence[float] = BINS, seed: int = 0) -> dict:
    """Per-bin means, AOPCs and their bootstrap intervals from `(N, bins)` arrays.

    Returns:
        `{"comprehensiveness": AOPC, "sufficiency": AOPC, "aopc": AOPC of
        comprehensiveness minus sufficiency, "interval": [lo, hi] of the
        comprehensiveness AOPC, "sufficiency_interval": [lo, hi], "bins":
        {"1": {"comprehensiveness": …, "sufficiency": …}, …}}`.
    """
    comprehensive_aopc = comprehensiveness.mean(1)
    sufficient_aopc = sufficiency.mean(1)
    return {
        "comprehensiveness": float(comprehensive_aopc.mean()),
        "sufficiency": float(sufficient_aopc.mean()),
        "aopc": float((comprehensive_aopc - sufficient_aopc).mean()),
        "interval": bootstrap_interval(comprehensive_aopc, seed=seed),
        "sufficiency_interval": bootstrap_interval(sufficient_aopc, seed=seed),
        "bins": {f"{k:g}": {"comprehensiveness": float(comprehensiveness[:, i].mean()),
                            "sufficiency": float(sufficiency[:, i].mean())}
                 for i, k in enumerate(bins)},
    }


def evaluate(
    predict_proba: PredictFunction,
    token_ids: np.ndarray,
    padding_mask: np.ndarray,
    explanations: Dict[str, np.ndarray],
    bins: Sequence[float] = BINS,
    strategies: Sequence[str] = STRATEGIES,
    random_seeds: int = 10,
    replacement_id: int = 0,
    batch_size: int = 256,
    progress: Optional[Callable[[str], None]] = None,
    row_inputs: Optional[Dict[str, np.ndarray]] = None,
) -> dict:
    """ERASER's measures of several explanations, and of random scores.

    Args:
        predict_proba: `(token_ids, padding_mask) -> (N, C)` probabilities.
        token_ids, padding_mask: the examples, `(N, T)`.
        explanations: method name to its `(N, T)` scores.
        bins: percentages of tokens removed or kept.
        strategies: removal strategies to report (`STRATEGIES`).
        random_seeds: how many random explanations (seeds `0..n-1`) make
            the random row, averaged per example.
        replacement_id: the token id that `"replace"` puts in.
        batch_size: examples per `predict_proba` call.
        progress: optional function called with a label after each
            explanation is scored (for a progress bar).
        row_inputs: optional per-example arrays passed on to
            `predict_proba` (see `erasure_scores`).

    Returns:
        `{strategy: {"methods": {name: summarize(...)}, "random":
        summarize(...)}}`.

    Example:

    >>> report = evaluate(predict, ids, mask, {"rollout": scores})  # doctest: +SKIP
    >>> report["delete"]["methods"]["rollout"]["comprehensiveness"]  # doctest: +SKIP
    """
    from kerasattn.explain.methods import random_scores

    if isinstance(random_seeds, bool) or not isinstance(random_seeds, int) or random_seeds < 1:
        raise ValueError(f"Expected a positive integer `random_seeds`, "
                         f"received: random_seeds={random_seeds!r}")
    padding_mask = np.asarray(padding_mask, bool)
    report = {}
    for strategy in strategies:

        def measured(scores, label):
            result = erasure_scores(predict_proba, token_ids, padding_mask, scores, bins,
                                    strategy, replacement_id, batch_size, row_inputs)
            if progress is not None:
                progress(f"{strategy}: {label}")
            return result

        methods = {}
        for name, scores in explanations.items():
            result = measured(scores, name)
            methods[name] = summarize(result["comprehensiveness"], result["sufficiency"], bins)
        random_results = [measured(random_scores(padding_mask, seed), f"random {seed}")
                          for seed in range(random_seeds)]
        report[strategy] = {
            "methods": methods,
            "random": summarize(
                np.mean([r["comprehensiveness"] for r in random_results], axis=0),
                np.mean([r["sufficiency"] for r in random_results], axis=0), bins),
        }
    return report


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (as `scipy.stats.rankdata`).

    Example:

    >>> rank(np.array([0.5, 0.1, 0.5]))
    array([2.5, 1. , 2.5])
    """
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either vector is constant.

    Example:

    >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0]))
    -1.0
    """
    first, second = rank(first), rank(second)
    first, second = first - first.mean(), second - second.mean()
    denominator = math.sqrt(float((first**2).sum() * (second**2).sum()))
    return float((first * second).sum() / denominator) if denominator > 0 else math.nan


def mean_spearman(first: np.ndarray, second: np.ndarray, padding_mask: np.ndarray) -> float:
    """The mean over examples of the Spearman correlation over their real positions.

    Examples whose correlation is undefined (constant scores, one token)
    are left out; NaN if all are.
    """
    values = [spearman(a[m], b[m]) for a, b, m in zip(first, second, padding_mask)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def randomization_order(model: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The model's layers that hold trainable weights, from the output down.

    A nested functional model (a backbone) contributes its own layers in
    order; any other layer (a Transformer block) counts as one.
    """
    ordered: List[keras.layers.Layer] = []

    def visit(layer):
        if isinstance(layer, keras.Model) and hasattr(layer, "_operations"):
            for inner in layer.layers:
                visit(inner)
        elif layer.trainable_weights:
            ordered.append(layer)

    for layer in model.layers:
        visit(layer)
    return ordered[::-1]


def sanity_check(
    model: keras.layers.Layer,
    explain_function: Callable[[keras.layers.Layer], np.ndarray],
    padding_mask: np.ndarray,
    layers: Optional[Iterable[keras.layers.Layer]] = None,
    seed: int = 0,
) -> dict:
    """Cascading weight randomisation (Adebayo et al. 2018), top layer first.

    Each layer's trainable weights are shuffled in turn (a random permutation of each
    weight tensor's values, which keeps their scale), cumulatively from the
    output down; after each, the explanation is recomputed and
    rank-correlated with the trained model's. The weights are restored at
    the end, also after an error.

    Args:
        model: the trained model.
        explain_function: `model -> (N, T)` scores of a fixed batch.
        padding_mask: bool `(N, T)` of that batch.
        layers: the layers to randomise, in order; defaults to
            `randomization_order(model)`.
        seed: the shuffles' seed.

    Returns:
        `{"spearman": the correlation with every layer randomised,
        "cascade": [{"layer": name, "spearman": …}, …]}`.
    """
    layers = randomization_order(model) if layers is None else list(layers)
    padding_mask = np.asarray(padding_mask, bool)
    trained = explain_function(model)
    saved = [[keras.ops.convert_to_numpy(v) for v in layer.trainable_weights]
             for layer in layers]
    rng = np.random.default_rng(seed)
    cascade = []
    try:
        for layer in layers:
            for variable in layer.trainable_weights:
                values = np.asarray(keras.ops.convert_to_numpy(variable))
                variable.assign(rng.permutation(values.reshape(-1)).reshape(values.shape))
            correlation = mean_spearman(trained, explain_function(model), padding_mask)
            cascade.append({"layer": layer.name, "spearman": correlation})
    finally:
        for layer, values in zip(layers, saved):
            for variable, value in zip(layer.trainable_weights, values):
                variable.assign(value)
    return {"spearman": cascade[-1]["spearman"] if cascade else math.nan, "cascade": cascade}
