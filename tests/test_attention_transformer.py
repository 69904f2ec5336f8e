"""The Attention-Based Transformer: model, preset, recipe and command line."""

import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerasattn.text import TextPreprocessor
from zoo import __main__ as cli
from zoo.attention_transformer import recipe
from zoo.attention_transformer import AttentionTransformerBackbone
from zoo.attention_transformer import AttentionTransformerClassifier
from zoo.attention_transformer import AttentionTransformerMaskedLM
from zoo.attention_transformer import SparseCrossentropyWithSmoothing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["[PAD]", "[UNK]", "a", "great", "dull", "movie", "film", "witty", "boring", "."]
POSITIVE = ["a great movie", "a witty film", "great and witty", "a gorgeous, lovely film"]
NEGATIVE = ["a dull movie", "a boring film", "dull and boring", "a tedious, awful film"]
TINY_OPTIONS = [
    "--vocabulary-size", "120", "--layers", "2", "--hidden-dim", "8", "--heads", "2",
    "--intermediate-dim", "16", "--pretrain-epochs", "0",
    "--epochs", "1", "--batch-size", "16", "--warmup-steps", "2", "--verbose", "0",
    "--label-names", "negative,positive",
]


def tiny_model(fusion=True, norm="pre"):
    backbone = AttentionTransformerBackbone(
        vocabulary_size=len(WORDS), num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16,
        max_sequence_length=8, token_dropout=0.1, norm=norm, cross_layer_fusion=fusion,
        pooling_units=4,
    )
    preprocessor = TextPreprocessor(WORDS, sequence_length=8)
    model = AttentionTransformerClassifier(
        backbone, num_classes=2, preprocessor=preprocessor, label_names=["negative", "positive"]
    )
    model.compile()
    return model


def write_fixture(folder, rows=64):
    """A small sentiment TSV pair whose labels follow the words."""
    rng = random.Random(0)
    for name, count in (("train", rows), ("dev", 16)):
        with open(os.path.join(folder, f"{name}.tsv"), "w", encoding="utf-8") as file:
            file.write("sentence\tlabel\n")
            for i in range(count):
                label = i % 2
                file.write(f"{rng.choice(POSITIVE if label else NEGATIVE)} .\t{label}\n")


