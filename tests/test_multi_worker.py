"""Multi-worker training: two worker processes on localhost, each with its own `TF_CONFIG`.

Each test starts `tests/multi_worker_probe.py` on two workers (ports from
the OS) and reads what they print. Every wait has a deadline, and the
workers' process groups are killed whatever happens, so a stuck collective
fails the test instead of hanging it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests import multi_worker_probe as probe
from zoo import distribute

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "multi_worker_probe.py"
WORKERS = 2
RUN_SECONDS = 120  # one probe run, start-up included; they take 10-20 s on 2 busy cores
STEPS = probe.EPOCHS * (probe.EXAMPLES // probe.GLOBAL_BATCH)
PAUSE_AFTER_STEP = 12  # in the third epoch: the backups hold two epochs
CHIEF_FILES = {"history.json", "weights.npz", "logs/train"}
# The upstream errors, as the probe prints them.
SCALAR_REDUCTION = "Invalid reduction dimension 0 for input with 0 dimensions"
STRUCTURE_REDUCTION = "Attempt to convert a value (PerReplica"


class KnownUpstreamFailure(AssertionError):
    """Keras failed under the strategy in one of the ways reported upstream."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that the OS reports free on localhost."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Cluster:
    """Worker processes of one probe run; a context manager that kills them on exit.

    Args:
        folder: where the workers' outputs (`worker-<i>.log`) go.
        args: the probe's arguments.
        extra_args: further arguments by worker index.
    """

    def __init__(self, folder: Path, args: list[str],
                 extra_args: Optional[dict[int, list[str]]] = None):
        self.folder = folder
        addresses = [f"localhost:{port}" for port in free_ports(WORKERS)]
        # The workers import the package from this checkout, as this process does.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        for index in range(WORKERS):
            config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(config), PYTHONPATH=path,
                       TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
            log = folder / f"worker-{index}.log"
            with open(log, "wb") as output:
                self.processes.append(subprocess.Popen(
                    [sys.executable, str(PROBE), *args, *(extra_args or {}).get(index, [])],
                    stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                    start_new_session=True,  # its own process group, killed as one
                ))
            self.logs.append(log)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info) -> None:
        for index in range(WORKERS):
            self.kill(index)

    def kill(self, index: int) -> None:
        """Kills worker `index` (its process group) if it still runs."""
        process = self.processes[index]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def output(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def lines(self, index: int, prefix: str) -> list[str]:
        """Worker `index`'s output lines that start with `prefix`, without it."""
        return [line[len(prefix):].strip() for line in self.output(index).splitlines()
                if line.startswith(prefix)]

    def wait_for_line(self, index: int, prefix: str, seconds: float) -> str:
        """The first line of worker `index` starting with `prefix`, within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.lines(index, prefix)
            if found:
                return found[0]
            if self.processes[index].poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"worker {index} printed no {prefix!r} line; its output ends:\n"
                             f"{self.output(index)[-3000:]}")

    def wait(self, seconds: float = RUN_SECONDS) -> list[int]:
        """Every worker's exit status; fails (and the context kills them) past `seconds`."""
        deadline = time.monotonic() + seconds
        for index, process in enumerate(self.processes):
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker {index} still ran after {seconds} s; its output "
                                     f"ends:\n{self.output(index)[-3000:]}") from None
        return [process.returncode for process in self.processes]

    def result(self, index: int) -> dict:
        """Worker `index`'s `RESULT` line, parsed."""
        found = self.lines(index, "RESULT ")
        if not found:
            raise AssertionError(f"worker {index} printed no result; its output ends:\n"
                                 f"{self.output(index)[-3000:]}")
        return json.loads(found[0])


