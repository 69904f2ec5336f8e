"""Explaining the tagger's entities, and measuring the explanations.

The explained output is one predicted entity's CRF marginal: the mean, over
its tokens, of the marginal probability of the tag each was given
(`CRF.marginals`, forward-backward). `EntityMarginal` makes it the model's
one output, so `kerasattn.explain`'s methods score every token for it;
`explain_texts` lists each entity's context tokens by score; `measure`
deletes each entity's `k` highest-scored context tokens (or keeps only
them), and `k` random ones, and reports the entity's marginal drop.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
import numpy as np

from kerasattn import explain
from kerasattn.explain import faithfulness
from zoo.explanations import check_methods
from zoo.explanations import random_ratio
from zoo.explanations import removal_summary
from zoo.explanations import sanity_fields
from zoo.sequence_tagger.recipe import EXPLAIN_METHODS
from zoo.sequence_tagger.recipe import TOP_K

# `zoo faithfulness` measures every method but random (its baseline row).
MEASURED_METHODS = tuple(m for m in EXPLAIN_METHODS if m != "random")
# Integrated Gradients' path points (from the padding word's embedding).
IG_STEPS = 16
# Entities per explanation batch.
BATCH_SIZE = 64
FEATURES = ("word_ids", "character_ids", "padding_mask")


class EntityMarginal(keras.Model):
    """A `SequenceTagger` as the scorer of one entity per sentence.

    Args:
        tagger: the `SequenceTagger` (with a CRF head).

    Inputs: the tagger's features and `"entity_weights"`, float32 `(B, T,
    num_tags)`: `1 / length` at each entity token's tag, else 0.
    Outputs: float32 `(B, 1)`, the entity's mean marginal.
    """

    def __init__(self, tagger, **kwargs):
        super().__init__(**kwargs)
        self.tagger = tagger

    def call(self, inputs, training=False):
        features = {key: inputs[key] for key in FEATURES}
        potentials = self.tagger(features, training=training)["potentials"]
        marginals = self.tagger.crf.marginals(keras.ops.cast(potentials, "float32"),
                                              mask=features["padding_mask"])
        weights = keras.ops.cast(inputs["entity_weights"], marginals.dtype)
        return keras.ops.sum(marginals * weights, axis=(1, 2))[:, None]


def _entity_weights(length: int, num_tags: int, entities: Sequence[dict]) -> np.ndarray:
    """`(B, length, num_tags)` weights of each entity's tokens' tags (see `EntityMarginal`)."""
    weights = np.zeros((len(entities), length, num_tags), np.float32)
    for row, entity in enumerate(entities):
        for position, tag in zip(entity["positions"], entity["tag_ids"]):
            weights[row, position, tag] = 1.0 / len(entity["positions"])
    return weights


def _features(model, sentences: Sequence[Sequence[str]]) -> dict:
    encoded = model.preprocessor([" ".join(tokens) for tokens in sentences])
    return {key: np.asarray(encoded[key]) for key in FEATURES}


def marginals_of(model, sentences: Sequence[Sequence[str]], entities: Sequence[dict]
                 ) -> np.ndarray:
    """Each entity's mean marginal in its sentence: float64 `(B,)`.

    Args:
        model: a `SequenceTagger` with a CRF head and a preprocessor.
        sentences: token lists, one per entity.
        entities: `{"positions": [token index], "tag_ids": [tag id]}` each.
    """
    values = np.zeros(len(entities))
    for start in range(0, len(entities), BATCH_SIZE):
        features = _features(model, sentences[start:start + BATCH_SIZE])
        potentials = model(features, training=False)["potentials"]
        marginals = np.asarray(model.crf.marginals(
            keras.ops.cast(potentials, "float32"), mask=features["padding_mask"]))
        for row, entity in enumerate(entities[start:start + BATCH_SIZE]):
            values[start + row] = marginals[row, entity["positions"], entity["tag_ids"]].mean()
    return values


def token_scores(scorer: EntityMarginal, sentences: Sequence[Sequence[str]],
                 entities: Sequence[dict], method: str, seed: int = 0) -> list:
    """One method's scores of every token of each sentence for its entity.

    Args:
        scorer: an `EntityMarginal` of the tagger.
        sentences: token lists, one per entity.
        entities: `{"positions", "tag_ids"}` each (see `marginals_of`).
        method: one of `EXPLAIN_METHODS`; the attention methods read the
            attention out at the entity's first token, the gradient methods
            differentiate the word embeddings (not the characters').
        seed: the random method's seed.

    Returns:
        A float64 array of each sentence's length per entity.
    """
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"expected a method in {', '.join(EXPLAIN_METHODS)}, "
                         f"received: {method!r}")
    tagger = scorer.tagger
    # The word embeddings: the gradient methods leave the characters' share out.
    words = tagger.backbone.get_layer("word_embedding")
    results = []
    for start in range(0, len(entities), BATCH_SIZE):
        batch = entities[start:start + BATCH_SIZE]
        features = _features(tagger, sentences[start:start + BATCH_SIZE])
        length = features["padding_mask"].shape[1]
        inputs = {**features, "entity_weights": _entity_weights(length, tagger.num_tags, batch)}
        if method == "integrated_gradients":
            scores = explain.integrated_gradients(scorer, inputs, target=0, baseline=0,
                                                  steps=IG_STEPS, embedding_layer=words)
        elif method == "input_x_gradient":
            scores = explain.input_x_gradient(scorer, inputs, target=0, embedding_layer=words)
        else:
            scores = explain.explain(scorer, inputs, method, target=0,
                                     position=[entity["positions"][0] for entity in batch],
                                     seed=seed + start)
        results += [row[mask] for row, mask in zip(scores, features["padding_mask"])]
    return results


def predicted_entities(model, sentences: Sequence[Sequence[str]]) -> list[list[dict]]:
    """Each sentence's predicted entities: `{"type", "start", "end", "confidence",
    "positions", "tag_ids"}` (token offsets, `end` exclusive)."""
    from kerasattn import data as kdata

    tag_index = {name: i for i, name in enumerate(model.preprocessor.tag_names)}
    results = []
    for tagged in model.tag([" ".join(tokens) for tokens in sentences]):
        entities = []
        for kind, start, end in kdata.entity_spans(tagged["tags"], model.scheme or "IOB2"):
            entities.append({
                "type": kind, "start": start, "end": end,
                "confidence": float(np.mean(tagged["confidence"][start:end])),
                "positions": list(range(start, end)),
                "tag_ids": [tag_index[tag] for tag in tagged["tags"][start:end]],
            })
        results.append(entities)
    return results


def _check_tagger(model) -> None:
    if getattr(model, "crf", None) is None:
        raise ValueError("expected a tagger with a CRF head (its marginals are explained), "
                         "received: a softmax head")


def explain_texts(model, texts: Sequence[str], method: str) -> list[dict]:
    """Tags `texts` and scores every token for each predicted entity.

    Returns:
        Per text: `{"text", "tokens", "tags", "method", "entities": [{"type",
        "text", "start", "end", "confidence", "tokens": [{"token",
        "score", "context"}]}]}`, `context` false for the entity's own
        tokens.
    """
    from zoo.sequence_tagger.recipe import tokenize

    _check_tagger(model)
    sentences = [tokenize(text).split()[:model.preprocessor.sequence_length] for text in texts]
    empty = [text for text, tokens in zip(texts, sentences) if not tokens]
    if empty:
        raise ValueError(f"expected texts with at least one token, received: {empty[0]!r}")
    tagged = model.tag([" ".join(tokens) for tokens in sentences])
    entities = predicted_entities(model, sentences)
    flat = [(row, entity) for row, found in enumerate(entities) for entity in found]
    scores = token_scores(EntityMarginal(model), [sentences[row] for row, _ in flat],
                          [entity for _, entity in flat], method) if flat else []
    results = [{"text": text, "tokens": tokens, "tags": tagged_row["tags"], "method": method,
                "entities": []}
               for text, tokens, tagged_row in zip(texts, sentences, tagged)]
    for (row, entity), values in zip(flat, scores):
        tokens = sentences[row]
        results[row]["entities"].append({
            "type": entity["type"], "text": " ".join(tokens[entity["start"]:entity["end"]]),
            "start": entity["start"], "end": entity["end"],
            "confidence": round(entity["confidence"], 4),
            "tokens": [{"token": token, "score": round(float(score), 5),
                        "context": not entity["start"] <= i < entity["end"]}
                       for i, (token, score) in enumerate(zip(tokens, values))],
        })
    return results


def _without(tokens: Sequence[str], entity: dict, removed: set) -> tuple:
    """The sentence without the `removed` positions, and the entity moved with it."""
    kept = [token for i, token in enumerate(tokens) if i not in removed]
    shift = sum(1 for i in removed if i < entity["start"])
    return kept, {**entity, "positions": [p - shift for p in entity["positions"]]}


def _top_context(scores: np.ndarray, entity: dict, count: int) -> set:
    """The `count` highest-scored positions outside the entity (the earlier on ties)."""
    context = [i for i in range(len(scores)) if not entity["start"] <= i < entity["end"]]
    ranked = sorted(context, key=lambda i: -scores[i])
    return set(ranked[:count])


def _drops(model, sentences, entities, chosen, reference) -> tuple:
    """The marginal drops on deleting `chosen` (sets of positions), and on keeping only them."""
    removed = [_without(tokens, entity, positions)
               for tokens, entity, positions in zip(sentences, entities, chosen)]
    kept = []
    for tokens, entity, positions in zip(sentences, entities, chosen):
        others = {i for i in range(len(tokens))
                  if i not in positions and not entity["start"] <= i < entity["end"]}
        kept.append(_without(tokens, entity, others))
    after_removal = marginals_of(model, [s for s, _ in removed], [e for _, e in removed])
    after_keeping = marginals_of(model, [s for s, _ in kept], [e for _, e in kept])
    return reference - after_removal, reference - after_keeping


def _measures(model, sentences, entities, scores, k, reference) -> tuple:
    columns = ([], [])
    for count in range(1, k + 1):
        chosen = [_top_context(row, entity, count) for row, entity in zip(scores, entities)]
        for column, values in zip(columns, _drops(model, sentences, entities, chosen,
                                                  reference)):
            column.append(values)
    return tuple(np.stack(column, 1) for column in columns)


def sample_entities(model, sentences: Sequence[Sequence[str]], k: int, count: Optional[int],
                    seed: int = 0) -> tuple:
    """Up to `count` random predicted entities with more than `k` context tokens.

    Returns:
        `(sentences, entities, eligible)`: one token list and one entity
        (see `predicted_entities`) per sampled entity, and how many
        qualified.
    """
    length = model.preprocessor.sequence_length
    sentences = [list(tokens)[:length] for tokens in sentences if tokens]
    pairs = [(tokens, entity)
             for tokens, found in zip(sentences, predicted_entities(model, sentences))
             for entity in found if len(tokens) - (entity["end"] - entity["start"]) > k]
    if not pairs:
        raise ValueError(f"expected predicted entities with more than {k} context tokens, "
                         "received: none")
    chosen = range(len(pairs))
    if count is not None and count < len(pairs):
        chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), count, replace=False))
    return [pairs[i][0] for i in chosen], [pairs[i][1] for i in chosen], len(pairs)


def measure(
    model,
    sentences: Sequence[Sequence[str]],
    entities: Sequence[dict],
    methods: Sequence[str] = MEASURED_METHODS,
    k: int = TOP_K,
    random_seeds: int = 10,
    sanity_examples: int = 100,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Faithfulness of each method: the entity's marginal without its top-`k` context tokens.

    Each method explains the entity's mean marginal; its `k` highest-scored
    context tokens (outside the entity) are deleted ("comprehensiveness":
    the mean marginal drop), or kept alone with the entity
    ("sufficiency"), against `k` random context tokens over
    `random_seeds` seeds.

    Args:
        model: a `SequenceTagger` with a CRF head and a preprocessor.
        sentences: token lists, one per entity.
        entities: one per sentence, from `predicted_entities`, each with
            more than `k` context tokens.
        methods: names from `MEASURED_METHODS`.
        k: context tokens removed.
        random_seeds: seeds of the random row.
        sanity_examples: how many of the first entities the weight
            randomisation check explains.
        progress: called with a label after each unit of work.

    Returns:
        `{"methods": {name: {"comprehensiveness", "sufficiency", "aopc" (the
        mean of comprehensiveness - sufficiency over 1..k tokens),
        "interval", "sufficiency_interval", "by_k", "random_ratio",
        "sanity_spearman", "sanity_cascade"}}, "random": {...}, "examples",
        "k", "random_seeds", "baseline": {"marginal"}}`.
    """
    _check_tagger(model)
    check_methods(methods, MEASURED_METHODS)
    short = [len(tokens) - len(entity["positions"]) for tokens, entity in zip(sentences, entities)
             if len(tokens) - len(entity["positions"]) <= k]
    if short:
        raise ValueError(f"expected entities with more than k={k} context tokens, received: "
                         f"one with {short[0]}")

    step = progress or (lambda label: None)
    scorer = EntityMarginal(model)
    reference = marginals_of(model, sentences, entities)
    explanations = {}
    for method in methods:
        explanations[method] = token_scores(scorer, sentences, entities, method)
        step(f"explained: {method}")
    random_runs = []
    for seed in range(random_seeds):
        rng = np.random.default_rng(seed)
        random_runs.append(_measures(model, sentences, entities,
                                     [rng.random(len(tokens)) for tokens in sentences], k,
                                     reference))
    random_row = removal_summary(*(np.mean([run[i] for run in random_runs], 0) for i in range(2)))
    report_methods = {}
    sanity_sentences, sanity_entities = sentences[:sanity_examples], entities[:sanity_examples]
    longest = max(len(tokens) for tokens in sanity_sentences)
    sanity_mask = np.array([[i < len(tokens) for i in range(longest)]
                            for tokens in sanity_sentences])

    def padded(scores: list) -> np.ndarray:
        return np.array([np.pad(row, (0, longest - len(row))) for row in scores])

    for method in methods:
        row = removal_summary(*_measures(model, sentences, entities, explanations[method], k,
                                  reference))
        row["random_ratio"] = random_ratio(row, random_row)
        step(f"removed: {method}")
        check = faithfulness.sanity_check(
            scorer, lambda m, method=method: padded(token_scores(m, sanity_sentences,
                                                                 sanity_entities, method)),
            sanity_mask)
        step(f"sanity: {method}")
        report_methods[method] = {**row, **sanity_fields(check)}
    return {
        "methods": report_methods,
        "random": random_row,
        "examples": len(entities),
        "k": k,
        "random_seeds": random_seeds,
        "baseline": {"marginal": float(reference.mean())},
    }


def progress_steps(methods: Sequence[str]) -> int:
    """How many times `measure` calls `progress`."""
    return 3 * len(methods)
