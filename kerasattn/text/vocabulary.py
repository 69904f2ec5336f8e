"""Learning, saving and loading WordPiece vocabularies."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import tensorflow as tf
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bert_vocab

from kerasattn._files import write_atomically
from kerasattn.text.normalization import check_normalization_form
from kerasattn.text.normalization import normalize_text

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SUFFIX_INDICATOR = "##"

# Texts are normalised in batches of this many before the learner splits them.
_NORMALIZE_BATCH = 1024


def check_vocabulary(tokens: Sequence[str], where: str = "vocabulary") -> list[str]:
    """Returns `tokens` as a list after checking that they can be a vocabulary.

    A vocabulary is a non-empty sequence of distinct, non-empty strings
    without whitespace whose first token (id 0) is `"[PAD]"`.
    """
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
        raise ValueError(
            f"Expected `{where}` to be a list of token strings, "
            f"received: {type(tokens).__name__}"
        )
    tokens = list(tokens)
    if not tokens:
        raise ValueError(f"Expected a non-empty `{where}`, received: []")
    seen = {}
    for index, token in enumerate(tokens):
        if not isinstance(token, str) or not token or token != "".join(token.split()):
            raise ValueError(
                f"Expected every token of `{where}` to be a non-empty string without "
                f"whitespace, received: {where}[{index}]={token!r}"
            )
        if token in seen:
            raise ValueError(
                f"Expected distinct tokens in `{where}`, received: {token!r} "
                f"at ids {seen[token]} and {index}"
            )
        seen[token] = index
    if tokens[0] != RESERVED_TOKENS[0]:
        raise ValueError(
            f"Expected `{where}` to start with the padding token "
            f"{RESERVED_TOKENS[0]!r} (id 0), received: {where}[0]={tokens[0]!r}"
        )
    return tokens


def texts_dataset(texts: Iterable[str] | tf.data.Dataset) -> tf.data.Dataset:
    """Training texts, a list of strings or a dataset of string scalars or `(B,)` batches,
    as a dataset of scalar strings; a `ValueError` names what else was given."""
    if isinstance(texts, tf.data.Dataset):
        spec = texts.element_spec
        if (
            not isinstance(spec, tf.TensorSpec)
            or spec.dtype != tf.string
            or spec.shape.rank not in (0, 1)
        ):
            raise ValueError(
                "Expected `texts` to be a dataset of strings (scalars or `(B,)` batches), "
                f"received: element_spec={spec}"
            )
        return texts.unbatch() if spec.shape.rank else texts
    if isinstance(texts, (str, bytes)):
        raise ValueError(
            "Expected `texts` to be an iterable of strings or a tf.data.Dataset, "
            f"received: a single string {texts[:40]!r}"
        )
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"Expected `texts` to hold strings, received: texts[{index}]={text!r}"
            )
    return tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string, shape=[len(texts)]))


def _fit_to_size(vocabulary: list[str], reserved: list[str], size: int) -> list[str]:
    """Drops the rarest learned wordpieces until `size` tokens remain.

    The learner's binary search may stop above its target size. Its list is
    reserved tokens, single characters, then wordpieces by falling count,
    with the `##` character suffixes (count 1) last; those and the
    characters are kept so that every word stays spellable.
    """
    if len(vocabulary) <= size:
        return vocabulary
    kept = set(reserved)
    kept.update(t for t in vocabulary if len(t) == 1)
    kept.update(
        t for t in vocabulary
        if t.startswith(SUFFIX_INDICATOR) and len(t) == len(SUFFIX_INDICATOR) + 1
    )
    if len(kept) > size:
        raise ValueError(
            f"Expected `vocabulary_size` of at least {len(kept)} (the reserved tokens, "
            "every character of the training text and its '##' suffix form), "
            f"received: vocabulary_size={size}"
        )
    room = size - len(kept)
    result = []
    for token in vocabulary:
        if token in kept:
            result.append(token)
        elif room > 0:
            result.append(token)
            room -= 1
    return result


def learn_wordpiece_vocabulary(
    texts: Iterable[str] | tf.data.Dataset,
    vocabulary_size: int = 8000,
    reserved_tokens: Sequence[str] = RESERVED_TOKENS,
    lower_case: bool = True,
    normalization_form: str | None = "NFKC",
    min_count: int = 10,
) -> list[str]:
    """Learns a WordPiece vocabulary from training text.

    The texts are normalised with `normalize_text` (the same function
    `TextPreprocessor` applies, so both see the same characters), split into
    words on whitespace and punctuation by BERT's rules, and passed to
    tensorflow-text's learner
    (`tensorflow_text.tools.wordpiece_vocab.bert_vocab_from_dataset`), which
    searches for the count threshold that gives about `vocabulary_size`
    tokens. Suffix pieces start with `"##"`. Every character of the text
    (the 1,000 most frequent, the learner's alphabet limit) is kept, as a
    token and as a `"##"` suffix, so that words seen in training can be
    spelled; if the learner overshoots the size, the rarest multi-character
    pieces are dropped.

    Args:
        texts: iterable of strings, or a `tf.data.Dataset` of string scalars
            or batches. Iterated once.
        vocabulary_size: positive integer, the maximum number of tokens,
            reserved tokens included. Defaults to `8000`.
        reserved_tokens: tokens placed first, in order; the first must be
            `"[PAD]"` (id 0) and `"[UNK]"` must be among them. Defaults to
            `("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")`.
        lower_case: fold case before learning. Defaults to `True`.
        normalization_form: Unicode normalisation form or `None`. Defaults
            to `"NFKC"`.
        min_count: positive integer; a multi-character piece must occur at
            least this often to be learned (the lower bound of the learner's
            threshold search). Defaults to `10`.

    Returns:
        The vocabulary, a list of at most `vocabulary_size` distinct tokens;
        a token's id is its index.

    Example:

    >>> vocabulary = learn_wordpiece_vocabulary(
    ...     ["a great movie", "a dull movie"], vocabulary_size=60, min_count=2)
    >>> vocabulary[:2], "movie" in vocabulary
    (['[PAD]', '[UNK]'], True)
    """
    reserved = check_vocabulary(reserved_tokens, "reserved_tokens")
    if "[UNK]" not in reserved:
        raise ValueError(
            "Expected '[UNK]' among `reserved_tokens`, "
            f"received: reserved_tokens={reserved}"
        )
    for name, value in (("vocabulary_size", vocabulary_size), ("min_count", min_count)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"Expected `{name}` to be a positive integer, received: {name}={value!r}"
            )
    check_normalization_form(normalization_form)

    normalized = (
        texts_dataset(texts)
        .batch(_NORMALIZE_BATCH)
        .map(lambda batch: normalize_text(batch, lower_case, normalization_form))
    )
    # The text is already normalised, so the learner's own BERT splitter is
    # asked only to split (no lower-casing, no accent stripping).
    try:
        vocabulary = bert_vocab.bert_vocab_from_dataset(
            normalized,
            vocab_size=vocabulary_size,
            reserved_tokens=reserved,
            bert_tokenizer_params={},
            learn_params={"lower_thresh": min_count, "joiner": SUFFIX_INDICATOR},
        )
    except StopIteration:
        # What the learner raises when it counted no words at all.
        raise ValueError("Expected `texts` with at least one word, received: none") from None
    return _fit_to_size(vocabulary, reserved, vocabulary_size)


def save_vocabulary(tokens: Sequence[str], path: str | os.PathLike) -> None:
    """Writes a vocabulary, one token per line, UTF-8.

    The file is written to a temporary name in the same folder and renamed
    into place, so a reader never sees half a vocabulary.

    Args:
        tokens: the vocabulary (checked as by `TextPreprocessor`).
        path: the file to write; its folder must exist.

    Example:

    >>> save_vocabulary(["[PAD]", "[UNK]", "movie"], "/tmp/vocab.txt")
    >>> load_vocabulary("/tmp/vocab.txt")
    ['[PAD]', '[UNK]', 'movie']
    """
    tokens = check_vocabulary(tokens, "tokens")

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write("".join(token + "\n" for token in tokens))

    write_atomically(path, write)


def load_vocabulary(path: str | os.PathLike) -> list[str]:
    """Reads a vocabulary written by `save_vocabulary`.

    Args:
        path: a UTF-8 file with one token per line (`\\n` or `\\r\\n`).

    Returns:
        The tokens, in file order.

    Raises:
        ValueError: naming the file and line, for a file that is not UTF-8,
            is empty, has an empty line, a token with whitespace, a repeated
            token, or a first token other than `"[PAD]"`.

    Example:

    >>> load_vocabulary("/tmp/vocab.txt")[:2]
    ['[PAD]', '[UNK]']
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: expected UTF-8 text, received: byte {data[error.start]:#04x}"
        ) from None
    if not text:
        raise ValueError(f"{path}:1: expected one token per line, received: an empty file")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last token
    tokens, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        token = line[:-1] if line.endswith("\r") else line
        if not token or token != "".join(token.split()):
            problem = "an empty line" if not token.strip() else f"a token with whitespace {token!r}"
            raise ValueError(f"{path}:{number}: expected one token per line, received: {problem}")
        if token in first_line:
            raise ValueError(
                f"{path}:{number}: expected distinct tokens, received: {token!r} "
                f"again (first on line {first_line[token]})"
            )
        first_line[token] = number
        tokens.append(token)
    if tokens[0] != RESERVED_TOKENS[0]:
        raise ValueError(
            f"{path}:1: expected the padding token {RESERVED_TOKENS[0]!r} first (id 0), "
            f"received: {tokens[0]!r}"
        )
    return tokens
