"""The translator's recipe: train, predict, evaluate, prune.

`python -m zoo train translator --data DIR --out OUT` reads the training
pairs from `DIR/train.<src>` and `DIR/train.<tgt>` (one sentence a line,
aligned; `--source-language en --target-language de` by default, as
Multi30k) or `DIR/train.tsv` (a `source<TAB>target` header), and the
validation pairs from `val.*` the same way. It learns one SentencePiece
vocabulary of both languages, trains a Transformer encoder–decoder with
teacher forcing and label smoothing, early-stops on validation BLEU
(sacreBLEU, cased, 13a; greedy decoding at every epoch's end), restores
the best epoch, scores validation greedy and with `--beam`, and writes to
`OUT`:

- `model.keras`: the translator with its preprocessor (one file);
- `preset/`: the same as a preset folder (`zoo/preset.py`), loadable with
  `Translator.from_preset(path)`;
- `metrics.json`: the options, the data-derived defaults, validation BLEU
  and chrF (greedy and beam; BLEU lowercased too), decoding speed,
  per-epoch history and times, wall time;
- `training_curves.png`; `logs/`: TensorBoard (loss, accuracy, BLEU, and
  the self- and cross-attention maps of two validation pairs);
- `sentencepiece.model` and `run/`: the vocabulary, the epoch record, best
  weights and, while it trains, `BackupAndRestore`'s state: run the same
  command again after an interruption and it resumes.

`predict` and `evaluate` use the shipped `multi30k-en-de` preset, or
`--preset FOLDER` / `--model OUT/model.keras`; so do `explain` (for each
target token of a greedy translation, a score per source token: an alignment
from cross-attention or from gradients), `faithfulness` (those alignments
measured by removing the source tokens they rank highest) and `python -m zoo
prune translator --data DIR --out OUT` (`zoo.pruning`; see `prune_setup`), which
removes encoder heads, decoder self- and cross-attention heads and
feed-forward units on greedy validation BLEU.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from zoo import console
from zoo import registry
from zoo.translator.defaults import BUDGET_STEPS
from zoo.translator.defaults import MAX_VOCABULARY
from zoo.translator.defaults import MIN_EPOCHS
from zoo.translator.defaults import MIN_PATIENCE_EPOCHS
from zoo.translator.defaults import PATIENCE_STEPS

MODEL_NAME = "translator"
DEFAULT_BEAM = 4
DEFAULT_LENGTH_PENALTY = 0.6
# Methods of `zoo explain translator` (see zoo/translator/explanations.py): each
# scores the source tokens for one target token of the greedy translation; the
# default is the best of the card's faithfulness table.
EXPLAIN_METHODS = ("cross_attention", "cross_attention_mean", "input_x_gradient",
                   "integrated_gradients", "random")
BEST_EXPLAIN_METHOD = "cross_attention_mean"
# Source tokens `zoo explain translator` lists per target token.
TOP_SOURCE_TOKENS = 3


class TranslatorRecipe(registry.Recipe):
    """The recipe of `zoo.translator` (see the module's docstring)."""

    name = MODEL_NAME
    package = "zoo.translator"
    default_preset = "multi30k-en-de"
    summary = ("translator (Multi30k En→De): Transformer encoder–decoder, multi-head or "
               "additive cross-attention, cached greedy / beam decoding")
    description = __doc__

    # -- train ----------------------------------------------------------------

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        add = registry.option_adder(parser)
        add("--data", "folder with train.<src>/train.<tgt> and val.<src>/val.<tgt> (or "
            "train.tsv and val.tsv)", required=True)
        add("--out", "output folder; running again with the same folder resumes", required=True)
        add("--source-language", "file ending of the source sentences", default="en")
        add("--target-language", "file ending of the target sentences", default="de")
        add("--vocabulary-size", "joint SentencePiece vocabulary (default: from the data: "
            f"260 + half the distinct words, at most {MAX_VOCABULARY:,})", type=int, default=None)
        add("--sequence-length", "most subword tokens of a source or target sentence",
            type=int, default=128)
        add("--cross-attention", "the decoder's attention over the source",
            choices=("multi_head", "additive"), default="multi_head")
        add("--encoder-layers", "encoder blocks", type=int, default=3)
        add("--decoder-layers", "decoder layers", type=int, default=3)
        add("--hidden-dim", "model width", type=int, default=256)
        add("--heads", "attention heads", type=int, default=4)
        add("--intermediate-dim", "feed-forward width", type=int, default=1024)
        add("--dropout", "dropout after embeddings and in the blocks", type=float, default=0.1)
        add("--attention-dropout", "dropout on attention weights", type=float, default=0.0)
        add("--label-smoothing", "label smoothing of the training targets", type=float,
            default=0.1)
        add("--epochs", "maximum epochs (default: from the data: at least "
            f"{MIN_EPOCHS} epochs and {BUDGET_STEPS:,} steps)", type=int, default=None)
        add("--patience", "early stopping: epochs without a better validation BLEU (default: "
            f"from the data: at least {MIN_PATIENCE_EPOCHS} epochs and {PATIENCE_STEPS:,} "
            "steps)", type=int, default=None)
        add("--batch-size", "sentence pairs per batch", type=int, default=64)
        add("--learning-rate", "peak learning rate", type=float, default=7e-4)
        add("--warmup-steps", "linear warmup steps (default: from the data: a tenth of the "
            "training steps, at most 1,000)", type=int, default=None)
        add("--weight-decay", "AdamW weight decay", type=float, default=0.01)
        add("--beam", "beam width of the final validation score", type=int,
            default=DEFAULT_BEAM)
        add("--seed", "random seed", type=int, default=1)
        registry.add_device_arguments(add)
        add("--verbose", console.VERBOSE_HELP, type=int, choices=(0, 1, 2), default=None)

    def train(self, args: argparse.Namespace) -> str:
        from zoo.translator import train

        metrics = train.run(args, self.name)
        greedy, beam = metrics["validation"]["greedy"], metrics["validation"]["beam"]
        return (f"validation BLEU {greedy['bleu']:.2f} greedy, {beam['bleu']:.2f} beam "
                f"{beam['beam']} (chrF {beam['chrf']:.2f}; best epoch {metrics['best_epoch']}); "
                f"wrote {args.out}")

    # -- predict --------------------------------------------------------------

    def _add_decoding_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--beam", type=int, default=DEFAULT_BEAM,
                            help="beam width; 1 for greedy search (default: %(default)s)")
        parser.add_argument("--max-length", type=int, default=None,
                            help="most target tokens (default: 1.5 times the source's, plus 10)")
        parser.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY,
                            help="beam search's GNMT length penalty alpha; 0 ranks by "
                                 "log-probability (default: %(default)s)")
        parser.add_argument("--batch-size", type=int, default=64,
                            help="sentences decoded together (default: %(default)s)")

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("texts", nargs="+", help="sentences to translate")
        registry.add_model_source_arguments(parser, self.default_preset)
        self._add_decoding_arguments(parser)
        parser.add_argument("--json", action="store_true",
                            help="print one JSON object per sentence")

    def predict(self, args: argparse.Namespace) -> None:
        import json

        model = self.load(args.preset, args.model)
        _check_decoding_arguments(args)
        translations = model.translate(args.texts, beam=args.beam, max_length=args.max_length,
                                       length_penalty=args.length_penalty,
                                       batch_size=args.batch_size)
        for text, translation in zip(args.texts, translations):
            print(json.dumps({"text": text, "translation": translation}, ensure_ascii=False)
                  if args.json else translation)

    # -- evaluate -------------------------------------------------------------

    def add_evaluate_arguments(self, parser: argparse.ArgumentParser) -> None:
        self._add_decoding_arguments(parser)

    def load(self, preset: Optional[str], model_path: Optional[str]):
        from zoo.translator.model import Translator

        if model_path is None:
            return Translator.from_preset(preset or self.default_preset)
        return registry.load_task_file(model_path, (Translator,))

    def evaluate(self, model, data: Path, args: argparse.Namespace) -> dict:
        from kerasattn import data as kdata
        from zoo.translator.data import score

        _check_decoding_arguments(args)
        scores = score(model, kdata.read_parallel_text(data), beam=args.beam,
                       batch_size=args.batch_size, max_length=args.max_length,
                       length_penalty=args.length_penalty)
        return {key: scores[key]
                for key in ("bleu", "chrf", "sentences", "beam", "target_tokens_per_second")}

    def format_metrics(self, metrics: dict) -> str:
        return (f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f} (sacreBLEU, cased, "
                f"13a) on {metrics['sentences']} sentences, beam {metrics['beam']}; "
                f"{metrics['target_tokens_per_second']:.0f} target tokens/s")

    # -- explain and faithfulness --------------------------------------------

    explain_methods = EXPLAIN_METHODS
    best_explain_method = BEST_EXPLAIN_METHOD
    explanations_module = "zoo.translator.explanations"
    faithfulness_reads_folders = True

    def add_explain_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("texts", nargs="+", help="sentences to translate (greedy) and "
                            "explain, target token by target token")

    def format_explanation(self, result: dict) -> str:
        lines = []
        for row in result["explanations"]:
            lines += [row["text"], f"  → {row['translation']}",
                      f"  top {TOP_SOURCE_TOKENS} source tokens of each target token by "
                      f"{row['method']}:"]
            for target, scores in zip(row["target_tokens"], row["alignment"]):
                ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
                shown = ", ".join(f"{row['source_tokens'][i]} {scores[i]:.3f}"
                                  for i in ranked[:TOP_SOURCE_TOKENS])
                lines.append(f"    {target:<14} ← {shown}")
        return "\n".join(lines)

    def explanation_html(self, result: dict) -> str:
        from zoo.explanations import html_heatmap

        rows = [{"heading": f"{target} — {row['text']} → {row['translation']}",
                 "tokens": row["source_tokens"], "scores": scores}
                for row in result["explanations"]
                for target, scores in zip(row["target_tokens"], row["alignment"])]
        return html_heatmap(f"{self.name}: source tokens by {result['method']}, for each "
                            "target token of the greedy translation (red for, blue against)",
                            rows)

    def add_faithfulness_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--split", default="val",
                            help="with --data a folder: the split read, SPLIT.<src> and "
                                 "SPLIT.<tgt> or SPLIT.tsv (default: %(default)s)")
        parser.add_argument("--source-language", default="en",
                            help="file ending of the source sentences (default: %(default)s)")
        parser.add_argument("--target-language", default="de",
                            help="file ending of the target sentences (default: %(default)s)")

    def faithfulness(self, model, data: Path, args: argparse.Namespace) -> dict:
        from kerasattn import data as kdata
        from zoo.explanations import Progress
        from zoo.translator import explanations
        from zoo.translator.data import read_split

        if data.is_dir():
            pairs = read_split(data, args.split, args.source_language, args.target_language)
            if pairs is None:
                raise ValueError(
                    f"{data}: expected {args.split}.{args.source_language} and "
                    f"{args.split}.{args.target_language}, or {args.split}.tsv, received: "
                    "neither")
        else:
            pairs = kdata.read_parallel_text(data)
        progress = Progress(explanations.progress_steps(args.methods, args.random_seeds))
        return explanations.measure(model, pairs.sources[:args.limit], args.methods,
                                    args.random_seeds, args.sanity_examples, progress.step)

    def format_faithfulness(self, report: dict) -> str:
        from zoo.explanations import faithfulness_table

        best = max(report["methods"], key=lambda name: report["methods"][name]["aopc"])
        return "\n\n".join([
            f"{report['examples']} target tokens of {report['sentences']} greedy translations; "
            "each method explains a target token's log-probability (teacher-forced on the "
            f"translation, mean {report['baseline']['log_probability']:.3f}); the measures are "
            "its drops, in nats",
            faithfulness_table(report, "delete", "deleted"),
            faithfulness_table(report, "replace", f"replaced by {report['replacement_token']}"),
            "sanity rho: Spearman correlation with the explanations of the model with every "
            "layer's weights shuffled, top down (below 0.5: the method sees the weights)",
            f"best by comprehensiveness - sufficiency (deletion): {best}",
        ])

    # -- prune ----------------------------------------------------------------

    def add_prune_arguments(self, parser: argparse.ArgumentParser) -> None:
        add = registry.option_adder(parser)
        add("--source-language", "file ending of the source sentences", default="en")
        add("--target-language", "file ending of the target sentences", default="de")
        add("--validation-sentences", "the first validation pairs, scored with greedy BLEU "
            "after every step; the other validation pairs are reported", type=int, default=200)
        add("--beam", "beam width of the reported BLEU; 1 for greedy search", type=int,
            default=DEFAULT_BEAM)
        add("--batch-size", "sentence pairs per training batch, and sentences decoded "
            "together", type=int, default=64)

    def prune_setup(self, model, args: argparse.Namespace):
        """Validation: greedy BLEU (sacreBLEU, as `evaluate`) of the first
        `--validation-sentences` pairs of `DIR/val.*`, as a fraction (so that
        `--tolerance 0.5` is half a BLEU point); report: BLEU with `--beam` of
        the other validation pairs; importance and recovery on the training
        pairs, teacher-forced (the task's loss; recovery distilled from the
        unpruned logits); exported and timed: the greedy decoding loop that
        `export_translator` ships as `translator_greedy.tflite`, on the
        validation sentence of median length. With additive cross-attention
        only the self-attention heads and the feed-forward units are pruned
        (its cross-attention has no heads)."""
        import numpy as np

        from kerasattn import data as kdata
        from zoo import training
        from zoo.pruning import PruneSetup
        from zoo.translator.data import score
        from zoo.translator.export import export_greedy_litert
        from zoo.translator.train import read_splits

        training.check_option_ranges(args, positive=("validation_sentences", "beam",
                                                     "batch_size"))
        splits = read_splits(args)
        train, validation = splits["train"], splits["val"]
        count = args.validation_sentences
        if count >= len(validation.sources):
            raise ValueError(f"expected --validation-sentences below the "
                             f"{len(validation.sources)} validation pairs (the others are "
                             f"reported), received: {count}")
        held = kdata.ParallelText(validation.sources[:count], validation.targets[:count])
        reported = kdata.ParallelText(validation.sources[count:], validation.targets[count:])
        batches = train.to_dataset(args.batch_size, shuffle=True, seed=args.seed,
                                   preprocessor=model.preprocessor)

        def bleu_on(pairs, beam):
            return lambda candidate: score(candidate, pairs, beam=beam,
                                           batch_size=args.batch_size)["bleu"] / 100

        lengths = model.preprocessor.source_lengths(held.sources)
        timed = held.sources[int(np.argsort(lengths, kind="stable")[len(lengths) // 2])]
        features = model.preprocessor([timed])
        checked = held.sources[:8]
        folder = Path(args.data)
        pairs_of = (f"{folder / 'val'}.{{{args.source_language},{args.target_language}}}"
                    if (folder / f"val.{args.source_language}").is_file()
                    else f"{folder / 'val.tsv'}")
        return PruneSetup(
            metric_name="BLEU / 100",
            validate=bleu_on(held, 1),
            report=bleu_on(reported, args.beam),
            validation_data=f"the first {count} pairs of {pairs_of}, greedy decoding",
            report_data=f"the other {len(reported.sources)} pairs of {pairs_of}, "
                        + ("greedy decoding" if args.beam == 1 else f"beam {args.beam}"),
            importance_batches=lambda: batches,
            training_batches=batches.repeat(),
            loss=None,
            latency_inputs={"source_ids": np.asarray(features["encoder_token_ids"]),
                            "source_padding_mask": np.asarray(features["encoder_padding_mask"])},
            sample_inputs=checked,
            write_litert=lambda candidate, folder: export_greedy_litert(
                candidate, folder, sample_texts=checked),
        )


def _check_decoding_arguments(args: argparse.Namespace) -> None:
    from zoo import training

    training.check_option_ranges(args, positive=("beam", "batch_size"),
                                 non_negative=("length_penalty",))
    if args.max_length is not None and args.max_length < 1:
        raise ValueError(f"expected --max-length > 0, received: {args.max_length}")


registry.register(TranslatorRecipe())
