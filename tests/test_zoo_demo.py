"""`python -m zoo demo`, the README's main command, end to end (small)."""

import os
import tempfile

import tensorflow as tf

from zoo import __main__ as cli


class ZooDemoTest(tf.test.TestCase):
    def test_demo_trains_saves_and_reloads(self):
        with tempfile.TemporaryDirectory() as out:
            code = cli.main(["demo", "--out", out, "--epochs", "1", "--samples", "300"])
            self.assertEqual(0, code)
            self.assertTrue(os.path.isfile(os.path.join(out, "model.keras")))
            self.assertNotEmpty(os.listdir(os.path.join(out, "logs")))
            # Nothing half-written is left beside the model.
            self.assertCountEqual(["model.keras", "logs"], os.listdir(out))

    def test_demo_rejects_bad_arguments(self):
        self.assertEqual(2, cli.main(["demo", "--epochs", "0"]))
