"""The Attention-Based Transformer's recipe: train, predict, evaluate.

`python -m zoo train attention-transformer --data DIR --out OUT` reads
`DIR/train.tsv` and `DIR/dev.tsv` (`sentence<TAB>label`, as GLUE's SST-2),
holds whole sentences of `train.tsv` out for validation (with every phrase
of theirs; `--validation-sentences`), learns a WordPiece vocabulary on the
rest, pre-trains the backbone on those texts (masked tokens), fine-tunes
the classifier once per `--fine-tune-seeds` seed from the same initial
weights with early stopping on validation accuracy, ships the best run on
validation (or with `--average weights` the mean of every run's weights),
scores it on validation and on `dev.tsv` (reported, never chosen on), and
writes to `OUT`:

- `model.keras`: the classifier with its preprocessor (one file);
- `preset/`: the same as a preset folder (`zoo/preset.py`), loadable with
  `AttentionTransformerClassifier.from_preset(path)`;
- `metrics.json`: the options, the validation and dev scores (accuracy,
  per class), each seed's run (per-epoch history and times), the wall time
  (summed over interrupted runs);
- `training_curves.png` and `attention_heatmap.png` (matplotlib, Agg);
- `logs/seed-S/`: TensorBoard logs (with attention maps of a few
  validation sentences);
- with `--pretrain-epochs N`: `pretrained_backbone/` (the masked-token
  model as a preset, whose backbone starts fine-tuning) and
  `pretraining.json` (its options, checked when reused, and per-epoch loss
  and accuracy);
- `vocabulary.txt` and `fine_tuning/seed-S/`: each run's record and best
  weights, and while it trains `BackupAndRestore`'s state: run the same
  command again after an interruption and it resumes, keeping the whole
  history.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from zoo import console
from zoo import registry
from zoo.attention_transformer.defaults import BEST_EXPLAIN_METHOD
from zoo.attention_transformer.defaults import BUDGET_STEPS
from zoo.attention_transformer.defaults import CLASS_WEIGHTS
from zoo.attention_transformer.defaults import EXPLANATION_PICTURES  # noqa: F401  (zoo.demo's)
from zoo.attention_transformer.defaults import MIN_EPOCHS
from zoo.attention_transformer.defaults import MIN_PATIENCE_EPOCHS
from zoo.attention_transformer.defaults import PATIENCE_STEPS

MODEL_NAME = "attention-transformer"
EXPLAIN_METHODS = ("raw_attention", "rollout", "flow", "gradient_rollout", "input_x_gradient",
                   "integrated_gradients", "random")
# The defaults of the selection protocol, in one place.
DEFAULT_VALIDATION_SEED = 0
DEFAULT_FINE_TUNE_SEEDS = "1,2,3,4,5"
DEFAULT_AVERAGE = "weights"


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, received: {value!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, received: {value!r}")
    return seeds


class AttentionTransformerRecipe(registry.Recipe):
    """The recipe of `zoo.attention_transformer` (see the module's docstring)."""

    name = MODEL_NAME
    package = "zoo.attention_transformer"
    default_preset = "sst2"
    summary = "text classifier (SST-2): Transformer blocks, cross-layer fusion, attention pooling"
    description = __doc__

    # -- train ----------------------------------------------------------------

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds the recipe's options; the defaults are the `sst2` preset's."""

        add = registry.option_adder(parser)
        add("--data", "folder with train.tsv and dev.tsv (sentence<TAB>label)", required=True)
        add("--out", "output folder; running again with the same folder resumes", required=True)
        add("--label-names", "comma-separated class names in label order "
            "(default: the labels as written)", default=None)
        add("--validation-sentences", "whole sentences of train.tsv held out (with their "
            "phrases) for validation: early stopping and every choice; dev.tsv is only "
            "reported; 0 validates on dev.tsv (default: from the data: 15%% of the "
            "sentences, at most 1,000)", type=int, default=None)
        add("--validation-seed", "seed of the held-out sentences' draw", type=int,
            default=DEFAULT_VALIDATION_SEED)
        add("--vocabulary", "vocabulary file to use instead of learning one from the training "
            "texts (default: learn one, or reuse OUT/vocabulary.txt)", default=None)
        add("--vocabulary-size", "WordPiece vocabulary size", type=int, default=8000)
        add("--sequence-length", "longest input in tokens", type=int, default=64)
        add("--layers", "encoder blocks L", type=int, default=3)
        add("--hidden-dim", "model width", type=int, default=64)
        add("--heads", "attention heads", type=int, default=4)
        add("--intermediate-dim", "feed-forward width", type=int, default=128)
        add("--dropout", "dropout on embeddings and in the blocks", type=float, default=0.3)
        add("--attention-dropout", "dropout on attention weights", type=float, default=0.1)
        add("--token-dropout", "word dropout rate", type=float, default=0.3)
        add("--head-dropout", "dropout before the classifier", type=float, default=0.3)
        add("--norm", "pre- or post-norm blocks", choices=("pre", "post"), default="pre")
        add("--no-fusion", "turn cross-layer fusion off (pool the last block's output)",
            dest="fusion", action="store_false")
        add("--pooling-units", "pooling tanh projection width (default: none)", type=int,
            default=None)
        add("--position-encoding", "position encoding", choices=("learned", "sinusoidal"),
            default="learned")
        add("--attention-window", "local self-attention: tokens see neighbours closer than "
            "this; 0 for global attention", type=int, default=3)
        add("--epochs", "maximum fine-tuning epochs (default: from the data: at least "
            f"{MIN_EPOCHS} epochs and {BUDGET_STEPS:,} steps)", type=int, default=None)
        add("--batch-size", "batch size", type=int, default=64)
        add("--learning-rate", "peak learning rate", type=float, default=5e-4)
        add("--warmup-steps", "linear warmup steps", type=int, default=300)
        add("--weight-decay", "AdamW weight decay", type=float, default=0.05)
        add("--label-smoothing", "label smoothing", type=float, default=0.1)
        add("--full-weight-length", "training texts shorter than this many tokens weigh "
            "length / this in the loss (short phrases count less); 0 weighs all alike",
            type=int, default=0)
        add("--class-weight", "'balanced' weighs each training text by N / (K * N_class) in "
            "the loss, so that every class weighs the same; 'none' weighs texts alike",
            choices=CLASS_WEIGHTS, default="none")
        add("--pretrain-epochs", "epochs of self-supervised masked-token pre-training of the "
            "backbone on the training texts before fine-tuning; 0 for none", type=int,
            default=32)
        add("--pretrain-learning-rate", "peak learning rate of the pre-training", type=float,
            default=1e-3)
        add("--mask-rate", "pre-training: share of tokens hidden (80%% [MASK], 10%% a random "
            "token, 10%% unchanged) and predicted", type=float, default=0.15)
        add("--patience", "early stopping: epochs without a better validation accuracy "
            f"(default: from the data: at least {MIN_PATIENCE_EPOCHS} epochs and "
            f"{PATIENCE_STEPS:,} steps)", type=int, default=None)
        add("--seed", "random seed of the vocabulary, the pre-training and the classifier's "
            "initial weights", type=int, default=1)
        add("--fine-tune-seeds", "comma-separated seeds, one fine-tuning each from the same "
            "initial weights", type=_seeds, default=DEFAULT_FINE_TUNE_SEEDS)
        add("--average", "the model shipped from several seeds: 'none' the best on validation, "
            "'weights' the element-wise mean of every seed's best weights (with one seed, "
            "that seed's model)",
            choices=("none", "weights"), default=DEFAULT_AVERAGE)
        registry.add_device_arguments(add)
        add("--verbose", console.VERBOSE_HELP, type=int, choices=(0, 1, 2), default=None)

    def train(self, args: argparse.Namespace) -> str:
        from zoo.attention_transformer import train

        metrics = train.run(args, self.name)
        validation, dev = metrics["validation"], metrics["dev"]
        best = metrics["best_epoch"]
        where = "" if best is None else f" (best epoch {best})"
        if args.validation_sentences:
            return (f"validation accuracy {validation['accuracy']:.4f} on "
                    f"{validation['examples']} held-out sentences{where}, "
                    f"dev accuracy {dev['accuracy']:.4f}; wrote {args.out}")
        return f"dev accuracy {dev['accuracy']:.4f}{where}; wrote {args.out}"

    # -- predict --------------------------------------------------------------

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("texts", nargs="+", help="texts to classify")
        registry.add_model_source_arguments(parser, self.default_preset)
        parser.add_argument("--top", type=int, default=5,
                            help="how many of the tokens that drove the prediction most to show "
                                 "(default: %(default)s)")

    def predict(self, args: argparse.Namespace) -> None:
        if args.top <= 0:
            raise ValueError(f"expected --top > 0, received: {args.top}")
        for result in describe(self.load(args.preset, args.model), args.texts, args.top):
            print(f"{result['text']}\n  {result['label']} {result['probability']:.3f}")
            print(f"  top tokens by {result['method']}: "
                  + ", ".join(f"{t} {w:.2f}" for t, w in result["top_tokens"]))

    # -- evaluate -------------------------------------------------------------

    def add_evaluate_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch-size", type=int, default=256,
                            help="texts per batch (default: %(default)s)")

    def load(self, preset: Optional[str], model_path: Optional[str]):
        from zoo.attention_transformer.model import AttentionTransformerClassifier

        if model_path is None:
            return AttentionTransformerClassifier.from_preset(preset or self.default_preset)
        return registry.load_task_file(model_path, (AttentionTransformerClassifier,))

    def evaluate(self, model, data: Path, args: argparse.Namespace) -> dict:
        from zoo.attention_transformer import data as recipe_data

        if args.batch_size <= 0:
            raise ValueError(f"expected --batch-size > 0, received: {args.batch_size}")
        rows = recipe_data.read_labelled(data, model.label_names or
                                         [str(i) for i in range(model.num_classes)])
        return recipe_data.score(model, rows, args.batch_size)

    # -- prune ----------------------------------------------------------------

    def prune_setup(self, model, args: argparse.Namespace):
        """Validation: the sentences the preset held out of `DIR/train.tsv`
        (the recipe's default split), report: `DIR/dev.tsv`; importance and
        recovery on the rest of `train.tsv`, in the recipe's training batches;
        timed: the longest dev sentence, as `benchmarks/tflite_latency.py` does."""
        import numpy as np

        from zoo.attention_transformer import data as recipe_data
        from zoo.attention_transformer.model import SparseCrossentropyWithSmoothing
        from zoo.pruning import PruneSetup

        splits = recipe_data.read_splits(args.data, None, DEFAULT_VALIDATION_SEED)
        preprocessor = model.preprocessor
        batches, _ = recipe_data.training_batches(
            splits.train.texts, splits.train.labels, preprocessor, batch_size=32, seed=args.seed)
        features = {key: np.asarray(value)
                    for key, value in preprocessor(splits.dev.texts).items()}
        longest = int(np.argmax(features["padding_mask"].sum(1)))

        def accuracy_on(rows):
            return lambda candidate: recipe_data.score(candidate, rows)["accuracy"]

        return PruneSetup(
            metric_name="accuracy",
            validate=accuracy_on(splits.validation),
            report=accuracy_on(splits.dev),
            validation_data=splits.validation_source,
            report_data=f"{Path(args.data) / 'dev.tsv'}",
            importance_batches=lambda: batches,
            training_batches=batches,
            loss=SparseCrossentropyWithSmoothing(0.0),
            latency_inputs={key: value[longest:longest + 1] for key, value in features.items()},
            sample_inputs=list(splits.dev.texts[:8]),
            preprocessor=preprocessor,
        )

    def format_metrics(self, metrics: dict) -> str:
        per_class = ", ".join(f"{name} {value:.4f}" for name, value in metrics["per_class"].items())
        return (f"accuracy {metrics['accuracy']:.4f} on {metrics['examples']} examples "
                f"(per class: {per_class})")

    # -- explain and faithfulness --------------------------------------------

    explain_methods = EXPLAIN_METHODS
    best_explain_method = BEST_EXPLAIN_METHOD
    explanations_module = "zoo.attention_transformer.explanations"

    def add_explain_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("texts", nargs="+", help="texts to classify and explain")

    def format_explanation(self, result: dict) -> str:
        from zoo.explanations import bar_line

        lines = []
        for row in result["explanations"]:
            tokens = [t["token"] for t in row["tokens"]]
            scores = [t["score"] for t in row["tokens"]]
            lines.append(f"{row['text']}\n  {row['label']} {row['probability']:.3f}, "
                         f"tokens by {row['method']}: {bar_line(tokens, scores)}")
        return "\n".join(lines)

    def explanation_html(self, result: dict) -> str:
        from zoo.explanations import html_heatmap

        rows = [{"heading": f"{row['text']} — {row['label']} {row['probability']:.3f}",
                 "tokens": [t["token"] for t in row["tokens"]],
                 "scores": [t["score"] for t in row["tokens"]]}
                for row in result["explanations"]]
        return html_heatmap(f"{self.name}: tokens by {result['method']}, for the predicted "
                            "class (red for, blue against)", rows)

    def faithfulness(self, model, data: Path, args: argparse.Namespace) -> dict:
        from zoo.attention_transformer import data as recipe_data
        from zoo.attention_transformer import explanations
        from zoo.explanations import Progress

        rows = recipe_data.read_labelled(data, model.label_names or
                                         [str(i) for i in range(model.num_classes)])
        texts = rows.texts[:args.limit]
        progress = Progress(explanations.progress_steps(args.methods, args.random_seeds))
        return explanations.measure(model, texts, args.methods, args.random_seeds,
                                    args.sanity_examples, progress.step)

    def format_faithfulness(self, report: dict) -> str:
        from zoo.explanations import faithfulness_table

        best = max(report["methods"], key=lambda name: report["methods"][name]["aopc"])
        return "\n\n".join([
            f"{report['examples']} examples; each method explains the predicted class",
            faithfulness_table(report, "delete", "deleted"),
            faithfulness_table(report, "replace", f"replaced by {report['replacement_token']}"),
            "sanity rho: Spearman correlation with the explanations of the model with every "
            "layer's weights shuffled, top down (below 0.5: the method sees the weights)",
            f"best by comprehensiveness - sufficiency (deletion): {best}",
        ])


def describe(model, texts: Sequence[str], top: int,
             method: str = BEST_EXPLAIN_METHOD) -> list[dict]:
    """Classifies `texts` and finds the tokens that drove each prediction most.

    Args:
        model: an `AttentionTransformerClassifier` with a preprocessor.
        texts: the texts.
        top: how many tokens to keep per text.
        method: a `kerasattn.explain` method; defaults to the best of the
            model card's faithfulness table.

    Returns:
        Per text: `{"text", "label", "probability", "method", "top_tokens"}`,
        with `top_tokens` the `top` (token, score) pairs of highest score.
    """
    from zoo.attention_transformer import explanations

    results = []
    for row in explanations.explain_texts(model, texts, method):
        ranked = sorted(row["tokens"], key=lambda t: -t["score"])[:top]
        results.append({**{key: row[key] for key in ("text", "label", "probability", "method")},
                        "top_tokens": [(t["token"], round(t["score"], 3)) for t in ranked]})
    return results


registry.register(AttentionTransformerRecipe())
