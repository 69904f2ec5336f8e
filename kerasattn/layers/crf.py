"""A linear-chain conditional random field (CRF) for sequence tagging."""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops

from kerasattn.layers import _validation
from kerasattn.layers._initializers import clone_initializer
from kerasattn.ops import as_bool_mask

SCHEMES = ("IOB1", "IOB2", "IOBES", None)
# Additive score of a forbidden transition, start or end: large enough that
# a forbidden path never wins and has probability exp(-1e4) == 0 in float32,
# finite so that nothing becomes NaN (-inf - -inf) and exporters keep it.
FORBIDDEN = -1e4
_PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "IOBES": ("B", "I", "E", "S")}


def _parse_tags(tag_names, scheme):
    """[(prefix, type)] of `tag_names`; `("O", None)` for the outside tag."""
    parsed = []
    for i, name in enumerate(tag_names):
        if name == "O":
            parsed.append(("O", None))
            continue
        prefix, sep, kind = name.partition("-")
        if not sep or not kind or prefix not in _PREFIXES[scheme]:
            forms = " or ".join(f"'{p}-TYPE'" for p in _PREFIXES[scheme])
            raise ValueError(
                f"Expected every tag name of scheme {scheme!r} to be 'O' or {forms}, "
                f"received: tag_names[{i}]={name!r}"
            )
        parsed.append((prefix, kind))
    return parsed


def _allowed(scheme, tags):
    """Boolean `(transitions [from, to], start, end)` of the legal moves."""
    n = len(tags)
    transitions = np.ones((n, n), bool)
    start = np.ones((n,), bool)
    end = np.ones((n,), bool)
    for j, (to_prefix, to_kind) in enumerate(tags):
        if scheme == "IOB2":
            # A chunk starts with B-X; I-X only continues B-X or I-X.
            if to_prefix == "I":
                start[j] = False
                for i, (from_prefix, from_kind) in enumerate(tags):
                    transitions[i, j] = from_prefix in ("B", "I") and from_kind == to_kind
        elif scheme == "IOB1":
            # A chunk starts with I-X; B-X only starts a chunk right after a
            # chunk of the same type.
            if to_prefix == "B":
                start[j] = False
                for i, (from_prefix, from_kind) in enumerate(tags):
                    transitions[i, j] = from_prefix in ("B", "I") and from_kind == to_kind
        else:  # IOBES
            inside = to_prefix in ("I", "E")
            start[j] = not inside
            end[j] = to_prefix in ("O", "E", "S")
            for i, (from_prefix, from_kind) in enumerate(tags):
                if from_prefix in ("B", "I"):  # inside a chunk: continue or end it
                    transitions[i, j] = inside and from_kind == to_kind
                else:  # O, E-X, S-X: no chunk open
                    transitions[i, j] = not inside
    return transitions, start, end


def _recurrence(step, init, xs, reverse=False, collect=None):
    """Runs `carry = step(carry, x_t)` over the leading axis of the tensors
    `xs`, forwards or in `reverse`; returns the last carry and, with
    `collect="after"` (`"before"`), the `(n, ...)` carries after (before)
    each step.

    `keras.ops.scan` under JAX (and other backends), whose loop JAX can
    differentiate. Under TensorFlow a while loop with `maximum_iterations`
    that reads step `t` with a gather instead: `ops.scan` there has no
    iteration bound, which XLA needs to differentiate a loop, and this is
    also about twice as fast in a `tf.function`.
    """
    if keras.backend.backend() != "tensorflow":

        def scan_step(carry, x):
            new = step(carry, x)
            return new, (new if collect == "after" else carry)

        carry, ys = ops.scan(scan_step, init, xs, reverse=reverse)
        return carry, (ys if collect else None)

    length = ops.shape(xs[0])[0]
    if collect:
        positions = ops.reshape(ops.arange(length, dtype="int32"), (-1,) + (1,) * len(init.shape))
        ys = ops.zeros_like(ops.repeat(init[None], length, axis=0))
    else:
        ys = ops.zeros((), init.dtype)

    def body(i, carry, ys):
        t = length - 1 - i if reverse else i
        new = step(carry, tuple(ops.take(x, t, axis=0) for x in xs))
        if collect:
            ys = ops.where(positions == t, (new if collect == "after" else carry)[None], ys)
        return i + 1, new, ys

    _, carry, ys = ops.while_loop(
        lambda i, carry, ys: i < length, body, (0, init, ys), maximum_iterations=length
    )
    return carry, (ys if collect else None)


