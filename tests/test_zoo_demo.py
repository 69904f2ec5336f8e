"""`python -m zoo demo`, the README's main command, end to end (few steps)."""

import contextlib
import io
import json
import os
import tempfile

import tensorflow as tf

from zoo import __main__ as cli


class ZooDemoTest(tf.test.TestCase):
    def test_demo_classifies_fine_tunes_exports_and_reports(self):
        with tempfile.TemporaryDirectory() as out:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = cli.main(["demo", "--out", out, "--steps", "2"])
            self.assertEqual(0, code)
            self.assertCountEqual(["model.keras", "logs", "export"], os.listdir(out))
            with open(os.path.join(out, "export", "manifest.json")) as file:
                manifest = json.load(file)
            self.assertCountEqual(
                ["saved_model", "saved_model_strings", "tflite_float32", "tflite_float16",
                 "tflite_dynamic_int8", "tflite_full_int8", "onnx"],
                manifest["artifacts"],
            )
            summary = printed.getvalue()
            self.assertIn("a gorgeous, witty, seductive movie.", summary)
            self.assertIn("tensorboard --logdir", summary)
            # The tagger's preset on its built-in sentences: entity spans with confidence.
            self.assertIn("the sequence tagger (preset conll2003)", summary)
            self.assertRegex(summary, r"PER 'Maria Lindqvist' [01]\.\d\d")
            self.assertIn("the recommender (preset video-games)", summary)
            self.assertRegex(summary, r"history 12,55,301 -> \d+ \(-?\d+\.\d\d\)(, \d+ "
                                      r"\(-?\d+\.\d\d\)){4}")
            self.assertIn("the translator (preset multi30k-en-de)", summary)
            self.assertIn("A dog runs through the grass with a ball in its mouth.\n    ", summary)
            for artifact in manifest["artifacts"]:
                self.assertIn(artifact, summary)
            # It ends with one prediction explained token by token.
            self.assertRegex(summary, r"one prediction explained \(\w+, the most faithful")
            self.assertRegex(summary.splitlines()[-2], r"gorgeous-?[▁▂▃▄▅▆▇█]")

    def test_demo_rejects_bad_arguments(self):
        self.assertEqual(2, cli.main(["demo", "--steps", "0"]))