def run_cli(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


class ModelTest(tf.test.TestCase):
    def test_config_round_trip(self):
        for fusion, norm in ((True, "pre"), (False, "post")):
            model = tiny_model(fusion, norm)
            backbone = AttentionTransformerBackbone.from_config(model.backbone.get_config())
            self.assertEqual(model.backbone.get_config(), backbone.get_config())
            clone = AttentionTransformerClassifier.from_config(model.get_config())
            self.assertEqual(model.get_config(), clone.get_config())
            self.assertEqual(fusion, "cross_layer_weights" in model.backbone.output)
            names = [layer.name for layer in model.backbone.layers]
            self.assertEqual(fusion, "cross_layer_attention" in names)

    def test_outputs_ignore_padding_and_length(self):
        model = tiny_model()
        short = {"token_ids": np.array([[2, 3, 5]]), "padding_mask": np.ones((1, 3), bool)}
        padded = {"token_ids": np.array([[2, 3, 5, 0, 0]]),
                  "padding_mask": np.array([[True, True, True, False, False]])}
        outputs = model.backbone(padded)
        self.assertAllClose(model(short), model(padded), atol=1e-5)
        self.assertAllClose([[0.0, 0.0]], outputs["pooling_weights"][:, 3:])
        self.assertAllClose([1.0], np.sum(outputs["pooling_weights"], axis=1), atol=1e-5)
        self.assertEqual((1, 5, 2), tuple(outputs["cross_layer_weights"].shape))

    def test_keras_file_round_trip(self):
        model = tiny_model()
        model.compile(run_eagerly=True)  # a tiny step: tracing would cost more than it runs
        x = {"token_ids": np.random.RandomState(0).randint(1, len(WORDS), (16, 6)),
             "padding_mask": np.ones((16, 6), bool)}
        model.fit(x, np.arange(16) % 2, epochs=1, verbose=0)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.keras")
            model.save(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = keras.saving.load_model(path)
        # Keras warns (and leaves the model uncompiled) for a custom `compile`
        # without `compile_from_config`.
        self.assertEmpty([w for w in caught if "compile" in str(w.message)])
        self.assertIsInstance(loaded, AttentionTransformerClassifier)
        self.assertAllClose(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
        texts = ["a great movie .", "dull"]
        self.assertAllClose(
            model.classify(texts)["probabilities"], loaded.classify(texts)["probabilities"]
        )
        self.assertEqual(["negative", "positive"], loaded.label_names)
        # Compiled as saved: the optimizer's state is restored, so training goes on.
        self.assertIsInstance(loaded.loss, SparseCrossentropyWithSmoothing)
        self.assertEqual(1, int(loaded.optimizer.iterations.numpy()))
        for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
            self.assertAllClose(saved, restored)

    def test_smoothed_loss(self):
        logits = np.array([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]], "float32")
        labels = np.array([0, 1, 1])
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        plain = -log_p[np.arange(3), labels].mean()
        self.assertAllClose(plain, SparseCrossentropyWithSmoothing(0.0)(labels, logits), atol=1e-6)
        target = np.full((3, 2), 0.1) + 0.8 * np.eye(2)[labels]  # smoothing 0.2 over 2 classes
        smoothed = -(target * log_p).sum(-1).mean()
        self.assertAllClose(
            smoothed, SparseCrossentropyWithSmoothing(0.2)(labels, logits), atol=1e-6
        )

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "divisible"):
            AttentionTransformerBackbone(10, hidden_dim=6, num_heads=4)
        with self.assertRaisesRegex(ValueError, "num_layers"):
            AttentionTransformerBackbone(10, num_layers=1, hidden_dim=8, num_heads=2)
        with self.assertRaisesRegex(ValueError, "norm"):
            AttentionTransformerBackbone(10, hidden_dim=8, num_heads=2, norm="middle")
        backbone = AttentionTransformerBackbone(10, hidden_dim=8, num_heads=2)
        with self.assertRaisesRegex(ValueError, "vocabulary size"):
            AttentionTransformerClassifier(backbone, preprocessor=TextPreprocessor(WORDS[:5]))
        with self.assertRaisesRegex(ValueError, "label_names"):
            AttentionTransformerClassifier(backbone, num_classes=2, label_names=["a"])


class MaskedLMTest(tf.test.TestCase):
    def test_predicts_tokens_and_hands_its_backbone_on(self):
        masked_lm = AttentionTransformerMaskedLM(tiny_model().backbone)
        masked_lm.compile(run_eagerly=True)
        ids = np.random.RandomState(0).randint(1, len(WORDS), (16, 6))
        x = {"token_ids": ids, "padding_mask": np.ones((16, 6), bool)}
        weights = (np.arange(96).reshape(16, 6) % 5 == 0).astype("float32")
        masked_lm.fit(x, ids, sample_weight=weights, epochs=1, verbose=0)
        self.assertEqual((16, 6, len(WORDS)), tuple(masked_lm.predict(x, verbose=0).shape))
        clone = AttentionTransformerMaskedLM.from_config(masked_lm.get_config())
        self.assertEqual(masked_lm.get_config(), clone.get_config())
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "masked_lm.keras")
            masked_lm.save(path)
            loaded = keras.saving.load_model(path)
        self.assertAllClose(masked_lm.predict(x, verbose=0), loaded.predict(x, verbose=0))
        self.assertEqual(1, int(loaded.optimizer.iterations.numpy()))
        # The pre-trained backbone's weights fit a classifier's backbone.
        classifier = tiny_model()
        classifier.backbone.set_weights(masked_lm.backbone.get_weights())
        self.assertAllClose(
            masked_lm.backbone(x)["sequence_output"], classifier.backbone(x)["sequence_output"]
        )
        with self.assertRaisesRegex(ValueError, "AttentionTransformerBackbone"):
            AttentionTransformerMaskedLM(classifier)

    def test_mask_tokens(self):
        tf.random.set_seed(0)
        ids = np.random.RandomState(0).randint(5, 50, (400, 50)).astype("int32")
        padding = np.arange(50)[None, :] < np.random.RandomState(1).randint(1, 51, (400, 1))
        features, targets, weights = recipe.mask_tokens(
            {"token_ids": tf.constant(ids), "padding_mask": tf.constant(padding)},
            mask_id=4, vocabulary_size=50, rate=0.2,
        )
        masked, chosen = features["token_ids"].numpy(), weights.numpy().astype(bool)
        self.assertAllEqual(ids, targets)
        self.assertAllEqual(padding, features["padding_mask"])
        self.assertFalse(np.any(chosen & ~padding))  # padding is never chosen
        self.assertAllEqual(ids[~chosen], masked[~chosen])  # nothing else changes
        self.assertAllClose(0.2, chosen.sum() / padding.sum(), atol=0.01)
        # Of the chosen: 80 % [MASK], 10 % random (ids in [1, 50)), 10 % kept.
        self.assertAllClose(0.8, np.mean(masked[chosen] == 4), atol=0.02)
        replaced = chosen & (masked != 4) & (masked != ids)
        self.assertTrue(np.all((masked[replaced] >= 1) & (masked[replaced] < 50)))
        self.assertAllClose(0.1, replaced.sum() / chosen.sum(), atol=0.02)


