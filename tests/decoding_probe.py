"""A tiny encoder-decoder on fixed weights, decoded with the key/value caches
of `TransformerDecoderBlock` and the strategies of `kerasattn.generation`,
under the current Keras backend; the outputs are saved so that backends can
be compared.

    KERAS_BACKEND=jax python tests/decoding_probe.py OUT.npz

Imports only Keras, NumPy and kerasattn (never TensorFlow), so it also runs
where TensorFlow is not installed. Under JAX the teacher-forced step loop and
the strategies run inside `jax.jit`.
"""

from __future__ import annotations

import functools
import sys

import keras
import numpy as np
from keras import ops

from kerasattn import generation
from kerasattn import layers

VOCAB, WIDTH, SOURCE_LENGTH, MAX_LENGTH = 7, 8, 5, 6
START, END, PAD = 1, 2, 0
RNG = np.random.default_rng(23)
SOURCE = RNG.integers(3, VOCAB, size=(2, SOURCE_LENGTH)).astype("int32")
SOURCE_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
TARGET = np.concatenate(
    [np.full((2, 1), START), RNG.integers(3, VOCAB, size=(2, MAX_LENGTH - 1))], axis=1
).astype("int32")


class TinyTranslator:
    """Embeddings, two decoder blocks (grouped-query, pre- and post-norm)
    over the source embeddings, and an output projection, with weights drawn
    from a fixed NumPy generator (so every backend holds the same ones)."""

    def __init__(self, seed: int = 5):
        # Zero-initialized (the weights are assigned below) and built from
        # shapes: JAX compiles each random initializer, and each op of an
        # eager call.
        self.embedding = keras.layers.Embedding(VOCAB, WIDTH, embeddings_initializer="zeros")
        self.positions = keras.layers.Embedding(
            MAX_LENGTH, WIDTH, embeddings_initializer="zeros"
        )
        self.blocks = [
            layers.TransformerDecoderBlock(
                num_heads=2, intermediate_dim=16, num_key_value_heads=1, norm_first=norm_first,
                kernel_initializer="zeros",
            )
            for norm_first in (True, False)
        ]
        self.head = keras.layers.Dense(VOCAB, kernel_initializer="zeros")
        self.embedding.build((None, None))
        self.positions.build((None,))
        for block in self.blocks:
            block.build((None, None, WIDTH), (None, None, WIDTH))
        self.head.build((None, None, WIDTH))
        rng = np.random.default_rng(seed)
        for variable in self.variables:
            variable.assign(0.5 * rng.normal(size=variable.shape).astype("float32"))

    @property
    def variables(self):
        parts = [self.embedding, self.positions, *self.blocks, self.head]
        return [variable for part in parts for variable in part.weights]

    def encode(self, source):
        return self.embedding(source)

    def embed(self, ids, start):
        length = ops.shape(ids)[1]
        positions = ops.arange(length, dtype="int32") + ops.cast(start, "int32")
        return self.embedding(ids) + self.positions(positions)[None]

    def forward(self, source, source_mask, target):
        """The full causal pass: logits `(B, T, V)` of every next token."""
        encoded = self.encode(source)
        x = self.embed(target, 0)
        for block in self.blocks:
            x = block(x, encoded, encoder_padding_mask=source_mask)
        return self.head(x)

    def initial_cache(self, source, source_mask, max_length=MAX_LENGTH):
        """`(self-attention caches, cross-attention caches, source mask)`."""
        encoded = self.encode(source)
        batch = ops.shape(source)[0]
        return (
            tuple(block.initial_cache(batch, max_length) for block in self.blocks),
            tuple(block.compute_cross_attention_cache(encoded) for block in self.blocks),
            ops.convert_to_tensor(source_mask),
        )

    def next_fn(self, ids, cache, index):
        """`kerasattn.generation`'s step: the token at `index - 1` in, the
        logits of position `index` out."""
        self_caches, cross_caches, source_mask = cache
        x = self.embed(ops.take(ids, ops.expand_dims(index - 1, 0), axis=1), index - 1)
        updated = []
        for block, self_cache, cross_cache in zip(self.blocks, self_caches, cross_caches):
            x, self_cache = block(
                x,
                encoder_padding_mask=source_mask,
                self_attention_cache=self_cache,
                self_attention_cache_update_index=index - 1,
                cross_attention_cache=cross_cache,
            )
            updated.append(self_cache)
        logits = ops.cast(self.head(x)[:, 0], "float32")
        return logits, (tuple(updated), cross_caches, source_mask)

    def step_logits(self, source, source_mask, target):
        """Teacher-forced cached decoding of `target`, one position per
        `while_loop` step: the logits `(B, T, V)` that `forward` computes."""
        batch, length = ops.shape(target)[0], target.shape[1]
        logits = ops.zeros((batch, length, VOCAB), dtype="float32")
        ids = ops.convert_to_tensor(target)

        def body(index, logits, cache):
            step, cache = self.next_fn(ids, cache, index)
            logits = ops.slice_update(logits, (0, index - 1, 0), ops.expand_dims(step, 1))
            return index + 1, logits, cache

        _, logits, _ = ops.while_loop(
            lambda index, logits, cache: index <= length,
            body,
            (ops.convert_to_tensor(1, "int32"), logits, self.initial_cache(source, source_mask)),
        )
        return logits

    def greedy(self, source, source_mask, max_length=MAX_LENGTH):
        start = ops.full((ops.shape(source)[0], 1), START, dtype="int32")
        return generation.greedy_search(
            self.next_fn, start, self.initial_cache(source, source_mask, max_length),
            max_length=max_length, end_id=END, pad_id=PAD,
        )

    def beam(self, source, source_mask, beam_width=3, alpha=0.6, max_length=MAX_LENGTH):
        start = ops.full((ops.shape(source)[0], 1), START, dtype="int32")
        return generation.beam_search(
            self.next_fn, start, self.initial_cache(source, source_mask, max_length),
            max_length=max_length, beam_width=beam_width, length_penalty_alpha=alpha,
            end_id=END, pad_id=PAD,
        )

    def sample(self, source, source_mask, seed=3):
        start = ops.full((ops.shape(source)[0], 1), START, dtype="int32")
        return generation.sample(
            self.next_fn, start, self.initial_cache(source, source_mask),
            max_length=MAX_LENGTH, top_k=4, top_p=0.9, temperature=0.8, seed=seed,
            end_id=END, pad_id=PAD,
        )


