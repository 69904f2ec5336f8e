"""The translator's explanations (source–target alignments), `zoo explain translator`
and `zoo faithfulness translator`, on a tiny model."""

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasattn import explain
from kerasattn.explain import faithfulness
from tests.test_attention_transformer import assert_one_line_errors
from tests.test_attention_transformer import run_cli
from tests.test_translator import pairs
from tests.test_translator import tiny_translator
from tests.test_translator import write_pairs
from zoo.translator import explanations
from zoo.translator import recipe
from zoo.translator.preprocessor import PAD_ID

TEXTS = ["A dog runs in the park.", "A man eats."]


def short_translator(cross_attention="multi_head"):
    """A tiny untrained translator whose source matters: embeddings scaled up, at most
    7 target tokens."""
    keras.utils.set_random_seed(0)
    model = tiny_translator(cross_attention, target_sequence_length=8)
    embedding = model.backbone.target_token_embedding
    embedding.embeddings.assign(embedding.embeddings * 20.0)
    return model


class TranslatorExplanationsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = short_translator()
        cls.translations = explanations.translate(cls.model, TEXTS)
        cls.rows = explanations._rows(cls.translations)
        cls.scorer = explanations.TokenLogProbability(cls.model)

    def test_translations_are_the_greedy_ones(self):
        self.assertEqual([t.text for t in self.translations],
                         self.model.translate(TEXTS, beam=1))
        lengths = self.model.preprocessor.source_lengths(TEXTS)
        self.assertEqual([len(t.source_ids) for t in self.translations], list(lengths))
        self.assertLen(self.rows, sum(len(t.target_ids) for t in self.translations))

    def test_the_scorer_reads_the_greedy_tokens_log_probability(self):
        inputs = explanations.scorer_inputs(self.translations, self.rows)
        logits = self.model({key: inputs[key] for key in explanations.FEATURES})
        log_probabilities = np.asarray(tf.nn.log_softmax(logits))
        positions = inputs["target_weights"].argmax(1)
        rows = np.arange(len(positions))
        expected = log_probabilities[rows, positions, inputs["labels"][rows, positions]]
        self.assertAllClose(explanations.log_probabilities_of(self.scorer, self.translations,
                                                              self.rows), expected, atol=1e-5)
        # Greedy: each generated token is the most likely one at its position.
        self.assertAllEqual(log_probabilities[rows, positions].argmax(-1),
                            inputs["labels"][rows, positions])

    def test_cross_attention_rows_are_distributions_over_real_source_tokens(self):
        for cross_attention in ("multi_head", "additive"):
            model = short_translator(cross_attention)
            inputs = explanations.scorer_inputs(explanations.translate(model, TEXTS), [(0, 0),
                                                                                      (1, 0)])
            mask = inputs["encoder_padding_mask"]
            self.assertFalse(mask[1].all())  # the second source is padded
            for layers in ("last", "mean"):
                with self.subTest(cross_attention=cross_attention, layers=layers):
                    alignment = explain.cross_attention(
                        explanations.TokenLogProbability(model), inputs, mask, layers=layers)
                    self.assertEqual(alignment.shape, (2, inputs["labels"].shape[1],
                                                       mask.shape[1]))
                    self.assertAllClose(alignment.sum(-1), np.ones(alignment.shape[:2]))
                    self.assertTrue((alignment[~np.broadcast_to(mask[:, None],
                                                                alignment.shape)] == 0).all())
                    self.assertTrue((alignment >= 0).all())
        with self.assertRaisesRegex(ValueError, "Expected `layers` in"):
            explain.cross_attention(self.scorer, inputs, mask, layers="first")

    def test_methods_shapes_padding_and_random_seed(self):
        longest = max(len(t.source_ids) for t in self.translations)
        mask = explanations.scorer_inputs(self.translations, self.rows)["encoder_padding_mask"]
        for method in recipe.EXPLAIN_METHODS:
            with self.subTest(method=method):
                scores = explanations.token_scores(self.scorer, self.translations, self.rows,
                                                   method)
                self.assertEqual(scores.shape, (len(self.rows), longest))
                self.assertTrue((scores[~mask] == 0).all())
                self.assertTrue(np.isfinite(scores).all())
        random = [explanations.token_scores(self.scorer, self.translations, self.rows,
                                            "random", seed) for seed in (0, 0, 1)]
        self.assertAllEqual(random[0], random[1])
        self.assertNotAllClose(random[0], random[2])
        with self.assertRaisesRegex(ValueError, "expected a method in"):
            explanations.token_scores(self.scorer, self.translations, self.rows, "rollout")

    def test_integrated_gradients_completeness(self):
        # The attributions sum to f(source) - f(every source token [PAD]).
        inputs = explanations.scorer_inputs(self.translations, self.rows)
        scores = explanations.token_scores(self.scorer, self.translations, self.rows,
                                           "integrated_gradients")
        run = explanations._log_probability_function(self.scorer)
        padded = {**inputs, "encoder_token_ids": np.full_like(inputs["encoder_token_ids"],
                                                              PAD_ID)}
        change = run(inputs) - run(padded)
        self.assertGreater(np.abs(change).max(), 0.1)  # the source matters
        self.assertAllClose(scores.sum(1), change, atol=0.01 * np.abs(change).max())


class TranslatorExplainCliTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp()
        cls.model_path = os.path.join(cls.folder, "model.keras")
        short_translator().save(cls.model_path)
        write_pairs(cls.folder, "val", pairs(4, seed=2))
        cls.tsv = os.path.join(cls.folder, "pairs.tsv")
        text = pairs(2, seed=3)
        with open(cls.tsv, "w", encoding="utf-8") as file:
            file.write("source\ttarget\n" + "".join(
                f"{source}\t{target}\n" for source, target in zip(text.sources, text.targets)))

    def test_json_holds_the_full_alignment(self):
        code, printed, errors = run_cli(["explain", "translator", *TEXTS, "--json", "--method",
                                         "cross_attention", "--model", self.model_path])
        self.assertEqual(0, code, errors)
        result = json.loads(printed)
        self.assertEqual((result["model"], result["method"]), ("translator", "cross_attention"))
        model = recipe.TranslatorRecipe().load(None, self.model_path)
        for row, text, translation in zip(result["explanations"], TEXTS,
                                          model.translate(TEXTS, beam=1)):
            self.assertEqual((row["text"], row["translation"]), (text, translation))
            alignment = np.array(row["alignment"])
            self.assertEqual(alignment.shape, (len(row["target_tokens"]),
                                               len(row["source_tokens"])))
            self.assertLen(row["log_probabilities"], len(row["target_tokens"]))
            self.assertAllClose(alignment.sum(1), np.ones(len(alignment)), atol=1e-4)

    def test_terminal_alignment_and_html(self):
        page = os.path.join(self.folder, "alignment.html")
        code, printed, errors = run_cli(["explain", "translator", TEXTS[0], "--model",
                                         self.model_path, "--html", page])
        self.assertEqual(0, code, errors)
        lines = printed.splitlines()
        self.assertEqual(lines[0], TEXTS[0])
        self.assertTrue(lines[1].startswith("  → "))
        self.assertIn(f"by {recipe.BEST_EXPLAIN_METHOD}:", lines[2])
        scored = r"\S+ -?\d\.\d{3}"
        self.assertRegex(lines[3], rf"^    \S+ +← {scored}, {scored}, {scored}$")
        self.assertEqual(lines[-1], f"wrote {page}")
        with open(page, encoding="utf-8") as file:
            self.assertIn("runs</span>", file.read())

    def test_errors_are_one_line(self):
        cases = [
            (["explain", "translator", "   "], "expected non-empty texts"),
            (["explain", "translator", "A dog.", "--method", "rollout"], "invalid choice"),
            (["faithfulness", "translator", "--data", "/no/such"],
             "/no/such: expected a labelled file or a data folder"),
            (["faithfulness", "translator", "--data", self.folder, "--split", "test"],
             "expected test.en and test.de, or test.tsv, received: neither"),
            (["faithfulness", "translator", "--data", self.folder, "--limit", "0"],
             "expected --limit > 0, received: 0"),
        ]
        assert_one_line_errors(self, cases, ["--model", self.model_path])

    def test_faithfulness_json_and_its_numbers_recomputed(self):
        code, printed, errors = run_cli(
            ["faithfulness", "translator", "--data", self.folder, "--model", self.model_path,
             "--json", "--methods", "cross_attention", "input_x_gradient", "--random-seeds",
             "2", "--sanity-examples", "3", "--limit", "2"])
        self.assertEqual(0, code, errors)
        report = json.loads(printed)
        model = recipe.TranslatorRecipe().load(None, self.model_path)
        sources = pairs(4, seed=2).sources[:2]
        translations = explanations.translate(model, sources)
        rows = explanations._rows(translations)
        self.assertEqual((report["sentences"], report["examples"], report["random_seeds"]),
                         (2, len(rows), 2))
        self.assertEqual(set(report["methods"]), {"cross_attention", "input_x_gradient"})
        self.assertEqual(set(report["by_removal"]), {"delete", "replace"})
        for values in report["methods"].values():
            for key in ("comprehensiveness", "sufficiency", "aopc", "sanity_spearman",
                        "random_ratio"):
                self.assertTrue(np.isfinite(values[key]), key)
            low, high = values["interval"]
            self.assertLessEqual(low, values["comprehensiveness"])
            self.assertGreaterEqual(high, values["comprehensiveness"])
        # Deleting the top half of the source tokens by cross-attention, by hand.
        scorer = explanations.TokenLogProbability(model)
        scores = explanations.token_scores(scorer, translations, rows, "cross_attention")
        before = explanations.log_probabilities_of(scorer, translations, rows)
        shortened = []
        for (index, _), row in zip(rows, scores):
            source = translations[index].source_ids
            top = np.argsort(-row[:len(source)], kind="stable")[:faithfulness.top_count(
                len(source), 50)]
            shortened.append(explanations.Translation(
                "", "", np.delete(source, top), translations[index].target_ids))
        after = explanations.log_probabilities_of(
            scorer, shortened, [(i, position) for i, (_, position) in enumerate(rows)])
        self.assertAllClose(
            report["by_removal"]["delete"]["methods"]["cross_attention"]["bins"]["50"][
                "comprehensiveness"], (before - after).mean(), atol=1e-4)
        # A source<TAB>target file, and the table for a person.
        code, printed, errors = run_cli(
            ["faithfulness", "translator", "--data", self.tsv, "--model", self.model_path,
             "--methods", "cross_attention", "--random-seeds", "1", "--sanity-examples", "2",
             "--limit", "1"])
        self.assertEqual(0, code, errors)
        self.assertRegex(printed, r"^\d+ target tokens of 1 greedy translations; ")
        self.assertIn("tokens deleted: comprehensiveness and sufficiency", printed)
        self.assertIn("tokens replaced by ", printed)
        self.assertIn("best by comprehensiveness - sufficiency (deletion): cross_attention",
                      printed)
