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
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from zoo import __main__ as cli
from zoo import training
from zoo.attention_transformer import pretraining
from zoo.attention_transformer import AttentionTransformerBackbone
from zoo.attention_transformer import AttentionTransformerClassifier
from zoo.attention_transformer import AttentionTransformerMaskedLM
from zoo.attention_transformer import SparseCrossentropyWithSmoothing
from zoo.text_preprocessing import MaskedTokenPreprocessor
from zoo.text_preprocessing import TextClassifierPreprocessor
from zoo.text_preprocessing import mask_tokens

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["[PAD]", "[UNK]", "a", "great", "dull", "movie", "film", "witty", "boring", "."]
POSITIVE = ["a great movie", "a witty film", "great and witty", "a gorgeous, lovely film"]
NEGATIVE = ["a dull movie", "a boring film", "dull and boring", "a tedious, awful film"]
TINY_OPTIONS = [
    "--vocabulary-size", "120", "--layers", "2", "--hidden-dim", "8", "--heads", "2",
    "--intermediate-dim", "16", "--pretrain-epochs", "0",
    "--epochs", "1", "--batch-size", "16", "--warmup-steps", "2", "--verbose", "0",
    "--label-names", "negative,positive", "--fine-tune-seeds", "2", "--precision", "float32",
    "--validation-sentences", "0",
]
# The sst2 preset's logits for these sentences, recorded from the recipe's own model
# (OUT/model.keras of the run that made the preset), so the preset reloads to it.
SST2_SENTENCES = [
    "a gorgeous, witty, seductive movie.",
    "the plot is a tired mess and the acting is worse.",
    "an uneven film, but its last act is genuinely moving.",
    "i would rather watch paint dry.",
    "it's not a bad film, just not a good one.",
]
SST2_LOGITS = [
    [-1.56557297706604, 1.6964011192321777],
    [1.4429887533187866, -2.1129660606384277],
    [-0.139532670378685, -0.11306208372116089],
    [0.9030349850654602, -1.5586079359054565],
    [0.7154554128646851, -1.3362212181091309],
]


def tiny_model(fusion=True, norm="pre"):
    backbone = AttentionTransformerBackbone(
        vocabulary_size=len(WORDS), num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16,
        max_sequence_length=8, token_dropout=0.1, norm=norm, cross_layer_fusion=fusion,
        pooling_units=4,
    )
    preprocessor = TextClassifierPreprocessor(WORDS, sequence_length=8)
    model = AttentionTransformerClassifier(
        backbone, num_classes=2, preprocessor=preprocessor, label_names=["negative", "positive"]
    )
    model.compile()
    return model


