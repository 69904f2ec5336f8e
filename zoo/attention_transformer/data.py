"""The recipe's data: splits, length-bucketed training batches, evaluation.

`score` is the one evaluation the recipe uses (on its validation split and
on dev.tsv) and `python -m zoo evaluate attention-transformer` runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from kerasattn import data as kdata
from zoo.attention_transformer.defaults import CLASS_WEIGHTS
from zoo.attention_transformer.defaults import validation_sentences_for

# Token-length buckets: a batch is padded only to its own longest text.
BUCKET_BOUNDARIES = (4, 8, 12, 16, 20, 26, 34, 48)
EVALUATION_BATCH_SIZE = 256


class Splits(NamedTuple):
    """The recipe's data.

    Attributes:
        train: the rows trained on.
        validation: the rows every choice is made on (early stopping, the
            seed, ...).
        dev: `dev.tsv`, scored and reported, never chosen on (the same as
            `validation` when no sentences are held out).
        validation_source: what `validation` is, in words.
        sentences: the whole sentences in `train.tsv` (rows that are not a
            phrase of another row).
        held_out: how many of them `validation` holds (0: it is `dev.tsv`).
    """

    train: kdata.TextClassificationData
    validation: kdata.TextClassificationData
    dev: kdata.TextClassificationData
    validation_source: str
    sentences: int
    held_out: int


def read_splits(folder: str | os.PathLike, validation_sentences: Optional[int],
                validation_seed: int) -> Splits:
    """Reads `train.tsv` and `dev.tsv` and draws the validation split.

    Args:
        folder: the data folder.
        validation_sentences: how many whole sentences of `train.tsv` (with
            every phrase of theirs) to hold out for validation; 0 validates
            on `dev.tsv`; `None` follows `defaults.validation_sentences_for`.
        validation_seed: the seed of that draw.

    Returns:
        The splits.
    """
    folder = Path(folder)
    train = kdata.read_text_classification(folder / "train.tsv", min_classes=2)
    dev = kdata.read_text_classification(folder / "dev.tsv", labels=train.label_names)
    sentences = len(kdata.sentence_rows(train))
    if validation_sentences is None:
        validation_sentences = validation_sentences_for(sentences)
    if not validation_sentences:
        return Splits(train, dev, dev, f"{folder / 'dev.tsv'}", sentences, 0)
    try:
        train, validation = kdata.hold_out_sentences(train, validation_sentences, validation_seed)
    except ValueError as error:
        raise ValueError(f"{folder / 'train.tsv'}: --validation-sentences: {error}") from None
    missing = sorted(set(range(len(train.label_names))) - set(train.labels.tolist()))
    if missing:
        raise ValueError(
            f"{folder / 'train.tsv'}: --validation-sentences {validation_sentences} leaves no "
            f"training row of class {[train.label_names[i] for i in missing]}; hold out fewer "
            "sentences"
        )
    return Splits(
        train, validation, dev,
        f"{validation_sentences} sentences held out from {folder / 'train.tsv'} "
        f"(seed {validation_seed}) with their phrases",
        sentences, validation_sentences,
    )


def read_labelled(path: str | os.PathLike,
                  label_names: Sequence[str]) -> kdata.TextClassificationData:
    """Reads a labelled file for a model whose classes are `label_names`.

    Labels may be written as the class names or as class ids (`0`, `1`, ...).

    Raises:
        ValueError: naming the file and line of a label that is neither.
    """
    try:
        return kdata.read_text_classification(path, labels=list(label_names))
    except kdata.DataError as by_name:
        if by_name.line is None:
            raise
        try:
            return kdata.read_text_classification(
                path, labels=[str(i) for i in range(len(label_names))]
            )
        except kdata.DataError:
            raise kdata.DataError(
                by_name.path, by_name.line,
                f"{by_name.problem} (or a class id in 0..{len(label_names) - 1})",
            ) from None


def token_lengths(texts: Sequence[str], preprocessor) -> np.ndarray:
    """Each text's length in tokens, capped at the preprocessor's `sequence_length`."""
    lengths = preprocessor.tokenize(list(texts)).row_lengths().numpy()
    return np.minimum(lengths, preprocessor.sequence_length).astype(np.int32)


def steps_per_epoch(texts: Sequence[str], preprocessor, batch_size: int) -> int:
    """How many of `training_batches`' batches make one pass over `texts`."""
    return _bucketing(token_lengths(texts, preprocessor), preprocessor, batch_size)[1]


def _bucketing(lengths: np.ndarray, preprocessor, batch_size: int) -> tuple[list[int], int]:
    """The bucket boundaries for `lengths`, and the batches of one pass."""
    boundaries = [b for b in BUCKET_BOUNDARIES if b < preprocessor.sequence_length]
    # bucket_by_sequence_length flushes each bucket's remainder, so this is exact.
    buckets = np.searchsorted(boundaries, lengths, side="left")
    return boundaries, int(sum(math.ceil(n / batch_size) for n in np.bincount(buckets) if n))