class PresetTest(tf.test.TestCase):
    def test_sst2_preset_classifies_obvious_sentences(self):
        model = AttentionTransformerClassifier.from_preset("sst2")
        outputs = model.classify([
            "a gorgeous, witty, seductive movie.",
            "one of the best films of the year, moving and beautifully acted.",
            "a dull, tedious and boring mess.",
            "the worst film i have seen in years.",
        ])
        labels = [model.label_names[i] for i in outputs["probabilities"].argmax(-1)]
        self.assertEqual(["positive", "positive", "negative", "negative"], labels)

    def test_save_preset_round_trip_and_errors(self):
        model = tiny_model()
        with tempfile.TemporaryDirectory() as folder:
            model.save_preset(folder)
            self.assertCountEqual(
                ["config.json", "model.weights.h5", "vocabulary.txt"], os.listdir(folder)
            )
            loaded = AttentionTransformerClassifier.from_preset(folder)
            texts = ["a great film", "boring"]
            self.assertAllClose(
                model.classify(texts)["probabilities"], loaded.classify(texts)["probabilities"]
            )
            os.remove(os.path.join(folder, "vocabulary.txt"))
            with self.assertRaisesRegex(ValueError, "missing: \\['vocabulary.txt'\\]"):
                AttentionTransformerClassifier.from_preset(folder)
        with self.assertRaisesRegex(ValueError, "'sst2'"):
            AttentionTransformerClassifier.from_preset("no-such-preset")


