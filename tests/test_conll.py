"""Tests of kerasattn.data's CoNLL column reader, writer and tag-scheme conversions."""

import itertools
import os
import random
import re
from pathlib import Path

import pytest

from kerasattn import data
from kerasattn.data import conll

CONLL2003 = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"

# CoNLL-2003's layout (token POS chunk NER) with invented sentences, a document
# opening and no blank line after the last sentence.
CONLL2003_STYLE = """\
-DOCSTART- -X- -X- O

Acme NNP B-NP B-ORG
hires VBZ B-VP O
Danish JJ B-NP B-MISC

Ines NNP B-NP B-PER
Ferreira NNP I-NP I-PER

-DOCSTART- -X- -X- O

OSLO NNP B-NP B-LOC
2031-04-09 CD I-NP O"""

# One sentence's entities, (PER 0-2, PER 2-3, LOC 4-5, ORG 5-8), in every scheme.
SAME_ENTITIES = {
    "IOB1": ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "I-ORG"],
    "IOB2": ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG"],
    "IOBES": ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG"],
}
SAME_SPANS = [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5), ("ORG", 5, 8)]


def write(folder: Path, content: str, name: str = "data.txt") -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8"))
    return path


def assert_data_error(path: Path, line: int | None, fragments, **kwargs) -> data.DataError:
    with pytest.raises(data.DataError) as info:
        data.read_conll(path, **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.path, error.line) == (str(path), line)
    where = str(path) if line is None else f"{path}:{line}"
    assert str(error).startswith(f"{where}: "), str(error)
    for fragment in [fragments] if isinstance(fragments, str) else fragments:
        assert fragment in str(error)
    return error


def random_tags(rng: random.Random, vocabulary: list[str], max_length: int = 8) -> list[str]:
    return [rng.choice(vocabulary) for _ in range(rng.randint(0, max_length))]


# -- reading ---------------------------------------------------------------------------------


def test_reads_space_separated_conll2003_layout(tmp_path):
    path = write(tmp_path, CONLL2003_STYLE)
    result = data.read_conll(path)
    assert isinstance(result, data.TaggedSentences)
    assert len(result) == 3
    assert result.tokens == [
        ["Acme", "hires", "Danish"], ["Ines", "Ferreira"], ["OSLO", "2031-04-09"]
    ]
    assert result.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC", "O"]]
    assert result.lines == [3, 7, 12]
    assert result.path == str(path)
    assert (result.scheme, result.source_scheme) == ("IOB2", "IOB2")
    assert result.texts() == ["Acme hires Danish", "Ines Ferreira", "OSLO 2031-04-09"]
    assert result.tag_names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert result.entity_types == ["LOC", "MISC", "ORG", "PER"]


def test_reads_tabs_and_mixed_runs_of_whitespace(tmp_path):
    path = write(tmp_path, "New\tB-LOC\nYork \t  I-LOC  \nis\t\tO\n\nHi O\n")
    result = data.read_conll(path)
    assert result.tokens == [["New", "York", "is"], ["Hi"]]
    assert result.tags == [["B-LOC", "I-LOC", "O"], ["O"]]
    assert result.lines == [1, 5]


def test_crlf_line_ends_and_byte_order_mark(tmp_path):
    path = write(tmp_path, "\ufeffNew B-LOC\r\nYork I-LOC\r\n\r\nHi O\r\n")
    result = data.read_conll(path)
    assert result.tokens == [["New", "York"], ["Hi"]]
    assert result.tags == [["B-LOC", "I-LOC"], ["O"]]


def test_a_token_may_hold_a_no_break_space(tmp_path):
    path = write(tmp_path, "10\u00a0000 O\nEuro B-MISC\n")
    assert data.read_conll(path).tokens == [["10\u00a0000", "Euro"]]


def test_chosen_columns(tmp_path):
    path = write(tmp_path, "1 Acme B-NP B-ORG\n2 hires B-VP O\n")
    assert data.read_conll(path, token_column=1).tokens == [["Acme", "hires"]]
    assert data.read_conll(path, token_column=1).tags == [["B-ORG", "O"]]
    chunks = data.read_conll(path, token_column=-3, tag_column=2)
    assert chunks.tokens == [["Acme", "hires"]]
    assert chunks.tags == [["B-NP", "B-VP"]]
    assert chunks.entity_types == ["NP", "VP"]


