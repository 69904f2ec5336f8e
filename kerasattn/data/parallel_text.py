"""Reading and writing parallel text: sentence pairs for translation.

Two layouts, as Multi30k, WMT and OPUS ship them:

- two aligned files, one sentence a line (`train.en` / `train.de`): line
  `i` of the one translates line `i` of the other;
- one TSV file whose header is `source<TAB>target`, a pair a row.

```python
from kerasattn import data

train = data.read_parallel_text("../shared/data/multi30k/train.en",
                                "../shared/data/multi30k/train.de")
train.sources[0], train.targets[0]
# ('Two young, White males are outside near many bushes.',
#  'Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.')
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from kerasattn._files import write_atomically
from kerasattn.data.errors import DataError
from kerasattn.data.errors import read_text

TSV_HEADER = ("source", "target")


class ParallelText(NamedTuple):
    """Sentence pairs, from `read_parallel_text`.

    Attributes:
        sources: the source sentences, in file order.
        targets: their translations; `targets[i]` translates `sources[i]`.
    """

    sources: list[str]
    targets: list[str]

    def to_dataset(
        self,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        preprocessor: Callable | None = None,
        drop_remainder: bool = False,
    ) -> tf.data.Dataset:
        """A batched, optionally shuffled and preprocessed, prefetched dataset.

        Args:
            batch_size: positive integer. Defaults to `32`.
            shuffle: shuffle all pairs (the buffer holds them all), in a new
                order every epoch. Defaults to `True`.
            seed: optional integer; with it, the sequence of epoch orders is
                the same on every run.
            preprocessor: optional callable `preprocessor(sources, targets)`
                mapped over each batch of string pairs (such as a zoo
                preprocessor returning `(features, labels)`), with
                `num_parallel_calls=tf.data.AUTOTUNE`.
            drop_remainder: drop a last, smaller batch. Defaults to `False`.

        Returns:
            A `tf.data.Dataset` of `(sources, targets)`, string `(B,)` each,
            or of whatever `preprocessor` returns for them.

        Example:

        ```python
        train = read_parallel_text("multi30k/train.en", "multi30k/train.de")
        for sources, targets in train.to_dataset(batch_size=2, seed=1).take(1):
            print(sources.numpy(), targets.numpy())
        ```
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                "Expected `batch_size` to be a positive integer, "
                f"received: batch_size={batch_size!r}"
            )
        count = len(self.sources)
        dataset = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant(self.sources, tf.string, shape=[count]),
                tf.constant(self.targets, tf.string, shape=[count]),
            )
        )
        if shuffle:
            dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        if preprocessor is not None:
            dataset = dataset.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)


