"""Presets shipped inside the `zoo` package: config, weights and vocabulary.

A preset is a folder `zoo/<model>/presets/<name>/` holding

- `config.json`: `{"model": <class name>, "backbone": {...}, "task": {...},
  "preprocessor": {...}}` — the backbone's and task's constructor arguments
  and the `TextPreprocessor`'s arguments other than its vocabulary;
- `model.weights.h5`: the task model's weights (`model.save_weights`);
- `vocabulary.txt`: the preprocessor's vocabulary, one token per line.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from kerasattn._files import write_atomically

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
VOCABULARY_FILE = "vocabulary.txt"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCABULARY_FILE)


def available(package: str) -> list[str]:
    """The names of the presets shipped with the zoo model `package`.

    Args:
        package: the model's package, such as `"zoo.attention_transformer"`.

    Returns:
        The sorted preset names (folders of `<package>/presets/` holding
        every preset file).
    """
    root = resources.files(package) / "presets"
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and all((entry / name).is_file() for name in PRESET_FILES)
    )


def find(name: str | os.PathLike, package: str) -> Path:
    """The folder of a preset: a name shipped with `package`, or a path.

    Args:
        name: a preset name from `available(package)`, or the path of a
            folder holding the preset files.
        package: the model's package, such as `"zoo.attention_transformer"`.

    Returns:
        The preset's folder.

    Raises:
        ValueError: naming the preset and what is available, if there is no
            such preset or a file is missing.
    """
    names = available(package)
    if isinstance(name, str) and name in names:
        folder = Path(str(resources.files(package) / "presets" / name))
    else:
        folder = Path(name)
        if not folder.is_dir():
            raise ValueError(
                f"Expected a preset name in {names} or a preset folder, "
                f"received: {os.fspath(name)!r}"
            )
    missing = [file for file in PRESET_FILES if not (folder / file).is_file()]
    if missing:
        raise ValueError(
            f"{folder}: expected the preset files {list(PRESET_FILES)}, missing: {missing}"
        )
    return folder


def save_classifier(model, folder: str | os.PathLike) -> None:
    """Writes a text classifier (with its preprocessor) as a preset.

    Args:
        model: a zoo task model with `backbone` and `preprocessor`
            attributes and a `get_config` holding `"backbone"`.
        folder: the preset folder; created if missing. Each file is
            written to a temporary name and renamed into place.
    """
    from kerasattn.text import save_vocabulary

    if model.preprocessor is None:
        raise ValueError("Expected a model with a `preprocessor`, received: preprocessor=None")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = model.get_config()
    for key in ("backbone", "preprocessor", "name", "trainable"):
        task.pop(key, None)
    preprocessor = model.preprocessor.get_config()
    for key in ("vocabulary", "name", "trainable", "dtype"):
        preprocessor.pop(key, None)
    config = {
        "model": type(model).__name__,
        "backbone": {
            key: value
            for key, value in model.backbone.get_config().items()
            if key not in ("name", "trainable")
        },
        "task": task,
        "preprocessor": preprocessor,
    }

    def write_config(path):
        with open(path, "w", encoding="utf-8") as file:
            json.dump(config, file, indent=2)
            file.write("\n")

    write_atomically(folder / CONFIG_FILE, write_config)
    # A compiled model's weights file also holds the optimizer's slots (3x the
    # size); an uncompiled copy holds the model's weights only.
    uncompiled = type(model).from_config(model.get_config())
    uncompiled.set_weights(model.get_weights())
    # save_weights insists on the ".weights.h5" ending, so the temporary name keeps it.
    write_atomically(folder / WEIGHTS_FILE, uncompiled.save_weights, suffix=".weights.h5")
    save_vocabulary(model.preprocessor.vocabulary, folder / VOCABULARY_FILE)


def load_classifier(cls, folder: str | os.PathLike):
    """Builds `cls` from a preset folder written by `save_classifier`.

    Args:
        cls: the task class; its `backbone_class` attribute is the
            backbone's class, and its name must match the config's `"model"`.
        folder: the preset folder.

    Returns:
        The task model with the preset's weights and preprocessor, compiled
        with its defaults.
    """
    from kerasattn.text import TextPreprocessor

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{folder / CONFIG_FILE}:{error.lineno}: expected JSON, received: {error.msg}"
        ) from None
    for key in ("model", "backbone", "task", "preprocessor"):
        if key not in config:
            raise ValueError(f"{folder / CONFIG_FILE}: expected a field {key!r}, received: none")
    if config["model"] != cls.__name__:
        raise ValueError(
            f"{folder / CONFIG_FILE}: expected \"model\": {cls.__name__!r}, "
            f"received: {config['model']!r}"
        )
    preprocessor = TextPreprocessor(folder / VOCABULARY_FILE, **config["preprocessor"])
    model = cls(
        backbone=cls.backbone_class(**config["backbone"]),
        preprocessor=preprocessor,
        **config["task"],
    )
    model.load_weights(folder / WEIGHTS_FILE)
    model.compile()
    return model