@functools.lru_cache(maxsize=None)
def one_worker() -> probe.StepLog:
    """The probe's model trained in this process on one device, same global batch."""
    model = probe.build_model()
    steps = probe.StepLog(probe.EXAMPLES // probe.GLOBAL_BATCH)
    model.fit(probe.dataset(), epochs=probe.EPOCHS, verbose=0, shuffle=False, callbacks=[steps])
    steps.weights = model.get_weights()
    return steps


def step_losses(steps: dict, first: int = 0) -> np.ndarray:
    return np.array([steps[str(step)]["loss"] for step in range(first, STEPS)])


def files_in(folder: Path) -> set[str]:
    """`folder`'s files and TensorBoard run folders, relative to it."""
    found = set()
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith("logs/"):
            found.add(relative)
        elif path.is_dir() and relative.startswith("logs/") and relative.count("/") == 1:
            found.add(relative)
    return found


_tmp: Optional[Path] = None


def setUpModule():
    global _tmp
    _tmp = Path(tempfile.mkdtemp(prefix="zoo-multi-worker-"))


def tearDownModule():
    shutil.rmtree(_tmp, ignore_errors=True)
    uninterrupted_run.cache_clear()


@functools.lru_cache(maxsize=None)
def uninterrupted_run() -> dict:
    """The probe's two-worker run, after the upstream checks in the same processes.

    Returns:
        `status` (exit statuses), `results` (`RESULT` lines), `resumed`,
        `reduce` and `fit` (the upstream lines), `outputs` (their ends),
        by worker; `out`, the run's `--out`.
    """
    folder = _tmp / "uninterrupted"
    folder.mkdir()
    out = folder / "out"
    with Cluster(folder, ["zoo", str(out), "--with-upstream"]) as cluster:
        run = {"status": cluster.wait(), "out": out}
        run["outputs"] = [cluster.output(index)[-3000:] for index in range(WORKERS)]
        for key, prefix in (("resumed", "RESUMED "), ("reduce", "REDUCE "), ("fit", "FIT ")):
            run[key] = [cluster.lines(index, prefix) for index in range(WORKERS)]
        if run["status"] == [0] * WORKERS:
            run["results"] = [cluster.result(index) for index in range(WORKERS)]
    return run


class UpstreamFailureTest(tf.test.TestCase):
    """Keras 3 under `MultiWorkerMirroredStrategy` as it is upstream (no zoo code)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run = uninterrupted_run()
        cls.status, cls.outputs = run["status"], run["outputs"]
        cls.reduce, cls.fit = run["reduce"], run["fit"]

    def _check(self, results: list[list[str]], known: tuple[str, ...]) -> None:
        self.assertEqual(self.status, [0] * WORKERS, self.outputs)
        for index, lines in enumerate(results):
            if lines == ["ok"]:
                continue
            if lines and any(message in lines[0] for message in known):
                raise KnownUpstreamFailure(f"worker {index}: {lines[0]}")
            raise AssertionError(f"worker {index}: expected 'ok' or a known failure, received: "
                                 f"{lines}; its output ends:\n{self.outputs[index]}")

    @pytest.mark.xfail(strict=True, raises=KnownUpstreamFailure, reason=(
        "keras#20585: Keras's TF trainer reduces each step's logs with "
        "strategy.reduce('MEAN', value, axis=0) under a multi-worker strategy; a scalar "
        "log has no axis 0"))
    def test_keras_reduces_scalar_logs(self):
        self._check(self.reduce, (SCALAR_REDUCTION,))

    @pytest.mark.xfail(strict=True, raises=KnownUpstreamFailure, reason=(
        "keras#20329, then keras#20585: before building, Keras's TF trainer passes the whole "
        "input batch structure to one strategy.reduce call (a PerReplica structure cannot be "
        "converted to a tensor); past that, it fails on the scalar logs"))
    def test_keras_fit(self):
        self._check(self.fit, (STRUCTURE_REDUCTION, SCALAR_REDUCTION))


class MultiWorkerFitTest(tf.test.TestCase):
    """The zoo's trainer: 20 steps on two workers against one worker."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run = uninterrupted_run()
        if run["status"] != [0] * WORKERS:
            raise AssertionError(f"exit status {run['status']}; worker outputs end:\n"
                                 + "\n".join(run["outputs"]))
        cls.out, cls.results, cls.resumed = run["out"], run["results"], run["resumed"]

    def test_per_step_losses_match_one_worker(self):
        expected = np.array([one_worker().steps[step]["loss"] for step in range(STEPS)])
        for result in self.results:
            # Every worker ran every step, no more.
            self.assertEqual(sorted(map(int, result["steps"])), list(range(STEPS)))
            self.assertAllClose(step_losses(result["steps"]), expected, rtol=1e-4, atol=0)

    def test_history_and_weights(self):
        for result in self.results:
            self.assertLen(result["history"]["loss"], probe.EPOCHS)
            self.assertLen(result["history"]["mae"], probe.EPOCHS)
            for weight, expected in zip(result["weights"], one_worker().weights):
                self.assertAllClose(np.array(weight), expected, rtol=1e-4, atol=1e-6)
        self.assertEqual([result["chief"] for result in self.results], [True, False])
        self.assertEqual(self.resumed, [[self.resumed[0][0]]] * WORKERS)
        self.assertTrue(self.resumed[0][0].startswith("0 "))

    def test_only_the_chief_writes(self):
        self.assertEqual(files_in(self.out), CHIEF_FILES)
        history = json.loads((self.out / "history.json").read_text())
        self.assertLen(history["epochs"], probe.EPOCHS)


class ResumeTest(tf.test.TestCase):
    """A worker killed mid-run, and the workers restarted: they resume from their backups."""

    def test_killed_worker_resumes(self):
        folder = _tmp / "resume"
        out = folder / "out"
        first = folder / "first"
        first.mkdir(parents=True)
        with Cluster(first, ["zoo", str(out)],
                     {1: ["--pause-after-step", str(PAUSE_AFTER_STEP)]}) as cluster:
            cluster.wait_for_line(1, "PAUSED", RUN_SECONDS)
            cluster.kill(1)
            # The chief would stop by itself once TensorFlow's coordination service
            # misses worker 1's heartbeats (about 10 s); TensorFlow's recovery is to
            # restart every worker, which this does at once.
            cluster.kill(0)
            before = [cluster.lines(index, "STEP ") for index in range(WORKERS)]
        self.assertEqual(len(before[1]), PAUSE_AFTER_STEP + 1)
        self.assertTrue((out / ".worker-1" / "backup").is_dir())

        second = folder / "second"
        second.mkdir()
        with Cluster(second, ["zoo", str(out)]) as cluster:
            status = cluster.wait()
            self.assertEqual(status, [0] * WORKERS, cluster.output(0)[-3000:]
                             + cluster.output(1)[-3000:])
            results = [cluster.result(index) for index in range(WORKERS)]
            resumed = [cluster.lines(index, "RESUMED ")[0].split() for index in range(WORKERS)]
        expected = one_worker()
        steps_per_epoch = probe.EXAMPLES // probe.GLOBAL_BATCH
        epochs_done = PAUSE_AFTER_STEP // steps_per_epoch
        for (epoch, checksum), result in zip(resumed, results):
            # It starts where the last backup ends, from that epoch's weights...
            self.assertEqual(int(epoch), epochs_done)
            self.assertAllClose(float(checksum), expected.checksums[epochs_done - 1], rtol=1e-5)
            # ...runs only the steps after it, as one worker would...
            first_step = epochs_done * steps_per_epoch
            self.assertEqual(sorted(map(int, result["steps"])), list(range(first_step, STEPS)))
            self.assertAllClose(step_losses(result["steps"], first_step),
                                [expected.steps[step]["loss"] for step in range(first_step, STEPS)],
                                rtol=1e-4, atol=0)
            # ...and ends with the same weights.
            for weight, reference in zip(result["weights"], expected.weights):
                self.assertAllClose(np.array(weight), reference, rtol=1e-4, atol=1e-6)
        self.assertEqual(files_in(out), CHIEF_FILES)
        history = json.loads((out / "history.json").read_text())
        self.assertEqual([epoch["epoch"] for epoch in history["epochs"]],
                         list(range(1, probe.EPOCHS + 1)))


class _FakeStrategy:
    """What `split_batches` asks of a strategy, for one worker of a cluster, in-process."""

    def __init__(self, workers: int, replicas_per_worker: int, worker: int):
        self.num_replicas_in_sync = workers * replicas_per_worker
        self.workers, self.worker = workers, worker

    def distribute_datasets_from_function(self, dataset_fn):
        return dataset_fn(tf.distribute.InputContext(
            num_input_pipelines=self.workers, input_pipeline_id=self.worker,
            num_replicas_in_sync=self.num_replicas_in_sync))


class DistributeTest(tf.test.TestCase):
    """`zoo.distribute`'s parts that need no cluster."""

    CONFIG = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
              "task": {"type": "worker", "index": 1}}

    def test_cluster_config(self):
        config = distribute.cluster_config({"TF_CONFIG": json.dumps(self.CONFIG)})
        self.assertEqual(distribute.worker_index(config), 2)
        self.assertEqual(distribute.num_workers(config), 3)
        self.assertFalse(distribute.is_chief(config))
        self.assertEqual(distribute.describe(config), "worker 2 of 3 (c:3)")
        chief = {**self.CONFIG, "task": {"type": "chief", "index": 0}}
        self.assertTrue(distribute.is_chief(chief))

    def test_bad_cluster_config_names_the_field(self):
        cases = [
            ("", "received: nothing"),
            ("{", "expected JSON"),
            (json.dumps({"task": {"type": "worker", "index": 0}}), '"cluster"'),
            (json.dumps({"cluster": {"worker": ["b"]}, "task": {"type": "worker", "index": 0}}),
             "cluster.worker"),
            (json.dumps({"cluster": {"ps": ["b:1"]}, "task": {"type": "ps", "index": 0}}),
             '"chief" and "worker"'),
            (json.dumps({**self.CONFIG, "task": {"type": "evaluator", "index": 0}}), "task.type"),
            (json.dumps({**self.CONFIG, "task": {"type": "worker", "index": 2}}), "task.index"),
        ]
        for text, expected in cases:
            with self.assertRaisesRegex(ValueError, "^TF_CONFIG: .*" + re.escape(expected)):
                distribute.cluster_config({"TF_CONFIG": text})

    def test_resume_epoch(self):
        self.assertEqual(distribute.resume_epoch([3, 3], 3, 2), (3, False))
        self.assertEqual(distribute.resume_epoch([0, 0], 0, 0), (0, False))
        # Killed while the other saved epoch 3: the one ahead goes back to its previous backup.
        self.assertEqual(distribute.resume_epoch([3, 2], 3, 2), (2, True))
        self.assertEqual(distribute.resume_epoch([3, 2], 2, 1), (2, False))
        # A worker's backups are lost: fresh weights cannot be had back.
        self.assertEqual(distribute.resume_epoch([3, 0], 3, 2), (None, False))
        self.assertEqual(distribute.resume_epoch([5, 2], 5, 4), (None, False))

    def test_worker_output(self):
        out = Path(self.get_temp_dir()) / "out"
        for index, expected in ((0, out), (1, out / ".worker-1")):
            config = {"cluster": {"worker": ["a:1", "b:2"]},
                      "task": {"type": "worker", "index": index}}
            with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(config)}):
                with distribute.worker_output(out) as folder:
                    self.assertEqual(folder, expected)
                    (folder / "file.txt").parent.mkdir(parents=True, exist_ok=True)
                    (folder / "file.txt").write_text("x")
        # Only the chief's file is left.
        self.assertEqual(files_in(out), {"file.txt"})

    def _parts(self, dataset, workers: int, replicas_per_worker: int) -> list[list[np.ndarray]]:
        """Each replica's batches, in replica order."""
        replicas = []
        for worker in range(workers):
            split = distribute.split_batches(
                dataset, _FakeStrategy(workers, replicas_per_worker, worker))
            elements = [element.numpy() for element in split]
            for local in range(replicas_per_worker):
                replicas.append(elements[local::replicas_per_worker])
        return replicas

    def test_split_batches(self):
        # Batches of 5, 4, 3 and 1 rows, on 2 workers of 1 replica, then of 2.
        batches = tf.data.Dataset.range(9).batch(5).concatenate(
            tf.data.Dataset.range(10, 14).batch(3))
        first, second = self._parts(batches, 2, 1)
        self.assertEqual([part.tolist() for part in first], [[0, 1], [5, 6], [10]])
        self.assertEqual([part.tolist() for part in second], [[2, 3, 4], [7, 8], [11, 12]])
        # The batch of 1 is left out on every worker: the same number of steps.
        replicas = self._parts(tf.data.Dataset.range(8).batch(4, drop_remainder=True), 2, 2)
        self.assertEqual([[part.tolist() for part in parts] for parts in replicas],
                         [[[0], [4]], [[1], [5]], [[2], [6]], [[3], [7]]])

    def test_split_batches_keeps_structure_and_known_length(self):
        features = {"token_ids": np.arange(8).reshape(4, 2), "padding_mask": np.ones((4, 2))}
        dataset = tf.data.Dataset.from_tensor_slices((features, np.arange(4))).batch(
            2, drop_remainder=True)
        split = distribute.split_batches(dataset, _FakeStrategy(2, 1, 1))
        self.assertEqual(int(split.cardinality()), 2)
        x, y = next(iter(split))
        self.assertEqual(list(x), ["token_ids", "padding_mask"])
        self.assertAllEqual(x["token_ids"], [[2, 3]])
        self.assertAllEqual(y, [1])

    def test_every_recipe_takes_multi_worker(self):
        from zoo import registry

        for name, recipe in registry.recipes().items():
            parser = argparse.ArgumentParser()
            recipe.add_train_arguments(parser)
            args = parser.parse_args(["--data", "d", "--out", "o", "--strategy",
                                      "multi-worker"])
            self.assertEqual(args.strategy, "multi-worker", name)
