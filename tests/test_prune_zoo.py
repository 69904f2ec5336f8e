"""`python -m zoo prune`: per-block sizes in the classifier's backbone, the task
rebuilt with sliced weights, and the command line end to end on a tiny model."""

from __future__ import annotations

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasattn import prune
from tests.test_attention_transformer import WORDS
from tests.test_attention_transformer import run_cli
from tests.test_attention_transformer import tiny_model
from tests.test_attention_transformer import write_fixture
from zoo import pruning
from zoo.attention_transformer import AttentionTransformerBackbone
from zoo.attention_transformer import AttentionTransformerClassifier

TEXTS = ["a great movie .", "a dull film", "witty and great ."]


def _logits(model, texts=TEXTS):
    return np.asarray(model(model.preprocessor(texts), training=False))


class PerBlockSizesTest(tf.test.TestCase):
    def test_lists_of_heads_and_units_with_a_head_width(self):
        backbone = AttentionTransformerBackbone(
            vocabulary_size=len(WORDS), num_layers=2, hidden_dim=8, num_heads=[1, 3],
            intermediate_dim=[5, 16], head_dim=4, max_sequence_length=8)
        block = backbone.get_layer("encoder_block_1")
        self.assertEqual((3, 4, 16), (block.num_heads, block.key_dim, block.intermediate_dim))
        again = AttentionTransformerBackbone.from_config(backbone.get_config())
        self.assertEqual(backbone.count_params(), again.count_params())
        self.assertEqual([1, 3], again.num_heads)

    def test_bad_sizes_are_one_line_errors(self):
        arguments = dict(vocabulary_size=len(WORDS), num_layers=2, hidden_dim=8)
        with self.assertRaisesRegex(ValueError, "Expected `head_dim` with a list"):
            AttentionTransformerBackbone(num_heads=[1, 2], **arguments)
        with self.assertRaisesRegex(ValueError, "a list of 2 \\(one per layer\\)"):
            AttentionTransformerBackbone(intermediate_dim=[4], **arguments)
        backbone = AttentionTransformerBackbone(num_heads=2, intermediate_dim=4, **arguments)
        with self.assertRaisesRegex(ValueError, "encoder_block_<0..1>"):
            backbone.pruned_config({"encoder_block_7": {"num_heads": 1}})

    def test_pruned_task_equals_the_gated_one_and_round_trips_as_a_preset(self):
        model = tiny_model()
        backbone = model.backbone.name  # Keras numbers the names of later instances
        keep = {f"{backbone}/encoder_block_0/self_attention": [1],
                f"{backbone}/encoder_block_1/feedforward": range(0, 16, 3)}
        pruned = prune.prune_model(model, keep, pruning.rebuild_task)
        self.assertIsInstance(pruned, AttentionTransformerClassifier)
        self.assertIs(model.preprocessor, pruned.preprocessor)
        self.assertEqual([1, 2], pruned.backbone.num_heads)
        self.assertEqual([16, 6], pruned.backbone.intermediate_dim)
        sizes = {group.path: group.size for group in prune.find_prunable(model)}
        gates = {path: [float(i in kept) for i in range(sizes[path])]
                 for path, kept in keep.items()}
        with prune.gated(model, gates):
            expected = _logits(model)
        self.assertAllClose(expected, _logits(pruned), atol=1e-5)
        same = prune.prune_model(model, {}, pruning.rebuild_task)
        self.assertAllEqual(_logits(model), _logits(same))
        with tempfile.TemporaryDirectory() as folder:
            pruned.save_to_preset(folder)
            reloaded = AttentionTransformerClassifier.from_preset(folder)
        self.assertAllClose(_logits(pruned), _logits(reloaded), atol=1e-6)


class PruneCommandTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.data = os.path.join(cls.root, "data")
        os.makedirs(cls.data)
        write_fixture(cls.data, rows=96)
        cls.model_path = os.path.join(cls.root, "tiny.keras")
        tiny_model().save(cls.model_path)

    def run_prune(self, out, *extra):
        return run_cli([
            "prune", "attention-transformer", "--data", self.data, "--model", self.model_path,
            "--out", out, "--heads", "0.5", "--ffn", "0.5", "--steps", "1",
            "--recovery-steps", "2", "--importance-batches", "2", "--latency-runs", "1",
            "--latency-rounds", "1", *extra])

    def test_writes_a_loadable_preset_card_plot_and_one_json_object(self):
        out = os.path.join(self.root, "out")
        code, stdout, stderr = self.run_prune(out, "--json", "--tolerance", "100")
        self.assertEqual(0, code, stderr)
        result = json.loads(stdout)
        self.assertEqual(["heads", "parameters", "metric", "litert_ms"], list(result))
        self.assertEqual([4, 2], result["heads"])
        self.assertEqual({"name", "before", "after"}, set(result["metric"]))
        self.assertLess(result["parameters"][1], result["parameters"][0])
        self.assertTrue(all(ms > 0 for ms in result["litert_ms"]))
        self.assertIn("[prune] step 1/1: 50% of heads", stderr)
        self.assertIn("[prune] step 1/1: recovering", stderr)
        self.assertRegex(stderr, r"\[prune\]   recovery step 2/2, loss \d")
        for name in ("model.keras", "pruning.json", "pruning.md", "pruning.png"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
        self.assertEqual([], [name for name in os.listdir(out) if name.startswith(".")])
        preset = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
        saved = keras.saving.load_model(os.path.join(out, "model.keras"))
        self.assertAllClose(_logits(saved), _logits(preset), atol=1e-6)
        with open(os.path.join(out, "pruning.md")) as file:
            card = file.read()
        self.assertIn("| query heads | 4 | 2 |", card)
        code, stdout, stderr = run_cli(["evaluate", "attention-transformer", "--data",
                                        os.path.join(self.data, "dev.tsv"), "--preset",
                                        os.path.join(out, "preset"), "--json"])
        self.assertEqual(0, code, stderr)
        self.assertAlmostEqual(result["metric"]["after"], json.loads(stdout)["accuracy"])

    def test_bad_options_exit_2_with_one_line(self):
        out = os.path.join(self.root, "bad")
        for extra, pattern in ((["--heads", "1.5"], "expected --heads in \\[0, 1\\)"),
                               (["--steps", "0"], "expected --steps > 0")):
            code, stdout, stderr = self.run_prune(out, *extra)
            self.assertEqual(2, code)
            self.assertEqual("", stdout)
            self.assertRegex(stderr, f"^zoo prune: {pattern}, received: [^\n]*\n$")
        code, _, stderr = run_cli(["prune", "attention-transformer", "--data",
                                   os.path.join(self.root, "missing"), "--out", out])
        self.assertEqual(2, code)
        self.assertRegex(stderr, "^zoo prune: .*missing: expected the training data")


class TaggerPruneTest(tf.test.TestCase):
    def test_pruned_tagger_equals_the_gated_one_and_the_command_writes_a_preset(self):
        from tests.test_sequence_tagger import tiny_tagger
        from tests.test_sequence_tagger import write_conll
        from zoo.sequence_tagger.model import SequenceTagger

        model = tiny_tagger(num_layers=2)
        sentences = ["Maria visited Paris", "John Smith left New York"]
        features = model.preprocessor(sentences)
        path = f"{model.backbone.name}/encoder_block_1/feedforward"
        pruned = prune.prune_model(model, {path: [0, 5, 9]}, pruning.rebuild_task)
        with prune.gated(model, {path: [float(i in (0, 5, 9)) for i in range(16)]}):
            expected = model(features)["potentials"]
        self.assertAllClose(expected, pruned(features)["potentials"], atol=1e-5)
        # The task's own CRF loss scores the heads when no loss is given.
        scores = prune.importance(model, [(features, model.preprocessor(
            sentences, ["B-PER O B-LOC", "B-PER I-PER O B-LOC I-LOC"])[1])])
        self.assertEqual(4, len(scores))
        with tempfile.TemporaryDirectory() as root:
            data = os.path.join(root, "data")
            os.makedirs(data)
            for name, count, seed in (("train.txt", 48, 1), ("valid.txt", 12, 2),
                                      ("test.txt", 8, 3)):
                write_conll(os.path.join(data, name), count, seed=seed)
            model_path = os.path.join(root, "tagger.keras")
            model.save(model_path)
            out = os.path.join(root, "out")
            code, stdout, stderr = run_cli([
                "prune", "sequence-tagger", "--data", data, "--model", model_path,
                "--out", out, "--heads", "0.5", "--ffn", "0.5", "--steps", "1",
                "--recovery-steps", "2", "--importance-batches", "2", "--latency-runs", "1",
                "--latency-rounds", "1", "--tolerance", "100", "--json"])
            self.assertEqual(0, code, stderr)
            result = json.loads(stdout)
            self.assertEqual([4, 2], result["heads"])
            self.assertEqual("entity F1", result["metric"]["name"])
            preset = SequenceTagger.from_preset(os.path.join(out, "preset"))
            self.assertEqual([1, 1], preset.backbone.num_heads)
            with open(os.path.join(out, "pruning.md")) as file:
                self.assertNotIn("distilled", file.read())


class RecommenderPruneTest(tf.test.TestCase):
    def test_pruned_retriever_equals_the_gated_one_and_the_command_writes_a_preset(self):
        from tests.test_recommender import write_log
        from zoo.recommender import NextItemRetriever
        from zoo.recommender import RecommenderPreprocessor
        from zoo.recommender import SequentialRecommenderBackbone

        backbone = SequentialRecommenderBackbone(150, max_sequence_length=6, hidden_dim=8,
                                                 num_layers=2, num_heads=2, dropout=0.0)
        preprocessor = RecommenderPreprocessor([str(n) for n in range(1, 151)],
                                               sequence_length=6)
        model = NextItemRetriever(backbone, preprocessor, seed=3)
        model.compile()
        history = np.array([[0, 0, 3, 9, 27, 81]], "int32")
        path = f"{backbone.name}/encoder_block_0/self_attention"
        pruned = prune.prune_model(model, {path: [1]}, pruning.rebuild_task)
        with prune.gated(model, {path: [0.0, 1.0]}):
            expected = model.score_all(history)
        self.assertAllClose(expected, pruned.score_all(history), atol=1e-5)
        self.assertEqual([1, 2], pruned.backbone.num_heads)
        with tempfile.TemporaryDirectory() as root:
            data = os.path.join(root, "log.txt")
            write_log(data)
            model_path = os.path.join(root, "retriever.keras")
            model.save(model_path)
            out = os.path.join(root, "out")
            code, stdout, stderr = run_cli([
                "prune", "recommender", "--data", data, "--model", model_path, "--out", out,
                "--heads", "0.5", "--ffn", "0.5", "--steps", "1", "--recovery-steps", "2",
                "--importance-batches", "2", "--latency-runs", "1", "--latency-rounds", "1",
                "--tolerance", "100", "--json"])
            self.assertEqual(0, code, stderr)
            result = json.loads(stdout)
            self.assertEqual([4, 2], result["heads"])
            self.assertEqual("sampled NDCG@10", result["metric"]["name"])
            preset = NextItemRetriever.from_preset(os.path.join(out, "preset"))
            self.assertEqual([1, 1], preset.backbone.num_heads)
