"""kerasattn.export: every format and mode written, reloaded, and checked independently."""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import onnxruntime
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType
from keras import ops

from kerasattn import layers
from kerasattn.export import DEFAULT_TOLERANCES, ExportError, export

VOCABULARY = 64
MODES = ("float32", "float16", "dynamic_int8", "full_int8")
TFLITE = {f"tflite_{mode}": f"model_{mode}.tflite" for mode in MODES}


def token_ids(rng, batch, length):
    """Ids in [1, VOCABULARY) with row r padded (0) over its last r % length steps."""
    ids = rng.integers(1, VOCABULARY, (batch, length)).astype("int32")
    for row in range(batch):
        ids[row, length - row % length :] = 0
    return ids


def classifier():
    """Embedding(mask_zero) → causal MultiHeadAttention → AttentionPooling → Dense.

    Widths of 32 give weights of 1024+ elements, which the converter
    quantizes in "dynamic_int8" (it keeps smaller ones in float32).
    """
    keras.utils.set_random_seed(3)
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, 32, mask_zero=True)(tokens)
    x = layers.MultiHeadAttention(num_heads=2, key_dim=16, name="attention")(
        x, x, use_causal_mask=True
    )
    x = layers.AttentionPooling(units=16, name="pooling")(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="logits")(x), name="classifier")


def run_tflite(path, inputs):
    """Runs a .tflite file in the LiteRT interpreter, resizing its inputs."""
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    details, outputs = runner.get_input_details(), runner.get_output_details()
    del runner  # it holds the interpreter, which then refuses to reallocate
    for name, array in inputs.items():
        interpreter.resize_tensor_input(details[name]["index"], array.shape, strict=True)
    interpreter.allocate_tensors()
    for name, array in inputs.items():
        interpreter.set_tensor(details[name]["index"], array)
    interpreter.invoke()
    return {name: interpreter.get_tensor(d["index"]) for name, d in outputs.items()}


def run_onnx(path, inputs):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


