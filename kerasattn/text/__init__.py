"""Text preprocessing on tensorflow-text: normalisation, WordPiece and SentencePiece, Keras layers.

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

For generated text (translation), `SubwordPreprocessor` on a SentencePiece
model also turns ids back into the exact text:

```python
model = text.learn_sentencepiece_model(english + german, vocabulary_size=8000)
preprocessor = text.SubwordPreprocessor(model, sequence_length=64, add_end=True)
preprocessor.detokenize(preprocessor(["Ein Hund rennt."])["token_ids"])  # [b"Ein Hund rennt."]
```
"""

from kerasattn.text.normalization import normalize_text
from kerasattn.text.preprocessor import TextPreprocessor
from kerasattn.text.subword import END_ID
from kerasattn.text.subword import PAD_ID
from kerasattn.text.subword import START_ID
from kerasattn.text.subword import SUBWORD_RESERVED_TOKENS
from kerasattn.text.subword import UNKNOWN_ID
from kerasattn.text.subword import SubwordPreprocessor
from kerasattn.text.subword import learn_sentencepiece_model
from kerasattn.text.vocabulary import RESERVED_TOKENS
from kerasattn.text.vocabulary import learn_wordpiece_vocabulary
from kerasattn.text.vocabulary import load_vocabulary
from kerasattn.text.vocabulary import save_vocabulary

__all__ = [
    "END_ID",
    "PAD_ID",
    "RESERVED_TOKENS",
    "START_ID",
    "SUBWORD_RESERVED_TOKENS",
    "SubwordPreprocessor",
    "TextPreprocessor",
    "UNKNOWN_ID",
    "learn_sentencepiece_model",
    "learn_wordpiece_vocabulary",
    "load_vocabulary",
    "normalize_text",
    "save_vocabulary",
]
