"""The translator: preprocessor, backbone (cached decoding), task, presets, recipe."""

import json
import os
import random
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasattn import data as kdata
from kerasattn.text import learn_sentencepiece_model
from tests.test_attention_transformer import run_cli
from zoo import preset as preset_format
from zoo.translator import Translator
from zoo.translator import TranslatorBackbone
from zoo.translator import TranslatorPreprocessor
from zoo.translator.preprocessor import END_ID
from zoo.translator.preprocessor import PAD_ID
from zoo.translator.preprocessor import START_ID

SUBJECTS = [("A dog", "Ein Hund"), ("A man", "Ein Mann"), ("A woman", "Eine Frau"),
            ("A child", "Ein Kind"), ("The cat", "Die Katze"), ("A boy", "Ein Junge")]
VERBS = [("runs", "rennt"), ("sleeps", "schläft"), ("plays", "spielt"), ("eats", "isst")]
PLACES = [("", ""), (" in the park", " im Park"), (" on the street", " auf der Straße")]
TINY = dict(num_encoder_layers=1, num_decoder_layers=2, hidden_dim=16, num_heads=2,
            intermediate_dim=32, dropout=0.0)
TINY_OPTIONS = ["--encoder-layers", "1", "--decoder-layers", "1", "--hidden-dim", "16",
                "--heads", "2", "--intermediate-dim", "32", "--epochs", "1", "--batch-size",
                "16", "--sequence-length", "48", "--beam", "2", "--precision", "float32",
                "--verbose", "0"]


def pairs(count=None, seed=0) -> kdata.ParallelText:
    """English–German sentence pairs of a tiny grammar ("A dog runs in the park.")."""
    rows = [(f"{s} {v}{p}.", f"{S} {V}{P}.")
            for s, S in SUBJECTS for v, V in VERBS for p, P in PLACES]
    random.Random(seed).shuffle(rows)
    rows = rows[:count]
    return kdata.ParallelText([row[0] for row in rows], [row[1] for row in rows])


def write_pairs(folder, name, text: kdata.ParallelText):
    for language, lines in (("en", text.sources), ("de", text.targets)):
        with open(os.path.join(folder, f"{name}.{language}"), "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")


_MODEL = []


def sentencepiece_model() -> bytes:
    """One SentencePiece model of the tiny grammar for the whole file (learned once)."""
    if not _MODEL:
        text = pairs()
        _MODEL.append(learn_sentencepiece_model(text.sources + text.targets,
                                                vocabulary_size=400))
    return _MODEL[0]


def tiny_translator(cross_attention="multi_head", **preprocessor_arguments) -> Translator:
    preprocessor = TranslatorPreprocessor(sentencepiece_model(), **preprocessor_arguments)
    backbone = TranslatorBackbone(preprocessor.vocabulary_size, cross_attention=cross_attention,
                                  **TINY)
    translator = Translator(backbone, preprocessor)
    translator.compile()
    return translator


