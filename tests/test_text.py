"""Tests of kerasattn.text: normalisation, WordPiece vocabularies, TextPreprocessor."""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasattn import text
from kerasattn.layers import AttentionPooling
from tests import harness

# A vocabulary small enough to tokenise by hand. Ids are list positions.
VOCABULARY = [
    "[PAD]", "[UNK]", "the", "movie", "great", "##ly", "!", ",", "a", "café", "is",
]
PAD, UNK, THE, MOVIE, GREAT, LY, BANG, COMMA, A, CAFE, IS = range(len(VOCABULARY))

CORPUS = [
    "The movie is great!",
    "A great, great movie.",
    "The acting is GREAT and the movie moves.",
    "Movies like this movie are rare.",
    "ＭＯＶＩＥ night: the greatest movie, greatly acted.",
    "Great movies, great acting; the movie is a movie.",
] * 3


def preprocessor(sequence_length=6, **kwargs):
    return text.TextPreprocessor(VOCABULARY, sequence_length=sequence_length, **kwargs)


def temporary_folder(test: tf.test.TestCase) -> str:
    # tf.test.TestCase.create_tempdir needs absl flags, which pytest leaves unparsed.
    folder = tempfile.TemporaryDirectory()
    test.addCleanup(folder.cleanup)
    return folder.name


def ids(layer, strings):
    return layer(strings)["token_ids"].numpy().tolist()


class NormalizationTest(tf.test.TestCase):
    def test_control_characters_case_folding_and_forms(self):
        out = text.normalize_text(
            tf.constant(["ＭＯＶＩＥ\tNight\u200bOut", "Straße", "Cafe\u0301"])
        )
        # Tab and zero-width space become spaces; NFKC_Casefold folds the
        # full-width letters and ß; NFKC composes e + combining acute.
        self.assertAllEqual([b"movie night out", b"strasse", "café".encode()], out)
        kept = text.normalize_text(
            tf.constant(["Cafe\u0301"]), lower_case=False, normalization_form=None
        )
        self.assertAllEqual(["Cafe\u0301".encode()], kept)
        nfd = text.normalize_text(tf.constant(["café"]), lower_case=False, normalization_form="NFD")
        self.assertAllEqual(["cafe\u0301".encode()], nfd)

    def test_rejects_unknown_form(self):
        with self.assertRaisesRegex(ValueError, "normalization_form='nfc'"):
            text.normalize_text(tf.constant(["a"]), normalization_form="nfc")


