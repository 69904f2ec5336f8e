"""The tagger's data: CoNLL splits, length-bucketed batches, and seqeval scores."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import keras
import numpy as np

from kerasattn import data as kdata

# Batches group sentences of similar length (fewer padded steps): bucket edges in tokens.
BUCKET_BOUNDARIES = (8, 16, 24, 32, 48, 64)


class Splits(NamedTuple):
    """The recipe's files: trained on, selected on, and (optionally) reported once."""

    train: kdata.TaggedSentences
    validation: kdata.TaggedSentences
    test: Optional[kdata.TaggedSentences]


def read_splits(folder: str | Path, token_column: int = 0, tag_column: int = -1,
                scheme: str = "auto", tag_scheme: str = "IOB2") -> Splits:
    """Reads `train.txt`, `valid.txt` and, if present, `test.txt` from `folder`.

    The entity types are the training file's, each with every tag of
    `tag_scheme` (the scheme the model learns; the files' tags are converted
    to it), so a split may use a tag the training file happens to lack
    (`I-PER` with only one- and two-word names in IOBES); an entity type
    outside them is an error naming file and line. So is a training file
    without entities (nothing to learn) or a validation file without them
    (its entity F1, which training selects on, would be 0 at every epoch).
    """
    folder = Path(folder)
    read = dict(token_column=token_column, tag_column=tag_column, scheme=scheme,
                output_scheme=tag_scheme)
    train = kdata.read_conll(folder / "train.txt", **read)
    _check_entities(train, "to learn")
    tag_names = complete_tag_names(train.entity_types, tag_scheme)
    # A superset of the training file's own tags: nothing there to check again.
    train = dataclasses.replace(train, known_tag_names=tag_names)
    validation = kdata.read_conll(folder / "valid.txt", **read, tag_names=tag_names)
    _check_entities(validation, "to score (the entity F1 training selects on)")
    test = None
    if (folder / "test.txt").is_file():
        test = kdata.read_conll(folder / "test.txt", **read, tag_names=tag_names)
    return Splits(train, validation, test)


def _check_entities(sentences: kdata.TaggedSentences, purpose: str) -> None:
    """A `DataError` naming the file when no token of `sentences` has a tag other than O."""
    if any(tag != "O" for tags in sentences.tags for tag in tags):
        return
    tokens = sum(len(tags) for tags in sentences.tags)
    raise kdata.DataError(
        sentences.path, None,
        f"expected entities {purpose}, received: none (every tag O, in {len(sentences):,} "
        f"sentences of {tokens:,} tokens)",
    )


def complete_tag_names(entity_types: Sequence[str], scheme: str) -> list[str]:
    """`"O"`, then per entity type (in order) each prefix `scheme` has (B, I, E, S)."""
    prefixes = {"IOB1": "BI", "IOB2": "BI", "IOBES": "BIES"}[scheme]
    return ["O"] + [f"{prefix}-{kind}" for kind in entity_types for prefix in prefixes]


def tag_strings(sentences: kdata.TaggedSentences) -> list[str]:
    """Each sentence's tags as one space-separated string (the preprocessor's `y`)."""
    return [" ".join(tags) for tags in sentences.tags]


