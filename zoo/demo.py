"""`python -m zoo demo`: the zoo's presets, end to end, offline.

It loads the `sst2` preset shipped in the package, classifies a few
built-in sentences (showing the tokens that drove each prediction, by the
explanation method the model card measures most faithful),
fine-tunes for a few steps on a small sample the package carries (written
for this project) with TensorBoard logs and attention maps, saves the
model, exports it to every format with parity checks (SavedModel taking raw
strings, TFLite float32 / float16 / dynamic int8 / full int8, ONNX), and
prints one summary table; then the sequence tagger's `conll2003` preset
tags a few raw sentences (entity spans with their confidence), and the
recommender's `video-games` preset recommends the next items for a few
purchase histories (items already bought left out), and the translator's
`multi30k-en-de` preset translates a few English sentences into German
with beam search on its key/value cache; it ends with one prediction
explained token by token. No data folder is needed.
"""

from __future__ import annotations

import os
import time
from importlib import resources

SENTENCES = (
    "a gorgeous, witty, seductive movie.",
    "the plot is a tired mess and the acting is worse.",
    "an uneven film, but its last act is genuinely moving.",
    "i would rather watch paint dry.",
)
TOP_TOKENS = 3
# Purchase histories of item ids of the Video Games preset (its items are the SASRec file's ids).
HISTORIES = ("12,55,301", "1000,1001,1002,1003")
TOP_ITEMS = 5
TAGGER_SENTENCES = (
    "The European Commission rejected a French plan to limit Spanish fishing boats.",
    "Maria Lindqvist flew from Stockholm to Chicago on Monday.",
    "Shares of Volkswagen rose 3 percent in Frankfurt, Reuters said.",
)
# Multi30k describes pictures: sentences of that kind.
TRANSLATOR_SENTENCES = (
    "A man in a blue shirt is riding a bike down the street.",
    "Two young girls are playing in the snow.",
    "A dog runs through the grass with a ball in its mouth.",
)
TRANSLATOR_BEAM = 4


def _sample_path() -> str:
    return str(resources.files("zoo.attention_transformer") / "demo_sample.tsv")


def run(out_dir: str, steps: int, seed: int) -> int:
    import keras

    from kerasattn import data
    from kerasattn._files import write_atomically
    from kerasattn.callbacks import AttentionMapCallback
    from kerasattn.export import export
    from zoo import console
    from zoo.attention_transformer import plots
    from zoo.attention_transformer import recipe
    from zoo.attention_transformer.model import AttentionTransformerClassifier

    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    classifier = AttentionTransformerClassifier.from_preset("sst2")
    before = recipe.describe(classifier, SENTENCES, TOP_TOKENS)

    # Labels are written 0 (negative) and 1 (positive), the ids of the preset's classes.
    # Batches of raw strings: the classifier's preprocessor maps over them in fit and evaluate.
    sample = data.read_text_classification(_sample_path())
    dataset = sample.to_dataset(batch_size=8, seed=seed)
    _, accuracy_before = classifier.evaluate(dataset, verbose=0)
    log_dir = os.path.join(out_dir, "logs")
    probe, probe_tokens = plots.attention_probe(classifier.preprocessor, SENTENCES[:2])
    classifier.fit(
        dataset.repeat(),
        steps_per_epoch=steps,
        epochs=1,
        verbose=2,
        callbacks=[
            keras.callbacks.TensorBoard(log_dir),
            AttentionMapCallback(probe, log_dir, max_examples=2, probe_tokens=probe_tokens,
                                 explanation_methods=recipe.EXPLANATION_PICTURES),
        ],
    )
    _, accuracy_after = classifier.evaluate(dataset, verbose=0)
    model_path = os.path.join(out_dir, "model.keras")
    os.makedirs(out_dir, exist_ok=True)
    write_atomically(model_path, classifier.save, suffix=".keras")

    export_dir = os.path.join(out_dir, "export")
    with console.native_logging_silenced():  # the LiteRT interpreter's delegate notice
        manifest = export(
            classifier,
            export_dir,
            formats=("saved_model", "tflite", "onnx"),
            quantize=("float32", "float16", "dynamic_int8", "full_int8"),
            sample_inputs=list(SENTENCES),
            representative_data=list(sample.texts),
            preprocessor=classifier.preprocessor,
            # The sst2 preset's full-int8 model differs from Keras by up to about 0.13 x
            # max|logit| when calibrated on the 80 sample sentences (per-tensor int8
            # activations); the default 0.1 is too tight for it.
            tolerances={"full_int8": 0.2},
            overwrite=True,
        )
    tagged = _tag_sentences()
    recommended = _recommend()
    translated = _translate()
    _print_summary(before, accuracy_before, accuracy_after, steps, model_path, export_dir,
                   manifest, log_dir, tagged, recommended, translated)
    _print_explained(AttentionTransformerClassifier.from_preset("sst2"), SENTENCES[0])
    print(f"  wall time: {time.perf_counter() - started:.0f} s")
    return 0


