"""`zoo.translator.export`: the translator's SavedModel, TFLite and ONNX, checked against Keras."""

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasattn import data as kdata
from kerasattn.export import ExportError
from kerasattn.export import LiteRTRuntime
from tests.test_attention_transformer import run_cli
from tests.test_translator import pairs
from tests.test_translator import tiny_translator
from zoo.translator.export import OnnxGreedyDecoder
from zoo.translator.export import export_translator
from zoo.translator.export import measure_parity
from zoo.translator.preprocessor import END_ID
from zoo.translator.preprocessor import START_ID

BEAM = 3
MAX_LENGTH = 10


def write_tsv(path: str, text: kdata.ParallelText) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write("source\ttarget\n")
        file.writelines(f"{s}\t{t}\n" for s, t in zip(text.sources, text.targets))


class TranslatorExportTest(tf.test.TestCase):
    """One tiny translator, trained a few steps on a fixture of 48 pairs, exported once by
    `python -m zoo export` with a validation file; the tests read that folder."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(5)
        cls.model = tiny_translator(source_sequence_length=24, target_sequence_length=24)
        cls.model.compile(optimizer=keras.optimizers.Adam(1e-2))
        train = pairs(48)
        cls.model.fit(train.sources, train.targets, batch_size=16, epochs=15, verbose=0)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.val = pairs(12, seed=2)
        cls.val_file = os.path.join(cls.tmp.name, "val.tsv")
        write_tsv(cls.val_file, cls.val)
        path = os.path.join(cls.tmp.name, "model.keras")
        cls.model.save(path)
        cls.out = os.path.join(cls.tmp.name, "exported")
        cls.cli = run_cli(["export", path, "--out", cls.out, "--beam", str(BEAM), "--max-length",
                           str(MAX_LENGTH), "--data", cls.val_file, "--latency-runs", "2"])
        assert cls.cli[0] == 0, cls.cli[2]
        with open(os.path.join(cls.out, "manifest.json"), encoding="utf-8") as file:
            cls.manifest = json.load(file)
        cls.features = cls.model.preprocessor(["A dog sleeps.", "The cat eats in the park."])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

    def source(self):
        return {"source_ids": self.features["encoder_token_ids"].numpy(),
                "source_padding_mask": self.features["encoder_padding_mask"].numpy()}

    def keras_ids(self, beam):
        return self.model.generate(*self.source().values(), beam=beam,
                                   max_length=MAX_LENGTH + 1).numpy()

    def test_cli_summary(self):
        code, stdout, stderr = self.cli
        self.assertEqual(0, code, stderr)
        self.assertIn(f"(beam {BEAM}, max length {MAX_LENGTH})", stdout)
        self.assertRegex(stdout, r"parity on 12 pairs of --data: saved_model greedy 1\.0")

    def test_every_artifact_greedy_equals_keras(self):
        want = self.keras_ids(1)
        # The model learned something: some rows end before the maximum length.
        self.assertTrue(np.any(want == END_ID))
        tflite = LiteRTRuntime(os.path.join(self.out, "translator_greedy.tflite"))
        self.assertAllEqual(want, tflite.run(self.source())["target_ids"])
        onnx = OnnxGreedyDecoder(os.path.join(self.out, "encoder.onnx"),
                                 os.path.join(self.out, "decoder_step.onnx"))
        self.assertAllEqual(want, onnx.generate(*self.source().values(), MAX_LENGTH + 1))
        served = tf.saved_model.load(os.path.join(self.out, "saved_model"))
        self.assertAllEqual(want, served.signatures["generate_ids_greedy"](
            **self.source())["target_ids"])
        for data in (self.manifest["parity_on_data"], self.manifest["parity"] | {
                "artifacts": {k: a["parity"] for k, a in self.manifest["artifacts"].items()}}):
            for name, entry in data["artifacts"].items():
                if "greedy_identical" in entry:
                    with self.subTest(name):
                        self.assertEqual(1.0, entry["greedy_identical_fraction"])

    def test_beam_parity(self):
        want = self.keras_ids(BEAM)
        tflite = LiteRTRuntime(os.path.join(self.out, "translator_beam.tflite"))
        self.assertAllEqual(want, tflite.run(self.source())["target_ids"])
        served = tf.saved_model.load(os.path.join(self.out, "saved_model"))
        self.assertAllEqual(want, served.signatures["generate_ids"](**self.source())["target_ids"])
        texts = self.val.sources[:4]
        translations = served.signatures["translate"](texts=tf.constant(texts))["translations"]
        self.assertEqual(self.model.translate(texts, beam=BEAM, max_length=MAX_LENGTH),
                         [text.decode("utf-8") for text in translations.numpy()])
        data = self.manifest["parity_on_data"]
        self.assertEqual({"greedy_bleu", "beam_bleu"}, set(data["keras"]))
        for name in ("saved_model", "tflite"):
            self.assertLessEqual(data["artifacts"][name]["beam_bleu_difference"], 0.1)

    def test_manifest_contents(self):
        manifest = self.manifest
        self.assertEqual((BEAM, MAX_LENGTH, 0.6), (manifest["beam"], manifest["max_length"],
                                                   manifest["length_penalty"]))
        self.assertEqual({"saved_model", "tflite_greedy", "tflite_beam", "onnx"},
                         set(manifest["artifacts"]))
        self.assertEqual({"pad": 0, "unk": 1, "start": START_ID, "end": END_ID},
                         manifest["special_ids"])
        self.assertIn("do not convert to TFLite built-in ops", manifest["strings"])
        with open(os.path.join(self.out, manifest["sentencepiece"]["source"]), "rb") as file:
            self.assertEqual(self.model.preprocessor.source_tokenizer.model, file.read())
        saved = manifest["artifacts"]["saved_model"]
        self.assertEqual({"translate", "translate_greedy", "generate_ids", "generate_ids_greedy",
                          "encode", "decode_step", "serving_default"}, set(saved["signatures"]))
        self.assertEqual([{"name": "texts", "shape": [None], "dtype": "string"}],
                         saved["signatures"]["translate"]["inputs"])
        for name, entry in manifest["artifacts"].items():
            with self.subTest(name):
                paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
                self.assertTrue(all(os.path.exists(os.path.join(self.out, p)) for p in paths))
                self.assertGreater(entry["size_bytes"], 0)
                self.assertEqual("strings" if name == "saved_model" else "ids", entry["takes"])
        tflite = manifest["artifacts"]["tflite_beam"]["signature"]
        self.assertEqual(["source_ids", "source_padding_mask"],
                         [i["name"] for i in tflite["inputs"]])
        self.assertEqual([None, None], tflite["inputs"][0]["shape"])  # batch and length dynamic
        self.assertEqual([{"name": "target_ids", "shape": [None, MAX_LENGTH + 1],
                           "dtype": "int32"}], tflite["outputs"])
        self.assertIn("batch_1", manifest["artifacts"]["onnx"]["latency_ms"])
        # The SavedModel holds each weight once and no optimizer state (Adam's would triple
        # it), beside the checkpoint's object graph.
        folder = os.path.join(self.out, "saved_model", "variables")
        stored = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
                     if name.startswith("variables.data"))
        weights = sum(int(np.prod(weight.shape)) * 4 for weight in self.model.weights)
        self.assertBetween(stored, weights, 2 * weights)

    def test_bad_inputs_are_defined_results(self):
        translate = tf.saved_model.load(os.path.join(self.out, "saved_model")).signatures[
            "translate"]
        texts = [b"", b"   ", " ".join(["dog"] * 2000).encode(), b"A dog \xff runs."]
        outputs = translate(texts=tf.constant(texts))["translations"].numpy()
        self.assertEqual([b"", b""], list(outputs[:2]))
        self.assertEqual(self.model.translate([texts[3]], beam=BEAM, max_length=MAX_LENGTH)[0],
                         outputs[3].decode("utf-8"))
        self.assertEqual({"empty", "2000_tokens", "not_utf8"},
                         set(self.manifest["artifacts"]["saved_model"]["bad_inputs"]))
        # A source of padding alone decodes, in every ids artifact.
        empty = {"source_ids": np.zeros((1, 3), np.int32),
                 "source_padding_mask": np.zeros((1, 3), bool)}
        tflite = LiteRTRuntime(os.path.join(self.out, "translator_greedy.tflite"))
        self.assertEqual(START_ID, tflite.run(empty)["target_ids"][0, 0])

    def test_measure_parity_on_a_file(self):
        val = kdata.read_parallel_text(self.val_file)
        numbers = measure_parity(self.out, self.model, val.sources[:5], val.targets[:5],
                                 batch_size=2)
        self.assertEqual(5, numbers["sentences"])
        self.assertEqual({"saved_model", "tflite", "onnx"}, set(numbers["artifacts"]))
        self.assertEqual(5, numbers["artifacts"]["onnx"]["greedy_identical"])
        saved = numbers["artifacts"]["saved_model"]
        self.assertEqual((5, 5), (saved["greedy_strings_identical"], saved["greedy_identical"]))
        self.assertNotIn("beam_bleu", numbers["artifacts"]["onnx"])

    def test_bad_arguments(self):
        for arguments, message in (
            (dict(beam=0), "`beam`"),
            (dict(sample_texts=["A dog.", ""]), "`sample_texts`"),
            (dict(length_penalty=-1.0), "`length_penalty`"),
        ):
            with self.subTest(**arguments), self.assertRaisesRegex(ExportError, message):
                export_translator(self.model, os.path.join(self.tmp.name, "bad"), **arguments)
        with self.assertRaisesRegex(ExportError, "not to exist"):
            export_translator(self.model, self.out)
        code, _, stderr = run_cli(["export", os.path.join(self.tmp.name, "model.keras"), "--out",
                                   os.path.join(self.tmp.name, "q"), "--quantize", "float16"])
        self.assertEqual(2, code)
        self.assertIn("float32", stderr)