class ExportAllFormatsTest(tf.test.TestCase):
    """One export of the classifier to every format and mode, shared by the tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = classifier()
        rng = np.random.default_rng(0)
        cls.sample = token_ids(rng, 4, 9)
        # Calibration at several lengths, as a list of input structures.
        cls.representative = [{"tokens": token_ids(rng, 2, length)} for length in (3, 6, 9, 12) * 8]
        cls.root = tempfile.mkdtemp()
        cls.out = os.path.join(cls.root, "exported")
        cls.manifest = export(
            cls.model,
            cls.out,
            quantize=MODES,
            sample_inputs=cls.sample,
            representative_data=cls.representative,
            latency_runs=3,
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)
        super().tearDownClass()

    def artifacts(self):
        return self.manifest["artifacts"]

    def test_writes_every_artifact_and_the_manifest(self):
        self.assertCountEqual(
            ["saved_model", "model.onnx", "manifest.json", *TFLITE.values()], os.listdir(self.out)
        )
        self.assertEqual(["exported"], os.listdir(self.root))  # no temporary folder left
        self.assertCountEqual(["saved_model", "onnx", *TFLITE], self.artifacts())
        with open(os.path.join(self.out, "manifest.json")) as file:
            self.assertEqual(json.loads(json.dumps(self.manifest)), json.load(file))
        for name, path in TFLITE.items():
            self.assertEqual(path, self.artifacts()[name]["path"])
        self.assertEqual("given", self.manifest["sample_inputs"])

    def test_sizes_are_the_files_sizes(self):
        for artifact in self.artifacts().values():
            path = os.path.join(self.out, artifact["path"])
            if os.path.isdir(path):
                size = sum(
                    os.path.getsize(os.path.join(folder, name))
                    for folder, _, names in os.walk(path)
                    for name in names
                )
            else:
                size = os.path.getsize(path)
            self.assertEqual(size, artifact["size_bytes"], artifact["path"])
        sizes = {name: self.artifacts()[name]["size_bytes"] for name in TFLITE}
        # Quantized weights make smaller files.
        self.assertLess(sizes["tflite_float16"], sizes["tflite_float32"])
        self.assertLess(sizes["tflite_dynamic_int8"], sizes["tflite_float16"])
        # Full int8 is converted from a graph with the bounded masked softmax
        # (more ops than the others'), so on a model this small it is only
        # compared with float32.
        self.assertLess(sizes["tflite_full_int8"], sizes["tflite_float32"])

    def test_differences_are_within_the_default_tolerances(self):
        for name, artifact in self.artifacts().items():
            key = artifact["quantization"] if artifact["format"] == "tflite" else name
            self.assertEqual(DEFAULT_TOLERANCES[key], artifact["tolerance"])
            self.assertLessEqual(artifact["max_abs_difference"], artifact["tolerance"], name)
            self.assertEqual(["output_0"], list(artifact["max_abs_difference_per_output"]))
        # Quantization does change the numbers: the check is not comparing Keras with itself.
        self.assertGreater(self.artifacts()["tflite_dynamic_int8"]["max_abs_difference"], 1e-6)
        self.assertGreater(self.artifacts()["tflite_full_int8"]["max_abs_difference"], 1e-6)

    def test_reported_differences_match_an_independent_run(self):
        expected = self.model(self.sample).numpy()
        runs = {
            name: run_tflite(os.path.join(self.out, path), {"tokens": self.sample})
            for name, path in TFLITE.items()
        }
        runs["onnx"] = run_onnx(os.path.join(self.out, "model.onnx"), {"tokens": self.sample})
        loaded = tf.saved_model.load(os.path.join(self.out, "saved_model"))
        runs["saved_model"] = loaded.signatures["serving_default"](tokens=tf.constant(self.sample))
        for name, outputs in runs.items():
            difference = float(
                np.max(np.abs(np.asarray(outputs["output_0"], np.float64) - expected))
            )
            reported = self.artifacts()[name]["max_abs_difference_per_output"]["output_0"]
            # The manifest's maximum also covers the shorter second sample.
            self.assertLessEqual(difference, reported + 1e-12, name)

    def test_signatures_have_dynamic_batch_and_sequence(self):
        for name, artifact in self.artifacts().items():
            signature = artifact["signature"]
            self.assertEqual("serving_default", signature["name"])
            self.assertEqual(
                [{"name": "tokens", "shape": [None, None], "dtype": "int32"}],
                signature["inputs"],
                name,
            )
            self.assertEqual(["output_0"], [output["name"] for output in signature["outputs"]])
            self.assertIsNone(signature["outputs"][0]["shape"][0], name)
            self.assertIsNone(artifact["fixed_sequence_length"])
            self.assertEqual(
                [{"tokens": [4, 9]}, {"tokens": [4, 5]}], artifact["verified_input_shapes"], name
            )

    def test_runs_at_lengths_never_verified(self):
        rng = np.random.default_rng(1)
        for length in (2, 17):
            ids = token_ids(rng, 3, length)
            expected = self.model(ids).numpy()
            got = run_tflite(os.path.join(self.out, "model_float32.tflite"), {"tokens": ids})[
                "output_0"
            ]
            self.assertAllClose(expected, got, atol=1e-4)
            got = run_onnx(os.path.join(self.out, "model.onnx"), {"tokens": ids})["output_0"]
            self.assertAllClose(expected, got, atol=1e-4)

    def test_full_int8_computes_in_int8(self):
        interpreter = Interpreter(model_path=os.path.join(self.out, "model_full_int8.tflite"))
        dtypes = [details["dtype"] for details in interpreter.get_tensor_details()]
        self.assertGreater(dtypes.count(np.int8), 10)
        self.assertNotIn(np.float16, dtypes)
        # The interface stays int32 ids in, float32 out.
        inputs = interpreter.get_signature_runner("serving_default").get_input_details()
        self.assertEqual(np.int32, inputs["tokens"]["dtype"])

    def test_latency_is_recorded(self):
        for name, artifact in self.artifacts().items():
            self.assertCountEqual(["batch_1", "batch_8"], artifact["latency_ms"])
            for value in artifact["latency_ms"].values():
                self.assertGreater(value, 0.0)
            self.assertEqual(3, artifact["latency_runs"])
            if name != "saved_model":
                self.assertEqual(1, artifact["latency_threads"])
        self.assertEqual(
            {"batch_1": {"tokens": [1, 9]}, "batch_8": {"tokens": [8, 9]}},
            self.manifest["latency"]["input_shapes"],
        )


def tflite_ops(path):
    """The builtin op names of a .tflite file's graph, in order."""
    interpreter = Interpreter(model_path=path, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    return [op["op_name"] for op in interpreter._get_ops_details()]


class GraphWorkTest(tf.test.TestCase):
    def test_flops_count_the_matrix_products_of_the_batch_1_example(self):
        # Dense(4 -> 3) then Dense(3 -> 2): 2 * (4 * 3 + 3 * 2) = 36 FLOPs per example;
        # the batch-1 latency's example is one row.
        inputs = keras.Input(shape=(4,), name="x")
        outputs = keras.layers.Dense(2)(keras.layers.Dense(3, activation="relu")(inputs))
        out = os.path.join(self.get_temp_dir(), "dense")
        manifest = export(keras.Model(inputs, outputs), out, formats=("tflite", "onnx"),
                          quantize=("float32",), sample_inputs=np.ones((3, 4), "float32"),
                          latency_runs=3)
        tflite = manifest["artifacts"]["tflite_float32"]
        self.assertEqual(36, tflite["flops_per_example"])
        self.assertEqual(2, tflite["ops"])
        self.assertGreater(tflite["gflops_per_second_batch_1"], 0)
        self.assertNotIn("flops_per_example", manifest["artifacts"]["onnx"])


class LeanGraphTest(tf.test.TestCase):
    """What keeps a dynamic-length float32 graph inside LiteRT's XNNPACK delegate."""

    def test_no_op_of_runtime_shape_and_bounded_softmax_only_in_full_int8(self):
        # Learned, sinusoidal and rotary positions, a causal and a sliding-window
        # attention, cross-layer fusion: each once counted its positions with
        # RANGE or sliced by a computed size, ops whose output shape LiteRT
        # learns only when it runs (every later op then runs without XNNPACK).
        keras.utils.set_random_seed(4)
        tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(VOCABULARY, 32, mask_zero=True)(tokens)
        x = x + layers.PositionEmbedding(16)(x) + layers.SinusoidalPositionEncoding()(x)
        x = layers.RotaryEmbedding()(x)
        first = layers.MultiHeadAttention(2, 16, name="causal")(x, x, use_causal_mask=True)
        second = layers.MultiHeadAttention(2, 16, sliding_window=2, name="window")(first, first)
        x = layers.CrossLayerAttention(name="fusion")([first, second])
        model = keras.Model(tokens, layers.AttentionPooling(units=8)(x))
        rng = np.random.default_rng(1)
        out = os.path.join(self.get_temp_dir(), "lean")
        export(model, out, formats=("tflite",), quantize=("float32", "full_int8"),
               sample_inputs=token_ids(rng, 4, 9),
               representative_data=[{"tokens": token_ids(rng, 2, 9)} for _ in range(8)])
        float32 = tflite_ops(os.path.join(out, "model_float32.tflite"))
        # REDUCE_PROD: the run-time shape arithmetic of Keras's tensordot
        # (the pooling and fusion projections), traced as einsums for export.
        # LOGICAL_AND: LiteRT's reference kernel took 10 µs per 64 x 64 mask.
        for op in ("RANGE", "SLICE", "BROADCAST_TO", "REDUCE_MIN", "REDUCE_PROD", "LOGICAL_AND"):
            self.assertNotIn(op, float32)
        self.assertEqual(4, float32.count("SOFTMAX"))  # two attentions, fusion, pooling
        # The bounded masked softmax (no -1e9 in any tensor) is full int8's alone,
        # and runs the fused SOFTMAX: no division and no broadcast of run-time
        # shape, which left the int8 graph 10x slower than float32.
        full_int8 = tflite_ops(os.path.join(out, "model_full_int8.tflite"))
        self.assertIn("REDUCE_MIN", full_int8)
        self.assertEqual(4, full_int8.count("SOFTMAX"))
        for op in ("DIV", "BROADCAST_TO", "RANGE"):
            self.assertNotIn(op, full_int8)


    def test_self_attention_projects_by_fully_connected_and_counts_positions_once(self):
        # Each projection is one FULLY_CONNECTED (no shape arithmetic around
        # a BATCH_MATMUL), its bias fused. The causal mask is built from the layer's input,
        # one tensor in self-attention: its positions are counted (CUMSUM)
        # once, not once for the queries and once for the keys.
        keras.utils.set_random_seed(5)
        x = keras.Input((None, 8))
        plain, causal = layers.MultiHeadAttention(2, 4), layers.MultiHeadAttention(2, 4)
        model = keras.Model(x, [plain(x, x), causal(x, x, use_causal_mask=True)])
        out = os.path.join(self.get_temp_dir(), "self_attention")
        export(model, out, formats=("tflite",), quantize=("float32",),
               sample_inputs=np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32"))
        ops = tflite_ops(os.path.join(out, "model_float32.tflite"))
        self.assertEqual(8, ops.count("FULLY_CONNECTED"))  # 3 projections and the output, twice
        self.assertEqual(4, ops.count("BATCH_MATMUL"))  # the two attention products, twice
        self.assertEqual(1, ops.count("CUMSUM"))
        # The biases and the keys' scale are folded into the products: the one
        # ADD and MUL left are the causal mask's bias and its rows' mask.
        self.assertEqual(1, ops.count("ADD"))
        self.assertEqual(1, ops.count("MUL"))


class ExportGraphFormTest(tf.test.TestCase):
    def test_dense_projections_trace_an_einsum_with_the_same_values(self):
        from kerasattn.layers._dense import Dense
        from kerasattn.ops.tracing import export_graph

        keras.utils.set_random_seed(3)
        layer = Dense(5, activation="gelu")
        anchor = keras.layers.Dense(5, activation="gelu")
        x = np.random.default_rng(0).normal(size=(2, 3, 4, 6)).astype("float32")
        anchor.build(x.shape)
        layer.build(x.shape)
        layer.set_weights(anchor.get_weights())

        def ops_of(function):
            graph = tf.function(function).get_concrete_function(
                tf.TensorSpec((None, None, 4, 6))).graph
            return {op.type for op in graph.get_operations()}

        self.assertIn("Prod", ops_of(layer))  # Keras's tensordot, for training
        with export_graph():
            traced = ops_of(layer)
            self.assertAllClose(anchor(x), layer(x), atol=1e-6)
        self.assertIn("Einsum", traced)
        self.assertNotIn("Prod", traced)
        self.assertAllClose(anchor(x[0, 0]), layer(x[0, 0]))  # rank 2: Keras's matmul


class MultiOutputTest(tf.test.TestCase):
    def test_every_output_of_a_two_input_two_output_model_is_checked(self):
        keras.utils.set_random_seed(4)
        source = keras.Input(shape=(None,), dtype="int32", name="source")
        target = keras.Input(shape=(None,), dtype="int32", name="target")
        embedding = keras.layers.Embedding(VOCABULARY, 16, mask_zero=True)
        encoded = layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16)(
            embedding(source)
        )
        decoded, scores = layers.MultiHeadAttention(num_heads=2, key_dim=8)(
            embedding(target), encoded, return_attention_scores=True
        )
        logits = keras.layers.Dense(5)(decoded)
        model = keras.Model([source, target], [logits, scores])
        rng = np.random.default_rng(2)
        # A list of arrays in input order; source and target lengths differ.
        sample = [token_ids(rng, 3, 7), token_ids(rng, 3, 4)]
        out = os.path.join(self.get_temp_dir(), "two_outputs")
        manifest = export(model, out, sample_inputs=sample, latency_runs=2)

        expected = [t.numpy() for t in model(sample)]
        for name, artifact in manifest["artifacts"].items():
            self.assertCountEqual(
                ["output_0", "output_1"], artifact["max_abs_difference_per_output"], name
            )
            outputs = artifact["signature"]["outputs"]
            self.assertEqual(["output_0", "output_1"], [output["name"] for output in outputs], name)
            if name != "onnx":  # tf2onnx does not always keep static output dims
                self.assertEqual(
                    [[None, None, 5], [None, 2, None, None]], [o["shape"] for o in outputs], name
                )
            self.assertEqual(
                [{"source": [3, 7], "target": [3, 4]}, {"source": [3, 4], "target": [3, 2]}],
                artifact["verified_input_shapes"],
            )
        got = run_onnx(os.path.join(out, "model.onnx"), {"source": sample[0], "target": sample[1]})
        self.assertAllClose(expected[1], got["output_1"], atol=1e-5)
        got = run_tflite(
            os.path.join(out, "model_float32.tflite"), {"source": sample[0], "target": sample[1]}
        )
        self.assertAllClose(expected[0], got["output_0"], atol=1e-4)
        self.assertAllClose(expected[1], got["output_1"], atol=1e-4)


@keras.saving.register_keras_serializable(package="kerasattn_tests")
class PadGate(keras.layers.Layer):
    """Zeroes padded steps through `mask[..., None]` on a bool tensor: TFLite's
    built-in slicing rejects that with a dynamic length, not with a fixed one."""

    def call(self, x, tokens):
        keep = ops.not_equal(tokens, 0)[..., None]
        return ops.where(keep, x, 0.0)


def gated_model():
    keras.utils.set_random_seed(5)
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, 8)(tokens)
    x = PadGate(name="gate")(x, tokens)
    return keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(x), name="gated")


