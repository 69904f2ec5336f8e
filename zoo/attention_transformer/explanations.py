"""Explaining the classifier's predictions, and measuring the explanations.

`explain_texts` scores every token of each text for its predicted class with
one of `kerasattn.explain`'s methods; `measure` runs
`kerasattn.explain.faithfulness` on a labelled file (the labels are not used:
what is explained is the model's own prediction).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np

from kerasattn import explain
from kerasattn.explain import faithfulness
from zoo.explanations import check_methods
from zoo.explanations import sanity_fields

# The methods `zoo faithfulness` measures by default (random is its baseline row).
MEASURED_METHODS = tuple(m for m in explain.METHODS if m != "random")
# Texts per explanation batch.
BATCH_SIZE = 64
# Integrated Gradients' path points.
IG_STEPS = 32


def replacement_id(model) -> int:
    """The `[MASK]` token's id if the vocabulary has one, else the pad id 0.

    It is the token the "replace" removal puts in, and Integrated
    Gradients' baseline: a token the model saw in pre-training standing for
    "a word is missing here".
    """
    vocabulary = model.preprocessor.vocabulary
    return vocabulary.index("[MASK]") if "[MASK]" in vocabulary else 0


def features(model, texts: Sequence[str]) -> dict:
    """`{"token_ids", "padding_mask"}` NumPy arrays of `texts`, padded to the longest.

    Raises:
        ValueError: if a text has no token.
    """
    encoded = model.preprocessor(list(texts))
    result = {key: np.asarray(value) for key, value in encoded.items()}
    empty = [text for text, row in zip(texts, result["padding_mask"]) if not row.any()]
    if empty:
        raise ValueError(f"expected texts with at least one token, received: {empty[0]!r}")
    return result


def probabilities(model, token_ids: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
    """Class probabilities `(N, C)` of a batch of token ids."""
    from keras import ops

    logits = model({"token_ids": token_ids, "padding_mask": padding_mask}, training=False)
    return ops.convert_to_numpy(ops.softmax(logits, axis=-1))


def scores_of(model, token_ids: np.ndarray, padding_mask: np.ndarray, method: str,
              classes: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
    """One method's `(N, T)` token scores for `classes` (default: the predicted ones).

    Batches of `BATCH_SIZE` texts, each cut to its longest text.
    """
    scores = np.zeros(token_ids.shape)
    for start in range(0, len(token_ids), BATCH_SIZE):
        mask = padding_mask[start:start + BATCH_SIZE]
        length = int(mask.sum(1).max())
        batch = {"token_ids": token_ids[start:start + BATCH_SIZE, :length],
                 "padding_mask": mask[:, :length]}
        target = None if classes is None else classes[start:start + BATCH_SIZE]
        scores[start:start + len(mask), :length] = explain.explain(
            model, batch, method, target=target, seed=seed + start, steps=IG_STEPS,
            baseline=replacement_id(model))
    return scores


def explain_texts(model, texts: Sequence[str], method: str) -> list[dict]:
    """Each text's predicted class and every token's score for it.

    Returns:
        Per text: `{"text", "label", "probability", "method", "tokens":
        [{"token", "score"}, ...]}` (padding left out).
    """
    if method not in explain.METHODS:
        raise ValueError(f"expected a method in {', '.join(explain.METHODS)}, "
                         f"received: {method!r}")
    encoded = features(model, texts)
    probs = probabilities(model, encoded["token_ids"], encoded["padding_mask"])
    classes = probs.argmax(-1)
    scores = scores_of(model, encoded["token_ids"], encoded["padding_mask"], method, classes)
    tokens = model.preprocessor.id_to_token(encoded["token_ids"]).numpy()
    results = []
    for row, text in enumerate(texts):
        real = np.flatnonzero(encoded["padding_mask"][row])
        label = model.label_names[classes[row]] if model.label_names else str(classes[row])
        results.append({
            "text": text, "label": label, "probability": round(float(probs[row].max()), 4),
            "method": method,
            "tokens": [{"token": tokens[row, i].decode(), "score": round(float(scores[row, i]), 5)}
                       for i in real],
        })
    return results


def measure(
    model,
    texts: Sequence[str],
    methods: Sequence[str] = MEASURED_METHODS,
    random_seeds: int = 10,
    sanity_examples: int = 100,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Faithfulness of each method on `texts`: ERASER's measures and the sanity check.

    Args:
        model: an `AttentionTransformerClassifier` with a preprocessor.
        texts: the examples.
        methods: names from `kerasattn.explain.METHODS` (not `"random"`).
        random_seeds: seeds of the random row.
        sanity_examples: how many of the first texts the weight
            randomisation check explains (every layer randomised in turn).
        progress: called with a label after each unit of work.

    Returns:
        `{"methods": {name: {"comprehensiveness", "sufficiency", "aopc",
        "interval", "sufficiency_interval", "bins", "sanity_spearman",
        "sanity_cascade", "ms_per_example" (wall time a sentence, in batches
        of `BATCH_SIZE`, after a warm-up)}}, "random": {...}, "examples",
        "removal": "delete", "by_removal": {"delete": ..., "replace": ...},
        "replacement_token", "bins", "random_seeds"}`; the top-level
        `methods` and `random` are the deletion strategy's.
    """
    import tensorflow as tf

    check_methods(methods, MEASURED_METHODS)
    encoded = features(model, texts)
    ids, mask = encoded["token_ids"], encoded["padding_mask"]
    signature = [tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None), tf.bool)]
    predict_graph = tf.function(
        lambda i, m: tf.nn.softmax(model({"token_ids": i, "padding_mask": m}, training=False)),
        input_signature=signature)

    def predict(token_ids, padding_mask):
        return predict_graph(tf.constant(token_ids, tf.int32),
                             tf.constant(padding_mask, tf.bool)).numpy()

    step = progress or (lambda label: None)

    classes = predict(ids, mask).argmax(-1)
    explanations, timings = {}, {}
    for method in methods:
        # A warm-up on one sentence, so the timing leaves out tracing the graph.
        scores_of(model, ids[:1], mask[:1], method, classes[:1])
        started = time.perf_counter()
        explanations[method] = scores_of(model, ids, mask, method, classes)
        timings[method] = 1000 * (time.perf_counter() - started) / len(texts)
        step(f"explained: {method}")
    token = model.preprocessor.vocabulary[replacement_id(model)]
    by_removal = faithfulness.evaluate(predict, ids, mask, explanations,
                                       random_seeds=random_seeds,
                                       replacement_id=replacement_id(model), progress=step)
    sanity_ids, sanity_mask = ids[:sanity_examples], mask[:sanity_examples]
    sanity_classes = classes[:sanity_examples]
    report_methods = {}
    for method in methods:
        check = faithfulness.sanity_check(
            model, lambda m, method=method: scores_of(m, sanity_ids, sanity_mask, method,
                                                      sanity_classes),
            sanity_mask)
        step(f"sanity: {method}")
        report_methods[method] = {
            **by_removal["delete"]["methods"][method],
            **sanity_fields(check),
            "ms_per_example": round(timings[method], 2),
        }
    return {
        "methods": report_methods,
        "random": by_removal["delete"]["random"],
        "examples": len(texts),
        "removal": "delete",
        "by_removal": by_removal,
        "replacement_token": token,
        "bins": list(faithfulness.BINS),
        "random_seeds": random_seeds,
    }


def progress_steps(methods: Sequence[str], random_seeds: int) -> int:
    """How many times `measure` calls `progress`."""
    strategies = len(faithfulness.STRATEGIES)
    return 2 * len(methods) + strategies * (len(methods) + random_seeds)
