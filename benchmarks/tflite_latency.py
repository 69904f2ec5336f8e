"""LiteRT latency of the presets' exports: ours ÷ a plain Keras model of the same shape,
int8 ÷ float32, FLOPs per example and the FLOP/s achieved, and each file's quality.

Every preset is exported with `kerasattn.export.export` (each file checked against
Keras), then timed in the LiteRT interpreter (`ai_edge_litert`, one thread, XNNPACK)
at batch 1 — the median of `--runs` calls, the files of one preset interleaved over
`--rounds` rounds:

- `sst2` (the classifier), at 64 tokens: TFLite float32, dynamic-range int8 and full
  int8 (calibrated on 200 training sentences), beside the anchor the issue names: a
  plain Keras Transformer of the same shape (vocabulary, width 64, 4 heads,
  feed-forward 128, 3 layers; `keras.layers.MultiHeadAttention`, mean pooling) converted
  by the plain `TFLiteConverter.from_keras_model`, float32, dynamic int8 and full int8
  (calibrated on the token ids of the same 200 sentences), and the same anchor masking
  the padding (in attention and pooling) as ours does. Quality: SST-2 dev accuracy of
  every file of ours (`--data`);
- `conll2003` (the tagger), a 32-token sentence: float32 and dynamic int8 (their F1:
  `benchmarks/tagger_export.py`);
- `video-games` (the recommender's candidate scorer: a 50-item history and 101
  candidates, the SASRec protocol's): float32 and dynamic int8; quality: sampled HR@10
  of the first `--users` validation users;
- `layers`: one `MultiHeadAttention` (width 64, 4 heads of 16, 64 tokens), ours exported
  by `kerasattn.export` at a dynamic length beside `keras.layers.MultiHeadAttention`
  through the plain converter at a fixed length, without a mask, with a padding mask and
  causal.

"÷ its float32" divides by the same model's float32 file (ours' or the anchor's).
FLOPs count the matrix products of the file's graph at the timed shape
(`FULLY_CONNECTED`, `BATCH_MATMUL`, `CONV_2D`, `DEPTHWISE_CONV_2D`: 2 per
multiply-add), divided by the batch; FLOP/s is that over the latency.

    python benchmarks/tflite_latency.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


class Timed:
    """One .tflite file in the LiteRT interpreter on one thread, with its FLOPs."""

    def __init__(self, name: str, path: str, inputs: dict):
        from kerasattn.export import LiteRTRuntime

        self.name, self.path = name, path
        self.runtime = LiteRTRuntime(path)
        names = [tensor["name"] for tensor in self.runtime.signature()["inputs"]]
        self.inputs = {name: inputs[name] for name in names}
        self.batch = next(iter(self.inputs.values())).shape[0]
        graph = self.runtime.graph(self.inputs)
        self.flops, self.ops = graph["flops"], graph["ops"]
        self.latencies: list[float] = []

    def time(self, runs: int) -> None:
        self.latencies.append(self.runtime.latency_ms(self.inputs, runs))

    @property
    def ms(self) -> float:
        return statistics.median(self.latencies)


def interleaved(files: list[Timed], rounds: int, runs: int) -> None:
    for _ in range(rounds):
        for timed in files:
            timed.time(runs)


def table(title: str, files: list[Timed], quality: dict, anchor=None) -> None:
    by_name = {timed.name: timed for timed in files}
    print(f"\n### {title}\n")
    header = "| file | ops | ms (batch 1) | ÷ its float32 |"
    if anchor:
        header += " ÷ anchor |"
    header += " MFLOP / example | GFLOP/s | quality |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for timed in files:
        # Each model against its own float32 file: ours, or the anchor.
        float32 = by_name[timed.name.split(",")[0] + ", float32"]
        row = (f"| {timed.name} | {timed.ops} | {timed.ms:.3f} | "
               f"{timed.ms / float32.ms:.2f} |")
        if anchor:
            ours_anchor = anchor.get(timed.name)
            row += f" {timed.ms / by_name[ours_anchor].ms:.2f} |" if ours_anchor else " |"
        flops = timed.flops / timed.batch
        row += (f" {flops / 1e6:.2f} | {flops / (timed.ms / 1e3) / 1e9:.2f} | "
                f"{quality.get(timed.name, '')} |")
        print(row)


# -- the presets ------------------------------------------------------------------------


def plain_keras_classifier(vocabulary_size: int, length: int, masked: bool = False):
    """The anchor: a Keras Transformer of the sst2 preset's shape (post-norm, mean pooling);
    with `masked`, padding (id 0) masked in attention and pooling, as ours does."""
    import keras
    from keras import ops

    tokens = keras.Input((length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocabulary_size, 64)(tokens)
    padding = ops.greater(tokens, 0)
    mask = ops.logical_and(ops.expand_dims(padding, 1), ops.expand_dims(padding, 2))
    for _ in range(3):
        attended = keras.layers.MultiHeadAttention(4, 16)(
            x, x, attention_mask=mask if masked else None)
        x = keras.layers.LayerNormalization()(x + attended)
        hidden = keras.layers.Dense(128, activation="gelu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(64)(hidden))
    pooled = keras.layers.GlobalAveragePooling1D()(x, mask=padding if masked else None)
    return keras.Model(tokens, keras.layers.Dense(2)(pooled))


def convert_plain(model, path: str, mode: str, representative=None) -> str:
    """The anchor through the plain converter: `mode` "float32", "dynamic_int8",
    or "full_int8" (integer-only kernels, calibrated on `representative`, a list
    of batch-1 inputs; inputs and outputs stay float, as ours)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "full_int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([x] for x in representative)
    # The converter prints the model's signature on stdout.
    with console.native_logging_silenced(), contextlib.redirect_stdout(io.StringIO()):
        content = converter.convert()
    with open(path, "wb") as file:
        file.write(content)
    return path