def test_docstart_ends_a_sentence_whatever_its_columns(tmp_path):
    path = write(
        tmp_path,
        "-DOCSTART- -X- -X- O\nA B-PER\nB O\n-DOCSTART-\nC B-LOC\n-DOCSTART- O\n\n",
    )
    result = data.read_conll(path)
    assert result.tokens == [["A", "B"], ["C"]]
    assert result.lines == [2, 5]


def test_docstart_in_a_chosen_token_column(tmp_path):
    path = write(tmp_path, "0 -DOCSTART- O\n\n1 Paris B-LOC\n2 is O\n")
    result = data.read_conll(path, token_column=1)
    assert result.tokens == [["Paris", "is"]]
    assert result.lines == [3]


def test_whitespace_only_and_repeated_blank_lines_separate_sentences(tmp_path):
    # WNUT-style files separate sentences with lines of spaces or tabs.
    path = write(tmp_path, "\n \nA O\n\t\n\n  \t \nB B-creative-work\nC I-creative-work\n\n\n")
    result = data.read_conll(path)
    assert result.tokens == [["A"], ["B", "C"]]
    assert result.tags == [["O"], ["B-creative-work", "I-creative-work"]]
    assert result.lines == [3, 7]
    assert result.entity_types == ["creative-work"]


def test_last_sentence_without_a_final_line_end(tmp_path):
    path = write(tmp_path, "A O\n\nB B-PER\nC I-PER")
    result = data.read_conll(path)
    assert result.tokens == [["A"], ["B", "C"]]
    assert result.tags == [["O"], ["B-PER", "I-PER"]]


def test_tag_names_are_ordered_by_type_then_prefix(tmp_path):
    path = write(tmp_path, "a S-ORG\nb B-LOC\nc I-LOC\nd E-LOC\ne S-LOC\nf O\n")
    result = data.read_conll(path, output_scheme="IOBES")
    assert result.tag_names == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "S-ORG"]
    assert result.entity_types == ["LOC", "ORG"]
    # "O" is always tag 0, even where no token has it.
    assert data.read_conll(write(tmp_path, "a B-PER\n", "only.txt")).tag_names == ["O", "B-PER"]


def test_given_tag_names_are_the_results(tmp_path):
    train = data.read_conll(write(tmp_path, CONLL2003_STYLE, "train.txt"))
    valid = data.read_conll(write(tmp_path, "Bonn B-LOC\n", "valid.txt"), tag_names=train.tag_names)
    assert valid.tags == [["B-LOC"]]
    assert valid.tag_names == train.tag_names
    assert valid.entity_types == ["LOC", "MISC", "ORG", "PER"]


# -- errors ----------------------------------------------------------------------------------


def test_wrong_number_of_columns(tmp_path):
    path = write(tmp_path, "-DOCSTART- -X- O\n\nAcme NNP B-ORG\nhires VBZ O\n\nhello O\n")
    assert_data_error(path, 6, ["expected 3 columns (as on line 3)", "received: 2"])


def test_column_out_of_range(tmp_path):
    path = write(tmp_path, "\nAcme B-ORG\n")
    assert_data_error(path, 2, ["column 2 (`tag_column`)", "2 columns"], tag_column=2)
    assert_data_error(path, 2, ["column -3 (`token_column`)"], token_column=-3)
    assert_data_error(path, 2, "different token and tag columns", token_column=1)


@pytest.mark.parametrize(
    "tag, scheme, expected",
    [
        ("X-PER", "auto", "'O', or B-, I-, E-, S- followed by an entity type"),
        ("B-", "auto", "received: 'B-'"),
        ("b-PER", "IOB2", "IOB2 ('O', or B-, I- followed by an entity type)"),
        ("E-PER", "IOB2", "received: 'E-PER'"),
        ("S-PER", "IOB1", "IOB1"),
        ("PER", "IOBES", "IOBES ('O', or B-, I-, E-, S- followed by an entity type)"),
        ("-PER", "auto", "received: '-PER'"),
    ],
)
def test_malformed_tag(tmp_path, tag, scheme, expected):
    path = write(tmp_path, f"A O\n\nB {tag}\n")
    assert_data_error(path, 3, ["expected a tag", expected], scheme=scheme)


