"""A validation split for phrase-labelled data such as SST's treebank.

SST-2's `train.tsv` labels every phrase of every sentence: a sentence's
phrases are substrings of it (word-aligned), so a random row split leaks a
held-out sentence's words and labels into training through its phrases.
`hold_out_sentences` holds whole sentences out together with every phrase of
theirs.
"""

from __future__ import annotations

import numpy as np

from kerasattn.data.text_classification import TextClassificationData


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _spans(words: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every contiguous run of words (every phrase a sentence can contain)."""
    return {words[i:j] for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def sentence_rows(data: TextClassificationData) -> np.ndarray:
    """The rows that are sentences: texts that are no other text's phrase.

    Returns:
        The sorted indices of the rows whose words are not a contiguous
        part of a longer row's words.
    """
    words = [_words(text) for text in data.texts]
    order = sorted(range(len(words)), key=lambda i: -len(words[i]))
    contained: set[tuple[str, ...]] = set()
    sentences = []
    for index in order:
        if words[index] and words[index] not in contained:
            sentences.append(index)
            contained |= _spans(words[index])
    return np.sort(np.asarray(sentences, dtype=np.int64))


def hold_out_sentences(
    data: TextClassificationData, count: int, seed: int = 0
) -> tuple[TextClassificationData, TextClassificationData]:
    """Splits off `count` whole sentences, and every phrase of theirs.

    Args:
        data: phrase-labelled rows (sentences and their phrases).
        count: how many sentences to hold out, drawn at random.
        seed: the draw's seed; the same seed gives the same split.

    Returns:
        `(train, validation)`: `validation` holds the drawn sentences
        only (in file order); `train` holds every other row except those
        whose words occur as a contiguous run in a drawn sentence, so no
        part of a validation sentence is trained on with its label.

    Raises:
        ValueError: if `count` is not in [1, number of sentences).
    """
    sentences = sentence_rows(data)
    if not 0 < count < len(sentences):
        raise ValueError(
            f"expected 0 < count < {len(sentences)} (the sentences in the data), "
            f"received: count={count}"
        )
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(sentences, size=count, replace=False))
    held_spans: set[tuple[str, ...]] = set()
    for index in held:
        held_spans |= _spans(_words(data.texts[index]))
    keep = np.asarray(
        [_words(text) not in held_spans for text in data.texts], dtype=bool
    )

    def subset(rows) -> TextClassificationData:
        return TextClassificationData(
            [data.texts[i] for i in rows], data.labels[rows], list(data.label_names)
        )

    return subset(np.flatnonzero(keep)), subset(held)
