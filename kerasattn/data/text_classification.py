"""Reading text-label TSV/CSV files into a `tf.data.Dataset`."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from kerasattn.data.errors import DataError
from kerasattn.data.errors import read_text

_DELIMITERS = {".tsv": "\t", ".csv": ","}
_DELIMITER_NAMES = {"\t": "tabs", ",": "commas"}
_CANONICAL_INTEGER = re.compile(r"0|[1-9][0-9]*")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive integer, received: {name}={value!r}")
    return value


class TextClassificationData(NamedTuple):
    """The rows of a text-label file, from `read_text_classification`.

    Attributes:
        texts: the texts, in file order.
        labels: int32 array `(N,)`, each row's index into `label_names`.
        label_names: the label strings; label `i` is `label_names[i]`.
    """

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]

    def to_dataset(
        self,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        preprocessor=None,
        drop_remainder: bool = False,
    ) -> tf.data.Dataset:
        """A batched, optionally shuffled and preprocessed, prefetched dataset.

        Args:
            batch_size: positive integer. Defaults to `32`.
            shuffle: shuffle all rows (the buffer holds the whole file),
                in a new order every epoch. Defaults to `True`.
            seed: optional integer; with it, the sequence of epoch orders
                is the same on every run.
            preprocessor: optional callable mapped over each batch of
                texts (for example a `kerasattn.text.TextPreprocessor`),
                with `num_parallel_calls=tf.data.AUTOTUNE`.
            drop_remainder: drop a last, smaller batch. Defaults to `False`.

        Returns:
            A `tf.data.Dataset` of `(texts, labels)`: string `(B,)` (or
            whatever `preprocessor` returns for them) and int32 `(B,)`.

        Example:

        ```python
        train = read_text_classification("sst2/train.tsv")
        dataset = train.to_dataset(batch_size=64, seed=1, preprocessor=preprocessor)
        ```
        """
        _positive_int("batch_size", batch_size)
        dataset = tf.data.Dataset.from_tensor_slices(
            (tf.constant(self.texts, tf.string, shape=[len(self.texts)]), self.labels)
        )
        if shuffle:
            dataset = dataset.shuffle(len(self.texts), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        if preprocessor is not None:
            dataset = dataset.map(
                lambda texts, labels: (preprocessor(texts), labels),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return dataset.prefetch(tf.data.AUTOTUNE)


def _delimiter_for(path: Path, delimiter: str | None) -> str:
    if delimiter is None:
        if path.suffix.lower() not in _DELIMITERS:
            raise ValueError(
                "Expected a file name ending in .tsv or .csv, or a `delimiter`, "
                f"received: {str(path)!r} and delimiter=None"
            )
        return _DELIMITERS[path.suffix.lower()]
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(
            f"Expected `delimiter` to be one character, received: delimiter={delimiter!r}"
        )
    return delimiter


def _check_label_names(labels) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not labels:
        raise ValueError(
            "Expected `labels` to be a non-empty list of label names, "
            f"received: labels={labels!r}"
        )
    names = [str(label) for label in labels]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct `labels`, received: labels={labels!r}")
    return names


def _sorted_label_names(names: set[str]) -> list[str]:
    # Integer labels sort by value, so "0".."K-1" get ids 0..K-1 (and "10"
    # follows "9"); anything else sorts as text.
    if all(_CANONICAL_INTEGER.fullmatch(name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _column_index(
    path: Path, line: int, which: str, column, header_fields: list[str] | None, width: int
) -> int:
    """Resolves a column name (looked up in the header) or index to an index;
    `line` is where the first row (the header, if any) starts."""
    if isinstance(column, str):
        found = [i for i, name in enumerate(header_fields) if name == column]
        if len(found) != 1:
            problem = "no" if not found else "more than one"
            raise DataError(
                path, line,
                f"expected one column named {column!r} (`{which}`), received: {problem} such "
                f"column in the header {header_fields}",
            )
        return found[0]
    if isinstance(column, bool) or not isinstance(column, int) or column < 0:
        raise ValueError(
            f"Expected `{which}` to be a column name or a 0-based index, "
            f"received: {which}={column!r}"
        )
    if column >= width:
        raise DataError(
            path, line,
            f"expected a column {column} (`{which}`, 0-based), received: rows of {width} fields",
        )
    return column


def read_text_classification(
    path: str | os.PathLike,
    text_column: str | int = "sentence",
    label_column: str | int = "label",
    header: bool = True,
    delimiter: str | None = None,
    quotechar: str | None = "auto",
    labels: Sequence[str] | None = None,
    min_classes: int = 1,
) -> TextClassificationData:
    """Reads a text-label TSV or CSV file, strictly.

    The file is UTF-8 (an opening byte-order mark is ignored) and parsed with
    Python's `csv` module in strict mode. Every row must have as many
    fields as the header (or, without a header, as the first row), a
    non-empty text and a non-empty label; surrounding whitespace is
    stripped from both. Trailing blank lines are ignored, a blank line
    between rows is an error. Anything else wrong stops the read with a
    `DataError` naming the file, the line and the problem; nothing is
    skipped.

    Args:
        path: the file.
        text_column: the column of the texts: a header name, or a 0-based
            index. Defaults to `"sentence"` (GLUE's SST-2).
        label_column: the column of the labels, likewise. Defaults to
            `"label"`.
        header: whether the first row names the columns. Defaults to
            `True`; with `False`, columns must be indices.
        delimiter: one character; `None` takes a tab for `.tsv` and a comma
            for `.csv` files. Defaults to `None`.
        quotechar: the character that quotes fields containing the
            delimiter, newlines or itself (doubled inside); `None` for none
            (quotes are ordinary text, as in GLUE's TSV files). `"auto"` uses
            `'"'` for comma-separated files and `None` for any other
            delimiter. Defaults to `"auto"`.
        labels: optional label names in id order (e.g. the training set's
            `label_names` when reading its validation set); a label outside
            them is an error. `None` collects the file's distinct labels,
            sorted: by value if they are all integers (so labels "0".."K-1"
            keep their values as ids), else as text.
        min_classes: positive integer, the fewest distinct labels the file
            must hold: 2 for a training set (a classifier of one class
            learns nothing). Defaults to `1`.

    Returns:
        A `TextClassificationData(texts, labels, label_names)`.

    Raises:
        DataError: (a `ValueError`) for a missing or empty file, a file
            that is not UTF-8, bad quoting, a wrong number of fields, an
            empty text or label, an unknown label, a missing column, or
            fewer than `min_classes` distinct labels.
        ValueError: for invalid arguments.

    Example:

    ```python
    train = read_text_classification("../shared/data/sst2/train.tsv")
    dev = read_text_classification("../shared/data/sst2/dev.tsv", labels=train.label_names)
    train.texts[0], train.labels[0], train.label_names  # ('hide new ...', 0, ['0', '1'])
    ```
    """
    path = Path(path)
    delimiter = _delimiter_for(path, delimiter)
    if quotechar == "auto":
        quotechar = '"' if delimiter == "," else None
    if quotechar is not None and (
        not isinstance(quotechar, str) or len(quotechar) != 1 or quotechar == delimiter
    ):
        raise ValueError(
            "Expected `quotechar` to be one character other than the delimiter, \"auto\" or None, "
            f"received: quotechar={quotechar!r}"
        )
    for which, column in (("text_column", text_column), ("label_column", label_column)):
        if isinstance(column, str) and not header:
            raise ValueError(
                f"Expected `{which}` to be a 0-based column index when header=False, "
                f"received: {which}={column!r}"
            )
    allowed = None if labels is None else _check_label_names(labels)
    _positive_int("min_classes", min_classes)
    content = read_text(path)
    if not content.strip():
        raise DataError(path, None, "expected rows of text and label, received: an empty file")

    reader = csv.reader(
        io.StringIO(content, newline=""),
        delimiter=delimiter,
        quotechar=quotechar,
        quoting=csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL,
        strict=True,
    )
    header_fields = None
    columns = None
    width = None
    blank_line = None
    texts, label_strings = [], []
    last_line = 0
    while True:
        line = last_line + 1  # where the next row starts
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataError(path, line, f"expected well-formed fields, received: {error}") from None
        last_line = reader.line_num
        if not fields:
            blank_line = blank_line or line
            continue
        if blank_line is not None:
            raise DataError(path, blank_line, "expected a row, received: a blank line")
        if width is None:
            width = len(fields)
            if header:
                header_fields = [field.strip() for field in fields]
            columns = (
                _column_index(path, line, "text_column", text_column, header_fields, width),
                _column_index(path, line, "label_column", label_column, header_fields, width),
            )
            if columns[0] == columns[1]:
                raise ValueError(
                    "Expected different columns for `text_column` and `label_column`, "
                    f"received: both are column {columns[0]}"
                )
            if header:
                continue
        if len(fields) != width:
            separator = _DELIMITER_NAMES.get(delimiter, repr(delimiter))
            raise DataError(
                path, line,
                f"expected {width} fields separated by {separator}, received: {len(fields)}",
            )
        text, label = fields[columns[0]].strip(), fields[columns[1]].strip()
        if not text:
            raise DataError(
                path, line, f"expected a text in column {columns[0]}, received: an empty field"
            )
        if not label:
            raise DataError(
                path, line, f"expected a label in column {columns[1]}, received: an empty field"
            )
        if allowed is not None and label not in allowed:
            raise DataError(path, line, f"expected a label in {allowed}, received: {label!r}")
        texts.append(text)
        label_strings.append(label)

    if not texts:
        raise DataError(path, None, "expected at least one row after the header, received: none")
    found = _sorted_label_names(set(label_strings))
    if len(found) < min_classes:
        rows = f"{len(texts):,} row{'s' * (len(texts) != 1)}"
        raise DataError(
            path, None,
            f"expected labels of at least {min_classes} classes, received: "
            f"{len(found)} ({', '.join(map(repr, found))} in all {rows})",
        )
    label_names = allowed if allowed is not None else found
    ids = {name: index for index, name in enumerate(label_names)}
    label_array = np.array([ids[label] for label in label_strings], dtype=np.int32)
    return TextClassificationData(texts, label_array, label_names)


def text_classification_dataset(
    path: str | os.PathLike,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    preprocessor=None,
    drop_remainder: bool = False,
    *,
    text_column: str | int = "sentence",
    label_column: str | int = "label",
    header: bool = True,
    delimiter: str | None = None,
    quotechar: str | None = "auto",
    labels: Sequence[str] | None = None,
    min_classes: int = 1,
) -> tf.data.Dataset:
    """Reads a text-label file into a batched, shuffled, prefetched dataset.

    Shorthand for `read_text_classification(path, ...).to_dataset(...)`;
    call those two when you also need the label names.

    Args:
        path: the TSV or CSV file.
        batch_size, shuffle, seed, preprocessor, drop_remainder: as for
            `TextClassificationData.to_dataset`.
        text_column, label_column, header, delimiter, quotechar, labels,
            min_classes: as for `read_text_classification`.

    Returns:
        A `tf.data.Dataset` of `(texts, labels)` batches, `texts` mapped
        through `preprocessor` when given.

    Example:

    ```python
    dataset = text_classification_dataset(
        "../shared/data/sst2/train.tsv", batch_size=64, seed=1, preprocessor=preprocessor)
    model.fit(dataset, epochs=3)
    ```
    """
    data = read_text_classification(
        path,
        text_column=text_column,
        label_column=label_column,
        header=header,
        delimiter=delimiter,
        quotechar=quotechar,
        labels=labels,
        min_classes=min_classes,
    )
    return data.to_dataset(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        preprocessor=preprocessor,
        drop_remainder=drop_remainder,
    )
