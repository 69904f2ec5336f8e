"""Greedy search and beam search."""

from __future__ import annotations

from keras import ops
from keras import tree

from kerasattn.generation import _loop
from kerasattn.generation._loop import NextFn

# Log-probability of the impossible continuations. Finite, unlike -inf, so
# that sums and differences of scores stay free of NaN.
_IMPOSSIBLE = -1e9


def greedy_search(
    next_fn: NextFn,
    prompt,
    cache=None,
    *,
    max_length: int,
    end_id: int | None = None,
    pad_id: int = 0,
):
    """Decodes by taking the most likely token at every step.

    Written with `keras.ops.while_loop`, so it runs eagerly, traces into a
    `tf.function` (and a SavedModel), and compiles with XLA or `jax.jit`.

    Args:
        next_fn: `next_fn(ids, cache, index) -> (logits, cache)`: given the
            int32 `(B, max_length)` ids decoded so far (valid before
            `index`), the cache and the int32 scalar `index` of the position
            to predict, the `(B, vocab)` logits of that position and the
            updated cache. A cached decoder runs on `ids[:, index - 1]`
            with `cache_update_index=index - 1`.
        prompt: `(B, P)` integer ids the output starts with (`P >= 1`,
            static), usually a start token.
        cache: the initial cache, any nest of tensors (or `None`).
        max_length: length of the output, prompt included: an int, or in a
            TensorFlow graph a scalar integer tensor (a length chosen per
            batch; the output's second axis is then dynamic).
        end_id: optional end-of-sequence id: a row that emits it is padded
            with `pad_id` afterwards, and decoding stops once every row has.
        pad_id: the id after `end_id`.

    Returns:
        int32 ids `(B, max_length)`.

    Example:

    >>> def next_fn(ids, cache, index):
    ...     last = keras.ops.take(ids, index - 1, axis=1)
    ...     return keras.ops.one_hot((last + 1) % 5, 5), cache
    >>> ids = greedy_search(next_fn, np.array([[1], [3]]), max_length=5, end_id=4)
    >>> keras.ops.convert_to_numpy(ids).tolist()
    [[1, 2, 3, 4, 0], [3, 4, 0, 0, 0]]
    """
    return _loop.decode(
        next_fn, prompt, cache, max_length, end_id, pad_id,
        choose=lambda logits, index: _loop.argmax(ops.cast(logits, "float32")),
    )


