"""Keras's own `MultiHeadAttention` test suite, run against ours.

The suite ships in the Keras wheel
(`keras/src/layers/attention/multi_head_attention_test.py`). It is imported
from there, not copied: each test runs with the module's `layers` namespace
swapped for one whose `MultiHeadAttention` is `kerasattn`'s, so every
`layers.MultiHeadAttention` the suite builds is ours.
"""

from __future__ import annotations

import importlib
import types

import keras
import tensorflow as tf
import pytest

from kerasattn.layers import MultiHeadAttention

keras_suite = importlib.import_module("keras.src.layers.attention.multi_head_attention_test")


class _LayersWithOurs(types.ModuleType):
    """`keras.src.layers` with `MultiHeadAttention` replaced by ours."""

    def __init__(self, original):
        super().__init__(original.__name__)
        self._original = original

    def __getattr__(self, name):
        if name == "MultiHeadAttention":
            return MultiHeadAttention
        return getattr(self._original, name)


# Tests that fail on error-message wording only: ours raise the same
# `ValueError` for the same input, worded "Expected ..., received: x=..." as
# everywhere in kerasattn, where Keras's messages read differently.
WORDING_ONLY = {
    "test_invalid_scalar_args_rejected": "ValueError for num_heads=0 etc. worded "
    "'Expected `num_heads` to be a positive integer', not Keras's 'argument `num_heads`'",
    "test_multi_head_attention_output_shape_error": "ValueError for output_shape=8.0 worded "
    "'Expected `output_shape` to be a positive int ...', not Keras's 'Invalid `output_shape`'",
    "test_shape_mismatch_error_key_value_dim_mismatch": "ValueError worded 'Expected `key` "
    "and `value` with equal dimensions but the last', not Keras's 'must be equal'",
    "test_shape_mismatch_error_key_value_dim_mismatch_high_dim": "ValueError worded "
    "'Expected `key` and `value` with equal dimensions but the last', not 'must be equal'",
    "test_shape_mismatch_error_query_value_dim_mismatch": "ValueError worded 'Expected `key` "
    "of rank 3', not Keras's 'must be equal'",
}


def _expected_failure(name: str, reason: str):
    inherited = getattr(keras_suite.MultiHeadAttentionTest, name)

    @pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)
    def test(self):
        inherited(self)

    test.__name__ = name
    return test


class KerasMultiHeadAttentionSuite(keras_suite.MultiHeadAttentionTest):
    """Every test of Keras's suite, on `kerasattn.layers.MultiHeadAttention`."""

    for _name, _reason in WORDING_ONLY.items():
        locals()[_name] = _expected_failure(_name, _reason)
    del _name, _reason

    def setUp(self):
        self._keras_layers = keras_suite.layers
        keras_suite.layers = _LayersWithOurs(self._keras_layers)
        super().setUp()

    def tearDown(self):
        super().tearDown()
        keras_suite.layers = self._keras_layers


class SuiteSetupTest(tf.test.TestCase):
    def test_suite_builds_our_layer(self):
        # The swap is what makes the suite meaningful: without it every test
        # above would exercise Keras's own layer.
        suite = KerasMultiHeadAttentionSuite("test_basics")
        suite.setUp()
        try:
            self.assertIs(keras_suite.layers.MultiHeadAttention, MultiHeadAttention)
            self.assertIs(keras_suite.layers.Dense, keras.layers.Dense)
        finally:
            suite.tearDown()
        self.assertIsNot(keras_suite.layers.MultiHeadAttention, MultiHeadAttention)

    def test_wording_only_tests_exist(self):
        for name in WORDING_ONLY:
            self.assertTrue(hasattr(keras_suite.MultiHeadAttentionTest, name), name)