def sst2(folder: str, data: str, args) -> None:
    import numpy as np

    from kerasattn.export import export
    from zoo.attention_transformer import AttentionTransformerClassifier
    from zoo.attention_transformer.data import read_labelled

    model = AttentionTransformerClassifier.from_preset("sst2")
    preprocessor = model.preprocessor
    train = read_labelled(os.path.join(data, "sst2", "train.tsv"), model.label_names)
    dev = read_labelled(os.path.join(data, "sst2", "dev.tsv"), model.label_names)
    out = os.path.join(folder, "sst2")
    with console.native_logging_silenced():
        export(model, out, formats=("tflite",),
               quantize=("float32", "dynamic_int8", "full_int8"),
               sample_inputs=dev.texts[:8], representative_data=train.texts[:200],
               preprocessor=preprocessor)
    length = preprocessor.sequence_length
    features = {key: np.asarray(value) for key, value in preprocessor(dev.texts).items()}
    # One 64-token example: the longest dev sentence, padded to the preset's length.
    longest = int(np.argmax(features["padding_mask"].sum(1)))
    example = {key: value[longest:longest + 1] for key, value in features.items()}
    anchor = plain_keras_classifier(model.backbone.vocabulary_size, length)
    files = [Timed(f"ours, {mode}", os.path.join(out, f"model_{mode}.tflite"), example)
             for mode in ("float32", "dynamic_int8", "full_int8")]
    # The anchor calibrates on the token ids of ours' calibration sentences.
    ids = np.asarray(preprocessor(train.texts[:200])["token_ids"])
    ids = np.pad(ids, [(0, 0), (0, length - ids.shape[1])])  # the anchor's fixed length
    calibration = list(ids[:, None])
    files += [Timed(f"anchor, {mode}",
                    convert_plain(anchor, os.path.join(folder, f"anchor_{mode}.tflite"),
                                  mode, calibration),
                    {"token_ids": example["token_ids"]})
              for mode in ("float32", "dynamic_int8", "full_int8")]
    masked = plain_keras_classifier(model.backbone.vocabulary_size, length, masked=True)
    files.append(Timed("anchor with padding masks, float32",
                       convert_plain(masked, os.path.join(folder, "masked.tflite"), "float32"),
                       {"token_ids": example["token_ids"]}))
    interleaved(files, args.rounds, args.runs)
    quality = {}
    for timed in files[:3]:
        logits = np.concatenate([
            next(iter(timed.runtime.run({key: features[key][i:i + 32]
                                         for key in timed.inputs}).values()))
            for i in range(0, len(dev.texts), 32)
        ])
        quality[timed.name] = f"dev accuracy {np.mean(logits.argmax(-1) == dev.labels):.4f}"
    quality["anchor, float32"] = "(random weights: latency only)"
    table(f"`sst2` (classifier, {length} tokens)", files, quality,
          anchor={"ours, float32": "anchor, float32",
                  "ours, dynamic_int8": "anchor, dynamic_int8",
                  "ours, full_int8": "anchor, full_int8",
                  "anchor, float32": "anchor, float32",
                  "anchor, dynamic_int8": "anchor, dynamic_int8",
                  "anchor, full_int8": "anchor, full_int8",
                  "anchor with padding masks, float32": "anchor, float32"})


