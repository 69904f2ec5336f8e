"""Options a recipe derives from its training data when the user leaves them unset.

A recipe measures its training data first (examples, tokens, classes,
steps per epoch, ...), then fills each size-dependent option the user did
not give (its command-line default is `None`) by the rule written in the
recipe's docstring and model card. Any flag given explicitly wins. The
outcome is printed at the start of training and recorded in `metrics.json`
under `"derived"`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def epochs_for(steps: int, steps_per_epoch: int) -> int:
    """The whole epochs that take at least `steps` optimizer steps (at least 1)."""
    return max(1, math.ceil(steps / max(1, steps_per_epoch)))


class DerivedOptions:
    """The options a recipe derived from its data, beside the measurements they came from.

    Args:
        args: the parsed command line; options left at `None` are filled in.
        data: what was measured, by name (`{"sentences": 3394, ...}`).

    Example:

    ```python
    derived = DerivedOptions(args, {"examples": 5452, "steps_per_epoch": 73})
    derived.set_budget(73, min_epochs=6, budget_steps=4000, min_patience_epochs=3,
                       patience_steps=1000)
    print(derived.summary())  # data: 5,452 examples, 73 steps per epoch -> epochs 55 ...
    ```
    """

    def __init__(self, args: argparse.Namespace, data: dict[str, Any]):
        self.args = args
        self.data = dict(data)
        self.derived: dict[str, Any] = {}
        self.given: dict[str, Any] = {}
        self._notes: dict[str, str] = {}

    def measured(self, **data: Any) -> None:
        """Adds measurements made after the first ones (such as steps per epoch)."""
        self.data.update(data)

    def set(self, name: str, value: Any, note: str = "") -> Any:
        """Sets option `name` to `value` unless the user gave it; returns the value in force.

        Args:
            name: the option's attribute name (`"epochs"` for `--epochs`).
            value: the derived value.
            note: what the value amounts to, shown after it (`"4,000 steps"`).
        """
        given = getattr(self.args, name)
        if given is None:
            setattr(self.args, name, value)
            self.derived[name] = value
            if note:
                self._notes[name] = note
        else:
            self.given[name] = given
        return getattr(self.args, name)

    def set_budget(self, steps_per_epoch: int, min_epochs: int, budget_steps: int,
                   min_patience_epochs: int, patience_steps: int) -> None:
        """Sets `epochs` and `patience` in optimizer steps rather than epochs: at least
        `min_epochs` epochs and `budget_steps` steps of training, and early stopping after at
        least `min_patience_epochs` epochs and `patience_steps` steps without improvement."""
        for name, epochs, steps in (("epochs", min_epochs, budget_steps),
                                    ("patience", min_patience_epochs, patience_steps)):
            value = max(epochs, epochs_for(steps, steps_per_epoch))
            self.set(name, value, f"{value * steps_per_epoch:,} steps")

    def summary(self) -> str:
        """One line: the measurements, then each derived option (and those given)."""
        measured = ", ".join(f"{_number(value)} {name.replace('_', ' ')}"
                             for name, value in self.data.items())
        derived = ", ".join(
            f"{name.replace('_', ' ')} {_number(value)}"
            + (f" ({self._notes[name]})" if name in self._notes else "")
            for name, value in self.derived.items()
        )
        line = f"data: {measured} -> {derived or 'nothing derived'}"
        if self.given:
            line += "; given: " + ", ".join(
                f"--{name.replace('_', '-')} {value}" for name, value in self.given.items())
        return line

    def record(self) -> dict:
        """`metrics.json`'s `"derived"` entry."""
        return {"data": self.data, "derived": self.derived, "given": self.given,
                "summary": self.summary()}


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:g}"
