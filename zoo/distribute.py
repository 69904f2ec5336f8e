"""Training on several machines: `tf.distribute.MultiWorkerMirroredStrategy` under Keras 3.

`--strategy multi-worker` runs the same recipe command on every machine,
each with its own `TF_CONFIG` (TensorFlow's cluster description: every
worker's `host:port`, and which of them this process is). Worker 0 (or the
task of type `"chief"`, where the cluster has one) is the chief.

What this module adds to TensorFlow's strategy:

- `multi_worker_strategy`: the strategy from `TF_CONFIG`, checked first (a
  bad `TF_CONFIG` is a one-line error naming the field), created once per
  process and before any other TensorFlow operation runs, as the strategy
  requires;
- `MultiWorkerTrainer`: a mixin for `keras.Model` (the zoo's `Task` has it)
  under which Keras 3's `fit` and `evaluate` work under the strategy. Keras's
  TensorFlow trainer (3.15) fails there twice: it averages a whole input
  batch structure with one `strategy.reduce` call (keras#20329), and it
  reduces each step's logs with `strategy.reduce("MEAN", value, axis=0)`,
  which for the scalar logs of every model fails with "Invalid reduction
  dimension 0 for input with 0 dimensions" (keras#20585). The mixin builds
  from the dataset's element spec, and hands Keras each log with a leading
  axis of length one, so that Keras's own reduction averages it over the
  replicas and returns it with its shape. It also splits each global batch
  between the replicas (`split_batches`), runs `predict` on each worker
  alone, and stops all workers when one's callbacks stop it
  (`AgreeOnStopping`);
- `worker_output`: the folder a worker writes to: `--out` on the chief; on
  every other worker a scratch folder of its own, `OUT/.worker-<index>`,
  kept while the run is unfinished (so the worker can resume) and removed
  when it ends, so only the chief's files remain;
- `BackupAndRestore`: Keras's callback that, under the strategy, first
  makes the workers agree on the epoch they resume from (each worker backs
  up into its own folder; one killed while the others were saving can be an
  epoch behind, and it then falls back to its previous backup), since
  workers that start at different epochs run different numbers of steps and
  hang;
- `scale_loss_for_replicas`: what a task's own `compute_loss` returns, so
  that replicas' summed gradients are the global batch's (as Keras's losses
  do);
- `split_batches`: every worker reads the whole dataset in the same
  (seeded) order and each replica keeps its part of every global batch (as
  the `DATA` auto-shard policy would, but for any batching, bucketed
  batches included), so all workers run the same number of steps on the
  batches one worker would;
- `wait_for_workers`: a barrier; the command line has every worker leave
  together (TensorFlow fails a worker that exits while another still runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterator, Optional

import keras
from keras import tree

MULTI_WORKER = "multi-worker"
CONFIG_VARIABLE = "TF_CONFIG"
# A non-chief worker's scratch folder inside `--out`, by its index.
WORKER_FOLDER = ".worker-{index}"

_strategy = None


def cluster_config(environ: Optional[dict] = None) -> dict:
    """`TF_CONFIG`, parsed and checked.

    Args:
        environ: the environment (`os.environ` by default).

    Returns:
        The configuration: `{"cluster": {"worker": ["host:port", ...], ...},
        "task": {"type": "worker", "index": i}}`.

    Raises:
        ValueError: naming `TF_CONFIG` and the field at fault.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(CONFIG_VARIABLE, "")
    if not text.strip():
        raise ValueError(
            f"{CONFIG_VARIABLE}: expected the cluster as JSON, such as "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}, received: nothing '
            "(--strategy multi-worker reads it from the environment)"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{CONFIG_VARIABLE}: expected JSON, received: {error}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{CONFIG_VARIABLE}: expected a \"cluster\" object, received: "
                         f"{json.dumps(cluster)}")
    for task_type, addresses in cluster.items():
        if task_type not in ("chief", "worker"):
            raise ValueError(f"{CONFIG_VARIABLE}: expected cluster jobs \"chief\" and "
                             f"\"worker\", received: {task_type!r}")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(address, str) and ":" in address for address in addresses)):
            raise ValueError(f"{CONFIG_VARIABLE}: expected cluster.{task_type} as a list of "
                             f"\"host:port\", received: {json.dumps(addresses)}")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"{CONFIG_VARIABLE}: expected one chief, received: "
                         f"{len(cluster['chief'])}")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(f"{CONFIG_VARIABLE}: expected task.type in {sorted(cluster)}, "
                         f"received: {json.dumps(task)}")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(f"{CONFIG_VARIABLE}: expected task.index in "
                         f"[0, {len(cluster[task['type']])}), received: {json.dumps(index)}")
    return config