class LearnVocabularyTest(tf.test.TestCase):
    def test_reserved_first_size_bound_and_frequent_words(self):
        vocabulary = text.learn_wordpiece_vocabulary(CORPUS, vocabulary_size=120, min_count=3)
        self.assertEqual(list(text.RESERVED_TOKENS), vocabulary[:5])
        self.assertEqual("[PAD]", vocabulary[0])
        self.assertLessEqual(len(vocabulary), 120)
        self.assertLen(set(vocabulary), len(vocabulary))
        # Frequent words become whole tokens; case was folded before learning.
        for word in ("movie", "great", "the"):
            self.assertIn(word, vocabulary)
        self.assertNotIn("Movie", vocabulary)
        # Every character is there, alone and as a suffix, so nothing seen
        # in training becomes [UNK] (learner and layer normalise alike).
        self.assertIn("m", vocabulary)
        self.assertIn("##m", vocabulary)
        layer = text.TextPreprocessor(vocabulary, sequence_length=32)
        token_ids = layer.tokenize(CORPUS).flat_values.numpy()
        self.assertNotIn(vocabulary.index("[UNK]"), token_ids)

    def test_min_count_keeps_rare_words_out(self):
        vocabulary = text.learn_wordpiece_vocabulary(CORPUS, vocabulary_size=500, min_count=10)
        self.assertIn("movie", vocabulary)  # 27 times
        self.assertNotIn("acting", vocabulary)  # 6 times

    def test_overshoot_is_trimmed_to_the_bound_keeping_characters(self):
        normalized = text.normalize_text(tf.constant(CORPUS)).numpy()
        characters = set("".join(line.decode() for line in normalized).replace(" ", ""))
        # At this size the learner's threshold search stops 4 tokens above
        # it; the rarest pieces it returns last are '##s', '##t', '##v', '##y'.
        size = 5 + 2 * len(characters) + 12
        vocabulary = text.learn_wordpiece_vocabulary(CORPUS, vocabulary_size=size, min_count=1)
        self.assertLen(vocabulary, size)
        for character in characters:
            self.assertIn(character, vocabulary)
            self.assertIn("##" + character, vocabulary)
        layer = text.TextPreprocessor(vocabulary, sequence_length=64)
        token_ids = layer.tokenize(CORPUS).flat_values.numpy()
        self.assertNotIn(vocabulary.index("[UNK]"), token_ids)
        with self.assertRaisesRegex(ValueError, f"vocabulary_size` of at least {size - 12}"):
            text.learn_wordpiece_vocabulary(CORPUS, vocabulary_size=20, min_count=1)

    def test_dataset_input_matches_list_input(self):
        from_list = text.learn_wordpiece_vocabulary(CORPUS, vocabulary_size=100, min_count=2)
        dataset = tf.data.Dataset.from_tensor_slices(CORPUS).batch(4)
        self.assertEqual(
            from_list, text.learn_wordpiece_vocabulary(dataset, vocabulary_size=100, min_count=2)
        )

    def test_bad_arguments(self):
        cases = [
            (dict(texts=[]), "at least one word"),
            (dict(texts=["  ", ""]), "at least one word"),
            (dict(texts="the movie"), "single string"),
            (dict(texts=["ok", 3]), r"texts\[1\]=3"),
            (dict(texts=tf.data.Dataset.from_tensor_slices((["a"], [1]))), "element_spec"),
            (dict(texts=CORPUS, reserved_tokens=["[UNK]", "[PAD]"]), "padding token"),
            (dict(texts=CORPUS, reserved_tokens=["[PAD]"]), "'\\[UNK\\]' among"),
            (dict(texts=CORPUS, vocabulary_size=0), "vocabulary_size=0"),
            (dict(texts=CORPUS, min_count=0), "min_count=0"),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    text.learn_wordpiece_vocabulary(**kwargs)


class VocabularyFileTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.folder = temporary_folder(self)

    def write(self, content: bytes) -> str:
        path = os.path.join(self.folder, "vocab.txt")
        with open(path, "wb") as file:
            file.write(content)
        return path

    def test_round_trip_is_utf8_one_token_per_line_and_atomic(self):
        tokens = VOCABULARY + ["##é", "中"]
        path = os.path.join(self.folder, "vocab.txt")
        text.save_vocabulary(tokens, path)
        self.assertEqual(tokens, text.load_vocabulary(path))
        with open(path, "rb") as file:
            self.assertEqual(("\n".join(tokens) + "\n").encode("utf-8"), file.read())
        text.save_vocabulary(tokens[:3], path)  # replaces the old file
        self.assertEqual(tokens[:3], text.load_vocabulary(path))
        self.assertEqual(["vocab.txt"], os.listdir(self.folder))  # no temporary left

    def test_save_rejects_bad_tokens_and_writes_nothing(self):
        path = os.path.join(self.folder, "vocab.txt")
        for tokens, message in [
            (["[PAD]", "a b"], r"tokens\[1\]='a b'"),
            (["[PAD]", "a", "a"], "'a' at ids 1 and 2"),
            (["a"], "padding token"),
            ([], "non-empty"),
        ]:
            with self.subTest(tokens=tokens):
                with self.assertRaisesRegex(ValueError, message):
                    text.save_vocabulary(tokens, path)
        self.assertEqual([], os.listdir(self.folder))

    def test_load_accepts_crlf_and_a_missing_final_newline(self):
        path = self.write(b"[PAD]\r\n[UNK]\r\nmovie")
        self.assertEqual(["[PAD]", "[UNK]", "movie"], text.load_vocabulary(path))

    def test_load_errors_name_file_and_line(self):
        cases = [
            (b"", ":1: .*an empty file"),
            (b"[PAD]\nthe\n\nmovie\n", ":3: .*an empty line"),
            (b"[PAD]\nthe\n  \n", ":3: .*an empty line"),
            (b"[PAD]\nthe movie\n", ":2: .*whitespace 'the movie'"),
            (b"[PAD]\nthe\nmovie\nthe\n", ":4: .*'the' again \\(first on line 2\\)"),
            (b"[UNK]\n[PAD]\n", ":1: .*padding token"),
            (b"[PAD]\nthe\n\xff\n", ":3: expected UTF-8"),
        ]
        for content, message in cases:
            with self.subTest(content=content):
                path = self.write(content)
                with self.assertRaisesRegex(ValueError, "^" + path + message):
                    text.load_vocabulary(path)


class TextPreprocessorTest(tf.test.TestCase):
    def test_tokenises_known_vocabulary_by_hand(self):
        layer = preprocessor(sequence_length=8)
        self.assertEqual(
            [[THE, MOVIE, IS, GREAT, LY, GREAT, BANG, PAD]],
            ids(layer, ["The movie is greatly great!"]),
        )
        # Punctuation splits words; a word the vocabulary cannot spell
        # ("greatx": no "##x") is one [UNK]; CJK characters are words.
        self.assertEqual(
            [[A, COMMA, GREAT, UNK, UNK, UNK, PAD, PAD]],
            ids(layer, ["a,great greatx 中国"]),
        )

    def test_case_folding_and_normalisation(self):
        layer = preprocessor()
        self.assertEqual(
            [[THE, MOVIE, 0, 0, 0, 0]] * 3,
            ids(layer, ["THE Movie", "the movie", "ＴＨＥ ＭＯＶＩＥ"]),
        )
        # NFKC composes the decomposed é of "cafe\u0301" into "café".
        self.assertEqual([[CAFE, 0, 0, 0, 0, 0]], ids(layer, ["Cafe\u0301"]))
        # Tab, newline and zero-width space separate words.
        self.assertEqual([[THE, MOVIE, A, 0, 0, 0]], ids(layer, ["the\tmovie\u200ba"]))
        cased = preprocessor(lower_case=False)
        self.assertEqual([[UNK, MOVIE, 0, 0, 0, 0]], ids(cased, ["The ｍｏｖｉｅ"]))
        raw = preprocessor(lower_case=False, normalization_form=None)
        self.assertEqual([[UNK, UNK, 0, 0, 0, 0]], ids(raw, ["ｍｏｖｉｅ cafe\u0301"]))

    def test_truncation_padding_and_mask_for_a_batch_of_lengths(self):
        layer = preprocessor(sequence_length=4)
        out = layer(["the movie is great !", "a movie", "", "!!!!"])
        self.assertEqual(tf.int32, out["token_ids"].dtype)
        self.assertEqual(tf.bool, out["padding_mask"].dtype)
        self.assertAllEqual(
            [[THE, MOVIE, IS, GREAT], [A, MOVIE, 0, 0], [0, 0, 0, 0], [BANG] * 4],
            out["token_ids"],
        )
        self.assertAllEqual(
            [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]],
            out["padding_mask"],
        )

    def test_input_forms(self):
        layer = preprocessor()
        expected = [[THE, MOVIE, 0, 0, 0, 0], [GREAT, 0, 0, 0, 0, 0]]
        for inputs in (
            ["the movie", "great"],
            np.array(["the movie", "great"], dtype=object),
            tf.constant([["the movie"], ["great"]]),
        ):
            self.assertEqual(expected, ids(layer, inputs))
        single = layer(tf.constant("the movie"))
        self.assertAllEqual(expected[0], single["token_ids"])
        self.assertAllEqual([1, 1, 0, 0, 0, 0], single["padding_mask"])
        with self.assertRaisesRegex(ValueError, r"inputs.shape=\(1, 2\)"):
            layer(tf.constant([["a", "b"]]))
        with self.assertRaisesRegex(ValueError, "inputs.dtype=int32"):
            layer(tf.constant([1, 2]))

    def test_tokenize_is_neither_truncated_nor_padded(self):
        layer = preprocessor(sequence_length=2)
        ragged = layer.tokenize(["the movie is great", "a"])
        self.assertIsInstance(ragged, tf.RaggedTensor)
        self.assertEqual([[THE, MOVIE, IS, GREAT], [A]], ragged.to_list())
        self.assertEqual([A, MOVIE], layer.tokenize("a movie").numpy().tolist())

    def test_tokens_for_display_line_up_with_positions(self):
        layer = preprocessor(sequence_length=5)
        tokens = layer.tokens(["Greatly, a movie!", "the"])
        self.assertAllEqual(
            [
                [b"great", b"##ly", b",", b"a", b"movie"],
                [b"the", b"[PAD]", b"[PAD]", b"[PAD]", b"[PAD]"],
            ],
            tokens,
        )
        self.assertAllEqual([b"[UNK]", "café".encode()], layer.id_to_token([UNK, CAFE]))
        # detokenize drops the padding and joins suffix pieces.
        token_ids = layer(["Greatly, a movie", "the  zzz"])["token_ids"]
        self.assertAllEqual([b"greatly , a movie", b"the [UNK]"], layer.detokenize(token_ids))
        self.assertEqual(b"a movie", layer.detokenize([A, MOVIE, 0]).numpy())

    def test_inside_dataset_map(self):
        layer = preprocessor(sequence_length=3)
        strings = ["the movie", "great", "a great movie!"]
        batched = tf.data.Dataset.from_tensor_slices(strings).batch(2).map(layer)
        self.assertEqual(tf.TensorSpec((None, 3), tf.int32), batched.element_spec["token_ids"])
        got = np.concatenate([batch["token_ids"].numpy() for batch in batched])
        self.assertAllEqual(ids(layer, strings), got)
        unbatched = tf.data.Dataset.from_tensor_slices(strings).map(layer)
        self.assertEqual(tf.TensorSpec((3,), tf.bool), unbatched.element_spec["padding_mask"])
        self.assertAllEqual(got, [element["token_ids"] for element in unbatched])

    def test_string_signature_and_saved_model(self):
        layer = preprocessor(sequence_length=5)

        class Serving(tf.Module):
            def __init__(self, preprocessor):
                super().__init__()
                self.preprocessor = preprocessor

            @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
            def serve(self, strings):
                return self.preprocessor(strings)

        strings = tf.constant(["The movie is GREATLY great!", "", "a café"])
        expected = layer(strings)
        module = Serving(layer)
        traced = module.serve(strings)
        path = os.path.join(temporary_folder(self), "saved_model")
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
        del module
        reloaded = tf.saved_model.load(path).signatures["serving_default"]
        served = reloaded(strings=strings)
        for key in ("token_ids", "padding_mask"):
            self.assertAllEqual(expected[key], traced[key])
            self.assertAllEqual(expected[key], served[key])

    def test_rejects_bad_arguments(self):
        cases = [
            (dict(vocabulary=["[UNK]", "[PAD]"]), "padding token"),
            (dict(vocabulary=["[PAD]", "the"]), "unknown_token='\\[UNK\\]'"),
            # No token a word can match: FastWordpieceTokenizer's RuntimeError before.
            (dict(vocabulary=["[PAD]", "[UNK]", "[MASK]", "##", "a.b"]),
             r"Expected `vocabulary` to hold a token the tokenizer can match .*received: 5 "
             r"tokens, none such: \['\[PAD\]', '\[UNK\]', '\[MASK\]', '##', 'a.b'\]"),
            (dict(vocabulary=VOCABULARY, sequence_length=0), "sequence_length=0"),
            (dict(vocabulary=VOCABULARY, normalization_form="NFX"), "normalization_form='NFX'"),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    text.TextPreprocessor(**kwargs)

    def test_vocabulary_from_file_and_config_round_trip(self):
        path = os.path.join(temporary_folder(self), "vocab.txt")
        text.save_vocabulary(VOCABULARY, path)
        layer = text.TextPreprocessor(path, sequence_length=7, normalization_form="NFC", name="pre")
        config = layer.get_config()
        self.assertEqual(VOCABULARY, config["vocabulary"])  # the tokens, not the path
        restored = text.TextPreprocessor.from_config(config)
        self.assertEqual(config, restored.get_config())
        self.assertEqual(len(VOCABULARY), restored.vocabulary_size)
        self.assertAllEqual(layer(["The café!"])["token_ids"], restored(["The café!"])["token_ids"])
        with open(path, "a", encoding="utf-8") as file:
            file.write("movie\n")
        with self.assertRaisesRegex(ValueError, f"{path}:{len(VOCABULARY) + 1}: .*'movie' again"):
            text.TextPreprocessor(path)
        text.save_vocabulary(["[PAD]", "[UNK]"], path)
        with self.assertRaisesRegex(ValueError, f"^{path}: expected a token the tokenizer can "
                                                r"match .*received: 2 tokens, none such"):
            text.TextPreprocessor(path)

    def test_keras_file_round_trip_in_a_model(self):
        keras.utils.set_random_seed(1)
        strings = keras.Input(shape=(), dtype="string")
        features = preprocessor(sequence_length=6)(strings)
        x = keras.layers.Embedding(len(VOCABULARY), 4)(features["token_ids"])
        x = AttentionPooling()(x, mask=features["padding_mask"])
        model = keras.Model(strings, keras.layers.Dense(1)(x))
        batch = tf.constant(["The movie is great!", "a café", "zzz"])
        expected = model(batch)
        path = os.path.join(temporary_folder(self), "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        self.assertAllEqual(harness.to_numpy(expected), harness.to_numpy(reloaded(batch)))
        inner = [x for x in reloaded.layers if isinstance(x, text.TextPreprocessor)]
        self.assertLen(inner, 1)
        self.assertEqual(VOCABULARY, inner[0].vocabulary)