class RecipeTest(tf.test.TestCase):
    def test_train_then_predict(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            code, stdout, stderr = run_cli(
                ["train", "attention-transformer", "--data", folder, "--out", out] + TINY_OPTIONS
            )
            self.assertEqual(0, code, stderr)
            self.assertIn("dev accuracy", stdout)
            self.assertCountEqual(
                ["model.keras", "preset", "metrics.json", "training_curves.png",
                 "attention_heatmap.png", "logs", "vocabulary.txt"],
                os.listdir(out),
            )
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(1, metrics["epochs_run"])
            self.assertBetween(metrics["dev_accuracy"], 0.0, 1.0)
            self.assertEqual(
                ["accuracy", "loss", "val_accuracy", "val_loss"], sorted(metrics["history"])
            )
            for png in ("training_curves.png", "attention_heatmap.png"):
                with open(os.path.join(out, png), "rb") as file:
                    self.assertEqual(b"\x89PNG", file.read(4))
            self.assertNotEmpty(os.listdir(os.path.join(out, "logs", "attention")))

            code, stdout, stderr = run_cli(
                ["predict", "attention-transformer", "a great movie", "a dull film",
                 "--preset", os.path.join(out, "preset"), "--top", "2"]
            )
            self.assertEqual(0, code, stderr)
            lines = stdout.splitlines()
            self.assertLen(lines, 6)
            self.assertEqual("a great movie", lines[0])
            self.assertRegex(lines[1], r"^  (negative|positive) (0\.[5-9]\d\d|1\.000)$")
            token = r"(a|great|movie) [01]\.\d\d"
            self.assertRegex(lines[2], rf"^  most attended: {token}, {token}$")

    def test_train_with_pretraining_then_resume(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            argv = (["train", "attention-transformer", "--data", folder, "--out", out]
                    + TINY_OPTIONS + ["--pretrain-epochs", "2"])
            code, stdout, stderr = run_cli(argv)
            self.assertEqual(0, code, stderr)
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                pretraining = json.load(file)["pretraining"]
            self.assertEqual(2, pretraining["epochs"])
            self.assertLen(pretraining["masked_token_accuracy"], 2)
            self.assertFalse(os.path.exists(os.path.join(out, "pretraining_backup")))
            weights = os.path.join(out, recipe.PRETRAINED_WEIGHTS)
            fine_tuned = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
            pretrained = AttentionTransformerBackbone.from_config(fine_tuned.backbone.get_config())
            pretrained.load_weights(weights)
            # Fine-tuning started from the pre-trained weights and moved them.
            self.assertNotAllClose(
                pretrained.get_weights()[0], fine_tuned.backbone.get_weights()[0]
            )
            # Run again: the pre-trained weights are reused, not trained again.
            modified = os.path.getmtime(weights)
            self.assertEqual(0, run_cli(argv)[0])
            self.assertEqual(modified, os.path.getmtime(weights))
            # Other pre-training options in the same folder: an error, not a silent reuse.
            code, _, stderr = run_cli(argv[:-1] + ["3"])
            self.assertEqual(2, code)
            self.assertIn("pretraining.json: expected a pre-training with the options", stderr)

    def test_pretraining_needs_a_mask_token(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            vocabulary = os.path.join(folder, "vocabulary.txt")
            with open(vocabulary, "w", encoding="utf-8") as file:
                file.write("\n".join(WORDS) + "\n")
            code, _, stderr = run_cli(
                ["train", "attention-transformer", "--data", folder, "--out",
                 os.path.join(folder, "out"), "--vocabulary", vocabulary]
                + TINY_OPTIONS + ["--pretrain-epochs", "1"]
            )
            self.assertEqual(2, code)
            self.assertIn("expected a [MASK] token in the vocabulary", stderr)

    def test_train_mirrored_on_two_cpu_devices(self):
        script = (
            "import sys, tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "devices = [tf.config.LogicalDeviceConfiguration()] * 2\n"
            "tf.config.set_logical_device_configuration(cpu, devices)\n"
            "from zoo.__main__ import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            result = subprocess.run(
                [sys.executable, "-c", script, "train", "attention-transformer", "--data", folder,
                 "--out", out, "--strategy", "mirrored"] + TINY_OPTIONS
                + ["--pretrain-epochs", "1"],
                capture_output=True, text=True, cwd=REPO, timeout=300,
            )
            self.assertEqual(0, result.returncode, result.stderr[-3000:])
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(2, metrics["devices"])
            self.assertEqual(1, metrics["pretraining"]["epochs"])
            loaded = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
            self.assertEqual((1, 2), loaded.classify(["a great movie"])["probabilities"].shape)

    def test_errors_are_one_line(self):
        with tempfile.TemporaryDirectory() as folder:
            cases = [
                (["train", "no-such-model", "--data", folder, "--out", folder],
                 "unknown model 'no-such-model'"),
                (["predict", "no-such-model", "text"], "unknown model"),
                (["train", "attention-transformer", "--data", os.path.join(folder, "missing"),
                  "--out", folder], "missing: expected a data folder"),
                (["train", "attention-transformer", "--data", folder, "--out", folder],
                 "train.tsv: expected a file"),
                (["predict", "attention-transformer", "text", "--preset", "no-such-preset"],
                 "Expected a preset name"),
            ]
            for argv, message in cases:
                code, stdout, stderr = run_cli(argv)
                self.assertEqual(2, code, argv)
                self.assertEqual(1, len(stderr.strip().splitlines()), stderr)
                self.assertIn(message, stderr)
                self.assertTrue(stderr.startswith(f"zoo {argv[0]}: "), stderr)
        # The real command line too: one line on stderr, non-zero exit.
        result = subprocess.run(
            [sys.executable, "-m", "zoo", "train", "bert", "--data", "x", "--out", "y"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )
        self.assertEqual(2, result.returncode)
        self.assertEqual(
            ["zoo train: unknown model 'bert'; expected one of: attention-transformer"],
            [line for line in result.stderr.splitlines() if line.startswith("zoo")],
        )