def training_batches(sentences: kdata.TaggedSentences, preprocessor, batch_size: int,
                     seed: int):
    """Shuffled, length-bucketed `(features, tag_ids)` batches, repeated forever.

    Returns:
        `(dataset, steps_per_epoch)`; an epoch draws about as many batches
        as the sentences make, in a new order each time (seeded).
    """
    import tensorflow as tf

    lengths = np.array([len(tokens) for tokens in sentences.tokens], "int32")
    dataset = tf.data.Dataset.from_tensor_slices(
        (sentences.texts(), tag_strings(sentences), lengths)
    )
    dataset = dataset.shuffle(len(lengths), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.bucket_by_sequence_length(
        lambda text, tags, length: length, list(BUCKET_BOUNDARIES),
        [batch_size] * (len(BUCKET_BOUNDARIES) + 1),
    )
    dataset = dataset.map(lambda text, tags, length: preprocessor(text, tags),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), int(np.ceil(len(lengths) / batch_size))


def tag_sentences(model, texts: Sequence[str], batch_size: int = 128) -> list[list[str]]:
    """The model's tags of tokenised sentences, in the model's scheme.

    Sentences are batched by length (sorted), then put back in order: the loop
    of `SequenceTagger.tag` (`SequenceTagger._tag`), traced (`predict_on_batch`).
    """
    results = model._tag(texts, batch_size, tokens=False, by_length=True, compiled=True)
    return [result["tags"] for result in results]


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                  scheme: str = "IOB2") -> dict:
    """seqeval's entity-level scores (strict IOB2) and the token accuracy.

    Tags in another scheme are converted to IOB2 first.

    Returns:
        `{"overall": {"precision", "recall", "f1"}, "per_type": {type:
        {"precision", "recall", "f1", "support"}}, "token_accuracy",
        "sentences", "tokens"}`.
    """
    from seqeval import metrics
    from seqeval.scheme import IOB2

    if scheme != "IOB2":
        gold = [kdata.convert_tags(tags, scheme, "IOB2") for tags in gold]
        predicted = [kdata.convert_tags(tags, scheme, "IOB2") for tags in predicted]
    gold, predicted = [list(t) for t in gold], [list(t) for t in predicted]
    report = metrics.classification_report(
        gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    tokens = sum(len(tags) for tags in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    per_type = {
        name: {"precision": float(values["precision"]), "recall": float(values["recall"]),
               "f1": float(values["f1-score"]), "support": int(values["support"])}
        for name, values in report.items() if not name.endswith(" avg")
    }
    overall = report["micro avg"]
    return {
        "overall": {"precision": float(overall["precision"]), "recall": float(overall["recall"]),
                    "f1": float(overall["f1-score"])},
        "per_type": per_type,
        "token_accuracy": correct / max(1, tokens),
        "sentences": len(gold),
        "tokens": tokens,
    }


def score(model, sentences: kdata.TaggedSentences, batch_size: int = 128) -> dict:
    """Tags `sentences` and scores them against their tags (`entity_scores`),
    with the tagging speed in words per second."""
    start = time.perf_counter()
    predicted = tag_sentences(model, sentences.texts(), batch_size)
    seconds = time.perf_counter() - start
    scores = entity_scores(sentences.tags, predicted, sentences.scheme)
    return {**scores, "seconds": seconds, "words_per_second": scores["tokens"] / seconds}


class EntityF1Callback(keras.callbacks.Callback):
    """Scores the validation sentences with seqeval at every epoch's end.

    Adds `val_f1`, `val_precision`, `val_recall`, `val_token_accuracy` and
    `val_f1_<TYPE>` per entity type to the epoch's logs, so the callbacks
    after it (the training record, early stopping, TensorBoard) and the
    progress line see them. Put it before those in `callbacks`. Every
    entity type of the sentences' tag set (the training file's) is logged
    at every epoch, 0 for a type neither in the validation file nor
    predicted (seqeval lists only those), so each epoch has the same keys.
    """

    def __init__(self, sentences: kdata.TaggedSentences, batch_size: int = 128):
        super().__init__()
        self.sentences = sentences
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = score(self.model, self.sentences, self.batch_size)
        logs.update({
            "val_f1": scores["overall"]["f1"],
            "val_precision": scores["overall"]["precision"],
            "val_recall": scores["overall"]["recall"],
            "val_token_accuracy": scores["token_accuracy"],
            **{f"val_f1_{name}": 0.0 for name in self.sentences.entity_types},
            **{f"val_f1_{name}": values["f1"] for name, values in scores["per_type"].items()},
        })
