"""The translator (Multi30k English→German): see the recipe, `recipe.py`.

Raw sentences in, translations out: `TranslatorPreprocessor` (SentencePiece
ids, in graph), `TranslatorBackbone` (a Transformer encoder–decoder with
multi-head or additive cross-attention, and cached incremental decoding)
and `Translator` (tied next-token logits, teacher-forced training, greedy
and beam-search generation with `kerasattn.generation`).
"""

from zoo.translator.model import AdditiveCrossAttention
from zoo.translator.model import ReversibleEmbedding
from zoo.translator.model import Translator
from zoo.translator.model import TranslatorBackbone
from zoo.translator.preprocessor import TranslatorPreprocessor

__all__ = [
    "AdditiveCrossAttention",
    "ReversibleEmbedding",
    "Translator",
    "TranslatorBackbone",
    "TranslatorPreprocessor",
]
