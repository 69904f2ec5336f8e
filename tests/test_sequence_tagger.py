"""The sequence tagger: preprocessor, backbone, CRF task, recipe, export."""

import json
import os
import random
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from kerasattn import data as kdata
from tests.test_attention_transformer import run_cli
from zoo.sequence_tagger import CharacterEncoder
from zoo.sequence_tagger import SequenceTagger
from zoo.sequence_tagger import SequenceTaggerBackbone
from zoo.sequence_tagger import SequenceTaggerPreprocessor
from zoo.sequence_tagger import data as tagger_data
from zoo.sequence_tagger import learn_vocabularies
from zoo.sequence_tagger.model import MaskedConvolution
from zoo.sequence_tagger.recipe import tokenize

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
PEOPLE = ["Maria Lindqvist", "Anna", "John Smith", "Maria"]
PLACES = ["Paris", "New York", "Bonn", "Rio de Janeiro"]
VERBS = ["visited", "left", "praised", "saw"]
TINY_OPTIONS = {
    "--word-dim": "8", "--character-filters": "8", "--hidden-dim": "16", "--heads": "2",
    "--intermediate-dim": "16", "--lstm-units": "0", "--layers": "1", "--context-window": "3",
    "--epochs": "1", "--batch-size": "8", "--warmup-steps": "2", "--precision": "float32",
    "--verbose": "0",
}


def tiny_options(**changes) -> list[str]:
    """`TINY_OPTIONS` as arguments, with `changes` (`layers="0"` sets `--layers`)."""
    options = {**TINY_OPTIONS, **{"--" + k.replace("_", "-"): v for k, v in changes.items()}}
    return [item for pair in options.items() for item in pair]


def sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A sentence "<person> <verb> <place> in 1996 ." with IOB2 tags."""
    tokens, tags = [], []
    for name, kind in ((rng.choice(PEOPLE), "PER"), (rng.choice(VERBS), None),
                       (rng.choice(PLACES), "LOC")):
        words = name.split()
        tokens += words
        tags += ["O"] * len(words) if kind is None else (
            [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1))
    tokens += ["in", str(rng.randint(1900, 2020)), "."]
    return tokens, tags + ["O", "O", "O"]


def write_conll(path, count, seed, separator=" ", scheme="IOB2", columns=("POS",)):
    """`count` sentences in CoNLL columns: token, extra columns, tag (in `scheme`)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as file:
        file.write(separator.join(["-DOCSTART-"] + ["-X-"] * len(columns) + ["O"]) + "\n\n")
        for _ in range(count):
            tokens, tags = sentence(rng)
            if scheme != "IOB2":
                tags = kdata.convert_tags(tags, "IOB2", scheme)
            for token, tag in zip(tokens, tags):
                file.write(separator.join([token] + ["X"] * len(columns) + [tag]) + "\n")
            file.write("\n")


def tiny_tagger(head="crf", tag_names=TAGS, **backbone_args):
    rng = random.Random(0)
    sentences = [sentence(rng)[0] for _ in range(20)]
    words, characters = learn_vocabularies(sentences)
    preprocessor = SequenceTaggerPreprocessor(words, characters, tag_names, max_word_length=6)
    backbone = SequenceTaggerBackbone(
        len(words), len(characters), max_word_length=6, word_dim=8, character_filters=8,
        hidden_dim=16, num_heads=2, intermediate_dim=16, **{"lstm_units": 0, "num_layers": 1,
                                                             "context_window": 3,
                                                             **backbone_args})
    model = SequenceTagger(backbone, len(tag_names), preprocessor=preprocessor, head=head)
    model.compile()
    return model


