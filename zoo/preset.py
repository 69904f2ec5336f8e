"""The zoo's preset format: one folder per preset, one file set per component.

A preset is a folder (shipped ones are `zoo/<model>/presets/<name>/`) holding

- `metadata.json`: `{"format_version", "task", "backbone", "description",
  "metrics"}`, what `python -m zoo presets` lists (`metrics` as the model
  card reports them: `{"name", "value", "data"}`);
- `config.json` and `model.weights.h5`: the backbone, its config as
  `keras.saving.serialize_keras_object` writes it and its weights alone, so
  that any task taking that backbone can load it (`Backbone.from_preset`);
- `task.json` and `task.weights.h5`: the task's own arguments (without its
  backbone and preprocessor) and the weights of its own layers (its head);
- `preprocessor.json` and `assets/`: the preprocessor's arguments, and the
  files behind the arguments it lists in `asset_files` — a vocabulary, a tag
  map, an item map — one entry per line.

Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional, Sequence

from kerasattn._files import write_atomically
from zoo.files import read_json
from zoo.files import write_json

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
BACKBONE_CONFIG_FILE = "config.json"
BACKBONE_WEIGHTS_FILE = "model.weights.h5"
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
PREPROCESSOR_CONFIG_FILE = "preprocessor.json"
ASSETS_DIR = "assets"


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Writes one entry per line (an asset: a vocabulary, a tag or item map), atomically."""
    lines = [str(line) for line in lines]
    for index, line in enumerate(lines):
        if not line or "\n" in line or "\r" in line:
            raise ValueError(
                f"{path}: entry {index} must be one non-empty line, received: {line!r}"
            )

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.writelines(line + "\n" for line in lines)

    write_atomically(path, write)


def read_lines(path: str | os.PathLike) -> list[str]:
    """Reads an asset written by `write_lines`.

    Raises:
        ValueError: naming the file and line of an empty entry, or a missing file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: expected a file, received: no such file") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"{path}:{number}: expected an entry, received: an empty line")
    return lines


def shipped(package: str) -> list[str]:
    """The names of the presets shipped with the zoo model `package`.

    Args:
        package: the model's package, such as `"zoo.attention_transformer"`.

    Returns:
        The sorted names of the folders of `<package>/presets/` holding a
        `metadata.json`.
    """
    root = resources.files(package) / "presets"
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and (entry / METADATA_FILE).is_file()
    )


def find(preset: str | os.PathLike, package: str) -> Path:
    """The folder of a preset: a name shipped with `package`, or a path.

    Args:
        preset: a name from `shipped(package)` (or, for a component shared by
            the zoo's models, from one model folder's presets), or a preset
            folder's path.
        package: the model's package, such as `"zoo.attention_transformer"`.

    Returns:
        The preset's folder (which holds at least `metadata.json`).

    Raises:
        ValueError: naming the preset and the shipped names if there is no
            such preset.
    """
    names = shipped(package)
    if isinstance(preset, str) and preset in names:
        return Path(str(resources.files(package) / "presets" / preset))
    if isinstance(preset, str) and not Path(preset).is_dir():
        # A shared component (such as a text preprocessor) finds the preset in any model folder.
        from zoo import registry

        holders = [other for other in registry.model_folders() if preset in shipped(other)]
        if len(holders) == 1:
            return Path(str(resources.files(holders[0]) / "presets" / preset))
        if len(holders) > 1:
            raise ValueError(
                f"Expected one zoo model shipping a preset named {preset!r}, received: "
                f"{holders}; give the preset's folder"
            )
        names = names or sorted({name for other in registry.model_folders()
                                 for name in shipped(other)})
    folder = Path(preset)
    if not folder.is_dir():
        raise ValueError(
            f"Expected a preset name in {names} or a preset folder, "
            f"received: {os.fspath(preset)!r}"
        )
    if not (folder / METADATA_FILE).is_file():
        raise ValueError(
            f"{folder}: expected a preset folder with {METADATA_FILE}, "
            "received: a folder without it"
        )
    return folder


def component_class(path: str | os.PathLike) -> Optional[str]:
    """The `"class_name"` of a component's JSON file, or `None` without the file."""
    path = Path(path)
    if not path.is_file():
        return None
    return read_json(path, ("class_name",))["class_name"]


def read_metadata(folder: str | os.PathLike) -> dict:
    """A preset's `metadata.json`, checked for its format version."""
    path = Path(folder) / METADATA_FILE
    metadata = read_json(path, ("format_version", "task", "backbone"))
    if metadata["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path}: expected \"format_version\": {FORMAT_VERSION}, "
            f"received: {metadata['format_version']!r}"
        )
    return metadata


def write_metadata(
    folder: str | os.PathLike,
    task: Optional[str],
    backbone: str,
    description: str = "",
    metrics: Optional[dict] = None,
) -> None:
    """Writes a preset's `metadata.json`.

    Args:
        folder: the preset folder.
        task: the task's class name, or `None` for a backbone-only preset.
        backbone: the backbone's class name.
        description: one line on what the preset is.
        metrics: the metric the model card reports, such as
            `{"name": "accuracy", "value": 0.83, "data": "SST-2 dev"}`.
    """
    import keras

    write_json(
        Path(folder) / METADATA_FILE,
        {
            "format_version": FORMAT_VERSION,
            "task": task,
            "backbone": backbone,
            "description": description,
            "metrics": metrics or {},
            "keras_version": keras.__version__,
        },
    )


def save_layer_weights(layers: Sequence, path: str | os.PathLike) -> None:
    """Writes the weights of `layers` (a task's own layers, its head) to an HDF5 file.

    One group per layer name, one dataset per weight (by its index, with its
    path as an attribute).
    """
    import h5py

    def write(temporary: str) -> None:
        with h5py.File(temporary, "w") as file:
            for layer in layers:
                group = file.create_group(layer.name)
                for index, weight in enumerate(layer.weights):
                    dataset = group.create_dataset(str(index), data=weight.numpy())
                    dataset.attrs["path"] = weight.path

    write_atomically(path, write, suffix=".h5")


def load_layer_weights(layers: Sequence, path: str | os.PathLike) -> None:
    """Loads weights written by `save_layer_weights` into `layers`, by layer name.

    Raises:
        ValueError: naming the file and the layer whose weights are missing
            or of another shape.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected a file, received: no such file")
    with h5py.File(path, "r") as file:
        for layer in layers:
            if layer.name not in file:
                raise ValueError(
                    f"{path}: expected weights for layer {layer.name!r}, received: none"
                )
            group = file[layer.name]
            values = [group[str(index)][()] for index in range(len(group))]
            shapes = [tuple(weight.shape) for weight in layer.weights]
            if [value.shape for value in values] != shapes:
                raise ValueError(
                    f"{path}: expected weights of shapes {shapes} for layer {layer.name!r}, "
                    f"received: {[value.shape for value in values]}"
                )
            layer.set_weights(values)
