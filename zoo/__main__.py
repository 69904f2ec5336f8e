"""`python -m zoo` (also the `zoo` console script): the zoo's command line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from zoo import export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train and check a small attention classifier on a generated sample",
    )
    demo.add_argument("--out", default="zoo_runs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    demo.add_argument("--samples", type=int, default=3000, help="generated examples (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    export.add_arguments(
        commands.add_parser(
            "export",
            help="export a .keras model to SavedModel, TFLite and ONNX, each checked against Keras",
            description=export.__doc__,
        )
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from zoo import demo

        for name in ("epochs", "samples"):
            if getattr(args, name) <= 0:
                print(f"zoo demo: --{name} must be positive, got {getattr(args, name)}", file=sys.stderr)
                return 2
        return demo.run(out_dir=args.out, epochs=args.epochs, samples=args.samples, seed=args.seed)
    if args.command == "export":
        return export.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
