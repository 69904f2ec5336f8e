"""The Attention-Based Transformer text classifier (see README.md, its model card)."""

from zoo.attention_transformer.model import AttentionTransformerBackbone
from zoo.attention_transformer.model import AttentionTransformerClassifier
from zoo.attention_transformer.model import AttentionTransformerMaskedLM
from zoo.attention_transformer.model import SparseCrossentropyWithSmoothing

__all__ = [
    "AttentionTransformerBackbone",
    "AttentionTransformerClassifier",
    "AttentionTransformerMaskedLM",
    "SparseCrossentropyWithSmoothing",
]