def for_distribution(features: dict) -> dict:
    """The padding mask as int32 (1 = token): under a distribution strategy
    Keras builds the model from the mean over replicas of the first batch,
    which TensorFlow cannot take of a bool tensor. The models take either."""
    import tensorflow as tf

    return {**features, "padding_mask": tf.cast(features["padding_mask"], tf.int32)}


def training_batches(texts: Sequence[str], labels: Optional[np.ndarray], preprocessor,
                     batch_size: int, seed: int, full_weight_length: int = 0,
                     class_weight: str = "none"):
    """Shuffled, length-bucketed, repeating training batches, preprocessed.

    Args:
        texts: the training texts.
        labels: their labels, or `None` for batches of texts alone (for a
            preprocessor that makes its own targets, such as
            `MaskedTokenPreprocessor`).
        preprocessor: mapped over each batch: `preprocessor(texts, labels,
            weights)`.
        batch_size: texts per batch.
        seed: the shuffle's seed.
        full_weight_length: texts shorter than this many tokens weigh
            `length / full_weight_length` in the loss; 0 weighs all alike.
        class_weight: `"balanced"` also weighs each text by `N / (K * N_c)`
            (N texts, K classes, N_c of the text's class: every class weighs
            the same in the loss, as scikit-learn's "balanced"); `"none"` not.

    Returns:
        `(dataset, steps_per_epoch)`: batches of what the preprocessor makes
        (the mask as `for_distribution` makes it), repeating, one pass being
        `steps_per_epoch` batches.
    """
    import tensorflow as tf

    lengths = token_lengths(texts, preprocessor)
    boundaries, steps = _bucketing(lengths, preprocessor, batch_size)
    if full_weight_length:
        weights = np.minimum(lengths / full_weight_length, 1.0).astype(np.float32)
    else:
        weights = np.ones(len(lengths), np.float32)
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"Expected class_weight in {CLASS_WEIGHTS}, received: "
                         f"class_weight={class_weight!r}")
    if class_weight == "balanced" and labels is not None:
        counts = np.bincount(labels)
        present = np.count_nonzero(counts)
        weights = weights * (len(labels) / (present * counts[labels])).astype(np.float32)
    labels = np.zeros(len(lengths), np.int32) if labels is None else labels

    def preprocess(batch_texts, batch_labels, batch_weights):
        outputs = preprocessor(batch_texts, batch_labels, batch_weights)
        return (for_distribution(outputs[0]),) + tuple(outputs[1:])

    dataset = (
        tf.data.Dataset.from_tensor_slices((tf.constant(list(texts)), labels, weights, lengths))
        .shuffle(len(lengths), seed=seed, reshuffle_each_iteration=True)
        .bucket_by_sequence_length(
            lambda text, label, weight, length: length,
            bucket_boundaries=[b + 1 for b in boundaries],
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        )
        .map(lambda texts, labels, weights, lengths: preprocess(texts, labels, weights),
             num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    return dataset, steps


def evaluation_batches(data: kdata.TextClassificationData, preprocessor,
                       batch_size: int = EVALUATION_BATCH_SIZE):
    """`(features, labels)` batches of `data` in file order, preprocessed."""
    import tensorflow as tf

    return (
        data.to_dataset(batch_size=batch_size, shuffle=False)
        .map(lambda texts, labels: (for_distribution(preprocessor(texts)), labels),
             num_parallel_calls=tf.data.AUTOTUNE)
    )


def score(model, data: kdata.TextClassificationData,
          batch_size: int = EVALUATION_BATCH_SIZE) -> dict:
    """Accuracy of a classifier on labelled data, overall and per class.

    Args:
        model: an `AttentionTransformerClassifier` with a preprocessor.
        data: the rows, labels being the model's class ids.
        batch_size: texts per batch.

    Returns:
        `{"accuracy", "per_class": {class name: accuracy on its rows},
        "examples"}`, accuracies rounded to 4 places; a class without rows
        is left out of `per_class`.
    """
    logits = model.predict(evaluation_batches(data, model.preprocessor, batch_size), verbose=0)
    predictions = np.argmax(logits, axis=-1)
    correct = predictions == data.labels
    names = model.label_names or [str(i) for i in range(model.num_classes)]
    per_class = {
        name: round(float(np.mean(correct[data.labels == index])), 4)
        for index, name in enumerate(names)
        if np.any(data.labels == index)
    }
    return {
        "accuracy": round(float(np.mean(correct)), 4),
        "per_class": per_class,
        "examples": int(len(data.labels)),
    }
