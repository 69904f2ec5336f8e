"""The sequence tagger recipe's defaults that come from the training data, by written rules.

- `--epochs`: at least 20 epochs and at least 4,000 optimizer steps
  (CoNLL-2003's 439 steps an epoch: 20, as its preset; 3,394 tweets' 107
  steps: 38).
- `--patience`: early stopping after at least 8 epochs and at least 1,000
  steps without a better validation entity F1.
- `--hidden-dim` and `--intermediate-dim`: 256 and 512 from 100,000
  training tokens on (CoNLL-2003's 203,621, BC5CDR's 118,170, NCBI-disease's
  135,701: the width of their cards), 128 and 256 below (3,394 tweets'
  62,730): half the parameters where there is little to learn from.
- `--word-dropout` (the rate at which a training word is read as `[UNK]`):
  the share of entity tokens whose word occurs once in the training file —
  Good–Turing's estimate of how often an entity word will be new at test
  time — rounded to 0.05, within [0.1, 0.3] (CoNLL-2003 0.109 -> 0.1;
  BC5CDR 0.062 and NCBI-disease 0.037 -> 0.1; 3,394 lowercased CoNLL
  sentences 0.252 -> 0.25).

Options given on the command line win. Light on purpose (no TensorFlow):
`recipe.py` shows these numbers in `--help`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Sequence

from zoo.derived import DerivedOptions

MIN_EPOCHS, BUDGET_STEPS = 20, 4000
MIN_PATIENCE_EPOCHS, PATIENCE_STEPS = 8, 1000
WIDE_TOKENS, NARROW_WIDTH, WIDE_WIDTH = 100_000, (128, 256), (256, 512)
MIN_WORD_DROPOUT, MAX_WORD_DROPOUT, WORD_DROPOUT_STEP = 0.1, 0.3, 0.05


def entity_hapax_share(tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> float:
    """The share of entity tokens (tag not `O`) whose word occurs once in `tokens`."""
    counts = Counter(word for sentence in tokens for word in sentence)
    entity_words = [word for sentence, sentence_tags in zip(tokens, tags)
                    for word, tag in zip(sentence, sentence_tags) if tag != "O"]
    if not entity_words:
        return 0.0
    return sum(counts[word] == 1 for word in entity_words) / len(entity_words)


def word_dropout_for(hapax_share: float) -> float:
    """`--word-dropout` from the entity tokens' hapax share (see above)."""
    rounded = round(hapax_share / WORD_DROPOUT_STEP) * WORD_DROPOUT_STEP
    return round(min(MAX_WORD_DROPOUT, max(MIN_WORD_DROPOUT, rounded)), 2)


def derive_training(args: argparse.Namespace, tokens: Sequence[Sequence[str]],
                    tags: Sequence[Sequence[str]], entity_types: Sequence[str],
                    steps_per_epoch: int) -> DerivedOptions:
    """Fills `--epochs`, `--patience`, the width and `--word-dropout` where unset (see above).

    Args:
        args: the parsed command line.
        tokens, tags: the training sentences' words and tags.
        entity_types: the entity types of the tags.
        steps_per_epoch: optimizer steps in one pass over the training sentences.

    Returns:
        The record of what was measured and derived.
    """
    total = sum(len(sentence) for sentence in tokens)
    hapax_share = entity_hapax_share(tokens, tags)
    derived = DerivedOptions(args, {
        "sentences": len(tokens), "tokens": total, "entity_types": len(entity_types),
        "entity_hapax_share": round(hapax_share, 3), "steps_per_epoch": steps_per_epoch,
    })
    hidden, intermediate = WIDE_WIDTH if total >= WIDE_TOKENS else NARROW_WIDTH
    derived.set("hidden_dim", hidden)
    derived.set("intermediate_dim", intermediate)
    derived.set("word_dropout", word_dropout_for(hapax_share))
    derived.set_budget(steps_per_epoch, MIN_EPOCHS, BUDGET_STEPS, MIN_PATIENCE_EPOCHS,
                       PATIENCE_STEPS)
    return derived