def length_penalty(length, alpha: float):
    """GNMT's length penalty `((5 + length) / 6) ** alpha` (Wu et al., 2016).

    A hypothesis's beam-search score is its log-probability divided by the
    penalty of its length (generated tokens, end-of-sequence included):
    `alpha = 0` ranks by log-probability, larger `alpha` favours longer
    outputs.
    """
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def beam_search(
    next_fn: NextFn,
    prompt,
    cache=None,
    *,
    max_length: int,
    beam_width: int = 4,
    length_penalty_alpha: float = 0.0,
    end_id: int | None = None,
    pad_id: int = 0,
    return_all_beams: bool = False,
):
    """Decodes by keeping the `beam_width` best-scoring hypotheses.

    Each step extends every unfinished beam by every token and keeps the
    `beam_width` best candidates of each row, ranked by the score
    `log p(y) / length_penalty(|y|, length_penalty_alpha)` (GNMT's,
    `|y|` the generated length, end-of-sequence included). A beam that has
    emitted `end_id` is finished: it stays as it is (padded with `pad_id`),
    and competes with the unfinished ones by its final score. Decoding stops
    at `max_length`, or once no unfinished beam of any row can still beat
    its row's best finished one (a log-probability can only fall, a length
    penalty rise at most to that of `max_length`), which returns what
    decoding on would; with `return_all_beams=True`, once every beam has
    finished.

    `next_fn` sees `B * beam_width` rows (row `b * beam_width + k` is beam
    `k` of row `b`), and every tensor in `cache` must have them on its first
    axis: the initial cache (of `B` rows) is repeated per beam, and each step
    reorders it along with the surviving beams. Tensors that every beam
    shares (an encoder's output) are better closed over by `next_fn`, after
    `keras.ops.repeat(x, beam_width, axis=0)`, than carried in the cache.
    With `beam_width=1` this is `greedy_search`.

    Written with `keras.ops.while_loop`, so it runs eagerly, traces into a
    `tf.function` (and a SavedModel), and compiles with XLA or `jax.jit`.

    Args:
        next_fn: `next_fn(ids, cache, index) -> (logits, cache)`, as in
            `greedy_search`.
        prompt: `(B, P)` integer ids every output starts with (`P >= 1`,
            static).
        cache: the initial cache of the `B` rows, any nest of tensors (or
            `None`).
        max_length: length of the output, prompt included: an int, or in a
            TensorFlow graph a scalar integer tensor (a length chosen per
            batch; the output's second axis is then dynamic).
        beam_width: number of hypotheses kept per row.
        length_penalty_alpha: `alpha >= 0` of `length_penalty`.
        end_id: optional end-of-sequence id.
        pad_id: the id after `end_id`.
        return_all_beams: return every beam, best first, rather than the
            best one.

    Returns:
        `(ids, scores)`: int32 ids `(B, max_length)` of the best hypothesis
        and its float32 score `(B,)`, or with `return_all_beams=True`
        `(B, beam_width, max_length)` and `(B, beam_width)`, best first.

    Example:

    A bigram model over the ids 0 (start and padding), 1 (end), 2 and 3:
    greedy search takes 2 (probability 0.5) and ends with probability 0.39;
    beam search finds 3 (0.48) then the end (0.97).

    >>> log_table = np.log([[0.01, 0.01, 0.50, 0.48],
    ...                     [0.25, 0.25, 0.25, 0.25],
    ...                     [0.01, 0.39, 0.30, 0.30],
    ...                     [0.01, 0.97, 0.01, 0.01]]).astype("float32")
    >>> def next_fn(ids, cache, index):
    ...     last = keras.ops.take(ids, index - 1, axis=1)
    ...     return keras.ops.take(log_table, last, axis=0), cache
    >>> start = np.zeros((1, 1), "int32")
    >>> greedy = greedy_search(next_fn, start, max_length=4, end_id=1)
    >>> keras.ops.convert_to_numpy(greedy).tolist()
    [[0, 2, 1, 0]]
    >>> ids, scores = beam_search(next_fn, start, max_length=4, beam_width=2, end_id=1)
    >>> keras.ops.convert_to_numpy(ids).tolist()
    [[0, 3, 1, 0]]
    >>> np.round(keras.ops.convert_to_numpy(scores), 4)  # log(0.48 * 0.97)
    array([-0.7644], dtype=float32)
    """
    _loop.check_int("beam_width", beam_width, 1)
    _loop.check_int("end_id", end_id, 0, allow_none=True)
    if (
        isinstance(length_penalty_alpha, bool)
        or not isinstance(length_penalty_alpha, (int, float))
        or not length_penalty_alpha >= 0
    ):
        raise ValueError(
            "Expected `length_penalty_alpha` to be a number >= 0, received: "
            f"length_penalty_alpha={length_penalty_alpha!r}"
        )
    alpha = float(length_penalty_alpha)
    width = beam_width
    ids, prompt, prompt_length, max_length = _loop.token_buffer(prompt, max_length, pad_id)
    batch = ops.shape(ids)[0]

    def repeat(x):
        return ops.repeat(x, width, axis=0)

    ids, prompt = repeat(ids), repeat(prompt)
    cache = tree.map_structure(repeat, () if cache is None else cache)
    # Only the first beam of a row is live at first: the others are copies.
    log_probs = ops.tile(
        ops.convert_to_tensor([0.0] + [_IMPOSSIBLE] * (width - 1), dtype="float32"),
        (batch,),
    )
    lengths = ops.zeros((batch * width,), dtype="int32")
    finished = ops.zeros((batch * width,), dtype="bool")

    # The largest penalty a hypothesis can reach: the one of `max_length`.
    largest_penalty = length_penalty(max_length - prompt_length, alpha)

    def cond(ids, cache, index, log_probs, lengths, finished):
        if return_all_beams:
            return ops.logical_not(ops.all(finished))
        # A row is decided once its best ended hypothesis outscores every open
        # beam's best possible score: an open beam's log-probability can only
        # fall, and its length penalty rise at most to `largest_penalty`.
        def row_max(x):
            return ops.max(ops.reshape(x, (batch, width)), axis=1)

        none = 2 * _IMPOSSIBLE  # below every beam's score, impossible ones included
        best_ended = row_max(ops.where(finished, log_probs / length_penalty(lengths, alpha), none))
        best_open = row_max(ops.where(finished, none, log_probs / largest_penalty))
        return ops.logical_not(ops.all(ops.greater_equal(best_ended, best_open)))

    def body(ids, cache, index, log_probs, lengths, finished):
        logits, cache = next_fn(ids, cache, index)
        logits = ops.cast(logits, "float32")
        vocab_size = ops.shape(logits)[-1]
        vocab = ops.arange(vocab_size, dtype="int32")

        def only(token):
            # The log-probabilities of a step that can only emit `token`.
            return ops.where(
                ops.equal(vocab[None, :], ops.expand_dims(token, 1)), 0.0, _IMPOSSIBLE
            )

        in_prompt = ops.less(index, prompt_length)
        step = ops.log_softmax(logits, axis=-1)
        # A finished beam can only emit `pad_id`, at no cost (one (1, V) row).
        step = ops.where(ops.expand_dims(finished, 1), only(ops.full((1,), pad_id, "int32")),
                         step)
        # The (B * W, V) work of forcing the prompt, only for prompts past position 0.
        if prompt_length > 1:
            step = ops.where(in_prompt, only(_loop.prompt_token(prompt, prompt_length, index)),
                             step)
        totals = ops.expand_dims(log_probs, 1) + step  # (B * W, V)
        # Generated length of each candidate, and its length-penalised score.
        length = ops.where(finished, lengths, index - prompt_length + 1)
        scores = totals / ops.expand_dims(length_penalty(ops.maximum(length, 0), alpha), 1)
        if prompt_length > 1:
            scores = ops.where(in_prompt, totals, scores)
        _, chosen = ops.top_k(ops.reshape(scores, (batch, -1)), k=width)  # (B, W)
        log_probs = ops.reshape(
            ops.take_along_axis(ops.reshape(totals, (batch, -1)), chosen, axis=1), (-1,)
        )
        origin = ops.reshape(
            ops.expand_dims(ops.arange(batch, dtype="int32") * width, 1)
            + ops.cast(chosen // vocab_size, "int32"),
            (-1,),
        )
        token = ops.cast(ops.reshape(chosen % vocab_size, (-1,)), "int32")

        def gather(x):
            return ops.take(x, origin, axis=0)

        ids, cache = gather(ids), tree.map_structure(gather, cache)
        was_finished, lengths = gather(finished), gather(length)
        lengths = ops.where(in_prompt, 0, lengths)
        token = ops.where(was_finished, pad_id, token)
        finished = was_finished
        if end_id is not None:
            ended = ops.logical_and(ops.equal(token, end_id), ops.logical_not(in_prompt))
            finished = ops.logical_or(was_finished, ended)
        ids = ops.slice_update(ids, (0, index), ops.expand_dims(token, 1))
        return ids, cache, index + 1, log_probs, lengths, finished

    ids, _, _, log_probs, lengths, _ = ops.while_loop(
        cond,
        body,
        (ids, cache, ops.convert_to_tensor(1, dtype="int32"), log_probs, lengths, finished),
        maximum_iterations=max_length - 1,
    )
    scores = ops.reshape(log_probs / length_penalty(lengths, alpha), (batch, width))
    ids = ops.reshape(ids, (batch, width, max_length))
    if not return_all_beams:
        best = ops.expand_dims(_loop.argmax(scores), 1)
        ids = ops.take_along_axis(ids, ops.expand_dims(best, 2), axis=1)[:, 0]
        return ids, ops.take_along_axis(scores, best, axis=1)[:, 0]
    order = ops.argsort(-scores, axis=1)
    ids = ops.take_along_axis(ids, ops.expand_dims(order, 2), axis=1)
    return ids, ops.take_along_axis(scores, order, axis=1)
