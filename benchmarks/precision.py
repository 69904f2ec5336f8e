"""Training throughput in mixed_bfloat16 ÷ float32, measured in one process.

Each workload is trained on `--steps` batches per precision (after one
untimed pass over them), the precisions alternated `--rounds` times
(medians kept):

- `tagger`: the sequence tagger's recipe model (`SequenceTagger` with its
  default backbone and the CRF) on CoNLL-2003 training batches built by the
  recipe's own pipeline (`--data`/conll2003);
- `sst2`: the `sst2` preset's classifier (its architecture, fresh weights)
  on SST-2 training batches of the recipe's pipeline, batch 64
  (`--data`/sst2);
- `recommender`: the `video-games` preset's architecture (`NextItemRetriever`,
  full-softmax loss) on the recipe's training batches of 128 histories
  (`--data`/sasrec/Video.txt); tokens are real history positions;
- `translator`: the `multi30k-en-de` preset's architecture (`Translator`,
  fresh weights) on the recipe's batches of 64 Multi30k training pairs
  (`--data`/multi30k); tokens are real source and target positions;
- `blocks`: 4 Transformer encoder blocks, width 256, 4 heads, feed-forward
  1024, length 64, batch 64, with our `TransformerEncoderBlock` and with the
  same block written from `keras.layers.MultiHeadAttention` (the anchor),
  on random tokens.

It prints tokens per second per precision and the ratio bf16 ÷ float32,
with the CPU's model and the flags that decide whether bfloat16 pays
(`avx512_bf16`, `amx_bf16`). `zoo.training.dtype_policy("auto")` trains in
float32 on every CPU (bfloat16 lost quality on a small NER set); bfloat16 is
`--precision mixed_bfloat16`.

    python benchmarks/precision.py --workloads tagger,sst2,recommender,translator,blocks
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

PRECISIONS = ("float32", "mixed_bfloat16")


def tagger_workload(data: str, precision: str, steps: int):
    """A function training the tagger `steps` steps; returns tokens trained on."""
    import keras

    from zoo import training
    from zoo.sequence_tagger import data as tagger_data
    from zoo.sequence_tagger.model import SequenceTagger
    from zoo.sequence_tagger.model import SequenceTaggerBackbone
    from zoo.sequence_tagger.preprocessor import SequenceTaggerPreprocessor
    from zoo.sequence_tagger.preprocessor import learn_vocabularies

    splits = tagger_data.read_splits(data)
    words, characters = learn_vocabularies(splits.train.tokens)
    preprocessor = SequenceTaggerPreprocessor(words, characters, splits.train.tag_names)
    keras.utils.set_random_seed(1)
    backbone = SequenceTaggerBackbone(len(words), len(characters), dtype=precision)
    model = SequenceTagger(backbone, len(splits.train.tag_names), preprocessor=preprocessor)
    model.compile(optimizer=training.optimizer(2e-3, 10_000, 300, 0.01, clipnorm=5.0))
    batches, _ = tagger_data.training_batches(splits.train, preprocessor, 32, seed=1)
    return recipe_trainer(model, batches, steps, lambda batch: batch[0]["padding_mask"])


def recipe_trainer(model, batches, steps: int, real_positions):
    """A function training `model` on the first `steps` of `batches` (taken once:
    the same batches for both precisions); returns the real tokens trained on,
    counted by `real_positions(batch)` (a boolean array)."""
    taken = list(batches.take(steps))
    tokens = sum(int(real_positions(batch).numpy().sum()) for batch in taken)

    def train():
        for batch in taken:
            model.train_on_batch(*batch)
        return tokens

    return train


def sst2_workload(data: str, precision: str, steps: int):
    """A function training the sst2 preset's architecture `steps` steps."""
    import keras

    from zoo import training
    from zoo.attention_transformer import AttentionTransformerBackbone
    from zoo.attention_transformer import AttentionTransformerClassifier
    from zoo.attention_transformer import data as recipe_data

    preset = AttentionTransformerClassifier.from_preset("sst2")
    train = recipe_data.read_labelled(os.path.join(data, "train.tsv"), preset.label_names)
    keras.utils.set_random_seed(1)
    config = {**preset.backbone.get_config(), "dtype": precision}
    model = AttentionTransformerClassifier(
        AttentionTransformerBackbone.from_config(config), preprocessor=preset.preprocessor
    )
    model.compile(optimizer=training.optimizer(5e-4, 10_000, 300, 0.01, precision=precision))
    batches, _ = recipe_data.training_batches(
        train.texts, train.labels, preset.preprocessor, 64, seed=1
    )
    return recipe_trainer(model, batches, steps, lambda batch: batch[0]["padding_mask"])


def recommender_workload(data: str, precision: str, steps: int):
    """A function training the video-games preset's architecture `steps` steps."""
    import keras

    from zoo import training
    from zoo.recommender import NextItemRetriever
    from zoo.recommender import data as recommender_data
    from zoo.recommender.model import SequentialRecommenderBackbone

    preset = NextItemRetriever.from_preset("video-games")
    read = recommender_data.read(data, item_labels=preset.preprocessor.item_labels)
    keras.utils.set_random_seed(1)
    config = {**preset.backbone.get_config(), "dtype": precision}
    model = NextItemRetriever(
        SequentialRecommenderBackbone.from_config(config), preset.preprocessor, seed=1
    )
    model.compile(optimizer=training.optimizer(1e-3, 10_000, 100, 0.0, precision=precision))
    length = preset.backbone.max_sequence_length
    batches, _ = recommender_data.retrieval_batches(read, length, 128, seed=1)
    return recipe_trainer(model, batches, steps, lambda batch: batch[0]["item_ids"] > 0)


