"""A Keras layer that turns raw strings into padded WordPiece ids."""

from __future__ import annotations

import os
from typing import Sequence

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from kerasattn.text.normalization import check_normalization_form
from kerasattn.text.normalization import normalize_text
from kerasattn.text.vocabulary import SUFFIX_INDICATOR
from kerasattn.text.vocabulary import check_vocabulary
from kerasattn.text.vocabulary import load_vocabulary


def string_batch(inputs) -> tuple[tf.Tensor, bool]:
    """Returns the inputs as a `(B,)` string tensor, and whether they were a scalar."""
    strings = tf.convert_to_tensor(inputs)
    if strings.dtype != tf.string:
        raise ValueError(
            f"Expected `inputs` of dtype string, received: inputs.dtype={strings.dtype.name}"
        )
    shape = strings.shape
    if shape.rank == 2 and shape[1] == 1:
        return tf.squeeze(strings, axis=1), False
    if shape.rank == 0:
        return strings[tf.newaxis], True
    if shape.rank != 1:
        raise ValueError(
            f"Expected `inputs` of shape (B,) or (B, 1), received: inputs.shape={tuple(shape)}"
        )
    return strings, False


def padded_outputs(ids: tf.RaggedTensor, sequence_length: int, scalar: bool) -> dict:
    """`{"token_ids", "padding_mask"}` of ragged `(B, None)` ids padded with 0 to
    `sequence_length`; the first row alone where the input was a scalar string."""
    outputs = {
        "token_ids": ids.to_tensor(default_value=0, shape=[None, sequence_length]),
        "padding_mask": tf.sequence_mask(ids.row_lengths(), sequence_length),
    }
    if scalar:
        outputs = {key: value[0] for key, value in outputs.items()}
    return outputs


def padded_output_spec(inputs, sequence_length: int) -> dict:
    """`padded_outputs`'s spec for symbolic `(B,)` or `(B, 1)` string inputs."""
    shape = tuple(inputs.shape)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise ValueError(
            f"Expected `inputs` of shape (B,) or (B, 1), received: inputs.shape={shape}"
        )
    shape = shape[:1] + (sequence_length,)
    return {
        "token_ids": keras.KerasTensor(shape, dtype="int32"),
        "padding_mask": keras.KerasTensor(shape, dtype="bool"),
    }


