"""Argument checks shared by the layers' constructors and calls.

Every message has the form "Expected <what>, received: <name>=<value>" so
that a user sees which argument is wrong and what it should have been.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def positive_int(name: str, value, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        what = "a positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"Expected `{name}` to be {what}, received: {name}={value!r}")
    return value


def positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Expected `{name}` to be a positive number, received: {name}={value!r}")
    return value


def rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"Expected `{name}` to be a float in [0, 1), received: {name}={value!r}"
        )
    return float(value)


def one_of(name: str, value, choices: Iterable):
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {choices}, received: {name}={value!r}")
    return value


def rank(name: str, shape: Sequence, expected: int | Sequence[int]) -> None:
    """Checks the rank of a (static) shape; `expected` may list several ranks."""
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    if len(shape) not in allowed:
        ranks = " or ".join(str(r) for r in allowed)
        raise ValueError(
            f"Expected `{name}` of rank {ranks}, received: {name}.shape={tuple(shape)}"
        )


def last_dim(name: str, shape: Sequence, expected: int | None) -> None:
    """Checks a static last dimension against an expected width."""
    if expected is not None and shape[-1] is not None and shape[-1] != expected:
        raise ValueError(
            f"Expected `{name}` with last dimension {expected}, "
            f"received: {name}.shape={tuple(shape)}"
        )


def same_length(name_a: str, shape_a: Sequence, name_b: str, shape_b: Sequence) -> None:
    """Checks that two tensors agree on their (static) sequence axis, axis 1."""
    a, b = shape_a[1], shape_b[1]
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"Expected `{name_a}` and `{name_b}` of the same length (axis 1), "
            f"received: {name_a}.shape={tuple(shape_a)}, {name_b}.shape={tuple(shape_b)}"
        )
