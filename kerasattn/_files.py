"""Writing files so that a reader never sees a half-written one."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def write_atomically(
    path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp"
) -> None:
    """Calls `write(temporary_path)` beside `path`, then renames it to `path`.

    The temporary file is in the same folder (so the rename is atomic) and
    gets the permissions of a newly created file (`mkstemp` makes it 0600);
    it is removed if `write` fails.

    Args:
        path: the file to write; its folder must exist.
        write: a callable that writes the file whose path it is given.
        suffix: the temporary name's ending (some writers check it, such as
            `keras.Model.save` wanting ".keras").
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}-", suffix=suffix
    )
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
