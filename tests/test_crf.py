"""Tests of kerasattn.layers.crf.CRF against brute-force enumeration.

Every expectation comes from enumerating all tag paths of short sequences
in float64 NumPy. Run as a script (`KERAS_BACKEND=jax python
tests/test_crf.py OUT.npz`), the module computes the CRF's outputs and
gradients under that backend for `test_jax_matches_tensorflow`.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasattn.layers.crf import CRF
from tests import backend_checks
from tests import harness

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
B, T, N = 4, 4, 3
LENGTHS = (4, 3, 1, 2)


def _mask(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def _fixture(seed=0, num_tags=N, lengths=LENGTHS, length=T, scale=1.0):
    """Random potentials (garbage in the padding), a mask, and weights."""
    rng = np.random.default_rng(seed)
    potentials = (scale * rng.normal(size=(len(lengths), length, num_tags))).astype("float32")
    weights = [
        rng.normal(size=(num_tags, num_tags)).astype("float32"),
        rng.normal(size=(num_tags,)).astype("float32"),
        rng.normal(size=(num_tags,)).astype("float32"),
    ]
    return potentials, _mask(lengths, length), weights


def _layer(weights, **kwargs):
    layer = CRF(num_tags=weights[1].shape[0], **kwargs)
    layer.build((None, None, weights[1].shape[0]))
    layer.set_weights(weights)
    return layer


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# -- brute force ---------------------------------------------------------------


def _penalized(weights, layer=None):
    """float64 weights plus the layer's constraint penalties."""
    transitions, start, end = (np.asarray(w, "float64") for w in weights)
    if layer is not None and layer._penalties is not None:
        transitions = transitions + layer._penalties[0]
        start = start + layer._penalties[1]
        end = end + layer._penalties[2]
    return transitions, start, end


def path_score(potentials, path, weights):
    transitions, start, end = weights
    score = start[path[0]] + end[path[-1]]
    score += sum(potentials[t, tag] for t, tag in enumerate(path))
    score += sum(transitions[a, b] for a, b in zip(path, path[1:]))
    return score


def brute_force(potentials, length, weights, legal=None):
    """Every path of a row's first `length` steps: (paths, scores, log Z)."""
    potentials = np.asarray(potentials, "float64")
    num_tags = potentials.shape[-1]
    paths = list(itertools.product(range(num_tags), repeat=length))
    if legal is not None:
        paths = [p for p in paths if legal(p)]
    scores = np.array([path_score(potentials, p, weights) for p in paths])
    log_z = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
    return paths, scores, log_z


def _pad(path, length):
    padded = np.zeros(length, "int32")
    padded[: len(path)] = path
    return padded


# -- tests -------------------------------------------------------------------


