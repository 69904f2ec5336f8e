"""Layer checks that run under any Keras backend (TensorFlow, JAX, PyTorch).

`tests/harness.py` checks each layer thoroughly under TensorFlow; this module
repeats the checks that most depend on the backend for every kerasattn layer
under the current one:

- serialization: `get_config` / `from_config` round trip, and a functional
  model saved to `.keras` reloads (no `custom_objects`) to identical outputs;
- masks: outputs are finite, and rows with nothing to attend to are zeros;
- gradients: finite, reaching the watched input and every trainable weight,
  and zero for inputs that nothing may attend to;
- fresh kernels differ: no two same-shape weights start identical.

    KERAS_BACKEND=jax python tests/backend_checks.py OUT.json

writes `{case: {check: "ok" or the error}}`. Imports only Keras, NumPy and
kerasattn (never TensorFlow, apart from the gradient under the TensorFlow
backend), so it runs where TensorFlow is not installed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, NamedTuple

import keras
import numpy as np
from keras import tree

from kerasattn import layers

RNG = np.random.default_rng(3)
B, T, S, D = 2, 5, 4, 8


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


QUERY = _normal(B, T, D)
VALUE = _normal(B, S, D)
# Row 1 of the batch: query positions 3, 4 padded; only key 0 real.
QUERY_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
VALUE_MASK = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], bool)
# Batch row 1, query 0 has no key at all.
NO_KEY = np.ones((B, T, S), bool)
NO_KEY[1, 0] = False
EMPTY_HISTORY = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)


class Case(NamedTuple):
    make_layer: Callable[[], keras.layers.Layer]
    args: dict  # tensor arguments (arrays, or lists of arrays)
    static: dict  # non-tensor call arguments
    zero_rows: Any = None  # index of rows of output `zero_output` that must be 0
    wrt: str | None = None  # tensor argument the gradient is taken for
    zero_grad: Any = None  # boolean array: where that gradient must be 0
    min_pairs: int = 1  # same-shape weight pairs the layer has
    zero_output: int = 0  # which output `zero_rows` indexes


def _masked_keys(mask, shape):
    """Where the gradient of a `(B, S, D)` input must vanish: keys masked
    for every query."""
    return np.broadcast_to(~np.asarray(mask, bool)[..., None], shape)


CASES = {
    "MultiHeadAttention": Case(
        # No output bias, so a query with no key gets an exactly zero output.
        lambda: layers.MultiHeadAttention(
            num_heads=2, key_dim=4, num_key_value_heads=1, use_bias=False
        ),
        dict(query=QUERY, value=VALUE, value_mask=VALUE_MASK, attention_mask=NO_KEY),
        dict(return_attention_scores=True),
        zero_rows=(1, 0),
        wrt="value",
        zero_grad=_masked_keys(VALUE_MASK, VALUE.shape),
    ),
    "MultiHeadAttention_chunked_causal": Case(
        lambda: layers.MultiHeadAttention(
            num_heads=2, key_dim=4, implementation="chunked", block_size=2
        ),
        dict(query=QUERY, value=QUERY, query_mask=QUERY_MASK),
        dict(use_causal_mask=True),
        wrt="value",
    ),
    "AdditiveAttention": Case(
        lambda: layers.AdditiveAttention(),
        dict(query=QUERY, value=VALUE, value_mask=VALUE_MASK, attention_mask=NO_KEY),
        dict(return_attention_scores=True),
        zero_rows=(1, 0),
        wrt="value",
        zero_grad=_masked_keys(VALUE_MASK, VALUE.shape),
    ),
    "DotProductAttention": Case(
        lambda: layers.DotProductAttention(score="general"),
        dict(query=QUERY, value=VALUE, value_mask=VALUE_MASK, attention_mask=NO_KEY),
        dict(return_attention_scores=True),
        zero_rows=(1, 0),
        wrt="value",
        zero_grad=_masked_keys(VALUE_MASK, VALUE.shape),
        min_pairs=0,  # one kernel
    ),
    "AttentionPooling": Case(
        lambda: layers.AttentionPooling(units=D, num_queries=D),
        dict(inputs=QUERY, mask=EMPTY_HISTORY),
        dict(return_attention_scores=True),
        zero_rows=(1,),
        wrt="inputs",
        zero_grad=_masked_keys(EMPTY_HISTORY, QUERY.shape),
    ),
    "TargetAttention": Case(
        lambda: layers.TargetAttention(hidden_units=(4 * D, 4 * D)),
        dict(query=VALUE[:, 0], value=QUERY, value_mask=EMPTY_HISTORY),
        dict(return_attention_scores=True),
        zero_rows=(1,),
        wrt="value",
        zero_grad=_masked_keys(EMPTY_HISTORY, QUERY.shape),
    ),
    "CrossLayerAttention": Case(
        lambda: layers.CrossLayerAttention(),
        dict(inputs=[QUERY, QUERY * 0.5, -QUERY], mask=QUERY_MASK),
        dict(return_attention_scores=True),
        zero_rows=(1, slice(3, None)),
        wrt="inputs",
    ),
    "TransformerEncoderBlock": Case(
        lambda: layers.TransformerEncoderBlock(
            num_heads=2, intermediate_dim=16, norm_first=True, sliding_window=2
        ),
        dict(inputs=QUERY, padding_mask=EMPTY_HISTORY),
        dict(return_attention_scores=True),
        # The output has residuals; the scores of the empty row are zeros.
        zero_rows=(1,),
        zero_output=1,
        wrt="inputs",
    ),
    "TransformerDecoderBlock": Case(
        lambda: layers.TransformerDecoderBlock(num_heads=2, intermediate_dim=16),
        dict(
            decoder_sequence=QUERY,
            encoder_sequence=VALUE,
            encoder_padding_mask=VALUE_MASK & np.array([[True], [False]]),
        ),
        dict(return_attention_scores=True),
        # Batch row 1 has no encoder position: its cross-attention scores are 0.
        zero_rows=(1,),
        zero_output=2,
        wrt="encoder_sequence",
        zero_grad=_masked_keys(VALUE_MASK & np.array([[True], [False]]), VALUE.shape),
    ),
    "PositionEmbedding": Case(
        lambda: layers.PositionEmbedding(sequence_length=T),
        dict(inputs=QUERY),
        {},
        min_pairs=0,  # one table
    ),
    "SinusoidalPositionEncoding": Case(
        lambda: layers.SinusoidalPositionEncoding(), dict(inputs=QUERY), {}, min_pairs=0
    ),
    "RotaryEmbedding": Case(
        lambda: layers.RotaryEmbedding(), dict(inputs=QUERY), {}, wrt="inputs", min_pairs=0
    ),
    # Integer tags have no gradient (tests/test_crf.py checks the
    # log-likelihood's under JAX); row 1, with no real token, decodes to 0.
    "CRF": Case(
        lambda: layers.CRF(num_tags=D), dict(potentials=QUERY, mask=EMPTY_HISTORY), {},
        zero_rows=(1,), min_pairs=0,
    ),
}


def _numpy(x):
    return tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), x)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def _loss(outputs):
    """A weighted sum of the main output: weights that vary along the last
    axis, because a plain sum after a layer normalisation has a zero gradient
    (only rounding noise would reach the inputs)."""
    main = keras.ops.cast(_first(outputs), "float32")
    weights = keras.ops.cos(keras.ops.arange(main.shape[-1], dtype="float32"))
    return keras.ops.sum(main * weights)


def _tensors(args):
    return tree.map_structure(keras.ops.convert_to_tensor, args)


def identical_fresh_weights(layer: keras.layers.Layer) -> tuple[int, list]:
    """Compares every pair of same-shape, non-constant weights of a built
    layer; returns (pairs compared, [(path, path)] of identical pairs)."""
    weights = [
        (w.path, np.asarray(keras.ops.convert_to_numpy(w.value)))
        for w in layer.weights
    ]
    # Constant weights (zero biases, unit scales) are equal by design.
    weights = [(path, value) for path, value in weights if value.size > 1 and np.ptp(value) > 0]
    compared, identical = 0, []
    for i, (path_a, a) in enumerate(weights):
        for path_b, b in weights[i + 1 :]:
            if a.shape == b.shape:
                compared += 1
                if np.allclose(a, b):
                    identical.append((path_a, path_b))
    return compared, identical


def symbolic_inputs(args: dict) -> dict:
    """`keras.Input`s mirroring `args` (arrays, or lists of them), batch left dynamic.

    Inputs are named after their argument (and index, for lists) so that a
    model called with the `args` dict matches them by name.
    """

    def make_input(name, array):
        array = np.asarray(array)
        return keras.Input(shape=array.shape[1:], dtype=str(array.dtype), name=name)

    return {
        key: [make_input(f"{key}_{i}", a) for i, a in enumerate(value)]
        if isinstance(value, (list, tuple))
        else make_input(key, value)
        for key, value in args.items()
    }


def check_fresh_kernels(case: Case) -> None:
    layer = case.make_layer()
    layer(**_tensors(case.args), **case.static)
    compared, identical = identical_fresh_weights(layer)
    assert not identical, f"weights initialized to identical values: {identical}"
    assert compared >= case.min_pairs, f"compared {compared} same-shape weight pairs"


def check_serialization(case: Case) -> None:
    layer = case.make_layer()
    config = layer.get_config()
    restored = layer.__class__.from_config(config)
    assert restored.get_config() == config, "from_config(get_config()) changed the config"

    symbolic = symbolic_inputs(case.args)
    model = keras.Model(symbolic, layer(**symbolic, **case.static))
    expected = _numpy(model(case.args))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    got = _numpy(reloaded(case.args))
    for want, have in zip(tree.flatten(expected), tree.flatten(got)):
        np.testing.assert_array_equal(want, have)
    kinds = [inner.__class__ for inner in reloaded.layers]
    assert layer.__class__ in kinds, "the reloaded model lost the layer's class"


def check_masks(case: Case) -> None:
    layer = case.make_layer()
    outputs = _numpy(layer(**_tensors(case.args), **case.static))
    for x in tree.flatten(outputs):
        assert np.all(np.isfinite(x)), "non-finite output"
    if case.zero_rows is not None:
        main = outputs[case.zero_output] if isinstance(outputs, (tuple, list)) else outputs
        rows = main[case.zero_rows]
        np.testing.assert_array_equal(np.zeros_like(rows), rows)


def _gradients(layer, args, static, wrt):
    """Gradients of the main output's weighted sum (`_loss`) w.r.t.
    `args[wrt]` (each tensor of a list) and the trainable weights, with the
    current backend's autodiff."""
    backend = keras.backend.backend()
    tensors = _tensors(args)
    layer(**tensors, **static)  # builds the layer
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, watched):
            outputs, _ = layer.stateless_call(
                trainable, non_trainable, **{**tensors, wrt: watched}, **static
            )
            return _loss(outputs)

        weight_grads, input_grads = jax.grad(loss, argnums=(0, 1))(trainable, tensors[wrt])
        return tree.flatten(input_grads), list(weight_grads)
    if backend == "tensorflow":
        import tensorflow as tf

        watched = tree.flatten(tensors[wrt])
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outputs = layer(**tensors, **static)
            loss = _loss(outputs)
        grads = tape.gradient(loss, watched + [v.value for v in layer.trainable_variables])
        return grads[: len(watched)], grads[len(watched) :]
    if backend == "torch":
        import torch

        watched = [t.detach().requires_grad_(True) for t in tree.flatten(tensors[wrt])]
        packed = tree.pack_sequence_as(tensors[wrt], watched)
        outputs = layer(**{**tensors, wrt: packed}, **static)
        loss = _loss(outputs)
        variables = [v.value for v in layer.trainable_variables]
        grads = torch.autograd.grad(loss, watched + variables, allow_unused=True)
        return list(grads[: len(watched)]), list(grads[len(watched) :])
    raise ValueError(f"no gradient for backend {backend}")


