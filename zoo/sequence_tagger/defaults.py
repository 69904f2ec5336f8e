"""The sequence tagger recipe's defaults that come from the training data, by written rules.

- `--epochs`: at least 20 epochs and at least 4,000 optimizer steps
  (CoNLL-2003's 439 steps an epoch: 20, as its preset; 3,394 tweets' 107
  steps: 38).
- `--patience`: early stopping after at least 8 epochs and at least 1,000
  steps without a better validation entity F1.

Options given on the command line win. Light on purpose (no TensorFlow):
`recipe.py` shows these numbers in `--help`.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from zoo.derived import DerivedOptions

MIN_EPOCHS, BUDGET_STEPS = 20, 4000
MIN_PATIENCE_EPOCHS, PATIENCE_STEPS = 8, 1000


def derive_training(args: argparse.Namespace, sentences: int, tokens: int,
                    entity_types: Sequence[str], steps_per_epoch: int) -> DerivedOptions:
    """Fills `--epochs` and `--patience` where unset (see above).

    Args:
        args: the parsed command line.
        sentences, tokens: the training file's size.
        entity_types: the entity types of its tags.
        steps_per_epoch: optimizer steps in one pass over the training sentences.

    Returns:
        The record of what was measured and derived.
    """
    derived = DerivedOptions(args, {
        "sentences": sentences, "tokens": tokens, "entity_types": len(entity_types),
        "steps_per_epoch": steps_per_epoch,
    })
    derived.set_budget(steps_per_epoch, MIN_EPOCHS, BUDGET_STEPS, MIN_PATIENCE_EPOCHS,
                       PATIENCE_STEPS)
    return derived
