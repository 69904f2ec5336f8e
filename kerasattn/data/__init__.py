"""Readers from the files users have to `tf.data.Dataset`s (TensorFlow-only).

Every reader is strict: a malformed row raises `DataError` (a `ValueError`)
whose message names the file, the line and the problem.

```python
from kerasattn import data

train = data.read_text_classification("../shared/data/sst2/train.tsv")
dev = data.read_text_classification("../shared/data/sst2/dev.tsv", labels=train.label_names)
train_dataset = train.to_dataset(batch_size=64, seed=1)
```
"""

from kerasattn.data.conll import SCHEMES
from kerasattn.data.conll import TaggedSentences
from kerasattn.data.conll import convert_tags
from kerasattn.data.conll import entity_spans
from kerasattn.data.conll import read_conll
from kerasattn.data.conll import write_conll
from kerasattn.data.errors import DataError
from kerasattn.data.interactions import Interactions
from kerasattn.data.interactions import Split
from kerasattn.data.interactions import leave_one_out
from kerasattn.data.interactions import pad_histories
from kerasattn.data.interactions import read_interactions
from kerasattn.data.interactions import read_movielens_side_features
from kerasattn.data.interactions import training_sequences
from kerasattn.data.parallel_text import ParallelText
from kerasattn.data.parallel_text import read_parallel_text
from kerasattn.data.parallel_text import write_parallel_tsv
from kerasattn.data.phrase_split import hold_out_sentences
from kerasattn.data.phrase_split import sentence_rows
from kerasattn.data.text_classification import TextClassificationData
from kerasattn.data.text_classification import read_text_classification
from kerasattn.data.text_classification import text_classification_dataset

__all__ = [
    "DataError",
    "Interactions",
    "ParallelText",
    "SCHEMES",
    "Split",
    "TaggedSentences",
    "TextClassificationData",
    "convert_tags",
    "entity_spans",
    "hold_out_sentences",
    "leave_one_out",
    "pad_histories",
    "read_conll",
    "read_interactions",
    "read_movielens_side_features",
    "read_parallel_text",
    "read_text_classification",
    "sentence_rows",
    "text_classification_dataset",
    "training_sequences",
    "write_conll",
    "write_parallel_tsv",
]