@pytest.mark.parametrize(
    "tags, scheme, line, expected",
    [
        (["O", "I-PER"], "IOB2", 2, "expected B-PER or I-PER before I-PER in IOB2, received: 'O'"),
        (["I-PER"], "IOB2", 1, "received: the start of the sentence"),
        (["B-LOC", "I-PER"], "IOB2", 2, "received: 'B-LOC'"),
        (["O", "E-PER"], "IOBES", 2, "before E-PER in IOBES, received: 'O'"),
        (["S-PER", "I-PER", "E-PER"], "IOBES", 2, "before I-PER in IOBES, received: 'S-PER'"),
        (["B-PER", "O"], "IOBES", 1, "expected I-PER or E-PER after B-PER in IOBES"),
        (["B-PER", "I-PER"], "IOBES", 2, "after I-PER in IOBES, received: the end of the sentence"),
        (["B-PER", "S-PER"], "IOBES", 1, "received: 'S-PER'"),
        (["O", "B-PER"], "IOB1", 2, "separates adjacent entities of a type in IOB1, received: 'O'"),
        (["B-PER", "O", "I-LOC"], "auto", 3, "in IOB2 (detected), received: 'O'"),
    ],
)
def test_strict_scheme_errors(tmp_path, tags, scheme, line, expected):
    path = write(tmp_path, "".join(f"t{i} {tag}\n" for i, tag in enumerate(tags)))
    error = assert_data_error(path, line, expected, scheme=scheme)
    assert "strict=False" in str(error)


def test_strict_errors_name_the_line_in_a_later_sentence(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\n\nA B-PER\nB I-PER\n\nC O\nD I-LOC\n")
    assert_data_error(path, 7, "before I-LOC in IOB2")


def test_not_strict_reads_invalid_sequences_as_conlleval(tmp_path):
    path = write(tmp_path, "a O\nb I-PER\nc I-PER\nd B-LOC\ne I-ORG\n")
    result = data.read_conll(path, scheme="IOB2", strict=False)
    assert result.tags == [["O", "B-PER", "I-PER", "B-LOC", "B-ORG"]]
    path = write(tmp_path, "a B-PER\nb O\nc E-LOC\nd I-ORG\n", "iobes.txt")
    result = data.read_conll(path, strict=False, output_scheme="IOBES")
    assert result.source_scheme == "IOBES"
    assert result.tags == [["S-PER", "O", "S-LOC", "S-ORG"]]


def test_tag_outside_tag_names(tmp_path):
    path = write(tmp_path, "Bonn B-LOC\n\nACME B-COMPANY\n")
    assert_data_error(
        path, 3,
        ["expected a tag of `tag_names` (entity types: LOC, PER)", "received: 'B-COMPANY'"],
        tag_names=["O", "B-LOC", "I-LOC", "B-PER", "I-PER"],
    )


def test_tag_outside_tag_names_after_conversion(tmp_path):
    # The training set had no one-token LOC, so no S-LOC.
    path = write(tmp_path, "Bonn B-LOC\n")
    assert_data_error(
        path, 1,
        ["received: 'S-LOC' (read as 'B-LOC' in IOB2 (detected))"],
        output_scheme="IOBES",
        tag_names=["O", "B-LOC", "I-LOC", "E-LOC"],
    )


@pytest.mark.parametrize("content", ["", "\n \n\t\n", "-DOCSTART- -X- -X- O\n\n"])
def test_file_without_sentences(tmp_path, content):
    assert_data_error(write(tmp_path, content), None, "expected sentences of tagged tokens")


def test_missing_file_and_bad_encoding(tmp_path):
    assert_data_error(tmp_path / "absent.txt", None, "no such file")
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"A O\n\nM\xfcnchen B-LOC\n")
    assert_data_error(path, 3, "expected UTF-8 text, received: byte 0xfc")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"scheme": "BIO"}, "`scheme`"),
        ({"output_scheme": "auto"}, "`output_scheme`"),
        ({"token_column": "0"}, "`token_column`"),
        ({"tag_column": True}, "`tag_column`"),
        ({"tag_names": "O"}, "`tag_names`"),
        ({"tag_names": ["O", "O"]}, "distinct"),
        ({"tag_names": ["O", "E-PER"]}, "received: 'E-PER'"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, expected):
    path = write(tmp_path, "A O\n")
    with pytest.raises(ValueError, match=expected) as info:
        data.read_conll(path, **kwargs)
    assert not isinstance(info.value, data.DataError)


