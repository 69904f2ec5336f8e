"""The training recipe and the predict command of the Attention-Based Transformer.

`python -m zoo train attention-transformer --data DIR --out OUT` reads
`DIR/train.tsv` and `DIR/dev.tsv` (`sentence<TAB>label`, as GLUE's SST-2),
learns a WordPiece vocabulary on the training texts, optionally pre-trains
the backbone on them (masked tokens), trains with `model.fit` and writes to
`OUT`:

- `model.keras`: the classifier with its preprocessor (one file);
- `preset/`: the same as a preset folder (`config.json`,
  `model.weights.h5`, `vocabulary.txt`), loadable with `from_preset(path)`;
- `metrics.json`: the options, the dev accuracy of the restored best epoch,
  per-epoch history and times, the wall time;
- `training_curves.png` and `attention_heatmap.png` (matplotlib, Agg);
- `logs/`: TensorBoard logs (with attention maps of a few dev sentences);
- with `--pretrain-epochs N`: `pretrained_backbone.weights.h5` and
  `pretraining.json`, the backbone after N epochs of masked-token
  pre-training on the training texts (the start of fine-tuning) and its
  record;
- `backup/` while training: `BackupAndRestore`'s state, so that running the
  same command again after an interruption resumes; removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from kerasattn._files import write_atomically

MODEL_NAME = "attention-transformer"
# Token-length buckets: a batch is padded only to its own longest text.
_BUCKET_BOUNDARIES = (4, 8, 12, 16, 20, 26, 34, 48)
_HEATMAP_SENTENCE = 0  # the dev sentence shown in attention_heatmap.png
MASK_TOKEN = "[MASK]"
PRETRAINED_WEIGHTS = "pretrained_backbone.weights.h5"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the recipe's options to `parser` (the `train` subcommand).

    The defaults are the options the shipped `sst2` preset was trained with.
    """

    def add(flag, help, **kwargs):
        if "default" in kwargs and kwargs["default"] is not None:
            help += " (default: %(default)s)"
        parser.add_argument(flag, help=help, **kwargs)

    add("--data", "folder with train.tsv and dev.tsv (sentence<TAB>label)", required=True)
    add("--out", "output folder; running again with the same folder resumes", required=True)
    add("--label-names", "comma-separated class names in label order "
        "(default: the labels as written)", default=None)
    add("--vocabulary", "vocabulary file to use instead of learning one from train.tsv "
        "(default: learn one, or reuse OUT/vocabulary.txt)", default=None)
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
    add("--pooling-units", "pooling tanh projection width (default: none)", type=int, default=None)
    add("--position-encoding", "position encoding", choices=("learned", "sinusoidal"),
        default="learned")
    add("--attention-window", "local self-attention: tokens see neighbours closer than this; "
        "0 for global attention", type=int, default=3)
    add("--epochs", "maximum epochs", type=int, default=6)
    add("--batch-size", "batch size", type=int, default=64)
    add("--learning-rate", "peak learning rate", type=float, default=5e-4)
    add("--warmup-steps", "linear warmup steps", type=int, default=300)
    add("--weight-decay", "AdamW weight decay", type=float, default=0.05)
    add("--label-smoothing", "label smoothing", type=float, default=0.1)
    add("--full-weight-length", "training texts shorter than this many tokens weigh "
        "length / this in the loss (short phrases count less); 0 weighs all alike",
        type=int, default=0)
    add("--pretrain-epochs", "epochs of self-supervised masked-token pre-training of the "
        "backbone on the training texts before fine-tuning; 0 for none", type=int, default=32)
    add("--pretrain-learning-rate", "peak learning rate of the pre-training", type=float,
        default=1e-3)
    add("--mask-rate", "pre-training: share of tokens hidden (80%% [MASK], 10%% a random "
        "token, 10%% unchanged) and predicted", type=float, default=0.15)
    add("--patience", "early stopping: epochs without a better dev accuracy", type=int, default=3)
    add("--seed", "random seed", type=int, default=2)
    add("--strategy", "tf.distribute strategy: one device, or mirrored over the local devices",
        choices=("default", "mirrored"), default="default")
    add("--verbose", "Keras fit verbosity", type=int, choices=(0, 1, 2), default=1)


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the predict command's options to `parser`."""
    parser.add_argument("texts", nargs="+", help="texts to classify")
    parser.add_argument("--preset", default="sst2",
                        help="a shipped preset name or a preset folder (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5,
                        help="how many most-attended tokens to show (default: %(default)s)")


