"""`kerasattn.prune`: no-op removal, removal equals gating, round trip, export parity,
a decoder block's self- and cross-attention heads (cached decoding after pruning),
importance against finite differences, selection, recovery and the schedule."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from kerasattn import prune
from kerasattn.export import export
from kerasattn.layers import MultiHeadAttention
from kerasattn.layers import TransformerDecoderBlock
from kerasattn.layers import TransformerEncoderBlock
from tests import harness

WIDTH = 16
LENGTH = 6


def _every_kind_model(dtype: str = "float32") -> keras.Model:
    """Each prunable kind once: a post-norm block with grouped-query heads, a
    pre-norm block, a gated `MultiHeadAttention` without biases, a decoder block
    (smooth activations, so that finite differences match gradients)."""
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(50, WIDTH, name="embedding", dtype=dtype)(tokens)
    x = TransformerEncoderBlock(num_heads=4, intermediate_dim=12, num_key_value_heads=2,
                                activation="gelu", name="post_block", dtype=dtype)(x)
    x = TransformerEncoderBlock(num_heads=4, intermediate_dim=10, norm_first=True,
                                activation="gelu", name="pre_block", dtype=dtype)(x)
    x = MultiHeadAttention(num_heads=3, key_dim=5, use_gate=True, use_bias=False,
                           name="gated_attention", dtype=dtype)(x, x)
    x = TransformerDecoderBlock(num_heads=2, intermediate_dim=8, activation="gelu",
                                name="decoder_block", dtype=dtype)(x, x)
    pooled = keras.layers.GlobalAveragePooling1D(dtype=dtype)(x)
    logits = keras.layers.Dense(3, name="logits", dtype=dtype)(pooled)
    return keras.Model(tokens, logits)


def _tokens(batch: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 50, (batch, LENGTH)).astype("int32")


# Kept heads and units of every group, and the same as gates.
KEEP = {
    "post_block/self_attention": [2, 3],  # one whole key/value group of two
    "post_block/feedforward": [0, 3, 4, 7, 11],
    "pre_block/self_attention": [0, 1, 3],
    "pre_block/feedforward": [9],
    "gated_attention": [1],
    "decoder_block/self_attention": [1],
    "decoder_block/cross_attention": [0],
    "decoder_block/feedforward": [1, 2, 5],
}


def _gates(model: keras.Model, keep) -> dict:
    sizes = {group.path: group.size for group in prune.find_prunable(model)}
    return {path: [float(i in kept) for i in range(sizes[path])] for path, kept in keep.items()}


class PruneModelTest(harness.LayerTestCase):
    def test_finds_every_prunable_group(self):
        groups = {(g.path, g.kind, g.size, g.group_size) for g in
                  prune.find_prunable(_every_kind_model())}
        self.assertEqual({
            ("post_block/self_attention", "heads", 4, 2),
            ("post_block/feedforward", "units", 12, 1),
            ("pre_block/self_attention", "heads", 4, 1), ("pre_block/feedforward", "units", 10, 1),
            ("gated_attention", "heads", 3, 1), ("decoder_block/self_attention", "heads", 2, 1),
            ("decoder_block/cross_attention", "heads", 2, 1),
            ("decoder_block/feedforward", "units", 8, 1),
        }, groups)

    def test_removing_nothing_reproduces_the_model_exactly(self):
        model = _every_kind_model()
        full = {g.path: range(g.size) for g in prune.find_prunable(model)}
        for keep in ({}, full):
            same = prune.prune_model(model, keep)
            self.assertEqual(model.count_params(), same.count_params())
            np.testing.assert_array_equal(model(_tokens()), same(_tokens()))

    def test_removing_equals_gating_to_zero_in_every_layer_kind(self):
        model = _every_kind_model()
        pruned = prune.prune_model(model, KEEP)
        for path, kept in KEEP.items():
            with self.subTest(group=path):
                alone = prune.prune_model(model, {path: kept})
                with prune.gated(model, _gates(model, {path: kept})):
                    expected = model(_tokens())
                np.testing.assert_allclose(expected, alone(_tokens()), atol=1e-5)
        with prune.gated(model, _gates(model, KEEP)):
            expected = model(_tokens())
        np.testing.assert_allclose(expected, pruned(_tokens()), atol=1e-5)
        sizes = {g.path: g.size for g in prune.find_prunable(pruned)}
        self.assertEqual({path: len(kept) for path, kept in KEEP.items()}, sizes)
        attention = pruned.get_layer("post_block")._self_attention
        self.assertEqual((2, 1), (attention.num_heads, attention.num_key_value_heads))
        self.assertLess(pruned.count_params(), model.count_params())

    def test_gating_restores_the_kernels(self):
        model = _every_kind_model()
        before = model(_tokens())
        with prune.gated(model, _gates(model, KEEP)):
            self.assertNotAllClose(before, model(_tokens()))
        np.testing.assert_array_equal(before, model(_tokens()))

    def test_keras_round_trip_of_a_pruned_model(self):
        pruned = prune.prune_model(_every_kind_model(), KEEP)
        path = os.path.join(self.get_temp_dir(), "pruned.keras")
        pruned.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(pruned(_tokens()), reloaded(_tokens()), atol=1e-6)
        self.assertEqual(pruned.count_params(), reloaded.count_params())

    def test_export_parity_of_a_pruned_model(self):
        pruned = prune.prune_model(_every_kind_model(), KEEP)
        out = os.path.join(self.get_temp_dir(), "exported")
        manifest = export(pruned, out, formats=("tflite", "onnx"), quantize=("float32",),
                          sample_inputs={"token_ids": _tokens()}, latency_runs=1)
        for artifact in ("tflite_float32", "onnx"):
            entry = manifest["artifacts"][artifact]
            self.assertLessEqual(entry["max_abs_difference"], entry["tolerance"])

    def test_bad_plans_raise_one_line_errors(self):
        model = _every_kind_model()
        self.assert_value_error(lambda: prune.prune_model(model, {"nowhere": [0]}),
                                "Expected paths of prunable groups", "nowhere")
        self.assert_value_error(
            lambda: prune.prune_model(model, {"post_block/self_attention": [0, 2]}),
            "whole key/value groups of 2")
        self.assert_value_error(lambda: prune.prune_model(model, {"pre_block/feedforward": []}),
                                "Expected between 1 and 10 indices")
        self.assert_value_error(lambda: prune.gated(model, {"gated_attention": [1.0]}).__enter__(),
                                "Expected 3 gates")

    def test_a_model_whose_config_does_not_list_its_layers_needs_a_rebuild(self):
        class Wrapped(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.block = TransformerEncoderBlock(num_heads=2, intermediate_dim=4)

            def call(self, x):
                return self.block(x)

        model = Wrapped()
        model(np.zeros((1, 3, 8), "float32"))
        path = [g.path for g in prune.find_prunable(model) if g.kind == "units"][0]
        self.assert_value_error(lambda: prune.prune_model(model, {path: [0]}),
                                "needs a `rebuild` function")


def _decoder_model() -> keras.Model:
    """One decoder block with grouped-query heads (two query heads per key/value
    head) over an encoder sequence."""
    target = keras.Input((None, WIDTH), name="target")
    source = keras.Input((None, WIDTH), name="source")
    outputs = TransformerDecoderBlock(num_heads=4, intermediate_dim=12, num_key_value_heads=2,
                                      name="decoder")(target, source)
    return keras.Model({"target": target, "source": source}, outputs)


def _decoder_inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"target": rng.normal(size=(2, LENGTH, WIDTH)).astype("float32"),
            "source": rng.normal(size=(2, 5, WIDTH)).astype("float32")}


class DecoderBlockPruneTest(harness.LayerTestCase):
    """A decoder block's self- and cross-attention heads are pruned apart."""

    KEEP = {"decoder/self_attention": [2, 3], "decoder/cross_attention": [0, 1, 2, 3],
            "decoder/feedforward": [0, 4, 7]}

    def test_self_and_cross_attention_heads_are_groups_of_their_own(self):
        groups = {(g.path, g.size, g.group_size) for g in prune.find_prunable(_decoder_model())
                  if g.kind == "heads"}
        self.assertEqual({("decoder/self_attention", 4, 2), ("decoder/cross_attention", 4, 2)},
                         groups)

    def test_removing_equals_gating_for_self_and_cross_attention(self):
        model = _decoder_model()
        inputs = _decoder_inputs()
        for keep in ({"decoder/self_attention": [0, 1]}, {"decoder/cross_attention": [2, 3]},
                     self.KEEP,
                     # Either attention first: what one changes, the other's pins leave.
                     {"decoder/cross_attention": [2, 3], "decoder/self_attention": [0, 1]}):
            with self.subTest(keep=sorted(keep)):
                pruned = prune.prune_model(model, keep)
                with prune.gated(model, _gates(model, keep)):
                    expected = model(inputs)
                np.testing.assert_allclose(expected, pruned(inputs), atol=1e-5)
        pruned = prune.prune_model(model, {"decoder/cross_attention": [2, 3]})
        block = pruned.get_layer("decoder")
        # The self-attention keeps its four heads when only the cross-attention loses two.
        self.assertEqual((4, 2), (block._self_attention.num_heads,
                                  block._self_attention.num_key_value_heads))
        self.assertEqual((2, 1), (block._cross_attention.num_heads,
                                  block._cross_attention.num_key_value_heads))
        same = prune.prune_model(model, {g.path: range(g.size)
                                         for g in prune.find_prunable(model)})
        np.testing.assert_array_equal(model(inputs), same(inputs))

    def test_keras_round_trip_of_a_pruned_decoder_block(self):
        pruned = prune.prune_model(_decoder_model(), {"decoder/self_attention": [2, 3]})
        path = os.path.join(self.get_temp_dir(), "decoder.keras")
        pruned.save(path)
        reloaded = keras.saving.load_model(path)
        block = reloaded.get_layer("decoder")
        self.assertEqual((2, 4), (block.num_heads, block.cross_attention_num_heads))
        np.testing.assert_allclose(pruned(_decoder_inputs()), reloaded(_decoder_inputs()),
                                   atol=1e-6)

    def test_incremental_decoding_equals_the_full_pass_after_pruning(self):
        block = prune.prune_model(_decoder_model(), self.KEEP).get_layer("decoder")
        inputs = _decoder_inputs(seed=3)
        target, source = inputs["target"], inputs["source"]
        source_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
        full = block(target, source, encoder_padding_mask=source_mask)
        cache = block.initial_cache(batch_size=2, max_length=LENGTH)
        cross_cache = block.compute_cross_attention_cache(source)
        self.assertEqual((2, 1, 4, LENGTH), tuple(cache[0].shape))  # one key/value head left
        self.assertEqual((2, 2, 5, 4), tuple(cross_cache[1].shape))
        steps = []
        for index in range(LENGTH):
            output, cache = block(target[:, index:index + 1], encoder_padding_mask=source_mask,
                                  self_attention_cache=cache,
                                  self_attention_cache_update_index=index,
                                  cross_attention_cache=cross_cache)
            steps.append(output)
        np.testing.assert_allclose(full, keras.ops.concatenate(steps, axis=1), atol=1e-5)

    def test_cross_attention_heads_must_keep_the_grouping(self):
        self.assert_value_error(
            lambda: TransformerDecoderBlock(num_heads=4, intermediate_dim=8,
                                            num_key_value_heads=2, cross_attention_num_heads=3),
            "Expected `cross_attention_num_heads` divisible by", "received: "
            "cross_attention_num_heads=3")


