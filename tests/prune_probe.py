"""Writes `kerasattn.prune.importance` scores of a fixed model to an .npz file.

Run by `tests/test_prune.py` under each Keras backend: `python tests/prune_probe.py OUT`
with `KERAS_BACKEND` set. The weights and data come from NumPy with fixed seeds, so every
backend scores the same model.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from kerasattn import prune
from kerasattn.layers import TransformerEncoderBlock


def scores() -> dict:
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(30, 16)(tokens)
    x = TransformerEncoderBlock(num_heads=4, intermediate_dim=12, activation="gelu",
                                name="block")(x)
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(tokens, logits)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    batches = [(rng.integers(1, 30, (8, 5)).astype("int32"), rng.integers(0, 3, 8))
               for _ in range(2)]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return prune.importance(model, batches, loss)


if __name__ == "__main__":
    result = scores()
    np.savez(sys.argv[1], **{path.replace("/", "."): value for path, value in result.items()})
