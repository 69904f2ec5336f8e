"""The sequence tagger's recipe: train, predict, evaluate.

`python -m zoo train sequence-tagger --data DIR --out OUT` reads
`DIR/train.txt` and `DIR/valid.txt` (CoNLL columns: the token in
`--token-column`, the tag in `--tag-column`; IOB1, IOB2 or IOBES, found
out from the file) and, if present, `DIR/test.txt`. The tag set is the
training file's, so any CoNLL-format data set trains with no code change.
It learns word and character vocabularies on the training sentences,
trains the tagger with early stopping on validation entity F1 (seqeval,
strict IOB2, computed at every epoch's end), restores the best epoch,
scores validation and, once at the end, `test.txt` (reported apart, never
used for a choice), and writes to `OUT`:

- `model.keras`: the tagger with its preprocessor (one file);
- `preset/`: the same as a preset folder (`zoo/preset.py`), loadable with
  `SequenceTagger.from_preset(path)`;
- `metrics.json`: the options, validation (and test) scores overall and
  per entity type, per-epoch history and times, tagging speed, wall time;
- `training_curves.png` and `attention_heatmap.png` (a validation sentence);
- `logs/`: TensorBoard (loss, validation F1 per type, attention maps of a
  few validation sentences);
- `run/`: the epoch record, best weights and, while it trains,
  `BackupAndRestore`'s state: run the same command again after an
  interruption and it resumes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Optional, Sequence

from zoo import console
from zoo import registry
from zoo.sequence_tagger.defaults import BUDGET_STEPS
from zoo.sequence_tagger.defaults import MIN_EPOCHS
from zoo.sequence_tagger.defaults import MAX_WORD_DROPOUT
from zoo.sequence_tagger.defaults import MIN_PATIENCE_EPOCHS
from zoo.sequence_tagger.defaults import MIN_WORD_DROPOUT
from zoo.sequence_tagger.defaults import NARROW_WIDTH
from zoo.sequence_tagger.defaults import PATIENCE_STEPS
from zoo.sequence_tagger.defaults import WIDE_TOKENS
from zoo.sequence_tagger.defaults import WIDE_WIDTH
from zoo.sequence_tagger.defaults import WORD_DROPOUT_STEP

MODEL_NAME = "sequence-tagger"
# Methods of `zoo explain sequence-tagger` (see zoo/sequence_tagger/explanations.py);
# the default is the best of the card's faithfulness table. Raw attention is left
# out: without a pooling, a self-attention's weights averaged over every query are
# not about one entity.
EXPLAIN_METHODS = ("rollout", "flow", "gradient_rollout", "input_x_gradient",
                   "integrated_gradients", "random")
BEST_EXPLAIN_METHOD = "integrated_gradients"
TOP_CONTEXT_TOKENS = 3  # what `predict` shows of each entity's explanation
# Context tokens `zoo faithfulness sequence-tagger` removes per entity.
TOP_K = 3
# Punctuation split off the words of raw text given to `predict` (CoNLL
# tokens have it apart); only the text's final period is, so "U.S." and "3.5" stay whole.
_PUNCTUATION = re.compile(r"""([,;:!?"()\[\]{}]|'s\b|\.(?=\s*$))""")


def tokenize(text: str) -> str:
    """Raw text as CoNLL-style tokens joined by spaces: punctuation split off."""
    return " ".join(_PUNCTUATION.sub(r" \1 ", text).split())


class SequenceTaggerRecipe(registry.Recipe):
    """The recipe of `zoo.sequence_tagger` (see the module's docstring)."""

    name = MODEL_NAME
    package = "zoo.sequence_tagger"
    default_preset = "conll2003"
    summary = "named-entity tagger (CoNLL-2003): characters + words, Transformer blocks, CRF"
    description = __doc__

    # -- train ----------------------------------------------------------------

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds the recipe's options; the defaults are the `conll2003` preset's."""
        add = registry.option_adder(parser)
        add("--data", "folder with train.txt, valid.txt and optionally test.txt (CoNLL columns)",
            required=True)
        add("--out", "output folder; running again with the same folder resumes", required=True)
        add("--token-column", "column of the tokens (0-based; negative from the end)",
            type=int, default=0)
        add("--tag-column", "column of the tags (0-based; negative from the end)",
            type=int, default=-1)
        add("--scheme", "tag scheme of the files", choices=("auto", "IOB1", "IOB2", "IOBES"),
            default="auto")
        add("--tag-scheme", "tag scheme the model learns (scores are always strict IOB2)",
            choices=("IOB2", "IOBES"), default="IOB2")
        add("--head", "the tagger's head", choices=("crf", "softmax"), default="crf")
        add("--word-dim", "word embedding width", type=int, default=100)
        add("--character-filters", "character encoder width; 0 for no characters", type=int,
            default=64)
        add("--max-word-length", "characters kept per token", type=int, default=16)
        add("--lstm-units", "BiLSTM units per direction; 0 for none (a BiLSTM does not "
            "convert to TFLite at dynamic length)", type=int, default=0)
        add("--layers", "Transformer blocks", type=int, default=2)
        add("--hidden-dim", f"model width (default: from the data: {WIDE_WIDTH[0]} from "
            f"{WIDE_TOKENS:,} training tokens on, else {NARROW_WIDTH[0]})", type=int,
            default=None)
        add("--heads", "attention heads", type=int, default=4)
        add("--intermediate-dim", f"feed-forward width (default: from the data: "
            f"{WIDE_WIDTH[1]} from {WIDE_TOKENS:,} training tokens on, else {NARROW_WIDTH[1]})",
            type=int, default=None)
        add("--position-encoding", "positions added before the blocks",
            choices=("none", "sinusoidal"), default="sinusoidal")
        add("--context-window", "tokens a convolution before the blocks sees at once (local "
            "order); 0 for none", type=int, default=3)
        add("--dropout", "dropout on the token vectors", type=float, default=0.5)
        add("--block-dropout", "dropout in the Transformer blocks", type=float, default=0.1)
        add("--attention-dropout", "dropout on attention weights", type=float, default=0.1)
        add("--word-dropout", "rate at which a word is read as unknown ([UNK]) in training, "
            "so that unseen words get a trained embedding (default: from the data: the share "
            "of entity tokens whose word occurs once, rounded to "
            f"{WORD_DROPOUT_STEP}, within [{MIN_WORD_DROPOUT}, {MAX_WORD_DROPOUT}])",
            type=float, default=None)
        add("--epochs", "maximum epochs (default: from the data: at least "
            f"{MIN_EPOCHS} epochs and {BUDGET_STEPS:,} steps)", type=int, default=None)
        add("--batch-size", "sentences per batch", type=int, default=32)
        add("--learning-rate", "peak learning rate", type=float, default=2e-3)
        add("--warmup-steps", "linear warmup steps", type=int, default=300)
        add("--weight-decay", "AdamW weight decay", type=float, default=0.01)
        add("--patience", "early stopping: epochs without a better validation F1 (default: "
            f"from the data: at least {MIN_PATIENCE_EPOCHS} epochs and {PATIENCE_STEPS:,} "
            "steps)", type=int, default=None)
        add("--seed", "random seed", type=int, default=1)
        registry.add_device_arguments(add)
        add("--verbose", console.VERBOSE_HELP, type=int, choices=(0, 1, 2), default=None)

    def train(self, args: argparse.Namespace) -> str:
        from zoo.sequence_tagger import train

        metrics = train.run(args, self.name)
        validation = metrics["validation"]["overall"]
        line = (f"validation entity F1 {validation['f1']:.4f} (precision "
                f"{validation['precision']:.4f}, recall {validation['recall']:.4f}; best epoch "
                f"{metrics['best_epoch']})")
        if metrics.get("test"):
            line += f", test F1 {metrics['test']['overall']['f1']:.4f}"
        return f"{line}; wrote {args.out}"

    # -- predict --------------------------------------------------------------

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("texts", nargs="+", help="sentences to tag (punctuation is split "
                            "off the words; tokens already apart stay as they are)")
        registry.add_model_source_arguments(parser, self.default_preset)
        parser.add_argument("--json", action="store_true",
                            help="print one JSON object per sentence")

    def predict(self, args: argparse.Namespace) -> None:
        import json

        model = self.load(args.preset, args.model)
        for result in explained(model, describe(model, args.texts)):
            if args.json:
                print(json.dumps(result))
                continue
            print(result["text"])
            if not result["entities"]:
                print("  (no entities)")
            for entity in result["entities"]:
                print(f"  {entity['type']:<6} {entity['text']!r} (tokens {entity['start']} to "
                      f"{entity['end'] - 1}) {entity['confidence']:.3f}")
                if "explanation" in entity:
                    shown = ", ".join(f"{t['token']} {t['score']:.2f}"
                                      for t in entity["explanation"]["context"])
                    print(f"         top context tokens by "
                          f"{entity['explanation']['method']}: {shown or '(none)'}")

    # -- evaluate -------------------------------------------------------------

    def add_evaluate_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch-size", type=int, default=128,
                            help="sentences per batch (default: %(default)s)")
        parser.add_argument("--token-column", type=int, default=0,
                            help="column of the tokens (default: %(default)s)")
        parser.add_argument("--tag-column", type=int, default=-1,
                            help="column of the tags (default: %(default)s)")

    def load(self, preset: Optional[str], model_path: Optional[str]):
        from zoo.sequence_tagger.model import SequenceTagger

        if model_path is None:
            return SequenceTagger.from_preset(preset or self.default_preset)
        return registry.load_task_file(model_path, (SequenceTagger,))

    def evaluate(self, model, data: Path, args: argparse.Namespace) -> dict:
        from kerasattn import data as kdata
        from zoo.sequence_tagger import data as tagger_data

        if args.batch_size <= 0:
            raise ValueError(f"expected --batch-size > 0, received: {args.batch_size}")
        scheme = model.scheme or "IOB2"
        sentences = kdata.read_conll(
            data, token_column=args.token_column, tag_column=args.tag_column,
            output_scheme=scheme, tag_names=model.preprocessor.tag_names,
        )
        scores = tagger_data.score(model, sentences, args.batch_size)
        return {
            "overall": scores["overall"],
            "per_type": scores["per_type"],
            "sentences": scores["sentences"],
            "tokens": scores["tokens"],
            "token_accuracy": scores["token_accuracy"],
            "words_per_second": scores["words_per_second"],
        }

    # -- prune ----------------------------------------------------------------

    def add_prune_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--token-column", type=int, default=0,
                            help="column of the tokens (default: %(default)s)")
        parser.add_argument("--tag-column", type=int, default=-1,
                            help="column of the tags (default: %(default)s)")

    def prune_setup(self, model, args: argparse.Namespace):
        """Validation: `DIR/valid.txt` (what training selects on), report:
        `DIR/test.txt` (or validation without one); importance and recovery on
        `DIR/train.txt` with the task's own CRF loss; timed: the 30-token
        sentence of `benchmarks/tflite_latency.py`."""
        import numpy as np

        from zoo.pruning import PruneSetup
        from zoo.sequence_tagger import data as tagger_data

        splits = tagger_data.read_splits(args.data, args.token_column, args.tag_column,
                                         tag_scheme=model.scheme or "IOB2")
        batches, _ = tagger_data.training_batches(splits.train, model.preprocessor, 32, args.seed)
        reported = splits.test or splits.validation

        def f1_on(sentences):
            return lambda candidate: tagger_data.score(candidate, sentences)["overall"]["f1"]

        sentence = ("The Danish shipping group Maersk said on Tuesday that its chief executive "
                    "Anna Holm would travel to Singapore and Rotterdam next month to meet port "
                    "officials from both cities .")
        return PruneSetup(
            metric_name="entity F1",
            validate=f1_on(splits.validation),
            report=f1_on(reported),
            validation_data=f"{splits.validation.path}",
            report_data=f"{reported.path}",
            importance_batches=lambda: batches,
            training_batches=batches,
            loss=None,
            latency_inputs={key: np.asarray(value)
                            for key, value in model.preprocessor([sentence]).items()},
            sample_inputs=[sentence, "Anna Holm"],
            preprocessor=model.preprocessor,
            distillable=False,
        )

    def format_metrics(self, metrics: dict) -> str:
        overall = metrics["overall"]
        lines = [f"entity F1 {overall['f1']:.4f} (precision {overall['precision']:.4f}, recall "
                 f"{overall['recall']:.4f}) on {metrics['sentences']} sentences; token accuracy "
                 f"{metrics['token_accuracy']:.4f}; {metrics['words_per_second']:.0f} words/s"]
        lines += [f"  {name:<6} F1 {values['f1']:.4f} (precision {values['precision']:.4f}, "
                  f"recall {values['recall']:.4f}, {values['support']} entities)"
                  for name, values in metrics["per_type"].items()]
        return "\n".join(lines)

    # -- explain and faithfulness --------------------------------------------

    explain_methods = EXPLAIN_METHODS
    best_explain_method = BEST_EXPLAIN_METHOD
    explanations_module = "zoo.sequence_tagger.explanations"

    def add_explain_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("texts", nargs="+", help="sentences to tag and explain, entity "
                            "by entity (punctuation is split off the words)")

    def format_explanation(self, result: dict) -> str:
        from zoo.explanations import bar_line

        lines = []
        for row in result["explanations"]:
            lines.append(row["text"])
            if not row["entities"]:
                lines.append("  (no entities)")
            for entity in row["entities"]:
                tokens = [t["token"] if t["context"] else f"[{t['token']}]"
                          for t in entity["tokens"]]
                lines.append(f"  {entity['type']} {entity['text']!r} {entity['confidence']:.3f}, "
                             f"context by {row['method']}: "
                             f"{bar_line(tokens, [t['score'] for t in entity['tokens']])}")
        return "\n".join(lines)

    def explanation_html(self, result: dict) -> str:
        from zoo.explanations import html_heatmap

        rows = [{"heading": f"{entity['type']} {entity['text']!r} {entity['confidence']:.3f} "
                            f"— {row['text']}",
                 "tokens": [t["token"] if t["context"] else f"[{t['token']}]"
                            for t in entity["tokens"]],
                 "scores": [t["score"] for t in entity["tokens"]]}
                for row in result["explanations"] for entity in row["entities"]]
        return html_heatmap(f"{self.name}: tokens by {result['method']}, for each entity's "
                            "marginal ([the entity]; red for, blue against)", rows)

    def add_faithfulness_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--entities", type=int, default=300,
                            help="predicted entities sampled (seed 0) among those with more "
                                 "than --top-k context tokens (default: %(default)s)")
        parser.add_argument("--top-k", type=int, default=TOP_K,
                            help="context tokens removed per entity (default: %(default)s)")

    def faithfulness(self, model, data: Path, args: argparse.Namespace) -> dict:
        from kerasattn import data as kdata
        from zoo import training
        from zoo.explanations import Progress
        from zoo.sequence_tagger import explanations

        training.check_option_ranges(args, positive=("entities", "top_k"))
        read = kdata.read_conll(data, output_scheme=model.scheme or "IOB2",
                                tag_names=model.preprocessor.tag_names)
        sentences, entities, eligible = explanations.sample_entities(
            model, read.tokens[:args.limit], args.top_k, args.entities)
        progress = Progress(explanations.progress_steps(args.methods))
        report = explanations.measure(model, sentences, entities, args.methods, args.top_k,
                                      args.random_seeds, args.sanity_examples, progress.step)
        return {**report, "eligible_entities": eligible}

    def format_faithfulness(self, report: dict) -> str:
        import math

        k = report["k"]
        lines = [f"{report['examples']} predicted entities (of {report['eligible_entities']} "
                 f"with more than {k} context tokens); each method explains the entity's mean "
                 f"CRF marginal (mean {report['baseline']['marginal']:.3f})", "",
                 f"top {k} context tokens deleted: the entity's marginal drop (95 % bootstrap "
                 "interval), as a multiple of random's",
                 f"  {'method':<22} {'drop, top removed':<29} {'x random':>8} "
                 f"{'drop, top kept':>15} {'sanity rho':>10}"]
        rows = [(name, values, values.get("sanity_spearman"))
                for name, values in report["methods"].items()]
        rows.append((f"random ({report['random_seeds']} seeds)", report["random"], None))
        for name, values, sanity in rows:
            low, high = values["interval"]
            ratio = values.get("random_ratio")
            shown_ratio = "" if ratio is None or math.isnan(ratio) else f"{ratio:8.2f}"
            shown_sanity = "" if sanity is None else f"{sanity:10.2f}"
            lines.append(f"  {name:<22} {values['comprehensiveness']:7.3f} [{low:7.3f}, "
                         f"{high:7.3f}]    {shown_ratio:>8} {values['sufficiency']:15.3f} "
                         f"{shown_sanity:>10}")
        lines += ["", "sanity rho: Spearman correlation with the explanations of the model "
                      "with every layer's weights shuffled, top down (below 0.5: the method "
                      "sees the weights)"]
        return "\n".join(lines)


def describe(model, texts: Sequence[str]) -> list[dict]:
    """Tags raw sentences and lists their entity spans.

    Returns:
        Per text: `{"text", "tokens", "tags", "entities"}`, each entity
        `{"type", "text", "start", "end", "confidence"}` (token offsets, end
        exclusive; confidence the mean of its tokens' marginal probabilities).
    """
    from kerasattn import data as kdata

    results = []
    scheme = model.scheme or "IOB2"
    for text, tagged in zip(texts, model.tag([tokenize(text) for text in texts])):
        entities = [
            {"type": kind, "text": " ".join(tagged["tokens"][start:end]), "start": start,
             "end": end,
             "confidence": round(sum(tagged["confidence"][start:end]) / (end - start), 4)}
            for kind, start, end in kdata.entity_spans(tagged["tags"], scheme)
        ]
        results.append({"text": text, "tokens": tagged["tokens"], "tags": tagged["tags"],
                        "entities": entities})
    return results


def explained(model, described: list[dict], top: int = TOP_CONTEXT_TOKENS) -> list[dict]:
    """`describe`'s entities with the `top` context tokens that drove each one's
    marginal, by the method the card's faithfulness table ranks best: each
    entity gains `"explanation": {"method", "context": [{"token", "score"}]}`
    (none for an entity past the model's sequence length)."""
    from zoo.sequence_tagger import explanations

    rows = [row for row in described if row["entities"]]
    found = explanations.explain_texts(model, [row["text"] for row in rows],
                                       BEST_EXPLAIN_METHOD) if rows else []
    for row, explained_row in zip(rows, found):
        spans = {(e["type"], e["start"], e["end"]): e for e in explained_row["entities"]}
        for entity in row["entities"]:
            scored = spans.get((entity["type"], entity["start"], entity["end"]))
            if scored is None:
                continue
            context = sorted((t for t in scored["tokens"] if t["context"]),
                             key=lambda t: -t["score"])[:top]
            entity["explanation"] = {
                "method": BEST_EXPLAIN_METHOD,
                "context": [{"token": t["token"], "score": t["score"]} for t in context]}
    return described


registry.register(SequenceTaggerRecipe())
