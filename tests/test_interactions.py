"""Tests of kerasattn.data's interaction-log readers, leave-one-out split and training data."""

from pathlib import Path

import numpy as np
import pytest

from kerasattn.data.errors import DataError
from kerasattn.data.interactions import MOVIELENS_GENRES
from kerasattn.data.interactions import Interactions
from kerasattn.data.interactions import leave_one_out
from kerasattn.data.interactions import pad_histories
from kerasattn.data.interactions import read_interactions
from kerasattn.data.interactions import read_movielens_side_features
from kerasattn.data.interactions import training_sequences

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(folder: Path, content: str | bytes, name: str = "log.txt") -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_data_error(path: Path, line: int | None, fragment: str, **kwargs) -> None:
    with pytest.raises(DataError) as info:
        read_interactions(path, **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.path, error.line) == (str(path), line)
    where = str(path) if line is None else f"{path}:{line}"
    assert str(error).startswith(f"{where}: "), str(error)
    assert fragment in str(error), str(error)


def as_lists(interactions: Interactions) -> dict[str, list[str]]:
    """Each user's items as file labels, to compare with the file by eye."""
    return {
        user: [interactions.item_ids[i - 1] for i in sequence]
        for user, sequence in zip(interactions.user_ids, interactions.sequences)
    }


# -- reading ------------------------------------------------------------------


def test_pairs_keep_file_order_per_user_and_numeric_item_order(tmp_path):
    # Users interleaved; items 10 and 9 must sort by value (9 before 10).
    path = write(tmp_path, "2 10\n1 3\n2 9\n1 10\n2 3\n\n\n")
    interactions = read_interactions(path)
    assert interactions.user_ids == ["1", "2"]
    assert interactions.item_ids == ["3", "9", "10"]
    assert as_lists(interactions) == {"1": ["3", "10"], "2": ["10", "9", "3"]}
    assert [s.tolist() for s in interactions.sequences] == [[1, 3], [3, 2, 1]]
    assert all(s.dtype == np.int32 for s in interactions.sequences)
    assert (interactions.num_users, interactions.num_items, interactions.num_interactions) == (
        2, 3, 5)
    assert interactions.path == str(path)


def test_integer_items_one_to_n_keep_their_ids(tmp_path):
    path = write(tmp_path, "1 2\n1 1\n2 3\n")
    interactions = read_interactions(path)
    assert interactions.item_ids == ["1", "2", "3"]
    assert [s.tolist() for s in interactions.sequences] == [[2, 1], [3]]


def test_text_labels_sort_as_text(tmp_path):
    path = write(tmp_path, "bob B0X\nann A07\nbob A07\n")
    interactions = read_interactions(path)
    assert interactions.user_ids == ["ann", "bob"]
    assert interactions.item_ids == ["A07", "B0X"]
    assert as_lists(interactions) == {"ann": ["A07"], "bob": ["B0X", "A07"]}


def test_movielens_sorted_by_time_with_ties_in_file_order(tmp_path):
    path = write(
        tmp_path,
        "1\t20\t5\t300\n"
        "1\t10\t3\t100\n"
        "2\t30\t1\t50\n"
        "1\t40\t4\t200\n"
        "1\t50\t2\t200\n"  # same time as item 40: stays after it
        "1 60 2 200\n",  # spaces are fine too
    )
    interactions = read_interactions(path)
    assert as_lists(interactions) == {"1": ["10", "40", "50", "60", "20"], "2": ["30"]}


def test_per_user_lines(tmp_path):
    path = write(tmp_path, "u1 5 6 7\nu2 7\n")
    interactions = read_interactions(path, format="per_user")
    assert as_lists(interactions) == {"u1": ["5", "6", "7"], "u2": ["7"]}


def test_auto_detects_from_the_first_line(tmp_path):
    pairs = read_interactions(write(tmp_path, "1 2\n1 3\n", "a.txt"))
    assert as_lists(pairs) == {"1": ["2", "3"]}
    movielens = read_interactions(write(tmp_path, "1 2 5 9\n1 3 5 8\n", "b.txt"))
    assert as_lists(movielens) == {"1": ["3", "2"]}
    per_user = read_interactions(write(tmp_path, "1 2 3\n2 4 5 6 7\n", "c.txt"))
    assert as_lists(per_user) == {"1": ["2", "3"], "2": ["4", "5", "6", "7"]}


def test_remap_false_keeps_the_ids_and_the_catalogue(tmp_path):
    path = write(tmp_path, "1 7\n1 2\n2 7\n")
    interactions = read_interactions(path, remap=False)
    assert [s.tolist() for s in interactions.sequences] == [[7, 2], [7]]
    assert interactions.num_items == 7
    assert interactions.item_ids == [str(i) for i in range(1, 8)]


