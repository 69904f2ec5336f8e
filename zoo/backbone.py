"""`Backbone`: the base class of the zoo's backbones (after keras-hub's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import keras

from kerasattn._files import write_atomically
from zoo import preset as preset_format


def per_layer(name: str, value, num_layers: int) -> list[int]:
    """An int, or a list of one int per layer, as a list of `num_layers` positive ints.

    A backbone's `num_heads` and `intermediate_dim` take either: one size for
    every block, or (a pruned backbone's) one per block.
    """
    from kerasattn.layers._validation import positive_int

    if isinstance(value, int) and not isinstance(value, bool):
        return [positive_int(name, value)] * num_layers
    if not isinstance(value, (list, tuple)) or len(value) != num_layers:
        raise ValueError(
            f"Expected `{name}` to be a positive int or a list of {num_layers} (one per "
            f"layer), received: {name}={value!r}"
        )
    return [positive_int(name, item) for item in value]


def resized_blocks_config(backbone, updates: dict,
                          blocks: Optional[Sequence[tuple[str, int]]] = None) -> dict:
    """A backbone's config with its Transformer blocks resized, for `kerasattn.prune`.

    For backbones whose blocks are `<prefix><i>` and whose arguments
    `num_heads` and `intermediate_dim` take one size per block, with the
    heads' width in `head_dim` (`None`: `hidden_dim // num_heads`).

    Args:
        backbone: the backbone (its `num_heads`, `intermediate_dim`,
            `head_dim`, `hidden_dim`, and `num_layers` without `blocks`).
        updates: block name -> the block config entries
            `kerasattn.prune.prune_model` changes (`num_heads`, `key_dim`,
            `num_key_value_heads`, `intermediate_dim`).
        blocks: `(prefix, count)` of each stack of blocks, in the order of
            the per-block lists; defaults to `backbone.num_layers` blocks
            `encoder_block_<i>`.

    Returns:
        `backbone.get_config()` with per-block lists and `head_dim`.

    Raises:
        ValueError: for an unknown block, or a change other than the sizes.
    """
    blocks = blocks or (("encoder_block_", backbone.num_layers),)
    names = [f"{prefix}{index}" for prefix, count in blocks for index in range(count)]
    heads = per_layer("num_heads", backbone.num_heads, len(names))
    # `None` is SASRec's "as wide as the model" (the recommender's backbone).
    units = per_layer("intermediate_dim", backbone.intermediate_dim or backbone.hidden_dim,
                      len(names))
    head_dim = backbone.head_dim or backbone.hidden_dim // heads[0]
    for name, entries in updates.items():
        if name not in names:
            expected = ", ".join(f"{prefix}<0..{count - 1}>" for prefix, count in blocks)
            raise ValueError(f"Expected a block name {expected}, received: {name!r}")
        for key, value in entries.items():
            if key == "num_heads":
                heads[names.index(name)] = value
            elif key == "intermediate_dim":
                units[names.index(name)] = value
            elif (key, value) not in (("key_dim", head_dim), ("num_key_value_heads", None)):
                raise ValueError(f"Expected `num_heads` and `intermediate_dim` changes of "
                                 f"{name!r}, received: {key}={value!r}")
    return {**backbone.get_config(), "num_heads": heads, "intermediate_dim": units,
            "head_dim": head_dim}


def serialize_dtype(policy) -> Optional[dict | str]:
    """A dtype policy as a config value (`None` stays `None`)."""
    return None if policy is None else keras.dtype_policies.serialize(policy)


def deserialize_dtype(config: dict) -> dict:
    """`config` with its `"dtype"` (if a serialized policy) deserialized."""
    if isinstance(config.get("dtype"), dict):
        config = {**config, "dtype": keras.dtype_policies.deserialize(config["dtype"])}
    return config


class Backbone(keras.Model):
    """A functional model from a model's inputs to its features, without a head.

    Subclasses build their graph in `__init__`, pass `dtype` to every layer
    and to `super().__init__`, keep their arguments as attributes and return
    them from `get_config` (`{**super().get_config(), ...}`); the base adds
    `name`, `trainable` and `dtype`. A backbone is saved and loaded on its
    own (`save_to_preset`, `from_preset`), so a pre-trained one can serve
    any task built on its class.

    Args:
        dtype: optional dtype policy (such as `"mixed_bfloat16"`) for the
            backbone's layers; `None` for Keras's global policy.
        **kwargs: `keras.Model` arguments: `inputs`, `outputs`, `name`.
    """

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        # A functional model takes no policy of its own from `dtype`: set it,
        # so that `get_config` records what the layers were built with.
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": serialize_dtype(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config: dict) -> "Backbone":
        return cls(**deserialize_dtype(config))

    @classmethod
    def preset_package(cls) -> str:
        """The package whose `presets/` folder `from_preset` looks in by name."""
        return cls.__module__.rsplit(".", 1)[0]

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, load_weights: bool = True,
                    **kwargs) -> "Backbone":
        """Builds the backbone of a preset, with its weights.

        Args:
            preset: a preset name shipped with this model, or a preset folder.
            load_weights: whether to load the preset's weights (else the
                backbone is freshly initialised).
            **kwargs: arguments that replace the preset's (such as
                `dropout=0.0` or `dtype="mixed_bfloat16"`).

        Returns:
            The backbone.

        Raises:
            ValueError: naming the file if the preset's backbone is not a `cls`.
        """
        folder = preset_format.find(preset, cls.preset_package())
        path = folder / preset_format.BACKBONE_CONFIG_FILE
        serialized = preset_format.read_json(path, ("class_name", "config"))
        if serialized["class_name"] != cls.__name__:
            raise ValueError(
                f"{path}: expected \"class_name\": {cls.__name__!r}, "
                f"received: {serialized['class_name']!r}"
            )
        backbone = cls.from_config({**serialized["config"], **kwargs})
        if load_weights:
            backbone.load_weights(folder / preset_format.BACKBONE_WEIGHTS_FILE)
        return backbone

    def save_to_preset(self, folder: str | os.PathLike) -> None:
        """Writes `config.json` and `model.weights.h5` (this backbone's weights alone).

        A backbone saved alone makes a preset too: its `metadata.json` names
        no task.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        preset_format.write_json(
            folder / preset_format.BACKBONE_CONFIG_FILE, keras.saving.serialize_keras_object(self)
        )
        # save_weights insists on the ".weights.h5" ending, so the temporary name keeps it.
        write_atomically(
            folder / preset_format.BACKBONE_WEIGHTS_FILE, self.save_weights, suffix=".weights.h5"
        )
        if not (folder / preset_format.METADATA_FILE).is_file():
            preset_format.write_metadata(folder, task=None, backbone=type(self).__name__)
