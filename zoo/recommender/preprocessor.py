"""`RecommenderPreprocessor`: a user's raw item labels to the model's left-padded item ids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from zoo import preset as preset_format
from zoo.preprocessor import Preprocessor
from zoo.preprocessor import pack_x_y_sample_weight

ITEMS_FILE = "items.txt"
TITLES_FILE = "titles.txt"


@keras.saving.register_keras_serializable(package="zoo")
class RecommenderPreprocessor(Preprocessor):
    """Histories of raw item labels to int32 item ids, left-padded to `sequence_length`.

    A history is one string of item labels (the data file's, such as
    `"12 55 301"`), oldest first, separated by spaces or commas. Each label
    becomes its id, `item_labels.index(label) + 1` (0 is the padding; a
    label the model does not know is dropped), the last `sequence_length`
    are kept and padded with 0 on the left, as the model was trained.

    In a preset the item map is `assets/items.txt` (line `i` is item id
    `i`), and the optional titles `assets/titles.txt` (one per item, same
    order).

    Args:
        item_labels: the labels of items 1..N, in id order.
        sequence_length: positions of the model's input, `L`.
        titles: optional title of each item (same order), for display.
        **kwargs: base layer arguments such as `name`.

    Call arguments:
        x: `(B,)` strings of item labels.
        y, sample_weight: optional, returned unchanged.

    Returns:
        `{"item_ids": int32 (B, sequence_length)}`.
    """

    asset_files = {"item_labels": ITEMS_FILE}

    def __init__(self, item_labels: Sequence[str], sequence_length: int = 50,
                 titles: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or (
                sequence_length <= 0):
            raise ValueError("Expected `sequence_length` to be a positive integer, received: "
                             f"sequence_length={sequence_length!r}")
        labels = tuple(str(label) for label in item_labels)
        if not labels:
            raise ValueError("Expected at least one item label, received: none")
        if len(set(labels)) != len(labels):
            seen, repeated = set(), None
            for label in labels:
                if label in seen:
                    repeated = label
                    break
                seen.add(label)
            raise ValueError(f"Expected distinct item labels, received: {repeated!r} twice")
        if titles is not None and len(titles) != len(labels):
            raise ValueError(f"Expected one title per item ({len(labels)}), received: "
                             f"{len(titles)}")
        # Tuples: Keras and TensorFlow would wrap a list attribute.
        self._item_labels = labels
        self._titles = None if titles is None else tuple(str(title) for title in titles)
        self.sequence_length = sequence_length
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(labels, tf.string), tf.range(1, len(labels) + 1, dtype=tf.int32)
            ),
            default_value=0,
        )

    @property
    def item_labels(self) -> list[str]:
        return list(self._item_labels)

    @property
    def titles(self) -> Optional[list[str]]:
        return None if self._titles is None else list(self._titles)

    @property
    def num_items(self) -> int:
        return len(self._item_labels)

    def is_raw(self, spec) -> bool:
        """Strings of item labels are raw; integer item ids are the model's inputs."""
        return isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string

    def call(self, x, y=None, sample_weight=None):
        x = tf.convert_to_tensor(x, tf.string)
        labels = tf.strings.split(tf.strings.regex_replace(x, ",", " "))
        ids = tf.ragged.map_flat_values(self._table.lookup, labels)
        ids = tf.ragged.boolean_mask(ids, ids > 0)[:, -self.sequence_length:]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        right = ids.to_tensor(0, shape=[None, self.sequence_length])
        # Right-padded -> left-padded: reverse each history, then every row.
        left = tf.reverse(tf.reverse_sequence(right, lengths, seq_axis=1, batch_axis=0), [1])
        return pack_x_y_sample_weight({"item_ids": left}, y, sample_weight)

    def item_ids(self, labels: Sequence[str]) -> np.ndarray:
        """The ids of raw labels (0 for a label the model does not know)."""
        return self._table.lookup(tf.constant([str(label) for label in labels], tf.string)
                                  ).numpy()

    def labels_of(self, ids) -> list:
        """The labels of item ids (`None` for the padding 0)."""
        return [None if int(i) <= 0 else self._item_labels[int(i) - 1]
                for i in np.asarray(ids).ravel()]

    def title_of(self, item_id: int) -> Optional[str]:
        if self._titles is None or int(item_id) <= 0:
            return None
        return self._titles[int(item_id) - 1]

    def get_config(self) -> dict:
        return {**super().get_config(), "item_labels": self.item_labels,
                "sequence_length": self.sequence_length, "titles": self.titles}

    # Titles are an optional second asset: `titles.txt` beside `items.txt`.
    @classmethod
    def from_preset(cls, preset: str | os.PathLike, **kwargs) -> "RecommenderPreprocessor":
        folder = preset_format.find(preset, cls.preset_package())
        titles = folder / preset_format.ASSETS_DIR / TITLES_FILE
        if "titles" not in kwargs:
            kwargs["titles"] = preset_format.read_lines(titles) if titles.is_file() else None
        return super().from_preset(folder, **kwargs)

    def save_to_preset(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        titles = self._titles
        self._titles = None
        try:
            super().save_to_preset(folder)
        finally:
            self._titles = titles
        path = folder / preset_format.ASSETS_DIR / TITLES_FILE
        if titles is not None:
            # An asset line may not be empty: an untitled item shows as "-".
            preset_format.write_lines(path, [title.strip() or "-" for title in titles])
        elif path.is_file():
            path.unlink()