# -- scheme detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, detected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], "IOB2"),
        (["I-PER", "I-PER", "O", "I-LOC"], "IOB1"),
        # B- only between adjacent same-type entities: IOB1.
        (["I-PER", "B-PER", "O", "I-LOC", "I-ORG"], "IOB1"),
        # B- after O as well: not IOB1 (and, being invalid IOB2, read leniently below).
        (["I-PER", "O", "B-PER"], "IOB2"),
        (["B-PER", "E-PER", "O", "S-LOC"], "IOBES"),
        (["S-PER"], "IOBES"),
        (["O", "O"], "IOB2"),
    ],
)
def test_scheme_detection(tmp_path, tags, detected):
    path = write(tmp_path, "".join(f"t{i} {tag}\n" for i, tag in enumerate(tags)))
    result = data.read_conll(path, strict=False)
    assert result.source_scheme == detected
    assert result.scheme == "IOB2"


def test_detection_looks_at_the_whole_file(tmp_path):
    # IOB1 only shows in the second sentence; the first is all B-less.
    path = write(tmp_path, "a O\n\nb I-PER\nc B-PER\n\nd I-LOC\n")
    result = data.read_conll(path)
    assert result.source_scheme == "IOB1"
    assert result.tags == [["O"], ["B-PER", "B-PER"], ["B-LOC"]]
    iob1 = data.read_conll(path, output_scheme="IOB1")
    assert iob1.tags == [["O"], ["I-PER", "B-PER"], ["I-LOC"]]


@pytest.mark.parametrize("source", conll.SCHEMES)
@pytest.mark.parametrize("output", conll.SCHEMES)
def test_reads_and_converts_every_scheme(tmp_path, source, output):
    path = write(tmp_path, "".join(f"t{i} {tag}\n" for i, tag in enumerate(SAME_ENTITIES[source])))
    result = data.read_conll(path, output_scheme=output)
    assert result.source_scheme == source
    assert result.scheme == output
    assert result.tags == [SAME_ENTITIES[output]]
    given = data.read_conll(path, scheme=source, output_scheme=output)
    assert given.tags == [SAME_ENTITIES[output]]


# -- conversions and spans -------------------------------------------------------------------


def test_schemes():
    assert data.SCHEMES == ("IOB1", "IOB2", "IOBES")


@pytest.mark.parametrize("source, target", itertools.product(conll.SCHEMES, repeat=2))
def test_convert_tags_every_pair(source, target):
    assert data.convert_tags(SAME_ENTITIES[source], source, target) == SAME_ENTITIES[target]


@pytest.mark.parametrize(
    "iob2, iob1, iobes",
    [
        ([], [], []),
        (["O"], ["O"], ["O"]),
        (["B-X"], ["I-X"], ["S-X"]),
        (["B-X", "B-X", "B-X"], ["I-X", "B-X", "B-X"], ["S-X", "S-X", "S-X"]),
        (["B-X", "B-Y", "B-X"], ["I-X", "I-Y", "I-X"], ["S-X", "S-Y", "S-X"]),
        (["B-X", "I-X", "I-X", "O", "B-X"], ["I-X", "I-X", "I-X", "O", "I-X"],
         ["B-X", "I-X", "E-X", "O", "S-X"]),
        (["B-X", "I-X", "B-X", "I-X"], ["I-X", "I-X", "B-X", "I-X"],
         ["B-X", "E-X", "B-X", "E-X"]),
    ],
)
def test_convert_tags_hand_written(iob2, iob1, iobes):
    sequences = {"IOB1": iob1, "IOB2": iob2, "IOBES": iobes}
    for source, target in itertools.product(conll.SCHEMES, repeat=2):
        assert data.convert_tags(sequences[source], source, target) == sequences[target]