def _print_explained(classifier, text: str) -> None:
    """One prediction of the preset, every token scored by the card's best method."""
    from zoo.attention_transformer import recipe
    from zoo.attention_transformer.explanations import explain_texts
    from zoo.explanations import bar_line

    (row,) = explain_texts(classifier, [text], recipe.BEST_EXPLAIN_METHOD)
    print(f"\nkerasattn demo: one prediction explained ({row['method']}, the most faithful "
          "method in the model card; python -m zoo explain attention-transformer TEXT)")
    print(f"  {row['text']} -> {row['label']} {row['probability']:.2f}")
    print(f"  {bar_line([t['token'] for t in row['tokens']], [t['score'] for t in row['tokens']])}")


def _tag_sentences() -> list[dict]:
    from zoo.sequence_tagger import recipe as tagger_recipe
    from zoo.sequence_tagger.model import SequenceTagger

    return tagger_recipe.describe(SequenceTagger.from_preset("conll2003"), TAGGER_SENTENCES)


def _recommend() -> list[dict]:
    from zoo.recommender import recipe as recommender_recipe

    model = recommender_recipe.RecommenderRecipe().load("video-games", None)
    return [recommender_recipe.recommend(model, history, TOP_ITEMS) for history in HISTORIES]


def _translate() -> list[tuple[str, str]]:
    from zoo.translator.model import Translator

    translator = Translator.from_preset("multi30k-en-de")
    return list(zip(TRANSLATOR_SENTENCES,
                    translator.translate(TRANSLATOR_SENTENCES, beam=TRANSLATOR_BEAM)))


def _print_summary(before, accuracy_before, accuracy_after, steps, model_path, export_dir,
                   manifest, log_dir, tagged, recommended, translated) -> None:
    print("\nkerasattn demo: the Attention-Based Transformer (preset sst2)")
    print("\n  sentence                                              label     p     "
          f"top tokens ({before[0]['method']})")
    for row in before:
        top = ", ".join(f"{token} {weight:.2f}" for token, weight in row["top_tokens"])
        print(f"  {row['text'][:52]:<52}  {row['label']:<8} {row['probability']:.2f}  {top}")
    print(f"\n  fine-tuning on the carried sample: {steps} steps, accuracy on it "
          f"{accuracy_before:.3f} -> {accuracy_after:.3f}")
    print(f"  saved model: {model_path}")
    print(f"\n  export to {export_dir} (every artifact run in its own runtime):")
    print("  artifact              size KB   max |diff|   tolerance   ms at batch 1")
    for name, artifact in manifest["artifacts"].items():
        print(
            f"  {name:<20} {artifact['size_bytes'] / 1024:>8.0f}   "
            f"{artifact['max_abs_difference']:.1e}"
            f"      {artifact['tolerance']:.0e}       {artifact['latency_ms']['batch_1']:.2f}"
        )
    print(f"\n  TensorBoard logs: tensorboard --logdir {log_dir}")
    print("\nkerasattn demo: the sequence tagger (preset conll2003), entities with confidence")
    for row in tagged:
        entities = "; ".join(f"{e['type']} {e['text']!r} {e['confidence']:.2f}"
                             for e in row["entities"]) or "(none)"
        print(f"  {row['text']}\n    {entities}")
    print("\nkerasattn demo: the recommender (preset video-games), next items for a history")
    for result in recommended:
        items = ", ".join(f"{entry['item']} ({entry['score']:.2f})" for entry in result["items"])
        print(f"  history {','.join(result['history'])} -> {items}")
    print(f"\nkerasattn demo: the translator (preset multi30k-en-de), English -> German, "
          f"beam {TRANSLATOR_BEAM}")
    for source, translation in translated:
        print(f"  {source}\n    {translation}")
