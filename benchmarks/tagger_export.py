"""The sequence tagger's exports on real data: entity F1 of each TFLite file and of ONNX.

Exports the tagger (the `conll2003` preset, or `--model`) with
`kerasattn.export.export` (SavedModel taking raw sentences, TFLite float32
and dynamic-range int8, ONNX; every artifact checked against Keras at two
sequence lengths), then tags every sentence of `--data` with each runtime
(the ids the preprocessor makes, computed once beforehand)
in batches of 32 and scores it with seqeval as `zoo evaluate` does. The dynamic-int8 file
may flip a tag where two paths score almost alike, so its parity check is
loose (tolerance 1.0) and its quality is this F1.

    python benchmarks/tagger_export.py --data ../shared/data/conll2003/valid.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)

BATCH_SIZE = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a CoNLL file (valid.txt)")
    parser.add_argument("--preset", default="conll2003")
    parser.add_argument("--model", default=None, help="a .keras tagger instead of the preset")
    args = parser.parse_args()
    console.quiet()

    import numpy as np

    from kerasattn import data as kdata
    from kerasattn.export import export
    from kerasattn.export import LiteRTRuntime
    from kerasattn.export import OnnxRuntime
    from zoo.sequence_tagger import data as tagger_data
    from zoo.training import cpu_name
    from zoo.sequence_tagger.recipe import SequenceTaggerRecipe

    model = SequenceTaggerRecipe().load(None if args.model else args.preset, args.model)
    sentences = kdata.read_conll(args.data, output_scheme=model.scheme or "IOB2",
                                 tag_names=model.preprocessor.tag_names)
    texts = sentences.texts()
    keras_scores = tagger_data.score(model, sentences)
    rows = [("Keras", keras_scores["overall"]["f1"], None, None)]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "export")
        with console.native_logging_silenced():
            manifest = export(
                model, out, formats=("saved_model", "tflite", "onnx"),
                quantize=("float32", "dynamic_int8"), sample_inputs=texts[:4],
                preprocessor=model.preprocessor, tolerances={"dynamic_int8": 1.0},
            )
        runtimes = {
            "TFLite float32": LiteRTRuntime(os.path.join(out, "model_float32.tflite")),
            "TFLite dynamic int8": LiteRTRuntime(os.path.join(out, "model_dynamic_int8.tflite")),
            "ONNX": OnnxRuntime(os.path.join(out, "model.onnx")),
        }
        # The preprocessor's ids, in batches of sentences of similar length.
        order = np.argsort([len(text.split()) for text in texts], kind="stable")
        batches = []
        for begin in range(0, len(order), BATCH_SIZE):
            indices = order[begin:begin + BATCH_SIZE]
            features = model.preprocessor([texts[i] for i in indices])
            batches.append((indices, {key: np.asarray(value) for key, value in features.items()}))
        for name, runtime in runtimes.items():
            predicted, start = [None] * len(texts), time.perf_counter()
            for indices, features in batches:
                tags = runtime.run(features)["tags"]
                names = model.preprocessor.tag_names_of(tags, features["padding_mask"])
                for index, row in zip(indices, names):
                    predicted[index] = row
            seconds = time.perf_counter() - start
            scores = tagger_data.entity_scores(sentences.tags, predicted, sentences.scheme)
            size = os.path.getsize(os.path.join(out, {
                "TFLite float32": "model_float32.tflite",
                "TFLite dynamic int8": "model_dynamic_int8.tflite", "ONNX": "model.onnx"}[name]))
            rows.append((name, scores["overall"]["f1"], seconds, size))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {len(sentences)} sentences of "
          f"{args.data} in batches of {BATCH_SIZE} (preprocessing not timed), one thread")
    print("| model | entity F1 | F1 − Keras (points) | seconds | size MB |")
    print("|---|---|---|---|---|")
    for name, f1, seconds, size in rows:
        print(f"| {name} | {100 * f1:.2f} | {100 * (f1 - rows[0][1]):+.2f} | "
              f"{'' if seconds is None else f'{seconds:.1f}'} | "
              f"{'' if size is None else f'{size / 2**20:.1f}'} |")
    print("export check (max |Keras − artifact| at two lengths): " + ", ".join(
        f"{name} {artifact['max_abs_difference']:.1e}"
        for name, artifact in manifest["artifacts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
