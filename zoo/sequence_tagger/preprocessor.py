"""`SequenceTaggerPreprocessor`: sentences of tokens to word and character ids (tensorflow-text)."""

from __future__ import annotations

import collections
from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from zoo.preprocessor import Preprocessor
from zoo.preprocessor import pack_x_y_sample_weight

PAD = "[PAD]"
UNKNOWN = "[UNK]"
RESERVED = (PAD, UNKNOWN)


def normalize_words(words):
    """The key a word is looked up by: case folded, every digit a `0`.

    Works on Python strings (for learning the vocabulary) and on string
    tensors (in the preprocessor), so that both agree: "1996" and "2001"
    share the entry "0000", "Germany" and "GERMANY" the entry "germany".
    """
    if isinstance(words, str):
        return normalize_words(tf.constant([words]))[0].numpy().decode("utf-8")
    return tf.strings.regex_replace(tf_text.case_fold_utf8(words), "[0-9]", "0")


def learn_vocabularies(
    sentences: Iterable[Sequence[str]], min_word_count: int = 1, min_character_count: int = 1
) -> tuple[list[str], list[str]]:
    """The word and character vocabularies of tokenised training sentences.

    Args:
        sentences: the training sentences, each a sequence of tokens.
        min_word_count: a normalised word (see `normalize_words`) needs this
            many occurrences to get its own id; rarer words read as `[UNK]`.
        min_character_count: the same for characters (case kept).

    Returns:
        `(words, characters)`: `["[PAD]", "[UNK]", ...]` each, the rest by
        falling count then alphabetically (so the result is deterministic).
    """
    sentences = [list(sentence) for sentence in sentences]
    tokens = [token for sentence in sentences for token in sentence]
    if not tokens:
        raise ValueError("Expected training sentences with tokens, received: none")
    normalized = normalize_words(tf.constant(tokens)).numpy()
    word_counts = collections.Counter(word.decode("utf-8") for word in normalized)
    character_counts = collections.Counter(c for token in tokens for c in token)

    def ranked(counts, minimum):
        kept = [item for item, count in counts.items() if count >= minimum and item not in RESERVED]
        return list(RESERVED) + sorted(kept, key=lambda item: (-counts[item], item))

    return ranked(word_counts, min_word_count), ranked(character_counts, min_character_count)


class _StringLookup:
    """Exact string → id lookup without a TensorFlow hash table.

    TFLite cannot convert the initializers of `tf.lookup` tables that a
    SavedModel holds (its id signature would fail to convert beside the
    string signature), so keys are found by their 62-bit fingerprints
    (`tf.strings.to_hash_bucket_fast`) in a sorted constant with
    `tf.searchsorted`: only core ops, and an unknown string maps to
    `default`. Two keys with one fingerprint are refused at construction.
    """

    BUCKETS = 2**62

    def __init__(self, keys: Sequence[str], default: int):
        fingerprints = tf.strings.to_hash_bucket_fast(list(keys), self.BUCKETS).numpy()
        order = np.argsort(fingerprints, kind="stable")
        if len(np.unique(fingerprints)) != len(fingerprints):
            raise ValueError("Expected keys with distinct fingerprints, received: a collision")
        self.fingerprints = tf.constant(fingerprints[order], tf.int64)
        self.ids = tf.constant(order.astype("int32"))
        self.default = default

    def lookup(self, strings: tf.Tensor) -> tf.Tensor:
        """The ids of a 1-D string tensor."""
        fingerprints = tf.strings.to_hash_bucket_fast(strings, self.BUCKETS)
        size = tf.shape(self.fingerprints)[0]
        positions = tf.minimum(tf.searchsorted(self.fingerprints, fingerprints), size - 1)
        found = tf.gather(self.fingerprints, positions) == fingerprints
        return tf.where(found, tf.gather(self.ids, positions), self.default)


def _check_entries(name: str, entries: Sequence[str], reserved: Sequence[str]) -> list[str]:
    entries = list(entries)
    if list(entries[: len(reserved)]) != list(reserved):
        raise ValueError(
            f"Expected `{name}` to start with {list(reserved)}, received: {entries[:len(reserved)]}"
        )
    if len(set(entries)) != len(entries):
        duplicates = sorted({e for e in entries if entries.count(e) > 1})[:5]
        raise ValueError(f"Expected `{name}` without duplicates, received: {duplicates}")
    return entries