class ExactGeluTest(tf.test.TestCase):
    def test_exact_gelu_exports_to_onnx(self):
        # TensorFlow lowers exact GELU to Erfc, which ONNX lacks; export maps
        # it to 1 - Erf.
        tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(VOCABULARY, 8)(tokens)
        x = layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16, activation="gelu")(x)
        model = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(x))
        out = os.path.join(self.get_temp_dir(), "out")
        manifest = export(model, out, formats=("onnx",), latency_runs=1)
        self.assertLessEqual(manifest["artifacts"]["onnx"]["max_abs_difference"], 1e-4)


class ConversionFailureTest(tf.test.TestCase):
    def test_unsupported_op_names_the_op_and_the_layer(self):
        root = self.get_temp_dir()
        with self.assertRaisesRegex(
            ExportError, r"StridedSlice.*layer 'gate' \(PadGate\).*sequence_length"
        ) as caught:
            export(gated_model(), os.path.join(root, "out"), formats=("tflite",))
        self.assertEqual("conversion", caught.exception.kind)
        self.assertEqual(1, len(str(caught.exception).splitlines()))
        self.assertEqual([], os.listdir(root))

    def test_fixed_sequence_length_is_the_fallback(self):
        out = os.path.join(self.get_temp_dir(), "out")
        manifest = export(
            gated_model(), out, formats=("tflite", "onnx"), sequence_length=6, latency_runs=2
        )
        tflite = manifest["artifacts"]["tflite_float32"]
        self.assertEqual(6, tflite["fixed_sequence_length"])
        self.assertEqual([None, 6], tflite["signature"]["inputs"][0]["shape"])
        self.assertEqual([{"tokens": [4, 6]}, {"tokens": [4, 6]}], tflite["verified_input_shapes"])
        # ONNX has no such problem and keeps the dynamic length.
        self.assertIsNone(manifest["artifacts"]["onnx"]["fixed_sequence_length"])
        self.assertEqual(
            [None, None], manifest["artifacts"]["onnx"]["signature"]["inputs"][0]["shape"]
        )


class AtomicityTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.model = classifier()
        self.root = self.get_temp_dir()
        self.out = os.path.join(self.root, "out")

    def fail_float16(self, **kwargs):
        # float16 differs from Keras by ~1e-5, far above this tolerance.
        with self.assertRaisesRegex(
            ExportError,
            r"tflite_float16: output 'output_0' of model_float16\.tflite differs .*\(tolerance "
            r"1e-12 x ",
        ) as caught:
            export(
                self.model,
                self.out,
                formats=("saved_model", "tflite"),
                quantize=("float32", "float16"),
                tolerances={"float16": 1e-12},
                latency_runs=1,
                **kwargs,
            )
        self.assertEqual("verification", caught.exception.kind)

    def test_failed_check_leaves_nothing(self):
        self.fail_float16()
        self.assertEqual([], os.listdir(self.root))

    def previous_export(self):
        os.makedirs(self.out)
        with open(os.path.join(self.out, "manifest.json"), "w") as file:
            file.write("{}")

    def test_failed_check_keeps_the_previous_export(self):
        self.previous_export()
        self.fail_float16(overwrite=True)
        self.assertEqual(["out"], os.listdir(self.root))
        self.assertEqual(["manifest.json"], os.listdir(self.out))

    def test_existing_folder_needs_overwrite(self):
        os.makedirs(self.out)
        with self.assertRaisesRegex(
            ExportError, r"Expected `out_dir` not to exist \(or overwrite=True\)"
        ):
            export(self.model, self.out, formats=("saved_model",))
        self.assertEqual([], os.listdir(self.out))

    def test_overwrite_replaces_a_previous_export(self):
        self.previous_export()
        export(self.model, self.out, formats=("saved_model",), latency_runs=1, overwrite=True)
        self.assertCountEqual(["saved_model", "manifest.json"], os.listdir(self.out))
        with open(os.path.join(self.out, "manifest.json")) as file:
            self.assertIn("saved_model", json.load(file)["artifacts"])
        self.assertEqual(["out"], os.listdir(self.root))

    def test_overwrite_refuses_a_folder_that_is_not_an_export(self):
        os.makedirs(self.out)
        with open(os.path.join(self.out, "notes.txt"), "w") as file:
            file.write("mine")
        with self.assertRaisesRegex(
            ExportError, r"Expected `out_dir` to be empty or a previous export"
        ):
            export(self.model, self.out, formats=("saved_model",), overwrite=True)
        self.assertEqual(["notes.txt"], os.listdir(self.out))

    def test_saved_model_is_scratch_when_not_requested(self):
        export(self.model, self.out, formats=("onnx",), latency_runs=1)
        self.assertCountEqual(["model.onnx", "manifest.json"], os.listdir(self.out))


class ArgumentErrorTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = classifier()

    def assert_rejected(self, pattern, **kwargs):
        root = tempfile.mkdtemp(dir=self.get_temp_dir())
        arguments = dict(model=self.model, out_dir=os.path.join(root, "out"))
        arguments.update(kwargs)
        with self.assertRaisesRegex(ExportError, pattern) as caught:
            export(**arguments)
        self.assertEqual("argument", caught.exception.kind)
        self.assertIsInstance(caught.exception, ValueError)
        self.assertEqual([], os.listdir(root))

    def test_rejects_bad_arguments(self):
        ids = np.ones((2, 5), "int32")
        cases = [
            (r"Expected `model` to be a keras.Model, received: str", dict(model="model.keras")),
            (
                r"Expected `formats` .*received: formats=\('tflite', 'pb'\)",
                dict(formats=("tflite", "pb")),
            ),
            (r"Expected `quantize` .*received: quantize=\('int4',\)", dict(quantize=("int4",))),
            (r"Expected `quantize` .*received: quantize=\(\)", dict(quantize=())),
            (
                r"Expected `representative_data` \(calibration inputs\) for quantize mode "
                r"'full_int8', received: None",
                dict(quantize=("full_int8",)),
            ),
            (
                r"Expected `representative_data\[1\]` to have shape \(None, None\) and dtype "
                r"int32, received: shape \(1, 5, 2\)",
                dict(
                    quantize=("full_int8",), representative_data=[ids, np.ones((1, 5, 2), "int32")]
                ),
            ),
            (
                r"Expected `representative_data` to have dtype int32, received: dtype float32",
                dict(quantize=("full_int8",), representative_data=np.ones((4, 5), "float32")),
            ),
            (
                r"Expected `sample_inputs` to have the keys \['tokens'\], received: keys \['ids'\]",
                dict(sample_inputs={"ids": ids}),
            ),
            (
                r"Expected `sample_inputs` to be non-empty, received: shape \(0, 5\)",
                dict(sample_inputs=ids[:0]),
            ),
            (
                r"Expected `tolerances` keys from .*received: 'tflite'",
                dict(tolerances={"tflite": 1e-3}),
            ),
            (
                r"Expected `tolerances\['float16'\]` to be a positive number, received: -1",
                dict(tolerances={"float16": -1}),
            ),
            (
                r"Expected `sequence_length` to be a positive integer or None, received: "
                r"sequence_length=0",
                dict(sequence_length=0),
            ),
            (
                r"Expected `latency_runs` to be a positive integer, received: latency_runs=0",
                dict(latency_runs=0),
            ),
            (
                r"Expected `latency_batch_size` to be a positive integer",
                dict(latency_batch_size=2.5),
            ),
        ]
        for pattern, kwargs in cases:
            with self.subTest(pattern=pattern):
                self.assert_rejected(pattern, **kwargs)

    def test_rejects_a_sequence_length_without_a_dynamic_axis(self):
        inputs = keras.Input(shape=(6,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        self.assert_rejected(
            r"Expected `sequence_length` only for a model with a dynamic sequence axis",
            model=model,
            sequence_length=6,
        )

    def test_rejects_a_file_as_out_dir(self):
        path = os.path.join(self.get_temp_dir(), "a_file")
        with open(path, "w") as file:
            file.write("x")
        with self.assertRaisesRegex(ExportError, r"Expected `out_dir` to be a folder path"):
            export(self.model, path, formats=("saved_model",), overwrite=True)


class MixedPrecisionTest(tf.test.TestCase):
    """A model trained under a mixed policy exports its float32 computation, every format."""

    def setUp(self):
        super().setUp()
        self.addCleanup(keras.config.set_dtype_policy, keras.config.dtype_policy())

    def trained(self, policy):
        keras.config.set_dtype_policy(policy)
        model = classifier()
        keras.config.set_dtype_policy("float32")
        self.assertEqual(policy, model.get_layer("attention").dtype_policy.name)
        rng = np.random.default_rng(1)
        ids = token_ids(rng, 32, 9)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        model.fit(ids, rng.integers(0, 3, 32), batch_size=8, epochs=1, verbose=0)
        return model, ids[:4]

    def test_mixed_precision_models_export_to_every_format(self):
        for policy in ("mixed_bfloat16", "mixed_float16"):
            with self.subTest(policy=policy), tempfile.TemporaryDirectory() as folder:
                model, sample = self.trained(policy)
                manifest = export(
                    model, os.path.join(folder, "out"), quantize=("float32", "dynamic_int8"),
                    sample_inputs=sample,
                )
                self.assertEqual(policy, manifest["dtype_policy"])
                self.assertEqual("float32", manifest["computed_in"])
                self.assertEqual(
                    {"saved_model", "tflite_float32", "tflite_dynamic_int8", "onnx"},
                    set(manifest["artifacts"]),
                )
                # Artifacts agree with the float32 computation to float32 tolerance...
                self.assertLess(manifest["artifacts"]["tflite_float32"]["max_abs_difference"],
                                1e-4)
                # ... which is within 16-bit rounding of the mixed-precision model's.
                difference = manifest["float32_vs_dtype_policy"][
                    "max_abs_difference_per_output"]["output_0"]
                self.assertBetween(difference, 0.0, 0.1)
                # Independently: the float32 TFLite file against the mixed model itself.
                got = run_tflite(os.path.join(folder, "out", "model_float32.tflite"),
                                 {"tokens": sample})
                want = keras.ops.convert_to_numpy(model(sample)).astype(np.float32)
                self.assertAllClose(want, next(iter(got.values())), atol=0.1)

    def test_float32_copy_keeps_weights_and_leaves_float32_models_alone(self):
        from kerasattn.export import float32_copy

        float_model = classifier()
        self.assertIs(float_model, float32_copy(float_model))
        model, sample = self.trained("mixed_bfloat16")
        copy = float32_copy(model)
        self.assertEqual(model.name, copy.name)
        for layer in copy._flatten_layers(include_self=True):
            self.assertNotIn(layer.compute_dtype, ("bfloat16", "float16"), layer.name)
        for new, old in zip(copy.weights, model.weights):
            self.assertAllEqual(keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new))
        # The float32 copy computes what a float32 model with the same weights computes.
        reference = classifier()
        reference.set_weights(model.get_weights())
        self.assertAllClose(reference(sample), copy(sample), atol=1e-6)
