"""The error every kerasattn data reader raises for bad input files."""

from __future__ import annotations

import os


class DataError(ValueError):
    """A data file that cannot be read as asked, with the place at fault.

    The message reads `"<path>:<line>: <problem>"` (`line` is 1-based and
    counts physical lines, so an editor can jump to it; it is left out when
    the problem is the file as a whole).

    Attributes:
        path: the file.
        line: the 1-based line number, or `None`.
        problem: the message without the location.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path = os.fspath(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.line, self.problem)


def read_text(path: str | os.PathLike, encoding: str = "utf-8-sig") -> str:
    """A data file's text, or a `DataError`: no such file, or a byte that does
    not decode (with its line). `"utf-8-sig"` drops an opening byte-order mark."""
    if not os.path.isfile(path):
        raise DataError(path, None, "expected a file, received: no such file")
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            path, line, f"expected UTF-8 text, received: byte {data[error.start]:#04x}"
        ) from None
