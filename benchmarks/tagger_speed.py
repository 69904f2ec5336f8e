"""Tagging speed: our sequence tagger ÷ spaCy's CNN NER pipeline, words per second.

Both tag the same CoNLL file's sentences (tokens given, as `spacy evaluate`
and `python -m zoo evaluate sequence-tagger` do) in one process, one after
the other, three times each, the median kept:

- ours: the preset (or `--model`) through `zoo.sequence_tagger.data.tag_sentences`,
  the code `zoo evaluate` times;
- spaCy: a `ner` pipeline from spaCy's own `init config --optimize accuracy`
  (CPU, no static vectors, as the issue's spaCy run), labels added and
  initialised on the training file's first sentences. Its weights are not
  trained here: speed does not depend on them, and training it takes the
  50 minutes the issue reports.

spaCy is needed for this benchmark only (`pip install spacy==3.8.18`); it is
not a dependency of the project.

    python benchmarks/tagger_speed.py --data ../shared/data/conll2003/valid.txt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)


def time_ours(model, texts, batch_size: int, repeats: int) -> float:
    from zoo.sequence_tagger import data as tagger_data

    tagger_data.tag_sentences(model, texts[:256], batch_size)  # warm-up: trace every shape
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tagger_data.tag_sentences(model, texts, batch_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spacy_pipeline(labels, training_sentences):
    import spacy
    from spacy.cli.init_config import init_config
    from spacy.tokens import Doc
    from spacy.training import Example

    config = init_config(lang="en", pipeline=["ner"], optimize="accuracy", gpu=False)
    # No static vectors: no en_core_web_lg here, and the spaCy run had none.
    config["components"]["tok2vec"]["model"]["embed"]["include_static_vectors"] = False
    config["initialize"]["vectors"] = None
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    for label in labels:
        nlp.get_pipe("ner").add_label(label)
    examples = [Example.from_dict(Doc(nlp.vocab, words=tokens), {"words": tokens})
                for tokens in training_sentences]
    nlp.initialize(lambda: examples)
    return nlp


def time_spacy(nlp, sentences, batch_size: int, repeats: int) -> float:
    from spacy.tokens import Doc

    def run(batch):
        docs = (Doc(nlp.vocab, words=tokens) for tokens in batch)
        for _ in nlp.pipe(docs, batch_size=batch_size):
            pass

    run(sentences[:256])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(sentences)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a CoNLL file to tag (valid.txt)")
    parser.add_argument("--preset", default="conll2003")
    parser.add_argument("--model", default=None, help="a .keras tagger instead of the preset")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    console.quiet()

    from kerasattn import data as kdata
    from zoo.sequence_tagger.recipe import SequenceTaggerRecipe

    model = SequenceTaggerRecipe().load(None if args.model else args.preset, args.model)
    sentences = kdata.read_conll(args.data, tag_names=model.preprocessor.tag_names)
    words = sum(len(tokens) for tokens in sentences.tokens)
    ours = time_ours(model, sentences.texts(), args.batch_size, args.repeats)
    nlp = spacy_pipeline(sentences.entity_types, sentences.tokens[:64])
    theirs = time_spacy(nlp, sentences.tokens, args.batch_size, args.repeats)

    import spacy
    import tensorflow as tf

    from zoo.training import cpu_name

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; tensorflow {tf.__version__}, "
          f"spaCy {spacy.__version__}")
    print(f"{len(sentences)} sentences, {words} words from {args.data}; median of "
          f"{args.repeats} runs each, batch {args.batch_size}")
    print("| tagger | seconds | words/s |")
    print("|---|---|---|")
    print(f"| ours ({args.model or args.preset}) | {ours:.2f} | {words / ours:,.0f} |")
    print(f"| spaCy 'ner', accuracy config, CPU | {theirs:.2f} | {words / theirs:,.0f} |")
    print(f"ours ÷ spaCy words/s: {theirs / ours:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