class PreprocessorTest(tf.test.TestCase):
    def test_vocabularies_are_normalised_and_deterministic(self):
        words, characters = learn_vocabularies(
            [["Acme", "hires", "Estonian", "staff"], ["Estonia", "1996", "acme", "2001"]]
        )
        self.assertEqual(["[PAD]", "[UNK]", "0000", "acme", "estonia", "estonian", "hires",
                          "staff"], words)
        self.assertEqual(["[PAD]", "[UNK]"], characters[:2])
        self.assertIn("E", characters)
        self.assertIn("e", characters)  # case kept for characters
        with self.assertRaisesRegex(ValueError, "Expected training sentences"):
            learn_vocabularies([[], []])

    def test_ids_masks_and_characters(self):
        preprocessor = SequenceTaggerPreprocessor(
            ["[PAD]", "[UNK]", "eu", "0000", "lamb"], ["[PAD]", "[UNK]", "E", "U", "l", "a"],
            ["O", "B-ORG"], max_word_length=3,
        )
        features = preprocessor(["EU  eats\tlamb 1996", "eu"])
        self.assertAllEqual([[2, 1, 4, 3], [2, 0, 0, 0]], features["word_ids"])
        self.assertAllEqual([[True] * 4, [True, False, False, False]], features["padding_mask"])
        # "EU" -> E U; "eats" -> e (unknown), a, t (unknown), cut to 3; "lamb" -> l a m(unknown).
        self.assertAllEqual([[2, 3, 0], [1, 5, 1], [4, 5, 1], [1, 1, 1]],
                            features["character_ids"][0])
        self.assertAllEqual(np.zeros((3, 3)), features["character_ids"][1, 1:])

    def test_tags_round_trip_and_truncation(self):
        rng = random.Random(3)
        model = tiny_tagger()
        preprocessor = model.preprocessor
        sentences = [sentence(rng) for _ in range(30)]
        texts = [" ".join(tokens) for tokens, _ in sentences]
        features, tag_ids = preprocessor(texts, [" ".join(tags) for _, tags in sentences])
        self.assertEqual(features["word_ids"].shape, tag_ids.shape)
        self.assertEqual([tags for _, tags in sentences],
                         preprocessor.tag_names_of(tag_ids, features["padding_mask"]))
        short = SequenceTaggerPreprocessor.from_config(
            {**preprocessor.get_config(), "sequence_length": 2})
        features, tag_ids = short(["Anna saw Paris"], ["B-PER O B-LOC"])
        self.assertAllEqual([[3, 0]], tag_ids)
        self.assertEqual((1, 2), features["word_ids"].shape)

    def test_bad_tags_and_arguments(self):
        preprocessor = tiny_tagger().preprocessor
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "Expected tags among"):
            preprocessor(["Anna saw Paris"], ["B-PER O B-CITY"])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "one tag per token"):
            preprocessor(["Anna saw Paris"], ["B-PER O"])
        config = preprocessor.get_config()
        for change, message in (({"tag_names": ["B-PER", "O"]}, "\"O\" first"),
                                ({"vocabulary": ["a", "b"]}, "to start with"),
                                ({"max_word_length": 0}, "max_word_length=0")):
            with self.assertRaisesRegex(ValueError, message):
                SequenceTaggerPreprocessor(**{**config, **change})

    def test_works_in_tf_data(self):
        preprocessor = tiny_tagger().preprocessor
        dataset = tf.data.Dataset.from_tensor_slices(
            (["Anna saw Paris", "Maria left New York in 1996 ."],
             ["B-PER O B-LOC", "B-PER O B-LOC I-LOC O O O"])
        ).batch(2).map(preprocessor)
        features, tags = next(iter(dataset))
        self.assertEqual((2, 7), tuple(features["word_ids"].shape))
        self.assertAllEqual([3, 0, 1, 0, 0, 0, 0], tags[0])

    def test_raw_text_is_split_into_conll_tokens(self):
        self.assertEqual("Acme hires Estonian staff , says U.S. official ( Reuters ) .",
                         tokenize("Acme hires Estonian staff, says U.S. official (Reuters)."))
        self.assertEqual("Anna Holm 's lamb", tokenize("Anna Holm's lamb"))


