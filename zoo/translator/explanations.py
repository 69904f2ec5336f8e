"""Explaining the translator's output tokens, and measuring the explanations.

A source sentence is translated greedily; each generated target token (the
final `[END]` included) is then explained by one score per source token,
under teacher forcing on the model's own translation. `TokenLogProbability`
makes the explained output, the log-probability of one target token, the
model's one output, so `kerasattn.explain`'s methods apply:

- `cross_attention`: the last decoder layer's cross-attention weights at
  that target position, averaged over heads (`kerasattn.explain.cross_attention`);
- `cross_attention_mean`: the same averaged over every decoder layer;
- `input_x_gradient`: the gradient of the log-probability with respect to
  the encoder's input vectors (scaled token embedding plus position) times
  those vectors, summed over the width;
- `integrated_gradients`: the gradient integrated from the all-padding
  source (every source token replaced by `[PAD]`, the mask unchanged) to the
  source; the scores sum to the log-probability's change from that
  baseline (completeness);
- `random`: uniform scores, seeded.

`explain_texts` gives each translation's full alignment matrix; `measure`
runs `kerasattn.explain.faithfulness` over every (sentence, target token):
the top-k % source tokens by a method's scores are deleted (or replaced by
`[PAD]`), or kept alone, and the drop of that target token's log-probability
(teacher-forced, the target side unchanged) is compared with random scores.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import keras
import numpy as np
from keras import ops

from kerasattn import explain
from kerasattn.explain import faithfulness
from zoo.explanations import check_methods
from zoo.explanations import random_ratio
from zoo.explanations import sanity_fields
from zoo.translator.preprocessor import END_ID
from zoo.translator.preprocessor import PAD_ID
from zoo.translator.preprocessor import START_ID
from zoo.translator.recipe import EXPLAIN_METHODS

# `zoo faithfulness` measures every method but random (its baseline row).
MEASURED_METHODS = tuple(m for m in EXPLAIN_METHODS if m != "random")
# Integrated Gradients' path points.
IG_STEPS = 16
# Explained target tokens per batch (and sentences per greedy decoding batch).
BATCH_SIZE = 64
FEATURES = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
            "decoder_padding_mask")
# The layer whose output (scaled source embedding plus position) the gradient
# methods differentiate: called once, on the source side only.
SOURCE_INPUT_LAYER = "encoder_embedding_dropout"


class TokenLogProbability(keras.Model):
    """A `Translator` as the scorer of one target token per row, teacher-forced.

    Args:
        translator: the `Translator`.

    Inputs: the translator's features, `"labels"` int32 `(B, Tt)` (the
    token each decoder position predicts) and `"target_weights"` float32
    `(B, Tt)`, 1 at the position explained, else 0.
    Outputs: float32 `(B, 1)`, the log-probability of that position's label.
    """

    def __init__(self, translator, **kwargs):
        super().__init__(**kwargs)
        self.translator = translator

    def call(self, inputs, training=False):
        features = {key: inputs[key] for key in FEATURES}
        logits = ops.cast(self.translator(features, training=training), "float32")
        log_probabilities = ops.log_softmax(logits, axis=-1)
        labels = ops.cast(inputs["labels"], "int32")[..., None]
        chosen = ops.take_along_axis(log_probabilities, labels, axis=-1)[..., 0]
        weights = ops.cast(inputs["target_weights"], "float32")
        return ops.sum(chosen * weights, axis=1, keepdims=True)


@dataclasses.dataclass
class Translation:
    """One source sentence and its greedy translation, as ids.

    Attributes:
        source: the source text.
        text: the translation.
        source_ids: int `(Ts,)`, the source's subword ids.
        target_ids: int `(Tt,)`, the generated ids: the translation and
            `[END]` (without it when decoding stopped at its maximum length).
    """

    source: str
    text: str
    source_ids: np.ndarray
    target_ids: np.ndarray


def translate(model, texts: Sequence[str]) -> list[Translation]:
    """Greedy translations of `texts`, with their ids.

    Args:
        model: a `Translator` with a preprocessor.
        texts: non-empty source sentences; longer ones are cut to the
            preprocessor's `source_sequence_length`.
    """
    results = []
    for start in range(0, len(texts), BATCH_SIZE):
        batch = list(texts[start:start + BATCH_SIZE])
        features = model.preprocessor(batch)
        ids = np.asarray(features["encoder_token_ids"])
        mask = np.asarray(features["encoder_padding_mask"])
        generated = np.asarray(model.generate(ids, mask, beam=1))[:, 1:]
        for text, row, row_mask, output, translation in zip(
                batch, ids, mask, generated, model.preprocessor.detokenize(generated)):
            ends = np.flatnonzero(output == END_ID)
            target = output[:ends[0] + 1] if len(ends) else output[output != PAD_ID]
            results.append(Translation(text, translation, row[row_mask], target))
    return results


def _rows(translations: Sequence[Translation]) -> list[tuple]:
    """`(sentence, target position)` of every generated token, in order."""
    return [(index, position) for index, translation in enumerate(translations)
            for position in range(len(translation.target_ids))]


def scorer_inputs(translations: Sequence[Translation], rows: Sequence[tuple]) -> dict:
    """`TokenLogProbability`'s inputs of `rows`, padded to their longest source and target."""
    chosen = [translations[index] for index, _ in rows]
    source_length = max(len(t.source_ids) for t in chosen)
    target_length = max(len(t.target_ids) for t in chosen)
    inputs = {
        "encoder_token_ids": np.full((len(rows), source_length), PAD_ID, np.int32),
        "decoder_token_ids": np.full((len(rows), target_length), PAD_ID, np.int32),
        "labels": np.full((len(rows), target_length), PAD_ID, np.int32),
        "target_weights": np.zeros((len(rows), target_length), np.float32),
    }
    for row, (translation, (_, position)) in enumerate(zip(chosen, rows)):
        source, target = translation.source_ids, translation.target_ids
        inputs["encoder_token_ids"][row, :len(source)] = source
        inputs["decoder_token_ids"][row, :len(target)] = np.concatenate([[START_ID],
                                                                          target[:-1]])
        inputs["labels"][row, :len(target)] = target
        inputs["target_weights"][row, position] = 1.0
    inputs["encoder_padding_mask"] = inputs["encoder_token_ids"] != PAD_ID
    inputs["decoder_padding_mask"] = inputs["labels"] != PAD_ID
    return inputs