def check_gradients(case: Case) -> None:
    if case.wrt is None:
        return
    layer = case.make_layer()
    input_grads, weight_grads = _gradients(layer, case.args, case.static, case.wrt)
    for grad in input_grads:
        assert grad is not None, f"no gradient reaches `{case.wrt}`"
        grad = _numpy(grad)
        assert np.all(np.isfinite(grad)), "non-finite input gradient"
        assert np.any(grad != 0), f"zero gradient for `{case.wrt}`"
    for variable, grad in zip(layer.trainable_variables, weight_grads):
        assert grad is not None, f"no gradient reaches {variable.path}"
        assert np.all(np.isfinite(_numpy(grad))), f"non-finite gradient of {variable.path}"
    if case.zero_grad is not None:
        masked = _numpy(input_grads[0])[np.asarray(case.zero_grad, bool)]
        np.testing.assert_allclose(masked, 0.0, atol=1e-7)


CHECKS = {
    "serialization": check_serialization,
    "masks": check_masks,
    "gradients": check_gradients,
    "fresh_kernels_differ": check_fresh_kernels,
}


def run_all() -> dict:
    """{case: {check: "ok" or the error's traceback}} under the current backend."""
    results = {}
    for name, case in CASES.items():
        results[name] = {}
        for check_name, check in CHECKS.items():
            keras.utils.set_random_seed(1234)
            try:
                check(case)
                results[name][check_name] = "ok"
            except Exception:  # reported, and asserted on by the caller
                results[name][check_name] = traceback.format_exc(limit=4)
    return results


def main(path: str) -> None:
    results = {"backend": keras.backend.backend(), "results": run_all()}
    with open(path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