def _check_options(args: argparse.Namespace) -> None:
    positive = ("vocabulary_size", "sequence_length", "layers", "hidden_dim", "heads",
                "intermediate_dim", "epochs", "batch_size", "patience")
    for name in positive:
        if getattr(args, name) <= 0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"expected {flag} > 0, received: {getattr(args, name)}")
    if args.full_weight_length < 0:
        raise ValueError(
            f"expected --full-weight-length >= 0, received: {args.full_weight_length}"
        )
    if args.pretrain_epochs < 0:
        raise ValueError(f"expected --pretrain-epochs >= 0, received: {args.pretrain_epochs}")
    if not 0 < args.mask_rate < 1 or args.pretrain_learning_rate <= 0:
        raise ValueError(
            "expected --mask-rate in (0, 1) and --pretrain-learning-rate > 0, received: "
            f"{args.mask_rate} and {args.pretrain_learning_rate}"
        )
    if args.attention_window < 0:
        raise ValueError(f"expected --attention-window >= 0, received: {args.attention_window}")
    if args.pooling_units is not None and args.pooling_units <= 0:
        raise ValueError(f"expected --pooling-units > 0, received: {args.pooling_units}")
    rates = ("dropout", "attention_dropout", "token_dropout", "head_dropout", "label_smoothing")
    for name in rates:
        if not 0 <= getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"expected {flag} in [0, 1), received: {getattr(args, name)}")
    if args.learning_rate <= 0 or args.weight_decay < 0 or args.warmup_steps < 0:
        raise ValueError(
            "expected --learning-rate > 0, --weight-decay >= 0 and --warmup-steps >= 0, received: "
            f"{args.learning_rate}, {args.weight_decay} and {args.warmup_steps}"
        )
    data = Path(args.data)
    if not data.is_dir():
        raise ValueError(
            f"{data}: expected a data folder with train.tsv and dev.tsv, received: no such folder"
        )
    for name in ("train.tsv", "dev.tsv"):
        if not (data / name).is_file():
            raise ValueError(f"{data / name}: expected a file, received: no such file")


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def _trim(features):
    """Cuts a batch's padding down to its longest text (at least one column).

    The padding mask becomes int32 (1 = token): under a distribution
    strategy Keras builds the model from the mean over replicas of the first
    batch, which TensorFlow cannot take of a bool tensor. The model takes
    either.
    """
    import tensorflow as tf

    mask = tf.cast(features["padding_mask"], tf.int32)
    length = tf.maximum(tf.reduce_max(tf.reduce_sum(mask, axis=1)), 1)
    return {"token_ids": features["token_ids"][:, :length], "padding_mask": mask[:, :length]}


