"""`zoo explain recommender` and `zoo faithfulness recommender` on a tiny model."""

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tests.test_attention_transformer import assert_one_line_errors
from tests.test_attention_transformer import run_cli
from tests.test_recommender import NUM_ITEMS
from tests.test_recommender import tiny_retriever
from zoo.recommender import explanations
from zoo.recommender import recipe

HISTORY = "i3,i7,i12,i20"


def write_log(path, users=12, seed=0):
    """A SASRec-format log of the tiny model's labels: 6 to 9 items a user."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as file:
        for user in range(1, users + 1):
            for item in rng.choice(NUM_ITEMS, int(rng.integers(6, 10)), replace=False):
                file.write(f"{user} i{item + 1}\n")


class RecommenderExplainTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp()
        cls.model_path = os.path.join(cls.folder, "model.keras")
        keras.utils.set_random_seed(0)
        tiny_retriever().save(cls.model_path)
        cls.data = os.path.join(cls.folder, "log.txt")
        write_log(cls.data)

    def explain(self, *extra):
        code, printed, errors = run_cli(["explain", "recommender", "--history", HISTORY,
                                         "--model", self.model_path, *extra])
        self.assertEqual(0, code, errors)
        return printed

    def test_json_explains_the_top_recommendation(self):
        result = json.loads(self.explain("--json", "--method", "rollout"))
        _, predicted, _ = run_cli(["predict", "recommender", "--history", HISTORY, "--model",
                                   self.model_path, "--json", "--top", "1"])
        predicted = json.loads(predicted)
        top = predicted["items"][0]
        self.assertEqual(result["recommendation"]["item"], top["item"])
        self.assertAllClose(result["recommendation"]["score"], top["score"], atol=1e-3)
        # `predict` explains the same first item by the card's best method.
        best = json.loads(self.explain("--json"))
        shown = predicted["explanation"]
        self.assertEqual(("integrated_gradients", top["item"]), (shown["method"], shown["item"]))
        expected = sorted(best["items"], key=lambda entry: -entry["score"])[:3]
        self.assertEqual([entry["item"] for entry in expected],
                         [entry["item"] for entry in shown["history"]])
        self.assertAllClose([entry["score"] for entry in expected],
                            [entry["score"] for entry in shown["history"]], atol=1e-4)
        self.assertEqual((result["method"], result["unknown"]), ("rollout", []))
        self.assertEqual([entry["item"] for entry in result["items"]], HISTORY.split(","))
        self.assertEqual([entry["position"] for entry in result["items"]], [0, 1, 2, 3])
        # Rollout to the last position of a causal model spreads exactly the whole state.
        self.assertAllClose(sum(entry["score"] for entry in result["items"]), 1.0, atol=1e-3)

    def test_the_explained_output_is_the_items_score(self):
        model = tiny_retriever()
        histories = np.array([[0, 0, 3, 7, 12, 20], [1, 2, 3, 4, 5, 6]], np.int32)
        scores = explanations.ItemScores(model)({"item_ids": histories})
        self.assertAllClose(scores[:, 1:], model.score_all(histories)[:, 1:], atol=1e-5)
        # The padding scores 0, whatever the method.
        attributions = explanations.history_scores(explanations.ItemScores(model), histories,
                                                   np.array([4, 9]), "integrated_gradients")
        self.assertAllEqual(attributions[0, :2], [0.0, 0.0])
        self.assertTrue(np.all(attributions[:, 2:] != 0.0))

    def test_terminal_lines_and_html(self):
        page = os.path.join(self.folder, "explained.html")
        printed = self.explain("--method", "input_x_gradient", "--html", page)
        lines = printed.splitlines()
        self.assertTrue(lines[0].startswith("top recommendation: i"), lines[0])
        self.assertRegex(lines[1], r"history items by input_x_gradient, oldest first: i3-?[▁-█] ")
        self.assertEqual(sorted(line.split()[0] for line in lines[2:6]),
                         sorted(HISTORY.split(",")))
        with open(page, encoding="utf-8") as file:
            self.assertIn(">i12</span>", file.read())

    def test_errors_are_one_line(self):
        cases = [
            (["explain", "recommender", "--history", " , "], "expected --history with at least"),
            (["explain", "recommender", "--history", "x1,x2"],
             "expected --history with an item the model knows, received: x1, x2"),
            (["faithfulness", "recommender", "--data", "/no/such.txt"],
             "/no/such.txt: expected a labelled file"),
            (["faithfulness", "recommender", "--data", self.data, "--users", "0"],
             "expected --users > 0, received: 0"),
            (["faithfulness", "recommender", "--data", self.data, "--top-k", "12"],
             "expected users with more than 12 history items, received: none"),
        ]
        assert_one_line_errors(self, cases, ["--model", self.model_path])

    def test_faithfulness_json_and_its_numbers_recomputed(self):
        code, printed, errors = run_cli(
            ["faithfulness", "recommender", "--data", self.data, "--model", self.model_path,
             "--json", "--methods", "rollout", "input_x_gradient", "--random-seeds", "2",
             "--sanity-examples", "3", "--users", "8"])
        self.assertEqual(0, code, errors)
        report = json.loads(printed)
        self.assertEqual((report["examples"], report["k"], report["random_seeds"]), (8, 3, 2))
        self.assertEqual(set(report["methods"]), {"rollout", "input_x_gradient"})
        for values in report["methods"].values():
            for key in ("comprehensiveness", "sufficiency", "aopc", "sanity_spearman",
                        "rank_increase"):
                self.assertTrue(np.isfinite(values[key]), key)
            random_drop = report["random"]["comprehensiveness"]
            self.assertAllClose(values["random_ratio"],
                                values["comprehensiveness"] / random_drop if random_drop > 0
                                else np.nan)
            low, high = values["interval"]
            self.assertLessEqual(low, values["comprehensiveness"])
            self.assertGreaterEqual(high, values["comprehensiveness"])
            self.assertEqual(set(values["by_k"]), {"1", "2", "3"})
            self.assertEqual(values["by_k"]["3"]["comprehensiveness"],
                             values["comprehensiveness"])
        self.assertTrue({"comprehensiveness", "sufficiency"} <= set(report["random"]))
        # The same users, explained and reduced by hand.
        model = recipe.RecommenderRecipe().load(None, self.model_path)
        from zoo.recommender import data as recommender_data

        split = recommender_data.read(self.data, item_labels=model.preprocessor.item_labels).split
        histories, items, _ = explanations.sample_users(split.valid_history, split.valid_target,
                                                        6, 3, 8)
        scores = explanations.history_scores(explanations.ItemScores(model), histories, items,
                                             "input_x_gradient")
        before = model.score_all(histories)[np.arange(8), items]
        shortened = []
        for history, row in zip(histories, scores):
            real = np.flatnonzero(history)
            top = real[np.argsort(-row[real], kind="stable")[:3]]
            kept = [item for i, item in enumerate(history) if item and i not in top]
            shortened.append([0] * (6 - len(kept)) + kept)
        after = model.score_all(np.array(shortened))[np.arange(8), items]
        self.assertAllClose(report["methods"]["input_x_gradient"]["comprehensiveness"],
                            (before - after).mean(), atol=1e-4)

    def test_remove_and_top_positions(self):
        histories = np.array([[0, 5, 6, 7, 8], [1, 2, 3, 4, 5]])
        scores = np.array([[9.0, 0.1, 0.5, 0.5, -1.0], [0.2, 0.1, 0.4, 0.3, 0.0]])
        top = explanations.top_positions(scores, histories, 2)
        # The padding never counts.
        self.assertAllEqual(top, [[False, False, True, True, False],
                                  [False, False, True, True, False]])
        self.assertAllEqual(explanations.remove(histories, top), [[0, 0, 0, 5, 8],
                                                                  [0, 0, 1, 2, 5]])
        # Of equal scores, the later position wins.
        self.assertAllEqual(explanations.top_positions(scores, histories, 1)[0],
                            [False, False, False, True, False])
