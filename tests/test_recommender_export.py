"""`zoo.recommender.export.export_retriever`: the SASRec retriever's verified export."""

import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from kerasattn.export import ExportError  # noqa: E402
from zoo.recommender import export as recommender_export  # noqa: E402
from zoo.recommender.model import NextItemRetriever  # noqa: E402
from zoo.recommender.model import SequentialRecommenderBackbone  # noqa: E402
from zoo.recommender.preprocessor import RecommenderPreprocessor  # noqa: E402

NUM_ITEMS = 30
LENGTH = 8
TOP_K = 5


def tiny_retriever():
    keras.utils.set_random_seed(3)
    backbone = SequentialRecommenderBackbone(NUM_ITEMS, max_sequence_length=LENGTH,
                                             hidden_dim=8, num_layers=1, num_heads=2,
                                             dropout=0.0)
    labels = [f"item{i}" for i in range(1, NUM_ITEMS + 1)]
    return NextItemRetriever(backbone, RecommenderPreprocessor(labels, sequence_length=LENGTH))


def histories(seed=0):
    rng = np.random.default_rng(seed)
    rows = np.zeros((6, LENGTH), np.int32)
    for row, size in zip(rows, (8, 6, 4, 2, 1, 7)):
        row[LENGTH - size:] = rng.choice(np.arange(1, NUM_ITEMS + 1), size, replace=False)
    return rows


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_retriever()
    out = tmp_path_factory.mktemp("export") / "retriever"
    manifest = recommender_export.export_retriever(
        model, out, top_k=TOP_K, sample_histories=histories(), latency_runs=2)
    return model, out, manifest


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(str(exported[1] / "saved_model"))


