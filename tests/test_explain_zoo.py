"""`python -m zoo explain` and `python -m zoo faithfulness` with the classifier's sst2 preset."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tests.test_attention_transformer import REPO
from tests.test_attention_transformer import console_environment
from tests.test_attention_transformer import assert_one_line_errors
from tests.test_attention_transformer import run_cli
from zoo import explanations
from zoo.attention_transformer import recipe

TEXT = "a gorgeous, witty, seductive movie."
SENTENCES = [
    ("a gorgeous , witty , seductive movie .", 1),
    ("the plot is dull and the acting is worse .", 0),
    ("one of the best films of the year .", 1),
    ("a tedious , leaden mess .", 0),
]


class ExplainCommandTest(tf.test.TestCase):
    def test_json_names_the_method_and_scores_every_token(self):
        code, printed, errors = run_cli(["explain", "attention-transformer", TEXT, "--json",
                                         "--method", "rollout"])
        self.assertEqual(0, code, errors)
        result = json.loads(printed)
        self.assertEqual(result["method"], "rollout")
        (row,) = result["explanations"]
        self.assertEqual((row["label"], row["text"]), ("positive", TEXT))
        self.assertEqual([t["token"] for t in row["tokens"]][:4], ["a", "gorgeous", ",", "witty"])
        # Rollout through a pooling spreads exactly the whole output.
        self.assertAllClose(sum(t["score"] for t in row["tokens"]), 1.0, atol=1e-3)

    def test_terminal_line_and_html(self):
        with tempfile.TemporaryDirectory() as folder:
            page = os.path.join(folder, "explained.html")
            code, printed, errors = run_cli(["explain", "attention-transformer", TEXT,
                                             "--html", page])
            self.assertEqual(0, code, errors)
            self.assertEqual(os.listdir(folder), ["explained.html"])  # no temporary left
            with open(page, encoding="utf-8") as file:
                content = file.read()
        self.assertIn(f"tokens by {recipe.BEST_EXPLAIN_METHOD}", printed)
        self.assertRegex(printed, "gorgeous-?[▁▂▃▄▅▆▇█]")
        self.assertIn("<span", content)
        self.assertIn("gorgeous", content)

    def test_errors_are_one_line(self):
        cases = [
            (["explain", "attention-transformer", "   "], "expected texts with at least one token"),
            (["explain", "attention-transformer", TEXT, "--method", "saliency"],
             "invalid choice: 'saliency'"),
            (["explain", "attention-transformer", TEXT, "--html", "/no/such/folder/x.html"],
             "expected a file in an existing folder"),
            (["faithfulness", "attention-transformer", "--data", "/no/such.tsv"],
             "/no/such.tsv: expected a labelled file"),
            (["faithfulness", "attention-transformer", "--data", __file__, "--random-seeds",
              "0"], "expected --random-seeds > 0"),
        ]
        assert_one_line_errors(self, cases)

    def test_predict_shows_the_best_method(self):
        code, printed, errors = run_cli(["predict", "attention-transformer", TEXT])
        self.assertEqual(0, code, errors)
        self.assertIn(f"tokens by {recipe.BEST_EXPLAIN_METHOD}", printed)

    def test_demo_ends_with_an_explained_prediction(self):
        from zoo import demo
        from zoo.attention_transformer.model import AttentionTransformerClassifier

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            demo._print_explained(AttentionTransformerClassifier.from_preset("sst2"), TEXT)
        lines = printed.getvalue().strip().splitlines()
        self.assertIn(f"one prediction explained ({recipe.BEST_EXPLAIN_METHOD}", lines[0])
        self.assertEqual(f"  {TEXT} -> positive 0.96", lines[1])
        self.assertRegex(lines[2], "gorgeous-?[▁▂▃▄▅▆▇█]")

    def test_quiet_console(self):
        result = subprocess.run(
            [sys.executable, "-m", "zoo", "explain", "attention-transformer", TEXT,
             "--method", "gradient_rollout"],
            capture_output=True, text=True, cwd=REPO, timeout=300, env=console_environment(),
        )
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual("", result.stderr)


class FaithfulnessCommandTest(tf.test.TestCase):
    def test_json_report(self):
        with tempfile.TemporaryDirectory() as folder:
            data = os.path.join(folder, "tiny.tsv")
            with open(data, "w", encoding="utf-8") as file:
                file.write("sentence\tlabel\n")
                file.writelines(f"{text}\t{label}\n" for text, label in SENTENCES)
            code, printed, errors = run_cli(
                ["faithfulness", "attention-transformer", "--data", data, "--json",
                 "--methods", "rollout", "input_x_gradient", "--random-seeds", "2",
                 "--sanity-examples", "3"])
        self.assertEqual(0, code, errors)
        report = json.loads(printed)
        self.assertEqual(report["examples"], len(SENTENCES))
        self.assertEqual(set(report["methods"]), {"rollout", "input_x_gradient"})
        self.assertEqual(set(report["by_removal"]), {"delete", "replace"})
        self.assertEqual(report["replacement_token"], "[MASK]")
        for values in report["methods"].values():
            for key in ("comprehensiveness", "sufficiency", "aopc", "sanity_spearman"):
                self.assertTrue(np.isfinite(values[key]), key)
            low, high = values["interval"]
            self.assertLessEqual(low, values["comprehensiveness"])
            self.assertGreaterEqual(high, values["comprehensiveness"])
            # Top down: the head first, the token embeddings last.
            cascade = [stage["layer"] for stage in values["sanity_cascade"]]
            self.assertEqual((cascade[0], cascade[-1]), ("logits", "token_embedding"))
            self.assertLen(cascade, 11)
        self.assertEqual(set(report["random"]) >= {"comprehensiveness", "sufficiency"}, True)
        # The table for a person names every row.
        table = explanations.faithfulness_table(report, "delete", "deleted")
        for name in ("rollout", "input_x_gradient", "random (2 seeds)"):
            self.assertIn(name, table)

    def test_progress_bar_only_on_a_terminal(self):
        class Terminal:
            def __init__(self, tty):
                self.text, self.tty = "", tty

            def isatty(self):
                return self.tty

            def write(self, text):
                self.text += text

            def flush(self):
                pass

        for tty in (True, False):
            stream = Terminal(tty)
            progress = explanations.Progress(2, stream)
            progress.step("one")
            progress.step("two")
            if tty:
                self.assertIn("2/2", stream.text)
                self.assertTrue(stream.text.endswith("\n"))
            else:
                self.assertEqual("", stream.text)

    def test_bar_line(self):
        self.assertEqual(explanations.bar_line(["a", "b", "c"], [1.0, -0.5, 0.0]),
                         "a█ b-▅ c▁")
