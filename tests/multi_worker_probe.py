"""One worker of a small multi-worker training, for `tests/test_multi_worker.py`.

    TF_CONFIG=... python tests/multi_worker_probe.py MODE OUT [--pause-after-step N]

MODE `keras` shows the upstream failures, each as a line `REDUCE ok` or
`REDUCE <error>` and `FIT ok` or `FIT <error>`: Keras's own reduction of a
step's scalar logs under `tf.distribute.MultiWorkerMirroredStrategy`
(keras#20585, the smallest reproduction), then a plain `keras.Model` and
`model.fit` under the strategy, as TensorFlow's multi-worker tutorial does.
MODE `zoo`: the same
model with `zoo.distribute.MultiWorkerTrainer`, the zoo's `BackupAndRestore`
and `TrainingRecord`, TensorBoard, and `worker_output(OUT)` for its files.

The worker prints `STEP <global step> <loss>` after each step, `RESUMED
<epoch> <weights checksum>` when training starts, and a last line `RESULT
<json>` with the logs of every step, `fit`'s history and the final weights.
With `--with-upstream`, MODE `zoo` first does what MODE `keras` does, on
its strategy (the tests' one start-up fewer). With `--pause-after-step N`
it prints `PAUSED` after step N and sleeps (so a test can kill it
mid-run). The test imports `build_model`, `dataset` and `StepLog` to train
the same model on one worker in its own process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import keras
import numpy as np

from zoo import distribute

FEATURES = 4
EXAMPLES = 40
GLOBAL_BATCH = 8
EPOCHS = 4  # 5 steps each: 20 steps
LEARNING_RATE = 0.05


class ProbeModel(distribute.MultiWorkerTrainer, keras.Model):
    """A functional model with the zoo's multi-worker trainer."""


def build_model(model_cls: type = ProbeModel) -> keras.Model:
    """A small regression model with seeded initial weights and no dropout, compiled."""
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(
        16, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(inputs)
    outputs = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed=2))(hidden)
    model = model_cls(inputs=inputs, outputs=outputs)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9), loss="mse",
                  metrics=["mae"])
    return model


def dataset():
    """Batches of `GLOBAL_BATCH` examples in one seeded order, the same in every epoch.

    (A resumed run starts its data afresh: with an order that changed with
    each epoch, its epochs would see other batches than an uninterrupted run's.)
    """
    import tensorflow as tf

    rng = np.random.default_rng(3)
    x = rng.normal(size=(EXAMPLES, FEATURES)).astype("float32")
    y = (np.sin(x).sum(axis=1, keepdims=True) + 0.1 * rng.normal(size=(EXAMPLES, 1))).astype(
        "float32")
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(EXAMPLES, seed=5, reshuffle_each_iteration=False)
            .batch(GLOBAL_BATCH, drop_remainder=True))


class StepLog(keras.callbacks.Callback):
    """Keeps (and prints) each step's logs, by global step."""

    def __init__(self, steps_per_epoch: int, echo: bool = False, pause_after_step: int = -1):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.echo = echo
        self.pause_after_step = pause_after_step
        self.steps: dict[int, dict] = {}
        self.checksums: list[float] = []  # after each epoch
        self._epoch = 0

    def checksum(self) -> float:
        return float(sum(np.sum(weight, dtype="float64") for weight in self.model.get_weights()))

    def on_train_begin(self, logs=None):
        if self.echo:
            epoch = int(self.model._initial_epoch or 0)
            print(f"RESUMED {epoch} {self.checksum():.10f}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        self.checksums.append(self.checksum())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + batch
        self.steps[step] = {key: float(value) for key, value in logs.items()}
        if self.echo:
            print(f"STEP {step} {self.steps[step]['loss']:.8f}", flush=True)
        if step == self.pause_after_step:
            print("PAUSED", flush=True)
            time.sleep(3600)


def _error_line(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


def upstream(strategy) -> None:
    """Keras's reduction of scalar logs, then a plain `keras.Model`'s `fit`, under `strategy`.

    Each prints its line (see MODE `keras`); the workers fail alike, before
    any collective operation runs, so they stay in step for what follows.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow.trainer import reduce_per_replica

    # What Keras's train function does with a step's logs, on every worker.
    logs = strategy.run(lambda: {"loss": tf.constant(1.0)})
    try:
        reduce_per_replica(logs, strategy, reduction="auto")
        print("REDUCE ok", flush=True)
    except Exception as error:  # noqa: BLE001 - the line reports it
        print("REDUCE " + _error_line(error), flush=True)
    with strategy.scope():
        model = build_model(keras.Model)
    try:
        model.fit(dataset(), epochs=EPOCHS, verbose=0, shuffle=False)
        print("FIT ok", flush=True)
    except Exception as error:  # noqa: BLE001
        print("FIT " + _error_line(error), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("keras", "zoo"))
    parser.add_argument("out")
    parser.add_argument("--pause-after-step", type=int, default=-1)
    parser.add_argument("--with-upstream", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "keras":
        import tensorflow as tf

        upstream(tf.distribute.MultiWorkerMirroredStrategy())
        return 0
    from zoo import training

    strategy = distribute.multi_worker_strategy()
    if args.with_upstream:
        upstream(strategy)
    with distribute.worker_output(args.out) as folder:
        with strategy.scope():
            model = build_model()
        steps = StepLog(EXAMPLES // GLOBAL_BATCH, echo=True,
                        pause_after_step=args.pause_after_step)
        history = model.fit(dataset(), epochs=EPOCHS, verbose=0, shuffle=False, callbacks=[
            distribute.BackupAndRestore(folder / "backup"),
            training.TrainingRecord(folder / "history.json"),
            keras.callbacks.TensorBoard(str(folder / "logs")),
            steps,
        ])
        weights = model.get_weights()
        np.savez(folder / "weights.npz", *weights)
        distribute.wait_for_workers(strategy)  # leave together, as the command line does
    print("RESULT " + json.dumps({
        "steps": {str(step): logs for step, logs in steps.steps.items()},
        "history": history.history,
        "weights": [weight.tolist() for weight in weights],
        "chief": distribute.is_chief(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