def _lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8, without their `\\n` or `\\r\\n`.

    Only `\\n` ends a line: a sentence may hold other characters that
    `str.splitlines` would cut it at (form feeds, U+2028).
    """
    content = read_text(path)
    if not content:
        raise DataError(path, None, "expected one sentence a line, received: an empty file")
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _sentence(
    path: Path, number: int, text: str, what: str = "a sentence", empty: str = "an empty line"
) -> str:
    sentence = text.strip()
    if not sentence:
        raise DataError(path, number, f"expected {what}, received: {empty}")
    return sentence


def _read_aligned(source_path: Path, target_path: Path) -> ParallelText:
    source_lines = _lines(source_path)
    target_lines = _lines(target_path)
    if len(source_lines) != len(target_lines):
        # The error points at the first line that has no partner.
        shorter, longer = sorted(
            ((source_path, len(source_lines)), (target_path, len(target_lines))),
            key=lambda item: item[1],
        )
        raise DataError(
            shorter[0], shorter[1] + 1,
            f"expected a sentence aligned with {longer[0]}:{shorter[1] + 1}, received: the end "
            f"of the file ({shorter[1]:,} lines here, {longer[1]:,} in {longer[0]})",
        )
    sources = [_sentence(source_path, i, text) for i, text in enumerate(source_lines, start=1)]
    targets = [_sentence(target_path, i, text) for i, text in enumerate(target_lines, start=1)]
    return ParallelText(sources, targets)


def _read_tsv(path: Path) -> ParallelText:
    lines = _lines(path)
    header = tuple(field.strip() for field in lines[0].split("\t"))
    if header != TSV_HEADER:
        raise DataError(
            path, 1,
            f"expected the header {chr(9).join(TSV_HEADER)!r}, received: {lines[0]!r}",
        )
    sources, targets = [], []
    for number, line in enumerate(lines[1:], start=2):
        _sentence(path, number, line, "a row")
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                path, number,
                f"expected 2 fields separated by a tab (source, target), received: {len(fields)}",
            )
        sources.append(
            _sentence(path, number, fields[0], "a source sentence in field 1", "an empty field")
        )
        targets.append(
            _sentence(path, number, fields[1], "a target sentence in field 2", "an empty field")
        )
    if not sources:
        raise DataError(path, None, "expected at least one row after the header, received: none")
    return ParallelText(sources, targets)


def read_parallel_text(
    path: str | os.PathLike, target_path: str | os.PathLike | None = None
) -> ParallelText:
    """Reads sentence pairs from two aligned files or one TSV file, strictly.

    Files are UTF-8 (an opening byte-order mark is ignored); only `\\n` (or
    `\\r\\n`) ends a line. Surrounding whitespace is stripped from every
    sentence. Anything wrong stops the read with a `DataError` naming the
    file, the line and the problem; nothing is skipped.

    - With `target_path`: `path` holds the source sentences and
      `target_path` their translations, one sentence a line, line for line.
    - Without it: `path` is a TSV file whose first line is the header
      `source<TAB>target`, then one pair a line. Fields are not quoted (a
      quote is ordinary text), so a sentence cannot hold a tab.

    Args:
        path: the source file, or the TSV file.
        target_path: the target file, or `None` for a TSV `path`.

    Returns:
        A `ParallelText(sources, targets)`.

    Raises:
        DataError: (a `ValueError`) for a missing or empty file, a byte that
            is not UTF-8, files of different numbers of lines (at the first
            line without a partner), an empty or blank line, and in a TSV
            file a wrong header, a row without exactly two fields, or no row.

    Example:

    ```python
    val = read_parallel_text("../shared/data/multi30k/val.en",
                             "../shared/data/multi30k/val.de")
    len(val.sources)  # 1014
    write_parallel_tsv(val, "val.tsv")
    read_parallel_text("val.tsv") == val  # True
    ```
    """
    if target_path is None:
        return _read_tsv(Path(path))
    return _read_aligned(Path(path), Path(target_path))


def write_parallel_tsv(
    pairs: ParallelText | tuple[Sequence[str], Sequence[str]], path: str | os.PathLike
) -> None:
    """Writes sentence pairs as a TSV file that `read_parallel_text` reads.

    The header `source<TAB>target`, then one pair a line, UTF-8 with `\\n`
    line ends. The file is written to a temporary name in the same folder
    and renamed into place, so a reader never sees half a file.

    Args:
        pairs: a `ParallelText`, or a `(sources, targets)` pair of equally
            long lists of strings.
        path: the file to write; its folder must exist.

    Example:

    ```python
    write_parallel_tsv((["A dog runs."], ["Ein Hund rennt."]), "pairs.tsv")
    read_parallel_text("pairs.tsv").targets  # ['Ein Hund rennt.']
    ```
    """
    sources, targets = pairs
    if len(sources) != len(targets):
        raise ValueError(
            "Expected as many targets as sources, "
            f"received: {len(sources)} sources and {len(targets)} targets"
        )
    for name, sentences in (("sources", sources), ("targets", targets)):
        for index, sentence in enumerate(sentences):
            # What the reader would strip, split or reject cannot round-trip.
            if (
                not isinstance(sentence, str)
                or not sentence.strip()
                or sentence != sentence.strip()
                or "\t" in sentence
                or "\n" in sentence
            ):
                raise ValueError(
                    f"Expected `{name}` to hold non-empty strings without tabs, newlines or "
                    f"surrounding whitespace, received: {name}[{index}]={sentence!r}"
                )
    rows = ["\t".join(TSV_HEADER)] + [f"{s}\t{t}" for s, t in zip(sources, targets)]

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write("".join(row + "\n" for row in rows))

    write_atomically(path, write)
