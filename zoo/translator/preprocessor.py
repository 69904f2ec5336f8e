"""`TranslatorPreprocessor`: sentence pairs to encoder and decoder ids (SentencePiece, in graph)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasattn._files import write_atomically
from kerasattn.text import END_ID
from kerasattn.text import PAD_ID
from kerasattn.text import START_ID
from kerasattn.text import SubwordPreprocessor
from zoo import preset as preset_format
from zoo.preprocessor import Preprocessor
from zoo.preprocessor import pack_x_y_sample_weight

__all__ = ["END_ID", "PAD_ID", "START_ID", "TranslatorPreprocessor"]

# The SentencePiece models of a preset, in `assets/` (binary files, not lines).
MODEL_ASSETS = {"model": "source.model", "target_model": "target.model"}


def _model_bytes(model) -> Optional[bytes]:
    """A model given as bytes, base64 text (a config's) or `None`."""
    if model is None or isinstance(model, bytes):
        return model
    if isinstance(model, str) and not os.path.exists(model):
        return base64.b64decode(model)
    return Path(model).read_bytes()


def _lengths(tokenizer: SubwordPreprocessor, texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0,), "int64")
    return tokenizer.tokenize(tf.constant(list(texts), tf.string)).row_lengths().numpy()


@keras.saving.register_keras_serializable(package="zoo")
class TranslatorPreprocessor(Preprocessor):
    """Source strings (and target strings) to a translator's ids and masks.

    Tokenises with SentencePiece models (`kerasattn.text.SubwordPreprocessor`,
    tensorflow-text ops, so it runs in `tf.data.map` and in a graph): one
    model for both languages (a joint vocabulary, for shared embeddings), or
    a `target_model` of its own. Sources are cut to `source_sequence_length`
    tokens; targets to `target_sequence_length - 1`, then the decoder reads
    `[START] + target` and learns `target + [END]` (teacher forcing).
    Batches are padded to their longest sequence.

    Args:
        model: the SentencePiece model (`bytes`, a `.model` file's path, or
            its base64 text as in a config), from
            `kerasattn.text.learn_sentencepiece_model`.
        target_model: optional model of the target language; `None` shares `model`.
        source_sequence_length: the most source tokens read.
        target_sequence_length: the most decoder positions (`[START]` or
            `[END]` included).
        **kwargs: base layer arguments such as `name`.

    Call arguments:
        x: source strings `(B,)`.
        y: optional target strings `(B,)`.
        sample_weight: optional per-pair weights `(B,)`.

    Returns:
        Without `y`: `{"encoder_token_ids", "encoder_padding_mask",
        "decoder_token_ids", "decoder_padding_mask"}` with the decoder holding
        `[START]` alone (what generation starts from). With `y`: `(features,
        labels, weights)`, labels int32 `(B, Tt)` and float32 weights 1 at
        real target tokens (times `sample_weight`), 0 at padding.

    Example:

    ```python
    model = learn_sentencepiece_model(english + german, vocabulary_size=8000)
    preprocessor = TranslatorPreprocessor(model)
    features, labels, weights = preprocessor(["A dog runs."], ["Ein Hund rennt."])
    preprocessor.detokenize(labels)  # ["Ein Hund rennt."]
    ```
    """

    def __init__(self, model: bytes | str | os.PathLike,
                 target_model: Optional[bytes | str | os.PathLike] = None,
                 source_sequence_length: int = 128, target_sequence_length: int = 128,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value, least in (("source_sequence_length", source_sequence_length, 1),
                                   ("target_sequence_length", target_sequence_length, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Expected `{name}` to be an integer >= {least}, "
                                 f"received: {name}={value!r}")
        self.source_sequence_length = source_sequence_length
        self.target_sequence_length = target_sequence_length
        self.source_tokenizer = SubwordPreprocessor(
            _model_bytes(model), sequence_length=source_sequence_length, name="source_tokenizer")
        self.shared_model = target_model is None
        self.target_tokenizer = self.source_tokenizer if self.shared_model else (
            SubwordPreprocessor(_model_bytes(target_model),
                                sequence_length=target_sequence_length, name="target_tokenizer"))

    @property
    def vocabulary_size(self) -> int:
        """Number of source ids."""
        return self.source_tokenizer.vocabulary_size

    @property
    def target_vocabulary_size(self) -> int:
        return self.target_tokenizer.vocabulary_size

    def source_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Each source text's number of tokens, before any cut."""
        return _lengths(self.source_tokenizer, texts)

    def target_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Each target text's number of tokens, before any cut."""
        return _lengths(self.target_tokenizer, texts)

    def call(self, x, y=None, sample_weight=None):
        source = self.source_tokenizer.tokenize(x)[:, : self.source_sequence_length]
        features = {
            "encoder_token_ids": source.to_tensor(PAD_ID),
            "encoder_padding_mask": tf.sequence_mask(source.row_lengths()),
        }
        if y is None:
            batch = source.nrows(out_type=tf.int32)
            features["decoder_token_ids"] = tf.fill([batch, 1], START_ID)
            features["decoder_padding_mask"] = tf.ones([batch, 1], tf.bool)
            return features
        target = self.target_tokenizer.tokenize(y)[:, : self.target_sequence_length - 1]
        rows = target.nrows(out_type=tf.int32)
        decoder = tf.concat([tf.fill([rows, 1], START_ID), target], axis=1)
        labels = tf.concat([target, tf.fill([rows, 1], END_ID)], axis=1)
        mask = tf.sequence_mask(labels.row_lengths())
        features["decoder_token_ids"] = decoder.to_tensor(PAD_ID)
        features["decoder_padding_mask"] = mask
        weights = tf.cast(mask, tf.float32)
        if sample_weight is not None:
            weights *= tf.reshape(tf.cast(sample_weight, tf.float32), (-1, 1))
        return pack_x_y_sample_weight(features, labels.to_tensor(PAD_ID), weights)

    def detokenize(self, token_ids) -> list[str]:
        """Target ids `(B, T)` to strings, each read up to its first `[END]`."""
        texts = self.target_tokenizer.detokenize(tf.convert_to_tensor(token_ids))
        return [text.decode("utf-8", errors="replace") for text in texts.numpy()]

    def compute_output_spec(self, x, y=None, sample_weight=None):
        shape = tuple(x.shape)[:1] + (None,)
        features = {
            name: keras.KerasTensor(shape, dtype="bool" if name.endswith("mask") else "int32")
            for name in ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
                         "decoder_padding_mask")
        }
        if y is None:
            return features
        return (features, keras.KerasTensor(shape, dtype="int32"),
                keras.KerasTensor(shape, dtype="float32"))

    def get_config(self) -> dict:
        def encoded(tokenizer):
            return base64.b64encode(tokenizer.model).decode("ascii")

        return {
            **super().get_config(),
            "model": encoded(self.source_tokenizer),
            "target_model": None if self.shared_model else encoded(self.target_tokenizer),
            "source_sequence_length": self.source_sequence_length,
            "target_sequence_length": self.target_sequence_length,
        }

    # The SentencePiece models are binary: a preset keeps them as files in
    # `assets/` rather than as lines (`Preprocessor.asset_files`) or base64.

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, **kwargs) -> "TranslatorPreprocessor":
        folder = preset_format.find(preset, cls.preset_package())
        path = folder / preset_format.PREPROCESSOR_CONFIG_FILE
        config = dict(preset_format.read_json(path, ("class_name", "config"))["config"])
        for argument, name in MODEL_ASSETS.items():
            asset = folder / preset_format.ASSETS_DIR / name
            if asset.is_file():
                config[argument] = asset.read_bytes()
            elif argument == "model":
                raise ValueError(f"{asset}: expected a SentencePiece model, received: no such file")
        return cls.from_config({**config, **kwargs})

    def save_to_preset(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        (folder / preset_format.ASSETS_DIR).mkdir(parents=True, exist_ok=True)
        models = {"model": self.source_tokenizer.model,
                  "target_model": None if self.shared_model else self.target_tokenizer.model}
        for argument, model in models.items():
            if model is None:
                continue

            def write(temporary: str, model: bytes = model) -> None:
                Path(temporary).write_bytes(model)

            write_atomically(folder / preset_format.ASSETS_DIR / MODEL_ASSETS[argument], write)
        serialized = keras.saving.serialize_keras_object(self)
        serialized["config"] = {key: value for key, value in serialized["config"].items()
                                if key not in MODEL_ASSETS}
        preset_format.write_json(folder / preset_format.PREPROCESSOR_CONFIG_FILE, serialized)
