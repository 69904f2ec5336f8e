"""Decoding strategies for autoregressive models, written with `keras.ops`.

Each strategy extends a prompt token by token with `keras.ops.while_loop`,
calling a step function

    next_fn(ids, cache, index) -> (logits, cache)

with the int32 `(batch, max_length)` ids decoded so far (valid before
`index`), the cache (any nest of tensors, e.g. the key/value caches of
`kerasattn.layers.TransformerDecoderBlock.initial_cache`), and the int32
scalar position `index` to predict; it returns that position's
`(batch, vocab)` logits and the updated cache. Nothing runs outside the
loop's graph (no NumPy, no Python loop over steps), so the strategies trace
into a `tf.function` and a SavedModel, and compile with XLA or `jax.jit`.
"""

from kerasattn.generation.sampling import filter_logits
from kerasattn.generation.sampling import sample
from kerasattn.generation.search import beam_search
from kerasattn.generation.search import greedy_search
from kerasattn.generation.search import length_penalty

__all__ = ["beam_search", "filter_logits", "greedy_search", "length_penalty", "sample"]
