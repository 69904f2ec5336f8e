"""`python -m zoo` (also the `zoo` console script): the zoo's command line.

`demo` and `export` are the zoo's own; `presets` lists every shipped
preset; `train`, `predict`, `evaluate` and `prune` take a model's name and
run that model's recipe (`zoo/<model>/recipe.py`, registered with `zoo.registry`):
`python -m zoo train <model> --help` lists its options. `explain` and
`faithfulness` do the same for the models whose recipe explains them
(`kerasattn.explain`), and `index` for the models that serve from a
nearest-neighbour index (the recommender).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from zoo import console

PROG = "zoo"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: `zoo train: <problem>`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser(recipes: dict) -> argparse.ArgumentParser:
    from zoo import export

    parser = _Parser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="the sst2 preset end to end: classify, fine-tune on a carried sample, export, check",
    )
    demo.add_argument("--out", default="zoo_runs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=10,
                      help="fine-tuning steps (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    export.add_arguments(
        commands.add_parser(
            "export",
            help="export a .keras model to SavedModel, TFLite and ONNX, each checked against Keras",
            description=export.__doc__,
        )
    )
    commands.add_parser("presets", help="list every shipped preset with its model card's metric")
    from zoo import pruning

    prunable = commands.add_parser(
        "prune", help="remove attention heads and feed-forward units, recover, measure"
    ).add_subparsers(dest="model_name", required=True, metavar="MODEL")
    for name, recipe in recipes.items():
        if recipe.can_prune():
            pruning.add_arguments(
                prunable.add_parser(name, help=recipe.summary, description=pruning.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter),
                recipe)
    for command, text in (
        ("train", "train a zoo model (model.fit, early stopping, resumable)"),
        ("predict", "run a zoo model's preset (or a saved model) on inputs"),
        ("evaluate", "score a labelled file with a zoo model's preset (or a saved model)"),
    ):
        models = commands.add_parser(command, help=text).add_subparsers(
            dest="model_name", required=True, metavar="MODEL"
        )
        for name, recipe in recipes.items():
            sub = models.add_parser(name, help=recipe.summary, description=recipe.description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
            if command == "train":
                recipe.add_train_arguments(sub)
            elif command == "predict":
                recipe.add_predict_arguments(sub)
            else:
                _add_evaluate_arguments(sub, recipe)
    indexers = commands.add_parser(
        "index", help="build a nearest-neighbour index of a model's catalogue, saved with the "
                      "model as a preset").add_subparsers(dest="model_name", required=True,
                                                          metavar="MODEL")
    for name, recipe in recipes.items():
        if recipe.can_index():
            _add_index_arguments(indexers.add_parser(name, help=recipe.summary), recipe)
    explainers = {name: recipe for name, recipe in recipes.items() if recipe.explain_methods}
    for command, text in (
        ("explain", "which input tokens drove a zoo model's prediction (kerasattn.explain)"),
        ("faithfulness", "measure the explanation methods by removing the tokens they rank "
                         "highest (ERASER, with a random baseline and a sanity check)"),
    ):
        models = commands.add_parser(command, help=text).add_subparsers(
            dest="model_name", required=True, metavar="MODEL"
        )
        for name, recipe in explainers.items():
            sub = models.add_parser(name, help=recipe.summary)
            if command == "explain":
                _add_explain_arguments(sub, recipe)
            else:
                _add_faithfulness_arguments(sub, recipe)
    return parser


def _add_index_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    from zoo import registry

    registry.add_model_source_arguments(parser, recipe.default_preset)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the preset folder to write: the model and its index (created if "
                             "missing; may be the --preset folder itself)")
    recipe.add_index_arguments(parser)


def _add_explain_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    from zoo import registry

    recipe.add_explain_arguments(parser)
    parser.add_argument("--method", choices=recipe.explain_methods,
                        default=recipe.best_explain_method,
                        help="explanation method (default: %(default)s, the best in the model "
                             "card's faithfulness table)")
    registry.add_model_source_arguments(parser, recipe.default_preset)
    parser.add_argument("--json", action="store_true",
                        help="print the explanation as one JSON object")
    parser.add_argument("--html", metavar="FILE", default=None,
                        help="also write a self-contained HTML heatmap to FILE")


def _add_faithfulness_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    from zoo import registry

    measured = [m for m in recipe.explain_methods if m != "random"]
    parser.add_argument("--data", required=True,
                        metavar="FILE_OR_DIR" if recipe.faithfulness_reads_folders else "FILE",
                        help="the labelled file whose examples are explained" + (
                            " (or a data folder)" if recipe.faithfulness_reads_folders else ""))
    parser.add_argument("--methods", nargs="+", choices=measured, default=measured,
                        metavar="METHOD",
                        help=f"methods to measure, of {', '.join(measured)} (default: all)")
    parser.add_argument("--random-seeds", type=int, default=10,
                        help="seeds of the random baseline (default: %(default)s)")
    parser.add_argument("--sanity-examples", type=int, default=100,
                        help="examples the weight-randomisation check explains "
                             "(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None,
                        help="measure only the first N examples (default: all)")
    recipe.add_faithfulness_arguments(parser)
    registry.add_model_source_arguments(parser, recipe.default_preset)
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object")


def _explain(args: argparse.Namespace, recipe) -> None:
    from zoo import explanations

    model = recipe.load(args.preset, args.model)
    result = recipe.explain(model, args)
    if args.html:
        folder = Path(args.html).resolve().parent
        if not folder.is_dir():
            raise ValueError(f"{args.html}: expected a file in an existing folder, "
                             "received: no such folder")
        explanations.write_html(args.html, recipe.explanation_html(result))
    print(json.dumps(result) if args.json else recipe.format_explanation(result))
    if args.html and not args.json:
        print(f"wrote {args.html}")


def _faithfulness(args: argparse.Namespace, recipe) -> None:
    data = Path(args.data)
    if not (data.is_file() or recipe.faithfulness_reads_folders and data.is_dir()):
        expected = ("a labelled file or a data folder" if recipe.faithfulness_reads_folders
                    else "a labelled file")
        raise ValueError(f"{data}: expected {expected}, received: no such file")
    from zoo import training

    training.check_option_ranges(args, positive=("random_seeds", "sanity_examples", "limit"))
    report = recipe.faithfulness(recipe.load(args.preset, args.model), data, args)
    print(json.dumps(report) if args.json else recipe.format_faithfulness(report))


def _add_evaluate_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    from zoo import registry

    parser.add_argument("--data", required=True, metavar="FILE",
                        help="the labelled file to score")
    registry.add_model_source_arguments(parser, recipe.default_preset)
    parser.add_argument("--json", action="store_true",
                        help="print the metrics as one JSON object")
    recipe.add_evaluate_arguments(parser)


def _list_presets(recipes: dict) -> int:
    from zoo import preset

    rows = [("model", "preset", "task", "metric", "description")]
    for name, recipe in recipes.items():
        for preset_name in preset.shipped(recipe.package):
            metadata = preset.read_metadata(preset.find(preset_name, recipe.package))
            metric = metadata.get("metrics") or {}
            value = metric.get("value")
            shown = ("" if value is None else
                     f"{metric.get('name', '')} {value:.4f} ({metric.get('data', '')})")
            rows.append((name, preset_name, metadata["task"] or "(backbone)", shown,
                         metadata.get("description", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    return 0


def _train(args: argparse.Namespace, recipe) -> str:
    """`recipe.train(args)`; under `--strategy multi-worker`, on this worker of the cluster.

    The strategy is created first, before the recipe runs any TensorFlow
    operation (as the strategy requires); a worker other than the chief
    writes into its own scratch folder (`zoo.distribute.worker_output`).
    """
    if getattr(args, "strategy", None) != "multi-worker":
        return recipe.train(args)
    from zoo import distribute

    strategy = distribute.multi_worker_strategy()
    out = args.out
    # A finished run (its metrics.json written last) is not run again: the
    # other workers, whose scratch folders are gone, would train while the
    # chief does not. (`--strategy default` rewrites its outputs alone.)
    finished = distribute.is_chief() and (Path(out) / "metrics.json").is_file()
    if distribute.worker_values(strategy, float(finished))[0]:
        return (f"{distribute.describe()}: {out} holds a finished run (metrics.json); "
                "use another --out")
    with distribute.worker_output(out) as folder:
        args.out = str(folder)
        line = recipe.train(args)
        args.out = out
        # Workers leave together: one that exits while another still works
        # fails TensorFlow's shutdown barrier (and the other sees it crash).
        distribute.wait_for_workers(strategy)
    if distribute.is_chief():
        return line
    return f"{distribute.describe()}: done (the chief wrote {out})"


def _run_model_command(args: argparse.Namespace, recipe) -> int:
    """Runs a model's command; bad input is one line on stderr and exit status 2."""
    try:
        if args.command == "train":
            print(_train(args, recipe))
        elif args.command == "predict":
            recipe.predict(args)
        elif args.command == "index":
            print(recipe.build_index(recipe.load(args.preset, args.model), args))
        elif args.command == "explain":
            _explain(args, recipe)
        elif args.command == "faithfulness":
            _faithfulness(args, recipe)
        else:
            data = Path(args.data)
            if not data.is_file():
                found = "a folder" if data.is_dir() else "no such file"
                raise ValueError(f"{data}: expected a labelled file, received: {found}")
            from zoo import training

            model = training.served_model(recipe.load(args.preset, args.model))
            metrics = recipe.evaluate(model, data, args)
            print(json.dumps(metrics) if args.json else recipe.format_metrics(metrics))
    except ValueError as error:
        print(f"{PROG} {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    console.quiet()
    from zoo import registry

    recipes = registry.recipes()
    args = build_parser(recipes).parse_args(argv)
    if args.command == "demo":
        from zoo import demo

        if args.steps <= 0:
            print(f"{PROG} demo: --steps must be positive, got {args.steps}", file=sys.stderr)
            return 2
        return demo.run(out_dir=args.out, steps=args.steps, seed=args.seed)
    if args.command == "export":
        from zoo import export

        return export.run(args)
    if args.command == "presets":
        return _list_presets(recipes)
    if args.command == "prune":
        from zoo import pruning

        return pruning.run(recipes[args.model_name], args,
                           list(sys.argv[1:] if argv is None else argv))
    return _run_model_command(args, recipes[args.model_name])


if __name__ == "__main__":
    sys.exit(main())