def tagger(folder: str, args) -> None:
    from kerasattn.export import export
    from zoo.sequence_tagger.recipe import SequenceTaggerRecipe

    model = SequenceTaggerRecipe().load("conll2003", None)
    # An invented sentence of 30 tokens, the length of a long CoNLL-2003 sentence.
    sentence = ("The Danish shipping group Maersk said on Tuesday that its chief executive "
                "Anna Holm would travel to Singapore and Rotterdam next month to meet port "
                "officials from both cities .")
    out = os.path.join(folder, "conll2003")
    with console.native_logging_silenced():
        export(model, out, formats=("tflite",), quantize=("float32", "dynamic_int8"),
               sample_inputs=[sentence, "Anna Holm"], preprocessor=model.preprocessor,
               tolerances={"dynamic_int8": 1.0})
    import numpy as np

    example = {key: np.asarray(value)
               for key, value in model.preprocessor([sentence]).items()}
    files = [Timed(f"ours, {mode}", os.path.join(out, f"model_{mode}.tflite"), example)
             for mode in ("float32", "dynamic_int8")]
    interleaved(files, args.rounds, args.runs)
    words = len(sentence.split())
    table(f"`conll2003` (tagger, one {words}-word sentence)", files,
          {"ours, float32": "F1: benchmarks/tagger_export.py",
           "ours, dynamic_int8": "F1: benchmarks/tagger_export.py"})


def recommender(folder: str, data: str, args) -> None:
    import numpy as np

    from kerasattn.export import export
    from zoo.recommender import NextItemRetriever
    from zoo.recommender import data as recommender_data
    from zoo.recommender import ranking
    from zoo.recommender.export import candidate_scoring_model

    model = NextItemRetriever.from_preset("video-games")
    scorer = candidate_scoring_model(model)
    read = recommender_data.read(os.path.join(data, "sasrec", "Video.txt"),
                                 item_labels=model.preprocessor.item_labels)
    validation = recommender_data.evaluation_set(read, "valid")
    histories = validation.padded(model.backbone.max_sequence_length)[:args.users]
    candidates = np.concatenate([validation.targets[:, None], validation.negatives],
                                axis=1)[:args.users].astype("int32")
    out = os.path.join(folder, "video-games")
    samples = {"item_ids": histories[:8], "candidate_ids": candidates[:8]}
    with console.native_logging_silenced():
        export(scorer, out, formats=("tflite",), quantize=("float32", "dynamic_int8"),
               sample_inputs=samples, tolerances={"dynamic_int8": 1.0})
    example = {"item_ids": histories[:1], "candidate_ids": candidates[:1]}
    files = [Timed(f"ours, {mode}", os.path.join(out, f"model_{mode}.tflite"), example)
             for mode in ("float32", "dynamic_int8")]
    interleaved(files, args.rounds, args.runs)
    quality = {}
    for timed in files:
        scores = np.concatenate([
            timed.runtime.run({"item_ids": histories[i:i + 64],
                               "candidate_ids": candidates[i:i + 64]})["scores"]
            for i in range(0, len(histories), 64)
        ])
        metrics = ranking.rank_metrics(scores, np.zeros(len(scores), np.int64),
                                       k=recommender_data.K)
        quality[timed.name] = (f"validation sampled HR@10 {metrics['hr@10']:.4f} "
                               f"({len(scores)} users)")
    table("`video-games` (recommender's candidate scorer, 50 items, 101 candidates)", files,
          quality)
    keras_scores = scorer.predict({"item_ids": histories, "candidate_ids": candidates},
                                  batch_size=256, verbose=0)["scores"]
    metrics = ranking.rank_metrics(np.asarray(keras_scores), np.zeros(len(histories), np.int64),
                                   k=recommender_data.K)
    print(f"\nKeras on the same users: validation sampled HR@10 {metrics['hr@10']:.4f}")