def test_convert_tags_repairs_invalid_sequences():
    assert data.convert_tags(["O", "I-X", "I-Y"], "IOB2", "IOB2") == ["O", "B-X", "B-Y"]
    assert data.convert_tags(["B-X", "O", "E-X"], "IOBES", "IOBES") == ["S-X", "O", "S-X"]
    assert data.convert_tags(["O", "B-X", "I-X"], "IOB1", "IOB1") == ["O", "I-X", "I-X"]


def test_round_trips_of_random_valid_sequences():
    rng = random.Random(0)
    vocabulary = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    for _ in range(2000):
        # Any IOB2 sequence read leniently gives a valid one in each scheme.
        tags = random_tags(rng, vocabulary)
        valid = {scheme: data.convert_tags(tags, "IOB2", scheme) for scheme in conll.SCHEMES}
        for source, target in itertools.product(conll.SCHEMES, repeat=2):
            converted = data.convert_tags(valid[source], source, target)
            assert converted == valid[target]
            assert data.convert_tags(converted, target, source) == valid[source]


@pytest.mark.parametrize("scheme", conll.SCHEMES)
def test_strict_validity_is_exactly_a_lossless_round_trip(tmp_path, scheme):
    # A sequence passes strict reading exactly when converting it to its own scheme
    # leaves it unchanged.
    rng = random.Random(1)
    vocabulary = ["O"] + [f"{prefix}-{kind}" for prefix in conll._PREFIXES[scheme] for kind in "XY"]
    for index in range(300):
        tags = random_tags(rng, vocabulary, max_length=6) + ["O"]
        path = write(tmp_path, "".join(f"t {tag}\n" for tag in tags), f"{index}.txt")
        try:
            data.read_conll(path, scheme=scheme, output_scheme=scheme)
            valid = True
        except data.DataError:
            valid = False
        assert valid == (data.convert_tags(tags, scheme, scheme) == tags), tags


def test_convert_tags_rejects_bad_tags_and_schemes():
    with pytest.raises(ValueError, match="received: 'E-X' at index 1"):
        data.convert_tags(["O", "E-X"], "IOB2", "IOBES")
    with pytest.raises(ValueError, match="received: 'X' at index 0"):
        data.convert_tags(["X"], "IOBES", "IOB2")
    with pytest.raises(ValueError, match="`target`"):
        data.convert_tags(["O"], "IOB2", "BIO")
    with pytest.raises(ValueError, match="`source`"):
        data.convert_tags(["O"], "auto", "IOB2")


@pytest.mark.parametrize("scheme", conll.SCHEMES)
def test_entity_spans_of_each_scheme(scheme):
    assert data.entity_spans(SAME_ENTITIES[scheme], scheme) == SAME_SPANS


def test_entity_spans_hand_written():
    assert data.entity_spans([]) == []
    assert data.entity_spans(["O", "O"]) == []
    assert data.entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert data.entity_spans(["B-creative-work", "I-creative-work"]) == [("creative-work", 0, 2)]
    # Invalid IOB2, read as conlleval does: an I- that continues nothing starts an entity.
    assert data.entity_spans(["O", "I-PER", "I-PER", "I-LOC", "B-LOC"]) == [
        ("PER", 1, 3), ("LOC", 3, 4), ("LOC", 4, 5)
    ]
    assert data.entity_spans(["B-X", "E-X", "E-X", "I-X"], "IOBES") == [
        ("X", 0, 2), ("X", 2, 3), ("X", 3, 4)
    ]


def test_entity_spans_read_like_seqeval():
    get_entities = pytest.importorskip("seqeval.metrics.sequence_labeling").get_entities
    rng = random.Random(2)
    vocabulary = ["O"] + [f"{prefix}-{kind}" for prefix in "BIES" for kind in "XY"]
    for _ in range(3000):
        tags = random_tags(rng, vocabulary)
        expected = [(kind, start, end + 1) for kind, start, end in get_entities(tags)]
        assert data.entity_spans(tags, "IOBES") == expected, tags


