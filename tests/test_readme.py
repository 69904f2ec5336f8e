"""The README's examples run as written."""

import pathlib
import re

import keras
import tensorflow as tf
from absl.testing import parameterized

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


class ReadmeExamplesTest(tf.test.TestCase, parameterized.TestCase):
    def test_readme_has_examples(self):
        self.assertGreaterEqual(len(EXAMPLES), 8)

    @parameterized.parameters(*range(len(EXAMPLES)))
    def test_example_runs(self, index):
        keras.utils.set_random_seed(index)
        exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {})