class PreprocessorTest(tf.test.TestCase):
    def test_teacher_forcing_layout(self):
        preprocessor = TranslatorPreprocessor(sentencepiece_model())
        text = pairs(3)
        features, labels, weights = preprocessor(text.sources, text.targets)
        decoder, mask = features["decoder_token_ids"].numpy(), features["decoder_padding_mask"]
        labels, weights = labels.numpy(), weights.numpy()
        self.assertAllEqual([START_ID] * 3, decoder[:, 0])
        for row in range(3):
            length = int(np.sum(mask[row]))
            self.assertEqual(END_ID, labels[row, length - 1])
            self.assertAllEqual(decoder[row, 1:length], labels[row, :length - 1])
            self.assertAllEqual([1.0] * length + [0.0] * (labels.shape[1] - length), weights[row])
            self.assertAllEqual(PAD_ID, labels[row, length:].max(initial=PAD_ID))
        self.assertEqual(text.targets, preprocessor.detokenize(labels))
        source_mask = features["encoder_padding_mask"].numpy()
        self.assertAllEqual(preprocessor.source_lengths(text.sources), source_mask.sum(axis=1))

    def test_without_targets_the_decoder_holds_the_start_token(self):
        features = TranslatorPreprocessor(sentencepiece_model())(["A dog runs.", "A man eats."])
        self.assertAllEqual([[START_ID], [START_ID]], features["decoder_token_ids"])

    def test_cuts_and_sample_weight(self):
        preprocessor = TranslatorPreprocessor(sentencepiece_model(), source_sequence_length=4,
                                              target_sequence_length=5)
        features, labels, weights = preprocessor(["A woman sleeps on the street."],
                                                 ["Eine Frau schläft auf der Straße."],
                                                 np.array([0.5]))
        self.assertEqual(4, features["encoder_token_ids"].shape[1])
        self.assertEqual(END_ID, labels[0, -1])
        self.assertEqual(5, labels.shape[1])
        self.assertAllEqual([0.5] * 5, weights[0])

    def test_preset_keeps_the_model_as_a_file(self):
        preprocessor = TranslatorPreprocessor(sentencepiece_model(), target_sequence_length=64)
        with tempfile.TemporaryDirectory() as folder:
            preprocessor.save_to_preset(folder)
            preset_format.write_metadata(folder, task=None, backbone=None)
            with open(os.path.join(folder, "assets", "source.model"), "rb") as file:
                self.assertEqual(sentencepiece_model(), file.read())
            with open(os.path.join(folder, "preprocessor.json"), encoding="utf-8") as file:
                self.assertNotIn("model", json.load(file)["config"])
            loaded = TranslatorPreprocessor.from_preset(folder)
        self.assertEqual(preprocessor.get_config(), loaded.get_config())

    def test_separate_target_model(self):
        text = pairs()
        german = learn_sentencepiece_model(text.targets, vocabulary_size=320)
        preprocessor = TranslatorPreprocessor(sentencepiece_model(), target_model=german)
        self.assertNotEqual(preprocessor.vocabulary_size, preprocessor.target_vocabulary_size)
        _, labels, _ = preprocessor(text.sources[:2], text.targets[:2])
        self.assertEqual(text.targets[:2], preprocessor.detokenize(labels))
        clone = TranslatorPreprocessor.from_config(preprocessor.get_config())
        self.assertEqual(preprocessor.target_vocabulary_size, clone.target_vocabulary_size)


class BackboneTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        text = pairs(2)
        preprocessor = TranslatorPreprocessor(sentencepiece_model())
        cls.vocabulary_size = preprocessor.vocabulary_size
        cls.features, _, _ = preprocessor([text.sources[0], "A dog runs."], text.targets)
        cls.features = {key: value.numpy() for key, value in cls.features.items()}

    def test_shapes_and_embeddings(self):
        for cross_attention in ("multi_head", "additive"):
            for share in (True, False):
                with self.subTest(cross_attention=cross_attention, share=share):
                    backbone = TranslatorBackbone(self.vocabulary_size,
                                                  cross_attention=cross_attention,
                                                  share_embeddings=share, **TINY)
                    outputs = backbone(self.features)
                    source, target = (self.features[name].shape
                                      for name in ("encoder_token_ids", "decoder_token_ids"))
                    self.assertEqual(source + (16,), outputs["encoder_sequence_output"].shape)
                    self.assertEqual(target + (16,), outputs["sequence_output"].shape)
                    names = [layer.name for layer in backbone.layers]
                    self.assertEqual(not share, "target_token_embedding" in names)
                    self.assertEqual(cross_attention == "additive",
                                     "additive_cross_attention_0" in names)
                    clone = TranslatorBackbone.from_config(backbone.get_config())
                    self.assertEqual(backbone.get_config(), clone.get_config())

    def test_padding_and_causality(self):
        for cross_attention in ("multi_head", "additive"):
            backbone = TranslatorBackbone(self.vocabulary_size, cross_attention=cross_attention,
                                          **TINY)
            features = {key: value[1:] for key, value in self.features.items()}
            length = int(features["encoder_padding_mask"].sum())
            trimmed = {**features,
                       "encoder_token_ids": features["encoder_token_ids"][:, :length],
                       "encoder_padding_mask": features["encoder_padding_mask"][:, :length]}
            padded = backbone(features)["sequence_output"]
            self.assertAllClose(backbone(trimmed)["sequence_output"], padded, atol=1e-5)
            changed = features["decoder_token_ids"].copy()
            changed[:, 3:] = 7
            later = backbone({**features, "decoder_token_ids": changed})["sequence_output"]
            self.assertAllClose(padded[:, :3], later[:, :3], atol=1e-5)
            self.assertNotAllClose(padded[:, 3:], later[:, 3:])

    def test_cached_decoding_equals_the_full_pass(self):
        features = self.features
        mask = features["decoder_padding_mask"]
        for cross_attention in ("multi_head", "additive"):
            with self.subTest(cross_attention=cross_attention):
                backbone = TranslatorBackbone(self.vocabulary_size, cross_attention=cross_attention,
                                          **TINY)
                full = backbone(features)["sequence_output"].numpy()
                source_mask = features["encoder_padding_mask"]
                encoded = backbone.encode(features["encoder_token_ids"], source_mask)
                cross = backbone.cross_attention_cache(encoded)
                ids = features["decoder_token_ids"]
                cache = backbone.initial_cache(2, ids.shape[1])
                steps = []
                for index in range(ids.shape[1]):
                    step, cache = backbone.decode_step(ids[:, index:index + 1], index, cache,
                                                       cross, source_mask)
                    steps.append(step)
                steps = np.concatenate(steps, axis=1)
                self.assertAllClose(full[mask], steps[mask], atol=1e-5)

    def test_bad_arguments(self):
        for arguments, message in (
            (dict(hidden_dim=10, num_heads=4), "divisible"),
            (dict(cross_attention="dot"), "cross_attention"),
            (dict(target_vocabulary_size=50), "one vocabulary size"),
            (dict(dropout=1.0), "dropout"),
        ):
            with self.subTest(**arguments), self.assertRaisesRegex(ValueError, message):
                TranslatorBackbone(300, **arguments)


class TranslatorTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(3)
        cls.model = tiny_translator(source_sequence_length=24)
        cls.text = pairs(6, seed=1)

    def test_fit_on_raw_pairs(self):
        model = tiny_translator("additive")
        # Eagerly: two steps do not repay tracing the training step.
        model.compile(run_eagerly=True)
        text = pairs(40)
        history = model.fit(text.sources, text.targets, batch_size=20, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        self.assertIn("accuracy", history.history)

    def test_loss_ignores_padding_and_smooths_labels(self):
        features, labels, weights = self.model.preprocessor(self.text.sources[:2],
                                                            self.text.targets[:2])
        logits = self.model(features)
        loss = self.model.compute_loss(features, labels, logits, weights)
        wide = tf.pad(labels, [[0, 0], [0, 3]])
        wide_logits = tf.pad(logits, [[0, 0], [0, 3], [0, 0]], constant_values=5.0)
        wide_weights = tf.pad(weights, [[0, 0], [0, 3]])
        self.assertAllClose(loss, self.model.compute_loss(features, wide, wide_logits,
                                                          wide_weights))
        per_token = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1, reduction=None)(
            tf.one_hot(labels, logits.shape[-1]), logits)
        expected = tf.reduce_sum(per_token * weights) / tf.reduce_sum(weights)
        self.assertAllClose(expected, loss, atol=1e-5)
        # Without weights the labels' padding is weighted 0; graded weights count as given.
        self.assertAllClose(loss, self.model.compute_loss(features, labels, logits))
        graded = weights * tf.linspace(0.5, 2.0, labels.shape[1])[None, :]
        self.assertAllClose(
            self.model.compute_loss(features, labels, logits, graded),
            tf.reduce_sum(per_token * graded) / tf.reduce_sum(graded), atol=1e-5)
        self.assertEqual(0.0, float(self.model.compute_loss(features, labels, logits,
                                                            tf.zeros_like(weights))))

    def test_loss_gradient_is_zero_at_padding(self):
        features, labels, weights = self.model.preprocessor(self.text.sources[:2],
                                                            self.text.targets[:2])
        logits = tf.convert_to_tensor(self.model(features))
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = self.model.compute_loss(features, labels, logits, weights)
        gradient = tape.gradient(loss, logits)
        # d loss / d logits = (softmax - smoothed one-hot) * weight / sum(weights).
        smoothed = 0.9 * tf.one_hot(labels, logits.shape[-1]) + 0.1 / logits.shape[-1]
        expected = ((tf.nn.softmax(logits) - smoothed) * weights[..., None]
                    / tf.reduce_sum(weights))
        self.assertAllClose(expected, tf.convert_to_tensor(gradient), atol=1e-6)

    def test_generate_equals_rerunning_the_full_decoder(self):
        features = self.model.preprocessor(self.text.sources[:3])
        source, mask = (features[name].numpy()
                        for name in ("encoder_token_ids", "encoder_padding_mask"))
        ids = self.model.generate(source, mask, max_length=7).numpy()
        self.assertEqual((3, 7), ids.shape)
        # The keras.io way: the whole decoder again for each new token.
        expected = np.full((3, 1), START_ID, "int32")
        for _ in range(6):
            logits = self.model({"encoder_token_ids": source, "encoder_padding_mask": mask,
                                 "decoder_token_ids": expected,
                                 "decoder_padding_mask": np.ones(expected.shape, bool)})
            expected = np.concatenate([expected, np.argmax(logits[:, -1:], -1)], axis=1)
        ended = np.cumsum(expected == END_ID, axis=1) - (expected == END_ID) > 0
        self.assertAllEqual(np.where(ended, PAD_ID, expected), ids)
        self.assertAllEqual(ids, self.model.generate(source, mask, beam=1, max_length=7))
        # The setting of the other tests' beam search (traced once for all of them).
        beam = self.model.generate(source, mask, beam=2, max_length=6).numpy()
        self.assertEqual((3, 6), beam.shape)
        self.assertAllEqual([START_ID] * 3, beam[:, 0])

    def test_cross_attention_alignment_picture(self):
        from zoo.translator import plots

        source = self.text.sources[0]
        translation, source_tokens, target_tokens, weights = (
            plots.cross_attention_alignment(self.model, source, beam=2))
        self.assertEqual(self.model.translate([source], beam=2), [translation])
        # One map per decoder block; each target token's weights over the source sum to 1.
        self.assertEqual((2, len(target_tokens), len(source_tokens)), weights.shape)
        self.assertAllClose(np.ones(weights.shape[:2]), weights.sum(axis=-1), atol=1e-5)
        self.assertEqual("[END]", target_tokens[-1])
        self.assertEqual(self.model.preprocessor.source_lengths([source])[0], len(source_tokens))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "alignment.png")
            plots.plot_alignment(self.model, source, path, beam=2)
            with open(path, "rb") as file:
                self.assertEqual(b"\x89PNG", file.read(4))

    def test_translate_keeps_order_and_rejects_bad_input(self):
        texts = ["A man eats.", "A child plays in the park.", "A dog runs."]
        translations = self.model.translate(texts, beam=2, max_length=5, batch_size=2)
        self.assertLen(translations, 3)
        self.assertEqual(translations[1], self.model.translate([texts[1]], beam=2,
                                                               max_length=5)[0])
        with self.assertRaisesRegex(ValueError, r"non-empty texts, received: texts\[1\]=''"):
            self.model.translate(["A dog runs.", ""])
        long = " ".join(["A dog runs in the park."] * 10)
        with self.assertRaisesRegex(ValueError, "at most 24 subword tokens.*truncate=True"):
            self.model.translate([long])
        self.assertLen(self.model.translate([long], max_length=3, truncate=True), 1)
        # Not UTF-8: as bytes, or as Python reads such bytes in command-line arguments.
        self.assertLen(self.model.translate([b"A dog \xff runs.", "A cat \udcff eats."],
                                            max_length=3), 2)
        with self.assertRaisesRegex(ValueError, "a single string"):
            self.model.translate("A dog runs.")

    def test_saved_model_translates_strings_in_the_graph(self):
        texts = self.text.sources[:2] + ["", " ".join(["A dog runs."] * 40)]
        module = tf.Module()
        module.translator = self.model
        signatures = {"translate": self.model.translate_function(beam=2, max_length=5),
                      # Without max_length: each batch's default_max_length, in the graph.
                      "translate_per_batch": self.model.translate_function(beam=2)}
        with tempfile.TemporaryDirectory() as folder:
            tf.saved_model.save(module, folder, signatures=signatures)
            reloaded = tf.saved_model.load(folder).signatures
            outputs = reloaded["translate"](texts=tf.constant(texts))["output_0"].numpy()
            per_batch = {n: reloaded["translate_per_batch"](texts=tf.constant(texts[:n]))[
                "output_0"].numpy() for n in (1, 2)}
        # Empty and over-long sources are a defined result in the graph, not an error.
        self.assertLen(outputs, 4)
        self.assertEqual(self.model.translate(texts[:2], beam=2, max_length=5),
                         [text.decode("utf-8") for text in outputs[:2]])
        for n, translations in per_batch.items():
            self.assertEqual(self.model.translate(texts[:n], beam=2),
                             [text.decode("utf-8") for text in translations])

    def test_default_max_length_in_the_graph(self):
        # ceil(1.5 * longest) + 10, rounded up to a multiple of 8 (below the
        # target_sequence_length of 128), plus the start token (by hand).
        for lengths, expected in (([1], 17), ([3, 7], 25), ([16, 2], 41), ([24], 49),
                                  ([0, 0], 17), ([], 17), ([2], 17), ([4], 17), ([5], 25)):
            mask = np.arange(24)[None, :] < np.array(lengths, int)[:, None]
            with self.subTest(lengths=lengths):
                self.assertEqual(expected, self.model.default_max_length(max(lengths, default=1)
                                                                         or 1))
                self.assertEqual(
                    self.model.default_max_length(max(lengths, default=1) or 1),
                    int(self.model._default_max_length_in_graph(mask.reshape(-1, 24))))

    def test_keras_file_and_preset_round_trip(self):
        features = self.model.preprocessor(self.text.sources[:2], self.text.targets[:2])[0]
        expected = self.model(features)
        translation = self.model.translate(self.text.sources[:2], max_length=6)
        # As after training: a compiled model saves its optimizer's variables.
        self.model.optimizer.build(self.model.trainable_variables)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.keras")
            self.model.save(path)
            loaded = keras.saving.load_model(path)
            self.model.save_to_preset(os.path.join(folder, "preset"))
            from_preset = Translator.from_preset(os.path.join(folder, "preset"))
            backbone = TranslatorBackbone.from_preset(os.path.join(folder, "preset"))
        for model in (loaded, from_preset):
            self.assertIsInstance(model, Translator)
            self.assertAllClose(expected, model(features), atol=1e-5)
            self.assertEqual(translation, model.translate(self.text.sources[:2], max_length=6))
        self.assertAllClose(self.model.backbone(features)["sequence_output"],
                            backbone(features)["sequence_output"], atol=1e-5)
        # Tied logits: the task's own weights are the backbone's.
        self.assertEqual([], self.model.head_layers())