def test_k_core_drops_until_stable(tmp_path):
    # min_count=2: item 9 (once) goes first, which leaves user 3 with one
    # interaction, so user 3 goes, which leaves item 5 with one: it goes too.
    path = write(tmp_path, "1 1\n1 2\n2 1\n2 2\n3 5\n3 9\n4 5\n4 1\n4 2\n")
    interactions = read_interactions(path, min_count=2)
    assert as_lists(interactions) == {"1": ["1", "2"], "2": ["1", "2"], "4": ["1", "2"]}
    assert interactions.item_ids == ["1", "2"]
    assert [s.tolist() for s in interactions.sequences] == [[1, 2], [1, 2], [1, 2]]
    # Without remapping, ids and catalogue stay the file's.
    unmapped = read_interactions(path, min_count=2, remap=False)
    assert unmapped.num_items == 9
    assert [s.tolist() for s in unmapped.sequences] == [[1, 2], [1, 2], [1, 2]]


def test_k_core_renumbers_kept_items_in_order(tmp_path):
    path = write(tmp_path, "1 1\n1 3\n2 1\n2 3\n3 2\n")
    interactions = read_interactions(path, min_count=2)
    assert interactions.item_ids == ["1", "3"]
    assert [s.tolist() for s in interactions.sequences] == [[1, 2], [1, 2]]


# -- errors -------------------------------------------------------------------


def test_missing_and_empty_files(tmp_path):
    assert_data_error(tmp_path / "absent.txt", None, "no such file")
    assert_data_error(write(tmp_path, ""), None, "empty file")
    assert_data_error(write(tmp_path, "\n \n", "blank.txt"), None, "empty file")


def test_wrong_field_counts_name_the_line(tmp_path):
    assert_data_error(write(tmp_path, "1 2\n1 2 3\n"), 2, "expected 2 fields (user item)")
    assert_data_error(
        write(tmp_path, "1 2 5 9\n1 2 5\n"), 2, "expected 4 fields (user item rating timestamp)"
    )
    assert_data_error(
        write(tmp_path, "1 2 3\n1\n"), 2, "expected a user and at least one item",
        format="per_user",
    )
    assert_data_error(write(tmp_path, "1 2\n1 2 3 4\n"), 2, "received: 4", format="pairs")


def test_movielens_ratings_and_timestamps_are_integers(tmp_path):
    assert_data_error(write(tmp_path, "1 2 5 9\n1 3 4.5 9\n"), 2, "integer rating, received: '4.5'")
    assert_data_error(write(tmp_path, "1 2 5 9\n1 3 4 soon\n"), 2, "integer timestamp")


def test_blank_line_between_rows_and_bad_encoding(tmp_path):
    assert_data_error(write(tmp_path, "1 2\n\n1 3\n"), 2, "a blank line")
    assert_data_error(write(tmp_path, b"1 2\n1 \xff\n"), 2, "expected UTF-8")


def test_per_user_twice_is_an_error(tmp_path):
    path = write(tmp_path, "a 1 2\nb 3\na 4\n")
    assert_data_error(path, 3, "user 'a' again (first on line 1)", format="per_user")


def test_remap_false_needs_positive_integer_items(tmp_path):
    assert_data_error(write(tmp_path, "1 2\n1 x\n"), 2, "expected an item id", remap=False)
    assert_data_error(write(tmp_path, "1 2\n1 0\n"), 2, "received: '0'", remap=False)


def test_k_core_leaving_nothing_is_an_error(tmp_path):
    assert_data_error(write(tmp_path, "1 1\n2 2\n"), None, "min_count=2", min_count=2)


def test_invalid_arguments(tmp_path):
    path = write(tmp_path, "1 2\n")
    with pytest.raises(ValueError, match="format"):
        read_interactions(path, format="csv")
    with pytest.raises(ValueError, match="min_count"):
        read_interactions(path, min_count=0)


# -- the split and the training data -------------------------------------------


def test_leave_one_out_by_hand(tmp_path):
    path = write(tmp_path, "a 1 2 3 4 5\nb 6 7\nc 3 1 2\n", "users.txt")
    split = leave_one_out(read_interactions(path, format="per_user"))
    # Item labels 1..7 keep their ids. User b (2 items) trains on both and
    # is not evaluated, as in SASRec.
    assert [s.tolist() for s in split.train] == [[1, 2, 3], [6, 7], [3]]
    assert split.users.tolist() == [0, 2]
    assert [s.tolist() for s in split.valid_history] == [[1, 2, 3], [3]]
    assert split.valid_target.tolist() == [4, 1]
    assert [s.tolist() for s in split.test_history] == [[1, 2, 3, 4], [3, 1]]
    assert split.test_target.tolist() == [5, 2]
    assert split.valid_target.dtype == split.test_target.dtype == np.int32


