"""Tests of kerasattn.data's parallel-text reader and writer."""

import os
import tempfile

import tensorflow as tf

from kerasattn import data

SOURCES = ["A dog runs.", "Two men, one café.", "Ein Fluss?"]
TARGETS = ["Ein Hund rennt.", "Zwei Männer, ein Café.", "Über den Fluss!"]


class ParallelTextTest(tf.test.TestCase):
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

    def aligned(self, sources: str, targets: str) -> tuple[str, str]:
        return self.write("train.en", sources), self.write("train.de", targets)

    def assert_data_error(self, paths, path: str, line: int | None, fragment: str):
        with self.assertRaises(data.DataError) as context:
            data.read_parallel_text(*paths)
        error = context.exception
        self.assertIsInstance(error, ValueError)
        self.assertEqual((path, line), (error.path, error.line))
        where = path if line is None else f"{path}:{line}"
        self.assertTrue(str(error).startswith(f"{where}: "), str(error))
        self.assertIn(fragment, str(error))

    # -- reading --------------------------------------------------------------

    def test_aligned_files(self):
        # CRLF line ends, a byte-order mark, no final newline, surrounding spaces.
        paths = self.aligned(
            "\ufeff" + "\r\n".join(SOURCES) + "\r\n",
            "  " + "\n".join(TARGETS),
        )
        pairs = data.read_parallel_text(*paths)
        self.assertEqual(data.ParallelText(SOURCES, TARGETS), pairs)

    def test_only_newline_ends_a_line(self):
        paths = self.aligned("a\u2028b\x0cc\n", "d\x1ee\n")
        self.assertEqual((["a\u2028b\x0cc"], ["d\x1ee"]), tuple(data.read_parallel_text(*paths)))

    def test_tsv(self):
        rows = "".join(f"{s}\t{t}\n" for s, t in zip(SOURCES, TARGETS))
        quoted = 'He said "hi".\tEr sagte "hi".\n'
        path = self.write("pairs.tsv", "source\ttarget\n" + rows + quoted)
        pairs = data.read_parallel_text(path)
        self.assertEqual(SOURCES + ['He said "hi".'], pairs.sources)
        self.assertEqual(TARGETS + ['Er sagte "hi".'], pairs.targets)

    def test_write_then_read(self):
        path = os.path.join(self.folder, "out.tsv")
        data.write_parallel_tsv((SOURCES, TARGETS), path)
        self.assertEqual((SOURCES, TARGETS), tuple(data.read_parallel_text(path)))
        with open(path, encoding="utf-8") as file:
            self.assertEqual("source\ttarget\n", file.readline())
        self.assertEqual(["out.tsv"], os.listdir(self.folder))  # no temporary left

    def test_write_rejects_what_cannot_round_trip(self):
        path = os.path.join(self.folder, "out.tsv")
        for sources, fragment in (
            (["a\tb"], r"sources\[0\]='a\\tb'"),
            (["a\nb"], r"sources\[0\]='a\\nb'"),
            ([" a"], r"sources\[0\]=' a'"),
            ([""], r"sources\[0\]=''"),
            ([3], r"sources\[0\]=3"),
        ):
            with self.assertRaisesRegex(ValueError, "Expected `sources` to hold non-empty " + ".*"
                                        + fragment):
                data.write_parallel_tsv((sources, ["x"]), path)
        with self.assertRaisesRegex(ValueError, "received: 1 sources and 2 targets"):
            data.write_parallel_tsv((["a"], ["b", "c"]), path)
        self.assertFalse(os.path.exists(path))

    def test_to_dataset(self):
        pairs = data.ParallelText(SOURCES, TARGETS)
        batches = list(pairs.to_dataset(batch_size=2, shuffle=False))
        self.assertEqual([2, 1], [len(sources) for sources, _ in batches])
        self.assertEqual(
            [s.encode() for s in SOURCES], [s for b, _ in batches for s in b.numpy()]
        )
        self.assertEqual(
            [t.encode() for t in TARGETS], [t for _, b in batches for t in b.numpy()]
        )
        shuffled = pairs.to_dataset(batch_size=3, seed=4)
        for sources, targets in shuffled:
            # A shuffle keeps each pair together.
            order = [SOURCES.index(s.decode()) for s in sources.numpy()]
            self.assertEqual([TARGETS[i].encode() for i in order], list(targets.numpy()))

    def test_to_dataset_preprocessor_and_checks(self):
        pairs = data.ParallelText(SOURCES, TARGETS)
        dataset = pairs.to_dataset(
            batch_size=2,
            shuffle=False,
            drop_remainder=True,
            preprocessor=lambda s, t: (tf.strings.length(s), tf.strings.length(t)),
        )
        (lengths, target_lengths), = list(dataset)
        self.assertAllEqual([len(s.encode()) for s in SOURCES[:2]], lengths)
        self.assertAllEqual([len(t.encode()) for t in TARGETS[:2]], target_lengths)
        for batch_size in (0, 1.5, True):
            with self.assertRaisesRegex(ValueError, "Expected `batch_size` to be a positive"):
                pairs.to_dataset(batch_size=batch_size)

    # -- errors ---------------------------------------------------------------

    def test_unequal_line_counts(self):
        source, target = self.aligned("a\nb\nc\n", "x\ny\n")
        self.assert_data_error(
            (source, target), target, 3,
            f"expected a sentence aligned with {source}:3, received: the end of the file "
            f"(2 lines here, 3 in {source})",
        )
        source, target = self.aligned("a\n", "x\ny\n")
        self.assert_data_error((source, target), source, 2, f"aligned with {target}:2")

    def test_empty_lines(self):
        source, target = self.aligned("a\n \nc\n", "x\ny\nz\n")
        self.assert_data_error(
            (source, target), source, 2, "expected a sentence, received: an empty line"
        )
        source, target = self.aligned("a\nb\n", "x\n\n")  # a trailing blank line
        self.assert_data_error((source, target), target, 2, "an empty line")
        source, target = self.aligned("", "")
        self.assert_data_error(
            (source, target), source, None, "expected one sentence a line, received: an empty file"
        )

    def test_bad_encoding(self):
        source, target = self.aligned("a\nb\n", b"x\ny\xfc\n")
        self.assert_data_error(
            (source, target), target, 2, "expected UTF-8 text, received: byte 0xfc"
        )
        path = self.write("latin1.tsv", "source\ttarget\nM\u00e4dchen\tgirl\n".encode("latin-1"))
        self.assert_data_error((path,), path, 2, "byte 0xe4")

    def test_missing_file(self):
        source = self.write("train.en", "a\n")
        missing = os.path.join(self.folder, "train.de")
        self.assert_data_error((source, missing), missing, None, "no such file")

    def test_tsv_wrong_column_count(self):
        path = self.write("pairs.tsv", "source\ttarget\na\tb\nc\td\te\n")
        self.assert_data_error(
            (path,), path, 3,
            "expected 2 fields separated by a tab (source, target), received: 3",
        )
        path = self.write("pairs.tsv", "source\ttarget\nno tab here\n")
        self.assert_data_error((path,), path, 2, "received: 1")

    def test_tsv_wrong_header(self):
        for header in ("target\tsource", "source\ttarget\textra", "en\tde", "A dog.\tEin Hund."):
            path = self.write("pairs.tsv", f"{header}\na\tb\n")
            self.assert_data_error(
                (path,), path, 1, f"expected the header 'source\\ttarget', received: {header!r}"
            )

    def test_tsv_empty_fields_and_rows(self):
        path = self.write("pairs.tsv", "source\ttarget\na\tb\n\n")
        self.assert_data_error((path,), path, 3, "expected a row, received: an empty line")
        path = self.write("pairs.tsv", "source\ttarget\n \tb\n")
        self.assert_data_error(
            (path,), path, 2, "expected a source sentence in field 1, received: an empty field"
        )
        path = self.write("pairs.tsv", "source\ttarget\na\t\n")
        self.assert_data_error((path,), path, 2, "expected a target sentence in field 2")
        path = self.write("pairs.tsv", "source\ttarget\n")
        self.assert_data_error(
            (path,), path, None, "expected at least one row after the header, received: none"
        )
