"""A quiet console for `python -m zoo`: only the tool's own output.

TensorFlow's shared libraries log as they load (absl's "All log messages
before absl::InitializeLog() is called are written to STDERR", then oneDNN's
and CUDA's notices, once per library that logs), straight to file
descriptor 2 and whatever `TF_CPP_MIN_LOG_LEVEL` says: nothing in the
environment turns those lines off. `quiet()` loads TensorFlow with
descriptor 2 pointed at `/dev/null`, sets `TF_CPP_MIN_LOG_LEVEL` to 3 for
the messages that follow (unless the user set it), and turns the Python
loggers down. `ZOO_LOG=1` in the environment asks for TensorFlow's logging
as it would be without the tool: then nothing here changes anything.

`fit_verbosity` picks Keras's `fit` verbosity: progress bars on a terminal,
one line per epoch when the output goes to a file or a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator, Optional, TextIO

# The environment variable that asks for TensorFlow's logging.
LOG_VARIABLE = "ZOO_LOG"


def logs_requested() -> bool:
    """Whether the user asked for TensorFlow's logging: `ZOO_LOG` set to
    anything but empty, `0`, `false`, `no` or `off`."""
    value = os.environ.get(LOG_VARIABLE, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def quiet() -> None:
    """Loads TensorFlow without its start-up logging; call before anything imports it.

    With `ZOO_LOG=1` it only imports TensorFlow.
    """
    if logs_requested():
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    with native_logging_silenced():
        import tensorflow  # noqa: F401
    for name in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Notices raised inside TensorFlow and its dependencies, not by our calls.
    for module in ("tensorflow", "tf2onnx", "keras", "google.protobuf", "onnx"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def native_logging_silenced() -> Iterator[None]:
    """Points file descriptor 2 at `/dev/null` for the block, unless the user
    set `ZOO_LOG=1` (then nothing changes).

    For native libraries that log to it directly (TensorFlow as it loads,
    the LiteRT interpreter's "Created TensorFlow Lite XNNPACK delegate"). An
    exception raised in the block still propagates, and is printed once
    descriptor 2 is back.
    """
    if logs_requested():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


VERBOSE_HELP = ("Keras fit verbosity: 0 silent, 1 a progress bar per epoch, 2 one line per "
                "epoch (default: 1 on a terminal, 2 when the output goes to a file or a pipe)")


def fit_verbosity(verbose: Optional[int | str] = None, stream: Optional[TextIO] = None) -> int:
    """The `verbose` to pass to Keras's `fit`: the one asked for, else by where output goes.

    Keras's default (`"auto"`, that is 1) draws a progress bar that it redraws
    at every step, which a log file keeps as thousands of lines; 2 prints one
    line per epoch.

    Args:
        verbose: 0, 1 or 2 as given by the user (`--verbose`), or `None` /
            `"auto"` for the default.
        stream: where Keras prints; defaults to `sys.stdout`.

    Returns:
        `verbose` when it is 0, 1 or 2; else 1 if `stream` is a terminal,
        2 if not (a file, a pipe, a notebook's output).
    """
    if verbose is None or verbose == "auto":
        stream = sys.stdout if stream is None else stream
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            terminal = False
        return 1 if terminal else 2
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"expected --verbose 0, 1 or 2, received: {verbose!r}")
    return int(verbose)
