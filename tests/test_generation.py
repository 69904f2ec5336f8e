"""Decoding strategies: beam search against brute force, greedy and sampling
against their definitions, traced into a SavedModel, compiled with XLA, and
under JAX (`tests/decoding_probe.py`, inside `jax.jit`)."""

from __future__ import annotations

import ast
import doctest
import inspect
import itertools
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from keras import ops

import kerasattn.generation
from kerasattn import generation
from kerasattn.generation import _loop
from kerasattn.generation import sampling
from kerasattn.generation import search
from tests import decoding_probe

VOCAB, END, PAD = 3, 1, 0
EMBEDDING = np.array([0.3, -1.1, 0.8], "float32")


def prefix_next_fn(ids, cache, index):
    """Logits that depend on the whole prefix: on a positional hash of the ids
    before `index`, and on a running state carried in the cache (so that
    beam search must reorder the cache with the beams)."""
    last = ops.take(ids, index - 1, axis=1)
    state = 0.7 * cache + ops.take(EMBEDDING, last)
    length = ids.shape[1]
    before = ops.cast(ops.arange(length) < index, "float32")
    weights = ops.convert_to_tensor(1.0 + 0.37 * np.arange(length), "float32")
    feature = ops.sum(ops.cast(ids + 1, "float32") * weights * before, axis=1)
    vocab = ops.arange(VOCAB, dtype="float32")
    logits = 2.0 * ops.sin(
        1.3 * feature[:, None] + 0.9 * state[:, None] * (vocab + 1.0) + 0.5 * vocab
    )
    return logits, state


def brute_force(next_fn, prompt_row, max_length, end_id, alpha):
    """Every hypothesis of one row, `[(score, ids), ...]`, best first, by
    calling `next_fn` on each prefix."""
    prompt_length = len(prompt_row)
    hypotheses = []

    def record(ids, log_prob, length):
        penalty = ((5.0 + length) / 6.0) ** alpha
        hypotheses.append((log_prob / penalty, ids))

    def visit(ids, state, index, log_prob):
        if index == max_length:
            record(ids, log_prob, index - prompt_length)
            return
        if index < prompt_length:
            ids = ids.copy()
            _, state = next_fn(ids[None], state, index)
            visit(ids, state, index + 1, log_prob)
            return
        logits, state = next_fn(ids[None], state, index)
        logits = np.asarray(logits, "float64")[0]
        log_probs = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
        for token in range(VOCAB):
            extended = ids.copy()
            extended[index] = token
            if token == end_id:
                record(extended, log_prob + log_probs[token], index - prompt_length + 1)
            else:
                visit(extended, state, index + 1, log_prob + log_probs[token])

    ids = np.full(max_length, PAD, "int32")
    ids[:prompt_length] = prompt_row
    visit(ids, np.zeros(1, "float32"), 1, 0.0)
    return sorted(hypotheses, key=lambda hypothesis: -hypothesis[0])


def bigram_next_fn(table):
    """A bigram model: the logits are `log(table[previous id])`."""
    log_table = np.log(np.asarray(table, "float64")).astype("float32")

    def next_fn(ids, cache, index):
        return ops.take(log_table, ops.take(ids, index - 1, axis=1), axis=0), cache

    return next_fn


# ids 0 (start, padding), 1 (end), 2 and 3: ending at once has probability
# 0.5; 2 then the end, 0.45 * 0.95 = 0.4275.
SHORT_OR_LONG = [
    [0.001, 0.5, 0.45, 0.049],
    [0.25, 0.25, 0.25, 0.25],
    [0.001, 0.95, 0.025, 0.024],
    [0.25, 0.25, 0.25, 0.25],
]


def fixed_next_fn(probabilities):
    logits = np.log(np.asarray(probabilities, "float64")).astype("float32")

    def next_fn(ids, cache, index):
        return ops.tile(ops.convert_to_tensor(logits)[None], (ops.shape(ids)[0], 1)), cache

    return next_fn


def counted(next_fn):
    """`next_fn` that counts its calls (each step, in eager execution)."""

    def wrapped(ids, cache, index):
        wrapped.calls += 1
        return next_fn(ids, cache, index)

    wrapped.calls = 0
    return wrapped


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


class BeamSearchTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(alpha=[0.0, 0.8], end_id=[END, None])
    def test_covering_beam_is_brute_force(self, alpha, end_id):
        # Four generated positions after a two-token prompt:
        # at most 3**4 hypotheses, so a beam of 81 prunes nothing.
        prompt = np.array([[2, 2], [0, 2]], "int32")
        max_length, width = 6, VOCAB**4
        ids, scores = generation.beam_search(
            prefix_next_fn, prompt, ops.zeros((2,)), max_length=max_length, beam_width=width,
            length_penalty_alpha=alpha, end_id=end_id, pad_id=PAD, return_all_beams=True,
        )
        ids, scores = numpy(ids), numpy(scores)
        for row in range(2):
            expected = brute_force(prefix_next_fn, prompt[row], max_length, end_id, alpha)
            count = len(expected)
            self.assertEqual(count, 31 if end_id is not None else 81)
            self.assertAllEqual(np.stack([h[1] for h in expected]), ids[row, :count])
            self.assertAllClose([h[0] for h in expected], scores[row, :count], rtol=1e-5)
            # The beams past the real hypotheses are impossible ones.
            self.assertTrue(np.all(scores[row, count:] < -1e6))
        best_ids, best_scores = generation.beam_search(
            prefix_next_fn, prompt, ops.zeros((2,)), max_length=max_length, beam_width=width,
            length_penalty_alpha=alpha, end_id=end_id, pad_id=PAD,
        )
        self.assertAllEqual(ids[:, 0], numpy(best_ids))
        self.assertAllClose(scores[:, 0], numpy(best_scores))

    @parameterized.parameters(0.0, 1.0)
    def test_width_one_is_greedy(self, alpha):
        prompt = np.array([[2], [0], [1]], "int32")
        greedy = generation.greedy_search(
            prefix_next_fn, prompt, ops.zeros((3,)), max_length=7, end_id=END
        )
        beam, _ = generation.beam_search(
            prefix_next_fn, prompt, ops.zeros((3,)), max_length=7, beam_width=1,
            length_penalty_alpha=alpha, end_id=END,
        )
        self.assertAllEqual(numpy(greedy), numpy(beam))

    def test_length_penalty_as_hand_computed(self):
        next_fn = bigram_next_fn(SHORT_OR_LONG)
        start = np.zeros((1, 1), "int32")
        ids, score = generation.beam_search(next_fn, start, max_length=4, beam_width=2, end_id=1)
        self.assertAllEqual([[0, 1, 0, 0]], numpy(ids))
        self.assertAllClose([np.log(0.5)], numpy(score))
        # alpha = 2: log(0.4275) / (7/6)**2 = -0.6245 beats log(0.5) / 1 = -0.6931.
        ids, score = generation.beam_search(
            next_fn, start, max_length=4, beam_width=2, end_id=1, length_penalty_alpha=2.0
        )
        self.assertAllEqual([[0, 2, 1, 0]], numpy(ids))
        self.assertAllClose([np.log(0.45 * 0.95) / (7 / 6) ** 2], numpy(score), rtol=1e-5)
        self.assertAllClose(((5 + 3) / 6) ** 0.6, numpy(generation.length_penalty(3, 0.6)))

    def test_stops_when_every_beam_has_ended(self):
        # After two steps both beams ([1] and [2, 1]) have ended.
        next_fn = counted(bigram_next_fn(SHORT_OR_LONG))
        ids, _ = generation.beam_search(
            next_fn, np.zeros((1, 1), "int32"), max_length=10, beam_width=2, end_id=1,
            return_all_beams=True,
        )
        self.assertEqual(2, next_fn.calls)
        self.assertAllEqual([[[0, 1] + [0] * 8, [0, 2, 1] + [0] * 7]], numpy(ids))
        next_fn = counted(bigram_next_fn(SHORT_OR_LONG))
        generation.beam_search(next_fn, np.zeros((1, 1), "int32"), max_length=10, beam_width=2)
        self.assertEqual(9, next_fn.calls)

    def test_stops_once_no_open_beam_can_win(self):
        # Ending at once (0.6) beats every continuation of 2, which never ends
        # (2 then 2 again, 0.9): the best is decided after one step, not nine.
        lingering = [[0.001, 0.6, 0.3, 0.099], [0.25] * 4, [0.04, 0.01, 0.9, 0.05], [0.25] * 4]
        for alpha in (0.0, 0.6, 2.0):
            with self.subTest(alpha=alpha):
                early = counted(bigram_next_fn(lingering))
                ids, score = generation.beam_search(
                    early, np.zeros((1, 1), "int32"), max_length=10, beam_width=2, end_id=1,
                    length_penalty_alpha=alpha)
                every = counted(bigram_next_fn(lingering))
                all_ids, all_scores = generation.beam_search(
                    every, np.zeros((1, 1), "int32"), max_length=10, beam_width=2, end_id=1,
                    length_penalty_alpha=alpha, return_all_beams=True)
                self.assertEqual(9, every.calls)
                self.assertAllEqual(numpy(all_ids)[:, 0], numpy(ids))
                self.assertAllClose(numpy(all_scores)[:, 0], numpy(score))
                # alpha = 2 lets a long open beam hope to win for longer.
                self.assertEqual({0.0: 1, 0.6: 1, 2.0: 9}[alpha], early.calls)

    def test_stopping_early_returns_what_decoding_on_would(self):
        prompt = np.array([[2], [0], [1], [2]], "int32")
        steps_saved = 0
        for alpha, width in itertools.product((0.0, 0.6, 1.2), (2, 3)):
            with self.subTest(alpha=alpha, width=width):
                early, every = counted(prefix_next_fn), counted(prefix_next_fn)
                best_ids, best_scores = generation.beam_search(
                    early, prompt, ops.zeros((4,)), max_length=9, beam_width=width,
                    length_penalty_alpha=alpha, end_id=END, pad_id=PAD)
                ids, scores = generation.beam_search(
                    every, prompt, ops.zeros((4,)), max_length=9, beam_width=width,
                    length_penalty_alpha=alpha, end_id=END, pad_id=PAD, return_all_beams=True)
                self.assertAllEqual(numpy(ids)[:, 0], numpy(best_ids))
                self.assertAllClose(numpy(scores)[:, 0], numpy(best_scores))
                steps_saved += every.calls - early.calls
        self.assertGreater(steps_saved, 0)

    def test_argument_errors(self):
        start = np.zeros((1, 1), "int32")
        next_fn = bigram_next_fn(SHORT_OR_LONG)
        for kwargs, fragment in (
            (dict(beam_width=0), "received: beam_width=0"),
            (dict(length_penalty_alpha=-1.0), "received: length_penalty_alpha=-1.0"),
            (dict(end_id=-1), "received: end_id=-1"),
            (dict(max_length=1), "received: max_length=1"),
        ):
            kwargs = {"max_length": 4, **kwargs}
            with self.subTest(**kwargs):
                with self.assertRaisesRegex(ValueError, "Expected .*" + fragment):
                    generation.beam_search(next_fn, start, **kwargs)
        with self.assertRaisesRegex(ValueError, "Expected `prompt` of integer ids"):
            generation.beam_search(next_fn, np.zeros((1, 1), "float32"), max_length=4)


