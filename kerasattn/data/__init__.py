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

from kerasattn.data.errors import DataError
from kerasattn.data.phrase_split import hold_out_sentences
from kerasattn.data.phrase_split import sentence_rows
from kerasattn.data.text_classification import TextClassificationData
from kerasattn.data.text_classification import read_text_classification
from kerasattn.data.text_classification import text_classification_dataset

__all__ = [
    "DataError",
    "TextClassificationData",
    "hold_out_sentences",
    "read_text_classification",
    "sentence_rows",
    "text_classification_dataset",
]