class ModelTest(tf.test.TestCase):
    def test_character_encoder_ignores_padding(self):
        encoder = CharacterEncoder(10, embedding_dim=4, filters=3)
        ids = np.array([[[2, 3, 4, 0, 0], [0, 0, 0, 0, 0]]], "int32")
        longer = np.concatenate([ids, np.zeros((1, 2, 3), "int32")], axis=-1)
        narrow = keras.ops.convert_to_numpy(encoder(ids))
        self.assertAllClose(narrow[0, 0], keras.ops.convert_to_numpy(
            CharacterEncoder.from_config(encoder.get_config())(longer) * 0 + narrow)[0, 0])
        self.assertAllEqual(np.zeros(3), narrow[0, 1])  # a padded token
        self.assertTrue(np.all(narrow >= 0))

    def test_masked_convolution_ignores_padding(self):
        layer = MaskedConvolution(4, 3)
        x = np.random.default_rng(0).normal(size=(1, 5, 2)).astype("float32")
        mask = np.array([[True, True, True, False, False]])
        noisy = x.copy()
        noisy[0, 3:] = 100.0
        clean = keras.ops.convert_to_numpy(layer(x, mask))
        self.assertAllClose(clean, keras.ops.convert_to_numpy(layer(noisy, mask)))
        self.assertAllEqual(np.zeros((2, 4)), clean[0, 3:])

    def test_config_and_keras_file_round_trip(self):
        for head in ("crf", "softmax"):
            model = tiny_tagger(head=head)
            features = model.preprocessor(["Anna saw Paris in 1996 .", "John Smith left"])
            outputs = model.predict_on_batch(features)
            restored = SequenceTagger.from_config(model.get_config())
            self.assertEqual(model.get_config(), restored.get_config())
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "tagger.keras")
                model.save(path)
                loaded = keras.saving.load_model(path)
                self.assertIsInstance(loaded, SequenceTagger)
                reloaded = loaded.predict_on_batch(features)
                self.assertAllClose(outputs["potentials"], reloaded["potentials"])
                self.assertAllEqual(outputs["tags"], reloaded["tags"])
                model.save_to_preset(os.path.join(folder, "preset"))
                preset = SequenceTagger.from_preset(os.path.join(folder, "preset"))
                self.assertAllEqual(outputs["tags"], preset.predict_on_batch(features)["tags"])
                self.assertEqual(model.preprocessor.get_config(),
                                 preset.preprocessor.get_config())
                self.assertCountEqual(
                    ["vocabulary.txt", "characters.txt", "tags.txt"],
                    os.listdir(os.path.join(folder, "preset", "assets")),
                )

    def test_losses(self):
        crf = tiny_tagger()
        features, tags = crf.preprocessor(["Anna saw Paris", "Maria left New York in 1996 ."],
                                          ["B-PER O B-LOC", "B-PER O B-LOC I-LOC O O O"])
        outputs = crf(features)
        expected = -np.mean(keras.ops.convert_to_numpy(crf.crf.log_likelihood(
            outputs["potentials"], tags, mask=features["padding_mask"])))
        self.assertAllClose(expected, crf.compute_loss(features, tags, outputs))
        softmax = tiny_tagger(head="softmax")
        outputs = softmax(features)
        logits = keras.ops.convert_to_numpy(outputs["potentials"])
        log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_probabilities, np.asarray(tags)[..., None], -1)[..., 0]
        expected = -np.mean(np.sum(picked * np.asarray(features["padding_mask"]), -1))
        self.assertAllClose(expected, softmax.compute_loss(features, tags, outputs), rtol=1e-5)

    def test_learns_a_few_steps_and_tags_with_confidence(self):
        keras.utils.set_random_seed(1)
        model = tiny_tagger()
        rng = random.Random(5)
        sentences = [sentence(rng) for _ in range(64)]
        texts = [" ".join(tokens) for tokens, _ in sentences]
        tags = [" ".join(tags) for _, tags in sentences]
        model.compile(optimizer=keras.optimizers.Adam(0.02))
        history = model.fit(texts, tags, batch_size=16, epochs=6, verbose=0)
        self.assertLess(history.history["loss"][-1], 0.3 * history.history["loss"][0])
        results = model.tag(["Anna visited Bonn in 1999 ."])
        self.assertEqual(["B-PER", "O", "B-LOC", "O", "O", "O"], results[0]["tags"])
        self.assertLen(results[0]["confidence"], 6)
        self.assertTrue(all(0.5 < p <= 1.0 for p in results[0]["confidence"]))

    def test_entity_scores_match_hand_counts(self):
        gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
        predicted = [["B-PER", "I-PER", "O", "B-PER"], ["B-ORG", "O"]]
        scores = tagger_data.entity_scores(gold, predicted)
        # 3 gold entities, 3 predicted, 2 right: P = R = F1 = 2/3.
        self.assertAllClose([2 / 3] * 3, [scores["overall"][k]
                                          for k in ("precision", "recall", "f1")])
        self.assertEqual(0.0, scores["per_type"]["LOC"]["recall"])
        self.assertEqual(0.5, scores["per_type"]["PER"]["precision"])
        self.assertAllClose(5 / 6, scores["token_accuracy"])
        self.assertEqual(2, scores["sentences"])
        iobes = tagger_data.entity_scores(
            [["S-PER", "O"]], [["S-PER", "O"]], scheme="IOBES")
        self.assertEqual(1.0, iobes["overall"]["f1"])