def attention_layers(folder: str, args) -> None:
    """One attention layer alone (width 64, 4 heads of 16, 64 tokens): ours exported by
    `kerasattn.export` (dynamic length), Keras's through the plain converter (the
    length fixed at 64), without a mask, with a padding mask and causal."""
    import keras
    import numpy as np
    from keras import ops

    from kerasattn import layers
    from kerasattn.export import export

    length, width = 64, 64
    feeds = {"x": np.random.default_rng(0).normal(size=(1, length, width)).astype("float32"),
             "mask": np.ones((1, length), bool)}
    cases = {"no mask": {}, "padding mask": {"masked": True}, "causal": {"causal": True}}
    files = []
    for case, options in cases.items():
        for ours in (True, False):
            keras.utils.set_random_seed(0)
            shape = (None,) if ours else (length,)
            x = keras.Input(shape + (width,), name="x")
            inputs = [x]
            kwargs = {"use_causal_mask": options.get("causal", False)}
            if options.get("masked"):
                mask = keras.Input(shape, dtype="bool", name="mask")
                inputs.append(mask)
                if ours:
                    kwargs.update(query_mask=mask, value_mask=mask)
                else:
                    kwargs["attention_mask"] = ops.logical_and(
                        ops.expand_dims(mask, 1), ops.expand_dims(mask, 2))
            layer = (layers.MultiHeadAttention if ours else keras.layers.MultiHeadAttention)(4, 16)
            model = keras.Model(inputs, layer(x, x, **kwargs))
            name = f"{'ours' if ours else 'keras'}, {case}"
            path = os.path.join(folder, name.replace(", ", "_").replace(" ", "_"))
            if ours:
                with console.native_logging_silenced():
                    sample = [feeds[tensor.name] for tensor in inputs]
                    export(model, path, formats=("tflite",), quantize=("float32",),
                           sample_inputs=sample if len(sample) > 1 else sample[0])
                path = os.path.join(path, "model_float32.tflite")
            else:
                path = convert_plain(model, path + ".tflite", "float32")
            files.append(Timed(name, path, feeds))
    interleaved(files, args.rounds, args.runs)
    by_name = {timed.name: timed for timed in files}
    print(f"\n### One attention layer (width {width}, 4 heads, {length} tokens), float32\n")
    print("| file | ops | µs (batch 1) | ours ÷ Keras |")
    print("|---|---|---|---|")
    for timed in files:
        ratio = ""
        if timed.name.startswith("ours"):
            ratio = f"{timed.ms / by_name['keras' + timed.name[4:]].ms:.2f}"
        print(f"| {timed.name} | {timed.ops} | {timed.ms * 1e3:.1f} | {ratio} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.normpath(os.path.join(REPO, "..", "shared",
                                                                       "data")),
                        help="the folder with sst2/ and sasrec/ (default: ../shared/data)")
    parser.add_argument("--presets", nargs="+",
                        choices=("sst2", "conll2003", "video-games", "layers"),
                        default=["sst2", "conll2003", "video-games", "layers"])
    parser.add_argument("--runs", type=int, default=300, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--users", type=int, default=3000,
                        help="validation users scored for the recommender's quality")
    args = parser.parse_args()
    for name in ("runs", "rounds", "users"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0")
    console.quiet()
    from zoo import training

    flags = training.cpu_flags()
    present = [flag for flag in FLAGS if flag in flags] or ["none of " + "/".join(FLAGS)]
    print(f"CPU: {training.cpu_name()}, {os.cpu_count()} cores; flags: {' '.join(present)}; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        if "sst2" in args.presets:
            sst2(folder, args.data, args)
        if "conll2003" in args.presets:
            tagger(folder, args)
        if "video-games" in args.presets:
            recommender(folder, args.data, args)
        if "layers" in args.presets:
            attention_layers(folder, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