def _pad_baseline(scorer: TokenLogProbability, inputs: dict, layer) -> np.ndarray:
    """The encoder's input vectors of the all-`[PAD]` source (Integrated Gradients' baseline)."""
    from kerasattn.explain._trace import trace

    padded = {**inputs, "encoder_token_ids": np.full_like(inputs["encoder_token_ids"], PAD_ID)}
    return trace(scorer, padded, attention=False, embedding_layer=layer).embeddings


def _batch_scores(scorer: TokenLogProbability, inputs: dict, method: str,
                  seed: int) -> np.ndarray:
    mask = inputs["encoder_padding_mask"]
    if method == "random":
        return explain.random_scores(mask, seed)
    if method in ("cross_attention", "cross_attention_mean"):
        layers = "last" if method == "cross_attention" else "mean"
        alignment = explain.cross_attention(scorer, inputs, mask, layers=layers)
        positions = inputs["target_weights"].argmax(1)
        return alignment[np.arange(len(positions)), positions]
    layer = scorer.translator.backbone.get_layer(SOURCE_INPUT_LAYER)
    if method == "input_x_gradient":
        return explain.input_x_gradient(scorer, inputs, target=0, embedding_layer=layer,
                                        padding_mask=mask)
    return explain.integrated_gradients(scorer, inputs, target=0, steps=IG_STEPS,
                                        baseline=_pad_baseline(scorer, inputs, layer),
                                        embedding_layer=layer, padding_mask=mask)