class RecipeTest(tf.test.TestCase):
    def test_train_evaluate_predict(self):
        with tempfile.TemporaryDirectory() as folder:
            write_conll(os.path.join(folder, "train.txt"), 48, seed=1)
            write_conll(os.path.join(folder, "valid.txt"), 12, seed=2)
            write_conll(os.path.join(folder, "test.txt"), 8, seed=3)
            out = os.path.join(folder, "out")
            code, stdout, stderr = run_cli(
                ["train", "sequence-tagger", "--data", folder, "--out", out] + tiny_options())
            self.assertEqual(0, code, stderr)
            derived, result = stdout.splitlines()
            # 48 sentences in batches of 8: 6 steps, so patience ceil(1,000 / 6) = 167 epochs.
            self.assertRegex(derived, r"^data: 48 sentences, [\d,]+ tokens, 2 entity types, "
                                      r"[\d.]+ entity hapax share, 6 steps per epoch -> word "
                                      r"dropout 0\.[123]5?, patience 167 \(1,002 steps\); given: "
                                      r"--hidden-dim 16, --intermediate-dim 16, --epochs 1$")
            self.assertRegex(result, r"^validation entity F1 \d\.\d{4} .*test F1 \d\.\d{4}; wrote")
            self.assertCountEqual(
                ["model.keras", "preset", "metrics.json", "training_curves.png",
                 "attention_heatmap.png", "logs", "run", "vocabularies.json", "wall_time.json"],
                os.listdir(out))
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(TAGS, metrics["tag_names"])
            self.assertIn("val_f1_PER", metrics["history"])
            self.assertEqual(8, metrics["test"]["sentences"])
            self.assertNotEmpty(os.listdir(os.path.join(out, "logs", "attention")))
            valid = os.path.join(folder, "valid.txt")
            for source in (["--preset", os.path.join(out, "preset")],
                           ["--model", os.path.join(out, "model.keras")]):
                code, stdout, stderr = run_cli(
                    ["evaluate", "sequence-tagger", "--data", valid, "--json"] + source)
                self.assertEqual(0, code, stderr)
                scores = json.loads(stdout)
                self.assertEqual(metrics["validation"]["overall"], scores["overall"])
                self.assertEqual(12, scores["sentences"])
                self.assertCountEqual(["LOC", "PER"], scores["per_type"])
            code, stdout, stderr = run_cli(
                ["predict", "sequence-tagger", "Anna visited Paris.", "--model",
                 os.path.join(out, "model.keras"), "--json"])
            self.assertEqual(0, code, stderr)
            result = json.loads(stdout)
            self.assertEqual(["Anna", "visited", "Paris", "."], result["tokens"])
            for entity in result["entities"]:
                self.assertCountEqual(["type", "text", "start", "end", "confidence",
                                       "explanation"], entity)
                self.assertEqual("integrated_gradients", entity["explanation"]["method"])
                context = [t["token"] for t in entity["explanation"]["context"]]
                self.assertLessEqual(len(context), 3)
                self.assertNotIn(entity["text"].split()[0], context)  # the entity's own

    def test_another_format_and_tag_set_trains_unchanged(self):
        with tempfile.TemporaryDirectory() as folder:
            # Tab-separated, token and tag only, IOBES: another scheme, the same command.
            for name, count, seed in (("train.txt", 24, 1), ("valid.txt", 6, 2)):
                write_conll(os.path.join(folder, name), count, seed, separator="\t",
                            scheme="IOBES", columns=())
            out = os.path.join(folder, "out")
            code, stdout, stderr = run_cli(
                ["train", "sequence-tagger", "--data", folder, "--out", out]
                + tiny_options(tag_scheme="IOBES", layers="0"))
            self.assertEqual(0, code, stderr)
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as file:
                metrics = json.load(file)
            self.assertEqual(["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER",
                              "E-PER", "S-PER"], metrics["tag_names"])
            self.assertFalse(os.path.exists(os.path.join(out, "attention_heatmap.png")))

    def test_bad_data_is_one_line(self):
        with tempfile.TemporaryDirectory() as folder:
            write_conll(os.path.join(folder, "train.txt"), 8, seed=1)
            code, _, printed = run_cli(["train", "sequence-tagger", "--data", folder,
                                        "--out", os.path.join(folder, "out")])
            self.assertEqual(2, code)
            self.assertIn("valid.txt: expected a file", printed)
            with open(os.path.join(folder, "valid.txt"), "w", encoding="utf-8") as file:
                file.write("Anna X B-PER\nsaw X O\nParis X B-CITY\n")
            code, _, printed = run_cli(["train", "sequence-tagger", "--data", folder,
                                        "--out", os.path.join(folder, "out")] + tiny_options())
            self.assertEqual(2, code)
            self.assertEqual(1, len(printed.strip().splitlines()), printed)
            self.assertIn("valid.txt:3: ", printed)

    def test_files_without_entities_are_one_line(self):
        # Before, both trained to an entity F1 of 0 at every epoch (a tag set of "O" alone
        # when the training file had no entity).
        def untagged(path, count=6):
            rng = random.Random(2)
            with open(path, "w", encoding="utf-8") as file:
                for _ in range(count):
                    file.writelines(f"{token} X O\n" for token in sentence(rng)[0])
                    file.write("\n")

        with tempfile.TemporaryDirectory() as folder:
            train, valid = (os.path.join(folder, name) for name in ("train.txt", "valid.txt"))
            argv = ["train", "sequence-tagger", "--data", folder, "--out",
                    os.path.join(folder, "out")] + tiny_options()
            untagged(train)
            write_conll(valid, 4, seed=2)
            code, _, printed = run_cli(argv)
            self.assertEqual(2, code, printed)
            self.assertEqual(f"zoo train: {train}: expected entities to learn, received: none "
                             "(every tag O, in 6 sentences of 43 tokens)\n", printed)
            write_conll(train, 8, seed=1)
            untagged(valid)
            code, _, printed = run_cli(argv)
            self.assertEqual(2, code, printed)
            self.assertEqual(f"zoo train: {valid}: expected entities to score (the entity F1 "
                             "training selects on), received: none (every tag O, in 6 sentences "
                             "of 43 tokens)\n", printed)

    def test_every_entity_type_is_logged_at_every_epoch(self):
        # A type absent from validation and not predicted was left out of the epoch's logs,
        # so the keys changed from epoch to epoch as the model predicted it or not.
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "valid.txt")
            with open(path, "w", encoding="utf-8") as file:
                file.write("Anna X B-PER\nsaw X O\nit X O\n")
            validation = kdata.read_conll(path, tag_names=TAGS)
        callback = tagger_data.EntityF1Callback(validation)
        callback.set_model(tiny_tagger())
        for predicted, f1 in (([["O", "O", "O"]], 0.0), ([["B-PER", "O", "O"]], 1.0),
                              ([["B-PER", "O", "B-LOC"]], 1.0)):
            logs = {}
            with mock.patch.object(tagger_data, "tag_sentences", return_value=predicted):
                callback.on_epoch_end(0, logs)
            self.assertEqual({"val_f1_LOC": 0.0, "val_f1_PER": f1},
                             {key: value for key, value in logs.items()
                              if key.startswith("val_f1_")})


