"""Pruning the translator: per-block sizes in its backbone, the task rebuilt with
sliced self- and cross-attention heads, and `zoo prune translator` end to end."""

from __future__ import annotations

import json
import os
import tempfile

import tensorflow as tf

from kerasattn import prune
from tests.test_attention_transformer import run_cli
from tests.test_translator import TINY
from tests.test_translator import pairs
from tests.test_translator import tiny_translator
from tests.test_translator import write_pairs
from zoo import pruning
from zoo.translator import Translator
from zoo.translator import TranslatorBackbone

SOURCES = ["A dog runs in the park.", "The cat sleeps.", "A woman eats on the street."]


def _features(model, sources=SOURCES):
    return model.preprocessor(sources)


def _gates(model, keep: dict) -> dict:
    sizes = {group.path: group.size for group in prune.find_prunable(model)}
    return {path: [float(i in kept) for i in range(sizes[path])] for path, kept in keep.items()}


class PerBlockSizesTest(tf.test.TestCase):
    def test_lists_of_heads_units_and_cross_attention_heads(self):
        backbone = TranslatorBackbone(
            vocabulary_size=50, num_encoder_layers=1, num_decoder_layers=2, hidden_dim=16,
            num_heads=[1, 2, 3], intermediate_dim=[5, 6, 7], cross_attention_num_heads=[4, 1],
            head_dim=8)
        block = backbone.get_layer("decoder_block_1")
        self.assertEqual((3, 1, 8, 7), (block.num_heads, block._cross_attention.num_heads,
                                        block.key_dim, block.intermediate_dim))
        again = TranslatorBackbone.from_config(backbone.get_config())
        self.assertEqual(backbone.count_params(), again.count_params())
        self.assertEqual([4, 1], again.cross_attention_num_heads)

    def test_bad_sizes_are_one_line_errors(self):
        arguments = dict(vocabulary_size=50, num_encoder_layers=1, num_decoder_layers=1,
                         hidden_dim=8)
        with self.assertRaisesRegex(ValueError, "Expected `head_dim` with a list"):
            TranslatorBackbone(num_heads=[1, 2], **arguments)
        with self.assertRaisesRegex(ValueError, "a list of 2 \\(one per layer\\)"):
            TranslatorBackbone(intermediate_dim=[4], **arguments)
        with self.assertRaisesRegex(ValueError, "Expected no `cross_attention_num_heads` with "
                                                "additive cross-attention"):
            TranslatorBackbone(cross_attention="additive", cross_attention_num_heads=2,
                               **arguments)
        backbone = TranslatorBackbone(num_heads=2, intermediate_dim=4, **arguments)
        with self.assertRaisesRegex(ValueError, "encoder_block_<0..0>, decoder_block_<0..0>"):
            backbone.pruned_config({"decoder_block_3": {"num_heads": 1}})