def run(compile_fn=None) -> dict:
    """Every output of the probe, each function compiled with `compile_fn`
    (e.g. `jax.jit`) where given."""
    model = TinyTranslator()
    compile_fn = compile_fn or (lambda fn: fn)
    args = (ops.convert_to_tensor(SOURCE), ops.convert_to_tensor(SOURCE_MASK))
    beam_ids, beam_scores = compile_fn(model.beam)(*args)
    outputs = {
        "forward": compile_fn(lambda source, mask: model.forward(source, mask, TARGET))(*args),
        "step_logits": compile_fn(
            lambda source, mask: model.step_logits(source, mask, TARGET)
        )(*args),
        "greedy": compile_fn(model.greedy)(*args),
        "beam_ids": beam_ids,
        "beam_scores": beam_scores,
        "sample": compile_fn(model.sample)(*args),
    }
    return {name: np.asarray(ops.convert_to_numpy(x)) for name, x in outputs.items()}


@functools.lru_cache(maxsize=None)
def eager_outputs() -> dict:
    """`run()`'s outputs under the current backend, computed once."""
    return run()


@functools.lru_cache(maxsize=None)
def outputs_under(backend: str) -> dict:
    """`run()`'s outputs under `backend`, from a subprocess (once per test
    session: both decoding test files compare against them)."""
    from tests import harness  # imports TensorFlow: for the TensorFlow side only

    with harness.script_output_under_backend(backend, "decoding_probe.py", "out.npz") as path:
        return dict(np.load(path))


if __name__ == "__main__":
    compile_fn = None
    if keras.backend.backend() == "jax":
        import jax

        compile_fn = jax.jit
    np.savez(sys.argv[1], backend=keras.backend.backend(), **run(compile_fn))
