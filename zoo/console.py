"""A quiet console for `python -m zoo`: only the tool's own output.

TensorFlow's shared libraries log as they load (CUDA, cuDNN, oneDNN, CPU
features), before its log level is read, straight to file descriptor 2;
later messages follow `TF_CPP_MIN_LOG_LEVEL`. `quiet()` sets that level and
loads TensorFlow with descriptor 2 pointed at `/dev/null`, then turns the
Python loggers down. A user who sets `TF_CPP_MIN_LOG_LEVEL` themselves (to
debug a device, say) sees every line as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator

# Whether the user set the level (read before `quiet` sets it): then every line shows.
_USER_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ


def quiet() -> None:
    """Loads TensorFlow without its start-up logging; call before anything imports it."""
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
    set `TF_CPP_MIN_LOG_LEVEL` (then nothing changes).

    For native libraries that log to it directly (TensorFlow as it loads,
    the LiteRT interpreter's "Created TensorFlow Lite XNNPACK delegate"). An
    exception raised in the block still propagates, and is printed once
    descriptor 2 is back.
    """
    if _USER_LEVEL:
        yield
        return
    import sys

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
