"""The Attention-Based Transformer text classifier (see README.md, its model card).

Its preprocessors are the zoo's text ones: `zoo.text_preprocessing.TextClassifierPreprocessor`
and, for pre-training, `MaskedTokenPreprocessor`; its recipe is `recipe.py`.
"""

from zoo.attention_transformer.model import AttentionTransformerBackbone
from zoo.attention_transformer.model import AttentionTransformerClassifier
from zoo.attention_transformer.model import AttentionTransformerMaskedLM
from zoo.attention_transformer.model import SparseCrossentropyWithSmoothing
from zoo.text_preprocessing import MaskedTokenPreprocessor
from zoo.text_preprocessing import TextClassifierPreprocessor

__all__ = [
    "AttentionTransformerBackbone",
    "AttentionTransformerClassifier",
    "AttentionTransformerMaskedLM",
    "MaskedTokenPreprocessor",
    "SparseCrossentropyWithSmoothing",
    "TextClassifierPreprocessor",
]
