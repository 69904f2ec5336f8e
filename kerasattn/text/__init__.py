"""Text preprocessing on tensorflow-text: normalisation, WordPiece vocabularies, a Keras layer.

TensorFlow-only (like `kerasattn.data` and `kerasattn.export`); `import
kerasattn` does not import it. Use the same `lower_case` and
`normalization_form` to learn a vocabulary and to preprocess with it:

```python
from kerasattn import text

vocabulary = text.learn_wordpiece_vocabulary(train_texts, vocabulary_size=8000)
text.save_vocabulary(vocabulary, "vocab.txt")
preprocessor = text.TextPreprocessor("vocab.txt", sequence_length=64)
features = preprocessor(["a gripping, well-acted film"])
# {"token_ids": int32 (1, 64), "padding_mask": bool (1, 64)}
```
"""

from kerasattn.text.normalization import normalize_text
from kerasattn.text.preprocessor import TextPreprocessor
from kerasattn.text.vocabulary import RESERVED_TOKENS
from kerasattn.text.vocabulary import learn_wordpiece_vocabulary
from kerasattn.text.vocabulary import load_vocabulary
from kerasattn.text.vocabulary import save_vocabulary

__all__ = [
    "RESERVED_TOKENS",
    "TextPreprocessor",
    "learn_wordpiece_vocabulary",
    "load_vocabulary",
    "normalize_text",
    "save_vocabulary",
]