def _loss(y_true, y_pred, sample_weight=None):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y_true, y_pred, sample_weight)


class ImportanceTest(harness.LayerTestCase):
    def test_scores_are_normalised_absolute_gate_gradients(self):
        # The score of head (unit) i before normalisation is |d loss / d g_i| at
        # g = 1, here checked against a central finite difference of gated losses
        # (float64, though the softmax runs in float32: a loose tolerance).
        model = _every_kind_model("float64")
        tokens, labels = _tokens(8, seed=1), np.arange(8) % 3
        scores = prune.importance(model, [(tokens, labels)], _loss)
        epsilon = 1e-2
        for group in prune.find_prunable(model):
            with self.subTest(group=group.path):
                differences = []
                for index in range(group.size):
                    losses = []
                    for gate in (1 + epsilon, 1 - epsilon):
                        gates = np.ones(group.size)
                        gates[index] = gate
                        with prune.gated(model, {group.path: gates}):
                            losses.append(float(_loss(labels, model(tokens))))
                    differences.append(abs(losses[0] - losses[1]) / (2 * epsilon))
                differences = np.asarray(differences)
                np.testing.assert_allclose(
                    differences / np.linalg.norm(differences), scores[group.path],
                    rtol=2e-2, atol=1e-3)

    def test_jax_scores_equal_tensorflow_scores(self):
        from tests import prune_probe

        expected = prune_probe.scores()
        with harness.script_output_under_backend("jax", "prune_probe.py", "scores.npz") as path:
            scores = dict(np.load(path))
        self.assertEqual(sorted(p.replace("/", ".") for p in expected), sorted(scores))
        for path, value in expected.items():
            np.testing.assert_allclose(value, scores[path.replace("/", ".")], atol=1e-4)

    def test_scores_accumulate_over_batches(self):
        model = _every_kind_model()
        batches = [(_tokens(4, seed), np.arange(4) % 3) for seed in range(3)]
        once = prune.importance(model, batches[:1], _loss)
        twice = prune.importance(model, batches[:1] * 2, _loss)
        limited = prune.importance(model, batches * 5, _loss, max_batches=1)
        for path in once:
            np.testing.assert_allclose(once[path], twice[path], rtol=1e-5)
            np.testing.assert_allclose(once[path], limited[path], rtol=1e-5)
        self.assert_value_error(lambda: prune.importance(model, [], _loss), "at least one batch")

    def test_select_removes_the_least_important_across_layers(self):
        model = _every_kind_model()
        scores = {g.path: np.linspace(1, 2, g.size) for g in prune.find_prunable(model)}
        scores["pre_block/self_attention"] = np.array([0.1, 0.9, 0.05, 0.8])
        keep = prune.select(model, scores, remove_heads=2, remove_units=3)
        self.assertEqual([1, 3], keep["pre_block/self_attention"])
        self.assertEqual(list(range(4)), keep["post_block/self_attention"])
        removed = sum(g.size - len(keep[g.path]) for g in prune.find_prunable(model)
                      if g.kind == "units")
        self.assertEqual(3, removed)

    def test_select_keeps_one_key_value_group_and_one_unit_per_layer(self):
        model = _every_kind_model()
        scores = {g.path: np.zeros(g.size) for g in prune.find_prunable(model)}
        keep = prune.select(model, scores, remove_heads=100, remove_units=100)
        # Ties go in order, so the last of each layer stays.
        self.assertEqual([2, 3], keep["post_block/self_attention"])
        self.assertEqual([2], keep["gated_attention"])
        self.assertEqual([7], keep["decoder_block/feedforward"])
        pruned = prune.prune_model(model, keep)
        self.assertEqual([1], keep["decoder_block/cross_attention"])
        self.assertEqual({"heads": 6, "units": 3}, prune.counts(pruned))