def test_leave_one_out_of_plain_sequences():
    split = leave_one_out([np.array([4, 5, 6], np.int32), np.array([1], np.int32)])
    assert [s.tolist() for s in split.train] == [[4], [1]]
    assert (split.valid_target.tolist(), split.test_target.tolist()) == ([5], [6])


def test_pad_histories_keeps_the_last_items_on_the_right():
    padded = pad_histories([np.array([1, 2, 3, 4]), np.array([5]), np.array([], np.int32)], 3)
    assert padded.dtype == np.int32
    assert padded.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
    with pytest.raises(ValueError, match="max_length"):
        pad_histories([np.array([1])], 0)


def test_training_sequences_shift_and_pad():
    sequences = [np.array([1, 2, 3, 4, 5], np.int32), np.array([6, 7], np.int32),
                 np.array([8], np.int32), np.array([9, 1, 2], np.int32)]
    dataset = training_sequences(sequences, max_length=3, batch_size=2, shuffle=False)
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]
    # User [8] has no (input, next item) pair and is left out; the last
    # batch keeps its one example.
    assert [len(x) for x, _ in batches] == [2, 1]
    inputs = np.concatenate([x for x, _ in batches])
    positives = np.concatenate([y for _, y in batches])
    assert inputs.dtype == positives.dtype == np.int32
    assert inputs.tolist() == [[2, 3, 4], [0, 0, 6], [0, 9, 1]]
    assert positives.tolist() == [[3, 4, 5], [0, 0, 7], [0, 1, 2]]


def test_training_sequences_shuffle_each_epoch_with_a_seed():
    sequences = [np.array([i, i + 1], np.int32) for i in range(1, 40)]

    def epochs(seed):
        dataset = training_sequences(sequences, max_length=2, batch_size=8, seed=seed)
        return [np.concatenate([x.numpy()[:, -1] for x, _ in dataset]).tolist()
                for _ in range(2)]

    first, second = epochs(3)
    assert sorted(first) == list(range(1, 40))
    assert first != second
    assert epochs(3) == [first, second]
    with pytest.raises(ValueError, match="at least one sequence"):
        training_sequences([np.array([1], np.int32)], max_length=2, batch_size=1)


def test_training_sequences_sorted_by_length():
    rng = np.random.default_rng(0)
    sequences = [np.arange(1, n + 1, dtype=np.int32) + 100 * u
                 for u, n in enumerate(rng.integers(2, 12, 37))]
    full = training_sequences(sequences, max_length=6, batch_size=5, shuffle=False)
    full_inputs = np.concatenate([x.numpy() for x, _ in full])
    full_positives = np.concatenate([y.numpy() for _, y in full])
    dataset = training_sequences(sequences, max_length=6, batch_size=5, seed=4,
                                 sort_by_length=True)
    lengths = np.count_nonzero(full_inputs, axis=1)
    budget = 5 * lengths.mean()  # positions a batch: 5 users of average length
    batches = int(dataset.cardinality())
    assert batches == int(np.ceil(lengths.sum() / budget))

    def epoch():
        return [(x.numpy(), y.numpy()) for x, y in dataset]

    first, second = epoch(), epoch()
    for batches in (first, second):
        assert len(batches) == int(dataset.cardinality())
        seen = []
        for inputs, positives in batches:
            lengths = np.count_nonzero(inputs, axis=1)
            # Cut to the longest history: only left padding went.
            assert inputs.shape[1] == lengths.max() == np.count_nonzero(positives, 1).max()
            # About `budget` positions a batch: short users come in larger batches.
            assert lengths.sum() < budget + 6
            for row_inputs, row_positives in zip(inputs, positives):
                user = (row_positives[-1] - 1) // 100
                width = inputs.shape[1]
                assert np.array_equal(full_inputs[user, -width:], row_inputs)
                assert np.array_equal(full_positives[user, -width:], row_positives)
                assert not full_inputs[user, :-width].any()
                seen.append(user)
        # Every user once an epoch.
        assert sorted(seen) == list(range(37))
    # Users of like lengths share a batch: no length lies strictly inside
    # another batch's range, and the batches hold far less padding.
    ranges = [(np.count_nonzero(x, 1).min(), np.count_nonzero(x, 1).max()) for x, _ in first]
    for low, high in ranges:
        assert not any(low < other_low < high or low < other_high < high
                       for other_low, other_high in ranges)
    total_width = sum(x.shape[1] * len(x) for x, _ in first)
    assert total_width < full_inputs.size * 0.9
    assert [x.tolist() for x, _ in first] != [x.tolist() for x, _ in second]
    again = training_sequences(sequences, max_length=6, batch_size=5, seed=4,
                               sort_by_length=True)
    assert [x.numpy().tolist() for x, _ in again] == [x.tolist() for x, _ in first]


