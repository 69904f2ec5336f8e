"""The classifier recipe's defaults that come from the training data, by written rules.

- `--validation-sentences`: 15 % of `train.tsv`'s whole sentences, at most
  1,000 (SST-2's 6,885 sentences: 1,000; 5,452 questions: 818).
- `--epochs`: a budget of at least 6 epochs and at least 4,000 optimizer
  steps (SST-2's 1,050 steps an epoch: 6 epochs; 9,600 movie reviews' 135:
  30 epochs). A fixed epoch count under-trains small data: 6 epochs were
  6,300 steps on SST-2 but 450 on 5,452 questions.
- `--patience`: early stopping after at least 3 epochs and at least 1,000
  steps without a better validation accuracy.

Options given on the command line win. Light on purpose (no TensorFlow):
`recipe.py` shows these numbers in `--help`.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from zoo.derived import DerivedOptions

VALIDATION_SHARE, MAX_VALIDATION_SENTENCES = 0.15, 1000
MIN_EPOCHS, BUDGET_STEPS = 6, 4000
MIN_PATIENCE_EPOCHS, PATIENCE_STEPS = 3, 1000
# `--class-weight`: texts weigh alike, or every class weighs the same (not derived: see
# the card's question-type stand-in, where it did not help).
CLASS_WEIGHTS = ("none", "balanced")
# The best method of the card's faithfulness table (README.md, "Explanations"), and what
# the attention-map callback draws each epoch beside the attention maps.
BEST_EXPLAIN_METHOD = "integrated_gradients"
EXPLANATION_PICTURES = ("rollout", BEST_EXPLAIN_METHOD)


def validation_sentences_for(sentences: int) -> int:
    """The validation split's size for a training file of `sentences` whole sentences."""
    return min(MAX_VALIDATION_SENTENCES, round(VALIDATION_SHARE * sentences))


def derive_fine_tuning(args: argparse.Namespace, sentences: int, held_out: int,
                       training_texts: int, tokens: int, label_names: Sequence[str],
                       steps_per_epoch: int) -> DerivedOptions:
    """Fills `--validation-sentences`, `--epochs` and `--patience` where unset (see above).

    Args:
        args: the parsed command line (`validation_sentences` is already
            applied by the split: recorded here as derived or given).
        sentences: whole sentences in `train.tsv`.
        held_out: how many the validation split holds.
        training_texts: rows trained on (sentences and phrases).
        tokens: their tokens (capped at `--sequence-length`).
        label_names: the classes.
        steps_per_epoch: optimizer steps in one pass over the training rows.

    Returns:
        The record of what was measured and derived.
    """
    derived = DerivedOptions(args, {
        "sentences": sentences, "training_texts": training_texts, "tokens": tokens,
        "classes": len(label_names), "steps_per_epoch": steps_per_epoch,
    })
    derived.set("validation_sentences", held_out,
                f"{VALIDATION_SHARE:.0%} of the sentences, at most {MAX_VALIDATION_SENTENCES:,}")
    derived.set_budget(steps_per_epoch, MIN_EPOCHS, BUDGET_STEPS, MIN_PATIENCE_EPOCHS,
                       PATIENCE_STEPS)
    return derived