class RecoveryTest(harness.LayerTestCase):
    def test_distillation_loss_matches_its_formula(self):
        rng = np.random.default_rng(0)
        student, teacher = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
        labels = np.array([0, 1, 2, 1, 0])
        loss = prune.DistillationLoss(alpha=0.3, temperature=2.0)
        value = float(loss(labels, np.concatenate([student, teacher], -1).astype("float32")))

        def log_softmax(x):
            x = x - x.max(-1, keepdims=True)
            return x - np.log(np.exp(x).sum(-1, keepdims=True))

        task = -log_softmax(student)[np.arange(5), labels]
        soft = np.exp(log_softmax(teacher / 2))
        kl = (soft * (log_softmax(teacher / 2) - log_softmax(student / 2))).sum(-1)
        self.assertAllClose(np.mean(0.7 * task + 0.3 * 4 * kl), value, atol=1e-5)

    def test_distilled_fine_tuning_moves_the_student_towards_the_teacher(self):
        teacher = _every_kind_model()
        student = prune.prune_model(teacher, KEEP)
        tokens = _tokens(16, seed=2)
        dataset = tf.data.Dataset.from_tensors((tokens, np.arange(16) % 3)).repeat()

        def divergence():  # KL(teacher ‖ student) of the softmax outputs
            log_p = keras.ops.log_softmax(teacher(tokens), -1)
            log_q = keras.ops.log_softmax(student(tokens), -1)
            return float(keras.ops.mean(keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), -1)))

        before = divergence()
        weights = [w.numpy().copy() for w in teacher.weights]
        prune.fine_tune(student, dataset, steps=30, teacher=teacher, alpha=1.0,
                        temperature=1.0, learning_rate=3e-3)
        self.assertLess(divergence(), before / 2)
        for weight, value in zip(teacher.weights, weights):
            np.testing.assert_array_equal(value, weight.numpy())

    def test_fine_tuning_checks_its_steps(self):
        self.assert_value_error(lambda: prune.fine_tune(_every_kind_model(), [], steps=0),
                                "Expected `steps` to be a positive int")


