"""Reading and writing CoNLL column files of tagged tokens (named entities, chunks).

One token per line, its columns separated by tabs or spaces, a blank line
between sentences, `-DOCSTART-` lines between documents (CoNLL-2003,
WNUT). Entity tags are `O` or `PREFIX-TYPE` in one of three schemes:

- `IOB1`: `I-` marks every token of an entity; `B-` is used only for
  the first token of an entity that directly follows another entity of
  the same type.
- `IOB2`: `B-` marks the first token of every entity, `I-` the others.
- `IOBES`: `S-` marks a one-token entity; longer ones are `B-`, `I-`...,
  `E-`.

```python
from kerasattn import data

train = data.read_conll("../shared/data/conll2003/train.txt")
valid = data.read_conll("../shared/data/conll2003/valid.txt", tag_names=train.tag_names)
train.tokens[0], train.tags[0]  # (['EU', 'rejects', ...], ['B-ORG', 'O', ...])
train.entity_types  # ['LOC', 'MISC', 'ORG', 'PER']
```
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Sequence

from kerasattn._files import write_atomically
from kerasattn.data.errors import DataError
from kerasattn.data.errors import read_text

SCHEMES = ("IOB1", "IOB2", "IOBES")

_PREFIXES = {"IOB1": "BI", "IOB2": "BI", "IOBES": "BIES"}
_PREFIX_ORDER = {"B": 0, "I": 1, "E": 2, "S": 3}
_DOCSTART = "-DOCSTART-"
# ASCII whitespace only: a token may hold a no-break space or another Unicode
# space, which `str.split()` would cut it at.
_SPACE = " \t\r\f\v"
_SEPARATOR = re.compile(f"[{_SPACE}]+")


@dataclasses.dataclass
class TaggedSentences:
    """Tokenised sentences with one tag per token, from `read_conll`.

    Attributes:
        tokens: the tokens of each sentence (none holds whitespace).
        tags: the tags of each sentence, one per token, in `scheme`.
        scheme: the scheme of `tags`, one of `SCHEMES`.
        path: the file read.
        lines: the 1-based line of each sentence's first token (its
            `i`-th token is on line `lines[s] + i`).
        source_scheme: the scheme of the file as read (the detected one
            when `read_conll` was given `scheme="auto"`), or `None`.
        known_tag_names: the `tag_names` given to `read_conll` (the
            training set's), or `None`; `tag_names` returns them when set,
            so that every split maps tags to the same ids.
    """

    tokens: list[list[str]]
    tags: list[list[str]]
    scheme: str
    path: str
    lines: list[int]
    source_scheme: str | None = None
    known_tag_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def tag_names(self) -> list[str]:
        """The tag set: `known_tag_names` if set, else the tags found.

        The tags found are listed `"O"` first (always present), then the
        others sorted by entity type, then by prefix in the order B, I, E,
        S, so that tag `i` is `tag_names[i]` on every run.
        """
        if self.known_tag_names is not None:
            return list(self.known_tag_names)
        found = {tag for sentence in self.tags for tag in sentence if tag != "O"}
        return ["O"] + sorted(found, key=lambda tag: (tag[2:], _PREFIX_ORDER[tag[0]]))

    @property
    def entity_types(self) -> list[str]:
        """The entity types of `tag_names`, sorted, e.g. `["LOC", "MISC", "ORG", "PER"]`."""
        return sorted({tag[2:] for tag in self.tag_names if tag != "O"})

    def texts(self) -> list[str]:
        """The sentences as strings, their tokens joined by single spaces."""
        return [" ".join(sentence) for sentence in self.tokens]


def _check_scheme(name: str, scheme, allowed: Sequence[str]) -> str:
    if scheme not in allowed:
        raise ValueError(f"Expected `{name}` to be one of {list(allowed)}, received: {scheme!r}")
    return scheme


def _split_tag(tag: str, prefixes: str) -> tuple[str, str] | None:
    """`("O", "")` for `"O"`, `(prefix, type)` for a tag `"PREFIX-TYPE"` whose
    prefix is in `prefixes`, `None` for anything else."""
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if not dash or not entity_type or len(prefix) != 1 or prefix not in prefixes:
        return None
    return prefix, entity_type


def _parse_tags(tags: Sequence[str], scheme: str) -> list[tuple[str, str]]:
    parsed = []
    for index, tag in enumerate(tags):
        split = _split_tag(tag, _PREFIXES[scheme]) if isinstance(tag, str) else None
        if split is None:
            raise ValueError(
                f"Expected {_tag_pattern(scheme)} tags, received: {tag!r} at index {index}"
            )
        parsed.append(split)
    return parsed


def _tag_pattern(scheme: str) -> str:
    prefixes = ", ".join(f"{prefix}-" for prefix in _PREFIXES[scheme])
    return f"{scheme} ('O', or {prefixes} followed by an entity type)"


def _spans(parsed: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """The entities of a sentence, read as conlleval and seqeval read them.

    A token continues the open entity when it is an `I-` or `E-` of the
    same type following a `B-` or `I-`; any other non-`O` tag starts an
    entity (so an `I-` after `O` starts one), and `E-`/`S-` end one.
    """
    spans = []
    start = None  # of the open entity
    previous = ("O", "")
    for index, (prefix, entity_type) in enumerate(parsed):
        continues = (
            start is not None
            and prefix in ("I", "E")
            and previous[0] in ("B", "I")
            and previous[1] == entity_type
        )
        if not continues:
            if start is not None:
                spans.append((previous[1], start, index))
                start = None
            if prefix != "O":
                start = index
        if prefix in ("E", "S"):
            spans.append((entity_type, start, index + 1))
            start = None
        previous = (prefix, entity_type)
    if start is not None:
        spans.append((previous[1], start, len(parsed)))
    return spans


def _render(spans: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    tags = ["O"] * length
    previous_end = {}  # entity type -> end of the last entity of that type
    for entity_type, start, end in spans:
        if scheme == "IOBES" and end - start == 1:
            tags[start] = f"S-{entity_type}"
        else:
            first = "B"
            if scheme == "IOB1" and previous_end.get(entity_type) != start:
                first = "I"
            tags[start] = f"{first}-{entity_type}"
            tags[start + 1 : end] = [f"I-{entity_type}"] * (end - start - 1)
            if scheme == "IOBES":
                tags[end - 1] = f"E-{entity_type}"
        previous_end[entity_type] = end
    return tags


def entity_spans(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """The entities of one sentence's tags.

    A sequence that is invalid in `scheme` (such as an `I-PER` after `O`
    in IOB2) is read the way conlleval and seqeval read it: an `I-` or
    `E-` that cannot continue an entity starts one.

    Args:
        tags: the tags of one sentence.
        scheme: the scheme of `tags`, one of `SCHEMES`. Defaults to
            `"IOB2"`.

    Returns:
        A list of `(entity_type, start, end)` in sentence order, `end`
        exclusive.

    Raises:
        ValueError: for a tag that is not `"O"` or a prefix of `scheme`
            followed by `-` and an entity type.

    Example:

    ```python
    entity_spans(["B-PER", "I-PER", "O", "B-LOC"])  # [('PER', 0, 2), ('LOC', 3, 4)]
    ```
    """
    _check_scheme("scheme", scheme, SCHEMES)
    return _spans(_parse_tags(tags, scheme))


def convert_tags(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Converts one sentence's tags from one scheme to another.

    The conversion goes through `entity_spans`, so it is exact both ways
    for sequences valid in their scheme, and repairs invalid ones the way
    conlleval reads them.

    Args:
        tags: the tags of one sentence.
        source: the scheme of `tags`, one of `SCHEMES`.
        target: the scheme to convert to, one of `SCHEMES`.

    Returns:
        The tags in `target`, one per tag of `tags`.

    Raises:
        ValueError: for a tag that is not valid in `source`.

    Example:

    ```python
    convert_tags(["B-PER", "I-PER", "B-PER", "O"], "IOB2", "IOB1")
    # ['I-PER', 'I-PER', 'B-PER', 'O']
    convert_tags(["B-PER", "I-PER", "B-PER", "O"], "IOB2", "IOBES")
    # ['B-PER', 'E-PER', 'S-PER', 'O']
    ```
    """
    _check_scheme("source", source, SCHEMES)
    _check_scheme("target", target, SCHEMES)
    return _render(entity_spans(tags, source), len(tags), target)


def _detect_scheme(sentences: list[list[tuple[str, str]]]) -> str:
    starts_with_i = starts_with_b = False
    for parsed in sentences:
        previous = ("O", "")
        for prefix, entity_type in parsed:
            if prefix in ("E", "S"):
                return "IOBES"
            after_same_type = previous[0] != "O" and previous[1] == entity_type
            if not after_same_type:
                starts_with_i = starts_with_i or prefix == "I"
                starts_with_b = starts_with_b or prefix == "B"
            previous = (prefix, entity_type)
    return "IOB1" if starts_with_i and not starts_with_b else "IOB2"


def _scheme_error(parsed: list[tuple[str, str]], scheme: str) -> tuple[int, str, str] | None:
    """The first tag invalid in `scheme`: its index, what was expected of its
    neighbour (to follow "in <scheme>"), and the neighbour found."""

    def name(index: int) -> str:
        if index < 0:
            return "the start of the sentence"
        if index >= len(parsed):
            return "the end of the sentence"
        prefix, entity_type = parsed[index]
        return repr(f"{prefix}-{entity_type}" if entity_type else prefix)

    def neighbour_is(index: int, prefixes: str, entity_type: str) -> bool:
        return (
            0 <= index < len(parsed)
            and parsed[index][0] in prefixes
            and parsed[index][1] == entity_type
        )

    for index, (prefix, entity_type) in enumerate(parsed):
        tag, before, after = f"{prefix}-{entity_type}", index - 1, index + 1
        if scheme == "IOB1" and prefix == "B" and not neighbour_is(before, "BI", entity_type):
            return index, (
                f"B-{entity_type} or I-{entity_type} before {tag}, as B- only separates "
                "adjacent entities of a type"
            ), name(before)
        if scheme == "IOB2" and prefix == "I" and not neighbour_is(before, "BI", entity_type):
            return index, f"B-{entity_type} or I-{entity_type} before {tag}", name(before)
        if scheme == "IOBES":
            if prefix in ("I", "E") and not neighbour_is(before, "BI", entity_type):
                return index, f"B-{entity_type} or I-{entity_type} before {tag}", name(before)
            if prefix in ("B", "I") and not neighbour_is(after, "IE", entity_type):
                return index, f"I-{entity_type} or E-{entity_type} after {tag}", name(after)
    return None


def _check_tag_names(tag_names, scheme: str) -> list[str]:
    if isinstance(tag_names, (str, bytes)) or not isinstance(tag_names, Sequence) or not tag_names:
        raise ValueError(
            f"Expected `tag_names` to be a non-empty list of tags, received: {tag_names!r}"
        )
    names = list(tag_names)
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct `tag_names`, received: {tag_names!r}")
    for name in names:
        if not isinstance(name, str) or _split_tag(name, _PREFIXES[scheme]) is None:
            raise ValueError(
                f"Expected `tag_names` to be {_tag_pattern(scheme)} tags (`output_scheme`), "
                f"received: {name!r}"
            )
    return names


def _column(path: Path, line: int, which: str, column: int, width: int) -> int:
    if not -width <= column < width:
        raise DataError(
            path, line,
            f"expected a column {column} (`{which}`), received: a line of {width} columns",
        )
    return column % width


def read_conll(
    path: str | os.PathLike,
    token_column: int = 0,
    tag_column: int = -1,
    scheme: str = "auto",
    output_scheme: str = "IOB2",
    strict: bool = True,
    tag_names: Sequence[str] | None = None,
) -> TaggedSentences:
    """Reads a CoNLL column file of tagged tokens, strictly.

    The file is UTF-8 (an opening byte-order mark is ignored), one token
    per line. Columns are separated by any run of tabs or spaces; the first
    token line fixes their number, and every other token line must have as
    many. Blank or whitespace-only lines end a sentence (several in a row
    are fine, and the last sentence needs none after it). A `-DOCSTART-`
    line (whose first or token column is `-DOCSTART-`, whatever its number
    of columns) ends the sentence too, and is skipped. Anything wrong stops
    the read with a `DataError` naming the file, the line and the problem.

    `scheme="auto"` detects the file's scheme: IOBES if any tag starts with
    `E-` or `S-`; else IOB1 if some entity starts with `I-` (after `O`, at
    a sentence start or after another type) and none starts with `B-`
    (every `B-X` follows a `B-X` or `I-X`, only separating adjacent
    entities); else IOB2 (also for a file without entities).

    Args:
        path: the file.
        token_column: the 0-based index of the tokens' column (negative
            counts from the last). Defaults to `0`.
        tag_column: the index of the tags' column, likewise. Defaults to
            `-1` (the last column, CoNLL-2003's NER tags).
        scheme: the file's scheme, one of `SCHEMES`, or `"auto"` to detect
            it. Defaults to `"auto"`.
        output_scheme: the scheme of the tags returned, one of `SCHEMES`.
            Defaults to `"IOB2"`.
        strict: with `True`, a tag sequence invalid in the file's scheme is
            an error: in IOB2, an `I-X` not after `B-X` or `I-X`; in IOBES,
            that, an `E-X` not after `B-X` or `I-X`, and a `B-X` or `I-X` not
            followed by `I-X` or `E-X`; in IOB1, a `B-X` not after `B-X` or
            `I-X`. With `False` they are read as conlleval and seqeval read
            them (an `I-X` that cannot continue an entity starts one).
            Defaults to `True`.
        tag_names: optional tags in `output_scheme` (the training set's
            `tag_names`, when reading its validation set); a tag outside
            them is an error, and the result's `tag_names` are these. `None`
            collects the file's tags.

    Returns:
        A `TaggedSentences`.

    Raises:
        DataError: (a `ValueError`) for a missing, empty or non-UTF-8
            file, a line with another number of columns than the first, a
            column out of range, a malformed tag, a tag sequence invalid in
            the scheme (when `strict`), or a tag outside `tag_names`.
        ValueError: for invalid arguments.

    Example:

    ```python
    train = read_conll("../shared/data/conll2003/train.txt")
    valid = read_conll("../shared/data/conll2003/valid.txt", tag_names=train.tag_names)
    len(train), train.source_scheme, train.tag_names[:3]  # (14041, 'IOB2', ['O', 'B-LOC', 'I-LOC'])
    ```
    """
    for which, column in (("token_column", token_column), ("tag_column", tag_column)):
        if isinstance(column, bool) or not isinstance(column, int):
            raise ValueError(f"Expected `{which}` to be an integer, received: {column!r}")
    _check_scheme("scheme", scheme, SCHEMES + ("auto",))
    _check_scheme("output_scheme", output_scheme, SCHEMES)
    known = None if tag_names is None else _check_tag_names(tag_names, output_scheme)
    path = Path(path)
    content = read_text(path)

    prefixes = "BIES" if scheme == "auto" else _PREFIXES[scheme]
    tokens, parsed_tags, lines = [], [], []
    sentence_tokens, sentence_tags = [], []
    width = columns = None
    for number, line in enumerate(content.split("\n"), start=1):
        stripped = line.strip(_SPACE)
        fields = _SEPARATOR.split(stripped) if stripped else []
        is_docstart = bool(fields) and _DOCSTART in (
            fields[0],
            fields[token_column] if -len(fields) <= token_column < len(fields) else None,
        )
        if not fields or is_docstart:
            if sentence_tokens:
                tokens.append(sentence_tokens)
                parsed_tags.append(sentence_tags)
                sentence_tokens, sentence_tags = [], []
            continue
        if width is None:
            width = len(fields)
            columns = (
                _column(path, number, "token_column", token_column, width),
                _column(path, number, "tag_column", tag_column, width),
            )
            if columns[0] == columns[1]:
                raise DataError(
                    path, number,
                    f"expected different token and tag columns, received: token_column="
                    f"{token_column} and tag_column={tag_column} are both column {columns[0]} "
                    f"of {width}",
                )
            first_line = number
        if len(fields) != width:
            raise DataError(
                path, number,
                f"expected {width} columns (as on line {first_line}), received: {len(fields)}",
            )
        tag = fields[columns[1]]
        split = _split_tag(tag, prefixes)
        if split is None:
            expected = _tag_pattern(scheme) if scheme != "auto" else (
                "'O', or B-, I-, E-, S- followed by an entity type"
            )
            raise DataError(path, number, f"expected a tag {expected}, received: {tag!r}")
        if not sentence_tokens:
            lines.append(number)
        sentence_tokens.append(fields[columns[0]])
        sentence_tags.append(split)
    if sentence_tokens:
        tokens.append(sentence_tokens)
        parsed_tags.append(sentence_tags)
    if not tokens:
        raise DataError(path, None, "expected sentences of tagged tokens, received: none")

    source = _detect_scheme(parsed_tags) if scheme == "auto" else scheme
    described = f"{source} (detected)" if scheme == "auto" else source
    allowed = None if known is None else set(known)
    tags = []
    for parsed, first in zip(parsed_tags, lines):
        if strict:
            error = _scheme_error(parsed, source)
            if error is not None:
                index, expected, received = error
                raise DataError(
                    path, first + index,
                    f"expected {expected} in {described}, received: {received} "
                    "(strict=False reads it as conlleval does)",
                )
        converted = _render(_spans(parsed), len(parsed), output_scheme)
        if allowed is not None:
            for index, tag in enumerate(converted):
                if tag not in allowed:
                    prefix, entity_type = parsed[index]
                    read = f"{prefix}-{entity_type}" if entity_type else prefix
                    source_note = "" if read == tag else f" (read as {read!r} in {described})"
                    types = ", ".join(sorted({name[2:] for name in known if name != "O"}))
                    raise DataError(
                        path, first + index,
                        f"expected a tag of `tag_names` (entity types: {types}), "
                        f"received: {tag!r}{source_note}",
                    )
        tags.append(converted)
    return TaggedSentences(
        tokens=tokens,
        tags=tags,
        scheme=output_scheme,
        path=os.fspath(path),
        lines=lines,
        source_scheme=source,
        known_tag_names=known,
    )


def _check_fields(name: str, sentences, expected_lengths: list[int] | None) -> list[list[str]]:
    """Each sentence's fields as a list, checked to read back as one column each."""
    if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Sequence):
        raise ValueError(f"Expected `{name}` to be a list of sentences, received: {sentences!r}")
    if expected_lengths is not None and len(sentences) != len(expected_lengths):
        raise ValueError(
            f"Expected {len(expected_lengths)} sentences of `{name}`, "
            f"received: {len(sentences)}"
        )
    checked = []
    for index, sentence in enumerate(sentences):
        sentence = list(sentence)
        if expected_lengths is None and not sentence:
            raise ValueError(
                f"Expected tokens in every sentence, received: none in sentence {index}"
            )
        if expected_lengths is not None and len(sentence) != expected_lengths[index]:
            raise ValueError(
                f"Expected {expected_lengths[index]} `{name}` in sentence {index} "
                f"(one per token), received: {len(sentence)}"
            )
        for field in sentence:
            if not isinstance(field, str) or not field or re.search(f"[{_SPACE}\n]", field):
                raise ValueError(
                    f"Expected `{name}` to be non-empty strings without whitespace, "
                    f"received: {field!r} in sentence {index}"
                )
        checked.append(sentence)
    return checked


