"""Test session setup: quiet TensorFlow logs, the TensorFlow backend."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase defines a `test_session` context manager that pytest
    # collects and then skips as "Not a test"; drop it so skips mean something.
    items[:] = [item for item in items if item.name != "test_session"]
