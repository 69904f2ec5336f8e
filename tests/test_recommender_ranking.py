"""Tests of the recommender's ranking evaluation and losses (zoo/recommender)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from zoo.recommender.losses import bce_one_negative_loss
from zoo.recommender.losses import full_softmax_loss
from zoo.recommender.losses import sampled_softmax_loss
from zoo.recommender.ranking import evaluate_ranking
from zoo.recommender.ranking import pad_histories
from zoo.recommender.ranking import rank_metrics
from zoo.recommender.ranking import sampled_negatives
from zoo.recommender.ranking import target_ranks

# -- ranks and metrics ------------------------------------------------------------


def test_ranks_by_hand_with_ties_and_exclusions():
    # Target in column 0 scores 0.5; above it 0.9 and 0.7; column 3 ties it.
    scores = np.array([[0.5, 0.9, 0.1, 0.5, 0.7]])
    assert target_ranks(scores, [0]).tolist() == [3]
    assert target_ranks(scores, [0], ties="optimistic").tolist() == [2]
    exclude = np.array([[True, True, False, False, False]])  # the target's own flag is ignored
    assert target_ranks(scores, [0], exclude).tolist() == [2]
    assert target_ranks(scores, [0], exclude, ties="optimistic").tolist() == [1]
    # The target can be any column.
    assert target_ranks(scores, [1]).tolist() == [0]
    assert target_ranks(scores, [2]).tolist() == [4]


def test_optimistic_ties_are_sasrec_argsort_with_the_target_first():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(200, 12)).astype(np.float32)  # many ties
    # SASRec: rank = (-predictions).argsort().argsort()[0], target listed
    # first; with a stable sort the target comes before equal scores.
    sasrec = [np.argsort(np.argsort(-row, kind="stable"), kind="stable")[0] for row in scores]
    assert target_ranks(scores, np.zeros(200, int), ties="optimistic").tolist() == sasrec
    pessimistic = [(row[1:] >= row[0]).sum() for row in scores]
    assert target_ranks(scores, np.zeros(200, int)).tolist() == pessimistic


def test_constant_scores_rank_last_unless_optimistic():
    scores = np.zeros((3, 20))
    assert rank_metrics(scores, [0, 5, 19]) == {"hr@10": 0.0, "ndcg@10": 0.0}
    assert rank_metrics(scores, [0, 5, 19], ties="optimistic") == {"hr@10": 1.0, "ndcg@10": 1.0}


def test_hr_and_ndcg_from_hand_computed_ranks():
    # Ranks 0, 3, 9, 10, 25: the target in column 0, `rank` columns above it.
    ranks = [0, 3, 9, 10, 25]
    scores = np.zeros((5, 30))
    for row, rank in enumerate(ranks):
        scores[row, 0] = 1.0
        scores[row, 1:rank + 1] = 2.0
    assert target_ranks(scores, np.zeros(5, int)).tolist() == ranks
    metrics = rank_metrics(scores, np.zeros(5, int), k=10)
    assert metrics["hr@10"] == pytest.approx(3 / 5)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 5)
    assert rank_metrics(scores, np.zeros(5, int), k=1) == {"hr@1": 0.2, "ndcg@1": 0.2}


def test_nan_scores_are_misses():
    scores = np.array([[np.nan, 0.0, 0.0], [1.0, np.nan, 0.0], [1.0, 0.0, 0.0]])
    ranks = target_ranks(scores, [0, 0, 0], ties="optimistic")
    assert ranks.tolist() == [3, 3, 0]
    # A NaN in an excluded column does not matter.
    assert target_ranks(scores, [0, 0, 0], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]).tolist() == [
        3, 0, 0]


# -- evaluate_ranking ---------------------------------------------------------------

# Catalogue of 6 items; each user's catalogue scores (column 0, the padding,
# scores highest and must never count).
TABLE = np.array([
    [9.0, 0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  # user 0
    [9.0, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # user 1
    [9.0, 0.3, 0.3, 0.3, 0.3, 0.9, 0.3],  # user 2
])


def table_score_fn(histories):
    # The first column of the padded histories carries the user's row.
    return TABLE[histories[:, 0] - 1]


def test_evaluate_ranking_by_hand():
    histories = np.array([[1, 2, 3], [2, 1, 0], [3, 0, 0]], np.int32)
    # User 0 saw items 2 and 3 (scoring 0.9, 0.8) and is tested on item 5
    # (0.6): item 4 (0.7) is above it, so rank 1 (rank 3 without exclusion).
    # User 1 saw item 6 before and is tested on it again: the target stays
    # ranked although seen; items 1..5 score above it but item 1 is seen:
    # rank 4. User 2 saw items 1 and 5, target item 2 (0.3) ties items 3, 4
    # and 6 and is below 5 (excluded): pessimistic rank 3, optimistic 0.
    exclude = [np.array([2, 3]), np.array([1, 6]), np.array([1, 5])]
    targets = np.array([5, 6, 2])
    negatives = np.array([[1, 4], [5, 4], [3, 6]])
    for ties, full_ranks, sampled_ranks in (
        ("pessimistic", [1, 4, 3], [1, 2, 2]),
        ("optimistic", [1, 4, 0], [1, 2, 0]),
    ):
        for batch_size in (1, 2, 1024):
            results = evaluate_ranking(
                table_score_fn, histories, targets, exclude, 6, negatives,
                batch_size=batch_size, k=2, ties=ties,
            )
            assert results["users"] == 3
            assert results["full"]["hr@2"] == pytest.approx(np.mean(np.less(full_ranks, 2)))
            assert results["full"]["ndcg@2"] == pytest.approx(
                np.mean([1 / math.log2(r + 2) if r < 2 else 0 for r in full_ranks]))
            assert results["sampled"]["hr@2"] == pytest.approx(
                np.mean(np.less(sampled_ranks, 2)))
            assert results["sampled"]["ndcg@2"] == pytest.approx(
                np.mean([1 / math.log2(r + 2) if r < 2 else 0 for r in sampled_ranks]))


def test_evaluate_ranking_matches_target_ranks_on_random_data():
    rng = np.random.default_rng(1)
    num_users, num_items = 50, 40
    sequences = [rng.choice(np.arange(1, num_items + 1), size=rng.integers(3, 15))
                 for _ in range(num_users)]
    targets = np.array([s[-1] for s in sequences])
    exclude = [s[:-1] for s in sequences]
    histories = pad_histories(exclude, 5)
    table = rng.standard_normal((num_users, num_items + 1)).astype(np.float32)
    row_of = {tuple(h): i for i, h in enumerate(histories.tolist())}

    def score_fn(batch):
        return table[[row_of[tuple(h)] for h in batch.tolist()]]

    assert len(row_of) == num_users
    mask = np.zeros(table.shape, bool)
    mask[:, 0] = True
    for user, items in enumerate(exclude):
        mask[user, items] = True
    expected = rank_metrics(table, targets, mask, k=10)
    results = evaluate_ranking(score_fn, histories, targets, exclude, num_items, batch_size=7)
    assert "sampled" not in results
    assert results["full"] == pytest.approx(expected)
    # Without `exclude`, only the items in the padded histories are left out.
    mask[:] = False
    mask[:, 0] = True
    for user, items in enumerate(histories):
        mask[user, items] = True
    results = evaluate_ranking(score_fn, histories, targets, None, num_items, batch_size=7)
    assert results["full"] == pytest.approx(rank_metrics(table, targets, mask, k=10))


def test_evaluate_ranking_rejects_bad_inputs():
    histories = np.array([[1, 2]], np.int32)
    with pytest.raises(ValueError, match="shape \\(1, 7\\)"):
        evaluate_ranking(lambda h: np.zeros((1, 6)), histories, [3], None, 6)
    with pytest.raises(ValueError, match="targets"):
        evaluate_ranking(lambda h: np.zeros((1, 7)), histories, [7], None, 6)
    with pytest.raises(ValueError, match="negatives"):
        evaluate_ranking(lambda h: np.zeros((1, 7)), histories, [3], None, 6, np.array([[0]]))


def test_evaluating_31k_users_with_a_fake_model_finishes():
    # Video Games' size; the fake model reuses one block of random scores.
    num_users, num_items = 31013, 23715
    rng = np.random.default_rng(0)
    block = rng.standard_normal((1024, num_items + 1), dtype=np.float32)
    sequences = [rng.integers(1, num_items + 1, size=n) for n in rng.integers(3, 30, num_users)]
    history = [s[:-1] for s in sequences]
    targets = np.array([s[-1] for s in sequences])
    negatives = sampled_negatives(history, targets, num_items, seed=0)
    results = evaluate_ranking(
        lambda batch: block[:len(batch)], pad_histories(history, 50), targets, history,
        num_items, negatives,
    )
    assert results["users"] == num_users
    # Random scores: about 10 of 101 candidates' chance, about none of 23,715.
    assert 0.08 < results["sampled"]["hr@10"] < 0.12
    assert results["full"]["hr@10"] < 0.01


# -- sampled negatives ----------------------------------------------------------------


def test_negatives_are_unseen_distinct_and_in_range():
    rng = np.random.default_rng(2)
    num_items = 300
    histories = [rng.integers(1, num_items + 1, size=rng.integers(1, 150)) for _ in range(500)]
    targets = rng.integers(1, num_items + 1, size=500)
    negatives = sampled_negatives(histories, targets, num_items, num_negatives=100, seed=3)
    assert negatives.shape == (500, 100) and negatives.dtype == np.int32
    for row, history, target in zip(negatives, histories, targets):
        assert len(set(row.tolist())) == 100
        assert not set(row.tolist()) & (set(history.tolist()) | {int(target)})
        assert row.min() >= 1 and row.max() <= num_items
    again = sampled_negatives(histories, targets, num_items, num_negatives=100, seed=3)
    assert np.array_equal(negatives, again)


def test_negatives_are_uniform_over_unseen_sets():
    # 4 unseen items (3..6), 2 negatives: each of the 6 pairs equally likely.
    users = 12000
    histories = [np.array([1, 0])] * users
    negatives = sampled_negatives(histories, np.full(users, 2), 6, num_negatives=2, seed=0)
    pairs = np.sort(negatives, axis=1)
    counts = {}
    for pair in map(tuple, pairs.tolist()):
        counts[pair] = counts.get(pair, 0) + 1
    assert sorted(counts) == [(3, 4), (3, 5), (3, 6), (4, 5), (4, 6), (5, 6)]
    assert all(abs(count - users / 6) < 5 * math.sqrt(users / 6) for count in counts.values())


def test_negatives_when_nearly_everything_is_seen():
    negatives = sampled_negatives([np.array([1, 2, 4])], None, 6, num_negatives=3, seed=0)
    assert sorted(negatives[0].tolist()) == [3, 5, 6]
    with pytest.raises(ValueError, match="user 1 has 2"):
        sampled_negatives([np.array([1]), np.array([1, 2, 3, 4])], None, 6, num_negatives=3)
    with pytest.raises(ValueError, match="histories"):
        sampled_negatives([np.array([7])], None, 6, num_negatives=3)


# -- losses ---------------------------------------------------------------------------


def softplus(x):
    return np.logaddexp(0.0, x)


def logsumexp(x, axis=-1):
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


@pytest.fixture
def tiny():
    """A catalogue of N=6 items, d=3, batch 2 of length 3 with padding."""
    rng = np.random.default_rng(4)
    states = rng.standard_normal((2, 3, 3)).astype(np.float32)
    embeddings = rng.standard_normal((7, 3)).astype(np.float32)
    positives = np.array([[0, 2, 5], [1, 6, 3]], np.int32)
    return states, embeddings, positives


def reference_logits(states, embeddings, items):
    return np.einsum("bld,bld->bl", states, embeddings[items])


def test_bce_one_negative_against_numpy(tiny):
    states, embeddings, positives = tiny
    negatives = np.array([[4, 1, 6], [2, 2, 5]], np.int32)
    mask = positives != 0
    per_position = softplus(-reference_logits(states, embeddings, positives)) + softplus(
        reference_logits(states, embeddings, negatives))
    expected = per_position[mask].mean()
    loss = bce_one_negative_loss(states, embeddings, positives, negatives)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # An explicit mask: the first row only.
    row_mask = np.array([[False, True, True], [False, False, False]])
    loss = bce_one_negative_loss(states, embeddings, positives, negatives, row_mask)
    assert float(loss) == pytest.approx(per_position[row_mask].mean(), rel=1e-5)


def test_sampled_softmax_against_numpy(tiny):
    states, embeddings, positives = tiny
    mask = positives != 0
    log_q = np.log(np.array([1, 1, 2, 3, 4, 5, 6], np.float32) / 22)
    per_position_negatives = np.array(
        [[[1, 3], [4, 2], [5, 1]], [[2, 4], [6, 5], [1, 2]]], np.int32)  # [0,1,0] and [0,2,0] hit
    shared = np.array([1, 3, 4], np.int32)
    for negatives in (per_position_negatives, shared):
        full_negatives = np.broadcast_to(negatives, (2, 3, negatives.shape[-1]))
        for q in (None, log_q):
            correction = np.zeros(7, np.float32) if q is None else q
            positive = reference_logits(states, embeddings, positives) - correction[positives]
            negative = np.einsum("bld,blkd->blk", states, embeddings[full_negatives])
            negative = negative - correction[full_negatives]
            for remove in (True, False):
                hits = full_negatives == positives[..., None]
                removed = np.where(hits & remove, -np.inf, negative)
                logits = np.concatenate([positive[..., None], removed], axis=-1)
                expected = (logsumexp(logits) - positive)[mask].mean()
                loss = sampled_softmax_loss(
                    states, embeddings, positives, negatives, log_q=q,
                    remove_accidental_hits=remove,
                )
                assert float(loss) == pytest.approx(expected, rel=1e-5), (negatives.shape, q)


def test_full_softmax_against_numpy(tiny):
    states, embeddings, positives = tiny
    mask = positives != 0
    logits = np.einsum("bld,nd->bln", states, embeddings)[..., 1:]  # the padding is no class
    chosen = np.take_along_axis(logits, np.maximum(positives - 1, 0)[..., None], -1)[..., 0]
    expected = (logsumexp(logits) - chosen)[mask].mean()
    assert float(full_softmax_loss(states, embeddings, positives)) == pytest.approx(
        expected, rel=1e-5)


def test_losses_of_padding_only_are_zero_with_finite_gradients(tiny):
    states, embeddings, _ = tiny
    positives = np.zeros((2, 3), np.int32)
    states, embeddings = tf.Variable(states), tf.Variable(embeddings)
    for loss_fn in (
        lambda: bce_one_negative_loss(states, embeddings, positives, positives + 1),
        lambda: sampled_softmax_loss(states, embeddings, positives, np.array([1, 2])),
        lambda: full_softmax_loss(states, embeddings, positives),
    ):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        gradients = tape.gradient(loss, [states, embeddings])
        assert float(loss) == 0.0
        # Gathered embeddings get IndexedSlices: make every gradient dense.
        assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all()
                   for g in gradients if g is not None)
