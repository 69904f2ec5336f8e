"""The Colab notebooks: committed without outputs, and run top to bottom.

`colab/attention_transformer.ipynb` is executed with nbclient in a fresh
IPython kernel on this interpreter, against `../shared/data/sst2` (beside
the checkout), with its parameters set through environment variables: the
first 256 training rows, one epoch, a tiny model, TensorBoard not started.
Without the data it is skipped, except under CI (`CI=true`), where it fails.
"""

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import nbformat
import tensorflow as tf
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "colab" / "attention_transformer.ipynb"
SST2 = REPO.parent / "shared" / "data" / "sst2"
# The whole run, kernel start included, stays under three minutes.
TIME_LIMIT_SECONDS = 170
PARAMETERS = {
    "KERASATTN_NOTEBOOK_TRAIN_EXAMPLES": "256",
    "KERASATTN_NOTEBOOK_EPOCHS": "1",
    "KERASATTN_NOTEBOOK_RECIPE_OPTIONS": (
        "--vocabulary-size 400 --sequence-length 32 --layers 2 --hidden-dim 16 --heads 2 "
        "--intermediate-dim 32 --batch-size 32 --warmup-steps 0 --pretrain-epochs 1 "
        "--fine-tune-seeds 1 --verbose 2"
    ),
    "KERASATTN_NOTEBOOK_TENSORBOARD": "0",
}


def _write_kernelspec(folder: Path) -> None:
    """A `python3` kernelspec that starts ipykernel on this interpreter.

    With `JUPYTER_PATH` pointing at `folder`, it is found before any other
    `python3` kernel (such as one registered for another environment).
    """
    kernel = folder / "kernels" / "python3"
    kernel.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (kerasattn tests)",
        "language": "python",
    }
    (kernel / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")


def _printed_text(notebook) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


class AttentionTransformerNotebookTest(tf.test.TestCase):
    def test_committed_without_outputs(self):
        # Outputs could carry data rows (research-use data is never committed).
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        nbformat.validate(notebook)
        self.assertEqual("python3", notebook.metadata.kernelspec.name)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                self.assertEqual([], cell.outputs, cell.id)
                self.assertIsNone(cell.execution_count, cell.id)

    def test_runs_top_to_bottom_on_sst2(self):
        if not (SST2 / "train.tsv").is_file() or not (SST2 / "dev.tsv").is_file():
            message = f"{SST2}: expected SST-2's train.tsv and dev.tsv, received: no such files"
            if os.environ.get("CI") == "true":
                self.fail(message)
            self.skipTest(message)
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            _write_kernelspec(folder / "jupyter")
            work_dir = folder / "work"
            environment = {
                **os.environ,
                **PARAMETERS,
                "KERASATTN_NOTEBOOK_DATA": str(SST2),
                "KERASATTN_NOTEBOOK_WORK_DIR": str(work_dir),
                "IPYTHONDIR": str(folder / "ipython"),  # the kernel's profile: not in $HOME
            }
            deadline = time.monotonic() + TIME_LIMIT_SECONDS
            client = NotebookClient(
                notebook,
                kernel_name="python3",
                startup_timeout=60,
                # Each cell gets what is left of the time limit.
                timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                resources={"metadata": {"path": str(folder)}},
            )
            jupyter = {
                "JUPYTER_PATH": str(folder / "jupyter"),
                "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),  # the connection file
            }
            with mock.patch.dict(os.environ, jupyter):
                client.execute(env=environment)

            printed = _printed_text(notebook)
            found = re.search(
                r"dev accuracy (\d\.\d{4}) after 1 epoch\(s\) of (\d+) steps", printed
            )
            self.assertIsNotNone(found, printed)
            accuracy, steps = float(found.group(1)), int(found.group(2))
            self.assertBetween(accuracy, 0.0, 1.0)
            self.assertBetween(steps, 1, 20)  # the parameter made training tiny
            reloaded = re.search(
                r"dev accuracy of the reloaded preset (\d\.\d{4}) on 872 ", printed
            )
            self.assertIsNotNone(reloaded, printed)
            # The saved preset predicts what the trained model did (one sentence is 0.0011).
            self.assertAllClose(accuracy, float(reloaded.group(1)), atol=0.0035)
            self.assertIn("TensorBoard not started", printed)

            export_dir = work_dir / "export"
            manifest = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
            self.assertCountEqual(
                ["tflite_float32", "tflite_dynamic_int8"], manifest["artifacts"]
            )
            tflite = (export_dir / "model_dynamic_int8.tflite").read_bytes()
            self.assertEqual(b"TFL3", tflite[4:8])  # the TFLite flatbuffer identifier
            self.assertIn(f"TFLite model: {export_dir / 'model_dynamic_int8.tflite'}", printed)
            self.assertTrue((export_dir / "vocabulary.txt").is_file())
