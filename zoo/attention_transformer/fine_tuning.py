"""Fine-tuning the classifier: once per seed from one initial model, and the
model shipped from those runs (the best on validation, or their average)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import keras
from zoo import distribute
from zoo import training
from zoo.attention_transformer import data as recipe_data
from zoo.attention_transformer.model import AttentionTransformerClassifier

AVERAGES = ("none", "weights")
RUNS_DIR = "fine_tuning"


class FineTuningOptions(NamedTuple):
    """The options of one fine-tuning run (the recipe's flags)."""

    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    label_smoothing: float
    full_weight_length: int
    patience: int
    verbose: int
    precision: str = "float32"
    class_weight: str = "none"


class SeedRun(NamedTuple):
    """One seed's fine-tuning: its record and its restored-best weights."""

    seed: int
    record: training.TrainingRecord
    weights_path: Path


def build(
    build_classifier: Callable[[], AttentionTransformerClassifier],
    options: FineTuningOptions,
    steps: int,
    strategy,
    init_seed: int,
) -> AttentionTransformerClassifier:
    """The classifier, built and compiled under `init_seed`: every seed's run
    starts from these same initial weights."""
    keras.utils.set_random_seed(init_seed)
    with strategy.scope():
        model = build_classifier()
        model.compile(
            optimizer=training.optimizer(
                options.learning_rate, steps * options.epochs, options.warmup_steps,
                options.weight_decay, precision=options.precision,
            ),
            label_smoothing=options.label_smoothing,
        )
    return model


def fine_tune(
    seed: int,
    folder: Path,
    build_classifier: Callable[[], AttentionTransformerClassifier],
    preprocessor,
    train: "recipe_data.kdata.TextClassificationData",
    validation: "recipe_data.kdata.TextClassificationData",
    options: FineTuningOptions,
    strategy,
    init_seed: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    wall_clock: Optional[training.WallClock] = None,
) -> tuple[AttentionTransformerClassifier, SeedRun]:
    """Fine-tunes the classifier with one seed, early-stopping on validation accuracy.

    The model is built under `init_seed`, then `seed` sets the batches'
    order and the dropout's draws. The run keeps its record and its best
    weights in `folder` (resumable: run it again after an interruption and
    it goes on; a finished run is not trained again).

    Args:
        seed: this run's seed.
        folder: the run's folder (`history.json`, `best.weights.h5`, `backup/`).
        build_classifier: makes the untrained classifier (backbone from the
            pre-trained weights, if any) with `preprocessor`.
        preprocessor: the classifier's `TextClassifierPreprocessor`.
        train, validation: the rows trained on and selected on.
        options: the fine-tuning options.
        strategy: the `tf.distribute` strategy.
        init_seed: the seed the classifier is built under.
        callbacks: further callbacks (TensorBoard, attention maps).
        wall_clock: saved at each epoch's end.

    Returns:
        `(model, run)`: the classifier with the best epoch's weights, and the run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    train_batches, steps = recipe_data.training_batches(
        train.texts, train.labels, preprocessor, options.batch_size, seed,
        options.full_weight_length, options.class_weight,
    )
    model = build(build_classifier, options, steps, strategy, init_seed)
    record = training.TrainingRecord(
        folder / "history.json", folder / "best.weights.h5", monitor="val_accuracy",
        mode="max", patience=options.patience, wall_clock=wall_clock,
    )
    run = SeedRun(seed, record, record.best_weights_path)
    if record.finished:
        training.load_weights(model, run.weights_path)
        return model, run
    keras.utils.set_random_seed(seed)
    training.reseed(model, seed)
    model.fit(
        train_batches,
        validation_data=recipe_data.evaluation_batches(validation, preprocessor),
        epochs=options.epochs,
        steps_per_epoch=steps,
        callbacks=[distribute.BackupAndRestore(str(folder / "backup")), record,
                   *callbacks],
        verbose=options.verbose,
    )
    return model, run


def average(model: AttentionTransformerClassifier, runs: Sequence[SeedRun]) -> None:
    """Sets `model`'s weights to the element-wise mean of the runs' best weights.

    Every run started from the same initial weights (see `build`), so their
    weights stay close enough to average (a uniform "model soup").
    """
    weights = []
    for run in runs:
        training.load_weights(model, run.weights_path)
        weights.append(model.get_weights())
    model.set_weights(training.average_weights(weights))