def write_conll(
    path: str | os.PathLike,
    sentences: TaggedSentences | tuple[Sequence[Sequence[str]], Sequence[Sequence[str]]],
    predicted: Sequence[Sequence[str]] | None = None,
) -> None:
    """Writes tagged sentences as a CoNLL column file, atomically.

    Each token is a line `token tag` (or `token tag predicted`, the layout
    conlleval reads), space-separated; a blank line follows each sentence.
    The file is UTF-8 with `\\n` line ends, and is written to a temporary
    file renamed into place, so a reader never sees half of it.
    `read_conll` reads it back.

    Args:
        path: the file to write; its folder must exist.
        sentences: a `TaggedSentences`, or a `(tokens, tags)` pair of
            per-sentence lists.
        predicted: optional predicted tags, one list per sentence and one
            tag per token, written as a third column.

    Raises:
        ValueError: for an empty sentence, lists of different lengths, or
            a token or tag that is empty or holds whitespace (it would not
            read back).

    Example:

    ```python
    write_conll("valid.predictions.txt", valid, predicted=predicted_tags)
    ```
    """
    if isinstance(sentences, TaggedSentences):
        tokens, tags = sentences.tokens, sentences.tags
    elif isinstance(sentences, (tuple, list)) and len(sentences) == 2:
        tokens, tags = sentences
    else:
        raise ValueError(
            "Expected `sentences` to be a TaggedSentences or a (tokens, tags) pair, "
            f"received: {type(sentences).__name__}"
        )
    columns = [_check_fields("tokens", tokens, None)]
    lengths = [len(sentence) for sentence in columns[0]]
    columns.append(_check_fields("tags", tags, lengths))
    if predicted is not None:
        columns.append(_check_fields("predicted", predicted, lengths))
    text = "".join(
        "".join(" ".join(fields) + "\n" for fields in zip(*sentence)) + "\n"
        for sentence in zip(*columns)
    )

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)

    write_atomically(path, write)
