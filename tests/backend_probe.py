"""Runs every kerasattn layer on fixed weights and inputs under the current
Keras backend and saves the outputs, so that backends can be compared.

    KERAS_BACKEND=jax python tests/backend_probe.py OUT.npz

Imports only Keras, NumPy and kerasattn (never TensorFlow), so it also runs
where TensorFlow is not installed.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from kerasattn import layers

RNG = np.random.default_rng(7)
B, T, S, D = 2, 5, 4, 8
QUERY = RNG.normal(size=(B, T, D)).astype("float32")
VALUE = RNG.normal(size=(B, S, D)).astype("float32")
QUERY_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
VALUE_MASK = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], bool)
NO_KEYS = np.ones((B, T, S), bool)
NO_KEYS[1, 0] = False  # a query with nothing to attend to

CASES = {
    "mha": (
        lambda: layers.MultiHeadAttention(num_heads=2, key_dim=4, num_key_value_heads=1),
        dict(query=QUERY, value=VALUE, value_mask=VALUE_MASK, attention_mask=NO_KEYS,
             return_attention_scores=True),
    ),
    "mha_causal_chunked": (
        lambda: layers.MultiHeadAttention(
            num_heads=2, key_dim=4, implementation="chunked", block_size=2
        ),
        dict(query=QUERY, value=QUERY, query_mask=QUERY_MASK, use_causal_mask=True),
    ),
    "additive": (
        lambda: layers.AdditiveAttention(units=6),
        dict(query=QUERY, value=VALUE, value_mask=VALUE_MASK, attention_mask=NO_KEYS,
             return_attention_scores=True),
    ),
    "general": (
        lambda: layers.DotProductAttention(score="general"),
        dict(query=QUERY, value=VALUE, value_mask=VALUE_MASK, return_attention_scores=True),
    ),
    "pooling": (
        lambda: layers.AttentionPooling(units=6, num_queries=2),
        dict(inputs=QUERY, mask=QUERY_MASK, return_attention_scores=True),
    ),
    "target": (
        lambda: layers.TargetAttention(hidden_units=(6,)),
        dict(query=VALUE[:, 0], value=QUERY, value_mask=QUERY_MASK, return_attention_scores=True),
    ),
    "cross_layer": (
        lambda: layers.CrossLayerAttention(),
        dict(inputs=[QUERY, QUERY * 0.5, -QUERY], mask=QUERY_MASK, return_attention_scores=True),
    ),
    "encoder": (
        lambda: layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16, norm_first=True),
        dict(inputs=QUERY, mask=QUERY_MASK, return_attention_scores=True),
    ),
    "decoder": (
        lambda: layers.TransformerDecoderBlock(num_heads=2, intermediate_dim=16),
        dict(decoder_sequence=QUERY, encoder_sequence=VALUE,
             encoder_padding_mask=VALUE_MASK, return_attention_scores=True),
    ),
    "positions": (
        lambda: layers.PositionEmbedding(sequence_length=T),
        dict(inputs=QUERY),
    ),
    "sinusoidal": (lambda: layers.SinusoidalPositionEncoding(), dict(inputs=QUERY)),
    "rotary": (lambda: layers.RotaryEmbedding(), dict(inputs=QUERY)),
}


def run_case(make_layer, kwargs) -> list[np.ndarray]:
    layer = make_layer()
    layer(**kwargs)  # builds the weights
    # The same weights on every backend, in creation order.
    weights = np.random.default_rng(11)
    layer.set_weights(
        [weights.normal(scale=0.3, size=w.shape).astype("float32") for w in layer.get_weights()]
    )
    outputs = layer(**kwargs)
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in outputs]


def main(path: str) -> None:
    results = {}
    for name, (make_layer, kwargs) in CASES.items():
        for i, output in enumerate(run_case(make_layer, kwargs)):
            results[f"{name}/{i}"] = output
    np.savez(path, backend=keras.backend.backend(), **results)


if __name__ == "__main__":
    main(sys.argv[1])