def translator_workload(data: str, precision: str, steps: int):
    """A function training the multi30k-en-de preset's architecture `steps` steps."""
    import keras

    from kerasattn.data import read_parallel_text
    from zoo import training
    from zoo.translator.model import Translator
    from zoo.translator.model import TranslatorBackbone

    preset = Translator.from_preset("multi30k-en-de")
    train = read_parallel_text(os.path.join(data, "train.en"), os.path.join(data, "train.de"))
    keras.utils.set_random_seed(1)
    config = {**preset.backbone.get_config(), "dtype": precision}
    model = Translator(TranslatorBackbone.from_config(config), preset.preprocessor,
                       label_smoothing=preset.label_smoothing)
    model.compile(optimizer=training.optimizer(7e-4, 10_000, 300, 0.01, precision=precision))
    batches = train.to_dataset(64, shuffle=True, seed=1, preprocessor=preset.preprocessor)
    return recipe_trainer(model, batches, steps, lambda batch: pair_positions(batch[0]))


def pair_positions(features):
    """Source and target padding masks side by side (real positions of a pair batch)."""
    import tensorflow as tf

    return tf.concat([features["encoder_padding_mask"], features["decoder_padding_mask"]], 1)


def blocks_workload(kind: str, precision: str, steps: int):
    import keras
    import numpy as np

    from kerasattn import layers

    width, heads, length, batch = 256, 4, 64, 64
    keras.utils.set_random_seed(1)
    tokens_in = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(8000, width, dtype=precision)(tokens_in)
    for _ in range(4):
        if kind == "ours":
            x = layers.TransformerEncoderBlock(heads, 4 * width, norm_first=True,
                                               dtype=precision)(x)
        else:
            norm = keras.layers.LayerNormalization(dtype=precision)(x)
            x = x + keras.layers.MultiHeadAttention(heads, width // heads, dtype=precision)(
                norm, norm)
            norm = keras.layers.LayerNormalization(dtype=precision)(x)
            hidden = keras.layers.Dense(4 * width, activation="relu", dtype=precision)(norm)
            x = x + keras.layers.Dense(width, dtype=precision)(hidden)
    logits = keras.layers.Dense(8000, dtype=precision)(x)
    model = keras.Model(tokens_in, logits)
    model.compile(keras.optimizers.AdamW(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    data = rng.integers(1, 8000, (steps, batch, length)).astype("int32")

    def train():
        for ids in data:
            model.train_on_batch(ids, ids)
        return steps * batch * length

    return train


def measure(make, steps: int, rounds: int) -> dict[str, float]:
    """Median tokens/s per precision, the precisions alternated each round.

    Each model first runs its batches once untimed: that traces the train
    step for every batch shape (the tagger's batches vary in length).
    """
    trainers = {precision: make(precision, steps) for precision in PRECISIONS}
    for trainer in trainers.values():
        trainer()
    speeds = {precision: [] for precision in PRECISIONS}
    for _ in range(rounds):
        for precision in PRECISIONS:
            start = time.perf_counter()
            tokens = trainers[precision]()
            speeds[precision].append(tokens / (time.perf_counter() - start))
    return {precision: statistics.median(values) for precision, values in speeds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.normpath(os.path.join(REPO, "..", "shared",
                                                                       "data")),
                        help="the folder with conll2003/, sst2/, sasrec/ and multi30k/ "
                             "(default: ../shared/data)")
    parser.add_argument("--workloads", default="tagger,sst2,recommender,translator,blocks")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console.quiet()
    from zoo.training import cpu_flags
    from zoo.training import cpu_name
    from zoo.training import dtype_policy

    flags = cpu_flags()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; avx512_bf16: "
          f"{'avx512_bf16' in flags}, amx_bf16: {'amx_bf16' in flags}; "
          f"--precision auto picks {dtype_policy('auto')}")
    print(f"{args.steps} steps per precision and round, {args.rounds} rounds, medians")
    print("| workload | float32 tokens/s | mixed_bfloat16 tokens/s | bf16 ÷ float32 |")
    print("|---|---|---|---|")
    workloads = [name.strip() for name in args.workloads.split(",")]
    cases = []
    recipes = (
        ("tagger", "sequence tagger (recipe model, CRF)", tagger_workload, "conll2003"),
        ("sst2", "sst2 classifier (preset architecture)", sst2_workload, "sst2"),
        ("recommender", "video-games retriever (preset architecture)", recommender_workload,
         os.path.join("sasrec", "Video.txt")),
        ("translator", "multi30k-en-de translator (preset architecture)", translator_workload,
         "multi30k"),
    )
    for workload, name, function, relative in recipes:
        if workload not in workloads:
            continue
        path = os.path.join(args.data, relative)
        if not os.path.exists(path):
            parser.error(f"the {workload} workload reads {path}, which does not exist")
        cases.append((name, lambda precision, steps, function=function, path=path:
                      function(path, precision, steps)))
    if "blocks" in workloads:
        for kind in ("ours", "keras"):
            cases.append((f"4 blocks × 256, {kind}",
                          lambda precision, steps, kind=kind: blocks_workload(
                              kind, precision, steps)))
    for name, make in cases:
        speeds = measure(make, args.steps, args.rounds)
        print(f"| {name} | {speeds['float32']:,.0f} | {speeds['mixed_bfloat16']:,.0f} | "
              f"{speeds['mixed_bfloat16'] / speeds['float32']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