@keras.saving.register_keras_serializable(package="kerasattn")
class TextPreprocessor(keras.layers.Layer):
    """Text preprocessing layer: raw strings to padded WordPiece ids and a mask.

    For each string:

    1. normalise it with `kerasattn.text.normalize_text` (control characters
       to spaces, then, if `lower_case`, `tensorflow_text.case_fold_utf8`,
       then `tensorflow_text.normalize_utf8(normalization_form)`);
    2. split it into words on whitespace and punctuation (BERT's rules; each
       punctuation mark and CJK character is a word of its own) and each word
       into the longest-match-first WordPiece tokens of the vocabulary, with
       `tensorflow_text.FastWordpieceTokenizer`; a word that cannot be spelled
       with the vocabulary becomes `unknown_token`;
    3. keep the first `sequence_length` tokens and pad with id 0 (`"[PAD]"`).

    No `[CLS]`/`[SEP]` tokens are added. The layer has no weights and uses
    TensorFlow ops only: it runs eagerly, inside `tf.data.Dataset.map`,
    inside a `tf.function` taking `tf.TensorSpec((None,), tf.string)`, and in
    a SavedModel (the tokenizer's model is saved with it). Use the same
    `lower_case` and `normalization_form` as `learn_wordpiece_vocabulary`.

    Args:
        vocabulary: list of tokens (id = index; the first must be `"[PAD]"`),
            or the path of a file written by `save_vocabulary`. The tokens
            themselves are stored in the config, so a `.keras` file holding
            this layer needs no other file.
        sequence_length: positive integer, the length outputs are truncated
            and padded to. Defaults to `128`.
        lower_case: whether to fold case. Defaults to `True`.
        normalization_form: `"NFC"`, `"NFKC"`, `"NFD"`, `"NFKD"` or `None`.
            Defaults to `"NFKC"`.
        unknown_token: the token for words the vocabulary cannot spell; must
            be in the vocabulary. Defaults to `"[UNK]"`.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: strings of shape `(B,)` or `(B, 1)` (or a scalar string): a
            tensor, NumPy array or list.

    Returns:
        A dict: `"token_ids"`, int32 `(B, sequence_length)`, and
        `"padding_mask"`, bool `(B, sequence_length)`, `True` at real tokens
        (the "may attend" convention of `kerasattn.layers`). For a scalar
        input the batch axis is absent.

    Example:

    ```python
    preprocessor = TextPreprocessor(
        ["[PAD]", "[UNK]", "a", "great", "movie", "##s", "!"], sequence_length=6)
    preprocessor(["A great MOVIES!"])["token_ids"]  # [[2, 3, 4, 5, 6, 0]]
    preprocessor.tokens(["A great MOVIES!"])
    # [[b"a", b"great", b"movie", b"##s", b"!", b"[PAD]"]]
    ```
    """

    def __init__(
        self,
        vocabulary: Sequence[str] | str | os.PathLike,
        sequence_length: int = 128,
        lower_case: bool = True,
        normalization_form: str | None = "NFKC",
        unknown_token: str = "[UNK]",
        **kwargs,
    ):
        super().__init__(**kwargs)
        where = None
        if isinstance(vocabulary, (str, os.PathLike)):
            where = os.fspath(vocabulary)
            vocabulary = load_vocabulary(vocabulary)
        vocabulary = check_vocabulary(vocabulary)
        if (
            isinstance(sequence_length, bool)
            or not isinstance(sequence_length, int)
            or sequence_length <= 0
        ):
            raise ValueError(
                "Expected `sequence_length` to be a positive integer, "
                f"received: sequence_length={sequence_length!r}"
            )
        if unknown_token not in vocabulary:
            raise ValueError(
                f"Expected `unknown_token` to be in the vocabulary, received: "
                f"unknown_token={unknown_token!r}"
            )
        self.sequence_length = sequence_length
        self.lower_case = bool(lower_case)
        self.normalization_form = check_normalization_form(normalization_form)
        self.unknown_token = unknown_token
        # A tuple: Keras and TensorFlow would wrap a list attribute.
        self._vocabulary = tuple(vocabulary)
        try:
            self._tokenizer = tf_text.FastWordpieceTokenizer(
                vocab=vocabulary,
                suffix_indicator=SUFFIX_INDICATOR,
                token_out_type=tf.int64,
                unknown_token=unknown_token,
                no_pretokenization=False,
                support_detokenization=True,
            )
        except RuntimeError as error:
            if "No valid vocab tokens" not in str(error):
                raise
            # Words are split on punctuation first, so a token holding one
            # (a reserved "[...]" token, "a.b", "##.") can never match a word.
            shown = vocabulary if len(vocabulary) <= 8 else [*vocabulary[:8], "..."]
            problem = (
                "a token the tokenizer can match (a word or a word piece without punctuation, "
                f"or one punctuation character), received: {len(vocabulary)} tokens, none "
                f"such: {shown}"
            )
            if where is not None:
                raise ValueError(f"{where}: expected {problem}") from None
            raise ValueError(f"Expected `vocabulary` to hold {problem}") from None
        self._id_to_token = tf.constant(vocabulary, dtype=tf.string)
        # Strings stay strings: Keras must not try to convert them to floats.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    @property
    def vocabulary(self) -> list[str]:
        """The tokens, a token's id being its index."""
        return list(self._vocabulary)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocabulary)

    def _tokenize_batch(self, strings: tf.Tensor) -> tf.RaggedTensor:
        normalized = normalize_text(strings, self.lower_case, self.normalization_form)
        return tf.cast(self._tokenizer.tokenize(normalized), tf.int32)

    def tokenize(self, inputs) -> tf.RaggedTensor | tf.Tensor:
        """All token ids of each string, neither truncated nor padded.

        Args:
            inputs: strings, as for `call`.

        Returns:
            int32 `tf.RaggedTensor` of shape `(B, None)`; for a scalar input
            an int32 `(None,)` tensor.
        """
        strings, scalar = string_batch(inputs)
        ids = self._tokenize_batch(strings)
        return ids[0] if scalar else ids

    def call(self, inputs):
        strings, scalar = string_batch(inputs)
        ids = self._tokenize_batch(strings)[:, : self.sequence_length]
        return padded_outputs(ids, self.sequence_length, scalar)

    def compute_output_spec(self, inputs):
        return padded_output_spec(inputs, self.sequence_length)

    def id_to_token(self, token_ids) -> tf.Tensor:
        """The token strings of `token_ids` (any shape; id 0 is `"[PAD]"`)."""
        return tf.gather(self._id_to_token, token_ids)

    def tokens(self, inputs) -> tf.Tensor:
        """The token string at every position of `call`'s `"token_ids"`.

        For showing which tokens a model attended to: position `t` of the
        result is the token whose id is at position `t` of `token_ids`
        (`"[PAD]"` at padding), so it lines up with attention weights.

        Args:
            inputs: strings, as for `call`.

        Returns:
            string tensor `(B, sequence_length)` (`(sequence_length,)` for a
            scalar input).
        """
        return self.id_to_token(self(inputs)["token_ids"])

    def detokenize(self, token_ids) -> tf.Tensor:
        """Joins token ids back into text (normalised, one space between words).

        Args:
            token_ids: int `(B, T)` padded ids as returned by `call` (the
                trailing padding is dropped), a `(T,)` sequence, or an int
                `tf.RaggedTensor` of shape `(B, None)`.

        Returns:
            string tensor `(B,)`, or a scalar string for a `(T,)` input.
            Suffix pieces are joined to their word; unknown words read
            `unknown_token`.
        """
        if isinstance(token_ids, tf.RaggedTensor):
            return self._tokenizer.detokenize(tf.cast(token_ids, tf.int64))
        token_ids = tf.cast(tf.convert_to_tensor(token_ids), tf.int64)
        scalar = token_ids.shape.rank == 1
        if scalar:
            token_ids = token_ids[tf.newaxis]
        if token_ids.shape.rank != 2:
            raise ValueError(
                "Expected `token_ids` of shape (B, T) or (T,), "
                f"received: token_ids.shape={tuple(token_ids.shape)}"
            )
        text = self._tokenizer.detokenize(tf.RaggedTensor.from_tensor(token_ids, padding=0))
        return text[0] if scalar else text

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary": list(self._vocabulary),
                "sequence_length": self.sequence_length,
                "lower_case": self.lower_case,
                "normalization_form": self.normalization_form,
                "unknown_token": self.unknown_token,
            }
        )
        return config
