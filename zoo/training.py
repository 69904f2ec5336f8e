"""What every recipe needs: optimizer, distribution, seeds, epoch records, curves.

- `optimizer`: AdamW with linear warmup then cosine decay, clipping, and no
  weight decay on embeddings, biases and normalisation scales;
- `distribution_strategy`: one device, mirrored over the local devices, or
  mirrored over several machines (`zoo.distribute`);
- `TrainingRecord`: a callback that keeps every epoch's metrics and time in
  a JSON file, early-stops on a validation metric and keeps the best
  epoch's weights, across an interruption: run the recipe again (with
  `keras.callbacks.BackupAndRestore` before it in the callbacks) and the
  record goes on from where the backup resumes;
- `WallClock`: a run's wall time, summed over interrupted runs;
- `plot_training_curves`, and the atomic `write_json` / `save_figure` of
  `zoo.files`;
- `average_weights`: the element-wise mean of several models' weights (a
  uniform "model soup");
- `reseed`: new random streams for a built model's dropout, from a seed;
- `load_weights`: loads a file a compiled model saved, optimizer state included.

Masked-token pre-training, for any text backbone, is a preprocessor:
`zoo.text_preprocessing.MaskedTokenPreprocessor`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from kerasattn._files import write_atomically
from zoo.files import read_json
from zoo.files import save_figure
from zoo.files import write_json

STRATEGIES = ("default", "mirrored", "multi-worker")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# Variables named so take no weight decay: embeddings, biases, normalisation scales and offsets.
NO_WEIGHT_DECAY = ("embeddings", "bias", "gamma", "beta")


def optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int,
    weight_decay: float,
    clipnorm: float = 1.0,
    final_fraction: float = 0.05,
    precision: str = "float32",
) -> keras.optimizers.Optimizer:
    """AdamW with linear warmup then cosine decay.

    Args:
        learning_rate: the peak learning rate, reached after `warmup_steps`.
        total_steps: steps of the whole training (warmup included).
        warmup_steps: steps of linear warmup from 0; 0 for none.
        weight_decay: AdamW's decoupled weight decay, not applied to
            variables named as in `NO_WEIGHT_DECAY`.
        clipnorm: gradient clipping by norm.
        final_fraction: the learning rate at the end, as a fraction of the peak.
        precision: the model's dtype policy; with `"mixed_float16"` the AdamW
            is wrapped in a `LossScaleOptimizer` (a task whose loss runs in
            float32 would not get one from Keras, and float16 gradients of rare
            embeddings would underflow).

    Returns:
        The optimizer.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=final_fraction,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    adamw = keras.optimizers.AdamW(schedule, weight_decay=weight_decay, clipnorm=clipnorm)
    adamw.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(adamw)
    return adamw


def distribution_strategy(name: str):
    """A `tf.distribute` strategy by name.

    Args:
        name: `"default"` (one device), `"mirrored"` (the local GPUs, or
            without GPUs the logical CPU devices) or `"multi-worker"` (the
            machines `TF_CONFIG` lists; see `zoo.distribute`, whose strategy
            must be created before any other TensorFlow operation: the
            command line does so first).

    Returns:
        The strategy.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"expected a strategy in {STRATEGIES}, received: {name!r}")
    if name == "multi-worker":
        from zoo import distribute

        return distribute.multi_worker_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def check_option_ranges(args, positive: Sequence[str] = (), non_negative: Sequence[str] = (),
                        rates: Sequence[str] = ()) -> None:
    """Raises a one-line `ValueError` naming the flag of the first option out of its range.

    Args:
        args: the parsed command line.
        positive: options that must be > 0 (`None`, an option left unset, passes).
        non_negative: options that must be >= 0.
        rates: options that must be in [0, 1).
    """
    checks = ((positive, lambda value: value > 0, "> 0"),
              (non_negative, lambda value: value >= 0, ">= 0"),
              (rates, lambda value: 0 <= value < 1, "in [0, 1)"))
    for names, valid, expected in checks:
        for name in names:
            value = getattr(args, name)
            if value is not None and not valid(value):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"expected {flag} {expected}, received: {value}")


def check_recorded_options(path: str | os.PathLike, options: dict) -> None:
    """Records a run's options in `path`, or checks that a resumed run has the same.

    Raises:
        ValueError: naming the file and the options that differ (the output
            folder holds a run made with other options).
    """
    path = Path(path)
    if path.is_file():
        recorded = read_json(path)
        if recorded != options:
            differing = sorted(key for key in set(options) | set(recorded)
                               if options.get(key) != recorded.get(key))
            raise ValueError(
                f"{path}: expected a run with the options given, received: a run that differs "
                f"in {', '.join(differing)}; use another --out folder"
            )
    else:
        write_json(path, options)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (`/proc/cpuinfo`; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo`), for benchmark reports."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def dtype_policy(precision: str) -> str:
    """The dtype policy a recipe trains with, from `--precision`.

    `"auto"` picks `mixed_float16` on a GPU and `float32` on every CPU.
    bfloat16 is an explicit choice (`--precision mixed_bfloat16`): its quality
    held on the large data sets (SST-2, CoNLL-2003, Video Games: the cards'
    precision rows) but not on a small one (social-media NER, 3,394 tweets:
    test entity F1 11.4 against 14.6 in float32, one seed each), and without
    AMX it trains slower than float32 in our measurements.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"expected --precision in {PRECISIONS}, received: {precision!r}")
    if precision != "auto":
        return precision
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def served_model(model):
    """The model a recipe scores, saves and ships: `model`'s float32 computation.

    A model trained under `mixed_bfloat16` or `mixed_float16` is copied into
    float32 layers with its weights (`kerasattn.export.float32_copy`); a
    float32 model is returned as it is. Scores computed in bfloat16 depend on
    the batch they are computed in (a scorer's validation AUC was 0.4367 at
    batch 16 and 0.438 at batch 256), and the exported artifacts compute in
    float32, so a card's number is the float32 model's whatever precision
    trained it, and `zoo evaluate` (which scores the same way) reproduces it.
    """
    from kerasattn.export import float32_copy

    return float32_copy(model)