class CRFTest(harness.LayerTestCase):
    def test_log_likelihood_matches_brute_force(self):
        potentials, mask, weights = _fixture()
        layer = _layer(weights)
        reference = _penalized(weights)
        for row, length in enumerate(LENGTHS):
            paths, scores, log_z = brute_force(potentials[row], length, reference)
            tags = np.stack([_pad(p, T) for p in paths])
            count = len(paths)
            got = _numpy(layer.log_likelihood(
                np.repeat(potentials[row : row + 1], count, 0), tags,
                np.repeat(mask[row : row + 1], count, 0),
            ))
            self.assertEqual("float32", str(got.dtype))
            self.assertAllClose(scores - log_z, got, atol=1e-5, rtol=1e-5)
            # A distribution: the probabilities of all paths add up to 1.
            self.assertAllClose(1.0, np.sum(np.exp(got.astype("float64"))), atol=1e-5)

    def test_batch_of_different_lengths(self):
        potentials, mask, weights = _fixture(seed=1)
        layer = _layer(weights)
        reference = _penalized(weights)
        rng = np.random.default_rng(5)
        tags = rng.integers(0, N, size=(B, T)).astype("int32")
        want = [
            path_score(potentials[r].astype("float64"), tags[r, :n], reference)
            - brute_force(potentials[r], n, reference)[2]
            for r, n in enumerate(LENGTHS)
        ]
        got = layer.log_likelihood(potentials, tags, mask)
        self.assertAllClose(want, got, atol=1e-5, rtol=1e-5)

    def test_decode_matches_brute_force(self):
        for seed in range(3):
            potentials, mask, weights = _fixture(seed=seed)
            layer = _layer(weights)
            reference = _penalized(weights)
            tags, scores = layer.decode(potentials, mask)
            self.assertEqual("int32", str(_numpy(tags).dtype))
            self.assertEqual("float32", str(_numpy(scores).dtype))
            for row, length in enumerate(LENGTHS):
                paths, all_scores, _ = brute_force(potentials[row], length, reference)
                best = int(np.argmax(all_scores))
                self.assertAllEqual(_pad(paths[best], T), tags[row])
                self.assertAllClose(all_scores[best], scores[row], atol=1e-5)
            # `call` returns the same path.
            self.assertAllEqual(tags, layer(potentials, mask=mask))

    def test_marginals_match_brute_force(self):
        potentials, mask, weights = _fixture(seed=2)
        layer = _layer(weights)
        reference = _penalized(weights)
        got = _numpy(layer.marginals(potentials, mask))
        self.assertEqual((B, T, N), got.shape)
        for row, length in enumerate(LENGTHS):
            paths, scores, log_z = brute_force(potentials[row], length, reference)
            probabilities = np.exp(scores - log_z)
            want = np.zeros((T, N))
            for path, p in zip(paths, probabilities):
                want[np.arange(length), path] += p
            self.assertAllClose(want, got[row], atol=1e-5)
            self.assertAllClose(np.ones(length), got[row, :length].sum(-1), atol=1e-5)

    def test_hand_computed(self):
        # Two tags, two steps, zero transitions except 0 -> 1 = 2; start
        # = end = 0. Potentials [[1, 0], [0, 0]]: scores of the paths
        # 00, 01, 10, 11 are 1, 3, 0, 0. log Z = log(e + e^3 + 2).
        layer = _layer([np.array([[0, 2], [0, 0]], "float32"), np.zeros(2), np.zeros(2)])
        potentials = np.array([[[1, 0], [0, 0]]], "float32")
        log_z = np.log(np.e + np.e**3 + 2)
        self.assertAllClose(
            [3 - log_z], layer.log_likelihood(potentials, np.array([[0, 1]])), atol=1e-6
        )
        tags, score = layer.decode(potentials)
        self.assertAllEqual([[0, 1]], tags)
        self.assertAllClose([3.0], score)
        want = np.array([[np.e + np.e**3, 2], [np.e + 1, np.e**3 + 1]]) / np.exp(log_z)
        self.assertAllClose([want], layer.marginals(potentials), atol=1e-6)

    # -- masks -------------------------------------------------------------

    def test_padding_changes_nothing(self):
        potentials, mask, weights = _fixture(seed=3)
        layer = _layer(weights)
        tags = np.random.default_rng(0).integers(0, N, size=(B, T)).astype("int32")
        padded_ll = _numpy(layer.log_likelihood(potentials, tags, mask))
        padded_tags, padded_scores = (_numpy(x) for x in layer.decode(potentials, mask))
        padded_marginals = _numpy(layer.marginals(potentials, mask))
        for row, length in enumerate(LENGTHS):
            cut = potentials[row : row + 1, :length]
            self.assertAllClose(
                layer.log_likelihood(cut, tags[row : row + 1, :length]),
                padded_ll[row : row + 1], atol=1e-6,
            )
            cut_tags, cut_scores = layer.decode(cut)
            self.assertAllEqual(cut_tags[0], padded_tags[row, :length])
            self.assertAllEqual(np.zeros(T - length), padded_tags[row, length:])
            self.assertAllClose(cut_scores, padded_scores[row : row + 1], atol=1e-6)
            self.assertAllClose(
                layer.marginals(cut)[0], padded_marginals[row, :length], atol=1e-6
            )
            self.assertAllEqual(
                np.zeros((T - length, N)), padded_marginals[row, length:]
            )
        # Whatever the padding holds, potentials or tags (even out of range).
        noisy = np.where(mask[..., None], potentials, 1e3).astype("float32")
        noisy_tags = np.where(mask, tags, -1)
        self.assertAllClose(
            padded_ll, layer.log_likelihood(noisy, noisy_tags, mask), atol=1e-5
        )
        self.assertAllEqual(padded_tags, layer(noisy, mask=mask))

    def test_fully_masked_row(self):
        potentials, _, weights = _fixture(seed=4)
        layer = _layer(weights)
        mask = _mask((3, 0, 0, 2), T)
        tags = np.ones((B, T), "int32")
        ll = _numpy(layer.log_likelihood(potentials, tags, mask))
        self.assertAllEqual([0.0, 0.0], ll[1:3])
        decoded, scores = (_numpy(x) for x in layer.decode(potentials, mask))
        self.assertAllEqual(np.zeros((2, T)), decoded[1:3])
        self.assertAllEqual([0.0, 0.0], scores[1:3])
        marginals = _numpy(layer.marginals(potentials, mask))
        self.assertAllEqual(np.zeros((2, T, N)), marginals[1:3])
        self.assert_all_finite([ll, scores, marginals])
        with tf.GradientTape() as tape:
            x = tf.constant(potentials)
            tape.watch(x)
            loss = -tf.reduce_sum(layer.log_likelihood(x, tags, mask))
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        self.assert_all_finite(grads)
        self.assertAllEqual(np.zeros((T, N)), grads[0][1])

    def test_length_one_and_no_mask(self):
        potentials, _, weights = _fixture(seed=5, lengths=(1, 1), length=1)
        layer = _layer(weights)
        reference = _penalized(weights)
        for row in range(2):
            _, scores, log_z = brute_force(potentials[row], 1, reference)
            tags, best = layer.decode(potentials[row : row + 1])
            self.assertAllEqual([[np.argmax(scores)]], tags)
            self.assertAllClose([scores.max()], best, atol=1e-6)
            got = layer.log_likelihood(potentials[row : row + 1], tags)
            self.assertAllClose([scores.max() - log_z], got, atol=1e-6)
            marginals = layer.marginals(potentials[row : row + 1])
            self.assertAllClose([[np.exp(scores - log_z)]], marginals, atol=1e-6)

    def test_embedding_mask_propagation(self):
        tokens = keras.Input(shape=(None,), dtype="int32")
        embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        dense = keras.layers.Dense(N)
        potentials = dense(embedding(tokens))
        # The padding token's potentials favour tag 1 by far.
        table = embedding.embeddings.numpy()
        table[0] = 5.0
        embedding.embeddings.assign(table)
        kernel = dense.kernel.numpy()
        kernel[:, 1] += 1.0
        dense.kernel.assign(kernel)
        crf = CRF(N)
        tags = crf(potentials)
        self.assertIsNotNone(getattr(tags, "_keras_mask", None))
        model = keras.Model(tokens, [tags, potentials])
        ids = np.array([[3, 4, 5, 6], [7, 8, 0, 0], [0, 0, 0, 0]], "int32")
        got, scores = model(ids)
        want, _ = crf.decode(scores, ids != 0)
        self.assertAllEqual(want, got)
        self.assertAllEqual(np.zeros((1, 4)), got[2:])
        # The mask reaches `call`: without it the padded steps get tags.
        # The model's potentials carry the implicit mask to a later call; as a
        # plain array, without it, the padding decodes to tag 1.
        self.assertAllEqual(np.zeros((1, 4)), crf(scores)[2:])
        self.assertAllEqual(np.ones((1, 4)), crf(np.asarray(scores))[2:])
        self.assertAllEqual(ids != 0, crf.compute_mask(scores, ids != 0))

    def test_dynamic_length_functional_model(self):
        potentials = keras.Input(shape=(None, N))
        crf = CRF(N)
        model = keras.Model(potentials, crf(potentials))
        self.assertEqual((None, None), tuple(model.output.shape))
        for length in (3, 6):
            x, mask, _ = _fixture(seed=length, lengths=(length,), length=length)
            self.assertAllEqual(crf(x), model.predict(x, verbose=0))

    # -- constraints ---------------------------------------------------------

    def test_iob2_constraint_tables(self):
        layer = CRF(5, tag_names=TAGS, scheme="IOB2")
        transitions, start, end = (p == 0 for p in layer._penalties)
        # Rows: from O, B-PER, I-PER, B-LOC, I-LOC; columns: to.
        self.assertAllEqual(
            [[1, 1, 0, 1, 0],
             [1, 1, 1, 1, 0],
             [1, 1, 1, 1, 0],
             [1, 1, 0, 1, 1],
             [1, 1, 0, 1, 1]],
            transitions,
        )
        self.assertAllEqual([1, 1, 0, 1, 0], start)
        self.assertAllEqual([1, 1, 1, 1, 1], end)

    def test_iob1_constraint_tables(self):
        layer = CRF(5, tag_names=TAGS, scheme="IOB1")
        transitions, start, end = (p == 0 for p in layer._penalties)
        self.assertAllEqual(
            [[1, 0, 1, 0, 1],
             [1, 1, 1, 0, 1],
             [1, 1, 1, 0, 1],
             [1, 0, 1, 1, 1],
             [1, 0, 1, 1, 1]],
            transitions,
        )
        self.assertAllEqual([1, 0, 1, 0, 1], start)
        self.assertAllEqual([1, 1, 1, 1, 1], end)

    def test_iobes_constraint_tables(self):
        names = ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "E-Y"]
        layer = CRF(7, tag_names=names, scheme="IOBES")
        transitions, start, end = (p == 0 for p in layer._penalties)
        self.assertAllEqual(
            [[1, 1, 0, 0, 1, 1, 0],  # O
             [0, 0, 1, 1, 0, 0, 0],  # B-X
             [0, 0, 1, 1, 0, 0, 0],  # I-X
             [1, 1, 0, 0, 1, 1, 0],  # E-X
             [1, 1, 0, 0, 1, 1, 0],  # S-X
             [0, 0, 0, 0, 0, 0, 1],  # B-Y
             [1, 1, 0, 0, 1, 1, 0]],  # E-Y
            transitions,
        )
        self.assertAllEqual([1, 1, 0, 0, 1, 1, 0], start)
        self.assertAllEqual([1, 0, 0, 1, 1, 0, 1], end)

    def test_constrained_paths_are_legal(self):
        layer = CRF(5, tag_names=TAGS, scheme="IOB2")
        layer.build((None, None, 5))
        allowed = [p == 0 for p in layer._penalties]

        def legal(path):
            return (
                allowed[1][path[0]] and allowed[2][path[-1]]
                and all(allowed[0][a, b] for a, b in zip(path, path[1:]))
            )

        # The potentials favour O I-PER B-LOC I-PER: two illegal moves.
        favoured = np.full((1, 4, 5), -3.0, "float32")
        favoured[0, np.arange(4), [0, 2, 3, 2]] = 3.0
        tags = _numpy(layer(favoured))[0]
        self.assertTrue(legal(tags), tags)
        unconstrained = CRF(5)
        unconstrained.build((None, None, 5))
        unconstrained.set_weights(layer.get_weights())
        self.assertAllEqual([[0, 2, 3, 2]], unconstrained(favoured))

        # Random potentials: matches brute force over the legal paths.
        potentials, mask, weights = _fixture(seed=6, num_tags=5, scale=3.0)
        layer.set_weights(weights)
        reference = _penalized(weights)  # legal paths have no penalty
        decoded, best = (_numpy(x) for x in layer.decode(potentials, mask))
        marginals = _numpy(layer.marginals(potentials, mask))
        for row, length in enumerate(LENGTHS):
            paths, scores, log_z = brute_force(potentials[row], length, reference, legal)
            self.assertTrue(legal(decoded[row, :length]))
            self.assertAllEqual(_pad(paths[int(np.argmax(scores))], T), decoded[row])
            self.assertAllClose(scores.max(), best[row], atol=1e-4)
            tags = np.stack([_pad(p, T) for p in paths])
            got = _numpy(layer.log_likelihood(
                np.repeat(potentials[row : row + 1], len(paths), 0), tags,
                np.repeat(mask[row : row + 1], len(paths), 0),
            ))
            self.assertAllClose(scores - log_z, got, atol=1e-4, rtol=1e-5)
            self.assertAllClose(1.0, np.exp(got.astype("float64")).sum(), atol=1e-5)
            want = np.zeros((T, 5))
            for path, p in zip(paths, np.exp(scores - log_z)):
                want[np.arange(length), path] += p
            self.assertAllClose(want, marginals[row], atol=1e-5)
        # An illegal path has (log) probability ~ -1e4, not NaN.
        illegal = layer.log_likelihood(favoured, np.array([[0, 2, 3, 2]]))
        self.assertLess(float(illegal[0]), -1e3)

    def test_argument_errors(self):
        self.assert_value_error(lambda: CRF(0), "num_tags", "received: num_tags=0")
        self.assert_value_error(
            lambda: CRF(3, scheme="IOB2"), "Expected `tag_names`", "tag_names=None"
        )
        self.assert_value_error(
            lambda: CRF(3, tag_names=["O", "B-X", "X-Y"], scheme="IOB2"),
            "tag_names[2]='X-Y'",
        )
        self.assert_value_error(
            lambda: CRF(3, tag_names=["O", "B-X", "E-X"], scheme="IOB2"), "'E-X'"
        )
        self.assert_value_error(
            lambda: CRF(3, tag_names=["O", "B-X", "B-"], scheme="IOBES"), "'B-'"
        )
        self.assert_value_error(lambda: CRF(3, tag_names=["O", "B-X"]), "3 distinct")
        self.assert_value_error(lambda: CRF(2, tag_names=["O", "O"]), "2 distinct")
        self.assert_value_error(lambda: CRF(2, tag_names="OB"), "sequence of strings")
        self.assert_value_error(lambda: CRF(2, scheme="BIO"), "scheme", "'BIO'")
        layer = CRF(3)
        self.assert_value_error(
            lambda: layer(np.zeros((1, 2, 4), "float32")),
            "last dimension 3", "potentials.shape=(1, 2, 4)",
        )
        # Tag names without a scheme are kept, unchecked, with no constraint.
        self.assertIsNone(CRF(2, tag_names=["a", "b"])._penalties)

    # -- gradients -------------------------------------------------------------

    def test_gradients_match_finite_differences(self):
        potentials, mask, weights = _fixture(seed=7)
        layer = _layer(weights)
        tags = np.random.default_rng(1).integers(0, N, size=(B, T)).astype("int32")
        x = tf.constant(potentials)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(layer.log_likelihood(x, tags, mask))
        grads = tape.gradient(total, [x, layer.transitions, layer.start, layer.end])
        self.assert_all_finite(grads)

        def objective(x, transitions, start, end):
            return sum(
                path_score(x[r], tags[r, :n], (transitions, start, end))
                - brute_force(x[r], n, (transitions, start, end))[2]
                for r, n in enumerate(LENGTHS)
            )

        values = [np.asarray(potentials, "float64")] + list(_penalized(weights))
        eps = 1e-5
        for i, grad in enumerate(grads):
            numeric = np.zeros_like(values[i])
            for index in np.ndindex(values[i].shape):
                up = [v.copy() for v in values]
                down = [v.copy() for v in values]
                up[i][index] += eps
                down[i][index] -= eps
                numeric[index] = (objective(*up) - objective(*down)) / (2 * eps)
            self.assertAllClose(numeric, grad, atol=1e-4, msg=f"argument {i}")
        # Padded steps get no gradient.
        self.assertAllEqual(np.zeros_like(potentials)[~mask], grads[0].numpy()[~mask])

    # -- saving, precision, compilation ------------------------------------------

    def test_serialization(self):
        potentials, mask, _ = _fixture(seed=8, num_tags=5)
        inputs = (dict(potentials=potentials, mask=mask), {})
        self.check_serialization(lambda: CRF(5), inputs)
        self.check_serialization(
            lambda: CRF(5, tag_names=TAGS, scheme="IOB2"), inputs
        )
        layer = CRF(5, tag_names=TAGS, scheme="IOB1", transitions_initializer="zeros")
        config = layer.get_config()
        self.assertEqual(TAGS, config["tag_names"])
        restored = CRF.from_config(config)
        for got, want in zip(restored._penalties, layer._penalties):
            self.assertAllEqual(want, got)

    def test_model_round_trip_keeps_constraints_and_weights(self):
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
        tags = CRF(5, tag_names=TAGS, scheme="IOB2", name="crf")(keras.layers.Dense(5)(x))
        model = keras.Model(tokens, tags)
        model.get_layer("crf").transitions.assign(
            np.random.default_rng(0).normal(size=(5, 5)) * 3
        )
        ids = np.random.default_rng(1).integers(1, 20, size=(4, 7)).astype("int32")
        ids[1, 4:] = 0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        self.assertAllEqual(model.predict(ids, verbose=0), reloaded.predict(ids, verbose=0))
        crf = reloaded.get_layer("crf")
        self.assertEqual(["transitions", "start", "end"], [w.name for w in crf.weights])
        self.assertIsNotNone(crf._penalties)

    def test_mixed_precision(self):
        potentials, mask, weights = _fixture(seed=9, scale=4.0)
        tags = np.random.default_rng(2).integers(0, N, size=(B, T)).astype("int32")
        reference = _layer(weights)
        want = [
            _numpy(reference(potentials, mask=mask)),
            _numpy(reference.log_likelihood(potentials, tags, mask)),
            _numpy(reference.marginals(potentials, mask)),
        ]
        for policy in ("mixed_float16", "mixed_bfloat16"):
            with self.subTest(policy=policy):
                keras.config.set_dtype_policy(policy)
                try:
                    layer = _layer(weights)
                    low = keras.ops.cast(potentials, policy.split("_")[1])
                    got = [
                        _numpy(layer(low, mask=mask)),
                        _numpy(layer.log_likelihood(low, tags, mask)),
                        _numpy(layer.marginals(low, mask)),
                    ]
                finally:
                    keras.config.set_dtype_policy(self._policy)
                for variable in layer.weights:
                    self.assertEqual("float32", variable.dtype)
                self.assertEqual("int32", str(got[0].dtype))
                self.assertEqual("float32", str(got[1].dtype))
                self.assertAllEqual(want[0], got[0])
                tol = harness.PRECISION_TOLERANCE[policy]
                self.assertAllClose(want[1], got[1], atol=tol * 4, rtol=tol)
                self.assertAllClose(want[2], got[2], atol=tol)

    def test_jit_compile(self):
        potentials, mask, weights = _fixture(seed=10)
        layer = _layer(weights)
        tags = np.random.default_rng(3).integers(0, N, size=(B, T)).astype("int32")

        def everything(x, tags, mask):
            with tf.GradientTape() as tape:
                tape.watch(x)
                ll = layer.log_likelihood(x, tags, mask)
                total = tf.reduce_sum(ll)
            grads = tape.gradient(total, [x, layer.transitions])
            decoded, scores = layer.decode(x, mask)
            return [ll, decoded, scores, layer.marginals(x, mask)] + grads

        args = (tf.constant(potentials), tf.constant(tags), tf.constant(mask))
        eager = everything(*args)
        for jit in (False, True):
            compiled = tf.function(everything, jit_compile=jit)(*args)
            for want, got in zip(eager, compiled):
                self.assertAllClose(want, got, atol=1e-5, rtol=1e-5)

    def test_fit_with_jit_compile(self):
        keras.utils.set_random_seed(0)
        model = CRFTagger(num_tags=5)
        rng = np.random.default_rng(4)
        ids = rng.integers(1, 20, size=(64, 6)).astype("int32")
        ids[::3, 4:] = 0
        # A learnable rule: tag = token id mod 5 (0 at padding).
        tags = np.where(ids > 0, ids % 5, 0).astype("int32")
        model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=True)
        history = model.fit(ids, tags, epochs=15, batch_size=32, verbose=0)
        losses = history.history["loss"]
        self.assertTrue(np.all(np.isfinite(losses)))
        self.assertLess(losses[-1], 0.5 * losses[0])
        predicted = model.predict(ids, verbose=0)
        self.assertAllEqual(model(ids), predicted)
        self.assertGreater(np.mean(predicted[ids > 0] == tags[ids > 0]), 0.9)

    def test_backend_checks_cover_the_crf(self):
        # The TF-free checks (serialization, masks, fresh kernels) run the
        # CRF under every backend in tests/test_backends.py.
        case = backend_checks.CASES["CRF"]
        for name, check in backend_checks.CHECKS.items():
            with self.subTest(check=name):
                check(case)

    def test_jax_matches_tensorflow(self):
        with harness.script_output_under_backend("jax", "test_crf.py", "crf.npz") as path:
            other = dict(np.load(path))
        self.assertEqual("jax", str(other.pop("backend")))
        want = _probe_outputs()
        self.assertCountEqual(want, other)
        for name, value in want.items():
            with self.subTest(output=name):
                self.assertAllClose(value, other[name], atol=1e-5, rtol=1e-5)