def test_layout_and_manifest(exported):
    model, out, manifest = exported
    assert sorted(os.listdir(out)) == ["candidate_scorer", "items.txt", "manifest.json",
                                       "saved_model"]
    assert sorted(os.listdir(out / "candidate_scorer")) == ["manifest.json", "model.onnx",
                                                            "model_float32.tflite"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    lines = (out / "items.txt").read_text().splitlines()
    assert lines == model.preprocessor.item_labels and lines[4] == "item5"  # line i is id i
    artifacts = manifest["artifacts"]
    assert sorted(artifacts) == ["candidate_scorer_onnx", "candidate_scorer_tflite_float32",
                                 "saved_model"]
    signatures = artifacts["saved_model"]["signatures"]
    assert signatures["recommend"]["item_ids_identical"]
    for name in ("recommend", "score_candidates"):
        assert signatures[name]["max_abs_difference"]["scores"] <= 1e-5
        assert signatures[name]["latency_ms"]["batch_1"] > 0
    for name in ("candidate_scorer_onnx", "candidate_scorer_tflite_float32"):
        assert artifacts[name]["max_abs_difference"] <= 1e-4
        assert artifacts[name]["fixed_sequence_length"] is None
        assert artifacts[name]["size_bytes"] > 0
        assert artifacts[name]["latency_ms"]["batch_1"] > 0
    assert manifest["candidate_axis_dynamic"]
    assert not any(name.startswith(".") for name in os.listdir(out.parent))


def test_signatures(served):
    assert sorted(served.signatures) == ["recommend", "score_candidates", "serving_default"]
    recommend = served.signatures["recommend"]
    _, inputs = recommend.structured_input_signature
    assert inputs["item_ids"].shape.as_list() == [None, LENGTH]
    assert sorted(recommend.structured_outputs) == ["item_ids", "scores"]
    _, inputs = served.signatures["score_candidates"].structured_input_signature
    assert inputs["candidate_ids"].shape.as_list() == [None, None]


@pytest.mark.parametrize("seed,keep", [(5, None), (6, 3)])
def test_recommend_matches_keras_and_excludes_seen(exported, served, seed, keep):
    model = exported[0]
    rows = histories(seed)
    if keep is not None:  # more padding: only the latest `keep` items
        rows[:, : LENGTH - keep] = 0
    for signature in ("recommend", "serving_default"):
        got = served.signatures[signature](item_ids=tf.constant(rows))
        want_ids, want_scores = model.recommend(rows, top_k=TOP_K, exclude_seen=True)
        np.testing.assert_array_equal(got["item_ids"].numpy(), want_ids)
        np.testing.assert_allclose(got["scores"].numpy(), want_scores, atol=1e-5)
        for history, ids in zip(rows, got["item_ids"].numpy()):
            assert not set(ids.tolist()) & set(history.tolist())
            assert 0 not in ids


def test_score_candidates_matches_keras(exported, served):
    model = exported[0]
    rows = histories(7)
    every = model.score_all(rows)
    for count in (12, 3):
        candidates = np.random.default_rng(count).integers(1, NUM_ITEMS + 1, (len(rows), count))
        got = served.signatures["score_candidates"](
            item_ids=tf.constant(rows), candidate_ids=tf.constant(candidates, tf.int32))
        want = np.take_along_axis(every, candidates, axis=1)
        np.testing.assert_allclose(got["scores"].numpy(), want, atol=1e-5)


def test_tflite_and_onnx_scorer_at_two_candidate_counts(exported):
    from kerasattn.export import LiteRTRuntime, OnnxRuntime

    model, out, _ = exported
    rows = histories(8)
    every = model.score_all(rows)
    runtimes = [LiteRTRuntime(str(out / "candidate_scorer" / "model_float32.tflite")),
                OnnxRuntime(str(out / "candidate_scorer" / "model.onnx"))]
    for count in (20, 7):
        candidates = np.random.default_rng(count).integers(
            1, NUM_ITEMS + 1, (len(rows), count)).astype(np.int32)
        want = np.take_along_axis(every, candidates, axis=1)
        for runtime in runtimes:
            got = runtime.run({"item_ids": rows, "candidate_ids": candidates})["scores"]
            np.testing.assert_allclose(got, want, atol=1e-4)


def test_existing_out_dir_is_refused_untouched(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    model = tiny_retriever()
    with pytest.raises(ExportError, match="not to exist"):
        recommender_export.export_retriever(model, out)
    with pytest.raises(ExportError, match="previous export"):
        recommender_export.export_retriever(model, out, overwrite=True)
    assert os.listdir(tmp_path) == ["taken"] and os.listdir(out) == ["keep.txt"]


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    def failing_export(*args, **kwargs):
        raise ExportError("tflite: conversion failed (simulated)", "conversion")

    monkeypatch.setattr(recommender_export, "export", failing_export)
    with pytest.raises(ExportError, match="simulated"):
        recommender_export.export_retriever(tiny_retriever(), tmp_path / "out", top_k=3,
                                            latency_runs=1)
    assert os.listdir(tmp_path) == []


def test_bad_arguments():
    model = tiny_retriever()
    with pytest.raises(ExportError, match="top_k"):
        recommender_export.export_retriever(model, "unused", top_k=NUM_ITEMS + 1)
    with pytest.raises(ExportError, match="NextItemRetriever"):
        recommender_export.export_retriever(keras.Sequential(), "unused")


def test_mixed_precision_model_is_exported_in_float32(tmp_path):
    keras.utils.set_random_seed(4)
    backbone = SequentialRecommenderBackbone(NUM_ITEMS, max_sequence_length=LENGTH,
                                             hidden_dim=8, num_layers=1, dropout=0.0,
                                             dtype="mixed_float16")
    model = NextItemRetriever(backbone)
    copy = recommender_export.float32_retriever(model)
    assert copy.backbone.dtype_policy.compute_dtype == "float32" and copy.name == model.name
    assert recommender_export.float32_retriever(copy) is copy
    rows = histories(9)
    np.testing.assert_allclose(copy.score_all(rows)[:, 1:], model.score_all(rows)[:, 1:],
                               atol=2e-2)
    manifest = recommender_export.export_retriever(model, tmp_path / "out", top_k=3,
                                                   latency_runs=1)
    assert manifest["dtype_policy"] == "mixed_float16" and manifest["item_map"] is None
    assert manifest["float32_vs_dtype_policy"]["max_abs_score_difference"] < 2e-2
    assert "items.txt" not in os.listdir(tmp_path / "out")
    assert manifest["artifacts"]["candidate_scorer_tflite_float32"]["max_abs_difference"] <= 1e-4