# -- MovieLens side features ----------------------------------------------------


def genre_flags(*on: int) -> str:
    return "|".join("1" if g in on else "0" for g in range(len(MOVIELENS_GENRES)))


def movielens_folder(tmp_path: Path, item_lines: list[str], user_lines: list[str]) -> Path:
    write(tmp_path, "1\t20\t5\t1\n2\t10\t3\t2\n1\t10\t4\t3\n", "u.data")
    write(tmp_path, "\n".join(item_lines).encode("latin-1") + b"\n", "u.item")
    write(tmp_path, "\n".join(user_lines) + "\n", "u.user")
    return tmp_path


def test_side_features_align_with_the_ids(tmp_path):
    folder = movielens_folder(
        tmp_path,
        [
            f"20|Caf\xe9 (1995)|01-Jan-1995||http://x|{genre_flags(1, 5)}",
            f"10|Heat (1995)|01-Jan-1995||http://y|{genre_flags(0)}",
            f"30|Unused (1990)|||http://z|{genre_flags(2)}",
        ],
        ["2|53|F|other|94043", "1|24|M|technician|85711", "3|20|M|writer|00000"],
    )
    interactions = read_interactions(folder / "u.data")
    assert interactions.item_ids == ["10", "20"]
    features = read_movielens_side_features(folder, interactions)
    assert features["titles"] == ["", "Heat (1995)", "Caf\xe9 (1995)"]
    assert features["genres"].shape == (3, 19)
    assert features["genres"][0].sum() == 0
    assert np.flatnonzero(features["genres"][1]).tolist() == [0]
    assert np.flatnonzero(features["genres"][2]).tolist() == [1, 5]
    assert features["genre_names"][:2] == ["unknown", "Action"]
    assert features["ages"].tolist() == [24, 53]
    assert features["genders"] == ["M", "F"]
    assert features["occupations"] == ["technician", "other"]


def test_side_feature_errors_name_file_and_line(tmp_path):
    good_items = [f"10|A|||u|{genre_flags()}", f"20|B|||u|{genre_flags()}"]
    good_users = ["1|24|M|technician|1", "2|53|F|other|2"]

    def check(items, users, name, line, fragment):
        folder = movielens_folder(tmp_path, items, users)
        interactions = read_interactions(folder / "u.data")
        with pytest.raises(DataError) as info:
            read_movielens_side_features(folder, interactions)
        assert (info.value.path, info.value.line) == (str(folder / name), line)
        assert fragment in str(info.value), str(info.value)

    check([good_items[0], "20|B|||u|0|1"], good_users, "u.item", 2, "expected 24 fields")
    check([good_items[0], f"20|B|||u|{genre_flags()[:-1]}2"], good_users, "u.item", 2,
          "genre flags 0 or 1")
    check(good_items + [f"10|C|||u|{genre_flags()}"], good_users, "u.item", 3, "item '10' again")
    check(good_items[:1], good_users, "u.item", None, "none for 1 (first '20')")
    check(good_items, ["1|old|M|x|1", good_users[1]], "u.user", 1, "integer age")
    check(good_items, ["1|24|M|x"], "u.user", 1, "expected 5 fields")


# -- the real files, when present ------------------------------------------------


@pytest.mark.skipif(not (SHARED / "sasrec" / "Video.txt").is_file(), reason="no shared data")
def test_video_games_counts():
    interactions = read_interactions(SHARED / "sasrec" / "Video.txt")
    assert (interactions.num_users, interactions.num_items, interactions.num_interactions) == (
        31013, 23715, 287107)
    # Items 1..23715 all occur, so the ids are the file's.
    assert interactions.item_ids == [str(i) for i in range(1, 23716)]
    assert interactions.user_ids[:2] == ["1", "2"]
    split = leave_one_out(interactions)
    assert sum(len(s) for s in split.train) + 2 * len(split.users) == 287107


@pytest.mark.skipif(not (SHARED / "ml-100k" / "u.data").is_file(), reason="no shared data")
def test_movielens_100k_counts_and_side_features():
    interactions = read_interactions(SHARED / "ml-100k" / "u.data")
    assert (interactions.num_users, interactions.num_items, interactions.num_interactions) == (
        943, 1682, 100000)
    features = read_movielens_side_features(SHARED / "ml-100k", interactions)
    assert features["titles"][1] == "Toy Story (1995)"
    assert features["genres"].shape == (1683, 19)
    assert (features["ages"][0], features["genders"][0]) == (24, "M")
