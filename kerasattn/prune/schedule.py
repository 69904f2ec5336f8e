"""Iterative pruning to a target fraction, stopping at a validation tolerance."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional

import keras

from kerasattn.prune._gradients import LossFunction
from kerasattn.prune.importance import counts
from kerasattn.prune.importance import importance
from kerasattn.prune.importance import select
from kerasattn.prune.removal import Rebuild
from kerasattn.prune.removal import prune_model


@dataclasses.dataclass
class PruningStep:
    """One point of the schedule: what is gone so far, and what it scores.

    Attributes:
        heads_removed: fraction of the original model's query heads removed.
        units_removed: fraction of its feed-forward units removed.
        metric: the validation metric after this step's recovery.
        parameters: the model's parameter count.
        accepted: whether the step stayed within the tolerance (the
            schedule's result is the last accepted step's model).
    """

    heads_removed: float
    units_removed: float
    metric: float
    parameters: int
    accepted: bool


@dataclasses.dataclass
class PruningResult:
    """What `prune_iteratively` returns.

    Attributes:
        model: the last model within the tolerance (the input model if
            the first step already fell outside it).
        steps: the baseline (nothing removed) then each step tried.
    """

    model: keras.Model
    steps: list[PruningStep]


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"Expected `{name}` in [0, 1), received: {name}={value!r}")
    return float(value)


def prune_iteratively(
    model: keras.Model,
    *,
    heads: float,
    units: float,
    num_steps: int,
    batches: Callable[[], Iterable],
    loss: Optional[LossFunction],
    evaluate: Callable[[keras.Model], float],
    tolerance: float,
    recover: Optional[Callable[[keras.Model], None]] = None,
    rebuild: Optional[Rebuild] = None,
    max_batches: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> PruningResult:
    """Removes heads and units in `num_steps` equal steps up to the target fractions.

    Each step scores the current model (`importance`), removes the least
    important heads and units until `k / num_steps` of the targets are gone
    (`select`, `prune_model`), recovers (`recover`, such as `fine_tune`)
    and evaluates; when the metric is more than `tolerance` below the
    unpruned model's, the schedule stops and keeps the previous step.

    Args:
        model: the unpruned model (left unchanged).
        heads: target fraction of query heads to remove, in [0, 1).
        units: target fraction of feed-forward units to remove, in [0, 1).
        num_steps: number of pruning steps.
        batches: returns the batches to score importance on (called once
            per step).
        loss: `importance`'s loss.
        evaluate: the validation metric of a model, higher is better.
        tolerance: the largest drop of the metric accepted, in its units.
        recover: called on each pruned model before it is evaluated.
        rebuild: `prune_model`'s `rebuild`.
        max_batches: `importance`'s `max_batches`.
        progress: called with a line as each step scores, recovers and ends.

    Returns:
        A `PruningResult`.

    Example:

    ```python
    result = prune_iteratively(
        model, heads=0.4, units=0.4, num_steps=4, batches=lambda: validation,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        evaluate=lambda m: m.evaluate(validation, return_dict=True)["accuracy"],
        tolerance=0.005, recover=lambda m: fine_tune(m, train, steps=200))
    ```
    """
    heads, units = _fraction("heads", heads), _fraction("units", units)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps <= 0:
        raise ValueError(f"Expected `num_steps` to be a positive int, received: {num_steps!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"Expected `tolerance` >= 0, received: tolerance={tolerance!r}")
    original = counts(model)
    baseline = float(evaluate(model))
    steps = [PruningStep(0.0, 0.0, baseline, model.count_params(), True)]
    current = model
    for step in range(1, num_steps + 1):
        now = counts(current)
        target_heads = round(heads * original["heads"] * step / num_steps)
        target_units = round(units * original["units"] * step / num_steps)
        remove_heads = max(0, target_heads - (original["heads"] - now["heads"]))
        remove_units = max(0, target_units - (original["units"] - now["units"]))
        if progress is not None:
            progress(f"step {step}/{num_steps}: scoring heads and units to remove "
                     f"{remove_heads} heads and {remove_units} units")
        scores = importance(current, batches(), loss, max_batches=max_batches)
        keep = select(current, scores, remove_heads=remove_heads, remove_units=remove_units)
        candidate = prune_model(current, keep, rebuild)
        if recover is not None:
            if progress is not None:
                progress(f"step {step}/{num_steps}: recovering")
            recover(candidate)
        metric = float(evaluate(candidate))
        left = counts(candidate)
        accepted = baseline - metric <= tolerance
        steps.append(PruningStep(
            heads_removed=1 - left["heads"] / max(original["heads"], 1),
            units_removed=1 - left["units"] / max(original["units"], 1),
            metric=metric,
            parameters=candidate.count_params(),
            accepted=accepted,
        ))
        if progress is not None:
            progress(
                f"step {step}/{num_steps}: {steps[-1].heads_removed:.0%} of heads and "
                f"{steps[-1].units_removed:.0%} of units removed, metric {metric:.4f} "
                f"(unpruned {baseline:.4f}){'' if accepted else ': beyond the tolerance, stop'}"
            )
        if not accepted:
            break
        current = candidate
    return PruningResult(model=current, steps=steps)
