"""What the decoding strategies share: argument checks, the token buffer and
the one-token-at-a-time loop of greedy search and sampling."""

from __future__ import annotations

from typing import Any, Callable, Tuple

import keras
from keras import ops

# next_fn(ids, cache, index) -> (logits, cache); see `kerasattn.generation`.
NextFn = Callable[[Any, Any, Any], Tuple[Any, Any]]


def check_int(name: str, value, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Expected `{name}` to be an int >= {minimum}"
            f"{' or None' if allow_none else ''}, received: {name}={value!r}"
        )
    return value


def token_buffer(prompt, max_length, pad_id: int):
    """int32 `(B, max_length)` ids: the prompt, then `pad_id`s; the prompt as
    int32 with its (static) length; and `max_length` (an int, or a scalar
    int32 tensor)."""
    prompt = ops.convert_to_tensor(prompt)
    if len(prompt.shape) != 2 or not keras.backend.standardize_dtype(prompt.dtype).startswith(
        ("int", "uint")
    ):
        raise ValueError(
            "Expected `prompt` of integer ids shaped (batch, prompt_length), received: "
            f"prompt.shape={tuple(prompt.shape)}, prompt.dtype={prompt.dtype}"
        )
    prompt_length = prompt.shape[1]
    if prompt_length is None or prompt_length < 1:
        raise ValueError(
            "Expected `prompt` with a static length of at least 1 (a start token), "
            f"received: prompt.shape={tuple(prompt.shape)}"
        )
    if ops.is_tensor(max_length):
        # A length chosen per batch inside a TensorFlow graph (the buffer's
        # second axis is then dynamic); the caller keeps it above the prompt's.
        if len(max_length.shape) != 0 or not keras.backend.standardize_dtype(
            max_length.dtype
        ).startswith("int"):
            raise ValueError(
                "Expected `max_length` to be an int or a scalar integer tensor, received: "
                f"shape={tuple(max_length.shape)}, dtype={max_length.dtype}"
            )
        max_length = ops.cast(max_length, "int32")
    else:
        check_int("max_length", max_length, 1)
        if max_length <= prompt_length:
            raise ValueError(
                f"Expected `max_length` greater than the prompt length {prompt_length}, "
                f"received: max_length={max_length}"
            )
    check_int("pad_id", pad_id, 0)
    prompt = ops.cast(prompt, "int32")
    padding = ops.full((ops.shape(prompt)[0], max_length - prompt_length), pad_id, "int32")
    ids = ops.concatenate([prompt, padding], axis=1)
    return ids, prompt, prompt_length, max_length


def argmax(x):
    """int32 index of the largest entry on the last axis, the first on ties.

    By `ops.top_k`: Keras's TensorFlow `argmax` tells -0.0 from 0.0 with
    bitwise ops that TFLite's built-in ops lack.
    """
    return ops.cast(ops.top_k(x, k=1)[1][..., 0], "int32")


def prompt_token(prompt, prompt_length: int, index):
    """The prompt's ids at `index` (clamped into the prompt), `(B,)`."""
    return ops.take(prompt, ops.minimum(index, prompt_length - 1), axis=1)


def decode(
    next_fn: NextFn,
    prompt,
    cache,
    max_length: int,
    end_id: int | None,
    pad_id: int,
    choose: Callable[[Any, Any], Any],
):
    """Extends `prompt` one token at a time with `choose(logits, index)`.

    Positions inside the prompt keep the prompt's ids (`next_fn` still runs
    on them, so its cache covers them); after `end_id` a row gets `pad_id`s,
    and the loop stops once every row has ended.
    """
    check_int("end_id", end_id, 0, allow_none=True)
    ids, prompt, prompt_length, max_length = token_buffer(prompt, max_length, pad_id)
    finished = ops.zeros((ops.shape(ids)[0],), dtype="bool")
    cache = () if cache is None else cache

    def cond(ids, cache, index, finished):
        return ops.logical_not(ops.all(finished))

    def body(ids, cache, index, finished):
        logits, cache = next_fn(ids, cache, index)
        token = ops.cast(choose(logits, index), "int32")
        token = ops.where(finished, pad_id, token)
        in_prompt = ops.less(index, prompt_length)
        token = ops.where(in_prompt, prompt_token(prompt, prompt_length, index), token)
        if end_id is not None:
            ended = ops.logical_and(ops.equal(token, end_id), ops.logical_not(in_prompt))
            finished = ops.logical_or(finished, ended)
        ids = ops.slice_update(ids, (0, index), ops.expand_dims(token, 1))
        return ids, cache, index + 1, finished

    # Position 0 holds the prompt's first token; the loop predicts 1, 2, ...
    ids, *_ = ops.while_loop(
        cond,
        body,
        (ids, cache, ops.convert_to_tensor(1, dtype="int32"), finished),
        maximum_iterations=max_length - 1,
    )
    return ids