def _datasets(train, dev, preprocessor, batch_size: int, seed: int, full_weight_length: int):
    """Length-bucketed, shuffled training batches and in-order dev batches.

    Returns:
        `(train_dataset, dev_dataset, steps_per_epoch)`: training batches
        of `(features, labels, sample_weights)` (the weights from
        `full_weight_length`), repeating, `steps_per_epoch` batches being
        one pass; dev batches of `(features, labels)`.
    """
    import tensorflow as tf

    lengths = np.minimum(
        preprocessor.tokenize(train.texts).row_lengths().numpy(), preprocessor.sequence_length
    ).astype(np.int32)
    boundaries = [b for b in _BUCKET_BOUNDARIES if b < preprocessor.sequence_length]
    # bucket_by_sequence_length flushes each bucket's remainder, so this is exact.
    buckets = np.searchsorted(boundaries, lengths, side="left")
    steps = int(sum(math.ceil(n / batch_size) for n in np.bincount(buckets) if n))

    def weigh(lengths):
        if not full_weight_length:
            return tf.ones_like(lengths, tf.float32)
        return tf.minimum(tf.cast(lengths, tf.float32) / full_weight_length, 1.0)

    train_dataset = (
        tf.data.Dataset.from_tensor_slices((tf.constant(train.texts), train.labels, lengths))
        .shuffle(len(train.texts), seed=seed, reshuffle_each_iteration=True)
        .bucket_by_sequence_length(
            lambda text, label, length: length,
            bucket_boundaries=[b + 1 for b in boundaries],
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        )
        .map(
            lambda texts, labels, lengths: (_trim(preprocessor(texts)), labels, weigh(lengths)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    dev_dataset = (
        dev.to_dataset(batch_size=256, shuffle=False)
        .map(lambda texts, labels: (_trim(preprocessor(texts)), labels))
    )
    return train_dataset, dev_dataset, steps


def attention_probe(preprocessor, texts):
    """`AttentionMapCallback`'s probe for `texts`: the trimmed features and,
    per text, its real tokens (to label the heatmaps with)."""
    features = _trim(preprocessor(list(texts)))
    tokens = [
        [t.decode() for t, real in zip(row, mask) if real]
        for row, mask in zip(
            preprocessor.id_to_token(features["token_ids"]).numpy(),
            features["padding_mask"].numpy(),
        )
    ]
    return features, tokens


class _EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time in seconds."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self._start, 1))


def _write_json(path: Path, value) -> None:
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=2)
            file.write("\n")

    write_atomically(path, write)


def _save_figure(figure, path: Path) -> None:
    temporary = path.with_name(f".{path.stem}-{os.getpid()}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    os.replace(temporary, path)


def plot_training_curves(history: dict, path: Path) -> None:
    """Loss and accuracy per epoch, training and dev, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(9, 3.4))
    for axes, key, title in ((left, "loss", "loss"), (right, "accuracy", "accuracy")):
        axes.plot(epochs, history[key], "o-", label="train")
        axes.plot(epochs, history[f"val_{key}"], "s-", label="dev")
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.set_xticks(epochs)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)
    pyplot.close(figure)


def plot_attention(model, text: str, path: Path) -> None:
    """The pooling weights (and cross-layer weights) over one text's tokens, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    features = model.preprocessor([text])
    length = int(np.sum(features["padding_mask"].numpy()))
    features = {key: value[:, :length] for key, value in features.items()}
    outputs = model.backbone(features, training=False)
    probabilities = np.asarray(model(features, training=False)[0])
    probabilities = np.exp(probabilities - probabilities.max())
    probabilities /= probabilities.sum()
    tokens = [t.decode() for t in model.preprocessor.id_to_token(features["token_ids"])[0].numpy()]
    pooling = np.asarray(outputs["pooling_weights"])[0]
    panels = [("pooling", pooling[None], ["pooling"])]
    if "cross_layer_weights" in outputs:
        weights = np.asarray(outputs["cross_layer_weights"])[0].T  # (L, T)
        panels.append(("cross-layer attention: each token's weights over the blocks' outputs",
                       weights, [f"block {i + 1}" for i in range(weights.shape[0])]))
    figure, axes_list = pyplot.subplots(
        len(panels), 1, figsize=(max(6.0, 0.6 * length), 1.6 + 1.1 * len(panels)),
        height_ratios=[max(1, p[1].shape[0]) for p in panels], squeeze=False,
    )
    best = int(np.argmax(probabilities))
    label = model.label_names[best] if model.label_names else str(best)
    for axes, (title, values, rows) in zip(axes_list[:, 0], panels):
        image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=0)
        axes.set_yticks(range(len(rows)), rows)
        axes.set_xticks(range(length), tokens, rotation=45, ha="right")
        axes.set_title(title, fontsize=9)
        figure.colorbar(image, ax=axes, fraction=0.025, pad=0.01)
    figure.suptitle(f"{text!r} → {label} ({probabilities[best]:.2f})", fontsize=10)
    figure.tight_layout()
    _save_figure(figure, path)
    pyplot.close(figure)


def _optimizer(learning_rate: float, total_steps: int, warmup_steps: int, weight_decay: float):
    """AdamW with linear warmup then cosine decay, clipped, no decay on
    embeddings, biases and normalisation scales."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=0.05,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay, clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["embeddings", "bias", "gamma", "beta"])
    return optimizer


def mask_tokens(features: dict, mask_id: int, vocabulary_size: int, rate: float):
    """BERT's masking of a batch, for masked-token pre-training.

    Each real token is chosen with probability `rate`; a chosen token
    becomes `mask_id` (80 %), a random id in `[1, vocabulary_size)` (10 %)
    or stays itself (10 %). Padding is never chosen.

    Returns:
        `(features, targets, weights)`: the features with the masked
        `token_ids`, the original ids, and float32 weights that are 1 at the
        chosen positions and 0 elsewhere (the loss counts only those).
    """
    import tensorflow as tf

    ids = features["token_ids"]
    shape = tf.shape(ids)
    chosen = (tf.random.uniform(shape) < rate) & tf.cast(features["padding_mask"], tf.bool)
    action = tf.random.uniform(shape)
    masked = tf.where(chosen & (action < 0.8), tf.cast(mask_id, ids.dtype), ids)
    random_ids = tf.random.uniform(shape, 1, vocabulary_size, dtype=ids.dtype)
    masked = tf.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return {**features, "token_ids": masked}, ids, tf.cast(chosen, tf.float32)


def pretrain(args, architecture: dict, vocabulary, train_dataset, steps: int, strategy) -> dict:
    """Masked-token pre-training of a backbone on the training texts.

    Writes the backbone's weights to `OUT/pretrained_backbone.weights.h5`
    and a record to `OUT/pretraining.json`; when both exist (a resumed run)
    they are reused. An interrupted pre-training resumes from its own
    `BackupAndRestore` folder.

    Returns:
        The record: options, masked-token loss and accuracy per epoch, epoch
        seconds.
    """
    from zoo.attention_transformer.model import AttentionTransformerBackbone
    from zoo.attention_transformer.model import AttentionTransformerMaskedLM

    out = Path(args.out)
    record_path = out / "pretraining.json"
    options = {
        "epochs": args.pretrain_epochs,
        "learning_rate": args.pretrain_learning_rate,
        "mask_rate": args.mask_rate,
    }
    if (out / PRETRAINED_WEIGHTS).is_file() and record_path.is_file():
        with open(record_path, encoding="utf-8") as file:
            record = json.load(file)
        done = {key: record.get(key) for key in options}
        if done != options:
            raise ValueError(
                f"{record_path}: expected a pre-training with the options given ({options}), "
                f"received: one with {done}; use another --out folder"
            )
        return record
    if MASK_TOKEN not in vocabulary:
        raise ValueError(
            f"expected a {MASK_TOKEN} token in the vocabulary for --pretrain-epochs, "
            f"received: a vocabulary of {len(vocabulary)} tokens without it"
        )
    mask_id = list(vocabulary).index(MASK_TOKEN)
    with strategy.scope():
        # Lighter dropout than fine-tuning: the masking is the noise here.
        backbone = AttentionTransformerBackbone(
            dropout=0.1, attention_dropout=0.1, token_dropout=0.0, **architecture
        )
        # The pooling is not used by masked-token prediction.
        backbone.get_layer("attention_pooling").trainable = False
        masked_lm = AttentionTransformerMaskedLM(backbone)
        masked_lm.compile(
            optimizer=_optimizer(
                args.pretrain_learning_rate, steps * args.pretrain_epochs, args.warmup_steps, 0.01
            )
        )
    masked = train_dataset.map(
        lambda features, labels, weights: mask_tokens(
            features, mask_id, len(vocabulary), args.mask_rate
        )
    )
    timer = _EpochTimer()
    history = masked_lm.fit(
        masked,
        epochs=args.pretrain_epochs,
        steps_per_epoch=steps,
        callbacks=[keras.callbacks.BackupAndRestore(str(out / "pretraining_backup")), timer],
        verbose=args.verbose,
    ).history
    write_atomically(out / PRETRAINED_WEIGHTS, backbone.save_weights, suffix=".weights.h5")
    record = {
        **options,
        "masked_token_loss": [round(float(v), 4) for v in history["loss"]],
        "masked_token_accuracy": [round(float(v), 4) for v in history["accuracy"]],
        "epoch_seconds": timer.seconds,
    }
    _write_json(record_path, record)
    return record


def train(args: argparse.Namespace) -> dict:
    """Runs the recipe with the options of `add_train_arguments`.

    Returns:
        The metrics written to `OUT/metrics.json`.

    Raises:
        ValueError: for bad options or data, with a one-line message.
    """
    _check_options(args)
    start = time.perf_counter()
    import tensorflow as tf

    from kerasattn import data as kdata
    from kerasattn import text as ktext
    from kerasattn.callbacks import AttentionMapCallback
    from zoo.attention_transformer.model import AttentionTransformerBackbone
    from zoo.attention_transformer.model import AttentionTransformerClassifier

    folder = Path(args.data)
    train_data = kdata.read_text_classification(folder / "train.tsv")
    dev_data = kdata.read_text_classification(folder / "dev.tsv", labels=train_data.label_names)
    label_names = train_data.label_names
    if args.label_names:
        label_names = [name.strip() for name in args.label_names.split(",")]
        if len(label_names) != len(train_data.label_names):
            raise ValueError(
                f"expected {len(train_data.label_names)} --label-names (labels "
                f"{train_data.label_names} in train.tsv), received: {args.label_names!r}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    if args.vocabulary:
        vocabulary = ktext.load_vocabulary(args.vocabulary)
    elif (out / "vocabulary.txt").is_file():
        vocabulary = ktext.load_vocabulary(out / "vocabulary.txt")  # a resumed run
    else:
        vocabulary = ktext.learn_wordpiece_vocabulary(train_data.texts, args.vocabulary_size)
        ktext.save_vocabulary(vocabulary, out / "vocabulary.txt")
    preprocessor = ktext.TextPreprocessor(vocabulary, sequence_length=args.sequence_length)
    train_dataset, dev_dataset, steps = _datasets(
        train_data, dev_data, preprocessor, args.batch_size, args.seed, args.full_weight_length
    )

    architecture = dict(
        vocabulary_size=len(vocabulary),
        num_layers=args.layers,
        hidden_dim=args.hidden_dim,
        num_heads=args.heads,
        intermediate_dim=args.intermediate_dim,
        max_sequence_length=args.sequence_length,
        norm=args.norm,
        cross_layer_fusion=args.fusion,
        pooling_units=args.pooling_units,
        position_encoding=args.position_encoding,
        attention_window=args.attention_window or None,
    )
    strategy = _strategy(args.strategy)
    pretraining = None
    if args.pretrain_epochs:
        pretraining = pretrain(args, architecture, vocabulary, train_dataset, steps, strategy)
    with strategy.scope():
        backbone = AttentionTransformerBackbone(
            dropout=args.dropout,
            attention_dropout=args.attention_dropout,
            token_dropout=args.token_dropout,
            **architecture,
        )
        if pretraining:
            backbone.load_weights(out / PRETRAINED_WEIGHTS)
        model = AttentionTransformerClassifier(
            backbone,
            num_classes=len(label_names),
            preprocessor=preprocessor,
            dropout=args.head_dropout,
            label_names=label_names,
        )
        optimizer = _optimizer(
            args.learning_rate, steps * args.epochs, args.warmup_steps, args.weight_decay
        )
        model.compile(optimizer=optimizer, label_smoothing=args.label_smoothing)

    probe_features, probe_tokens = attention_probe(
        preprocessor, dev_data.texts[: min(3, len(dev_data.texts))]
    )
    timer = _EpochTimer()
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=args.patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(str(out / "logs")),
        AttentionMapCallback(
            probe_features, str(out / "logs"), every_n_epochs=1, max_examples=2,
            probe_tokens=probe_tokens,
        ),
        timer,
    ]
    history = model.fit(
        train_dataset,
        validation_data=dev_dataset,
        epochs=args.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # the dataset shuffles itself
        callbacks=callbacks,
        verbose=args.verbose,
    ).history
    dev_loss, dev_accuracy = model.evaluate(dev_dataset, verbose=0)

    write_atomically(out / "model.keras", model.save, suffix=".keras")
    model.save_preset(out / "preset")
    plot_training_curves(history, out / "training_curves.png")
    plot_attention(model, dev_data.texts[_HEATMAP_SENTENCE], out / "attention_heatmap.png")

    options = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "model", "verbose")
    }
    val = history.get("val_accuracy", [])
    metrics = {
        "model": MODEL_NAME,
        "options": options,
        "dev_accuracy": round(float(dev_accuracy), 4),
        "dev_loss": round(float(dev_loss), 4),
        "best_epoch": int(np.argmax(val)) + 1 if val else None,
        "epochs_run": len(history.get("loss", [])),
        "steps_per_epoch": steps,
        "epoch_seconds": timer.seconds,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "parameters": int(model.count_params()),
        "devices": strategy.num_replicas_in_sync,
        "pretraining": pretraining,
        "history": {key: [round(float(v), 4) for v in values] for key, values in history.items()
                    if key != "learning_rate"},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    _write_json(out / "metrics.json", metrics)
    return metrics


def describe(model, texts, top: int) -> list[dict]:
    """Classifies `texts` and finds the tokens the pooling attends to most.

    Returns:
        Per text: `{"text", "label", "probability", "top_tokens"}`, with
        `top_tokens` the `top` (token, weight) pairs, padding left out.
    """
    outputs = model.classify(list(texts))
    results = []
    for index, text in enumerate(texts):
        probabilities = outputs["probabilities"][index]
        best = int(np.argmax(probabilities))
        label = model.label_names[best] if model.label_names else str(best)
        tokens = [t.decode() for t in outputs["tokens"][index]]
        weights = outputs["pooling_weights"][index]
        order = [i for i in np.argsort(-weights, kind="stable") if tokens[i] != "[PAD]"][:top]
        results.append(
            {"text": text, "label": label, "probability": float(probabilities[best]),
             "top_tokens": [(tokens[i], round(float(weights[i]), 3)) for i in order]}
        )
    return results


def predict(args: argparse.Namespace) -> list[dict]:
    """Classifies `args.texts` with a preset and prints one block per text.

    Returns:
        `describe`'s result.
    """
    if args.top <= 0:
        raise ValueError(f"expected --top > 0, received: {args.top}")
    from zoo.attention_transformer.model import AttentionTransformerClassifier

    results = describe(AttentionTransformerClassifier.from_preset(args.preset), args.texts, args.top)
    for result in results:
        print(f"{result['text']}\n  {result['label']} {result['probability']:.3f}")
        print("  most attended: " + ", ".join(f"{t} {w:.2f}" for t, w in result["top_tokens"]))
    return results
