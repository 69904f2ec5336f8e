"""The Colab notebooks: committed without outputs, and run top to bottom.

Each notebook in `colab/` is executed with nbclient in a fresh IPython
kernel on this interpreter, against its data set in `../shared/data`
(beside the checkout), with its parameters set through environment
variables for a tiny, fast run: a few hundred examples, one epoch, a tiny
model, TensorBoard not started. Without the data a run is skipped, except
under CI (`CI=true`), where it fails.

- `attention_transformer.ipynb`: SST-2 (`../shared/data/sst2`).
- `sequence_tagger.ipynb`: CoNLL-2003 (`../shared/data/conll2003`).
- `recommender.ipynb`: Amazon Video Games in SASRec's format
  (`../shared/data/sasrec/Video.txt`, a file: the notebook's `DATA_FILE`).
- `translator.ipynb`: Multi30k English-German (`../shared/data/multi30k`).
"""

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence
from unittest import mock

import nbformat
import tensorflow as tf
from nbclient import NotebookClient

from kerasattn import data as kdata
from zoo import preset

REPO = Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
DATA = REPO.parent / "shared" / "data"
# Each notebook's whole run, kernel start included, stays under three minutes.
TIME_LIMIT_SECONDS = 170


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


class NotebookTestCase(tf.test.TestCase):
    """What every notebook's tests share; a subclass names its notebook, data and parameters.

    Subclasses set `NOTEBOOK` (a path), `DATA` (the data folder), `DATA_FILES`
    (the files the run needs in it) and `PARAMETERS` (the environment
    variables of the tiny run, besides the data and work folders).
    """

    NOTEBOOK: Path
    DATA: Path
    DATA_FILES: Sequence[str] = ()
    PARAMETERS: Mapping[str, str] = {}

    def check_committed_without_outputs(self):
        # Outputs could carry data rows (research-use data is never committed).
        notebook = nbformat.read(self.NOTEBOOK, as_version=4)
        nbformat.validate(notebook)
        self.assertEqual("python3", notebook.metadata.kernelspec.name)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                self.assertEqual([], cell.outputs, cell.id)
                self.assertIsNone(cell.execution_count, cell.id)

    def run_notebook(self, work_dir: Path) -> str:
        """Runs the notebook top to bottom with `WORK_DIR` at `work_dir`; what it printed.

        Skips the test (fails it under `CI=true`) without the data files;
        fails if a cell raises or the run passes `TIME_LIMIT_SECONDS`.
        """
        missing = [name for name in self.DATA_FILES if not (self.DATA / name).is_file()]
        if missing:
            message = (f"{self.DATA}: expected {', '.join(self.DATA_FILES)}, received: "
                       f"no {', '.join(missing)}")
            if os.environ.get("CI") == "true":
                self.fail(message)
            self.skipTest(message)
        notebook = nbformat.read(self.NOTEBOOK, as_version=4)
        folder = work_dir.parent
        _write_kernelspec(folder / "jupyter")
        environment = {
            **os.environ,
            **self.PARAMETERS,
            "KERASATTN_NOTEBOOK_DATA": str(self.DATA),
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
        self.assertIn("TensorBoard not started", printed)
        return printed

    def check_tflite_export(self, export_dir: Path, printed: str) -> dict:
        """The float32 and int8 TFLite files, and the manifest listing them; the manifest."""
        manifest = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
        self.assertCountEqual(["tflite_float32", "tflite_dynamic_int8"], manifest["artifacts"])
        for mode in ("float32", "dynamic_int8"):
            tflite = (export_dir / f"model_{mode}.tflite").read_bytes()
            self.assertEqual(b"TFL3", tflite[4:8])  # the TFLite flatbuffer identifier
        self.assertIn(f"TFLite model: {export_dir / 'model_dynamic_int8.tflite'}", printed)
        self.assertTrue((export_dir / "vocabulary.txt").is_file())
        return manifest


class AttentionTransformerNotebookTest(NotebookTestCase):
    NOTEBOOK = COLAB / "attention_transformer.ipynb"
    DATA = DATA / "sst2"
    DATA_FILES = ("train.tsv", "dev.tsv")
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

    def test_committed_without_outputs(self):
        self.check_committed_without_outputs()

    def test_runs_top_to_bottom_on_sst2(self):
        with tempfile.TemporaryDirectory() as folder:
            work_dir = Path(folder) / "work"
            printed = self.run_notebook(work_dir)

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
            self.check_tflite_export(work_dir / "export", printed)


class SequenceTaggerNotebookTest(NotebookTestCase):
    NOTEBOOK = COLAB / "sequence_tagger.ipynb"
    DATA = DATA / "conll2003"
    DATA_FILES = ("train.txt", "valid.txt")
    # The tagger's defaults are still tuned: every option of the tiny model is explicit.
    PARAMETERS = {
        "KERASATTN_NOTEBOOK_TRAIN_SENTENCES": "256",
        "KERASATTN_NOTEBOOK_VALID_SENTENCES": "128",
        "KERASATTN_NOTEBOOK_EPOCHS": "1",
        "KERASATTN_NOTEBOOK_RECIPE_OPTIONS": (
            "--word-dim 16 --character-filters 16 --max-word-length 16 --lstm-units 0 "
            "--layers 1 --hidden-dim 32 --heads 2 --intermediate-dim 32 "
            "--position-encoding sinusoidal --context-window 3 --head crf --batch-size 32 "
            "--warmup-steps 0 --precision float32 --verbose 2"
        ),
        "KERASATTN_NOTEBOOK_TENSORBOARD": "0",
    }

    def test_committed_without_outputs(self):
        self.check_committed_without_outputs()

    def test_runs_top_to_bottom_on_conll2003(self):
        with tempfile.TemporaryDirectory() as folder:
            work_dir = Path(folder) / "work"
            printed = self.run_notebook(work_dir)

            # The parameters made the data tiny: the first sentences of each file.
            self.assertRegex(printed, r"train\.txt: 256 sentences, \d+ tokens")
            self.assertRegex(printed, r"valid\.txt: 128 sentences, \d+ tokens")
            found = re.search(
                r"validation entity F1 (\d\.\d{4}) \(precision \d\.\d{4}, recall \d\.\d{4}\) "
                r"on 128 sentences", printed)
            self.assertIsNotNone(found, printed)
            f1 = float(found.group(1))
            self.assertBetween(f1, 0.0, 1.0)
            self.assertIn("after 1 epoch(s) (best epoch 1)", printed)
            reloaded = re.search(
                r"validation entity F1 of the reloaded preset (\d\.\d{4}) on 128 sentences",
                printed)
            self.assertIsNotNone(reloaded, printed)
            # The saved preset tags as the trained model did.
            self.assertAllClose(f1, float(reloaded.group(1)), atol=1e-4)
            # Each raw sentence is printed, followed by its entities (or none) with confidence.
            self.assertRegex(printed, r"Angela Merkel met Emmanuel Macron in Paris on Tuesday\.\n"
                                      r"    (\(no entities\)|[A-Z]+ '.+' \d\.\d\d)")
            if "conll2003" not in preset.shipped("zoo.sequence_tagger"):
                self.assertIn("This installation has no shipped conll2003 preset.", printed)

            self.check_tflite_export(work_dir / "export", printed)
            self.assertIn("TFLite float32 tags equal Keras's on 3 of 3 sentences", printed)
            scores = re.search(
                r"validation entity F1: Keras (\d\.\d{4}), TFLite float32 (\d\.\d{4}), "
                r"TFLite dynamic_int8 (\d\.\d{4})", printed)
            self.assertIsNotNone(scores, printed)
            keras_f1, float32_f1, int8_f1 = (float(value) for value in scores.groups())
            self.assertAllClose(f1, keras_f1, atol=1e-4)
            self.assertEqual(keras_f1, float32_f1)  # float32 TFLite tags as Keras does
            self.assertBetween(int8_f1, 0.0, 1.0)


class RecommenderNotebookTest(NotebookTestCase):
    NOTEBOOK = COLAB / "recommender.ipynb"
    # A file, not a folder: the notebook's DATA_FILE is the SASRec-format log itself.
    DATA = DATA / "sasrec" / "Video.txt"
    USERS = 2000
    PARAMETERS = {
        "KERASATTN_NOTEBOOK_USERS": str(USERS),
        "KERASATTN_NOTEBOOK_EPOCHS": "1",
        "KERASATTN_NOTEBOOK_RECIPE_OPTIONS": (
            "--hidden-dim 16 --layers 1 --max-length 20 --batch-size 128 --warmup-steps 0 "
            "--precision float32 --verbose 2"
        ),
        "KERASATTN_NOTEBOOK_TENSORBOARD": "0",
    }
    MAX_LENGTH = 20
    METRICS = (r"sampled HR@10 (\d\.\d{4}), NDCG@10 (\d\.\d{4}); full ranking HR@10 (\d\.\d{4}), "
               r"NDCG@10 (\d\.\d{4}) on ([\d,]+) users")

    def run_notebook(self, work_dir: Path) -> str:
        # DATA is a file, which the base class's check of DATA_FILES in a folder cannot name.
        if not self.DATA.is_file():
            message = f"{self.DATA}: expected a SASRec-format file, received: no such file"
            if os.environ.get("CI") == "true":
                self.fail(message)
            self.skipTest(message)
        return super().run_notebook(work_dir)

    def test_committed_without_outputs(self):
        self.check_committed_without_outputs()

    def test_runs_top_to_bottom_on_video_games(self):
        with tempfile.TemporaryDirectory() as folder:
            work_dir = Path(folder) / "work"
            printed = self.run_notebook(work_dir)

            # The parameter made the data tiny: every line of the first 2,000 users.
            data = re.search(rf"Video_first_{self.USERS}_users\.txt: {self.USERS:,} users, "
                             r"([\d,]+) items, ([\d,]+) interactions", printed)
            self.assertIsNotNone(data, printed)
            num_items = int(data.group(1).replace(",", ""))

            # Both protocols on validation and test, from metrics.json.
            scores = {}
            for split in ("valid", "test"):
                found = re.search(rf"^{split}: {self.METRICS}$", printed, re.MULTILINE)
                self.assertIsNotNone(found, printed)
                sampled_hr, sampled_ndcg, full_hr, full_ndcg = (
                    float(value) for value in found.groups()[:4])
                for value in (sampled_hr, sampled_ndcg, full_hr, full_ndcg):
                    self.assertBetween(value, 0.0, 1.0)
                self.assertLessEqual(sampled_ndcg, sampled_hr)
                self.assertLessEqual(full_ndcg, full_hr)
                self.assertLessEqual(full_hr, sampled_hr)  # 100 negatives rank easier than all
                self.assertBetween(int(found.group(5).replace(",", "")), 1, self.USERS)
                scores[split] = found.groups()
            self.assertIn(f"{self.USERS:,} users, {num_items:,} items", printed)
            self.assertIn("after 1 epoch(s) (best epoch 1)", printed)
            # The saved preset ranks validation as the trained model did.
            reloaded = re.search(rf"valid of the reloaded preset: {self.METRICS}", printed)
            self.assertIsNotNone(reloaded, printed)
            self.assertAllClose([float(v) for v in scores["valid"][:4]],
                                [float(v) for v in reloaded.groups()[:4]], atol=1e-4)
            self.assertEqual(scores["valid"][4], reloaded.group(5))

            # Three histories, each followed by its top 10, best first, none of its items.
            blocks = re.findall(
                r"^user (\S+): history of (\d+) items(?: \(the latest of \d+\))?, oldest first: "
                r"([^\n]*)\n((?:  +\d+\. \S+ +score +-?\d+\.\d{4}\n)+)", printed, re.MULTILINE)
            self.assertGreaterEqual(len(blocks), 3, printed)
            self.assertNotIn("(the latest of", printed)  # whole histories: all of each excluded
            for user, size, history, ranked in blocks[:3]:
                history = history.split()
                self.assertLen(history, int(size))
                self.assertBetween(len(history), 1, self.MAX_LENGTH)
                rows = re.findall(r"(\d+)\. (\S+) +score +(-?\d+\.\d{4})", ranked)
                self.assertEqual([str(rank) for rank in range(1, 11)], [r[0] for r in rows])
                items = [r[1] for r in rows]
                self.assertLen(set(items), 10)
                self.assertEmpty(set(items) & set(history), f"user {user}")
                values = [float(r[2]) for r in rows]
                self.assertEqual(sorted(values, reverse=True), values)
            self.assertIn("items of the history among the recommendations: 0 with "
                          "exclude_seen=True", printed)
            self.assertIn("recommend's scores equal score_all's at its items: True", printed)
            if "video-games" not in preset.shipped("zoo.recommender"):
                self.assertIn("This installation has no shipped video-games preset.", printed)

            # The export: a SavedModel, the TFLite and ONNX candidate scorer, the item map.
            export_dir = work_dir / "export"
            manifest = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
            self.assertEqual(num_items, manifest["num_items"])
            self.assertCountEqual(
                ["saved_model", "candidate_scorer_tflite_float32", "candidate_scorer_onnx"],
                manifest["artifacts"])
            self.assertTrue((export_dir / "saved_model" / "saved_model.pb").is_file())
            tflite_path = export_dir / "candidate_scorer" / "model_float32.tflite"
            self.assertEqual(b"TFL3", tflite_path.read_bytes()[4:8])  # a TFLite flatbuffer
            self.assertTrue((export_dir / "candidate_scorer" / "model.onnx").is_file())
            items = (export_dir / "items.txt").read_text(encoding="utf-8").splitlines()
            self.assertLen(items, num_items)
            self.assertIn("SavedModel recommend: the same top 10 as Keras on 3 of 3 histories",
                          printed)
            self.assertIn("padded like the preprocessor: True", printed)
            tflite = re.search(
                r"TFLite candidate scores (equal|DIFFER FROM) Keras's on 3 histories x 100 "
                r"candidates: max \|difference\| (\S+) \(tolerance (\S+)\); its top 10 equal "
                r"Keras's recommend on (\d) of 3 histories", printed)
            self.assertIsNotNone(tflite, printed)
            self.assertEqual("equal", tflite.group(1))
            self.assertLessEqual(float(tflite.group(2)), float(tflite.group(3)))
            self.assertEqual("3", tflite.group(4))
            self.assertIn(f"TFLite model: {tflite_path}", printed)


class TranslatorNotebookTest(NotebookTestCase):
    NOTEBOOK = COLAB / "translator.ipynb"
    DATA = DATA / "multi30k"
    DATA_FILES = ("train.en", "train.de", "val.en", "val.de")
    TRAIN_PAIRS = 200
    VALID_PAIRS = 20
    # Every option of the tiny model is explicit: the recipe derives its defaults from the data.
    PARAMETERS = {
        "KERASATTN_NOTEBOOK_TRAIN_PAIRS": str(TRAIN_PAIRS),
        "KERASATTN_NOTEBOOK_VALID_PAIRS": str(VALID_PAIRS),
        "KERASATTN_NOTEBOOK_EPOCHS": "1",
        "KERASATTN_NOTEBOOK_RECIPE_OPTIONS": (
            "--vocabulary-size 400 --sequence-length 32 --encoder-layers 1 --decoder-layers 1 "
            "--hidden-dim 32 --heads 2 --intermediate-dim 64 --batch-size 32 --warmup-steps 0 "
            "--precision float32 --verbose 2"
        ),
        # export_translator's conversions and checks alone outlast the time limit on busy
        # cores (tests/test_translator_export.py tests them): the SavedModel's signatures only.
        "KERASATTN_NOTEBOOK_EXPORT": "saved_model",
        "KERASATTN_NOTEBOOK_TENSORBOARD": "0",
    }
    SENTENCES = 3  # the sentences the notebook translates

    def test_committed_without_outputs(self):
        self.check_committed_without_outputs()

    def test_runs_top_to_bottom_on_multi30k(self):
        with tempfile.TemporaryDirectory() as folder:
            work_dir = Path(folder) / "work"
            printed = self.run_notebook(work_dir)

            # The parameters made the data tiny: the first pairs of each split, and val.tsv.
            self.assertRegex(printed, rf"train: {self.TRAIN_PAIRS} pairs, [\d,]+ English and "
                                      r"[\d,]+ German words")
            self.assertRegex(printed, rf"val: {self.VALID_PAIRS} pairs, ")
            validation = kdata.read_parallel_text(work_dir / "val.tsv")
            self.assertLen(validation.sources, self.VALID_PAIRS)

            # Greedy and beam scores of the restored epoch, from metrics.json.
            found = re.search(
                r"validation BLEU (\d+\.\d\d) greedy, (\d+\.\d\d) beam 4 \(chrF \d+\.\d\d and "
                rf"\d+\.\d\d; .*\) on {self.VALID_PAIRS} sentences", printed)
            self.assertIsNotNone(found, printed)
            greedy_bleu = float(found.group(1))
            for value in found.groups():
                self.assertBetween(float(value), 0.0, 100.0)
            self.assertIn("after 1 epoch(s) (best epoch 1)", printed)
            # The saved preset translates as the trained model did.
            reloaded = re.search(r"validation BLEU of the reloaded preset (\d+\.\d\d) greedy "
                                 rf"on {self.VALID_PAIRS} sentences", printed)
            self.assertIsNotNone(reloaded, printed)
            self.assertEqual(greedy_bleu, float(reloaded.group(1)))

            # Each sentence is printed with its greedy and beam translations: by the trained
            # model, then (where the installation has it) by the shipped preset.
            translated = re.findall(r"^(\S[^\n]*)\n    greedy: [^\n]*\n    beam 4: [^\n]*$",
                                    printed, re.MULTILINE)
            shipped = "multi30k-en-de" in preset.shipped("zoo.translator")
            self.assertLen(translated, self.SENTENCES * (2 if shipped else 1), printed)
            evaluated = re.search(r"^python -m zoo evaluate translator .*\n(\{.*\})$", printed,
                                  re.MULTILINE)
            self.assertIsNotNone(evaluated, printed)
            evaluation = json.loads(evaluated.group(1))
            self.assertEqual(self.VALID_PAIRS, evaluation["sentences"])
            self.assertEqual(4, evaluation["beam"])
            if shipped:
                self.assertIn("--preset multi30k-en-de", printed)
                # A trained model, not noise: the card's preset is near 35 on all of val.
                self.assertBetween(evaluation["bleu"], 15.0, 100.0)
            else:
                self.assertIn("This installation has no shipped multi30k-en-de preset.", printed)
                self.assertBetween(evaluation["bleu"], 0.0, 100.0)

            # The SavedModel (its string signatures alone), called on strings: Keras's output.
            export_dir = work_dir / "export"
            self.assertTrue((export_dir / "saved_model" / "saved_model.pb").is_file())
            self.assertIn(f"wrote {export_dir / 'saved_model'} (signatures: translate, "
                          "translate_greedy, serving_default)", printed)
            # The tiny model's --sequence-length is the longest translation.
            self.assertIn("beam 4, max length 32, length penalty 0.6", printed)
            self.assertRegex(
                printed, rf"SavedModel translate \(beam 4\): the same as Keras on \d of "
                         rf"{self.SENTENCES} sentences; translate_greedy: on {self.SENTENCES} of "
                         rf"{self.SENTENCES}")
