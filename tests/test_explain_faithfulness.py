"""`kerasattn.explain.faithfulness`: ERASER's measures by hand, ranks, the sanity check."""

import doctest
import importlib.util
import io
import unittest

import keras
import numpy as np
import tensorflow as tf

from kerasattn import explain
from kerasattn.explain import faithfulness

# One example of 10 real tokens; the (fake) model's probability of class 1
# is 0.5, plus 0.3 if token 7 is present, plus 0.1 if token 8 is.
TOKENS = np.array([[7, 8, 3, 4, 5, 6, 2, 9, 1, 10, 0, 0]])
MASK = TOKENS != 0
GOOD = np.array([[10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]])  # 7 first, then 8
BAD = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0]])  # 7 and 8 last


def fake_predict(token_ids, padding_mask):
    present = lambda token: ((token_ids == token) & padding_mask).any(1)  # noqa: E731
    positive = 0.5 + 0.3 * present(7) + 0.1 * present(8)
    return np.stack([1 - positive, positive], axis=1)


class ErasureByHandTest(tf.test.TestCase):
    def test_erase_deletes_and_closes_up(self):
        # The top 20 % of 10 tokens is 2 tokens: 7 and 8.
        ids, mask = faithfulness.erase(TOKENS, MASK, GOOD, 20)
        self.assertAllEqual(ids[0], [3, 4, 5, 6, 2, 9, 1, 10, 0, 0, 0, 0])
        self.assertAllEqual(mask[0], [True] * 8 + [False] * 4)

    def test_erase_keeps_the_top(self):
        ids, mask = faithfulness.erase(TOKENS, MASK, GOOD, 20, keep=True)
        self.assertAllEqual(ids[0], [7, 8] + [0] * 10)
        self.assertEqual(mask.sum(), 2)

    def test_erase_replaces_in_place(self):
        ids, mask = faithfulness.erase(TOKENS, MASK, GOOD, 20, strategy="replace",
                                       replacement_id=99)
        self.assertAllEqual(ids[0], [99, 99, 3, 4, 5, 6, 2, 9, 1, 10, 0, 0])
        self.assertAllEqual(mask, MASK)

    def test_top_count(self):
        # ceil(k n / 100), at least one token.
        self.assertEqual([faithfulness.top_count(10, k) for k in faithfulness.BINS],
                         [1, 1, 1, 2, 5])
        self.assertEqual(faithfulness.top_count(3, 50), 2)

    def test_comprehensiveness_and_sufficiency(self):
        # Counts per bin: 1, 1, 1, 2, 5 tokens; p(1 | x) = 0.9.
        # GOOD, removed: 7 -> 0.6 (three bins), 7 and 8 -> 0.5 (two bins):
        #   comprehensiveness 0.3, 0.3, 0.3, 0.4, 0.4, AOPC 1.7 / 5 = 0.34;
        #   kept: 7 alone -> 0.8, then both -> 0.9: sufficiency 0.1 x 3, 0, 0,
        #   AOPC 0.06.
        # BAD removes 10, 1, 9, 2, 6 (never 7 or 8): comprehensiveness 0;
        #   keeping only those gives 0.5: sufficiency 0.4 everywhere.
        for strategy in faithfulness.STRATEGIES:
            report = faithfulness.evaluate(
                fake_predict, TOKENS, MASK, {"good": GOOD, "bad": BAD},
                strategies=(strategy,), random_seeds=1, replacement_id=99)[strategy]
            good, bad = report["methods"]["good"], report["methods"]["bad"]
            self.assertAllClose(
                [good["bins"][k]["comprehensiveness"] for k in ("1", "5", "10", "20", "50")],
                [0.3, 0.3, 0.3, 0.4, 0.4])
            self.assertAllClose(good["comprehensiveness"], 0.34)
            self.assertAllClose(good["sufficiency"], 0.06)
            self.assertAllClose(good["aopc"], 0.28)
            self.assertAllClose(good["interval"], [0.34, 0.34])  # one example
            self.assertAllClose(bad["comprehensiveness"], 0.0)
            self.assertAllClose(bad["sufficiency"], 0.4)

    def test_random_row_is_the_seeds_mean(self):
        report = faithfulness.evaluate(fake_predict, TOKENS, MASK, {}, strategies=("delete",),
                                       random_seeds=2)
        per_seed = [faithfulness.erasure_scores(fake_predict, TOKENS, MASK,
                                                explain.random_scores(MASK, seed))
                    for seed in (0, 1)]
        expected = np.mean([r["comprehensiveness"].mean() for r in per_seed])
        self.assertAllClose(report["delete"]["random"]["comprehensiveness"], expected)

    def test_row_inputs_travel_with_their_rows(self):
        # Three copies of the example, each with its own offset on class 1 that
        # `predict_proba` reads from `row_inputs`: the drops are the offset-free
        # ones only if every batch (sorted by length, of 2 rows) gets its rows' offsets.
        tokens, mask = np.repeat(TOKENS, 3, 0), np.repeat(MASK, 3, 0)
        scores = np.repeat(GOOD, 3, 0)
        scores[1] = BAD[0]  # another ranking, so the rows' lengths differ after deletion
        offsets = np.array([0.0, 0.05, 0.1])

        def predict(token_ids, padding_mask, row_inputs):
            positive = fake_predict(token_ids, padding_mask)[:, 1] + row_inputs["offset"]
            return np.stack([1 - positive, positive], axis=1)

        with_rows = faithfulness.erasure_scores(predict, tokens, mask, scores, batch_size=2,
                                                row_inputs={"offset": offsets})
        without = faithfulness.erasure_scores(fake_predict, tokens, mask, scores)
        for key in ("comprehensiveness", "sufficiency"):
            self.assertAllClose(with_rows[key], without[key])
        self.assertAllClose(with_rows["probability"], 0.9 + offsets)

    def test_bootstrap_interval_brackets_the_mean(self):
        values = np.random.default_rng(0).normal(1.0, 0.5, 400)
        low, high = faithfulness.bootstrap_interval(values)
        self.assertLess(low, values.mean())
        self.assertGreater(high, values.mean())
        # About 1.96 standard errors each side.
        self.assertAllClose(high - low, 2 * 1.96 * values.std() / 20, rtol=0.2)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "received: strategy='drop'"):
            faithfulness.erase(TOKENS, MASK, GOOD, 20, strategy="drop")
        with self.assertRaisesRegex(ValueError, "received: percent=0"):
            faithfulness.erase(TOKENS, MASK, GOOD, 0)
        with self.assertRaisesRegex(ValueError, r"received: scores.shape=\(1, 3\)"):
            faithfulness.erase(TOKENS, MASK, GOOD[:, :3], 20)