def worker_index(config: Optional[dict] = None) -> int:
    """This process's place among the workers: 0 for the chief, then 1, 2, ..."""
    config = cluster_config() if config is None else config
    task = config["task"]
    if task["type"] == "chief":
        return 0
    return task["index"] + len(config["cluster"].get("chief", []))


def num_workers(config: Optional[dict] = None) -> int:
    """How many processes train together (chief included)."""
    config = cluster_config() if config is None else config
    return sum(len(addresses) for addresses in config["cluster"].values())


def is_chief(config: Optional[dict] = None) -> bool:
    """Whether this process is the chief (the one that writes the outputs)."""
    return worker_index(config) == 0


def multi_worker_strategy():
    """The process's `tf.distribute.MultiWorkerMirroredStrategy`, from `TF_CONFIG`.

    Created on the first call (which must come before any other TensorFlow
    operation of the process: the strategy configures the collective
    operations at start-up) and returned by later ones. Gradients are summed
    with TensorFlow's choice of collective (NCCL between GPUs, ring on
    CPUs).

    Raises:
        ValueError: if `TF_CONFIG` is missing or wrong (see `cluster_config`).
    """
    global _strategy
    if _strategy is None:
        import tensorflow as tf

        cluster_config()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        _strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return _strategy


def in_multi_worker_mode(strategy) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` over more than one worker."""
    import tensorflow as tf

    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def worker_values(strategy, value: float) -> list[float]:
    """Every worker's `value`, in worker order (a collective: every worker must call it).

    Args:
        strategy: a `MultiWorkerMirroredStrategy` in multi-worker mode.
        value: this worker's number.

    Returns:
        One number per worker; worker 0 (the chief) first.
    """
    import tensorflow as tf

    replicas_per_worker = strategy.num_replicas_in_sync // num_workers()

    def this_worker(context):
        # Only the worker's first replica contributes, at its worker's place.
        slot = context.replica_id_in_sync_group // replicas_per_worker
        first = context.replica_id_in_sync_group % replicas_per_worker == 0
        return tf.one_hot(slot, num_workers(), dtype=tf.float64) * (
            float(value) if first else 0.0)

    per_replica = strategy.experimental_distribute_values_from_function(this_worker)
    return [float(item) for item in strategy.reduce("SUM", per_replica, axis=None).numpy()]


def scale_loss_for_replicas(loss):
    """A replica's share of the loss: `loss` divided by the replicas in sync.

    A task's own `compute_loss` returns its loss through this, as Keras's
    losses do: under a strategy each replica's gradients are summed, and
    Keras's loss tracker multiplies the value back. Without it, `N`
    replicas train with `N` times the gradient and log `N` times the loss.
    Outside a strategy (one replica) it returns `loss` unchanged.
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return loss
    return loss * keras.ops.cast(1.0 / replicas, loss.dtype)


def wait_for_workers(strategy) -> None:
    """Returns once every worker has called it (a collective operation)."""
    worker_values(strategy, 1.0)


def split_batches(dataset, strategy):
    """`dataset`'s global batches split between the replicas of all workers.

    Every worker reads the whole dataset (which must come in the same order
    on every worker: shuffle with a seed) and each replica takes its own
    contiguous part of every global batch: replica `r` of `R` the rows
    `[m * r // R, m * (r + 1) // R)` of a batch of `m`. So each step
    trains on the batch one worker would, whatever made the batches
    (`tf.data`'s `DATA` auto-shard policy with its rebatching changes the
    batching op itself where the batch size is not static, as in
    length-bucketed batches), and every worker runs the same number of
    steps. A batch with fewer rows than replicas cannot be split and is
    left out (on every worker alike).

    Args:
        dataset: a `tf.data.Dataset` of global batches.
        strategy: the `tf.distribute` strategy.

    Returns:
        A distributed dataset (`strategy.distribute_datasets_from_function`),
        which `fit` and `evaluate` take as they take `dataset`.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    def rows(element):
        return tf.shape(tree.flatten(element)[0])[0]

    def worker_dataset(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def parts(*element):
            element = element[0] if len(element) == 1 else element
            size = rows(element)

            def part(index):
                replica = tf.cast(first + index, tf.int32)
                start, end = size * replica // replicas, size * (replica + 1) // replicas
                # tf.nest keeps a dict's key order (the model's inputs), as tf.data does.
                return tf.nest.map_structure(lambda value: value[start:end], element)

            # This worker's replicas take consecutive elements, in order.
            return tf.data.Dataset.range(local).map(part)

        batches = int(dataset.cardinality())
        batch_size = tree.flatten(dataset.element_spec)[0].shape[0]
        if batches >= 0 and batch_size is not None and batch_size >= replicas:
            # Batches of one size, none left out: the count is known (and
            # Keras, knowing it, does not warn that the input ran out).
            return dataset.flat_map(parts).apply(
                tf.data.experimental.assert_cardinality(batches * local))
        whole = dataset.filter(lambda *element: rows(
            element[0] if len(element) == 1 else element) >= replicas)
        return whole.flat_map(parts)

    return strategy.distribute_datasets_from_function(worker_dataset)


def _split_if_dataset(data, strategy):
    import tensorflow as tf

    return split_batches(data, strategy) if isinstance(data, tf.data.Dataset) else data


def _ends_unannounced(data, steps: Optional[int]) -> bool:
    """Whether `split_batches(data)` ends where Keras, not told its length, warns.

    A finite dataset whose batches may be too small to split loses its known
    length; Keras, left to find each epoch's end, warns that "the input ran
    out of data" where `data` itself simply ended.
    """
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset) or steps is not None:
        return False
    batch_size = tree.flatten(data.element_spec)[0].shape[0]
    return int(data.cardinality()) >= 0 and batch_size is None


@contextlib.contextmanager
def _ran_out_expected(expected: bool) -> Iterator[None]:
    with warnings.catch_warnings():
        if expected:
            warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


class _Held:
    """A value kept on a model without Keras tracking (wrapping) it."""

    def __init__(self, value):
        self.value = value


def _first_local_value(value):
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _with_leading_axis(value):
    import tensorflow as tf

    if isinstance(value, (tf.Tensor, tf.Variable)) or hasattr(value, "shape"):
        return tf.expand_dims(tf.convert_to_tensor(value), 0)
    return value


class AgreeOnStopping(keras.callbacks.Callback):
    """Stops every worker's training when one worker's callbacks stop it.

    Early stopping decides from each worker's own logs, such as a validation
    score that a callback computed on that worker; should one worker's
    score differ in its last digit (other hardware, other kernels), that
    worker would stop while the others wait for it in the next step. Placed
    last, this makes the decision at each epoch's end the same everywhere.
    `MultiWorkerTrainer.fit` adds it under a multi-worker strategy.
    """

    def on_epoch_end(self, epoch, logs=None):
        stopping = bool(getattr(self.model, "stop_training", False))
        self.model.stop_training = any(
            worker_values(self.model.distribute_strategy, float(stopping)))


class MultiWorkerTrainer:
    """A `keras.Model` mixin: `fit` and `evaluate` under `MultiWorkerMirroredStrategy`.

    Put it before `keras.Model` in the bases (`class Task(MultiWorkerTrainer,
    keras.Model)`). Outside a multi-worker strategy it changes nothing.
    Under one, with the TensorFlow backend:

    - the model's symbolic build takes its shapes from the dataset's element
      spec (or, for arrays, this worker's first batch), where Keras reduces
      a drawn batch's structure across the workers (keras#20329; workers
      whose batches differ in shape could not reduce them anyway, and the
      draw would start an iterator that one worker does not);
    - each step returns its logs with a leading axis of length one, so that
      Keras's `strategy.reduce("MEAN", value, axis=0)` (keras#20585) averages
      them over the replicas and gives back each log's own shape, instead of
      failing on a scalar.

    A step's logs are then the mean of the replicas' running metrics (with
    equal batches on every replica, the global batch's); the epoch's logs
    read the metrics' variables, which sum over all replicas. `fit` stops
    all workers when one worker's callbacks stop it (`AgreeOnStopping`).
    `fit` and `evaluate` split a `tf.data.Dataset`'s global batches between the
    replicas (`split_batches`).

    `predict` and `predict_on_batch` run on this worker alone, on all of
    their input: callbacks call them on every worker with the same inputs
    (validation scores, attention maps), where Keras would gather every
    worker's outputs into one (`predict_on_batch` would return each example
    once per worker).
    """

    def _multi_worker(self) -> bool:
        strategy = getattr(self, "_distribute_strategy", None)
        return strategy is not None and in_multi_worker_mode(strategy)

    def fit(self, x=None, *args, validation_data=None, **kwargs):
        if not self._multi_worker():
            return super().fit(x, *args, validation_data=validation_data, **kwargs)
        expected = (_ends_unannounced(x, kwargs.get("steps_per_epoch"))
                    or _ends_unannounced(validation_data, kwargs.get("validation_steps")))
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), AgreeOnStopping()]
        with self._building_from(x), _ran_out_expected(expected):
            x = _split_if_dataset(x, self._distribute_strategy)
            validation_data = _split_if_dataset(validation_data, self._distribute_strategy)
            return super().fit(x, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        if not self._multi_worker():
            return super().evaluate(x, *args, **kwargs)
        with self._building_from(x), _ran_out_expected(_ends_unannounced(x, kwargs.get("steps"))):
            x = _split_if_dataset(x, self._distribute_strategy)
            return super().evaluate(x, *args, **kwargs)

    @contextlib.contextmanager
    def _building_from(self, data) -> Iterator[None]:
        # The symbolic build takes shapes and dtypes from the dataset's element
        # spec: drawing a batch, as Keras does, would start an iterator that
        # one worker does not, and a dataset reshuffled on each iteration
        # would then train on another order than one worker's.
        import tensorflow as tf

        # Held in a plain object: Keras would track a dict set on the model as
        # a `TrackedDict`, which then no longer matches the model's inputs.
        self._build_spec = (_Held(data.element_spec) if isinstance(data, tf.data.Dataset)
                            else None)
        try:
            yield
        finally:
            self._build_spec = None

    def predict(self, x, *args, **kwargs):
        if not self._multi_worker():
            return super().predict(x, *args, **kwargs)
        with self._on_this_worker():
            return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        if not self._multi_worker():
            return super().predict_on_batch(x)
        with self._on_this_worker():
            return super().predict_on_batch(x)

    @contextlib.contextmanager
    def _on_this_worker(self) -> Iterator[None]:
        # Without a strategy of its own the model runs under the default one,
        # reading each variable's local copy: no collective operation.
        strategy = self._distribute_strategy
        self._distribute_strategy = None
        try:
            yield
        finally:
            self._distribute_strategy = strategy

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not self._multi_worker():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if getattr(self, "_build_spec", None) is not None:
            return super()._maybe_symbolic_build(data_batch=self._build_spec.value)
        for _, _, batches in iterator:
            data_batch = tree.map_structure(_first_local_value, next(batches))
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _make_function(self, step_function):
        if not self._multi_worker():
            return super()._make_function(step_function)

        def step_with_leading_axis(data):
            return tree.map_structure(_with_leading_axis, step_function(data))

        return super()._make_function(step_with_leading_axis)


def resume_epoch(epochs: list[int], epoch: int,
                 previous_epoch: int) -> tuple[Optional[int], bool]:
    """The epoch the workers resume from, and whether this worker goes back to its previous backup.

    Args:
        epochs: the epoch of every worker's latest backup (0: none).
        epoch: this worker's.
        previous_epoch: the epoch of this worker's previous backup (0: none).

    Returns:
        `(agreed, roll_back)`: the earliest of `epochs`, or `None` if this
        worker cannot resume from it; `roll_back` when it must load its
        previous backup to get there. A worker killed while the others saved
        an epoch is one behind them, and their previous backup is its
        latest; a worker whose backup is lost (or an epoch that no backup
        holds) cannot be matched, and fresh weights cannot be had back.
    """
    agreed = min(epochs)
    if epoch == agreed:
        return agreed, False
    if agreed > 0 and previous_epoch == agreed:
        return agreed, True
    return None, False


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that every worker of a cluster can resume from.

    Alone it is Keras's callback, keeping the previous backup too
    (`double_checkpoint=True`). Under a multi-worker strategy each worker
    must back up into a folder of its own (`worker_output` gives each one
    its own `--out`); at the start of `fit` the workers compare the epochs
    their backups hold and resume from the earliest, a worker that is ahead
    loading its previous backup, so that all run the same steps. Workers
    whose backups cannot be brought to one epoch stop with an error that
    says so, on every worker.

    Args:
        backup_dir: this worker's backup folder.
        **kwargs: `keras.callbacks.BackupAndRestore`'s other arguments.
    """

    def __init__(self, backup_dir: str | os.PathLike, **kwargs):
        kwargs.setdefault("double_checkpoint", True)
        super().__init__(str(backup_dir), **kwargs)

    def _saved_epoch(self, path: str) -> int:
        if not os.path.isfile(path):
            return 0
        with open(path, encoding="utf-8") as file:
            return int(json.load(file)["epoch"])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        strategy = self.model.distribute_strategy
        if not in_multi_worker_mode(strategy):
            return
        epoch = self._saved_epoch(self._training_metadata_path)
        epochs = [int(value) for value in worker_values(strategy, epoch)]
        agreed, roll_back = resume_epoch(
            epochs, epoch, self._saved_epoch(self._prev_training_metadata_path))
        if roll_back:
            shutil.copyfile(self._prev_weights_path, self._weights_path)
            shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
            self._load_model()
        stuck = agreed is None
        # Every worker decides from the same numbers: all raise, or none does.
        if any(worker_values(strategy, float(stuck))):
            raise ValueError(
                f"{self.backup_dir}: expected the workers' backups to reach one epoch, "
                f"received: epochs {epochs} (worker 0 first); remove every worker's backup "
                "folder to train from the start"
            )
        self.model._initial_epoch = agreed


@contextlib.contextmanager
def worker_output(out: str | os.PathLike) -> Iterator[Path]:
    """The folder this worker writes a run's outputs to.

    The chief writes `out`; any other worker writes its own scratch folder
    `out/.worker-<index>` (so the workers may share `out` on one file
    system, or each have its own), which keeps its backups while the run is
    unfinished and is removed when the run ends without an error.

    Args:
        out: the run's `--out`.

    Yields:
        The folder.
    """
    out = Path(out)
    if is_chief():
        yield out
        return
    scratch = out / WORKER_FOLDER.format(index=worker_index())
    scratch.mkdir(parents=True, exist_ok=True)
    yield scratch
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(OSError):
        out.rmdir()  # `out` was made for the scratch folder alone (a machine of its own)


def describe(config: Optional[dict] = None) -> str:
    """This worker in words, such as `"worker 1 of 2 (localhost:12346)"`."""
    config = cluster_config() if config is None else config
    task = config["task"]
    address = config["cluster"][task["type"]][task["index"]]
    role = "chief" if is_chief(config) else "worker"
    return f"{role} {worker_index(config)} of {num_workers(config)} ({address})"

