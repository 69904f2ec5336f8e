"""`zoo explain sequence-tagger` and `zoo faithfulness sequence-tagger` on a tiny model."""

import json
import os
import random
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tests.test_attention_transformer import assert_one_line_errors
from tests.test_attention_transformer import run_cli
from tests.test_sequence_tagger import TAGS
from tests.test_sequence_tagger import sentence
from tests.test_sequence_tagger import tiny_tagger
from tests.test_sequence_tagger import write_conll
from zoo.sequence_tagger import explanations
from zoo.sequence_tagger import recipe

TEXT = "John Smith visited Paris in 1996 ."


def entity_tagger():
    """A tiny untrained tagger that reads most tokens as a one-token person (B-PER)."""
    keras.utils.set_random_seed(0)
    model = tiny_tagger()
    layer = model.get_layer("potentials")
    kernel, bias = layer.get_weights()
    bias[TAGS.index("B-PER")] = 3.0
    layer.set_weights([kernel, bias])
    return model


class TaggerExplainTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp()
        cls.model_path = os.path.join(cls.folder, "model.keras")
        entity_tagger().save(cls.model_path)
        cls.data = os.path.join(cls.folder, "valid.txt")
        write_conll(cls.data, 12, seed=1)

    def test_the_explained_output_is_the_confidence_predict_shows(self):
        model = entity_tagger()
        rng = random.Random(0)
        sentences = [sentence(rng)[0] for _ in range(3)]
        found = explanations.predicted_entities(model, sentences)
        entities = [entity for row in found for entity in row]
        rows = [tokens for tokens, row in zip(sentences, found) for _ in row]
        self.assertGreater(len(entities), 3)
        marginals = explanations.marginals_of(model, rows, entities)
        self.assertAllClose(marginals, [e["confidence"] for e in entities], atol=1e-5)
        features = explanations._features(model, rows)
        weights = explanations._entity_weights(features["padding_mask"].shape[1], len(TAGS),
                                               entities)
        scored = explanations.EntityMarginal(model)({**features, "entity_weights": weights})
        self.assertAllClose(np.asarray(scored)[:, 0], marginals, atol=1e-5)

    def test_json_scores_every_token_of_each_entity(self):
        code, printed, errors = run_cli(["explain", "sequence-tagger", TEXT, "--json",
                                         "--method", "rollout", "--model", self.model_path])
        self.assertEqual(0, code, errors)
        result = json.loads(printed)
        self.assertEqual(result["method"], "rollout")
        (row,) = result["explanations"]
        self.assertEqual(row["tokens"], TEXT.split())
        self.assertNotEqual(row["entities"], [])
        for entity in row["entities"]:
            self.assertEqual([t["token"] for t in entity["tokens"]], TEXT.split())
            self.assertEqual([not t["context"] for t in entity["tokens"]],
                             [entity["start"] <= i < entity["end"] for i in range(7)])
            # Rollout of a self-attention to one position spreads exactly the whole state.
            self.assertAllClose(sum(t["score"] for t in entity["tokens"]), 1.0, atol=1e-3)

    def test_terminal_line_and_html(self):
        page = os.path.join(self.folder, "explained.html")
        code, printed, errors = run_cli(["explain", "sequence-tagger", TEXT, "--model",
                                         self.model_path, "--html", page])
        self.assertEqual(0, code, errors)
        lines = printed.splitlines()
        self.assertEqual(lines[0], TEXT)
        self.assertRegex(lines[1], rf"  \w+ '\S+' [01]\.\d{{3}}, context by "
                                   rf"{recipe.BEST_EXPLAIN_METHOD}: ")
        self.assertRegex(lines[1], r"\[\S+\]-?[▁-█]")  # the entity, bracketed
        with open(page, encoding="utf-8") as file:
            self.assertIn("Paris</span>", file.read())

    def test_errors_are_one_line(self):
        cases = [
            (["explain", "sequence-tagger", "   "], "expected texts with at least one token"),
            (["faithfulness", "sequence-tagger", "--data", "/no/such.txt"],
             "/no/such.txt: expected a labelled file"),
            (["faithfulness", "sequence-tagger", "--data", self.data, "--entities", "0"],
             "expected --entities > 0, received: 0"),
            (["faithfulness", "sequence-tagger", "--data", self.data, "--top-k", "40"],
             "expected predicted entities with more than 40 context tokens, received: none"),
        ]
        assert_one_line_errors(self, cases, ["--model", self.model_path])

    def test_faithfulness_json_and_its_numbers_recomputed(self):
        code, printed, errors = run_cli(
            ["faithfulness", "sequence-tagger", "--data", self.data, "--model", self.model_path,
             "--json", "--methods", "rollout", "--random-seeds", "2", "--sanity-examples",
             "2", "--entities", "5"])
        self.assertEqual(0, code, errors)
        report = json.loads(printed)
        self.assertEqual((report["examples"], report["k"], report["random_seeds"]), (5, 3, 2))
        self.assertEqual(set(report["methods"]), {"rollout"})
        for values in report["methods"].values():
            for key in ("comprehensiveness", "sufficiency", "aopc", "sanity_spearman"):
                self.assertTrue(np.isfinite(values[key]), key)
            low, high = values["interval"]
            self.assertLessEqual(low, values["comprehensiveness"])
            self.assertGreaterEqual(high, values["comprehensiveness"])
            self.assertEqual(set(values["by_k"]), {"1", "2", "3"})
        self.assertTrue({"comprehensiveness", "sufficiency"} <= set(report["random"]))
        # The same entities, explained and reduced by hand.
        from kerasattn import data as kdata

        model = recipe.SequenceTaggerRecipe().load(None, self.model_path)
        read = kdata.read_conll(self.data, output_scheme="IOB2", tag_names=TAGS)
        sentences, entities, _ = explanations.sample_entities(model, read.tokens, 3, 5)
        scores = explanations.token_scores(explanations.EntityMarginal(model), sentences,
                                           entities, "rollout")
        before = explanations.marginals_of(model, sentences, entities)
        shortened, moved = [], []
        for tokens, entity, row in zip(sentences, entities, scores):
            context = [i for i in range(len(tokens))
                       if not entity["start"] <= i < entity["end"]]
            top = sorted(context, key=lambda i: -row[i])[:3]
            shortened.append([t for i, t in enumerate(tokens) if i not in top])
            shift = sum(i < entity["start"] for i in top)
            moved.append({**entity, "positions": [p - shift for p in entity["positions"]]})
        after = explanations.marginals_of(model, shortened, moved)
        self.assertAllClose(report["methods"]["rollout"]["comprehensiveness"],
                            (before - after).mean(), atol=1e-5)