class ExportTest(tf.test.TestCase):
    def test_exports_with_strings_and_ids_at_dynamic_length(self):
        from kerasattn.export import export

        model = tiny_tagger()
        sentences = ["Anna saw Paris in 1996 .", "John Smith left New York"]
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "export")
            manifest = export(model, out, quantize=("float32",), sample_inputs=sentences,
                              preprocessor=model.preprocessor)
            self.assertCountEqual(["saved_model", "saved_model_strings", "tflite_float32",
                                   "onnx"], manifest["artifacts"])
            # Each artifact was run at two sequence lengths against Keras (tags must match
            # exactly: any difference is >= 1, above every tolerance).
            for artifact in manifest["artifacts"].values():
                self.assertLess(artifact["max_abs_difference"], 1e-4)
            served = tf.saved_model.load(os.path.join(out, "saved_model"))
            outputs = served.signatures["serving_default"](text=tf.constant(sentences))
            expected = model.tag(sentences, confidence=False)
            mask = model.preprocessor(sentences)["padding_mask"]
            self.assertEqual([row["tags"] for row in expected],
                             model.preprocessor.tag_names_of(outputs["tags"], mask))


class PresetTest(tf.test.TestCase):
    def test_conll2003_preset_reaches_the_card_f1(self):
        from pathlib import Path

        from zoo import preset

        valid = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "valid.txt"
        metadata = preset.read_metadata(
            preset.find("conll2003", "zoo.sequence_tagger"))["metrics"]
        self.assertEqual("entity_f1", metadata["name"])
        if not valid.is_file():
            if os.environ.get("CI") == "true":
                self.fail(f"{valid}: the CI needs CoNLL-2003's valid.txt")
            self.skipTest(f"{valid} is not here (outside CI)")
        code, stdout, stderr = run_cli(
            ["evaluate", "sequence-tagger", "--data", str(valid), "--json"])
        self.assertEqual(0, code, stderr)
        scores = json.loads(stdout)
        self.assertAllClose(metadata["value"], scores["overall"]["f1"], atol=1e-6)
        self.assertEqual(3250, scores["sentences"])
        self.assertGreater(scores["overall"]["f1"], 0.89)


