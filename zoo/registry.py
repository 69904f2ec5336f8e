"""The zoo's models, by command-line name, each with its recipe.

Each model folder `zoo/<folder>/` holds a `recipe.py` that subclasses
`Recipe` and calls `register(...)` with an instance; `recipes()` imports
every folder's `recipe.py`, so adding a model is adding a folder. The
command line (`python -m zoo train|predict|evaluate <model>`) dispatches
to the recipe registered under that name.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path
from typing import Optional

import zoo

_RECIPES: dict[str, "Recipe"] = {}


class Recipe:
    """A zoo model's command line: how to train, predict with and evaluate it.

    Attributes:
        name: the model's command-line name, such as `"attention-transformer"`.
        package: its package, such as `"zoo.attention_transformer"` (presets
            are looked up in `<package>/presets/`).
        default_preset: the preset `predict` and `evaluate` use without
            `--preset` or `--model`.
        summary: one line for `python -m zoo --help`.
        description: the text of `python -m zoo train <name> --help`.
    """

    name: str = ""
    package: str = ""
    default_preset: str = ""
    summary: str = ""
    description: str = ""

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds the `train` options (`--data`, `--out` and the model's own)."""
        raise NotImplementedError

    def train(self, args: argparse.Namespace) -> str:
        """Trains with the parsed options; returns the line printed at the end."""
        raise NotImplementedError

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds the `predict` options (the inputs and the model's own)."""
        raise NotImplementedError

    def predict(self, args: argparse.Namespace) -> None:
        """Predicts with the parsed options and prints the results."""
        raise NotImplementedError

    def add_evaluate_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds `evaluate` options beyond `--data`, `--preset`, `--model`, `--json`."""

    def load(self, preset: Optional[str], model_path: Optional[str]):
        """The task model from a preset (name or folder) or a `.keras` file."""
        raise NotImplementedError

    def evaluate(self, model, data: Path, args: argparse.Namespace) -> dict:
        """Scores `model` on the labelled file `data` with the code the recipe
        validates with; returns the metrics (JSON-serialisable)."""
        raise NotImplementedError

    def format_metrics(self, metrics: dict) -> str:
        """`evaluate`'s metrics for a person to read (without `--json`)."""
        return "\n".join(f"{key}: {value}" for key, value in metrics.items())

    def add_prune_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds `prune` options beyond those every model has (`zoo.pruning`)."""

    def prune_setup(self, model, args: argparse.Namespace):
        """What `python -m zoo prune <name>` needs to prune `model` on `args.data`.

        A recipe that overrides it is offered by `zoo prune`; its backbone
        must have `pruned_config` (see `zoo.pruning.rebuild_task`).

        Returns:
            A `zoo.pruning.PruneSetup`: the validation and report metrics,
            training batches, the loss, and the inputs to export and time.
        """
        raise NotImplementedError

    def can_prune(self) -> bool:
        """Whether this recipe overrides `prune_setup`."""
        return type(self).prune_setup is not Recipe.prune_setup

    def add_index_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds `index` options beyond the model source (`--preset`, `--model`) and `--out`."""

    def build_index(self, model, args: argparse.Namespace) -> str:
        """Builds a nearest-neighbour index of `model`'s catalogue and writes it with
        the model as a preset in `args.out`; returns the line printed at the end.

        A recipe that overrides it answers `python -m zoo index <name>`.
        """
        raise NotImplementedError

    def can_index(self) -> bool:
        """Whether this recipe overrides `build_index`."""
        return type(self).build_index is not Recipe.build_index

    # -- explanations: a recipe that sets `explain_methods` answers
    # `python -m zoo explain` and `python -m zoo faithfulness`.

    explain_methods: tuple = ()
    # The method `explain` and `predict` use by default: the one the model
    # card's faithfulness table ranks best.
    best_explain_method: str = ""
    # Whether `faithfulness --data` may name a data folder as well as a file.
    faithfulness_reads_folders: bool = False

    def add_explain_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds `explain`'s inputs (beside `--method`, `--json`, `--html` and the model source)."""
        raise NotImplementedError

    # The module whose `explain_texts(model, texts, method)` the default `explain` calls.
    explanations_module: str = ""

    def explain(self, model, args: argparse.Namespace) -> dict:
        """Explains the inputs in `args` with `args.method`; returns JSON-serialisable results.

        By default `explain_texts` of `explanations_module` on `args.texts`.
        """
        if not self.explanations_module:
            raise NotImplementedError
        import importlib

        module = importlib.import_module(self.explanations_module)
        return {"model": self.name, "method": args.method,
                "explanations": module.explain_texts(model, args.texts, args.method)}

    def format_explanation(self, result: dict) -> str:
        """`explain`'s result for the terminal."""
        raise NotImplementedError

    def explanation_html(self, result: dict) -> str:
        """`explain`'s result as a self-contained HTML page."""
        raise NotImplementedError

    def add_faithfulness_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds `faithfulness` options beyond the shared ones (`--data`, `--methods`, ...)."""

    def faithfulness(self, model, data: Path, args: argparse.Namespace) -> dict:
        """Measures the explanations of `args.methods` on the file `data` (see
        `zoo/explanations.py`); returns the report (JSON-serialisable)."""
        raise NotImplementedError

    def format_faithfulness(self, report: dict) -> str:
        """`faithfulness`'s report for a person to read (without `--json`)."""
        raise NotImplementedError


def option_adder(parser: argparse.ArgumentParser):
    """`add(flag, help, **kwargs)`: `parser.add_argument` that shows a set default in the help.

    Every recipe's `add_train_arguments` adds its options with it, so `--help`
    reads "(default: ...)" after each option that has one.
    """

    def add(flag: str, help: str, **kwargs) -> None:
        if kwargs.get("default") is not None:
            help += " (default: %(default)s)"
        parser.add_argument(flag, help=help, **kwargs)

    return add


def add_device_arguments(add) -> None:
    """`--precision` and `--strategy`, the same in every recipe (`add` from `option_adder`)."""
    from zoo.training import PRECISIONS
    from zoo.training import STRATEGIES

    add("--precision", "dtype policy of training (the saved model computes in float32); "
        "auto: mixed_float16 on a GPU, float32 on a CPU", choices=PRECISIONS, default="auto")
    add("--strategy", "tf.distribute strategy: one device, mirrored over the local devices, "
        "or multi-worker: the same command on every machine, each with its TF_CONFIG (the "
        "chief alone writes --out; README, 'Training on several machines')",
        choices=STRATEGIES, default="default")


def add_model_source_arguments(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """Adds `--preset NAME|DIR` or `--model FILE.keras` (one of them) to `parser`.

    `predict` and `evaluate` of every model take their model this way.
    """
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", default=None,
                        help=f"a shipped preset name or folder (default: {default_preset})")
    source.add_argument("--model", default=None, metavar="FILE.keras",
                        help="a saved model, such as OUT/model.keras")


def load_task_file(model_path: str, classes: tuple):
    """A task saved as a `.keras` file, checked to be one of `classes` with a preprocessor.

    `predict` and `evaluate` of every model load `--model FILE.keras` this way.

    Raises:
        ValueError: naming the file if it is missing, not a `.keras` file, or
            another model.
    """
    import keras

    path = Path(model_path)
    if not path.is_file() or path.suffix != ".keras":
        raise ValueError(f"{path}: expected a .keras model file, received: no such file")
    model = keras.saving.load_model(path)
    if not isinstance(model, classes) or getattr(model, "preprocessor", None) is None:
        names = " or ".join(cls.__name__ for cls in classes)
        raise ValueError(f"{path}: expected a {names} with a preprocessor, "
                         f"received: a {type(model).__name__}")
    return model


def register(recipe: Recipe) -> Recipe:
    """Registers a model's recipe under `recipe.name`; returns it.

    Raises:
        ValueError: if another recipe has that name.
    """
    if not recipe.name or not recipe.package:
        raise ValueError(f"Expected a recipe with a name and a package, received: {recipe!r}")
    existing = _RECIPES.get(recipe.name)
    if existing is not None and type(existing) is not type(recipe):
        raise ValueError(f"Expected one recipe named {recipe.name!r}, received a second")
    _RECIPES[recipe.name] = recipe
    return recipe


def model_folders() -> list[str]:
    """The zoo's model packages: its sub-packages that hold a `recipe.py`."""
    root = Path(zoo.__file__).parent
    return sorted(
        f"zoo.{module.name}"
        for module in pkgutil.iter_modules([str(root)])
        if module.ispkg and (root / module.name / "recipe.py").is_file()
    )


def recipes() -> dict[str, Recipe]:
    """Every model's recipe by command-line name (importing each `recipe.py`)."""
    for package in model_folders():
        importlib.import_module(f"{package}.recipe")
    return dict(sorted(_RECIPES.items()))
