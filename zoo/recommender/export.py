"""Exporting a trained `NextItemRetriever` (SASRec) for serving, every artifact verified.

`export_retriever(model, out_dir)` writes, into a temporary folder beside
`out_dir` that is renamed to `out_dir` only once every check has passed:

- `saved_model/`: a TensorFlow SavedModel with two signatures over the
  trained weights:

  - `recommend` (also `serving_default`): `item_ids` int32 `(B, L)`, the
    histories left-padded with 0 → `{"item_ids": int32 (B, k), "scores":
    float32 (B, k)}`, best first. Retrieval is inside the graph: every
    item is scored against the user state, the history's items are left
    out (they score -1e9, with `exclude_seen`), then `top_k`. It is
    `NextItemRetriever.recommend` as a graph;
  - `score_candidates`: `item_ids` int32 `(B, L)` and `candidate_ids`
    int32 `(B, C)`, `C` dynamic → `{"scores": float32 (B, C)}`, the dot
    product of the user state with each candidate's embedding (the
    retriever's score of that item, `score_all(histories)[b, c]`).

  Both are checked against the Keras model on the sample histories at two
  paddings (the histories, then only their latest half): the top-k ids
  must be identical, the scores within `1e-5 * max(1, max|keras|)`, and
  with `exclude_seen` no returned item may be in its history.
- `candidate_scorer/`: the `score_candidates` function as a functional
  Keras model `(item_ids, candidate_ids) -> {"scores"}` exported by
  `kerasattn.export.export`: `model_float32.tflite` (built-in ops only,
  no Flex delegate) and `model.onnx`, each run in its own runtime and
  compared with Keras at two candidate counts (`C` and `5C/8`: the
  candidate axis stays dynamic in both), with `candidate_scorer/manifest.json`
  as the exporter writes it. Retrieval itself (scoring the catalogue and
  `top_k`) is left to the SavedModel; a mobile or ONNX client scores the
  candidates it has (such as the target and 100 negatives of the SASRec
  protocol) and sorts them.
- `items.txt`: the item map of the model's preprocessor, line `i` is the
  label of item id `i` (as `assets/items.txt` of a preset), when the model
  has a preprocessor.
- `manifest.json`: the signatures, for each artifact its path, size,
  largest difference from Keras and median latency at batch 1 (and at
  `latency_batch_size`), and the item map.

Everything computes in float32: a mixed-precision model (`mixed_float16`,
`mixed_bfloat16`) is exported as a float32 copy of itself with the same
weights (`float32_retriever`; TFLite has no built-in float16 matmul), and
the manifest's `float32_vs_dtype_policy` says how far the copy's scores are
from the mixed-precision model's on the sample histories (information, not
a check; the artifacts are checked against the float32 copy).

Example:

```python
from zoo.recommender.export import export_retriever
from zoo.recommender.model import NextItemRetriever

# The preset (or model.keras) that `python -m zoo train recommender --out runs/games` wrote:
model = NextItemRetriever.from_preset("runs/games/preset")
manifest = export_retriever(model, "exported/", top_k=10)
print(manifest["artifacts"]["saved_model"]["signatures"]["recommend"]["latency_ms"])

import tensorflow as tf
served = tf.saved_model.load("exported/saved_model")
# Raw item labels to (B, L) left-padded ids (or pad ids yourself, 0 on the left).
histories = model.preprocessor(["12 55 301"])["item_ids"]
top = served.signatures["recommend"](item_ids=histories)  # {"item_ids", "scores"}: (1, 10)
labels = open("exported/items.txt").read().splitlines()    # id i is labels[i - 1]
print([labels[i - 1] for i in top["item_ids"].numpy()[0]])
scores = served.signatures["score_candidates"](
    item_ids=histories, candidate_ids=tf.constant([[7, 8, 9]], tf.int32))["scores"]
```
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Sequence, Union

import keras
import numpy as np
from keras import ops

import kerasattn
from kerasattn.export import MANIFEST
from kerasattn.export import ExportError
from kerasattn.export import SavedModelRuntime
from kerasattn.export import check_out_dir
from kerasattn.export import export
from kerasattn.export import float32_copy
from kerasattn.export import size_bytes
from kerasattn.export import staged
from kerasattn.ops.tracing import export_graph
from zoo.recommender.model import NextItemRetriever
from zoo.recommender.model import _SEEN_SCORE
from zoo.recommender.model import _as_histories

SAVED_MODEL = "saved_model"
SCORER_DIR = "candidate_scorer"
ITEMS_FILE = "items.txt"
RECOMMEND = "recommend"
SCORE_CANDIDATES = "score_candidates"
# The SavedModel is checked against Keras with this tolerance, relative to
# max(1, max|keras score|) as `kerasattn.export` does: it runs the same
# TensorFlow kernels as `recommend`, so the measured difference is 0.
SAVED_MODEL_TOLERANCE = 1e-5
# Candidates per sample row when none are given: the target and 100
# negatives of the SASRec protocol (fewer for a smaller catalogue).
SAMPLE_CANDIDATES = 101


def candidate_scoring_model(model: NextItemRetriever) -> keras.Model:
    """The retriever's scores of given candidates, as a functional Keras model.

    Inputs `item_ids` int32 `(B, L)` (left-padded histories) and
    `candidate_ids` int32 `(B, None)`; output `{"scores": float32 (B, C)}`,
    the last user state dotted with each candidate's embedding: the same
    score as `model.score_all(item_ids)[b, candidate_ids[b, c]]`. It shares
    the retriever's layers (and so its weights). A candidate id 0 (the
    padding) gets the padding row's score, which means nothing: leave it out.
    """
    if not isinstance(model, NextItemRetriever):
        raise ExportError(
            f"Expected `model` to be a NextItemRetriever, received: {type(model).__name__}"
        )
    backbone = model.backbone
    item_ids = keras.Input(shape=(backbone.max_sequence_length,), dtype="int32",
                           name="item_ids")
    candidate_ids = keras.Input(shape=(None,), dtype="int32", name="candidate_ids")
    states = backbone({"item_ids": item_ids})["sequence_output"][:, -1]  # (B, d)
    candidates = backbone.get_layer("item_embedding")(candidate_ids)  # (B, C, d)
    candidates = ops.cast(candidates, states.dtype)
    # (B, C, d) @ (B, d, 1): a batched matmul, a built-in op of TFLite and ONNX.
    scores = ops.squeeze(ops.matmul(candidates, ops.expand_dims(states, -1)), -1)
    return keras.Model(
        inputs={"item_ids": item_ids, "candidate_ids": candidate_ids},
        outputs={"scores": ops.cast(scores, "float32")},
        name=f"{model.name}_candidate_scorer",
    )


def float32_retriever(model: NextItemRetriever) -> NextItemRetriever:
    """`model` itself when it computes in float32, else a float32 copy with its weights.

    A mixed-precision model (`mixed_float16`, `mixed_bfloat16`) keeps float32
    weights but computes in 16 bits; TFLite's built-in kernels take no
    float16 matmuls, and CPU serving gains nothing from them. The copy
    (`kerasattn.export.float32_copy`) has the same layers, weights,
    preprocessor and name, with the `float32` policy.
    """
    return float32_copy(model)


def _sample_histories(model: NextItemRetriever, histories) -> np.ndarray:
    length = model.backbone.max_sequence_length
    if histories is not None:
        histories = _as_histories(histories, length)
        if histories.size == 0:
            raise ExportError(f"Expected non-empty `sample_histories`, received shape "
                              f"{histories.shape}")
        if histories.min() < 0 or histories.max() > model.num_items:
            raise ExportError(f"Expected `sample_histories` ids in 0..{model.num_items}, "
                              f"received {histories.min()}..{histories.max()}")
        if not np.all(histories[:, -1] > 0):
            raise ExportError("Expected every sample history to hold at least one item (its "
                              "last position non-zero, left-padded), received an empty one")
        return histories
    # Four users with full, three-quarter, half and one-item histories.
    rng = np.random.default_rng(0)
    rows = []
    for size in (length, max(1, 3 * length // 4), max(1, length // 2), 1):
        row = np.zeros(length, np.int32)
        row[length - size:] = rng.integers(1, model.num_items + 1, size)
        rows.append(row)
    return np.stack(rows)


def _shorter(histories: np.ndarray) -> np.ndarray:
    """The histories cut to their latest half (more padding on the left)."""
    cut = histories.copy()
    for row in cut:
        items = int(np.count_nonzero(row))
        keep = max(1, items // 2)
        row[: len(row) - keep] = 0
    return cut


def _difference(got, want) -> tuple[float, float]:
    """The largest |got - want| and the scale max(1, max|want|) of real scores.

    Seen items score the sentinel -1e9 in both; they count in the
    difference but not in the scale, which would otherwise hide real errors.
    """
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    real = np.abs(want[want > _SEEN_SCORE / 2])
    scale = max(1.0, float(real.max()) if real.size else 1.0)
    return float(np.max(np.abs(got - want))) if want.size else 0.0, scale


def _check_recommend(runtime, model, sets, top_k, exclude_seen, tolerance) -> Dict[str, Any]:
    worst = 0.0
    for histories in sets:
        want_ids, want_scores = model.recommend(histories, top_k=top_k,
                                                exclude_seen=exclude_seen)
        got = runtime.run({"item_ids": histories})
        shape = list(histories.shape)
        if got["item_ids"].shape != want_ids.shape or not np.array_equal(
                got["item_ids"], want_ids):
            rows = np.flatnonzero(np.any(got["item_ids"] != want_ids, axis=-1)) if (
                got["item_ids"].shape == want_ids.shape) else "all"
            raise ExportError(
                f"saved_model: signature {RECOMMEND!r} returned other top-{top_k} item ids than "
                f"the Keras model on histories of shape {shape} (rows {rows})", "verification")
        difference, scale = _difference(got["scores"], want_scores)
        if not difference <= tolerance * scale:
            raise ExportError(
                f"saved_model: signature {RECOMMEND!r} scores differ from the Keras model by "
                f"{difference:.3g} on histories of shape {shape}, above the allowed "
                f"{tolerance * scale:.3g}", "verification")
        if exclude_seen:
            for history, ids, scores in zip(histories, got["item_ids"], got["scores"]):
                # Only a history covering (nearly) the whole catalogue needs seen items.
                leaked = set(ids[scores > _SEEN_SCORE / 2].tolist()) & set(history.tolist())
                if leaked:
                    raise ExportError(
                        f"saved_model: signature {RECOMMEND!r} recommended items of the history "
                        f"{sorted(leaked)} with exclude_seen", "verification")
        worst = max(worst, difference)
    return {"max_abs_difference": {"scores": worst}, "item_ids_identical": True,
            "tolerance": tolerance,
            "verified_input_shapes": [{"item_ids": list(h.shape)} for h in sets],
            "verified_history_items": [np.count_nonzero(h, axis=1).tolist() for h in sets]}


def _check_scores(runtime, model, feeds, tolerance) -> Dict[str, Any]:
    worst = 0.0
    for feed in feeds:
        everything = model.score_all(feed["item_ids"])
        want = np.take_along_axis(everything, feed["candidate_ids"].astype(np.int64), axis=1)
        got = runtime.run(feed)["scores"]
        shapes = {name: list(array.shape) for name, array in feed.items()}
        if got.shape != want.shape:
            raise ExportError(
                f"saved_model: signature {SCORE_CANDIDATES!r} returned scores of shape "
                f"{got.shape}, the Keras model {want.shape} (inputs {shapes})", "verification")
        difference, scale = _difference(got, want)
        if not difference <= tolerance * scale:
            raise ExportError(
                f"saved_model: signature {SCORE_CANDIDATES!r} differs from the Keras model's "
                f"scores by {difference:.3g} on inputs {shapes}, above the allowed "
                f"{tolerance * scale:.3g}", "verification")
        worst = max(worst, difference)
    return {"max_abs_difference": {"scores": worst}, "tolerance": tolerance,
            "verified_input_shapes": [
                {name: list(array.shape) for name, array in feed.items()} for feed in feeds]}


def _latency(runtime, inputs: Dict[str, np.ndarray], batch_size: int, runs: int) -> dict:
    def rows(count):
        return {name: np.take(array, np.arange(count) % len(array), axis=0)
                for name, array in inputs.items()}

    return {f"batch_{size}": runtime.latency_ms(rows(size), runs)
            for size in dict.fromkeys((1, batch_size))}


def _write_saved_model(model: NextItemRetriever, scorer: keras.Model, path: str, top_k: int,
                       exclude_seen: bool) -> None:
    import tensorflow as tf

    length = model.backbone.max_sequence_length
    histories = tf.TensorSpec((None, length), tf.int32, name="item_ids")
    candidates = tf.TensorSpec((None, None), tf.int32, name="candidate_ids")

    def recommend(item_ids):
        # The signature takes the last L items, so those are the seen items it leaves out.
        ids, scores = model._recommend(item_ids, item_ids if exclude_seen else None, top_k)
        return {"item_ids": ids, "scores": scores}

    def score_candidates(item_ids, candidate_ids):
        return scorer({"item_ids": item_ids, "candidate_ids": candidate_ids}, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(scorer)
    try:
        with export_graph():
            # The first endpoint is also `serving_default`.
            archive.add_endpoint(RECOMMEND, recommend, [histories])
            archive.add_endpoint(SCORE_CANDIDATES, score_candidates, [histories, candidates])
            archive.write_out(path, verbose=False)
    except Exception as error:
        raise ExportError(f"saved_model: could not write the SavedModel: {error}",
                          "conversion") from error


def export_retriever(
    model: NextItemRetriever,
    out_dir: Union[str, os.PathLike],
    top_k: int = 10,
    exclude_seen: bool = True,
    sample_histories=None,
    sample_candidates=None,
    quantize: Sequence[str] = ("float32",),
    latency_batch_size: int = 8,
    latency_runs: int = 20,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Exports a `NextItemRetriever` to a two-signature SavedModel, TFLite and ONNX, verified.

    See the module docstring for the folder's layout and what each artifact
    takes and returns.

    Args:
        model: a (trained) `NextItemRetriever`.
        out_dir: the folder to create.
        top_k: items the `recommend` signature returns per history
            (1..`model.num_items`), fixed in the graph.
        exclude_seen: whether `recommend` leaves out the history's items
            (they score -1e9, so they come last if `top_k` needs them).
        sample_histories: int `(B, T)` left-padded item ids to verify on
            (cut or padded to `L`; every row with at least one item). `None`
            generates four histories of `L`, `3L/4`, `L/2` and one item.
            They are checked as given and cut to their latest half.
        sample_candidates: int `(B, C)` candidate ids in 1..N for the same
            rows; `None` draws `min(101, N)` per row.
        quantize: the scorer's TFLite modes (`kerasattn.export.QUANTIZE_MODES`);
            `"full_int8"` calibrates on the sample inputs.
        latency_batch_size: the larger batch timed besides batch 1.
        latency_runs: timed runs per batch size (the manifest records the median).
        overwrite: replace an existing `out_dir` (only an empty folder or a
            previous export), once the new export has passed.

    Returns:
        The manifest, also written to `out_dir/manifest.json`.

    Raises:
        ExportError: for bad arguments, a failed conversion, or an artifact
            that differs from the Keras model; nothing is left behind.
    """
    if not isinstance(model, NextItemRetriever):
        raise ExportError(
            f"Expected `model` to be a NextItemRetriever, received: {type(model).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not (
            1 <= top_k <= model.num_items):
        raise ExportError(f"Expected `top_k` in 1..{model.num_items}, received: top_k={top_k!r}")
    top_k, exclude_seen = int(top_k), bool(exclude_seen)
    out_dir = check_out_dir(out_dir, overwrite)
    histories = _sample_histories(model, sample_histories)
    if sample_candidates is None:
        count = min(SAMPLE_CANDIDATES, model.num_items)
        rng = np.random.default_rng(1)
        candidates = np.stack([rng.permutation(model.num_items)[:count] + 1
                               for _ in range(len(histories))]).astype(np.int32)
    else:
        candidates = np.asarray(sample_candidates)
        if candidates.ndim != 2 or candidates.shape[0] != len(histories) or (
                candidates.size == 0 or candidates.dtype.kind not in "iu"):
            raise ExportError(f"Expected `sample_candidates` int of shape ({len(histories)}, C), "
                              f"received: {candidates.dtype} {candidates.shape}")
        if candidates.min() < 1 or candidates.max() > model.num_items:
            raise ExportError(f"Expected `sample_candidates` ids in 1..{model.num_items}, "
                              f"received {candidates.min()}..{candidates.max()}")
        candidates = candidates.astype(np.int32)
    policy = model.backbone.dtype_policy.name
    original, model = model, float32_retriever(model)
    policy_difference = None
    if original is not model:
        # What serving in float32 changes: informational, not a check.
        want, got = original.score_all(histories)[:, 1:], model.score_all(histories)[:, 1:]
        policy_difference = {
            "max_abs_score_difference": float(np.max(np.abs(got.astype(np.float64) - want))),
            "max_abs_score": float(np.max(np.abs(want))),
            "top_k_ids_identical_rows": int(np.sum(np.all(
                original.recommend(histories, top_k, exclude_seen)[0]
                == model.recommend(histories, top_k, exclude_seen)[0], axis=-1))),
            "rows": len(histories),
        }
    sets = [histories, _shorter(histories)]
    samples = {"item_ids": histories, "candidate_ids": candidates}
    scorer = candidate_scoring_model(model)

    with staged(out_dir, overwrite) as staging:
        saved_model = os.path.join(staging, SAVED_MODEL)
        _write_saved_model(model, scorer, saved_model, top_k, exclude_seen)
        recommend_runtime = SavedModelRuntime(saved_model, RECOMMEND)
        scores_runtime = SavedModelRuntime(saved_model, SCORE_CANDIDATES)
        short = max(1, candidates.shape[1] * 5 // 8)
        score_feeds = [samples, {"item_ids": sets[1], "candidate_ids": candidates[:, :short]}]
        signatures = {
            RECOMMEND: {
                "signature": recommend_runtime.signature(),
                "top_k": top_k,
                "exclude_seen": exclude_seen,
                **_check_recommend(recommend_runtime, model, sets, top_k, exclude_seen,
                                   SAVED_MODEL_TOLERANCE),
                "latency_ms": _latency(recommend_runtime, {"item_ids": histories},
                                       latency_batch_size, latency_runs),
            },
            SCORE_CANDIDATES: {
                "signature": scores_runtime.signature(),
                **_check_scores(scores_runtime, model, score_feeds, SAVED_MODEL_TOLERANCE),
                "latency_ms": _latency(scores_runtime, samples, latency_batch_size,
                                       latency_runs),
            },
            "serving_default": {"same_as": RECOMMEND},
        }
        scorer_manifest = export(
            scorer, os.path.join(staging, SCORER_DIR), formats=("tflite", "onnx"),
            quantize=quantize, sample_inputs=samples,
            representative_data=samples if "full_int8" in quantize else None,
            latency_batch_size=latency_batch_size, latency_runs=latency_runs,
        )
        artifacts = {
            SAVED_MODEL: {
                "path": SAVED_MODEL, "format": "saved_model",
                "size_bytes": size_bytes(saved_model),
                "runtime": recommend_runtime.description,
                "signatures": signatures,
            },
        }
        for key, entry in scorer_manifest["artifacts"].items():
            artifacts[f"candidate_scorer_{key}"] = {
                **entry, "path": f"{SCORER_DIR}/{entry['path']}",
                "takes": "item_ids (B, L), candidate_ids (B, C)",
                "returns": "scores (B, C)",
            }
        dynamic = all(entry["fixed_sequence_length"] is None
                      for entry in scorer_manifest["artifacts"].values())
        items = None
        if model.preprocessor is not None:
            from zoo import preset as preset_format

            preset_format.write_lines(os.path.join(staging, ITEMS_FILE),
                                      model.preprocessor.item_labels)
            items = {"file": ITEMS_FILE, "num_items": model.num_items,
                     "ids": "line i (from 1) is the label of item id i; 0 is the padding"}
        manifest = {
            "format_version": 1,
            "created_by": f"zoo.recommender.export (kerasattn {kerasattn.__version__})",
            "model": model.name,
            "num_items": model.num_items,
            "dtype_policy": policy,
            "computed_in": "float32",
            "float32_vs_dtype_policy": policy_difference,
            "max_sequence_length": model.backbone.max_sequence_length,
            "inputs": {
                "item_ids": "int32 (B, L): item ids, oldest first, left-padded with 0",
                "candidate_ids": "int32 (B, C), C dynamic: item ids in 1..N",
            },
            "item_map": items,
            "check": ("saved_model: top-k item ids identical to NextItemRetriever.recommend, "
                      "scores |keras - artifact| <= tolerance * max(1, max|keras|) against "
                      "recommend and score_all; candidate_scorer: kerasattn.export's check "
                      "against the functional candidate scorer"),
            "candidate_axis_dynamic": dynamic,
            "candidate_scorer_manifest": f"{SCORER_DIR}/{MANIFEST}",
            "artifacts": artifacts,
        }
        with open(os.path.join(staging, MANIFEST), "w") as file:
            json.dump(manifest, file, indent=2)
    return manifest


__all__ = ["candidate_scoring_model", "export_retriever", "float32_retriever"]

