"""Atomic writing of the files the zoo produces: JSON records and figures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from kerasattn._files import write_atomically


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes `value` as indented JSON, atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=2)
            file.write("\n")

    write_atomically(path, write)


def read_json(path: str | os.PathLike, fields: Sequence[str] = ()) -> dict:
    """Reads a JSON object, checking that it has `fields`.

    Raises:
        ValueError: naming the file (and line) if it is missing, is not a
            JSON object, or lacks a field.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: expected a file, received: no such file") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: expected JSON, received: {error.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, received: {type(value).__name__}")
    for field in fields:
        if field not in value:
            raise ValueError(f"{path}: expected a field {field!r}, received: none")
    return value


def save_figure(figure, path: str | os.PathLike) -> None:
    """Saves a matplotlib figure as a PNG, atomically."""
    write_atomically(
        path, lambda temporary: figure.savefig(temporary, dpi=110, bbox_inches="tight"),
        suffix=".png",
    )
