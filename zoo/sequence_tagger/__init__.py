"""The sequence tagger (named entities, CoNLL-2003): see README.md, its model card.

Raw sentences of whitespace-separated tokens in, one tag per token out:
`SequenceTaggerPreprocessor` (word and character ids), `SequenceTaggerBackbone`
(characters and words, a BiLSTM, Transformer blocks) and `SequenceTagger` (a
CRF head); its recipe is `recipe.py`.
"""

from zoo.sequence_tagger.model import CharacterEncoder
from zoo.sequence_tagger.model import SequenceTagger
from zoo.sequence_tagger.model import SequenceTaggerBackbone
from zoo.sequence_tagger.preprocessor import SequenceTaggerPreprocessor
from zoo.sequence_tagger.preprocessor import learn_vocabularies
from zoo.sequence_tagger.preprocessor import normalize_words

__all__ = [
    "CharacterEncoder",
    "SequenceTagger",
    "SequenceTaggerBackbone",
    "SequenceTaggerPreprocessor",
    "learn_vocabularies",
    "normalize_words",
]