class GreedyAndSamplingTest(tf.test.TestCase, parameterized.TestCase):
    def test_greedy_pads_after_the_end_and_stops(self):
        next_fn = counted(bigram_next_fn(SHORT_OR_LONG))
        ids = generation.greedy_search(
            next_fn, np.array([[0], [2]], "int32"), max_length=6, end_id=1
        )
        self.assertAllEqual([[0, 1, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0]], numpy(ids))
        self.assertEqual(1, next_fn.calls)

    def test_prompt_positions_are_kept(self):
        # The model would end at once; the prompt's ids stay, end ids included.
        ids = generation.greedy_search(
            bigram_next_fn(SHORT_OR_LONG), np.array([[0, 1, 3, 2]], "int32"), max_length=6,
            end_id=1, pad_id=3,
        )
        self.assertAllEqual([[0, 1, 3, 2, 1, 3]], numpy(ids))

    def test_top_k_one_is_greedy(self):
        prompt = np.array([[2], [0], [1], [2]], "int32")
        greedy = generation.greedy_search(prefix_next_fn, prompt, ops.zeros((4,)), max_length=8)
        for seed in range(3):
            sampled = generation.sample(
                prefix_next_fn, prompt, ops.zeros((4,)), max_length=8, top_k=1, seed=seed,
                temperature=2.0,
            )
            self.assertAllEqual(numpy(greedy), numpy(sampled))

    def test_top_p_stays_in_the_nucleus(self):
        # Mass before each id: 0, 0.4, 0.7, 0.9: the 0.75-nucleus is {0, 1, 2}.
        next_fn = fixed_next_fn([0.4, 0.3, 0.2, 0.1])
        ids = numpy(generation.sample(
            next_fn, np.zeros((500, 1), "int32"), max_length=3, top_p=0.75, seed=1
        ))[:, 1:]
        self.assertEqual({0, 1, 2}, set(ids.ravel()))
        ids = numpy(generation.sample(
            next_fn, np.zeros((500, 1), "int32"), max_length=3, top_p=0.3, seed=1
        ))[:, 1:]
        self.assertEqual({0}, set(ids.ravel()))

    @parameterized.parameters(1.0, 0.5)
    def test_samples_follow_the_distribution(self, temperature):
        probabilities = np.array([0.5, 0.25, 0.15, 0.1])
        ids = numpy(generation.sample(
            fixed_next_fn(probabilities), np.zeros((4000, 1), "int32"), max_length=3,
            temperature=temperature, seed=11,
        ))[:, 1:]
        expected = probabilities ** (1 / temperature)
        expected /= expected.sum()
        for position in range(2):
            frequencies = np.bincount(ids[:, position], minlength=4) / len(ids)
            self.assertAllClose(expected, frequencies, atol=0.03)

    def test_seeded_samples_repeat(self):
        next_fn = fixed_next_fn(np.full(5, 0.2))
        start = np.zeros((50, 1), "int32")

        def draw(seed):
            return numpy(generation.sample(next_fn, start, max_length=6, seed=seed))

        self.assertAllEqual(draw(4), draw(4))
        self.assertAllEqual(draw(4), draw(ops.convert_to_tensor(4)))
        self.assertNotAllEqual(draw(4), draw(5))
        keras.utils.set_random_seed(3)
        first = draw(None)
        keras.utils.set_random_seed(3)
        self.assertAllEqual(first, draw(None))

    def test_filter_logits(self):
        logits = np.log(np.array([[0.1, 0.4, 0.2, 0.3]], "float32"))
        self.assertAllEqual(
            [[False, True, False, True]], np.isfinite(numpy(generation.filter_logits(logits, 2)))
        )
        nucleus = generation.filter_logits(logits, top_p=0.6)
        self.assertAllEqual([[False, True, False, True]], np.isfinite(numpy(nucleus)))
        both = generation.filter_logits(logits, top_k=3, top_p=0.99)
        self.assertAllEqual([[False, True, True, True]], np.isfinite(numpy(both)))

    def test_argument_errors(self):
        start = np.zeros((1, 1), "int32")
        next_fn = fixed_next_fn([0.5, 0.5])
        for kwargs, fragment in (
            (dict(temperature=0.0), "received: temperature=0.0"),
            (dict(top_k=0), "received: top_k=0"),
            (dict(top_p=1.5), "received: top_p=1.5"),
            (dict(seed=1.5), "received: seed=1.5"),
        ):
            with self.subTest(**kwargs):
                with self.assertRaisesRegex(ValueError, "Expected .*" + fragment):
                    generation.sample(next_fn, start, max_length=3, **kwargs)
        with self.assertRaisesRegex(ValueError, "Expected `prompt` with a static length"):
            generation.greedy_search(next_fn, np.zeros((1, 0), "int32"), max_length=3)

    def test_imports_neither_numpy_nor_tensorflow(self):
        # Backend-agnostic graphs: keras.ops only.
        for module in (kerasattn.generation, search, sampling, _loop):
            roots = set()
            for node in ast.walk(ast.parse(inspect.getsource(module))):
                if isinstance(node, ast.Import):
                    roots.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    roots.add(node.module.split(".")[0])
            with self.subTest(module=module.__name__):
                self.assertEqual(set(), roots & {"numpy", "tensorflow", "jax", "torch"})

    def test_docstring_examples(self):
        names = {name: getattr(generation, name) for name in kerasattn.generation.__all__}
        for module in (kerasattn.generation, search, sampling):
            with self.subTest(module=module.__name__):
                result = doctest.testmod(
                    module, extraglobs={"keras": keras, "np": np, **names},
                    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                )
                self.assertEqual(0, result.failed)