@keras.saving.register_keras_serializable(package="zoo")
class SequenceTaggerPreprocessor(Preprocessor):
    """Tokenised sentences to word ids, character ids and a padding mask; tags to tag ids.

    A sentence is one string of whitespace-separated tokens (as CoNLL files
    hold them, joined by spaces). Each token becomes one position: its word
    id (looked up case folded with digits as `0`, see `normalize_words`;
    unknown words are `[UNK]`) and the ids of its first `max_word_length`
    characters (case kept, unknown characters `[UNK]`). Tags are one string
    of whitespace-separated tag names per sentence, one per token, so labels
    align with positions one to one and `tag_names_of` maps predictions back.

    Args:
        vocabulary: the words, `["[PAD]", "[UNK]", ...]` (id = index), as
            `learn_vocabularies` returns; in a preset `assets/vocabulary.txt`.
        characters: the characters, `["[PAD]", "[UNK]", ...]`; in a preset
            `assets/characters.txt`.
        tag_names: the tags, `"O"` first (id = index); in a preset
            `assets/tags.txt`.
        max_word_length: characters kept per token (longer tokens are cut).
        sequence_length: tokens kept per sentence (longer sentences are cut,
            their tags too).
        **kwargs: base layer arguments such as `name`.

    Call arguments:
        x: `(B,)` sentences.
        y: optional `(B,)` tag strings, one tag per token.
        sample_weight: optional, returned unchanged.

    Returns:
        `{"word_ids": int32 (B, T), "character_ids": int32 (B, T,
        max_word_length), "padding_mask": bool (B, T)}`, `T` the longest
        sentence of the batch; with `y`, `(features, tag_ids)` with `tag_ids`
        int32 `(B, T)`, padded with 0.

    Example:

    ```python
    preprocessor = SequenceTaggerPreprocessor(
        ["[PAD]", "[UNK]", "eu", "rejects"], ["[PAD]", "[UNK]", "E", "U"], ["O", "B-ORG"])
    features, tags = preprocessor(["EU rejects"], ["B-ORG O"])
    features["word_ids"]  # [[2, 3]]; tags: [[1, 0]]
    ```
    """

    asset_files = {
        "vocabulary": "vocabulary.txt",
        "characters": "characters.txt",
        "tag_names": "tags.txt",
    }

    def __init__(
        self,
        vocabulary: Sequence[str],
        characters: Sequence[str],
        tag_names: Sequence[str],
        max_word_length: int = 16,
        sequence_length: int = 256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("max_word_length", max_word_length),
                            ("sequence_length", sequence_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Expected `{name}` to be a positive integer, received: "
                                 f"{name}={value!r}")
        tag_names = list(tag_names)
        if not tag_names or tag_names[0] != "O" or len(set(tag_names)) != len(tag_names):
            raise ValueError(
                f"Expected `tag_names` distinct with \"O\" first, received: {tag_names[:5]}"
            )
        # Tuples: Keras and TensorFlow would wrap a list attribute.
        self._vocabulary = tuple(_check_entries("vocabulary", vocabulary, RESERVED))
        self._characters = tuple(_check_entries("characters", characters, RESERVED))
        self._tag_names = tuple(tag_names)
        self.max_word_length = max_word_length
        self.sequence_length = sequence_length
        self._word_table = _StringLookup(self._vocabulary, RESERVED.index(UNKNOWN))
        self._character_table = _StringLookup(self._characters, RESERVED.index(UNKNOWN))
        self._tag_table = _StringLookup(self._tag_names, -1)
        self._tag_strings = tf.constant(self._tag_names, tf.string)

    @property
    def vocabulary(self) -> list[str]:
        return list(self._vocabulary)

    @property
    def characters(self) -> list[str]:
        return list(self._characters)

    @property
    def tag_names(self) -> list[str]:
        return list(self._tag_names)

    def tokenize(self, x) -> tf.RaggedTensor:
        """The tokens of each sentence, `(B, None)`, cut to `sequence_length`."""
        return tf.strings.split(tf.convert_to_tensor(x, tf.string))[:, : self.sequence_length]

    def call(self, x, y=None, sample_weight=None):
        tokens = self.tokenize(x)
        word_ids = tf.ragged.map_flat_values(self._word_table.lookup, normalize_words(tokens))
        characters = tf.strings.unicode_split(tokens, "UTF-8")[:, :, : self.max_word_length]
        character_ids = tf.ragged.map_flat_values(self._character_table.lookup, characters)
        features = {
            "word_ids": word_ids.to_tensor(0),
            "character_ids": character_ids.to_tensor(0, shape=[None, None, self.max_word_length]),
            "padding_mask": tf.sequence_mask(tokens.row_lengths()),
        }
        if y is not None:
            y = self.tag_ids(y, tokens.row_lengths())
        return pack_x_y_sample_weight(features, y, sample_weight)

    def tag_ids(self, tags, lengths=None) -> tf.Tensor:
        """`(B,)` tag strings to int32 `(B, T)` ids, padded with 0.

        Raises (as a TensorFlow error, also inside `tf.data`) for a tag not in
        `tag_names` or, given the sentences' `lengths`, another count of tags
        than of tokens. `kerasattn.data.read_conll` checks both with file and
        line first, so these fire only for data that bypassed the reader.
        """
        names = tf.strings.split(tf.convert_to_tensor(tags, tf.string))[:, : self.sequence_length]
        ids = tf.ragged.map_flat_values(self._tag_table.lookup, names)
        checks = [tf.debugging.assert_non_negative(
            ids.flat_values, message=f"Expected tags among {list(self._tag_names)}")]
        if lengths is not None:
            checks.append(tf.debugging.assert_equal(
                names.row_lengths(), lengths, message="Expected one tag per token"))
        with tf.control_dependencies(checks):
            return tf.identity(ids.to_tensor(0))

    def tag_names_of(self, tag_ids, padding_mask) -> list[list[str]]:
        """Tag ids `(B, T)` back to tag names, one list per sentence, padding left out."""
        tag_ids = np.asarray(keras.ops.convert_to_numpy(tag_ids))
        padding_mask = np.asarray(keras.ops.convert_to_numpy(padding_mask), bool)
        return [
            [self._tag_names[i] for i in row[mask]] for row, mask in zip(tag_ids, padding_mask)
        ]

    def compute_output_spec(self, x, y=None, sample_weight=None):
        batch = tuple(x.shape)[:1]
        features = {
            "word_ids": keras.KerasTensor(batch + (None,), dtype="int32"),
            "character_ids": keras.KerasTensor(batch + (None, self.max_word_length),
                                               dtype="int32"),
            "padding_mask": keras.KerasTensor(batch + (None,), dtype="bool"),
        }
        if y is not None:
            y = keras.KerasTensor(batch + (None,), dtype="int32")
        return pack_x_y_sample_weight(features, y, sample_weight)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "characters": self.characters,
            "tag_names": self.tag_names,
            "max_word_length": self.max_word_length,
            "sequence_length": self.sequence_length,
        }
