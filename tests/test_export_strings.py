"""kerasattn.export with a text preprocessor: a SavedModel served from raw strings."""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import onnxruntime
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from kerasattn import layers
from kerasattn.export import ExportError, export
from kerasattn.text import TextPreprocessor, load_vocabulary

VOCABULARY = [
    "[PAD]", "[UNK]", "the", "a", "movie", "film", "was", "is", "great", "bad", "not",
    "plot", "acting", "!", ".", ",", "##s", "##ly", "very", "good",
]
SEQUENCE_LENGTH = 16
SAMPLES = [
    "The movie was great!",
    "bad acting.",
    "a film, not a movie",
    "very very good plots",
    "!",
]
# Not seen in the export: unknown words, case, an empty string, more than 16 tokens.
UNSEEN = [
    "GREAT films, badly acted",
    "",
    "zebra",
    "the plot is good . the acting is bad . the film is not great , the movie is very bad !",
]


def preprocessor():
    return TextPreprocessor(VOCABULARY, sequence_length=SEQUENCE_LENGTH)


def masked_classifier():
    """token_ids and padding_mask inputs, the mask used by attention and pooling."""
    keras.utils.set_random_seed(7)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    x = keras.layers.Embedding(len(VOCABULARY), 16)(token_ids)
    x = layers.MultiHeadAttention(num_heads=2, key_dim=8)(
        x, x, query_mask=padding_mask, value_mask=padding_mask
    )
    x = layers.AttentionPooling(units=8)(x, mask=padding_mask)
    return keras.Model(
        [token_ids, padding_mask], keras.layers.Dense(3)(x), name="masked_classifier"
    )


def ids_classifier(name="token_ids"):
    """One id input; the padding mask comes from Embedding(mask_zero=True)."""
    keras.utils.set_random_seed(8)
    token_ids = keras.Input(shape=(None,), dtype="int32", name=name)
    x = keras.layers.Embedding(len(VOCABULARY), 16, mask_zero=True)(token_ids)
    x = layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = layers.AttentionPooling(units=8)(x)
    return keras.Model(token_ids, keras.layers.Dense(2)(x), name="ids_classifier")


def keras_on_strings(model, layer, strings):
    features = layer(strings)
    names = [tensor.name for tensor in model.inputs]
    return model([features[name] for name in names]).numpy()