class TracedDecodingTest(tf.test.TestCase):
    """The strategies on a tiny cached encoder-decoder, in graphs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = decoding_probe.TinyTranslator()
        cls.args = (decoding_probe.SOURCE, decoding_probe.SOURCE_MASK)
        cls.eager = decoding_probe.eager_outputs()

    def test_saved_model_decodes_as_eager(self):
        model = self.model
        module = tf.Module()
        # Tracking the layers saves their variables with the graphs.
        module.layers = [model.embedding, model.positions, *model.blocks, model.head]
        specs = (
            tf.TensorSpec((None, decoding_probe.SOURCE_LENGTH), tf.int32),
            tf.TensorSpec((None, decoding_probe.SOURCE_LENGTH), tf.bool),
        )
        module.greedy = tf.function(model.greedy, input_signature=specs)
        module.beam = tf.function(model.beam, input_signature=specs)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "decoder")
            tf.saved_model.save(module, path)
            reloaded = tf.saved_model.load(path)
            greedy = reloaded.greedy(*self.args)
            beam_ids, beam_scores = reloaded.beam(*self.args)
        self.assertAllEqual(self.eager["greedy"], greedy)
        self.assertAllEqual(self.eager["beam_ids"], beam_ids)
        self.assertAllClose(self.eager["beam_scores"], beam_scores, atol=1e-5)

    def test_tflite_builtins_decode_as_eager(self):
        # The whole loop in one LiteRT file of built-in ops (no Flex).
        from ai_edge_litert.interpreter import Interpreter

        model = self.model
        specs = (
            tf.TensorSpec(decoding_probe.SOURCE.shape, tf.int32),
            tf.TensorSpec(decoding_probe.SOURCE.shape, tf.bool),
        )
        for name, decode in (
            ("greedy", model.greedy),
            ("beam_ids", lambda source, mask: model.beam(source, mask)[0]),
            ("sample", model.sample),
        ):
            with self.subTest(name):
                function = tf.function(decode, input_signature=specs).get_concrete_function()
                converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                interpreter = Interpreter(model_content=converter.convert())
                interpreter.allocate_tensors()
                for detail, value in zip(interpreter.get_input_details(), self.args):
                    interpreter.set_tensor(detail["index"], value)
                interpreter.invoke()
                (output,) = interpreter.get_output_details()
                self.assertAllEqual(self.eager[name], interpreter.get_tensor(output["index"]))

    def test_xla_decodes_as_eager(self):
        model = self.model
        seed = tf.constant(3)
        compiled = {
            "greedy": tf.function(model.greedy, jit_compile=True)(*self.args),
            "beam": tf.function(model.beam, jit_compile=True)(*self.args),
            "sample": tf.function(model.sample, jit_compile=True)(*self.args, seed=seed),
        }
        self.assertAllEqual(self.eager["greedy"], compiled["greedy"])
        self.assertAllEqual(self.eager["beam_ids"], compiled["beam"][0])
        self.assertAllClose(self.eager["beam_scores"], compiled["beam"][1], atol=1e-5)
        self.assertAllEqual(self.eager["sample"], compiled["sample"])

    def test_length_chosen_in_the_graph(self):
        # A scalar tensor as max_length (a length per batch, as the translator's
        # string signatures choose it): the same ids as the int, the buffer as long.
        model = self.model
        specs = (
            tf.TensorSpec((None, decoding_probe.SOURCE_LENGTH), tf.int32),
            tf.TensorSpec((None, decoding_probe.SOURCE_LENGTH), tf.bool),
            tf.TensorSpec((), tf.int32),
        )
        greedy = tf.function(model.greedy, input_signature=specs)
        beam = tf.function(lambda source, mask, length: model.beam(source, mask, max_length=length),
                           input_signature=specs)
        for length in (decoding_probe.MAX_LENGTH, 4, 2):
            with self.subTest(length=length):
                self.assertAllEqual(model.greedy(*self.args, max_length=length),
                                    greedy(*self.args, tf.constant(length)))
                want_ids, want_scores = model.beam(*self.args, max_length=length)
                ids, scores = beam(*self.args, tf.constant(length))
                self.assertAllEqual(want_ids, ids)
                self.assertAllClose(want_scores, scores, atol=1e-5)
        with self.assertRaisesRegex(ValueError, "scalar integer tensor"):
            generation.greedy_search(model.next_fn, np.ones((2, 1), "int32"),
                                     model.initial_cache(*self.args),
                                     max_length=tf.constant([6, 6]))

    def test_jax_jit_decodes_as_tensorflow(self):
        # Sampling draws the same ids on every backend.
        other = decoding_probe.outputs_under("jax")
        self.assertEqual("jax", str(other["backend"]))
        for name in ("greedy", "beam_ids", "sample"):
            with self.subTest(name):
                self.assertAllEqual(self.eager[name], other[name])
        self.assertAllClose(self.eager["beam_scores"], other["beam_scores"], atol=1e-5)


if __name__ == "__main__":
    tf.test.main()
