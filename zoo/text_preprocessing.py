"""Preprocessors for the zoo's text models: classification and masked-token pre-training.

Both take raw strings and make `{"token_ids", "padding_mask"}` with a
`kerasattn.text.TextPreprocessor` (NFKC, lower case, WordPiece), cut to the
batch's longest text, so any text backbone taking those inputs can use them.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import keras

from kerasattn.text import TextPreprocessor
from zoo.preprocessor import Preprocessor
from zoo.preprocessor import pack_x_y_sample_weight

MASK_TOKEN = "[MASK]"


def trim_to_longest(features: dict) -> dict:
    """Cuts a batch's padding down to its longest text (at least one column).

    Args:
        features: `{"token_ids", "padding_mask"}`, `(B, T)` tensors.

    Returns:
        The same keys, `(B, T')` with `T'` the longest text's length.
    """
    import tensorflow as tf

    lengths = tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=-1)
    length = tf.maximum(tf.reduce_max(lengths), 1)
    return {key: value[..., :length] for key, value in features.items()}


@keras.saving.register_keras_serializable(package="zoo")
class TextClassifierPreprocessor(Preprocessor):
    """Raw strings to WordPiece ids and a padding mask; labels pass through.

    Args:
        vocabulary: the WordPiece tokens (id = index, `"[PAD]"` first), or
            the path of a vocabulary file. In a preset it is the asset
            `assets/vocabulary.txt`.
        sequence_length: the longest input in tokens; longer texts are cut.
        lower_case, normalization_form, unknown_token: as for
            `kerasattn.text.TextPreprocessor`.
        **kwargs: base layer arguments such as `name`.

    Call arguments:
        x: strings `(B,)`.
        y: optional labels, returned unchanged.
        sample_weight: optional weights, returned unchanged.

    Returns:
        `{"token_ids": int32 (B, T), "padding_mask": bool (B, T)}` with `T`
        the longest text's length (at most `sequence_length`), packed with
        `y` and `sample_weight` as `fit` takes them.

    Example:

    ```python
    preprocessor = TextClassifierPreprocessor(["[PAD]", "[UNK]", "a", "movie"])
    preprocessor(["a movie"])["token_ids"]  # [[2, 3]]
    ```
    """

    asset_files = {"vocabulary": "vocabulary.txt"}

    def __init__(
        self,
        vocabulary: Sequence[str] | str | os.PathLike,
        sequence_length: int = 128,
        lower_case: bool = True,
        normalization_form: Optional[str] = "NFKC",
        unknown_token: str = "[UNK]",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tokenizer = TextPreprocessor(
            vocabulary,
            sequence_length=sequence_length,
            lower_case=lower_case,
            normalization_form=normalization_form,
            unknown_token=unknown_token,
            name="tokenizer",
        )

    @property
    def vocabulary(self) -> list[str]:
        """The tokens, a token's id being its index."""
        return self.tokenizer.vocabulary

    @property
    def vocabulary_size(self) -> int:
        return self.tokenizer.vocabulary_size

    @property
    def sequence_length(self) -> int:
        return self.tokenizer.sequence_length

    @property
    def lower_case(self) -> bool:
        return self.tokenizer.lower_case

    def tokenize(self, texts):
        """Every text's token ids, neither cut nor padded (a `tf.RaggedTensor`)."""
        return self.tokenizer.tokenize(texts)

    def id_to_token(self, token_ids):
        """The token strings of `token_ids` (id 0 is `"[PAD]"`)."""
        return self.tokenizer.id_to_token(token_ids)

    def call(self, x, y=None, sample_weight=None):
        return pack_x_y_sample_weight(trim_to_longest(self.tokenizer(x)), y, sample_weight)

    def compute_output_spec(self, x, y=None, sample_weight=None):
        shape = tuple(x.shape)[:1] + (None,)
        features = {
            "token_ids": keras.KerasTensor(shape, dtype="int32"),
            "padding_mask": keras.KerasTensor(shape, dtype="bool"),
        }
        return pack_x_y_sample_weight(features, y, sample_weight)

    def get_config(self) -> dict:
        tokenizer = self.tokenizer.get_config()
        return {
            **super().get_config(),
            **{
                key: tokenizer[key]
                for key in ("vocabulary", "sequence_length", "lower_case",
                            "normalization_form", "unknown_token")
            },
        }