def token_scores(scorer: TokenLogProbability, translations: Sequence[Translation],
                 rows: Sequence[tuple], method: str, seed: int = 0) -> np.ndarray:
    """One method's scores of the source tokens for each `(sentence, target position)`.

    Args:
        scorer: a `TokenLogProbability` of the translator.
        translations: from `translate`.
        rows: `(index into translations, target position)` pairs.
        method: one of `EXPLAIN_METHODS`.
        seed: the random method's seed.

    Returns:
        float64 `(len(rows), longest source)`, 0 at padding.
    """
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"expected a method in {', '.join(EXPLAIN_METHODS)}, "
                         f"received: {method!r}")
    longest = max(len(translations[index].source_ids) for index, _ in rows)
    scores = np.zeros((len(rows), longest))
    for start in range(0, len(rows), BATCH_SIZE):
        inputs = scorer_inputs(translations, rows[start:start + BATCH_SIZE])
        batch = _batch_scores(scorer, inputs, method, seed + start)
        scores[start:start + len(batch), :batch.shape[1]] = batch
    return scores


def _pieces(model, ids: np.ndarray) -> list[str]:
    tokens = model.preprocessor.source_tokenizer.id_to_token(np.asarray(ids, np.int32))
    return [piece.decode("utf-8", errors="replace") for piece in tokens.numpy()]


def explain_texts(model, texts: Sequence[str], method: str) -> list[dict]:
    """Translates `texts` greedily and scores every source token for each target token.

    Returns:
        Per text: `{"text", "translation", "method", "source_tokens",
        "target_tokens", "log_probabilities", "alignment"}`, `alignment`
        one row of source-token scores per target token (the subword
        pieces, the last target token `[END]`).
    """
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"expected a method in {', '.join(EXPLAIN_METHODS)}, "
                         f"received: {method!r}")
    empty = [text for text in texts if not text.strip()]
    if empty:
        raise ValueError(f"expected non-empty texts, received: {empty[0]!r}")
    limit = model.preprocessor.source_sequence_length
    lengths = model.preprocessor.source_lengths(list(texts))
    if lengths.max() > limit:
        raise ValueError(f"expected texts of at most {limit} subword tokens, received: "
                         f"{int(lengths.max())}")
    translations = translate(model, texts)
    rows = _rows(translations)
    scorer = TokenLogProbability(model)
    scores = token_scores(scorer, translations, rows, method)
    log_probabilities = log_probabilities_of(scorer, translations, rows)
    results = []
    for index, translation in enumerate(translations):
        chosen = [row for row, (sentence, _) in enumerate(rows) if sentence == index]
        length = len(translation.source_ids)
        results.append({
            "text": translation.source, "translation": translation.text, "method": method,
            "source_tokens": _pieces(model, translation.source_ids),
            "target_tokens": _pieces(model, translation.target_ids),
            "log_probabilities": [round(float(log_probabilities[row]), 5) for row in chosen],
            "alignment": [[round(float(score), 5) for score in scores[row, :length]]
                          for row in chosen],
        })
    return results


def _log_probability_function(scorer: TokenLogProbability) -> Callable[[dict], np.ndarray]:
    """`inputs -> (N,)` log-probabilities, one traced graph for any shapes."""
    import tensorflow as tf

    graph = tf.function(lambda inputs: scorer(inputs, training=False)[:, 0],
                        reduce_retracing=True)
    return lambda inputs: graph({key: tf.constant(value) for key, value in inputs.items()}
                                ).numpy().astype(np.float64)


def log_probabilities_of(scorer: TokenLogProbability, translations: Sequence[Translation],
                         rows: Sequence[tuple]) -> np.ndarray:
    """Each row's target token log-probability, teacher-forced: float64 `(len(rows),)`."""
    run = _log_probability_function(scorer)
    return np.concatenate([run(scorer_inputs(translations, rows[start:start + BATCH_SIZE]))
                           for start in range(0, len(rows), BATCH_SIZE)])


