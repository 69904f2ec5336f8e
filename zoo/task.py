"""`Task`: the base class of the zoo's task models (after keras-hub's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import keras

from zoo import preset as preset_format
from zoo.backbone import Backbone
from zoo.distribute import MultiWorkerTrainer
from zoo.preprocessor import Preprocessor
from zoo.preprocessor import pack_x_y_sample_weight

DEFAULT_BATCH_SIZE = 32
SHUFFLE_SEED = 1337  # raw lists and arrays under a multi-worker strategy


class Task(MultiWorkerTrainer, keras.Model):
    """A backbone plus a head, compiled with defaults, taking raw inputs.

    Subclasses set `backbone_cls` and `preprocessor_cls`, build their graph
    on `backbone` in `__init__`, call `super().__init__(inputs=..., outputs=...,
    backbone=..., preprocessor=..., ...)`, return their own arguments from
    `get_config` (`{**super().get_config(), ...}`) and their compile
    defaults from `default_compile_arguments`.

    With a preprocessor, `fit`, `predict` and `evaluate` take raw inputs
    (what `preprocessor.is_raw` says: strings, for text), as lists, arrays
    or a `tf.data.Dataset`, and map the preprocessor over them; inputs the
    model takes already (such as `{"token_ids", "padding_mask"}`) pass
    through unchanged.

    Under `tf.distribute.MultiWorkerMirroredStrategy`, `fit` and `evaluate`
    work as on one machine (`zoo.distribute.MultiWorkerTrainer`).

    Presets: `from_preset` builds the backbone and the preprocessor from
    their own files and adds the task's arguments and head weights when the
    preset holds this task; from a preset of another task (or a backbone
    alone) it builds this task on that backbone, with a new head.

    Args:
        backbone: a `backbone_cls`.
        preprocessor: optional `preprocessor_cls`.
        **kwargs: `keras.Model` arguments: `inputs`, `outputs`, `name`.
    """

    backbone_cls: type[Backbone] = Backbone
    preprocessor_cls: Optional[type[Preprocessor]] = None

    def __init__(self, *args, backbone: Backbone, preprocessor: Optional[Preprocessor] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor

    @classmethod
    def check_components(cls, backbone, preprocessor) -> None:
        """Raises a one-line `ValueError` unless `backbone` is a `backbone_cls`
        and `preprocessor` a `preprocessor_cls` or `None`."""
        if not isinstance(backbone, cls.backbone_cls):
            raise ValueError(
                f"Expected `backbone` to be a {cls.backbone_cls.__name__}, "
                f"received: {type(backbone).__name__}"
            )
        if preprocessor is not None and not (
            cls.preprocessor_cls and isinstance(preprocessor, cls.preprocessor_cls)
        ):
            expected = cls.preprocessor_cls.__name__ if cls.preprocessor_cls else "None"
            raise ValueError(
                f"Expected `preprocessor` to be a {expected} or None, "
                f"received: {type(preprocessor).__name__}"
            )

    # -- compiling ------------------------------------------------------------

    def default_compile_arguments(self) -> dict:
        """The `compile` arguments that `"auto"` stands for, by name."""
        return {
            "optimizer": keras.optimizers.AdamW(1e-3),
            "loss": None,
            "metrics": None,
            "weighted_metrics": None,
        }

    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics="auto",
                **kwargs):
        """Compiles with the task's defaults wherever an argument is `"auto"`.

        Args:
            optimizer, loss, metrics, weighted_metrics: as for
                `keras.Model.compile`; `"auto"` takes the task's default
                (see the subclass).
            **kwargs: other `keras.Model.compile` arguments.
        """
        given = {"optimizer": optimizer, "loss": loss, "metrics": metrics,
                 "weighted_metrics": weighted_metrics}
        if any(value == "auto" for value in given.values() if isinstance(value, str)):
            defaults = self.default_compile_arguments()
            given = {
                key: defaults[key] if isinstance(value, str) and value == "auto" else value
                for key, value in given.items()
            }
        super().compile(**given, **kwargs)

    def compile_from_config(self, config: dict) -> None:
        # The saved config holds the concrete optimizer, loss and metrics that
        # `compile` resolved; Keras skips restoring them for a custom
        # `compile`, so the task recompiles itself with them.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # -- raw inputs -----------------------------------------------------------

    def _is_raw(self, x) -> bool:
        import numpy as np
        import tensorflow as tf

        if self.preprocessor is None:
            return False
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            return self.preprocessor.is_raw(spec[0] if isinstance(spec, tuple) else spec)
        if isinstance(x, (list, tuple)):
            return bool(x) and all(isinstance(item, (str, bytes)) for item in x)
        if isinstance(x, np.ndarray):
            return x.dtype.kind in "USO"
        return isinstance(x, tf.Tensor) and x.dtype == tf.string

    def _preprocessed(self, x, y=None, sample_weight=None, batch_size=None, shuffle=False):
        """`(x, y, sample_weight, batch_size)` with the preprocessor mapped over raw `x`.

        Raw lists and arrays become a batched `tf.data.Dataset` (shuffled
        first if `shuffle`); `y`, `sample_weight` and `batch_size` then
        travel inside it and come back as `None`.
        """
        import tensorflow as tf

        if not self._is_raw(x):
            return x, y, sample_weight, batch_size
        if not isinstance(x, tf.data.Dataset):
            x = tf.data.Dataset.from_tensor_slices(pack_x_y_sample_weight(x, y, sample_weight))
            if shuffle:
                # Seeded under a multi-worker strategy: every worker needs the same order.
                seed = SHUFFLE_SEED if self._multi_worker() else None
                x = x.shuffle(int(x.cardinality()), seed=seed, reshuffle_each_iteration=True)
            x = x.batch(batch_size or DEFAULT_BATCH_SIZE)
            y = sample_weight = batch_size = None
        x = x.map(self.preprocessor, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE
        )
        return x, y, sample_weight, batch_size

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None, validation_data=None,
            shuffle=True, **kwargs):
        """`keras.Model.fit`, taking raw inputs through the preprocessor.

        A `tf.data.Dataset` is taken as it comes: it shuffles itself (if at
        all), so `shuffle` applies to lists and arrays only.
        """
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            shuffle = False
        x, y, sample_weight, batch_size = self._preprocessed(
            x, y, sample_weight, batch_size, shuffle
        )
        if shuffle and isinstance(x, tf.data.Dataset):
            shuffle = False
        if validation_data is not None:
            if isinstance(validation_data, tuple):
                validation_data = self._preprocessed(*validation_data, batch_size=batch_size)
                validation_data = pack_x_y_sample_weight(*validation_data[:3])
            else:
                validation_data = self._preprocessed(validation_data)[0]
        return super().fit(x, y, batch_size=batch_size, sample_weight=sample_weight,
                           validation_data=validation_data, shuffle=shuffle, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`keras.Model.evaluate`, taking raw inputs through the preprocessor."""
        x, y, sample_weight, batch_size = self._preprocessed(x, y, sample_weight, batch_size)
        return super().evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """`keras.Model.predict`, taking raw inputs through the preprocessor."""
        x, _, _, batch_size = self._preprocessed(x, batch_size=batch_size)
        return super().predict(x, batch_size=batch_size, **kwargs)

    # -- config and presets ---------------------------------------------------

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "preprocessor": None
            if self.preprocessor is None
            else keras.saving.serialize_keras_object(self.preprocessor),
        }

    @classmethod
    def from_config(cls, config: dict) -> "Task":
        config = dict(config)
        for key in ("backbone", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def head_layers(self) -> list:
        """The task's own layers with weights: all but the backbone's."""
        return [layer for layer in self.layers if layer is not self.backbone and layer.weights]

    @classmethod
    def preset_package(cls) -> str:
        """The package whose `presets/` folder `from_preset` looks in by name."""
        return cls.__module__.rsplit(".", 1)[0]

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, load_weights: bool = True, **kwargs) -> "Task":
        """Builds the task from a preset, compiled with its defaults.

        Args:
            preset: a preset name shipped with this model, or a preset folder.
            load_weights: whether to load the preset's weights.
            **kwargs: task arguments that replace the preset's (such as
                `dropout=0.2`); the head's weights must still fit.

        Returns:
            The task. If the preset holds another task (or none), this one is
            built on the preset's backbone with a new head, and with the
            preset's preprocessor if it is this task's kind (else none).
        """
        folder = preset_format.find(preset, cls.preset_package())
        preset_format.read_metadata(folder)
        backbone = cls.backbone_cls.from_preset(folder, load_weights=load_weights)
        preprocessor = None
        if cls.preprocessor_cls and preset_format.component_class(
            folder / preset_format.PREPROCESSOR_CONFIG_FILE
        ) == cls.preprocessor_cls.__name__:
            preprocessor = cls.preprocessor_cls.from_preset(folder)
        config, same_task = {}, False
        if (folder / preset_format.TASK_CONFIG_FILE).is_file():
            serialized = preset_format.read_json(
                folder / preset_format.TASK_CONFIG_FILE, ("class_name", "config")
            )
            same_task = serialized["class_name"] == cls.__name__
            if same_task:
                config = serialized["config"]
        task = cls(backbone=backbone, preprocessor=preprocessor, **{**config, **kwargs})
        if load_weights and same_task:
            preset_format.load_layer_weights(
                task.head_layers(), folder / preset_format.TASK_WEIGHTS_FILE
            )
        task.compile()
        return task

    def save_to_preset(self, folder: str | os.PathLike, description: str = "",
                       metrics: Optional[dict] = None) -> None:
        """Writes the task as a preset: backbone, preprocessor, task and metadata.

        Args:
            folder: the preset folder; created if missing.
            description: one line on what the preset is.
            metrics: the metric its model card reports (see `zoo.preset`).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_to_preset(folder)
        if self.preprocessor is not None:
            self.preprocessor.save_to_preset(folder)
        serialized = keras.saving.serialize_keras_object(self)
        config = dict(serialized["config"])
        for key in ("backbone", "preprocessor", "name", "trainable"):
            config.pop(key, None)
        serialized["config"] = config
        serialized.pop("compile_config", None)
        serialized.pop("build_config", None)
        preset_format.write_json(folder / preset_format.TASK_CONFIG_FILE, serialized)
        preset_format.save_layer_weights(
            self.head_layers(), folder / preset_format.TASK_WEIGHTS_FILE
        )
        preset_format.write_metadata(
            folder, task=type(self).__name__, backbone=type(self.backbone).__name__,
            description=description, metrics=metrics,
        )
