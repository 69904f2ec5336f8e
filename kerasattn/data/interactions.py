"""Reading user-item interaction logs for sequential recommendation.

Three layouts are read, each one interaction (or one user) per line:

- `"pairs"`: `user item`, each user's lines in time order (SASRec's files,
  such as Amazon Video Games' `Video.txt`);
- `"movielens"`: `user item rating timestamp` (MovieLens' `u.data`), put in
  time order per user;
- `"per_user"`: `user item item ...`, one line per user, items in time order.

`leave_one_out` splits the sequences as SASRec does (last item for test, the
one before for validation), `training_sequences` turns the training part into
a `tf.data.Dataset` of next-item examples, and `read_movielens_side_features`
reads MovieLens' item titles and genres and user attributes aligned to the
ids read. This module needs only NumPy; TensorFlow is imported by
`training_sequences` alone.

```python
from kerasattn.data.interactions import leave_one_out, read_interactions, training_sequences

interactions = read_interactions("../shared/data/sasrec/Video.txt")
split = leave_one_out(interactions)
dataset = training_sequences(split.train, max_length=50, batch_size=128, seed=1)
```
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from kerasattn.data.errors import DataError
from kerasattn.data.errors import read_text

FORMATS = ("pairs", "movielens", "per_user")

MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

_CANONICAL_INTEGER = re.compile(r"0|[1-9][0-9]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(eq=False)
class Interactions:
    """Each user's items in time order, with the maps back to the file's labels.

    Attributes:
        sequences: one int32 array per user, its items in time order. Item
            ids run from 1 to `num_items`; 0 is reserved for padding.
        user_ids: the file's label of each user, aligned with `sequences`.
        item_ids: the file's label of each item: id `i` is `item_ids[i - 1]`.
        path: the file read.
    """

    sequences: list[np.ndarray]
    user_ids: list[str]
    item_ids: list[str]
    path: str

    @property
    def num_users(self) -> int:
        """The number of users (sequences)."""
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        """The size of the catalogue: ids run from 1 to `num_items`."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        """The number of interactions, over all users."""
        return int(sum(len(sequence) for sequence in self.sequences))


@dataclasses.dataclass(eq=False)
class Split:
    """A leave-one-out split, from `leave_one_out`.

    Only the users with at least 3 interactions are evaluated; `users` says
    which, and the four evaluation fields are aligned with it.

    Attributes:
        train: one int32 array per user (every user, in order): all but the
            last two items, or every item for a user with fewer than 3.
        users: int64 `(E,)`, the indices of the evaluated users.
        valid_history: the evaluated users' training items.
        valid_target: int32 `(E,)`, their second-to-last items.
        test_history: the evaluated users' items but the last.
        test_target: int32 `(E,)`, their last items.
    """

    train: list[np.ndarray]
    users: np.ndarray
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The file's non-blank lines as `(line number, fields)`, split on any
    whitespace; trailing blank lines are ignored, a blank line between rows
    is an error. Lines are yielded, not kept, so the file is not held as
    one list per line (which is slow to build: the garbage collector keeps
    scanning them)."""
    content = read_text(path, encoding="utf-8")
    blank_line = None
    empty = True
    for number, text in enumerate(content.splitlines(), start=1):
        fields = text.split()
        if not fields:
            blank_line = blank_line or number
            continue
        if blank_line is not None:
            raise DataError(path, blank_line, "expected a row, received: a blank line")
        empty = False
        yield number, fields
    if empty:
        raise DataError(path, None, "expected rows of interactions, received: an empty file")