class UnknownWordDropoutTest(tf.test.TestCase):
    def test_reads_words_as_unknown_in_training_only(self):
        from zoo.sequence_tagger.model import UnknownWordDropout

        layer = UnknownWordDropout(0.25, seed=3)
        ids = np.tile(np.array([[5, 6, 7, 8, 9, 10, 0, 0]], "int32"), (500, 1))
        self.assertAllEqual(ids, layer(ids))  # inference: unchanged
        dropped = keras.ops.convert_to_numpy(layer(ids, training=True))
        self.assertAllEqual(ids[:, 6:], dropped[:, 6:])  # padding is never a word
        replaced = dropped[:, :6] != ids[:, :6]
        self.assertAllEqual(np.ones_like(dropped[:, :6])[replaced], dropped[:, :6][replaced])
        self.assertBetween(replaced.mean(), 0.22, 0.28)  # 3,000 draws at 0.25
        clone = UnknownWordDropout.from_config(layer.get_config())
        self.assertEqual((0.25, 1, 3), (clone.rate, clone.unknown_id, clone.seed))

    def test_the_unknown_word_embedding_learns(self):
        # One training step moves [UNK]'s embedding row only when words are read as unknown.
        preprocessor = SequenceTaggerPreprocessor(
            ["[PAD]", "[UNK]", "a", "b"], ["[PAD]", "[UNK]", "a", "b"], ["O", "B-X", "I-X"])
        for rate, moves in ((0.0, False), (0.5, True)):
            keras.utils.set_random_seed(1)
            backbone = SequenceTaggerBackbone(
                4, 4, max_word_length=16, word_dim=4, character_filters=4, hidden_dim=8,
                num_layers=0, word_dropout=rate)
            tagger = SequenceTagger(backbone, 3, preprocessor=preprocessor)
            tagger.compile()
            embeddings = backbone.get_layer("word_embedding").embeddings
            before = keras.ops.convert_to_numpy(embeddings)[1].copy()
            tagger.fit(["a b a b"] * 8, ["B-X O B-X O"] * 8, batch_size=8,
                       epochs=1, verbose=0)
            moved = np.abs(keras.ops.convert_to_numpy(embeddings)[1] - before).max()
            self.assertEqual(moves, bool(moved > 1e-4), (rate, moved))


