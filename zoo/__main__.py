"""`python -m zoo` (also the `zoo` console script): the zoo's command line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from zoo import export
from zoo.attention_transformer import recipe as attention_transformer_recipe

# The zoo models `train` and `predict` know, by command-line name.
MODELS = (attention_transformer_recipe.MODEL_NAME,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the sst2 preset end to end: classify, fine-tune on a carried sample, export and check",
    )
    demo.add_argument("--out", default="zoo_runs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=10, help="fine-tuning steps (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    export.add_arguments(
        commands.add_parser(
            "export",
            help="export a .keras model to SavedModel, TFLite and ONNX, each checked against Keras",
            description=export.__doc__,
        )
    )
    train = commands.add_parser(
        "train",
        help="train a zoo model on a data folder (model.fit, early stopping, resumable)",
        description=attention_transformer_recipe.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("model", help=f"the zoo model: one of {', '.join(MODELS)}")
    attention_transformer_recipe.add_train_arguments(train)
    predict = commands.add_parser(
        "predict",
        help="classify texts with a zoo model's preset and show the most attended tokens",
    )
    predict.add_argument("model", help=f"the zoo model: one of {', '.join(MODELS)}")
    attention_transformer_recipe.add_predict_arguments(predict)
    return parser


def _run_model_command(args) -> int:
    """Runs `train` or `predict`; bad input is one line on stderr and exit status 2."""
    if args.model not in MODELS:
        print(
            f"zoo {args.command}: unknown model {args.model!r}; "
            f"expected one of: {', '.join(MODELS)}",
            file=sys.stderr,
        )
        return 2
    try:
        if args.command == "train":
            metrics = attention_transformer_recipe.train(args)
            print(
                f"dev accuracy {metrics['dev_accuracy']:.4f} (best epoch {metrics['best_epoch']}); "
                f"wrote {args.out}"
            )
        else:
            attention_transformer_recipe.predict(args)
    except ValueError as error:
        print(f"zoo {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from zoo import demo

        if args.steps <= 0:
            print(f"zoo demo: --steps must be positive, got {args.steps}", file=sys.stderr)
            return 2
        return demo.run(out_dir=args.out, steps=args.steps, seed=args.seed)
    if args.command == "export":
        return export.run(args)
    if args.command in ("train", "predict"):
        return _run_model_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