def measure(
    model,
    texts: Sequence[str],
    methods: Sequence[str] = MEASURED_METHODS,
    random_seeds: int = 10,
    sanity_examples: int = 100,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Faithfulness of each method over every target token of the translations of `texts`.

    Each (sentence, target token) is an example: ERASER's comprehensiveness
    and sufficiency (`kerasattn.explain.faithfulness.evaluate`) of the drop
    of the token's log-probability, its translation held fixed, when the
    top-k % of the source tokens are deleted or replaced by `[PAD]` (or
    all the others are), against random scores over `random_seeds` seeds;
    and the weight-randomisation sanity check.

    Args:
        model: a `Translator` with a preprocessor.
        texts: the source sentences.
        methods: names from `MEASURED_METHODS`.
        random_seeds: seeds of the random row.
        sanity_examples: how many of the first (sentence, target token)
            examples the weight randomisation check explains.
        progress: called with a label after each unit of work.

    Returns:
        The classifier's report shape: `{"methods": {name: {"comprehensiveness",
        "sufficiency", "aopc", "interval", "sufficiency_interval", "bins",
        "random_ratio", "sanity_spearman", "sanity_cascade",
        "ms_per_example"}}, "random", "examples", "sentences", "removal",
        "by_removal": {"delete": ..., "replace": ...}, "replacement_token",
        "bins", "random_seeds", "baseline": {"log_probability"}}`; the
        top-level `methods` and `random` are the deletion strategy's.
    """
    check_methods(methods, MEASURED_METHODS)
    step = progress or (lambda label: None)
    translations = translate(model, texts)
    rows = _rows(translations)
    scorer = TokenLogProbability(model)
    inputs = scorer_inputs(translations, rows)
    ids, mask = inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
    target_side = {key: value for key, value in inputs.items() if not key.startswith("encoder")}
    run = _log_probability_function(scorer)

    def predict(token_ids, padding_mask, given):
        length = max(1, int(given["decoder_padding_mask"].sum(1).max()))
        batch = {key: value[:, :length] for key, value in given.items()}
        return run({**batch, "encoder_token_ids": token_ids,
                    "encoder_padding_mask": padding_mask})[:, None]

    explanations, timings = {}, {}
    for method in methods:
        # A warm-up on one example, so the timing leaves out tracing the graph.
        token_scores(scorer, translations, rows[:1], method)
        started = time.perf_counter()
        explanations[method] = token_scores(scorer, translations, rows, method)
        timings[method] = 1000 * (time.perf_counter() - started) / len(rows)
        step(f"explained: {method}")
    by_removal = faithfulness.evaluate(predict, ids, mask, explanations,
                                       random_seeds=random_seeds, replacement_id=PAD_ID,
                                       batch_size=BATCH_SIZE, progress=step,
                                       row_inputs=target_side)
    sanity_rows = rows[:sanity_examples]
    sanity_mask = scorer_inputs(translations, sanity_rows)["encoder_padding_mask"]
    report_methods = {}
    for method in methods:
        check = faithfulness.sanity_check(
            scorer, lambda m, method=method: token_scores(m, translations, sanity_rows, method),
            sanity_mask)
        step(f"sanity: {method}")
        row = by_removal["delete"]["methods"][method]
        report_methods[method] = {**row, "random_ratio": random_ratio(
            row, by_removal["delete"]["random"]), **sanity_fields(check),
            "ms_per_example": round(timings[method], 2)}
    return {
        "methods": report_methods,
        "random": by_removal["delete"]["random"],
        "examples": len(rows),
        "sentences": len(translations),
        "removal": "delete",
        "by_removal": by_removal,
        "replacement_token": _pieces(model, [PAD_ID])[0],
        "bins": list(faithfulness.BINS),
        "random_seeds": random_seeds,
        "baseline": {"log_probability": float(log_probabilities_of(scorer, translations,
                                                                   rows).mean())},
    }


def progress_steps(methods: Sequence[str], random_seeds: int) -> int:
    """How many times `measure` calls `progress`."""
    strategies = len(faithfulness.STRATEGIES)
    return 2 * len(methods) + strategies * (len(methods) + random_seeds)