class ScheduleTest(harness.LayerTestCase):
    def test_stops_at_the_tolerance_and_keeps_the_last_accepted_model(self):
        model = _every_kind_model()
        metrics = iter([0.90, 0.89, 0.80])  # baseline, step 1, step 2
        batches = [(_tokens(4), np.arange(4) % 3)]
        lines = []
        result = prune.prune_iteratively(
            model, heads=0.5, units=0.5, num_steps=3, batches=lambda: batches, loss=_loss,
            evaluate=lambda m: next(metrics), tolerance=0.02, progress=lines.append)
        self.assertEqual([True, True, False], [step.accepted for step in result.steps])
        self.assertEqual(4, len(lines))  # a step's scoring, then its outcome
        self.assertRegex(lines[0], r"^step 1/3: scoring heads and units to remove \d+ heads")
        self.assertIn("beyond the tolerance", lines[-1])
        first = result.steps[1]
        self.assertEqual(first.parameters, result.model.count_params())
        left = prune.counts(result.model)
        self.assertAlmostEqual(first.heads_removed, 1 - left["heads"] / 15)
        self.assertGreater(first.units_removed, 0)
        self.assertLess(result.steps[2].parameters, first.parameters)

    def test_reaches_the_targets_within_the_tolerance(self):
        model = _every_kind_model()
        batches = [(_tokens(4), np.arange(4) % 3)]
        result = prune.prune_iteratively(
            model, heads=0.4, units=0.5, num_steps=2, batches=lambda: batches, loss=_loss,
            evaluate=lambda m: 1.0, tolerance=0.0)
        left = prune.counts(result.model)
        self.assertEqual(15 - 6, left["heads"])  # 40 % of 15 query heads
        self.assertEqual(30 - 15, left["units"])
        self.assert_value_error(
            lambda: prune.prune_iteratively(model, heads=1.0, units=0, num_steps=1,
                                            batches=lambda: batches, loss=_loss,
                                            evaluate=lambda m: 1.0, tolerance=0),
            "Expected `heads` in [0, 1)")