class DerivedDefaultsTest(tf.test.TestCase):
    """The tagger's data-derived defaults, by hand from the written rule."""

    def derive(self, steps_per_epoch, tokens=None, tags=None, **given):
        import argparse

        from zoo.sequence_tagger.defaults import derive_training

        options = ("epochs", "patience", "hidden_dim", "intermediate_dim", "word_dropout")
        args = argparse.Namespace(**{**dict.fromkeys(options), **given})
        if tokens is None:  # 1,000 sentences of 20 tokens, every entity word seen twice
            tokens = [[f"w{i % 500}"] + ["x"] * 19 for i in range(1000)]
            tags = [["B-PER"] + ["O"] * 19 for _ in range(1000)]
        return args, derive_training(args, tokens, tags, ["PER", "LOC"], steps_per_epoch)

    def test_conll2003_keeps_its_preset_and_small_data_gets_steps(self):
        args, _ = self.derive(439)  # CoNLL-2003: 14,041 sentences in batches of 32
        self.assertEqual((20, 8), (args.epochs, args.patience))
        # 3,394 tweets: 107 steps -> ceil(4,000 / 107) = 38 epochs, ceil(1,000 / 107) = 10.
        args, derived = self.derive(107)
        self.assertEqual((38, 10), (args.epochs, args.patience))
        self.assertIn("epochs 38 (4,066 steps), patience 10 (1,070 steps)", derived.summary())

    def test_width_follows_the_training_tokens(self):
        # 20,000 tokens: narrow; 100,000 (5,000 sentences of 20): wide, as the cards' sets.
        args, derived = self.derive(107)
        self.assertEqual((128, 256), (args.hidden_dim, args.intermediate_dim))
        self.assertEqual(20_000, derived.data["tokens"])
        tokens = [["x"] * 20 for _ in range(5000)]
        args, _ = self.derive(157, tokens, [["O"] * 20 for _ in range(5000)])
        self.assertEqual((256, 512), (args.hidden_dim, args.intermediate_dim))

    def test_word_dropout_is_the_entity_words_hapax_share(self):
        from zoo.sequence_tagger.defaults import entity_hapax_share

        tokens = [["Ann", "met", "Bob"], ["Ann", "saw", "Cy", "Dee"]]
        tags = [["B-PER", "O", "B-PER"], ["B-PER", "O", "B-PER", "I-PER"]]
        # Entity tokens Ann, Bob, Ann, Cy, Dee: Bob, Cy and Dee occur once -> 3 / 5.
        self.assertAlmostEqual(0.6, entity_hapax_share(tokens, tags))
        args, derived = self.derive(1, tokens, tags)
        self.assertEqual(0.3, args.word_dropout)  # 0.6 -> at most 0.3
        self.assertEqual(0.6, derived.data["entity_hapax_share"])
        # Every entity word seen twice -> 0 -> at least 0.1; 0.252 -> 0.25; 0.109 -> 0.1.
        self.assertEqual(0.1, self.derive(107)[0].word_dropout)
        from zoo.sequence_tagger.defaults import word_dropout_for

        self.assertEqual((0.25, 0.1, 0.15), tuple(map(word_dropout_for, (0.252, 0.109, 0.13))))
        self.assertEqual(0.0, entity_hapax_share([["a"]], [["O"]]))

    def test_given_flags_win(self):
        args, derived = self.derive(107, epochs=5, hidden_dim=64, word_dropout=0.0)
        self.assertEqual((5, 10, 64, 256, 0.0), (args.epochs, args.patience, args.hidden_dim,
                                                 args.intermediate_dim, args.word_dropout))
        self.assertEqual({"epochs": 5, "hidden_dim": 64, "word_dropout": 0.0}, derived.given)