def mask_tokens(features: dict, mask_id: int, vocabulary_size: int, rate: float):
    """BERT's masking of a batch, for masked-token pre-training.

    Each real token is chosen with probability `rate`; a chosen token
    becomes `mask_id` (80 %), a random id in `[1, vocabulary_size)` (10 %)
    or stays itself (10 %). Padding is never chosen.

    Args:
        features: `{"token_ids", "padding_mask"}`, `(B, T)` tensors.
        mask_id: the id of `[MASK]`.
        vocabulary_size: the number of token ids.
        rate: the share of real tokens chosen.

    Returns:
        `(features, targets, weights)`: the features with the masked
        `token_ids`, the original ids, and float32 weights that are 1 at the
        chosen positions and 0 elsewhere (the loss counts only those).
    """
    import tensorflow as tf

    ids = features["token_ids"]
    shape = tf.shape(ids)
    chosen = (tf.random.uniform(shape) < rate) & tf.cast(features["padding_mask"], tf.bool)
    action = tf.random.uniform(shape)
    masked = tf.where(chosen & (action < 0.8), tf.cast(mask_id, ids.dtype), ids)
    random_ids = tf.random.uniform(shape, 1, vocabulary_size, dtype=ids.dtype)
    masked = tf.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return {**features, "token_ids": masked}, ids, tf.cast(chosen, tf.float32)


@keras.saving.register_keras_serializable(package="zoo")
class MaskedTokenPreprocessor(TextClassifierPreprocessor):
    """Raw strings to masked-token pre-training batches, for any text backbone.

    Tokenises as `TextClassifierPreprocessor` does, then hides tokens with
    `mask_tokens`: the model learns to predict the original token at the
    hidden positions (BERT's masked language model). Labels given with the
    texts are dropped: pre-training uses none.

    Args:
        vocabulary: as for `TextClassifierPreprocessor`; must hold `mask_token`.
        mask_rate: the share of real tokens hidden and predicted, in (0, 1).
        mask_token: the token hidden tokens mostly become. Defaults to `"[MASK]"`.
        **kwargs: `TextClassifierPreprocessor` arguments.

    Returns:
        `(features, original_token_ids, weights)`: weights 1 at the hidden
        positions and 0 elsewhere, for the loss and the accuracy.
    """

    def __init__(self, vocabulary, mask_rate: float = 0.15, mask_token: str = MASK_TOKEN,
                 **kwargs):
        super().__init__(vocabulary, **kwargs)
        if not 0 < mask_rate < 1:
            raise ValueError(f"Expected `mask_rate` in (0, 1), received: mask_rate={mask_rate}")
        if mask_token not in self.vocabulary:
            raise ValueError(
                f"Expected a {mask_token} token in the vocabulary for masked-token pre-training, "
                f"received: a vocabulary of {self.vocabulary_size} tokens without it"
            )
        self.mask_rate = float(mask_rate)
        self.mask_token = mask_token
        self.mask_id = self.vocabulary.index(mask_token)

    def call(self, x, y=None, sample_weight=None):
        features = trim_to_longest(self.tokenizer(x))
        return mask_tokens(features, self.mask_id, self.vocabulary_size, self.mask_rate)

    def compute_output_spec(self, x, y=None, sample_weight=None):
        features = super().compute_output_spec(x)
        ids = features["token_ids"]
        return features, ids, keras.KerasTensor(ids.shape, dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "mask_rate": self.mask_rate, "mask_token": self.mask_token}