@keras.saving.register_keras_serializable(package="kerasattn_tests")
class CRFTagger(keras.Model):
    """Embedding -> Dense -> CRF, trained on the CRF's negative log-likelihood."""

    def __init__(self, num_tags, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(20, 16, mask_zero=True)
        self.dense = keras.layers.Dense(num_tags)
        self.crf = CRF(num_tags)

    def call(self, ids):
        return self.crf(self.dense(self.embedding(ids)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        potentials = self.dense(self.embedding(x))
        ll = self.crf.log_likelihood(potentials, y, keras.ops.not_equal(x, 0))
        return -keras.ops.mean(ll)


def _probe_outputs() -> dict:
    """The CRF's outputs and log-likelihood gradients on fixed inputs, under
    the current backend (the same code runs under TensorFlow and JAX)."""
    potentials, mask, weights = _fixture(seed=11, num_tags=5, lengths=(4, 2, 0, 1))
    tags = np.random.default_rng(6).integers(0, 5, size=(4, T)).astype("int32")
    outputs = {}
    for name, kwargs in (("plain", {}), ("iob2", dict(tag_names=TAGS, scheme="IOB2"))):
        layer = _layer(weights, **kwargs)
        decoded, scores = layer.decode(potentials, mask)
        outputs[f"{name}/tags"] = _numpy(layer(potentials, mask=mask))
        outputs[f"{name}/decoded"] = _numpy(decoded)
        outputs[f"{name}/scores"] = _numpy(scores)
        outputs[f"{name}/ll"] = _numpy(layer.log_likelihood(potentials, tags, mask))
        outputs[f"{name}/marginals"] = _numpy(layer.marginals(potentials, mask))
        grads = _ll_gradients(layer, potentials, tags, mask)
        for i, grad in enumerate(grads):
            outputs[f"{name}/grad_{i}"] = grad
    return outputs


def _ll_gradients(layer, potentials, tags, mask):
    """Gradients of the summed log-likelihood w.r.t. the potentials and the
    three weights, with the backend's own autodiff."""
    backend = keras.backend.backend()
    variables = [layer.transitions, layer.start, layer.end]
    if backend == "jax":
        import jax

        def total(x, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return keras.ops.sum(layer.log_likelihood(x, tags, mask))

        grad_x, grad_w = jax.grad(total, argnums=(0, 1))(
            keras.ops.convert_to_tensor(potentials), [v.value for v in variables]
        )
        return [_numpy(g) for g in [grad_x, *grad_w]]
    x = tf.constant(potentials)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer.log_likelihood(x, tags, mask))
    return [_numpy(g) for g in tape.gradient(total, [x, *variables])]


if __name__ == "__main__":
    np.savez(sys.argv[1], backend=keras.backend.backend(), **_probe_outputs())