def write_fixture(folder, rows=64, phrases=False):
    """A small sentiment TSV pair whose labels follow the words.

    With `phrases`, train.tsv holds distinct sentences each followed by two
    of its phrases, as SST's train.tsv does.
    """
    rng = random.Random(0)
    adverbs = ["really", "truly", "so", "very", "quite", "rather", "just", "simply"]
    for name, count in (("train", rows), ("dev", 16)):
        with open(os.path.join(folder, f"{name}.tsv"), "w", encoding="utf-8") as file:
            file.write("sentence\tlabel\n")
            for i in range(count):
                label = i % 2
                text = f"{rng.choice(POSITIVE if label else NEGATIVE)} ."
                if phrases and name == "train":
                    words = text.split()
                    text = " ".join([adverbs[i % 8], adverbs[(i // 8) % 8], str(i)] + words)
                    file.write(f"{' '.join(words[:2])}\t{label}\n{' '.join(words[-2:])}\t{label}\n")
                file.write(f"{text}\t{label}\n")


def run_cli(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = cli.main(argv)
        except SystemExit as exit:  # argparse's errors and --help
            code = exit.code
    return code, stdout.getvalue(), stderr.getvalue()


def assert_one_line_errors(test, cases, extra_argv=()):
    """Each `(argv, message)` of `cases` (run with `extra_argv` appended) exits 2
    with one line on stderr, `zoo <command>: ...`, that holds `message`."""
    for argv, message in cases:
        code, _, printed = run_cli(list(argv) + list(extra_argv))
        test.assertEqual(2, code, argv)
        test.assertEqual(1, len(printed.strip().splitlines()), printed)
        test.assertIn(message, printed)
        test.assertTrue(printed.startswith(f"zoo {argv[0]}"), printed)


def console_environment():
    """The environment of a user's shell: without the test run's TensorFlow log level."""
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}


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

    def test_sliding_window_is_traced_again_for_export(self):
        # Built by a layer, not by ops on the symbolic inputs (which a
        # functional model records once, as first chosen): traced for export,
        # its positions become float32 (LiteRT's int32 broadcasting is slow).
        from kerasattn.ops.tracing import export_graph
        from zoo.attention_transformer.model import SlidingWindowMask

        x = keras.Input((None, 4))
        model = keras.Model(x, SlidingWindowMask(2)(x))
        spec = tf.TensorSpec((None, None, 4), tf.float32)
        for context, dtype in ((contextlib.nullcontext(), tf.int32), (export_graph(), tf.float32)):
            with context:
                function = tf.function(model).get_concrete_function(spec)
            (distance,) = [op for op in function.graph.get_operations() if op.type == "Abs"]
            self.assertEqual(dtype, distance.outputs[0].dtype)
            band = function(tf.zeros((2, 3, 4)))
            self.assertAllEqual([[[1, 1, 0], [1, 1, 1], [0, 1, 1]]], band)
        self.assertEqual(2, SlidingWindowMask.from_config(model.layers[1].get_config()).window)

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

    def test_config_of_a_model_saved_with_a_bare_text_preprocessor(self):
        # `.keras` files written before the zoo's base classes hold a
        # kerasattn.text.TextPreprocessor; they load with it wrapped.
        from kerasattn.text import TextPreprocessor

        model = tiny_model()
        config = model.get_config()
        config["preprocessor"] = keras.saving.serialize_keras_object(
            TextPreprocessor(WORDS, sequence_length=8)
        )
        loaded = AttentionTransformerClassifier.from_config(config)
        self.assertIsInstance(loaded.preprocessor, TextClassifierPreprocessor)
        self.assertEqual(WORDS, loaded.preprocessor.vocabulary)
        self.assertEqual(8, loaded.preprocessor.sequence_length)

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
            AttentionTransformerClassifier(
                backbone, preprocessor=TextClassifierPreprocessor(WORDS[:5])
            )
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
            # The pre-trained backbone, saved on its own, serves a classifier.
            masked_lm.backbone.save_to_preset(folder)
            backbone = AttentionTransformerBackbone.from_preset(folder, dropout=0.3)
        self.assertEqual(0.3, backbone.dropout)
        classifier = AttentionTransformerClassifier(backbone)
        self.assertAllClose(
            masked_lm.backbone(x)["sequence_output"], classifier.backbone(x)["sequence_output"]
        )
        with self.assertRaisesRegex(ValueError, "AttentionTransformerBackbone"):
            AttentionTransformerMaskedLM(classifier)

    def test_masked_token_preprocessor_takes_raw_strings(self):
        vocabulary = WORDS + ["[MASK]"]
        preprocessor = MaskedTokenPreprocessor(vocabulary, mask_rate=0.5, sequence_length=8)
        features, targets, weights = preprocessor(["a great movie", "dull"])
        self.assertEqual((2, 3), tuple(features["token_ids"].shape))  # cut to the longest
        self.assertAllEqual([[2, 3, 5], [4, 0, 0]], targets)
        self.assertFalse(np.any(weights.numpy()[1, 1:]))  # padding is never masked
        backbone = AttentionTransformerBackbone(
            vocabulary_size=len(vocabulary), num_layers=2, hidden_dim=8, num_heads=2,
            intermediate_dim=16, max_sequence_length=8,
        )
        masked_lm = AttentionTransformerMaskedLM(backbone, preprocessor=preprocessor)
        masked_lm.compile(run_eagerly=True)
        history = masked_lm.fit(POSITIVE + NEGATIVE, batch_size=4, epochs=1, verbose=0)
        self.assertIn("accuracy", history.history)
        with self.assertRaisesRegex(ValueError, "MASK"):
            MaskedTokenPreprocessor(WORDS)

    def test_mask_tokens(self):
        tf.random.set_seed(0)
        ids = np.random.RandomState(0).randint(5, 50, (400, 50)).astype("int32")
        padding = np.arange(50)[None, :] < np.random.RandomState(1).randint(1, 51, (400, 1))
        features, targets, weights = mask_tokens(
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


class TaskTest(tf.test.TestCase):
    def test_fit_evaluate_predict_take_raw_strings(self):
        model = tiny_model()
        model.compile(run_eagerly=True)
        texts, labels = POSITIVE + NEGATIVE, np.array([1] * 4 + [0] * 4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = model.fit(texts, labels, batch_size=4, epochs=1, verbose=0,
                                validation_data=(texts, labels))
            dataset = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(3)
            model.fit(dataset, epochs=1, verbose=0)
        self.assertEmpty([w for w in caught if "shuffle" in str(w.message)])
        self.assertIn("val_accuracy", history.history)
        _, accuracy = model.evaluate(texts, labels, verbose=0)
        self.assertBetween(accuracy, 0.0, 1.0)
        logits = model.predict(["a great movie", "a dull film"], verbose=0)
        self.assertEqual((2, 2), logits.shape)
        # Features pass through as before.
        features = model.preprocessor(["a great movie", "a dull film"])
        self.assertAllClose(logits, model.predict(features, verbose=0), atol=1e-6)

    def test_compile_defaults(self):
        model = tiny_model()
        self.assertIsInstance(model.optimizer, keras.optimizers.AdamW)
        self.assertIsInstance(model.loss, SparseCrossentropyWithSmoothing)
        model.compile(label_smoothing=0.2, optimizer=keras.optimizers.SGD())
        self.assertEqual(0.2, model.loss.label_smoothing)
        self.assertIsInstance(model.optimizer, keras.optimizers.SGD)

    def test_dtype_is_part_of_the_config(self):
        backbone = AttentionTransformerBackbone(
            vocabulary_size=len(WORDS), num_layers=2, hidden_dim=8, num_heads=2,
            intermediate_dim=16, max_sequence_length=8, dtype="mixed_float16",
        )
        self.assertEqual("mixed_float16", backbone.dtype_policy.name)
        clone = AttentionTransformerBackbone.from_config(backbone.get_config())
        self.assertEqual("mixed_float16", clone.dtype_policy.name)
        self.assertEqual("float16", clone.get_layer("token_embedding").compute_dtype)


class PresetTest(tf.test.TestCase):
    def test_sst2_preset_gives_the_recorded_logits(self):
        model = AttentionTransformerClassifier.from_preset("sst2")
        self.assertAllClose(SST2_LOGITS, model.predict(SST2_SENTENCES, verbose=0), atol=1e-5)
        labels = [model.label_names[i] for i in np.argmax(SST2_LOGITS, -1)]
        self.assertEqual(["positive", "negative", "positive", "negative", "negative"], labels)
        # Each component loads from the preset on its own; the shared text preprocessor
        # finds the preset by name in the model folder that ships it.
        self.assertEqual(6883, TextClassifierPreprocessor.from_preset("sst2").vocabulary_size)
        backbone = AttentionTransformerBackbone.from_preset("sst2")
        self.assertAllClose(model.backbone.get_weights(), backbone.get_weights())

    def test_save_to_preset_round_trip_and_errors(self):
        model = tiny_model()
        with tempfile.TemporaryDirectory() as folder:
            model.save_to_preset(folder, description="tiny",
                                 metrics={"name": "accuracy", "value": 0.5, "data": "none"})
            self.assertCountEqual(
                ["metadata.json", "config.json", "model.weights.h5", "task.json",
                 "task.weights.h5", "preprocessor.json", "assets"],
                os.listdir(folder),
            )
            self.assertEqual(["vocabulary.txt"], os.listdir(os.path.join(folder, "assets")))
            loaded = AttentionTransformerClassifier.from_preset(folder)
            texts = ["a great film", "boring"]
            self.assertAllClose(model.predict(texts, verbose=0), loaded.predict(texts, verbose=0))
            self.assertEqual(["negative", "positive"], loaded.label_names)
            # The backbone and the preprocessor load on their own.
            backbone = AttentionTransformerBackbone.from_preset(folder)
            self.assertAllClose(model.backbone.get_weights(), backbone.get_weights())
            self.assertEqual(WORDS, TextClassifierPreprocessor.from_preset(folder).vocabulary)
            # Another task takes the classifier's backbone, with a new head.
            masked_lm = AttentionTransformerMaskedLM.from_preset(folder)
            self.assertAllClose(model.backbone.get_weights(), masked_lm.backbone.get_weights())
            self.assertIsNone(masked_lm.preprocessor)  # the preset holds no masked-token one
            os.remove(os.path.join(folder, "assets", "vocabulary.txt"))
            with self.assertRaisesRegex(ValueError, "vocabulary.txt: expected a file"):
                AttentionTransformerClassifier.from_preset(folder)
            with open(os.path.join(folder, "task.json"), "w") as file:
                file.write("{\n  oops\n}")
            with self.assertRaisesRegex(ValueError, "task.json:2: expected JSON"):
                AttentionTransformerMaskedLM.from_preset(folder)
        with self.assertRaisesRegex(ValueError, "'sst2'"):
            AttentionTransformerClassifier.from_preset("no-such-preset")


class DerivedDefaultsTest(tf.test.TestCase):
    """The classifier's data-derived defaults, by hand from the written rule."""

    def derive(self, steps_per_epoch, sentences=5452, **given):
        import argparse

        from zoo.attention_transformer.defaults import derive_fine_tuning
        from zoo.attention_transformer.defaults import validation_sentences_for

        options = {"validation_sentences": None, "epochs": None, "patience": None, **given}
        args = argparse.Namespace(**options)
        held_out = (validation_sentences_for(sentences) if options["validation_sentences"] is None
                    else options["validation_sentences"])
        derived = derive_fine_tuning(args, sentences, held_out, sentences - held_out, 50000,
                                     ["a", "b"], steps_per_epoch)
        return args, derived

    def test_small_data_trains_for_steps_not_epochs(self):
        # 5,452 questions: 818 held out; 73 steps an epoch -> ceil(4000 / 73) = 55 epochs,
        # patience ceil(1000 / 73) = 14 epochs.
        args, derived = self.derive(73)
        self.assertEqual((818, 55, 14), (args.validation_sentences, args.epochs, args.patience))
        self.assertIn("epochs 55 (4,015 steps)", derived.summary())

    def test_large_data_keeps_six_epochs_and_sst2_its_split(self):
        # SST-2: 6,885 sentences -> 1,000 held out; 1,050 steps an epoch -> 6 epochs, patience 3.
        args, _ = self.derive(1050, sentences=6885)
        self.assertEqual((1000, 6, 3), (args.validation_sentences, args.epochs, args.patience))

    def test_a_validation_split_that_empties_a_class_is_one_line(self):
        from zoo.attention_transformer import data as recipe_data

        with tempfile.TemporaryDirectory() as folder:
            for name in ("train", "dev"):
                with open(os.path.join(folder, f"{name}.tsv"), "w", encoding="utf-8") as file:
                    file.write("sentence\tlabel\n" + "".join(
                        f"sentence number {i} about {'abc'[i % 3]}\t{i % 3}\n" for i in range(9)))
            # Eight of nine sentences held out: one training row, so two classes lack any.
            with self.assertRaisesRegex(ValueError, r"train\.tsv: --validation-sentences 8 "
                                                    r"leaves no training row of class"):
                recipe_data.read_splits(folder, 8, 0)
            self.assertEqual(1, recipe_data.read_splits(folder, None, 0).held_out)  # 15 % of 9

    def test_given_flags_win(self):
        args, derived = self.derive(73, epochs=2, validation_sentences=0)
        self.assertEqual((0, 2, 14), (args.validation_sentences, args.epochs, args.patience))
        self.assertEqual({"patience": 14}, derived.derived)
        self.assertEqual({"validation_sentences": 0, "epochs": 2}, derived.given)
        self.assertEqual(derived.summary(), derived.record()["summary"])


class TrainingBatchesTest(tf.test.TestCase):
    """The fine-tuning batches' loss weights (`data.training_batches`)."""

    def weights_by_label(self, labels, **kwargs):
        from zoo.attention_transformer import data as recipe_data

        texts = ["a great movie", "a witty film", "a dull movie", "a boring film",
                 "great witty film", "dull boring movie"][: len(labels)]
        preprocessor = TextClassifierPreprocessor(WORDS, sequence_length=8)
        dataset, steps = recipe_data.training_batches(
            texts, np.array(labels, np.int32), preprocessor, batch_size=len(texts), seed=0,
            **kwargs)
        self.assertEqual(1, steps)  # every text has 3 tokens: one bucket, one batch
        _, batch_labels, batch_weights = next(iter(dataset))
        return sorted(zip(batch_labels.numpy().tolist(), batch_weights.numpy().tolist()))

    def test_balanced_weighs_every_class_the_same(self):
        # Six texts, four of class 0 and two of class 1: N / (K * N_c) = 6/8 and 6/4.
        pairs = self.weights_by_label([0, 0, 0, 0, 1, 1], class_weight="balanced")
        self.assertAllClose([0.75] * 4 + [1.5] * 2, [weight for _, weight in pairs])
        self.assertEqual([0] * 4 + [1] * 2, [label for label, _ in pairs])

    def test_none_weighs_texts_alike_and_combines_with_length_weights(self):
        self.assertAllClose([1.0] * 6, [w for _, w in self.weights_by_label([0, 0, 0, 0, 1, 1])])
        # Three tokens of a full weight at six: 0.5, times the class weight.
        pairs = self.weights_by_label([0, 0, 0, 0, 1, 1], class_weight="balanced",
                                      full_weight_length=6)
        self.assertAllClose([0.375] * 4 + [0.75] * 2, [weight for _, weight in pairs])

    def test_an_unknown_class_weight_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "Expected class_weight in .*received: "
                                                "class_weight='inverse'"):
            self.weights_by_label([0, 1], class_weight="inverse")


class RecipeTest(tf.test.TestCase):
    def test_train_predict_evaluate(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            code, stdout, stderr = run_cli(
                ["train", "attention-transformer", "--data", folder, "--out", out] + TINY_OPTIONS
            )
            self.assertEqual(0, code, stderr)
            # The rule's outcome first: what was measured, what was derived, what was given.
            derived, result = stdout.splitlines()[0], stdout.splitlines()[-1]
            self.assertRegex(derived, r"^data: \d+ sentences, 64 training texts, \d+ tokens, 2 "
                                      r"classes, (\d+) steps per epoch -> patience (\d+) ")
            self.assertIn("given: --validation-sentences 0, --epochs 1", derived)
            self.assertRegex(result, r"^dev accuracy \d\.\d{4} \(best epoch 1\); wrote ")
            self.assertCountEqual(
                ["model.keras", "preset", "metrics.json", "training_curves.png",
                 "attention_heatmap.png", "logs", "vocabulary.txt", "fine_tuning",
                 "wall_time.json"],
                os.listdir(out),
            )
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(1, metrics["epochs_run"])
            steps = metrics["derived"]["data"]["steps_per_epoch"]
            self.assertEqual({"patience": max(3, -(-1000 // steps))},
                             metrics["derived"]["derived"])
            self.assertEqual(metrics["derived"]["derived"]["patience"],
                             metrics["options"]["patience"])
            self.assertBetween(metrics["dev_accuracy"], 0.0, 1.0)
            self.assertEqual(
                ["accuracy", "loss", "val_accuracy", "val_loss"], sorted(metrics["history"])
            )
            for png in ("training_curves.png", "attention_heatmap.png"):
                with open(os.path.join(out, png), "rb") as file:
                    self.assertEqual(b"\x89PNG", file.read(4))
            self.assertNotEmpty(os.listdir(os.path.join(out, "logs", "seed-2", "attention")))

            code, stdout, stderr = run_cli(
                ["predict", "attention-transformer", "a great movie", "a dull film",
                 "--preset", os.path.join(out, "preset"), "--top", "2"]
            )
            self.assertEqual(0, code, stderr)
            lines = stdout.splitlines()
            self.assertLen(lines, 6)
            self.assertEqual("a great movie", lines[0])
            self.assertRegex(lines[1], r"^  (negative|positive) (0\.[5-9]\d\d|1\.000)$")
            token = r"(a|great|movie) -?\d+\.\d\d"
            self.assertRegex(lines[2], rf"^  top tokens by \w+: {token}, {token}$")

            # evaluate scores with the recipe's own code: the same dev accuracy.
            dev = os.path.join(folder, "dev.tsv")
            for source in (["--preset", os.path.join(out, "preset")],
                           ["--model", os.path.join(out, "model.keras")]):
                code, stdout, stderr = run_cli(
                    ["evaluate", "attention-transformer", "--data", dev, "--json"] + source
                )
                self.assertEqual(0, code, stderr)
                scores = json.loads(stdout)
                self.assertEqual(metrics["dev"], scores)
                self.assertEqual(["accuracy", "examples", "per_class"], sorted(scores))
                self.assertEqual(16, scores["examples"])
                self.assertCountEqual(["negative", "positive"], scores["per_class"])
            code, stdout, _ = run_cli(["evaluate", "attention-transformer", "--data", dev,
                                       "--model", os.path.join(out, "model.keras")])
            self.assertRegex(stdout, r"^accuracy \d\.\d{4} on 16 examples \(per class: negative ")

    def test_validation_sentences_seeds_averaging(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder, rows=48, phrases=True)
            out = os.path.join(folder, "out")
            options = [option for option in TINY_OPTIONS]
            options[options.index("--validation-sentences") + 1] = "8"
            code, stdout, stderr = run_cli(
                ["train", "attention-transformer", "--data", folder, "--out", out] + options
                + ["--fine-tune-seeds", "3,4", "--average", "weights"]
            )
            self.assertEqual(0, code, stderr)
            self.assertRegex(stdout.splitlines()[-1],
                             r"^validation accuracy \d\.\d{4} on 8 held-out sentences, "
                                     r"dev accuracy \d\.\d{4}; wrote ")
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(8, metrics["validation"]["examples"])
            self.assertIn("8 sentences held out", metrics["validation"]["source"])
            self.assertEqual(16, metrics["dev"]["examples"])
            self.assertEqual([3, 4], [run["seed"] for run in metrics["fine_tuning"]["seeds"]])
            for run in metrics["fine_tuning"]["seeds"]:
                self.assertBetween(run["validation_accuracy"], 0.0, 1.0)
                self.assertBetween(run["dev_accuracy"], 0.0, 1.0)
            # The shipped weights are the mean of the two seeds' best weights.
            reloaded = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
            runs = []
            for seed in (3, 4):
                # Compiled as the recipe compiles: the files hold its optimizer's state too.
                run = AttentionTransformerClassifier.from_config(reloaded.get_config())
                run.compile(optimizer=training.optimizer(1e-3, 10, 2, 0.05))
                training.load_weights(
                    run, os.path.join(out, "fine_tuning", f"seed-{seed}", "best.weights.h5")
                )
                runs.append(run.get_weights())
            self.assertNotAllClose(runs[0][0], runs[1][0])
            for mean, weight in zip(training.average_weights(runs), reloaded.get_weights()):
                self.assertAllClose(mean, weight, atol=1e-6)
            # Too many sentences to hold out: one line naming the flag.
            code, _, stderr = run_cli(
                ["train", "attention-transformer", "--data", folder, "--out", out + "2"]
                + TINY_OPTIONS[:-1] + ["1000"]
            )
            self.assertEqual(2, code)
            self.assertIn("train.tsv: --validation-sentences: expected 0 < count", stderr)

    def test_resume_keeps_the_whole_history(self):
        class Killed(Exception):
            pass

        original = training.TrainingRecord.on_epoch_end

        def killed_after_the_second_epoch(record, epoch, logs=None):
            original(record, epoch, logs)
            if record.monitor and epoch == 1:
                raise Killed()

        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            options = [option for option in TINY_OPTIONS]
            options[options.index("--epochs") + 1] = "4"
            argv = (["train", "attention-transformer", "--data", folder, "--out", out]
                    + options + ["--patience", "9"])
            with mock.patch.object(training.TrainingRecord, "on_epoch_end",
                                   killed_after_the_second_epoch):
                with self.assertRaises(Killed):
                    run_cli(argv)
            self.assertTrue(os.path.isdir(os.path.join(out, "fine_tuning", "seed-2", "backup")))
            code, _, stderr = run_cli(argv)
            self.assertEqual(0, code, stderr)
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(4, metrics["epochs_run"])
            self.assertLen(metrics["history"]["val_accuracy"], 4)
            self.assertLen(metrics["epoch_seconds"], 4)
            accuracies = metrics["history"]["val_accuracy"]
            self.assertEqual(int(np.argmax(accuracies)) + 1, metrics["best_epoch"])
            self.assertEqual(2, metrics["runs"])
            self.assertGreaterEqual(metrics["wall_seconds"], sum(metrics["epoch_seconds"]))
            self.assertFalse(os.path.exists(os.path.join(out, "fine_tuning", "seed-2", "backup")))

    def test_pretraining_reused_and_checked(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            argv = (["train", "attention-transformer", "--data", folder, "--out", out]
                    + TINY_OPTIONS + ["--pretrain-epochs", "2"])
            code, stdout, stderr = run_cli(argv)
            self.assertEqual(0, code, stderr)
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                pretraining_record = json.load(file)["pretraining"]
            options = pretraining_record["options"]
            self.assertEqual(2, options["epochs"])
            self.assertEqual(1, options["seed"])  # --seed, the default
            self.assertEqual("float32", options["precision"])
            self.assertEqual(2, options["architecture"]["num_layers"])
            self.assertLen(pretraining_record["masked_token_accuracy"], 2)
            self.assertFalse(os.path.exists(os.path.join(out, "pretraining_backup")))
            folder_pretrained = os.path.join(out, pretraining.PRETRAINED_BACKBONE)
            fine_tuned = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
            pretrained = AttentionTransformerBackbone.from_preset(folder_pretrained)
            # Fine-tuning started from the pre-trained weights and moved them.
            self.assertNotAllClose(
                pretrained.get_weights()[0], fine_tuned.backbone.get_weights()[0]
            )
            # Run again: the pre-trained backbone is reused, not trained again.
            weights = os.path.join(folder_pretrained, "model.weights.h5")
            modified = os.path.getmtime(weights)
            self.assertEqual(0, run_cli(argv)[0])
            self.assertEqual(modified, os.path.getmtime(weights))
            # Other options that shape the backbone, in the same folder: an error naming them.
            for change, field in ((["--pretrain-epochs", "3"], "epochs"),
                                  (["--seed", "5", "--pretrain-epochs", "2"], "seed"),
                                  (["--layers", "3", "--pretrain-epochs", "2"], "architecture"),
                                  (["--precision", "mixed_bfloat16", "--pretrain-epochs", "2"],
                                   "precision")):
                code, _, stderr = run_cli(argv[:-2] + change)
                self.assertEqual(2, code, change)
                self.assertIn("pretraining.json: expected a pre-training with the options given",
                              stderr)
                self.assertIn(field, stderr)

    def test_train_in_mixed_bfloat16(self):
        with tempfile.TemporaryDirectory() as folder:
            write_fixture(folder)
            out = os.path.join(folder, "out")
            code, _, stderr = run_cli(["train", "attention-transformer", "--data", folder,
                                       "--out", out] + TINY_OPTIONS
                                      + ["--precision", "mixed_bfloat16"])
            self.assertEqual(0, code, stderr)
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual("mixed_bfloat16", metrics["precision"])
            # Saved, scored and shipped in float32: `evaluate` reproduces the recorded score
            # and the preset exports like any other.
            model = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
            self.assertEqual("float32", model.backbone.dtype_policy.name)
            code, stdout, stderr = run_cli(["evaluate", "attention-transformer", "--data",
                                            os.path.join(folder, "dev.tsv"), "--json",
                                            "--model", os.path.join(out, "model.keras")])
            self.assertEqual(0, code, stderr)
            self.assertEqual(metrics["dev"]["accuracy"], json.loads(stdout)["accuracy"])
            from kerasattn.export import export

            manifest = export(model, os.path.join(folder, "export"), formats=("tflite",),
                              sample_inputs=["a really good film", "so bad"],
                              preprocessor=model.preprocessor)
            self.assertEqual("float32", manifest["dtype_policy"])

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
            self.assertIn("Expected a [MASK] token in the vocabulary", stderr)

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
            self.assertEqual(1, metrics["pretraining"]["options"]["epochs"])
            loaded = AttentionTransformerClassifier.from_preset(os.path.join(out, "preset"))
            self.assertEqual((1, 2), loaded.classify(["a great movie"])["probabilities"].shape)

    def test_errors_are_one_line(self):
        with tempfile.TemporaryDirectory() as folder:
            cases = [
                (["train", "no-such-model", "--data", folder, "--out", folder],
                 "invalid choice: 'no-such-model'"),
                (["predict", "no-such-model", "text"], "invalid choice"),
                (["train", "attention-transformer", "--data", os.path.join(folder, "missing"),
                  "--out", folder], "missing: expected a data folder"),
                (["train", "attention-transformer", "--data", folder, "--out", folder],
                 "train.tsv: expected a file"),
                (["train", "attention-transformer", "--data", folder, "--out", folder,
                  "--fine-tune-seeds", "1,1"], "expected distinct seeds"),
                (["predict", "attention-transformer", "text", "--preset", "no-such-preset"],
                 "Expected a preset name"),
                (["evaluate", "attention-transformer", "--data", os.path.join(folder, "x.tsv")],
                 "x.tsv: expected a labelled file, received: no such file"),
                (["evaluate", "attention-transformer", "--data", folder],
                 "expected a labelled file, received: a folder"),
                (["evaluate", "attention-transformer", "--data", "x", "--preset", "sst2",
                  "--model", "m.keras"], "not allowed with argument"),
            ]
            assert_one_line_errors(self, cases)
            with open(os.path.join(folder, "bad.tsv"), "w", encoding="utf-8") as file:
                file.write("sentence\tlabel\ngood\tpositive\nbad\tmaybe\n")
            code, _, printed = run_cli(
                ["evaluate", "attention-transformer", "--data", os.path.join(folder, "bad.tsv")]
            )
            self.assertEqual(2, code)
            self.assertIn("bad.tsv:3: ", printed)
            self.assertIn("(or a class id in 0..1)", printed)
        # The real command line too: one line on stderr, non-zero exit, no TensorFlow noise.
        result = subprocess.run(
            [sys.executable, "-m", "zoo", "train", "bert", "--data", "x", "--out", "y"],
            capture_output=True, text=True, cwd=REPO, timeout=120, env=console_environment(),
        )
        self.assertEqual(2, result.returncode)
        self.assertLen(result.stderr.splitlines(), 1)
        self.assertRegex(
            result.stderr, r"^zoo train: argument MODEL: invalid choice: 'bert' "
                           r"\(choose from 'attention-transformer', .*'sequence-tagger'")


class CommandLineTest(tf.test.TestCase):
    def test_presets_lists_every_shipped_preset_quietly(self):
        result = subprocess.run(
            [sys.executable, "-m", "zoo", "presets"],
            capture_output=True, text=True, cwd=REPO, timeout=120, env=console_environment(),
        )
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual("", result.stderr)  # no TensorFlow start-up lines
        lines = result.stdout.splitlines()
        self.assertTrue(lines[0].startswith("model"), lines)
        self.assertRegex(
            lines[1], r"^attention-transformer\s+sst2\s+AttentionTransformerClassifier\s+"
                      r"accuracy 0\.8300 \(1,000 sentences held out from SST-2 train\.tsv"
        )

    def test_help_per_model(self):
        expected = {"train": "--validation-sentences", "predict": "--top", "evaluate": "--json"}
        for command, option in expected.items():
            code, printed, _ = run_cli([command, "attention-transformer", "--help"])
            self.assertEqual(0, code)
            self.assertIn(f"zoo {command} attention-transformer", printed)
            self.assertIn(option, printed)

    def test_evaluate_sst2_dev(self):
        dev = os.path.join(REPO, "..", "shared", "data", "sst2", "dev.tsv")
        if not os.path.isfile(dev):
            if os.environ.get("CI") == "true":
                self.fail(f"{dev}: the CI needs SST-2's dev.tsv")
            self.skipTest(f"{dev} is not here (outside CI)")
        code, stdout, stderr = run_cli(
            ["evaluate", "attention-transformer", "--data", dev, "--json"]
        )
        self.assertEqual(0, code, stderr)
        self.assertEqual({"accuracy": 0.8314, "per_class": {"negative": 0.8294,
                                                             "positive": 0.8333},
                          "examples": 872}, json.loads(stdout))