class RecipeTest(tf.test.TestCase):
    def test_train_evaluate_predict(self):
        with tempfile.TemporaryDirectory() as folder:
            write_pairs(folder, "train", pairs(48))
            write_pairs(folder, "val", pairs(6, seed=2))
            out = os.path.join(folder, "out")
            code, stdout, stderr = run_cli(["train", "translator", "--data", folder, "--out",
                                            out, *TINY_OPTIONS])
            self.assertEqual(0, code, stderr)
            self.assertRegex(stdout, r"^data: 48 pairs, .* -> vocabulary size 400 ")
            self.assertIn("validation BLEU", stdout)
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual({"greedy", "beam"}, set(metrics["validation"]))
            self.assertEqual(2, metrics["validation"]["beam"]["beam"])
            self.assertIn("val_bleu", metrics["history"])
            model = os.path.join(out, "model.keras")
            self.assertTrue(os.path.isfile(os.path.join(out, "preset", "metadata.json")))
            self.assertTrue(os.listdir(os.path.join(out, "logs", "attention")))

            tsv = os.path.join(folder, "val.tsv")
            kdata.write_parallel_tsv(pairs(6, seed=2), tsv)
            code, stdout, stderr = run_cli(["evaluate", "translator", "--data", tsv, "--model",
                                            model, "--beam", "2", "--json"])
            self.assertEqual(0, code, stderr)
            scores = json.loads(stdout)
            self.assertEqual({"bleu", "chrf", "sentences", "beam", "target_tokens_per_second"},
                             set(scores))
            self.assertEqual((6, 2), (scores["sentences"], scores["beam"]))

            code, stdout, stderr = run_cli(["predict", "translator", "A dog runs.", "--model",
                                            model, "--beam", "1", "--max-length", "4", "--json"])
            self.assertEqual(0, code, stderr)
            self.assertEqual("A dog runs.", json.loads(stdout)["text"])
            for arguments, message in (
                (["A dog runs.", "--preset", "no-such-preset"], "'no-such-preset'"),
                (["", "--model", model], "non-empty texts"),
                (["A dog runs.", "--model", model, "--beam", "0"], "--beam > 0"),
            ):
                code, stdout, stderr = run_cli(["predict", "translator", *arguments])
                self.assertEqual((2, ""), (code, stdout))
                self.assertIn(message, stderr)
                self.assertEqual(1, len(stderr.strip().splitlines()), stderr)

            with open(os.path.join(folder, "train.de"), "a", encoding="utf-8") as file:
                file.write("Ein Satz zu viel.\n")
            code, _, stderr = run_cli(["train", "translator", "--data", folder, "--out",
                                       os.path.join(folder, "other"), *TINY_OPTIONS])
            self.assertEqual(2, code)
            self.assertIn("train.de", stderr)
            self.assertEqual(1, len(stderr.strip().splitlines()), stderr)
