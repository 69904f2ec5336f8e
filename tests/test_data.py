"""Tests of kerasattn.data's text-label reader and dataset."""

import os
import tempfile
import unittest
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasattn import data
from kerasattn.text import TextPreprocessor

SST2 = Path(__file__).parents[1].parent / "shared/data/sst2"


class TextClassificationReaderTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = folder.name

    def write(self, name: str, content: str | bytes) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "wb") as file:
            file.write(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def assert_data_error(self, path: str, line: int | None, fragment: str, **kwargs):
        with self.assertRaises(data.DataError) as context:
            data.read_text_classification(path, **kwargs)
        error = context.exception
        self.assertIsInstance(error, ValueError)
        self.assertEqual((path, line), (error.path, error.line))
        where = path if line is None else f"{path}:{line}"
        self.assertTrue(str(error).startswith(f"{where}: "), str(error))
        self.assertIn(fragment, str(error))

    # -- reading --------------------------------------------------------------

    def test_tsv_with_header_like_sst2(self):
        path = self.write(
            "train.tsv",
            'sentence\tlabel\nit \'s a "charming" film . \t1\nbleak \t0\ndull\t0\n',
        )
        texts, labels, names = data.read_text_classification(path)
        # Quotes are text in TSV; surrounding whitespace is stripped.
        self.assertEqual(["it 's a \"charming\" film .", "bleak", "dull"], texts)
        self.assertEqual(np.int32, labels.dtype)
        self.assertAllEqual([1, 0, 0], labels)
        self.assertEqual(["0", "1"], names)

    def test_csv_quoting_columns_by_name_and_index(self):
        content = (
            "id,label,review\r\n"
            '1,pos,"Great, really great"\r\n'
            '2,neg,"He said ""no""\r\nand left"\r\n'
            "3,pos,fine\r\n"
        )
        path = self.write("reviews.csv", content)
        by_name = data.read_text_classification(path, text_column="review")
        self.assertEqual(['Great, really great', 'He said "no"\r\nand left', "fine"], by_name.texts)
        self.assertEqual(["neg", "pos"], by_name.label_names)
        self.assertAllEqual([1, 0, 1], by_name.labels)
        by_index = data.read_text_classification(path, text_column=2, label_column=1)
        self.assertEqual(by_name.texts, by_index.texts)
        self.assertAllEqual(by_name.labels, by_index.labels)

    def test_without_header_and_a_given_delimiter(self):
        path = self.write("rows.txt", "3|a movie\n1|another\n")
        got = data.read_text_classification(
            path, text_column=1, label_column=0, header=False, delimiter="|"
        )
        self.assertEqual(["a movie", "another"], got.texts)
        self.assertEqual(["1", "3"], got.label_names)
        self.assertAllEqual([1, 0], got.labels)

    def test_label_ids(self):
        # Integers sort by value, so "0".."K-1" keep their values and "10" follows "9".
        path = self.write(
            "a.tsv", "sentence\tlabel\n" + "".join(f"t{i}\t{i}\n" for i in (2, 10, 0, 9, 1))
        )
        got = data.read_text_classification(path)
        self.assertEqual(["0", "1", "2", "9", "10"], got.label_names)
        self.assertAllEqual([2, 4, 0, 3, 1], got.labels)
        # Given labels fix the ids, even for labels the file lacks.
        got = data.read_text_classification(path, labels=["10", "9", "2", "1", "0", "7"])
        self.assertAllEqual([2, 0, 4, 1, 3], got.labels)
        self.assertEqual(["10", "9", "2", "1", "0", "7"], got.label_names)

    def test_byte_order_mark_and_trailing_blank_lines_are_ignored(self):
        path = self.write("bom.csv", b"\xef\xbb\xbfsentence,label\nok,1\n\n\n")
        got = data.read_text_classification(path)
        self.assertEqual((["ok"], ["1"]), (got.texts, got.label_names))

    # -- errors ---------------------------------------------------------------

    def test_wrong_number_of_fields(self):
        path = self.write("a.tsv", "sentence\tlabel\ngood\t1\ntoo\tmany\t1\n")
        self.assert_data_error(path, 3, "expected 2 fields separated by tabs, received: 3")
        path = self.write("b.csv", "sentence,label\ngood,1\nmissing label\n")
        self.assert_data_error(path, 3, "expected 2 fields separated by commas, received: 1")

    def test_line_numbers_count_lines_inside_quoted_fields(self):
        path = self.write("a.csv", 'sentence,label\n"two\nlines",1\n"three\n\nlines",0\n,1\n')
        self.assert_data_error(path, 7, "expected a text in column 0, received: an empty field")

    def test_empty_text_and_missing_label(self):
        path = self.write("a.tsv", "sentence\tlabel\ngood\t1\n  \t0\n")
        self.assert_data_error(path, 3, "expected a text in column 0")
        path = self.write("b.tsv", "sentence\tlabel\ngood\t1\nbad\t\n")
        self.assert_data_error(path, 3, "expected a label in column 1, received: an empty field")

    def test_unknown_label_names_it_and_the_allowed_ones(self):
        path = self.write("dev.tsv", "sentence\tlabel\ngood\t1\nodd\t2\n")
        self.assert_data_error(
            path, 3, "expected a label in ['0', '1'], received: '2'", labels=["0", "1"]
        )

    def test_empty_files(self):
        self.assert_data_error(self.write("a.tsv", ""), None, "an empty file")
        self.assert_data_error(self.write("b.tsv", "\n \n"), None, "an empty file")
        header_only = self.write("c.tsv", "sentence\tlabel\n")
        self.assert_data_error(header_only, None, "at least one row after the header")

    def test_min_classes(self):
        # A training file of one class: before, the recipe's model failed on num_classes=1.
        path = self.write("train.tsv", "sentence\tlabel\ngood\tpositive\nfine\tpositive\n")
        self.assert_data_error(
            path, None, "expected labels of at least 2 classes, received: 1 ('positive' in "
            "all 2 rows)", min_classes=2)
        self.assert_data_error(  # the file's labels count, not the declared ones
            path, None, "received: 1 ('positive' in all 2 rows)", min_classes=2,
            labels=["negative", "positive"])
        self.assertEqual(["positive"], data.read_text_classification(path).label_names)
        two = self.write("two.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
        self.assertEqual(["0", "1"], data.read_text_classification(two, min_classes=2).label_names)
        with self.assertRaisesRegex(ValueError, "min_classes=0"):
            data.read_text_classification(two, min_classes=0)
        with self.assertRaises(data.DataError):
            data.text_classification_dataset(path, min_classes=2)

    def test_blank_line_between_rows(self):
        path = self.write("a.tsv", "sentence\tlabel\ngood\t1\n\nbad\t0\n")
        self.assert_data_error(path, 3, "expected a row, received: a blank line")

    def test_bad_quoting(self):
        path = self.write("a.csv", 'sentence,label\nok,1\n"open quote,1\nnext,0\n')
        self.assert_data_error(path, 3, "expected well-formed fields")
        path = self.write("b.csv", 'sentence,label\n"closed" late,1\n')
        self.assert_data_error(path, 2, "expected well-formed fields")

    def test_not_utf8(self):
        path = self.write("a.tsv", b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n")
        self.assert_data_error(path, 3, "expected UTF-8 text, received: byte 0xe9")

    def test_missing_columns(self):
        path = self.write("a.tsv", "text\tlabel\ngood\t1\n")
        self.assert_data_error(path, 1, "expected one column named 'sentence' (`text_column`)")
        path = self.write("b.tsv", "sentence\tsentence\tlabel\ngood\tx\t1\n")
        self.assert_data_error(path, 1, "more than one such column")
        path = self.write("c.tsv", "good\t1\n")
        self.assert_data_error(
            path,
            1,
            "expected a column 5 (`label_column`",
            text_column=0,
            label_column=5,
            header=False,
        )

    def test_missing_file(self):
        self.assert_data_error(os.path.join(self.folder, "none.tsv"), None, "no such file")

    def test_bad_arguments(self):
        path = self.write("a.tsv", "good\t1\n")
        cases = [
            (dict(path=self.write("a.txt", "x")), "ending in .tsv or .csv"),
            (dict(path=path, header=False), "text_column='sentence'"),
            (dict(path=path, header=False, text_column=0, label_column=0), "different columns"),
            (dict(path=path, header=False, text_column=-1, label_column=1), "text_column=-1"),
            (dict(path=path, delimiter=";;"), "delimiter=';;'"),
            (dict(path=path, quotechar="\t"), "quotechar='\\t'"),
            (dict(path=path, labels=[]), "labels=[]"),
            (dict(path=path, labels=["a", "a"]), "distinct `labels`"),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(ValueError) as context:
                    data.read_text_classification(**kwargs)
                self.assertNotIsInstance(context.exception, data.DataError)
                self.assertIn(message, str(context.exception))

    # -- datasets -------------------------------------------------------------

    def rows_file(self, count=10):
        rows = "".join(f"text {i}\t{i % 2}\n" for i in range(count))
        return self.write("rows.tsv", "sentence\tlabel\n" + rows)

    def test_dataset_batches_and_element_spec(self):
        dataset = data.text_classification_dataset(self.rows_file(), batch_size=4, shuffle=False)
        self.assertEqual(
            (tf.TensorSpec((None,), tf.string), tf.TensorSpec((None,), tf.int32)),
            dataset.element_spec,
        )
        batches = list(dataset.as_numpy_iterator())
        self.assertEqual([4, 4, 2], [len(texts) for texts, _ in batches])
        self.assertEqual(b"text 0", batches[0][0][0])  # file order without shuffling
        self.assertAllEqual([0, 1, 0, 1], batches[0][1])
        dropped = data.text_classification_dataset(
            self.rows_file(), batch_size=4, drop_remainder=True
        )
        self.assertEqual(tf.TensorSpec((4,), tf.int32), dropped.element_spec[1])

    def test_shuffle_is_seeded_and_changes_every_epoch(self):
        def epochs(seed, count=2):
            dataset = data.text_classification_dataset(self.rows_file(), batch_size=3, seed=seed)
            return [
                [text.decode() for texts, _ in dataset.as_numpy_iterator() for text in texts]
                for _ in range(count)
            ]

        first, second = epochs(seed=7)
        self.assertEqual([first, second], epochs(seed=7))
        self.assertNotEqual(first, second)
        self.assertCountEqual([f"text {i}" for i in range(10)], first)
        self.assertNotEqual(first, [f"text {i}" for i in range(10)])

    def test_dataset_with_preprocessor_keeps_text_and_label_aligned(self):
        path = self.write("a.tsv", "sentence\tlabel\ngood good\t1\nbad\t0\ngood\t1\n")
        preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "good", "bad"], sequence_length=3)
        train = data.read_text_classification(path)
        dataset = train.to_dataset(batch_size=2, seed=3, preprocessor=preprocessor)
        self.assertEqual(tf.TensorSpec((None, 3), tf.int32), dataset.element_spec[0]["token_ids"])
        for features, labels in dataset:
            for token_ids, label in zip(features["token_ids"].numpy(), labels.numpy()):
                self.assertEqual(token_ids[0], 2 if label == 1 else 3)

    def test_real_sst2_dev(self):
        if not SST2.is_dir():
            if os.environ.get("CI") == "true":
                self.fail(f"{SST2} is missing; CI must provide ../shared/data")
            raise unittest.SkipTest(f"{SST2} is absent (outside CI)")
        dev = data.read_text_classification(SST2 / "dev.tsv", labels=["0", "1"])
        self.assertLen(dev.texts, 872)
        self.assertEqual({0, 1}, set(dev.labels.tolist()))


class PhraseSplitTest(tf.test.TestCase):
    """`hold_out_sentences` on a hand-made file in SST's layout (sentences and their phrases)."""

    ROWS = (
        ("a gorgeous , witty film", 1),
        ("gorgeous ,", 1),
        ("witty film", 1),
        ("a tired , boring mess", 0),
        ("tired ,", 0),
        ("boring mess", 0),
        ("an honest , moving story", 1),
        ("moving story", 1),
        ("film", 1),  # a phrase of the first sentence only
        ("a dull plot", 0),
    )

    def setUp(self):
        super().setUp()
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.path = os.path.join(folder.name, "train.tsv")
        with open(self.path, "w", encoding="utf-8") as file:
            file.write("sentence\tlabel\n")
            file.writelines(f"{text}\t{label}\n" for text, label in self.ROWS)
        self.rows = data.read_text_classification(self.path)

    def test_sentences_are_the_rows_no_other_row_contains(self):
        self.assertAllEqual([0, 3, 6, 9], data.sentence_rows(self.rows))

    def test_holds_out_whole_sentences_with_their_phrases(self):
        for seed in range(6):
            train, validation = data.hold_out_sentences(self.rows, 2, seed=seed)
            self.assertLen(validation.texts, 2)
            held = set(validation.texts)
            self.assertTrue(held <= {self.ROWS[i][0] for i in (0, 3, 6, 9)})
            for text in train.texts:
                self.assertNotIn(text, held)
                # No training row is a run of words of a held-out sentence.
                for sentence in held:
                    self.assertNotIn(f" {text} ", f" {sentence} ")
            # Every row is in one split, or left out as a held-out sentence's phrase.
            phrases = [t for t, _ in self.ROWS if t not in held and t not in train.texts]
            for phrase in phrases:
                self.assertTrue(any(f" {phrase} " in f" {s} " for s in held), phrase)
            self.assertEqual(self.rows.label_names, validation.label_names)
            labels = dict(self.ROWS)
            self.assertEqual([labels[t] for t in validation.texts], list(validation.labels))

    def test_the_same_seed_gives_the_same_split(self):
        first = data.hold_out_sentences(self.rows, 2, seed=4)[1].texts
        self.assertEqual(first, data.hold_out_sentences(self.rows, 2, seed=4)[1].texts)
        draws = {tuple(data.hold_out_sentences(self.rows, 2, seed=s)[1].texts) for s in range(8)}
        self.assertGreater(len(draws), 1)

    def test_bad_counts(self):
        for count in (0, 4, 10):
            with self.assertRaisesRegex(ValueError, r"expected 0 < count < 4"):
                data.hold_out_sentences(self.rows, count)

    def test_sst2_validation_split(self):
        if not (SST2 / "train.tsv").is_file():
            if os.environ.get("CI") == "true":
                self.fail(f"{SST2 / 'train.tsv'}: the CI needs SST-2")
            self.skipTest(f"{SST2 / 'train.tsv'} is not here (outside CI)")
        rows = data.read_text_classification(SST2 / "train.tsv")
        train, validation = data.hold_out_sentences(rows, 1000, seed=0)
        self.assertLen(validation.texts, 1000)
        self.assertEmpty(set(validation.texts) & set(train.texts))
        self.assertBetween(len(train.texts), 50_000, len(rows.texts) - 1000)
