"""SentencePiece subwords: learning a model, and a Keras layer from strings to ids and back.

SentencePiece rather than WordPiece for text that is generated, as in
translation: it keeps whitespace as part of its pieces (`"▁"`), so
detokenising reproduces the text exactly, punctuation spacing included,
which BLEU scored on the raw output needs (`benchmarks/subword_vocab.py`
measures both).
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
import unicodedata
from typing import Iterable

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from kerasattn.text.preprocessor import padded_output_spec
from kerasattn.text.preprocessor import padded_outputs
from kerasattn.text.preprocessor import string_batch
from kerasattn.text.vocabulary import texts_dataset

SUBWORD_RESERVED_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
PAD_ID, UNKNOWN_ID, START_ID, END_ID = range(len(SUBWORD_RESERVED_TOKENS))
MODEL_TYPES = ("unigram", "bpe")

# Every byte is a piece of its own, so text with characters not seen in
# training is spelled in bytes and survives a round trip instead of
# becoming "[UNK]".
_BYTE_PIECES = 256
# The learned model depends on the trainer's thread count; fixing it makes
# the model the same on every machine.
_TRAINER_THREADS = 4


def _nfc_rules() -> str:
    """SentencePiece normalisation rules (its TSV format) that compose text to NFC.

    Each character's full canonical decomposition maps to the character,
    and each character NFC replaces (such as the Ohm sign) to its
    replacement. Hangul syllables are left out: their 11,172 rules would
    triple the model's size, for text this package does not translate.
    """
    rules = {}
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000 or 0xAC00 <= code <= 0xD7A3:
            continue  # surrogates; Hangul syllables
        character = chr(code)
        composed = unicodedata.normalize("NFC", character)
        if composed != character:
            rules[character] = composed
        decomposed = unicodedata.normalize("NFD", character)
        if decomposed != character and unicodedata.normalize("NFC", decomposed) == character:
            rules[decomposed] = character

    def hex_codes(text: str) -> str:
        return " ".join(f"{ord(c):X}" for c in text)

    return "".join(f"{hex_codes(s)}\t{hex_codes(t)}\n" for s, t in rules.items())


def learn_sentencepiece_model(
    texts: Iterable[str] | tf.data.Dataset,
    vocabulary_size: int = 8000,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> bytes:
    """Learns a SentencePiece model from training text.

    Trains with the `sentencepiece` package (needed for learning only;
    `SubwordPreprocessor` runs on tensorflow-text's ops). The model:

    - reserves ids 0-3 for `"[PAD]"`, `"[UNK]"`, `"[START]"` and `"[END]"`
      (`SUBWORD_RESERVED_TOKENS`; constants `PAD_ID`, `UNKNOWN_ID`,
      `START_ID`, `END_ID`);
    - holds a piece for each of the 256 bytes, so a character missing from
      the training text is spelled in bytes (no `"[UNK]"` for any input);
    - composes text to Unicode NFC (a decomposed `"a"` + `"◌̈"` is `"ä"`;
      not Hangul), changes nothing else, and strips surrounding whitespace
      and runs of spaces to one space, so that tokenising and then
      detokenising returns such text unchanged.

    Args:
        texts: iterable of strings, or a `tf.data.Dataset` of string
            scalars or batches; empty strings are skipped. For a joint
            vocabulary of two languages pass the texts of both.
        vocabulary_size: integer, the most pieces, the 4 reserved and 256
            byte pieces included; the model has fewer when the text has
            fewer distinct pieces. Defaults to `8000`.
        model_type: `"unigram"` (Kudo 2018) or `"bpe"` (byte-pair
            encoding). Defaults to `"unigram"`.
        character_coverage: float in (0, 1], the share of the text's
            characters that get pieces of their own; the rarest others are
            spelled in bytes. Defaults to `1.0`.

    Returns:
        The serialized model (`bytes`), for `SubwordPreprocessor(model)`;
        writing it to a file gives a standard SentencePiece `.model` file.

    Example:

    ```python
    model = learn_sentencepiece_model(train.sources + train.targets, vocabulary_size=8000)
    preprocessor = SubwordPreprocessor(model, sequence_length=64)
    ```
    """
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    minimum = len(SUBWORD_RESERVED_TOKENS) + _BYTE_PIECES + 1
    if isinstance(vocabulary_size, bool) or not isinstance(vocabulary_size, int) or (
        vocabulary_size < minimum
    ):
        raise ValueError(
            f"Expected `vocabulary_size` to be an integer of at least {minimum} (4 reserved "
            f"tokens, {_BYTE_PIECES} byte pieces and one more), "
            f"received: vocabulary_size={vocabulary_size!r}"
        )
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"Expected `model_type` to be one of {MODEL_TYPES}, received: model_type={model_type!r}"
        )
    if (
        isinstance(character_coverage, bool)
        or not isinstance(character_coverage, (int, float))
        or not 0 < character_coverage <= 1
    ):
        raise ValueError(
            "Expected `character_coverage` to be a number in (0, 1], "
            f"received: character_coverage={character_coverage!r}"
        )
    texts = [text.decode("utf-8") for text in texts_dataset(texts).as_numpy_iterator()]
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError("Expected `texts` with at least one non-empty string, received: none")

    model = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        rules = os.path.join(folder, "nfc.tsv")
        with open(rules, "w", encoding="utf-8") as file:
            file.write(_nfc_rules())
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=model,
                vocab_size=vocabulary_size,
                # A soft limit: a small text yields a smaller model, not an error.
                hard_vocab_limit=False,
                model_type=model_type,
                character_coverage=float(character_coverage),
                byte_fallback=True,
                normalization_rule_tsv=rules,
                pad_id=PAD_ID,
                unk_id=UNKNOWN_ID,
                bos_id=START_ID,
                eos_id=END_ID,
                pad_piece=SUBWORD_RESERVED_TOKENS[PAD_ID],
                unk_piece=SUBWORD_RESERVED_TOKENS[UNKNOWN_ID],
                bos_piece=SUBWORD_RESERVED_TOKENS[START_ID],
                eos_piece=SUBWORD_RESERVED_TOKENS[END_ID],
                num_threads=_TRAINER_THREADS,
                minloglevel=2,
            )
        except RuntimeError as error:
            # Such as more characters than `vocabulary_size` leaves room for.
            raise ValueError(
                f"Expected texts SentencePiece can learn from, received: {error}"
            ) from None
    # The rules are compiled into the model; the path of their temporary
    # file would make every model differ.
    proto = sentencepiece_model_pb2.ModelProto.FromString(model.getvalue())
    proto.normalizer_spec.name = "nfc"
    proto.normalizer_spec.ClearField("normalization_rule_tsv")
    return proto.SerializeToString()


@keras.saving.register_keras_serializable(package="kerasattn")
class SubwordPreprocessor(keras.layers.Layer):
    """Subword preprocessing layer: raw strings to padded ids, and ids back to strings.

    Tokenises with a SentencePiece model (from `learn_sentencepiece_model`)
    on tensorflow-text's `SentencepieceTokenizer` op, so it runs eagerly,
    inside `tf.data.Dataset.map`, inside a `tf.function` taking
    `tf.TensorSpec((None,), tf.string)` and in a SavedModel. `detokenize`
    inverts `tokenize`: for text in NFC with single spaces between words
    and none around, `detokenize(tokenize(s)) == s`, byte for byte, for any
    characters (those the model has no piece for are spelled in bytes).
    Bytes that are not UTF-8 read as U+FFFD.

    Reserved ids: 0 `"[PAD]"`, 1 `"[UNK]"`, 2 `"[START]"`, 3 `"[END]"`
    (`PAD_ID`, `UNKNOWN_ID`, `START_ID`, `END_ID`).

    Args:
        model: the serialized SentencePiece model (`bytes`) or the path of a
            `.model` file; its first four pieces must be the reserved
            tokens. The model itself is stored in the config (base64), so a
            `.keras` file holding this layer needs no other file.
        sequence_length: positive integer, the length `call` truncates and
            pads to, `"[START]"` and `"[END]"` included. Defaults to `128`.
        add_start: whether `call` puts `"[START]"` first (a decoder's
            input). Defaults to `False`.
        add_end: whether `call` puts `"[END]"` after the last token (a
            decoder's labels; also kept when the text is truncated).
            Defaults to `False`.
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
    train = kerasattn.data.read_parallel_text("multi30k/train.en", "multi30k/train.de")
    model = learn_sentencepiece_model(train.sources + train.targets, vocabulary_size=8000)
    preprocessor = SubwordPreprocessor(model, sequence_length=8, add_end=True)
    features = preprocessor(["A dog runs."])
    features["token_ids"]  # [[265, 326, 714, 260, 3, 0, 0, 0]]: "▁A", "▁dog", "▁runs", "."
    preprocessor.detokenize(features["token_ids"])  # [b"A dog runs."]
    ```
    """

    def __init__(
        self,
        model: bytes | str | os.PathLike,
        sequence_length: int = 128,
        add_start: bool = False,
        add_end: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            with open(model, "rb") as file:
                model = file.read()
        if not isinstance(model, bytes) or not model:
            raise ValueError(
                "Expected `model` to be a serialized SentencePiece model (bytes) or the path of "
                f"a .model file, received: {type(model).__name__}"
            )
        if (
            isinstance(sequence_length, bool)
            or not isinstance(sequence_length, int)
            or sequence_length < 1 + bool(add_start) + bool(add_end)
        ):
            raise ValueError(
                "Expected `sequence_length` to be a positive integer with room for a token "
                f"beside [START] and [END], received: sequence_length={sequence_length!r}"
            )
        self.sequence_length = sequence_length
        self.add_start = bool(add_start)
        self.add_end = bool(add_end)
        self._model = model
        try:
            # Eagerly, also when the layer is built inside a tf.function.
            with tf.init_scope():
                tokenizer = self._sentencepiece()
                pieces = tokenizer.id_to_string(tf.range(tokenizer.vocab_size())).numpy()
        except tf.errors.OpError:
            raise ValueError(
                "Expected `model` to be a serialized SentencePiece model, received: "
                f"{len(model):,} bytes it cannot parse"
            ) from None
        # A tuple: Keras and TensorFlow would wrap a list attribute.
        self._vocabulary = tuple(piece.decode("utf-8") for piece in pieces)
        reserved = self._vocabulary[: len(SUBWORD_RESERVED_TOKENS)]
        if reserved != SUBWORD_RESERVED_TOKENS:
            raise ValueError(
                f"Expected a model whose first pieces are {list(SUBWORD_RESERVED_TOKENS)} (ids "
                f"0-3, as learn_sentencepiece_model makes), received: {list(reserved)}"
            )
        self._id_to_token = tf.constant(self._vocabulary, dtype=tf.string)
        # Strings stay strings: Keras must not try to convert them to floats.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    def _sentencepiece(self) -> tf_text.SentencepieceTokenizer:
        # A new op at each use, not one kept from __init__: the op's kernel owns the model's
        # resource, and TensorFlow drops eager kernels (and with them the resource) whenever
        # the global seed is set (`keras.utils.set_random_seed`), which a kept handle would not
        # survive. Eagerly the kernel is cached per model; in a graph it is built once.
        return tf_text.SentencepieceTokenizer(self._model, out_type=tf.int32)

    @property
    def model(self) -> bytes:
        """The serialized SentencePiece model (the contents of a `.model` file)."""
        return self._model

    @property
    def vocabulary(self) -> list[str]:
        """The pieces, a piece's id being its index (`"▁"` marks a word's start)."""
        return list(self._vocabulary)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocabulary)

    def tokenize(self, inputs) -> tf.RaggedTensor | tf.Tensor:
        """All subword ids of each string, without reserved ids, neither truncated nor padded.

        Args:
            inputs: strings, as for `call`.

        Returns:
            int32 `tf.RaggedTensor` of shape `(B, None)`; for a scalar input
            an int32 `(None,)` tensor.
        """
        strings, scalar = string_batch(inputs)
        ids = self._sentencepiece().tokenize(strings)
        return ids[0] if scalar else ids

    def call(self, inputs):
        strings, scalar = string_batch(inputs)
        room = self.sequence_length - self.add_start - self.add_end
        ids = self._sentencepiece().tokenize(strings)[:, :room]
        parts = [ids]
        if self.add_start:
            parts.insert(0, tf.fill([ids.nrows(), 1], START_ID))
        if self.add_end:
            parts.append(tf.fill([ids.nrows(), 1], END_ID))
        if len(parts) > 1:
            ids = tf.concat(parts, axis=1)
        return padded_outputs(ids, self.sequence_length, scalar)

    def compute_output_spec(self, inputs):
        return padded_output_spec(inputs, self.sequence_length)

    def id_to_token(self, token_ids) -> tf.Tensor:
        """The pieces of `token_ids` (any shape; ids outside the vocabulary read `"[UNK]"`)."""
        token_ids = tf.convert_to_tensor(token_ids)
        return tf.gather(self._id_to_token, self._known(token_ids))

    def _known(self, token_ids):
        """`token_ids` with ids outside the vocabulary replaced by `UNKNOWN_ID`."""
        inside = (token_ids >= 0) & (token_ids < self.vocabulary_size)
        return tf.where(inside, token_ids, tf.cast(UNKNOWN_ID, token_ids.dtype))

    def detokenize(self, token_ids) -> tf.Tensor:
        """Joins subword ids back into text.

        Reads each row up to its first `"[END]"` (a generated sequence's
        end); `"[PAD]"` and `"[START]"` read as nothing, `"[UNK]"` and ids
        outside the vocabulary as `" ⁇ "`.

        Args:
            token_ids: integer ids: `(B, T)` (padded, as `call` or a decoder
                makes them), `(T,)`, or a `tf.RaggedTensor` `(B, None)`.

        Returns:
            string tensor `(B,)`, or a scalar string for a `(T,)` input.
        """
        scalar = False
        if not isinstance(token_ids, tf.RaggedTensor):
            token_ids = tf.convert_to_tensor(token_ids)
            scalar = token_ids.shape.rank == 1
            if scalar:
                token_ids = token_ids[tf.newaxis]
            if token_ids.shape.rank != 2:
                raise ValueError(
                    "Expected `token_ids` of shape (B, T) or (T,), "
                    f"received: token_ids.shape={tuple(token_ids.shape)}"
                )
            token_ids = tf.RaggedTensor.from_tensor(token_ids)
        if not token_ids.dtype.is_integer:
            raise ValueError(
                f"Expected integer `token_ids`, received: token_ids.dtype={token_ids.dtype.name}"
            )
        token_ids = self._known(tf.cast(token_ids, tf.int32).to_tensor(default_value=PAD_ID))
        # Positions from the first [END] on are dropped; padding reads as nothing.
        before_end = tf.equal(tf.math.cumsum(tf.cast(token_ids == END_ID, tf.int32), axis=1), 0)
        text = self._sentencepiece().detokenize(tf.ragged.boolean_mask(token_ids, before_end))
        return text[0] if scalar else text

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": base64.b64encode(self._model).decode("ascii"),
                "sequence_length": self.sequence_length,
                "add_start": self.add_start,
                "add_end": self.add_end,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = base64.b64decode(config["model"])
        return cls(**config)
