"""The recommender recipe's defaults that come from the interaction log, by written rules.

- `--max-length`: the 90th percentile of the users' training-history
  lengths, rounded up to a multiple of 10, within [50, 200] (SASRec's 50 on
  the sparse Amazon logs and 200 on MovieLens-1M; Video Games: p90 13 -> 50;
  MovieLens-100k: p90 242 -> 200).
- `--dropout`: 0.5 where users have fewer than 20 training interactions on
  average (sparse logs: SASRec's 0.5 on Amazon), else 0.2 (dense logs:
  SASRec's 0.2 on MovieLens-1M). Video Games: 7.3 -> 0.5; MovieLens-100k:
  104 -> 0.2.
- `--epochs`: at least 80 epochs (the cosine schedule's length) and at least
  10,000 optimizer steps; `--patience`: at least 8 epochs and 1,000 steps
  (Video Games' 240 steps an epoch: 80 and 8, as its preset).

Options given on the command line win. Light on purpose (no TensorFlow):
`recipe.py` shows these numbers in `--help`.
"""

from __future__ import annotations

import argparse
import math
from typing import Sequence

from zoo.derived import DerivedOptions

MIN_LENGTH, MAX_LENGTH, LENGTH_PERCENTILE = 50, 200, 90
SPARSE_DROPOUT, DENSE_DROPOUT, DENSE_MEAN_HISTORY = 0.5, 0.2, 20
MIN_EPOCHS, BUDGET_STEPS = 80, 10_000
MIN_PATIENCE_EPOCHS, PATIENCE_STEPS = 8, 1_000


def _percentile(values: Sequence[int], percent: float) -> float:
    """The `percent` percentile by linear interpolation (NumPy's default), in plain Python."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * percent / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def derive_architecture(args: argparse.Namespace, users: int, items: int, interactions: int,
                        history_lengths: Sequence[int]) -> DerivedOptions:
    """Fills `--max-length` and `--dropout` where unset, from the training histories.

    Args:
        args: the parsed command line.
        users, items, interactions: the log's size.
        history_lengths: each user's training-history length.

    Returns:
        The record; `derive_budget` adds the training budget once the steps
        per epoch are known.
    """
    p90 = _percentile(history_lengths, LENGTH_PERCENTILE)
    mean = sum(history_lengths) / max(1, len(history_lengths))
    derived = DerivedOptions(args, {
        "users": users, "items": items, "interactions": interactions,
        "mean_history": round(mean, 1), "p90_history": round(p90, 1),
    })
    length = min(MAX_LENGTH, max(MIN_LENGTH, 10 * math.ceil(p90 / 10)))
    derived.set("max_length", length, f"p{LENGTH_PERCENTILE} of the histories")
    sparse = mean < DENSE_MEAN_HISTORY
    derived.set("dropout", SPARSE_DROPOUT if sparse else DENSE_DROPOUT,
                f"{'sparse' if sparse else 'dense'} log")
    return derived


def derive_budget(derived: DerivedOptions, steps_per_epoch: int) -> None:
    """Fills `--epochs` and `--patience` where unset, in optimizer steps."""
    derived.measured(steps_per_epoch=steps_per_epoch)
    derived.set_budget(steps_per_epoch, MIN_EPOCHS, BUDGET_STEPS, MIN_PATIENCE_EPOCHS,
                       PATIENCE_STEPS)