class WallClock:
    """A job's wall time, summed over runs that an interruption split.

    Each `save()` writes the time of the earlier runs plus this one's so far
    to `path`; a new `WallClock` on the same file starts from that.

    Args:
        path: the JSON file keeping the time.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.earlier_seconds = 0.0
        self.runs = 1
        if self.path.is_file():
            record = read_json(self.path, ("seconds", "runs"))
            self.earlier_seconds = float(record["seconds"])
            self.runs = int(record["runs"]) + 1
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Wall seconds of every run so far, this one included."""
        return round(self.earlier_seconds + time.perf_counter() - self._start, 1)

    def save(self) -> None:
        write_json(self.path, {"seconds": self.seconds, "runs": self.runs})


class TrainingRecord(keras.callbacks.Callback):
    """Every epoch's metrics and time, early stopping and the best weights, resumable.

    At each epoch's end it appends the epoch's logs and seconds to
    `history_path`; with a `monitor`, it also saves the model's weights to
    `best_weights_path` when the metric improved on every earlier epoch (of
    this run and of interrupted ones), stops training after `patience`
    epochs without improvement, and at the end of training loads the best
    weights back. When `fit` starts at a later epoch (resumed by a
    `keras.callbacks.BackupAndRestore` placed before it in the callbacks),
    the record keeps the epochs before that one, so the history, the best
    epoch and the curves span the whole training.

    Args:
        history_path: the JSON file of the epochs.
        best_weights_path: the best epoch's weights (a `.weights.h5` file);
            required with `monitor`.
        monitor: the metric to select on, such as `"val_accuracy"`; `None`
            records only.
        mode: `"max"` or `"min"`.
        patience: epochs without improvement before stopping; `None` never stops.
        wall_clock: optional `WallClock` saved at each epoch's end.
    """

    def __init__(self, history_path: str | os.PathLike,
                 best_weights_path: Optional[str | os.PathLike] = None,
                 monitor: Optional[str] = None, mode: str = "max",
                 patience: Optional[int] = None, wall_clock: Optional[WallClock] = None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"Expected `mode` 'max' or 'min', received: mode={mode!r}")
        if monitor is not None and best_weights_path is None:
            raise ValueError("Expected `best_weights_path` with `monitor`, received: None")
        self.history_path = Path(history_path)
        self.best_weights_path = None if best_weights_path is None else Path(best_weights_path)
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.wall_clock = wall_clock
        self.epochs: list[dict] = []
        self.finished = False
        if self.history_path.is_file():
            record = read_json(self.history_path, ("epochs",))
            self.epochs = record["epochs"]
            self.finished = bool(record.get("finished", False))
        self._start = 0.0

    @property
    def history(self) -> dict[str, list[float]]:
        """The metrics by name, one value per epoch (as `History.history`)."""
        if not self.epochs:
            return {}
        names = [key for key in self.epochs[0] if key not in ("epoch", "seconds")]
        return {name: [epoch.get(name) for epoch in self.epochs] for name in names}

    @property
    def epoch_seconds(self) -> list[float]:
        return [epoch["seconds"] for epoch in self.epochs]

    @property
    def best_epoch(self) -> Optional[int]:
        """The best epoch, counting from 1 (`None` before the first, or without `monitor`)."""
        values = [epoch.get(self.monitor) for epoch in self.epochs] if self.monitor else []
        if not values or any(value is None for value in values):
            return None
        best = np.argmax(values) if self.mode == "max" else np.argmin(values)
        return int(best) + 1

    def _write(self) -> None:
        write_json(self.history_path, {"monitor": self.monitor, "mode": self.mode,
                                       "finished": self.finished, "epochs": self.epochs})

    def on_epoch_begin(self, epoch, logs=None):
        # A resumed fit starts at a later epoch: keep the record up to it.
        del self.epochs[epoch:]
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        record.update({key: round(float(value), 4) for key, value in (logs or {}).items()
                       if key != "learning_rate"})
        record["seconds"] = round(time.perf_counter() - self._start, 1)
        if self.monitor is not None and self.monitor not in record:
            raise ValueError(
                f"Expected the metric {self.monitor!r} in the epoch's logs, received: "
                f"{sorted(logs or {})}"
            )
        self.epochs.append(record)
        if self.monitor is not None and self.best_epoch == epoch + 1:
            write_atomically(self.best_weights_path, self.model.save_weights,
                             suffix=".weights.h5")
        self._write()
        if self.wall_clock is not None:
            self.wall_clock.save()
        if (self.monitor is not None and self.patience is not None
                and epoch + 1 - self.best_epoch >= self.patience):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights_path is not None and self.best_weights_path.is_file():
            self.model.load_weights(self.best_weights_path)
        self.finished = True
        self._write()


