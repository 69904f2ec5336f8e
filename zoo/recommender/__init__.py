"""The sequential recommender (zoo model 3): next-item prediction over interaction logs.

`model.py` holds `SequentialRecommenderBackbone` (SASRec's causal encoder),
`NextItemRetriever` (scores the whole catalogue) and `CandidateScorer`
(DIN / BST target attention over the history, with side features);
`preprocessor.py` the `RecommenderPreprocessor` (raw item labels to ids);
`ranking.py` the evaluation (SASRec's sampled protocol and full ranking,
HR@k and NDCG@k, in NumPy); `losses.py` the training losses on `keras.ops`;
`data.py`, `train.py` and `recipe.py` the recipe. The data readers are
`kerasattn.data.interactions`.

The model classes are imported on first use, so that `ranking` alone loads
without Keras.
"""

_EXPORTS = {
    "CandidateScorer": "zoo.recommender.model",
    "NextItemRetriever": "zoo.recommender.model",
    "SequentialRecommenderBackbone": "zoo.recommender.model",
    "RecommenderPreprocessor": "zoo.recommender.preprocessor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