def _argmax(x, axis):
    """int32 index of the first maximum along `axis`, from max, equal and
    min: TensorFlow's `ops.argmax` bit-casts floats (for -0.0), an op that
    TFLite has no built-in kernel for."""
    size = x.shape[axis]
    best = ops.max(x, axis=axis, keepdims=True)
    shape = [1] * len(x.shape)
    shape[axis] = size
    index = ops.reshape(ops.arange(size, dtype="int32"), shape)
    return ops.min(ops.where(x == best, index, size), axis=axis)


def _penalty(allowed):
    return np.where(allowed, 0.0, FORBIDDEN).astype("float32")


@keras.saving.register_keras_serializable(package="kerasattn")
class CRF(keras.layers.Layer):
    """Linear-chain conditional random field over per-token tag scores.

    Given per-token tag scores `x` ("potentials", for example the output of
    a `Dense(num_tags)`), the CRF scores a tag path `y_1 ... y_n` as

        s(y) = start[y_1] + Σ_t x_t[y_t] + Σ_t transitions[y_{t-1}, y_t]
               + end[y_n]

    and models `p(y | x) = exp(s(y)) / Σ_y' exp(s(y'))`. `call` returns the
    most likely path (Viterbi); `log_likelihood` gives `log p(y | x)` for
    training (minimise its negative mean), `decode` the best path with its
    score and `marginals` the per-token posteriors (forward-backward). All
    CRF arithmetic runs in float32 under every dtype policy, and the loops
    over time are `keras.ops` loops, so the sequence length may be dynamic.

    With `tag_names` and a `scheme`, transitions, starts and ends that the
    scheme forbids get a fixed score of -1e4 (not a weight: recomputed from
    the config), so decoded paths are always legal and illegal paths have
    probability 0:

    - `"IOB2"`: `I-X` only after `B-X` or `I-X`; never first.
    - `"IOB1"`: `B-X` only after `B-X` or `I-X` (it separates two adjacent
      chunks of type X); never first.
    - `"IOBES"`: after `B-X` or `I-X` only `I-X` or `E-X`; after `O`, `E-*`
      or `S-*` (and first) no `I-*` or `E-*`; last only `O`, `E-*` or `S-*`.

    Args:
        num_tags: positive integer, the number of tags `N`.
        tag_names: optional sequence of `N` distinct tag names; with a
            `scheme`, each is `"O"` or `"<prefix>-<TYPE>"` such as `"B-PER"`.
        scheme: `"IOB1"`, `"IOB2"`, `"IOBES"` or `None` (no constraints).
            Needs `tag_names`.
        transitions_initializer: initializer of the `(N, N)` transition
            scores, indexed `[from, to]`.
        boundary_initializer: initializer of the `(N,)` start and end scores
            (each gets its own instance).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        potentials: `(B, T, N)` tag scores, any float dtype; `T` may be
            dynamic.
        mask: optional `(B, T)` padding mask, `True` = real token, filled in
            from a Keras implicit mask (for example from
            `Embedding(mask_zero=True)`). Padding must be trailing: each
            row's real tokens are a prefix of it. Padded steps change
            nothing, and a row with no real token decodes to zeros.

    Returns:
        `call`: `(B, T)` int32 Viterbi tags, 0 at padded steps. The mask is
        propagated. `log_likelihood(potentials, tags, mask)`: `(B,)` float32
        `log p(tags | potentials)`, 0 for a row with no real token.
        `decode(potentials, mask)`: the tags and the `(B,)` float32 score of
        the best path. `marginals(potentials, mask)`: `(B, T, N)` float32
        posterior probability of each tag at each token, 0 at padded steps.

    Example:

    >>> crf = CRF(num_tags=3, tag_names=["O", "B-PER", "I-PER"], scheme="IOB2")
    >>> potentials = np.random.rand(2, 5, 3).astype("float32")
    >>> tags = crf(potentials)
    >>> tuple(tags.shape), keras.backend.standardize_dtype(tags.dtype)
    ((2, 5), 'int32')
    >>> nll = -crf.log_likelihood(potentials, tags)
    >>> tuple(nll.shape)
    (2,)
    """

    def __init__(
        self,
        num_tags: int,
        tag_names: Optional[Sequence[str]] = None,
        scheme: Optional[str] = None,
        transitions_initializer="glorot_uniform",
        boundary_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tags = _validation.positive_int("num_tags", num_tags)
        self.scheme = _validation.one_of("scheme", scheme, SCHEMES)
        if tag_names is not None:
            if isinstance(tag_names, str) or not all(isinstance(t, str) for t in tag_names):
                raise ValueError(
                    "Expected `tag_names` to be a sequence of strings, "
                    f"received: tag_names={tag_names!r}"
                )
            tag_names = tuple(tag_names)
            if len(tag_names) != num_tags or len(set(tag_names)) != num_tags:
                raise ValueError(
                    f"Expected `tag_names` to be {num_tags} distinct names (`num_tags`), "
                    f"received: tag_names={list(tag_names)!r}"
                )
        self.tag_names = tag_names
        self._penalties = None
        if scheme is not None:
            if tag_names is None:
                raise ValueError(
                    f"Expected `tag_names` with `scheme={scheme!r}`, received: tag_names=None"
                )
            allowed = _allowed(scheme, _parse_tags(tag_names, scheme))
            self._penalties = tuple(_penalty(a) for a in allowed)
        self.transitions_initializer = keras.initializers.get(transitions_initializer)
        self.boundary_initializer = keras.initializers.get(boundary_initializer)
        self.supports_masking = True

    def build(self, potentials_shape=None):
        if potentials_shape is not None:
            _validation.rank("potentials", potentials_shape, 3)
            _validation.last_dim("potentials", potentials_shape, self.num_tags)

        def weight(name, shape, initializer):
            # float32 and never autocast: the CRF runs in float32.
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=clone_initializer(initializer),
                dtype="float32",
                autocast=False,
            )

        n = self.num_tags
        self.transitions = weight("transitions", (n, n), self.transitions_initializer)
        self.start = weight("start", (n,), self.boundary_initializer)
        self.end = weight("end", (n,), self.boundary_initializer)

    # -- helpers ----------------------------------------------------------

    def _prepare(self, potentials, mask):
        """float32 potentials, a bool `(B, T)` mask (or None), and the
        float32 transition, start and end scores with the constraints."""
        _validation.rank("potentials", potentials.shape, 3)
        _validation.last_dim("potentials", potentials.shape, self.num_tags)
        if not self.built:
            self.build(potentials.shape)
        potentials = ops.cast(potentials, "float32")
        if mask is not None:
            mask = as_bool_mask(ops.convert_to_tensor(mask))
        # `.value`: plain tensors (TensorFlow broadcasts a Keras variable
        # wrongly in `variable + tensor` of higher rank).
        transitions = ops.convert_to_tensor(self.transitions.value)
        start = ops.convert_to_tensor(self.start.value)
        end = ops.convert_to_tensor(self.end.value)
        if self._penalties is not None:
            transitions = transitions + self._penalties[0]
            start = start + self._penalties[1]
            end = end + self._penalties[2]
        return potentials, mask, transitions, start, end

    @staticmethod
    def _full_mask(potentials, mask):
        if mask is None:
            return ops.ones(ops.shape(potentials)[:2], "bool")
        return mask

    def _forward(self, potentials, mask, transitions, start, collect=False):
        """Forward algorithm: `alpha_t[j]`, the log-sum of the scores of all
        paths through steps 0..t ending in tag j (with x_t); padded steps
        repeat the last real one. The last `(B, N)`, or with `collect` all
        `(T, B, N)`."""
        steps = ops.transpose(potentials, (1, 0, 2))  # (T, B, N)
        keep = ops.transpose(mask, (1, 0))[..., None]  # (T, B, 1)
        alpha = start + steps[0]

        def step(alpha, inputs):
            x, real = inputs
            new = ops.logsumexp(alpha[:, :, None] + transitions, axis=1) + x
            return ops.where(real, new, alpha)

        last, alphas = _recurrence(
            step, alpha, (steps[1:], keep[1:]), collect="after" if collect else None
        )
        if not collect:
            return last
        return ops.concatenate([alpha[None], alphas], axis=0)

    def _log_partition(self, last_alpha, end):
        return ops.logsumexp(last_alpha + end, axis=-1)

    # -- public API -------------------------------------------------------

    def log_likelihood(self, potentials, tags, mask=None):
        """`(B,)` float32 `log p(tags | potentials)` (0 where `mask` has no
        real token); differentiable in the potentials and the weights."""
        potentials, mask, transitions, start, end = self._prepare(potentials, mask)
        mask = self._full_mask(potentials, mask)
        tags = ops.cast(tags, "int32")
        real = ops.cast(mask, "float32")  # (B, T)
        one_hot = ops.one_hot(tags, self.num_tags, dtype="float32") * real[..., None]
        # Score of the given path: emissions, starts, transitions, ends.
        emissions = ops.sum(potentials * one_hot, axis=(1, 2))
        first = ops.sum(one_hot[:, 0] * start, axis=-1)
        moves = ops.einsum("btn,nm,btm->b", one_hot[:, :-1], transitions, one_hot[:, 1:])
        # The last real step: real here, not real at the next step.
        next_real = ops.concatenate([real[:, 1:], ops.zeros_like(real[:, :1])], axis=1)
        last = one_hot * (real - next_real)[..., None]
        last = ops.sum(ops.sum(last, axis=1) * end, axis=-1)
        path_score = emissions + first + moves + last

        last_alpha = self._forward(potentials, mask, transitions, start)
        log_z = self._log_partition(last_alpha, end)
        any_real = ops.any(mask, axis=1)
        return ops.where(any_real, path_score - log_z, 0.0)

    def sequence_log_probability(self, potentials, tags, mask=None):
        """An alias of `log_likelihood`."""
        return self.log_likelihood(potentials, tags, mask)

    def marginals(self, potentials, mask=None):
        """`(B, T, N)` float32 posterior `p(y_t = j | potentials)` by
        forward-backward; 0 at padded steps."""
        potentials, mask, transitions, start, end = self._prepare(potentials, mask)
        mask = self._full_mask(potentials, mask)
        alphas = self._forward(potentials, mask, transitions, start, collect=True)
        log_z = self._log_partition(alphas[-1], end)  # (B,)

        steps = ops.transpose(potentials, (1, 0, 2))
        keep = ops.transpose(mask, (1, 0))[..., None]
        # beta_t[i]: log-sum of the scores after step t from tag i at step t,
        # end included; padded steps keep beta = end.
        beta = ops.zeros_like(steps[0]) + end

        def step(beta, inputs):
            x, real = inputs
            new = ops.logsumexp(transitions + (x + beta)[:, None, :], axis=2)
            return ops.where(real, new, beta)

        beta_0, betas = _recurrence(
            step, beta, (steps[1:], keep[1:]), reverse=True, collect="before"
        )
        betas = ops.concatenate([beta_0[None], betas], axis=0)
        log_marginals = alphas + betas - log_z[None, :, None]
        marginals = ops.exp(ops.minimum(log_marginals, 0.0))
        marginals = ops.where(keep, marginals, 0.0)
        return ops.transpose(marginals, (1, 0, 2))

    def decode(self, potentials, mask=None):
        """The Viterbi path, `(B, T)` int32 (0 at padded steps), and its
        `(B,)` float32 unnormalised score (0 for a row with no real token)."""
        potentials, mask, transitions, start, end = self._prepare(potentials, mask)
        mask = self._full_mask(potentials, mask)
        steps = ops.transpose(potentials, (1, 0, 2))  # (T, B, N)
        keep = ops.transpose(mask, (1, 0))  # (T, B)
        length = ops.shape(steps)[0]
        positions = ops.arange(length, dtype="int32")[:, None, None]  # (T, 1, 1)
        identity = ops.arange(self.num_tags, dtype="int32")[None, :]  # (1, N)

        # Forward pass: the best score of a path ending in each tag, and
        # per step the best previous tag of each (identity at padded steps,
        # so that backtracking passes straight through them). A while loop
        # over a preallocated tensor, not a scan: it converts to TFLite
        # builtins (WHILE, GATHER, SELECT) and ONNX at dynamic length.
        def forward(t, score, pointers):
            x = ops.take(steps, t, axis=0)
            real = ops.take(keep, t, axis=0)[:, None]
            candidates = score[:, :, None] + transitions  # (B, from, to)
            best = ops.max(candidates, axis=1) + x
            previous = _argmax(candidates, axis=1)
            score = ops.where(real, best, score)
            previous = ops.where(real, previous, identity)
            pointers = ops.where(positions == t, previous[None], pointers)
            return t + 1, score, pointers

        pointers = ops.zeros_like(steps, dtype="int32")
        _, score, pointers = ops.while_loop(
            lambda t, score, pointers: t < length,
            forward,
            (1, start + steps[0], pointers),
            maximum_iterations=length - 1,
        )
        final = score + end
        any_real = ops.any(mask, axis=1)
        best_score = ops.where(any_real, ops.max(final, axis=-1), 0.0)
        last = _argmax(final, axis=-1)  # (B,)

        # Backtracking, from the last step to the first.
        rows = ops.arange(length, dtype="int32")[:, None]  # (T, 1)

        def backward(t, current, tags):
            real = ops.take(keep, t, axis=0)
            tags = ops.where(rows == t, ops.where(real, current, 0)[None], tags)
            step_pointers = ops.take(pointers, t, axis=0)  # (B, N)
            previous = ops.sum(
                ops.where(identity == current[:, None], step_pointers, 0), axis=1
            )
            return t - 1, previous, tags

        tags = ops.zeros_like(keep, dtype="int32")
        _, _, tags = ops.while_loop(
            lambda t, current, tags: t >= 0,
            backward,
            (length - 1, last, tags),
            maximum_iterations=length,
        )
        return ops.transpose(tags, (1, 0)), best_score

    def call(self, potentials, mask=None):
        tags, _ = self.decode(potentials, mask)
        return tags

    def compute_mask(self, potentials, mask=None):
        return mask

    def compute_output_spec(self, potentials, mask=None):
        _validation.rank("potentials", potentials.shape, 3)
        _validation.last_dim("potentials", potentials.shape, self.num_tags)
        return keras.KerasTensor(tuple(potentials.shape[:2]), dtype="int32")

    def get_config(self):
        config = {
            "num_tags": self.num_tags,
            "tag_names": None if self.tag_names is None else list(self.tag_names),
            "scheme": self.scheme,
            "transitions_initializer": keras.initializers.serialize(
                self.transitions_initializer
            ),
            "boundary_initializer": keras.initializers.serialize(self.boundary_initializer),
        }
        return {**super().get_config(), **config}