def plot_training_curves(history: dict, path: str | os.PathLike,
                         metrics: Sequence[str] = ("loss", "accuracy"),
                         validation_name: str = "validation",
                         extra: Optional[dict[str, str]] = None) -> None:
    """Per-epoch training and validation curves, one panel per metric, as a PNG.

    Args:
        history: the metrics by name (`"loss"`, `"val_loss"`, ...), one
            value per epoch, such as `TrainingRecord.history`.
        path: the PNG file, written atomically.
        metrics: the metrics to plot; `"val_" + name` is the validation curve
            (a metric measured on validation alone, such as a tagger's F1,
            has no training curve).
        validation_name: the validation curve's label.
        extra: further curves by history key and label, drawn on the panel
            of the metric their key ends with (such as `{"dev_accuracy": "dev"}`).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = np.arange(1, len(history[metrics[0]]) + 1)
    figure, axes_list = pyplot.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4),
                                        squeeze=False)
    for axes, metric in zip(axes_list[0], metrics):
        if metric in history:
            axes.plot(epochs, history[metric], "o-", label="train")
        if f"val_{metric}" in history:
            axes.plot(epochs, history[f"val_{metric}"], "s-", label=validation_name)
        for key, label in (extra or {}).items():
            if key.endswith(metric) and key in history:
                axes.plot(epochs, history[key], "^-", label=label)
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.set_xticks(epochs)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    save_figure(figure, path)
    pyplot.close(figure)


def average_weights(weight_lists: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several models' weights (a uniform "model soup").

    Args:
        weight_lists: each model's `get_weights()`, models of one architecture.

    Returns:
        The averaged weights, in the same order and dtypes.
    """
    if not weight_lists:
        raise ValueError("Expected at least one model's weights, received: none")
    return [
        np.mean(np.stack(values), axis=0).astype(values[0].dtype)
        for values in zip(*weight_lists)
    ]


def load_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """`model.load_weights(path)` for a file a compiled model saved.

    Such a file also holds the optimizer's state; building the optimizer
    first lets it load without Keras's warning that it has no variables.
    """
    if model.optimizer is not None and not model.optimizer.built:
        # Under the model's strategy: a distributed model's optimizer
        # variables must be made in its scope.
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
    model.load_weights(path)


def reseed(model: keras.Model, seed: int) -> None:
    """Gives every random layer of `model` (dropout, ...) a new stream from `seed`.

    Keras draws a layer's seed when the layer is built; after
    `keras.utils.set_random_seed(seed)`, this makes the layers' draws in
    training depend on `seed` too, not only on the seed the model was built
    under (the same initial weights, different training noise).
    """
    rng = np.random.default_rng(seed)
    for variable in model.non_trainable_variables:
        if variable.path.endswith("seed_generator_state"):
            value = np.zeros(variable.shape, dtype=variable.dtype)
            value[0] = rng.integers(1, 2**31 - 1)
            variable.assign(value)