# -- writing ---------------------------------------------------------------------------------


def test_write_and_read_back(tmp_path):
    original = data.read_conll(write(tmp_path, CONLL2003_STYLE))
    path = tmp_path / "out.txt"
    data.write_conll(path, original)
    assert path.read_text(encoding="utf-8") == (
        "Acme B-ORG\nhires O\nDanish B-MISC\n\nInes B-PER\nFerreira I-PER\n\n"
        "OSLO B-LOC\n2031-04-09 O\n\n"
    )
    again = data.read_conll(path)
    assert (again.tokens, again.tags) == (original.tokens, original.tags)
    assert again.lines == [1, 5, 8]
    assert sorted(os.listdir(tmp_path)) == ["data.txt", "out.txt"]


def test_write_with_predictions(tmp_path):
    path = tmp_path / "predictions.txt"
    tokens = [["Ines", "Ferreira"], ["Bonn"]]
    tags = [["B-PER", "I-PER"], ["B-LOC"]]
    data.write_conll(path, (tokens, tags), predicted=[["B-PER", "O"], ["B-ORG"]])
    assert path.read_text() == "Ines B-PER B-PER\nFerreira I-PER O\n\nBonn B-LOC B-ORG\n\n"
    assert data.read_conll(path, tag_column=1).tags == [["B-PER", "I-PER"], ["B-LOC"]]
    assert data.read_conll(path).tags == [["B-PER", "O"], ["B-ORG"]]


def test_write_replaces_a_file(tmp_path):
    path = write(tmp_path, "old O\n", "out.txt")
    data.write_conll(path, ([["new"]], [["O"]]))
    assert path.read_text() == "new O\n\n"


@pytest.mark.parametrize(
    "sentences, predicted, expected",
    [
        (([["a", "b"]], [["O"]]), None, "Expected 2 `tags` in sentence 0"),
        (([["a"]], [["O"], ["O"]]), None, "Expected 1 sentences of `tags`"),
        (([["a b"]], [["O"]]), None, "received: 'a b' in sentence 0"),
        (([["a"]], [[""]]), None, "`tags` to be non-empty strings"),
        (([[]], [[]]), None, "none in sentence 0"),
        (([["a"]], [["O"]]), [["O", "O"]], "`predicted` in sentence 0"),
        ("a O", None, "TaggedSentences or a (tokens, tags) pair"),
    ],
)
def test_write_rejects_what_would_not_read_back(tmp_path, sentences, predicted, expected):
    path = tmp_path / "out.txt"
    with pytest.raises(ValueError, match=re.escape(expected)):
        data.write_conll(path, sentences, predicted=predicted)
    assert os.listdir(tmp_path) == []


# -- the real CoNLL-2003 files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def conll2003():
    if not (CONLL2003 / "train.txt").is_file() or not (CONLL2003 / "valid.txt").is_file():
        pytest.skip(f"no CoNLL-2003 data in {CONLL2003}")
    train = data.read_conll(CONLL2003 / "train.txt")
    valid = data.read_conll(CONLL2003 / "valid.txt", tag_names=train.tag_names)
    return train, valid


def test_conll2003_counts(conll2003):
    train, valid = conll2003
    assert (len(train), sum(map(len, train.tokens))) == (14041, 203621)
    assert (len(valid), sum(map(len, valid.tokens))) == (3250, 51362)
    assert (train.source_scheme, valid.source_scheme) == ("IOB2", "IOB2")
    assert train.tag_names == [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"
    ]
    assert train.entity_types == ["LOC", "MISC", "ORG", "PER"]
    assert train.tokens[0][:3] == ["EU", "rejects", "German"]
    assert train.tags[0][:3] == ["B-ORG", "O", "B-MISC"]
    assert train.lines[:2] == [3, 13]


def test_conll2003_round_trips(conll2003):
    train, _ = conll2003
    for tags in train.tags:
        converted = {scheme: data.convert_tags(tags, "IOB2", scheme) for scheme in conll.SCHEMES}
        assert converted["IOB2"] == tags
        for source, target in itertools.product(conll.SCHEMES, repeat=2):
            assert data.convert_tags(converted[source], source, target) == converted[target]
