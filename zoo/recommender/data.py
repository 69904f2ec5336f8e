"""The recommender's data: reading a log, batches for both tasks, and their evaluation.

A log is a SASRec-format file (`user item` per line, each user's lines in
time order; any Amazon category of the SASRec repository) or a MovieLens
folder (`u.data`, with `u.item` / `u.user` side features when present).
Every user is split as SASRec does (`kerasattn.data.leave_one_out`): the
last item is the test target, the one before it the validation target.

Evaluation covers every evaluated user, batched: the retriever under both
protocols of `zoo.recommender.ranking` (100 sampled negatives that the user
never touched, and the full catalogue less the user's earlier items), the
candidate scorer on the target among the same 100 negatives (AUC, HR@10,
NDCG@10). Validation and test use fixed negatives (seeds `VALID_SEED` and
`TEST_SEED`), so every epoch and every run is scored on the same draws.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from kerasattn import data as kdata
from zoo.recommender import ranking

VALID_SEED = 11
TEST_SEED = 12
EVAL_NEGATIVES = 100
K = 10
# MovieLens 100K age buckets (the ML-1M ones): <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
GENDERS = ("M", "F")


@dataclasses.dataclass(eq=False)
class RecommenderData:
    """A log read and split, with its optional side features.

    Attributes:
        interactions: the `kerasattn.data.Interactions` read.
        split: its `leave_one_out` split.
        side: `read_movielens_side_features`'s dict for a MovieLens folder
            with `u.item` and `u.user`, else `None`.
        user_features: int32 `(num_users, 3)` (age bucket, gender,
            occupation ids, 0 unknown) with side features, else `None`.
        user_feature_sizes: the id counts of those three features.
    """

    interactions: kdata.Interactions
    split: kdata.Split
    side: Optional[dict] = None
    user_features: Optional[np.ndarray] = None
    user_feature_sizes: tuple = ()

    @property
    def num_items(self) -> int:
        return self.interactions.num_items

    @property
    def titles(self) -> Optional[list[str]]:
        return None if self.side is None else self.side["titles"][1:]

    @property
    def genres(self) -> Optional[np.ndarray]:
        return None if self.side is None else self.side["genres"]

    def item_counts(self) -> list[int]:
        """Training counts per item id (`num_items + 1`, index 0 the padding)."""
        counts = np.zeros(self.num_items + 1, np.int64)
        for sequence in self.split.train:
            np.add.at(counts, sequence, 1)
        counts[0] = 0
        return counts.tolist()


def _encode_users(side: dict) -> tuple[np.ndarray, tuple]:
    occupations = sorted(set(side["occupations"]))
    ages = np.searchsorted(AGE_EDGES, side["ages"], side="right") + 1
    genders = [GENDERS.index(g) + 1 if g in GENDERS else 0 for g in side["genders"]]
    jobs = [occupations.index(o) + 1 for o in side["occupations"]]
    features = np.stack([ages, genders, jobs], axis=1).astype(np.int32)
    return features, (len(AGE_EDGES) + 2, len(GENDERS) + 1, len(occupations) + 1)


def read(path: str | Path, min_count: Optional[int] = None,
         item_labels: Optional[list[str]] = None) -> RecommenderData:
    """Reads and splits a SASRec-format file or a MovieLens folder.

    Args:
        path: a file of `user item` lines (or any `read_interactions`
            format), or a MovieLens folder holding `u.data` (or that
            `u.data` itself: `u.item` and `u.user` beside it are read too).
        min_count: optional k-core filter (see `read_interactions`).
        item_labels: optional item labels of a trained model: the log's
            items are renumbered to them (id = index + 1) and the
            interactions with an item the model does not know are dropped.

    Raises:
        ValueError: naming the file (and line) of bad data.
    """
    path = Path(path)
    folder = None
    if path.is_dir():
        folder = path
        if not (path / "u.data").is_file():
            raise ValueError(f"{path}: expected a SASRec-format file or a MovieLens folder "
                             "with u.data, received: a folder without u.data")
        interactions = kdata.read_interactions(path / "u.data", format="movielens",
                                               min_count=min_count)
    else:
        interactions = kdata.read_interactions(path, min_count=min_count)
        if path.name == "u.data":  # MovieLens's ratings file: its folder holds the features
            folder = path.parent
    side = None
    if folder is not None and (folder / "u.item").is_file() and (folder / "u.user").is_file():
        side = kdata.read_movielens_side_features(folder, interactions)
    longest = _longest(interactions)
    if item_labels is not None:
        interactions, side = _renumber(interactions, side, item_labels)
    split = kdata.leave_one_out(interactions)
    if not len(split.users):
        known = _longest(interactions)
        counts = (f"at most {longest} interactions each" if known == longest else
                  f"at most {longest} interactions each, {known} with items the model knows")
        raise kdata.DataError(
            interactions.path, None,
            "expected a user with 3 interactions or more (leave-one-out's validation and test "
            f"items plus one to train on), received: none; {_users(interactions)}, {counts}",
        )
    user_features, sizes = (None, ()) if side is None else _encode_users(side)
    return RecommenderData(interactions, split, side, user_features, sizes)


def _longest(interactions: kdata.Interactions) -> int:
    return max((len(sequence) for sequence in interactions.sequences), default=0)


def _users(interactions: kdata.Interactions) -> str:
    count = interactions.num_users
    return f"{count:,} user{'s' * (count != 1)}"


def _renumber(interactions, side, item_labels):
    """`interactions` with the ids of `item_labels`; unknown items are dropped."""
    position = {label: index + 1 for index, label in enumerate(item_labels)}
    mapping = np.array([0] + [position.get(label, 0) for label in interactions.item_ids],
                       np.int32)
    sequences = []
    for sequence in interactions.sequences:
        mapped = mapping[sequence]
        sequences.append(mapped[mapped > 0])
    renumbered = kdata.Interactions(sequences, interactions.user_ids, list(item_labels),
                                    interactions.path)
    if side is not None:
        genres = np.zeros((len(item_labels) + 1, side["genres"].shape[1]), np.float32)
        titles = [""] * (len(item_labels) + 1)
        for old, new in enumerate(mapping[1:], start=1):
            if new:
                genres[new] = side["genres"][old]
                titles[new] = side["titles"][old]
        side = {**side, "genres": genres, "titles": titles}
    return renumbered, side


# -- the retriever --------------------------------------------------------------------


def _check_trainable(data: RecommenderData) -> None:
    """A `DataError` unless a user has 2 training items, one predicting the other: 2
    interactions in all (a user of fewer than 3 is trained on, not evaluated), or 4 or more
    (the last two are validation and test)."""
    if not any(len(sequence) >= 2 for sequence in data.split.train):
        raise kdata.DataError(
            data.interactions.path, None,
            "expected a user with 2 items to train on (2 interactions, or 4 or more: the "
            "last two are the validation and test items), received: none; "
            f"{_users(data.interactions)}, each with 1 or 3 interactions",
        )


def retrieval_batches(data: RecommenderData, max_length: int, batch_size: int, seed: int,
                      sort_by_length: bool = False):
    """`({"item_ids"}, positives)` batches of every training sequence, reshuffled each epoch
    (see `kerasattn.data.training_sequences` for `sort_by_length`).

    Returns:
        `(dataset, steps_per_epoch)`; the dataset repeats forever.
    """
    _check_trainable(data)
    dataset = kdata.training_sequences(data.split.train, max_length, batch_size, seed=seed,
                                       sort_by_length=sort_by_length)
    steps = int(dataset.cardinality())
    dataset = dataset.map(lambda inputs, positives: ({"item_ids": inputs}, positives))
    return dataset.repeat(), steps


@dataclasses.dataclass(eq=False)
class EvaluationSet:
    """One leave-one-out target per evaluated user, with fixed sampled negatives."""

    histories: list  # each user's earlier items (all of them)
    targets: np.ndarray
    negatives: np.ndarray
    users: np.ndarray

    def padded(self, max_length: int) -> np.ndarray:
        return kdata.pad_histories(self.histories, max_length)


def evaluation_set(data: RecommenderData, which: str) -> EvaluationSet:
    """The `"valid"` or `"test"` targets; negatives avoid every item of the user."""
    split = data.split
    histories, targets = ((split.valid_history, split.valid_target) if which == "valid"
                          else (split.test_history, split.test_target))
    _check_catalogue(data)
    negatives = ranking.sampled_negatives(
        split.test_history, split.test_target, data.num_items, EVAL_NEGATIVES,
        seed=VALID_SEED if which == "valid" else TEST_SEED,
    )
    return EvaluationSet(histories, np.asarray(targets), negatives, split.users)


def _check_catalogue(data: RecommenderData) -> None:
    """A `DataError` unless every evaluated user leaves `EVAL_NEGATIVES` items unseen
    (the sampled protocol draws its negatives from them)."""
    split = data.split
    for row, (history, target) in enumerate(zip(split.test_history, split.test_target)):
        if data.num_items - len(history) - 1 >= EVAL_NEGATIVES:
            continue  # enough, even were every item distinct
        unseen = data.num_items - len(np.union1d(history, [target]))
        if unseen < EVAL_NEGATIVES:
            user = data.interactions.user_ids[split.users[row]]
            raise kdata.DataError(
                data.interactions.path, None,
                f"expected {EVAL_NEGATIVES} items that each evaluated user never interacted "
                f"with (the sampled evaluation's negatives), received: a catalogue of "
                f"{data.num_items:,} items, {unseen} of them unseen by user {user!r}",
            )


def evaluate_retriever(model, evaluation: EvaluationSet, batch_size: int = 1024) -> dict:
    """Both protocols on every user: `{"sampled": {"hr@10", "ndcg@10"}, "full": {...},
    "users", "seconds"}`."""
    start = time.perf_counter()
    results = ranking.evaluate_ranking(
        model.score_all, evaluation.padded(model.backbone.max_sequence_length),
        evaluation.targets, evaluation.histories, model.num_items, evaluation.negatives,
        batch_size=batch_size, k=K,
    )
    return {**results, "seconds": round(time.perf_counter() - start, 2)}


# -- the candidate scorer ---------------------------------------------------------------


def scorer_inputs(model, data: RecommenderData, histories: np.ndarray, candidates: np.ndarray,
                  users: np.ndarray) -> dict:
    """The scorer's inputs for padded `histories`, `candidates` (B, C), the `users`' rows."""
    inputs = {"item_ids": histories.astype(np.int32),
              "candidate_ids": candidates.astype(np.int32)}
    if model.num_genres:
        inputs["candidate_genres"] = data.genres[candidates]
    if model.user_feature_sizes:
        inputs["user_features"] = data.user_features[users]
    return inputs


def scorer_examples(data: RecommenderData, max_length: int) -> tuple[np.ndarray, ...]:
    """Every next-item example of the training sequences: `(histories (M, L), positives (M,),
    users (M,))`, the history left-padded."""
    _check_trainable(data)
    histories, positives, users = [], [], []
    for user, sequence in enumerate(data.split.train):
        n = len(sequence)
        if n < 2:
            continue
        padded = np.concatenate([np.zeros(max_length, np.int32), sequence.astype(np.int32)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, max_length)
        histories.append(windows[1:n])
        positives.append(sequence[1:])
        users.append(np.full(n - 1, user))
    if not histories:
        raise ValueError("Expected a user with 2 or more training items, received: none")
    return (np.concatenate(histories).astype(np.int32),
            np.concatenate(positives).astype(np.int32), np.concatenate(users))


def scorer_batches(model, data: RecommenderData, batch_size: int, num_negatives: int,
                   seed: int):
    """`(inputs, {"scores": labels})` batches: each example's next item (label 1) and
    `num_negatives` uniform items (label 0), drawn anew every epoch; repeats forever.

    Returns:
        `(dataset, steps_per_epoch)`.
    """
    import tensorflow as tf

    histories, positives, users = scorer_examples(data, model.backbone.max_sequence_length)
    genres = None if not model.num_genres else tf.constant(data.genres)
    user_features = None if not model.user_feature_sizes else tf.constant(data.user_features)
    num_items = data.num_items
    generator = tf.random.Generator.from_seed(seed)

    def make(history, positive, user):
        batch = tf.shape(positive)[0]
        negatives = generator.uniform((batch, num_negatives), 1, num_items + 1, tf.int32)
        candidates = tf.concat([positive[:, None], negatives], axis=1)
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, num_negatives))], axis=1)
        labels = tf.where(tf.equal(candidates, positive[:, None]), 1.0, labels)
        inputs = {"item_ids": history, "candidate_ids": candidates}
        if genres is not None:
            inputs["candidate_genres"] = tf.gather(genres, candidates)
        if user_features is not None:
            inputs["user_features"] = tf.gather(user_features, user)
        return inputs, {"scores": labels}

    dataset = tf.data.Dataset.from_tensor_slices((histories, positives, users))
    dataset = dataset.shuffle(len(positives), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(make).repeat().prefetch(tf.data.AUTOTUNE)
    return dataset, scorer_steps(data, batch_size)


def scorer_steps(data: RecommenderData, batch_size: int) -> int:
    """The batches of one pass over `scorer_examples` (one example per training item but
    each user's first)."""
    examples = sum(max(0, len(sequence) - 1) for sequence in data.split.train)
    return int(np.ceil(examples / batch_size))


def evaluate_scorer(model, data: RecommenderData, evaluation: EvaluationSet,
                    batch_size: int = 1024) -> dict:
    """The target among its 100 negatives, per user: mean AUC, HR@10, NDCG@10."""
    start = time.perf_counter()
    candidates = np.concatenate([evaluation.targets[:, None], evaluation.negatives], axis=1)
    inputs = scorer_inputs(model, data, evaluation.padded(model.backbone.max_sequence_length),
                           candidates, evaluation.users)
    scores = model.score(inputs, batch_size=batch_size).astype(np.float64)
    target = scores[:, :1]
    auc = ((scores[:, 1:] < target).sum(1) + 0.5 * (scores[:, 1:] == target).sum(1)) / (
        scores.shape[1] - 1)
    metrics = ranking.rank_metrics(scores, np.zeros(len(scores), np.int64), k=K)
    return {"auc": float(auc.mean()), **metrics, "users": int(len(scores)),
            "seconds": round(time.perf_counter() - start, 2)}


# -- the per-epoch validation ----------------------------------------------------------


def log_name(protocol: Optional[str], metric: str) -> str:
    """A TensorBoard-safe log key: `("sampled", "ndcg@10")` -> `"val_sampled_ndcg_at_10"`."""
    metric = metric.replace("@", "_at_")
    return f"val_{protocol}_{metric}" if protocol else f"val_{metric}"


class RankingCallback(keras.callbacks.Callback):
    """Scores validation at every epoch's end, into the epoch's logs.

    For a `NextItemRetriever`: `val_sampled_hr_at_10`, `val_sampled_ndcg_at_10`,
    `val_full_hr_at_10`, `val_full_ndcg_at_10`; for a `CandidateScorer`:
    `val_auc`, `val_hr_at_10`, `val_ndcg_at_10`. Put it before the callbacks
    that read them (the training record, TensorBoard).
    """

    def __init__(self, data: RecommenderData, evaluation: EvaluationSet,
                 batch_size: int = 1024):
        super().__init__()
        self.data = data
        self.evaluation = evaluation
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if hasattr(self.model, "score_all"):
            results = evaluate_retriever(self.model, self.evaluation, self.batch_size)
            for protocol in ("sampled", "full"):
                for metric, value in results[protocol].items():
                    logs[log_name(protocol, metric)] = value
        else:
            results = evaluate_scorer(self.model, self.data, self.evaluation, self.batch_size)
            for metric in ("auc", f"hr@{K}", f"ndcg@{K}"):
                logs[log_name(None, metric)] = results[metric]
        logs["val_seconds"] = results["seconds"]