class StringServingTest(tf.test.TestCase):
    """One export with a preprocessor to SavedModel, TFLite float32 and ONNX."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = masked_classifier()
        cls.preprocessor = preprocessor()
        cls.root = tempfile.mkdtemp()
        cls.out = os.path.join(cls.root, "exported")
        cls.manifest = export(
            cls.model, cls.out, preprocessor=cls.preprocessor, sample_inputs=SAMPLES, latency_runs=2
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)
        super().tearDownClass()

    def test_writes_the_vocabulary_beside_the_artifacts(self):
        self.assertCountEqual(
            [
                "saved_model",
                "model_float32.tflite",
                "model.onnx",
                "vocabulary.txt",
                "manifest.json",
            ],
            os.listdir(self.out),
        )
        self.assertEqual(["exported"], os.listdir(self.root))
        self.assertEqual(VOCABULARY, load_vocabulary(os.path.join(self.out, "vocabulary.txt")))
        with open(os.path.join(self.out, "manifest.json")) as file:
            self.assertEqual(json.loads(json.dumps(self.manifest)), json.load(file))

    def test_string_signature_matches_keras_on_unseen_strings(self):
        loaded = tf.saved_model.load(os.path.join(self.out, "saved_model"))
        self.assertCountEqual(["serving_default", "serving_ids"], loaded.signatures)
        served = loaded.signatures["serving_default"](text=tf.constant(UNSEEN))["output_0"].numpy()
        expected = keras_on_strings(self.model, self.preprocessor, UNSEEN)
        self.assertAllClose(expected, served, atol=1e-5)
        # The rows differ, so a preprocessor output fed to the wrong input would show.
        self.assertGreater(np.ptp(expected, axis=0).max(), 1e-3)
        features = self.preprocessor(UNSEEN)
        by_ids = loaded.signatures["serving_ids"](**features)["output_0"].numpy()
        self.assertAllClose(expected, by_ids, atol=1e-5)

    def test_string_check_is_in_the_manifest(self):
        artifact = self.manifest["artifacts"]["saved_model_strings"]
        self.assertEqual("saved_model", artifact["path"])
        self.assertEqual(
            {
                "name": "serving_default",
                "inputs": [{"name": "text", "shape": [None], "dtype": "string"}],
                "outputs": [{"name": "output_0", "shape": [None, 3], "dtype": "float32"}],
            },
            artifact["signature"],
        )
        self.assertEqual([{"text": [len(SAMPLES)]}], artifact["verified_input_shapes"])
        self.assertEqual(1e-4, artifact["tolerance"])
        self.assertLessEqual(artifact["max_abs_difference"], 1e-4)
        self.assertCountEqual(["batch_1", "batch_8"], artifact["latency_ms"])
        self.assertTrue(all(value > 0 for value in artifact["latency_ms"].values()))
        self.assertEqual(
            "serving_ids", self.manifest["artifacts"]["saved_model"]["signature"]["name"]
        )

    def test_preprocessing_entry(self):
        entry = self.manifest["preprocessing"]
        self.assertEqual("kerasattn.text.preprocessor.TextPreprocessor", entry["class"])
        self.assertNotIn("vocabulary", entry["config"])
        self.assertEqual(SEQUENCE_LENGTH, entry["config"]["sequence_length"])
        self.assertEqual("vocabulary.txt", entry["vocabulary_file"])
        self.assertEqual(len(VOCABULARY), entry["vocabulary_size"])
        self.assertEqual(SEQUENCE_LENGTH, entry["sequence_length"])
        self.assertTrue(entry["lower_case"])
        self.assertEqual(
            {"name": "text", "shape": [None], "dtype": "string"}, entry["string_input"]
        )
        self.assertEqual(
            ("serving_default", "serving_ids"), (entry["string_signature"], entry["id_signature"])
        )
        self.assertEqual(["saved_model_strings"], entry["takes_strings"])
        self.assertEqual(["saved_model", "tflite_float32", "onnx"], entry["takes_ids"])
        self.assertIn("FastWordpieceTokenizeWithOffsets", entry["saved_model_custom_ops"])

    def test_id_artifacts_take_the_preprocessors_ids(self):
        # Verified on the preprocessed samples, and a shorter cut of them.
        for name in ("saved_model", "tflite_float32", "onnx"):
            artifact = self.manifest["artifacts"][name]
            self.assertEqual(
                [{"name": "padding_mask", "shape": [None, None], "dtype": "bool"},
                 {"name": "token_ids", "shape": [None, None], "dtype": "int32"}],
                artifact["signature"]["inputs"],
                name,
            )
            self.assertEqual(
                [
                    {"token_ids": [5, 16], "padding_mask": [5, 16]},
                    {"token_ids": [5, 10], "padding_mask": [5, 10]},
                ],
                artifact["verified_input_shapes"],
                name,
            )
        features = {name: value.numpy() for name, value in self.preprocessor(UNSEEN).items()}
        expected = keras_on_strings(self.model, self.preprocessor, UNSEEN)

        interpreter = Interpreter(model_path=os.path.join(self.out, "model_float32.tflite"))
        runner = interpreter.get_signature_runner("serving_default")
        details = runner.get_input_details()
        self.assertEqual(
            {"token_ids": np.int32, "padding_mask": np.bool_},
            {k: d["dtype"] for k, d in details.items()},
        )
        self.assertAllClose(expected, runner(**features)["output_0"], atol=1e-5)

        session = onnxruntime.InferenceSession(
            os.path.join(self.out, "model.onnx"), providers=["CPUExecutionProvider"]
        )
        self.assertEqual(
            {"token_ids": "tensor(int32)", "padding_mask": "tensor(bool)"},
            {i.name: i.type for i in session.get_inputs()},
        )
        self.assertAllClose(expected, session.run(None, features)[0], atol=1e-5)


class StringCalibrationTest(tf.test.TestCase):
    def test_full_int8_tflite_only_calibrated_on_strings(self):
        # The model takes token_ids alone: the preprocessor's padding_mask is left out.
        model = ids_classifier()
        layer = preprocessor()
        texts = [
            f"{a} {b} was {c}"
            for a in ("the", "a")
            for b in ("movie", "film", "plot")
            for c in ("great", "bad", "not good")
        ]
        out = os.path.join(self.get_temp_dir(), "out")
        manifest = export(
            model, out, formats=("tflite",), quantize=("full_int8",), preprocessor=layer,
            sample_inputs=np.array(SAMPLES), representative_data=texts * 4, latency_runs=1,
        )
        self.assertCountEqual(
            ["model_full_int8.tflite", "vocabulary.txt", "manifest.json"], os.listdir(out)
        )
        artifact = manifest["artifacts"]["tflite_full_int8"]
        self.assertEqual(["token_ids"], [i["name"] for i in artifact["signature"]["inputs"]])
        self.assertLessEqual(artifact["max_abs_difference"], artifact["tolerance"])
        entry = manifest["preprocessing"]
        self.assertEqual(([], ["tflite_full_int8"]), (entry["takes_strings"], entry["takes_ids"]))
        self.assertIsNone(entry["string_signature"])
        self.assertEqual(VOCABULARY, load_vocabulary(os.path.join(out, "vocabulary.txt")))


class GraphOnlyUnknown(TextPreprocessor):
    """Eager calls match TextPreprocessor; traced ones turn every word into
    [UNK], so only a check of the traced string signature can tell."""

    def call(self, inputs):
        outputs = super().call(inputs)
        if not tf.executing_eagerly():
            outputs = dict(outputs, token_ids=tf.minimum(outputs["token_ids"], 1))
        return outputs


class TokenIdsOnly(TextPreprocessor):
    """A preprocessor returning one tensor."""

    def call(self, inputs):
        return super().call(inputs)["token_ids"]


class StringErrorTest(tf.test.TestCase):
    def assert_rejected(self, pattern, model, kind="argument", **kwargs):
        root = tempfile.mkdtemp(dir=self.get_temp_dir())
        with self.assertRaisesRegex(ExportError, pattern) as caught:
            export(model, os.path.join(root, "out"), latency_runs=1, **kwargs)
        self.assertEqual(kind, caught.exception.kind)
        self.assertEqual(1, len(str(caught.exception).splitlines()))
        self.assertEqual([], os.listdir(root))

    def test_rejects_bad_preprocessing_arguments(self):
        masked, ids = masked_classifier(), ids_classifier()
        cases = [
            (
                r"Expected the outputs of `preprocessor` to include every model input \['ids'\] by "
                r"name, received: outputs \['padding_mask', 'token_ids'\] \(none for \['ids'\]\)",
                dict(
                    model=ids_classifier(name="ids"),
                    preprocessor=preprocessor(),
                    sample_inputs=SAMPLES,
                ),
            ),
            (
                r"Expected `preprocessor` to return a dict keyed by the model inputs "
                r"\['token_ids', 'padding_mask'\], "
                r"received: one tensor of dtype int32 and shape \(5, 8\)",
                dict(
                    model=masked,
                    preprocessor=TokenIdsOnly(VOCABULARY, sequence_length=8),
                    sample_inputs=SAMPLES,
                ),
            ),
            (
                r"Expected `sample_inputs` to be raw strings \(a non-empty list or 1-D array of "
                r"str\) for `preprocessor`, received: an array of dtype int32 and shape \(2, 5\)",
                dict(
                    model=ids, preprocessor=preprocessor(), sample_inputs=np.ones((2, 5), "int32")
                ),
            ),
            (
                r"Expected `sample_inputs` to be raw strings .*, received: None",
                dict(model=ids, preprocessor=preprocessor()),
            ),
            (
                r"Expected `sample_inputs` strings of shape \(B,\), received: shape \(2, 1\)",
                dict(
                    model=ids, preprocessor=preprocessor(), sample_inputs=np.array([["a"], ["b"]])
                ),
            ),
            (
                r"Expected `preprocessor` \(a layer from strings to the model's inputs\) for the "
                r"strings of `sample_inputs`, received: preprocessor=None",
                dict(model=ids, sample_inputs=SAMPLES),
            ),
            (
                r"Expected `preprocessor` .* for the strings of `representative_data`, received: "
                r"preprocessor=None",
                dict(model=ids, quantize=("full_int8",), representative_data=SAMPLES),
            ),
            (
                r"Expected `preprocessor` to be a Keras layer .*, received: function",
                dict(model=ids, preprocessor=lambda text: text, sample_inputs=SAMPLES),
            ),
        ]
        for pattern, kwargs in cases:
            with self.subTest(pattern=pattern):
                self.assert_rejected(pattern, **kwargs)

    def test_rejects_preprocessor_outputs_of_the_wrong_dtype(self):
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="float32", name="padding_mask")
        x = keras.layers.Embedding(len(VOCABULARY), 4)(token_ids) * padding_mask[..., None]
        model = keras.Model([token_ids, padding_mask], keras.layers.GlobalAveragePooling1D()(x))
        self.assert_rejected(
            r"Expected `preprocessor\(sample_inputs\)` for input 'padding_mask' to have dtype "
            r"float32, received: dtype bool",
            model=model,
            preprocessor=preprocessor(),
            sample_inputs=SAMPLES,
        )

    def test_string_signature_that_differs_from_keras_fails(self):
        self.assert_rejected(
            r"saved_model_strings: output 'output_0' of saved_model differs from the Keras model "
            r"by .* on inputs of shape \{'text': \[5\]\}",
            model=ids_classifier(),
            kind="verification",
            formats=("saved_model",),
            preprocessor=GraphOnlyUnknown(VOCABULARY, sequence_length=SEQUENCE_LENGTH),
            sample_inputs=SAMPLES,
        )