class PrunedTranslatorTest(tf.test.TestCase):
    def test_pruned_translator_equals_the_gated_one_and_decodes_as_it(self):
        model = tiny_translator()
        backbone = model.backbone.name  # Keras numbers the names of later instances
        keep = {f"{backbone}/decoder_block_0/self_attention": [1],
                f"{backbone}/decoder_block_1/cross_attention": [0],
                f"{backbone}/encoder_block_0/feedforward": range(0, 32, 3)}
        pruned = prune.prune_model(model, keep, pruning.rebuild_task)
        self.assertIsInstance(pruned, Translator)
        self.assertIs(model.preprocessor, pruned.preprocessor)
        self.assertEqual([2, 1, 2], pruned.backbone.num_heads)
        self.assertEqual([2, 1], pruned.backbone.cross_attention_num_heads)
        self.assertEqual([11, 32, 32], pruned.backbone.intermediate_dim)
        features = model.preprocessor(*pairs(3)[:2])[0]
        source = _features(model)
        with prune.gated(model, _gates(model, keep)):
            expected = model(features)
            expected_ids = model.generate(source["encoder_token_ids"],
                                          source["encoder_padding_mask"], max_length=12)
        self.assertNotAllClose(expected, model(features))
        self.assertAllClose(expected, pruned(features), atol=1e-5)
        # Cached decoding with the smaller caches picks what the gated full model picks.
        self.assertAllEqual(expected_ids, pruned.generate(
            source["encoder_token_ids"], source["encoder_padding_mask"], max_length=12))
        same = prune.prune_model(model, {}, pruning.rebuild_task)
        self.assertAllEqual(model(features), same(features))
        with tempfile.TemporaryDirectory() as folder:
            pruned.save_to_preset(folder)
            reloaded = Translator.from_preset(folder)
        self.assertAllClose(pruned(features), reloaded(features), atol=1e-6)
        self.assertEqual(pruned.translate(SOURCES), reloaded.translate(SOURCES))

    def test_additive_cross_attention_prunes_self_attention_heads_and_units(self):
        model = tiny_translator("additive")
        heads = [group.path for group in prune.find_prunable(model) if group.kind == "heads"]
        self.assertEqual(3, len(heads))
        self.assertFalse([path for path in heads if "cross" in path])
        keep = {heads[-1]: [0], f"{model.backbone.name}/decoder_block_1/feedforward": [3, 9]}
        pruned = prune.prune_model(model, keep, pruning.rebuild_task)
        self.assertEqual([2, 2, 1], pruned.backbone.num_heads)
        self.assertIsNone(pruned.backbone.cross_attention_num_heads)
        features = model.preprocessor(*pairs(3)[:2])[0]
        with prune.gated(model, _gates(model, keep)):
            expected = model(features)
        self.assertAllClose(expected, pruned(features), atol=1e-5)


class PruneCommandTest(tf.test.TestCase):
    def test_writes_a_preset_that_reloads_and_translates(self):
        with tempfile.TemporaryDirectory() as root:
            data = os.path.join(root, "data")
            os.makedirs(data)
            write_pairs(data, "train", pairs(48))
            write_pairs(data, "val", pairs(8, seed=2))
            model = tiny_translator(source_sequence_length=24, target_sequence_length=24)
            model_path = os.path.join(root, "translator.keras")
            model.save(model_path)
            out = os.path.join(root, "out")
            code, stdout, stderr = run_cli([
                "prune", "translator", "--data", data, "--model", model_path, "--out", out,
                "--heads", "0.5", "--ffn", "0.5", "--steps", "1", "--recovery-steps", "2",
                "--importance-batches", "2", "--latency-runs", "1", "--latency-rounds", "1",
                "--tolerance", "100", "--validation-sentences", "4", "--beam", "1",
                "--batch-size", "16", "--json"])
            self.assertEqual(0, code, stderr)
            result = json.loads(stdout)
            heads = (TINY["num_encoder_layers"] + 2 * TINY["num_decoder_layers"]) * 2
            self.assertEqual([heads, heads // 2], result["heads"])
            self.assertEqual("BLEU / 100", result["metric"]["name"])
            self.assertTrue(all(ms > 0 for ms in result["litert_ms"]))
            preset = Translator.from_preset(os.path.join(out, "preset"))
            self.assertLess(preset.count_params(), model.count_params())
            self.assertEqual(len(SOURCES), len(preset.translate(SOURCES)))
            with open(os.path.join(out, "pruning.json"), encoding="utf-8") as file:
                record = json.load(file)
            cross = [path for path in record["sizes_after"] if path.endswith("cross_attention")]
            self.assertEqual(2, len(cross))
            self.assertIn("greedy decoding", record["validation_data"])
            self.assertTrue(record["distilled"])
            with open(os.path.join(out, "pruning.md"), encoding="utf-8") as file:
                card = file.read()
            self.assertIn(f"| query heads | {heads} | {heads // 2} |", card)
            self.assertIn("| parameters of the attention layers and blocks |", card)
            code, _, stderr = run_cli([
                "prune", "translator", "--data", data, "--model", model_path, "--out",
                os.path.join(root, "bad"), "--validation-sentences", "8"])
            self.assertEqual(2, code)
            self.assertRegex(stderr, "^zoo prune: expected --validation-sentences below the 8 "
                                     "validation pairs")