def _ordered_labels(labels: set[str]) -> list[str]:
    # Integer labels sort by value, so a file whose items are 1..N keeps them
    # as ids 1..N; any other labels sort as text.
    if all(_CANONICAL_INTEGER.fullmatch(label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _integer(path: Path, line: int, what: str, field: str) -> int:
    if not _INTEGER.fullmatch(field):
        raise DataError(path, line, f"expected an integer {what}, received: {field!r}")
    return int(field)


def _item_number(path: Path, line: int, field: str) -> int:
    """An item label used as the id itself (`remap=False`)."""
    if not _CANONICAL_INTEGER.fullmatch(field) or not 0 < int(field) <= _INT32_MAX:
        raise DataError(
            path, line,
            f"expected an item id from 1 to {_INT32_MAX} (remap=False), received: {field!r}",
        )
    return int(field)


def _parse(path: Path, format: str, remap: bool):
    """Per interaction, in file order: user labels, item labels (or ids when
    not remapping) and timestamps (movielens only, else `None`)."""
    users, items, times = [], [], []
    first_line_of = {}
    for line, fields in _lines(path):
        if format == "auto":  # the first line decides
            format = {2: "pairs", 4: "movielens"}.get(len(fields), "per_user")
        if format == "per_user":
            if len(fields) < 2:
                raise DataError(
                    path, line, "expected a user and at least one item, received: 1 field"
                )
            user = fields[0]
            if user in first_line_of:
                raise DataError(
                    path, line,
                    f"expected one line per user, received: user {user!r} again "
                    f"(first on line {first_line_of[user]})",
                )
            first_line_of[user] = line
            row_items = fields[1:]
        else:
            width = 2 if format == "pairs" else 4
            if len(fields) != width:
                layout = "user item" if format == "pairs" else "user item rating timestamp"
                raise DataError(
                    path, line,
                    f"expected {width} fields ({layout}), received: {len(fields)}",
                )
            if format == "movielens":
                _integer(path, line, "rating", fields[2])
                times.append(_integer(path, line, "timestamp", fields[3]))
            user, row_items = fields[0], fields[1:2]
        if not remap:
            row_items = [_item_number(path, line, item) for item in row_items]
        users.extend([user] * len(row_items))
        items.extend(row_items)
    return format, users, items, (times if format == "movielens" else None)


def _k_core(users: np.ndarray, items: np.ndarray, min_count: int) -> np.ndarray:
    """The rows kept once every user and every item has `min_count` rows,
    dropping the others until none is left short."""
    items = np.unique(items, return_inverse=True)[1]  # unmapped ids may be large
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max() + 1)
        item_counts = np.bincount(items[keep], minlength=items.max() + 1)
        short = keep & ((user_counts[users] < min_count) | (item_counts[items] < min_count))
        if not short.any():
            return keep
        keep &= ~short


def read_interactions(
    path: str | os.PathLike,
    format: str = "auto",
    min_count: int | None = None,
    remap: bool = True,
) -> Interactions:
    """Reads an interaction log into per-user item sequences, strictly.

    Fields are separated by any whitespace (spaces or tabs); trailing blank
    lines are ignored, a blank line between rows is an error. Users and
    items are labels (any text without whitespace). Each user's items keep
    the file's order, except in `"movielens"`, where they are sorted by
    timestamp (a stable sort: equal timestamps keep the file's order).

    Users, and items when remapped, are numbered in label order: by value
    if every label is an integer (so a file whose items are 1..N keeps ids
    1..N, as SASRec's files do), else as text.

    Args:
        path: the file (UTF-8).
        format: `"pairs"` (`user item` per line, each user's lines in time
            order), `"movielens"` (`user item rating timestamp`, ratings and
            timestamps integers), `"per_user"` (`user item item ...`, one line
            per user), or `"auto"`: the first line's field count picks
            `"pairs"` for 2, `"movielens"` for 4, `"per_user"` otherwise
            (so pass `"per_user"` for such a file whose first user has 1 or
            3 items). Defaults to `"auto"`.
        min_count: optional positive integer k: keep the k-core, dropping
            users and items with fewer than k interactions, again and again
            until none is left (repeats count as interactions). SASRec's
            preprocessing drops them once, so its files still hold users
            with fewer. `None` keeps everything. Defaults to `None`.
        remap: number the items 1..N in label order. `False` takes integer
            labels as the ids (the catalogue is then 1 to the largest label
            read, before filtering, gaps included). Defaults to `True`.

    Returns:
        An `Interactions`.

    Raises:
        DataError: (a `ValueError`) for a missing, empty or non-UTF-8 file,
            a wrong number of fields for the format, a non-integer rating
            or timestamp, a user on two lines in `"per_user"`, an item label
            that is not a positive integer when `remap=False`, or nothing
            left after the k-core filter.
        ValueError: for invalid arguments.

    Example:

    ```python
    interactions = read_interactions("../shared/data/ml-100k/u.data", min_count=5)
    interactions.num_users, interactions.num_items  # (943, 1349)
    ```
    """
    if format not in ("auto", *FORMATS):
        raise ValueError(
            f"Expected `format` to be one of {('auto', *FORMATS)}, received: format={format!r}"
        )
    if min_count is not None and (
        isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1
    ):
        raise ValueError(
            f"Expected `min_count` to be a positive integer or None, received: {min_count!r}"
        )
    path = Path(path)
    format, user_labels, item_labels, times = _parse(path, format, remap)

    user_names = _ordered_labels(set(user_labels))
    user_index = {name: index for index, name in enumerate(user_names)}
    users = np.fromiter((user_index[u] for u in user_labels), np.int64, len(user_labels))
    if remap:
        item_names = _ordered_labels(set(item_labels))
        item_index = {name: index + 1 for index, name in enumerate(item_names)}
        items = np.fromiter((item_index[i] for i in item_labels), np.int64, len(item_labels))
    else:
        items = np.asarray(item_labels, dtype=np.int64)
        item_names = [str(i) for i in range(1, int(items.max()) + 1)]

    rows = np.arange(len(users))
    if min_count is not None:
        rows = rows[_k_core(users, items, min_count)]
        if not rows.size:
            raise DataError(
                path, None,
                f"expected interactions left after the k-core filter (min_count={min_count}), "
                "received: none",
            )
        if remap:  # renumber the items left, keeping their order
            kept = np.unique(items[rows])
            renumber = np.zeros(len(item_names) + 1, dtype=np.int64)
            renumber[kept] = np.arange(1, len(kept) + 1)
            items = renumber[items]
            item_names = [item_names[i - 1] for i in kept]

    if times is not None:
        # lexsort is stable, and `rows` (file order) breaks ties explicitly.
        order = np.lexsort((rows, np.asarray(times, dtype=np.int64)[rows], users[rows]))
    else:
        order = np.argsort(users[rows], kind="stable")
    rows = rows[order]
    row_users = users[rows]
    kept_users, starts = np.unique(row_users, return_index=True)
    sequences = np.split(items[rows].astype(np.int32), starts[1:])
    return Interactions(
        sequences=sequences,
        user_ids=[user_names[u] for u in kept_users],
        item_ids=item_names,
        path=os.fspath(path),
    )


def leave_one_out(interactions: Interactions | Sequence[np.ndarray]) -> Split:
    """Splits each user's sequence as SASRec does: last item test, one before validation.

    Users with fewer than 3 interactions are not evaluated and keep all their
    items for training (SASRec's `data_partition`).

    Args:
        interactions: an `Interactions`, or the per-user sequences alone.

    Returns:
        A `Split`. Its arrays are views of the sequences, not copies.
    """
    sequences = (
        interactions.sequences if isinstance(interactions, Interactions) else interactions
    )
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    users = np.flatnonzero(lengths >= 3)
    train = [s[:-2] if n >= 3 else s for s, n in zip(sequences, lengths)]
    evaluated = [sequences[u] for u in users]
    return Split(
        train=train,
        users=users,
        valid_history=[train[u] for u in users],
        valid_target=np.fromiter((s[-2] for s in evaluated), np.int32, len(users)),
        test_history=[s[:-1] for s in evaluated],
        test_target=np.fromiter((s[-1] for s in evaluated), np.int32, len(users)),
    )


def pad_histories(sequences: Sequence[np.ndarray], max_length: int) -> np.ndarray:
    """Left-pads each sequence with 0 to `max_length`, keeping its last `max_length` items.

    Args:
        sequences: one 1-D integer array per row.
        max_length: positive integer, the width of the result.

    Returns:
        int32 `(len(sequences), max_length)`: row `i` ends with the last
        `min(len(sequences[i]), max_length)` items of `sequences[i]`.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or (
        max_length < 1
    ):
        raise ValueError(
            f"Expected `max_length` to be a positive integer, received: {max_length!r}"
        )
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    kept = np.minimum(lengths, max_length)
    padded = np.zeros((len(sequences), max_length), dtype=np.int32)
    if not kept.sum():
        return padded
    tails = np.concatenate([s[len(s) - k:] for s, k in zip(sequences, kept)])
    rows = np.repeat(np.arange(len(sequences)), kept)
    # Each kept item's place counted from the row's end, so rows end at max_length.
    ends = np.cumsum(kept)
    from_end = np.repeat(ends, kept) - np.arange(len(tails))
    padded[rows, max_length - from_end] = tails
    return padded


def training_sequences(
    sequences: Sequence[np.ndarray],
    max_length: int,
    batch_size: int,
    seed: int | None = None,
    shuffle: bool = True,
    sort_by_length: bool = False,
):
    """Next-item training examples, one per user, as a `tf.data.Dataset`.

    For each user, the last `max_length + 1` items give the inputs (all but
    the last) and the positives (all but the first), both left-padded with 0
    so that `positives[:, t]` is the item after `inputs[:, t]` (SASRec's
    sampler, less its negatives: sample them in the model or loss). Users
    with fewer than 2 items have no example and are left out, as in SASRec;
    the last, smaller batch is kept.

    With `sort_by_length`, each epoch puts the users in (shuffled) order of
    history length and cuts that order into batches of as many training
    positions as `batch_size` users of average length hold (so about
    `batch_size` users a batch on average: more short users, fewer long
    ones; every position weighs the same in a per-batch mean loss, as with
    random batches). The batches come in random order, each cut to its
    longest history: only left padding is dropped, so a model whose positions
    count from the end (`PositionEmbedding(align="end")`) computes the same
    per-position loss as at full length. In logs of short histories
    (Amazon's average 6 items against a length of 50), that is most of the
    work gone; what changes is which users share a batch.

    Args:
        sequences: one int32 array per user, such as `Split.train`.
        max_length: positive integer, the length L of each example.
        batch_size: positive integer.
        seed: optional integer; with it, the sequence of epoch orders is
            the same on every run.
        shuffle: shuffle all users, in a new order every epoch. Defaults to
            `True`.
        sort_by_length: batch users of like history length, batches of
            equal position counts, each cut to its longest history.
            Defaults to `False`.

    Returns:
        A prefetched `tf.data.Dataset` of `(inputs, positives)` batches, both
        int32 `(B, L)` (`(B, T)` with `T <= L` with `sort_by_length`);
        `positives != 0` marks the positions to train on. Its cardinality is
        the number of batches of an epoch.

    Raises:
        ValueError: for invalid arguments, or no user with 2 items.
    """
    import tensorflow as tf

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Expected `batch_size` to be a positive integer, received: {batch_size!r}"
        )
    usable = [s for s in sequences if len(s) >= 2]
    if not usable:
        raise ValueError("Expected at least one sequence of 2 or more items, received: none")
    inputs = pad_histories([s[:-1] for s in usable], max_length)
    positives = pad_histories([s[1:] for s in usable], max_length)
    if sort_by_length:
        return _length_sorted_batches(inputs, positives, batch_size, seed, shuffle)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, positives))
    if shuffle:
        dataset = dataset.shuffle(len(usable), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _length_sorted_batches(inputs: np.ndarray, positives: np.ndarray, batch_size: int,
                           seed: int | None, shuffle: bool):
    import tensorflow as tf

    lengths = np.count_nonzero(inputs, axis=1)
    # A batch holds as many positions as `batch_size` users of average length:
    # every position then weighs the same in the loss's per-batch mean, as in
    # random batches (with `batch_size` users a batch, a short user's positions
    # would weigh up to L times a long user's).
    budget = batch_size * lengths.mean()
    ends = np.cumsum(np.sort(lengths))
    bounds = np.searchsorted(ends, budget * np.arange(1, np.ceil(ends[-1] / budget)), "right")
    bounds = np.unique(bounds[(bounds > 0) & (bounds < len(lengths))])
    num_batches = len(bounds) + 1
    # One generator across epochs: each pass over the dataset draws a new order.
    generator = np.random.default_rng(seed)

    def epoch():
        order = generator.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
        batches = np.split(order[np.argsort(lengths[order], kind="stable")], bounds)
        for index in generator.permutation(num_batches) if shuffle else range(num_batches):
            rows = batches[index]
            width = int(lengths[rows].max())
            yield inputs[rows, -width:], positives[rows, -width:]

    spec = tf.TensorSpec((None, None), tf.int32)
    dataset = tf.data.Dataset.from_generator(epoch, output_signature=(spec, spec))
    return dataset.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(
        tf.data.AUTOTUNE
    )


def _movielens_rows(path: Path, width: int) -> list[tuple[int, list[str]]]:
    """A latin-1, pipe-separated MovieLens file's rows of `width` fields."""
    if not path.is_file():
        raise DataError(path, None, "expected a file, received: no such file")
    rows = []
    blank_line = None
    for number, text in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        if not text.strip():
            blank_line = blank_line or number
            continue
        if blank_line is not None:
            raise DataError(path, blank_line, "expected a row, received: a blank line")
        fields = text.split("|")
        if len(fields) != width:
            raise DataError(
                path, number, f"expected {width} fields separated by '|', received: {len(fields)}"
            )
        rows.append((number, fields))
    return rows


def _aligned(path: Path, rows, labels: list[str], what: str) -> list[tuple[int, list[str]]]:
    """The row of each label, in `labels`' order; rows of other labels are ignored."""
    line_of = {}
    by_label = {}
    for number, fields in rows:
        label = fields[0].strip()
        if label in by_label:
            raise DataError(
                path, number,
                f"expected one line per {what}, received: {what} {label!r} again "
                f"(first on line {line_of[label]})",
            )
        line_of[label] = number
        by_label[label] = (number, fields)
    missing = [label for label in labels if label not in by_label]
    if missing:
        raise DataError(
            path, None,
            f"expected a line for every {what} read, received: none for {len(missing)} "
            f"(first {missing[0]!r})",
        )
    return [by_label[label] for label in labels]


def read_movielens_side_features(
    folder: str | os.PathLike, interactions: Interactions
) -> dict:
    """Reads MovieLens 100K's item and user attributes, aligned to read ids.

    `u.item` is latin-1, `id|title|release date|video release date|IMDb
    URL|` then 19 genre flags (0 or 1, in `MOVIELENS_GENRES`' order);
    `u.user` is `id|age|gender|occupation|zip code`. Lines of items or
    users absent from `interactions` (filtered out, say) are ignored.

    Args:
        folder: the folder holding `u.item` and `u.user`.
        interactions: what was read from the same folder's `u.data`; its
            `item_ids` and `user_ids` are the files' ids.

    Returns:
        A dict: `"titles"`, a list of `num_items + 1` titles by item id
        (`""` at 0, the padding); `"genres"`, float32 `(num_items + 1, 19)`
        genre flags by item id (row 0 zero); `"genre_names"`, the 19 genre
        names; and by user, aligned with `interactions.user_ids`: `"ages"`
        (int32 `(num_users,)`), `"genders"` and `"occupations"` (lists of
        strings).

    Raises:
        DataError: for a missing file, a line without the right fields, a
            genre flag other than 0 or 1, a non-integer age, an id on two
            lines, or an item or user of `interactions` with no line.
    """
    folder = Path(folder)
    item_path = folder / "u.item"
    item_rows = _aligned(
        item_path, _movielens_rows(item_path, 5 + len(MOVIELENS_GENRES)),
        interactions.item_ids, "item",
    )
    titles = [""]
    genres = np.zeros((interactions.num_items + 1, len(MOVIELENS_GENRES)), dtype=np.float32)
    for item, (number, fields) in enumerate(item_rows, start=1):
        flags = [flag.strip() for flag in fields[5:]]
        bad = [flag for flag in flags if flag not in ("0", "1")]
        if bad:
            raise DataError(item_path, number, f"expected genre flags 0 or 1, received: {bad[0]!r}")
        titles.append(fields[1])
        genres[item] = [flag == "1" for flag in flags]

    user_path = folder / "u.user"
    user_rows = _aligned(user_path, _movielens_rows(user_path, 5), interactions.user_ids, "user")
    ages = np.asarray(
        [_integer(user_path, number, "age", fields[1].strip()) for number, fields in user_rows],
        dtype=np.int32,
    )
    return {
        "titles": titles,
        "genres": genres,
        "genre_names": list(MOVIELENS_GENRES),
        "ages": ages,
        "genders": [fields[2].strip() for _, fields in user_rows],
        "occupations": [fields[3].strip() for _, fields in user_rows],
    }