class RankCorrelationTest(tf.test.TestCase):
    def test_by_hand(self):
        self.assertAllEqual(faithfulness.rank(np.array([0.5, 0.1, 0.5, 0.2])),
                            [3.5, 1.0, 3.5, 2.0])
        # Ranks [1, 2, 3] and [1, 3, 2]: 1 - 6 * 2 / (3 * 8) = 0.5.
        self.assertAllClose(faithfulness.spearman(np.array([1.0, 2, 3]),
                                                  np.array([0.1, 0.9, 0.5])), 0.5)
        self.assertTrue(np.isnan(faithfulness.spearman(np.ones(3), np.arange(3.0))))

    @unittest.skipIf(importlib.util.find_spec("scipy") is None, "scipy is not installed")
    def test_matches_scipy(self):
        from scipy import stats

        rng = np.random.default_rng(1)
        a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
        self.assertAllClose(faithfulness.spearman(a, b), stats.spearmanr(a, b).statistic)


class SanityCheckTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        from tests.test_explain import tiny_classifier
        from tests.test_explain import token_batch

        keras.utils.set_random_seed(5)
        self.model = tiny_classifier()
        self.tokens = token_batch()
        self.valid = self.tokens != 0

    def test_order_is_top_down(self):
        names = [layer.name for layer in faithfulness.randomization_order(self.model)]
        self.assertEqual(names, ["logits", "pool", "block_1", "block_0", "embedding"])

    def test_weights_blind_method_stays_and_weights_are_restored(self):
        before = [keras.ops.convert_to_numpy(v) for v in self.model.weights]
        blind = faithfulness.sanity_check(
            self.model, lambda model: explain.random_scores(self.valid, 0), self.valid)
        self.assertAllClose(blind["spearman"], 1.0)
        self.assertLen(blind["cascade"], 5)
        for value, variable in zip(before, self.model.weights):
            self.assertAllEqual(value, keras.ops.convert_to_numpy(variable))

    def test_gradient_method_changes(self):
        result = faithfulness.sanity_check(
            self.model,
            lambda model: explain.integrated_gradients(model, self.tokens, baseline=0, steps=8),
            self.valid)
        self.assertLess(result["spearman"], 0.9)


class DocstringExamplesTest(tf.test.TestCase):
    def test_examples_run(self):
        attempted = 0
        for module in (faithfulness, explain.methods):
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            report = io.StringIO()
            for test in doctest.DocTestFinder().find(module, globs={**vars(module), "np": np}):
                runner.run(test, out=report.write)
            results = runner.summarize(verbose=False)
            self.assertEqual(0, results.failed, report.getvalue())
            attempted += results.attempted
        self.assertGreater(attempted, 5)
