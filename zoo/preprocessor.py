"""`Preprocessor`: the base class of the zoo's preprocessors (after keras-hub's)."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from zoo import preset as preset_format


def pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """`x`, `(x, y)` or `(x, y, sample_weight)`, as Keras's `fit` takes them."""
    if y is None:
        return x
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)


class Preprocessor(keras.layers.Layer):
    """A Keras layer from raw inputs to a model's inputs, usable in `tf.data.map`.

    `call(x, y=None, sample_weight=None)` returns what `pack_x_y_sample_weight`
    returns for the preprocessed `x` (and the labels and weights, which a
    preprocessor may also make, as masked-token pre-training does), so a
    task maps it over `fit`'s, `predict`'s and `evaluate`'s data.

    Assets: a subclass lists in `asset_files` the constructor arguments that
    are lists of strings kept in files in a preset (`{"vocabulary":
    "vocabulary.txt"}`; a tag map, an item map); `save_to_preset` writes
    them to `assets/`, one entry per line, and the rest of `get_config` to
    `preprocessor.json`. In a `.keras` file the whole config is kept.
    """

    asset_files: dict[str, str] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Strings stay strings: Keras must not try to convert them to floats.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    def is_raw(self, spec) -> bool:
        """Whether data of `spec` (the `x` of a `tf.data` element) need this
        preprocessor; by default, whether they are strings."""
        import tensorflow as tf

        return isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string

    @classmethod
    def preset_package(cls) -> str:
        """The package whose `presets/` folder `from_preset` looks in by name."""
        return cls.__module__.rsplit(".", 1)[0]

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, **kwargs) -> "Preprocessor":
        """Builds the preprocessor of a preset, with its assets.

        Args:
            preset: a preset name shipped with the package of `cls`, or a
                preset folder.
            **kwargs: arguments that replace the preset's (such as
                `sequence_length=128`).

        Returns:
            The preprocessor.
        """
        folder = preset_format.find(preset, cls.preset_package())
        path = folder / preset_format.PREPROCESSOR_CONFIG_FILE
        serialized = preset_format.read_json(path, ("class_name", "config"))
        config = dict(serialized["config"])
        for argument, name in cls.asset_files.items():
            config[argument] = preset_format.read_lines(folder / preset_format.ASSETS_DIR / name)
        return cls.from_config({**config, **kwargs})

    def save_to_preset(self, folder: str | os.PathLike) -> None:
        """Writes `preprocessor.json` and the assets under `assets/`."""
        folder = Path(folder)
        (folder / preset_format.ASSETS_DIR).mkdir(parents=True, exist_ok=True)
        config = self.get_config()
        for argument, name in self.asset_files.items():
            preset_format.write_lines(
                folder / preset_format.ASSETS_DIR / name, config.pop(argument)
            )
        serialized = keras.saving.serialize_keras_object(self)
        serialized["config"] = config
        preset_format.write_json(folder / preset_format.PREPROCESSOR_CONFIG_FILE, serialized)
