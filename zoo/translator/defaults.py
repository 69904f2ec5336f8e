"""The translator recipe's defaults that come from the training data, by written rules.

- `--vocabulary-size`: the joint SentencePiece vocabulary of both
  languages: its 260 reserved and byte pieces plus half the distinct
  whitespace-separated words of the training pairs, rounded to hundreds,
  within [400, 8,000] (Multi30k's 29,000 pairs: 8,000; a few dozen pairs:
  400, of which SentencePiece keeps what the text holds).
- `--epochs`: at least 10 epochs and at least 10,000 optimizer steps
  (Multi30k at batch 64, 454 steps an epoch: 23 epochs).
- `--patience`: early stopping after at least 3 epochs and at least 2,000
  steps without a better validation BLEU.
- `--warmup-steps`: a tenth of the training steps, at most 1,000.

Options given on the command line win. Light on purpose (no TensorFlow):
`recipe.py` shows these numbers in `--help`.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from zoo.derived import DerivedOptions

MIN_VOCABULARY, MAX_VOCABULARY = 400, 8000
# learn_sentencepiece_model's 4 reserved tokens and 256 byte pieces.
BASE_PIECES = 260
MIN_EPOCHS, BUDGET_STEPS = 10, 10_000
MIN_PATIENCE_EPOCHS, PATIENCE_STEPS = 3, 2000
MAX_WARMUP_STEPS = 1000


def vocabulary_size_for(distinct_words: int) -> int:
    """The joint vocabulary's size for training text of `distinct_words` words (see above)."""
    return min(MAX_VOCABULARY, max(MIN_VOCABULARY, round(BASE_PIECES + distinct_words / 2, -2)))


def derive_data(args: argparse.Namespace, sources: Sequence[str],
                targets: Sequence[str]) -> DerivedOptions:
    """Fills `--vocabulary-size` where unset, from the training pairs (see above).

    Returns:
        The record, to which `derive_training` adds the training budget.
    """
    source_words = [word for text in sources for word in text.split()]
    target_words = [word for text in targets for word in text.split()]
    distinct = len(set(source_words)) + len(set(target_words))
    derived = DerivedOptions(args, {
        "pairs": len(sources), "source_words": len(source_words),
        "target_words": len(target_words), "distinct_words": distinct,
    })
    derived.set("vocabulary_size", vocabulary_size_for(distinct),
                f"{BASE_PIECES} + half the distinct words, within "
                f"[{MIN_VOCABULARY:,}, {MAX_VOCABULARY:,}]")
    return derived


def derive_training(derived: DerivedOptions, steps_per_epoch: int) -> DerivedOptions:
    """Fills `--epochs`, `--patience` and `--warmup-steps` where unset (see above)."""
    derived.measured(steps_per_epoch=steps_per_epoch)
    derived.set_budget(steps_per_epoch, MIN_EPOCHS, BUDGET_STEPS, MIN_PATIENCE_EPOCHS,
                       PATIENCE_STEPS)
    total = derived.args.epochs * steps_per_epoch
    derived.set("warmup_steps", min(MAX_WARMUP_STEPS, total // 10),
                f"a tenth of {total:,} steps, at most {MAX_WARMUP_STEPS:,}")
    return derived
