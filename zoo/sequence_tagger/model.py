"""The sequence tagger: a character + word encoder, Transformer blocks and a CRF."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import keras
from keras import ops

from kerasattn import layers
from kerasattn.layers import _validation
from zoo.backbone import Backbone
from zoo.backbone import per_layer
from zoo.backbone import resized_blocks_config
from zoo.distribute import scale_loss_for_replicas
from zoo.sequence_tagger.preprocessor import SequenceTaggerPreprocessor
from zoo.task import Task

HEADS = ("crf", "softmax")
POSITION_ENCODINGS = ("none", "sinusoidal")


def tagger_inputs(max_word_length: int) -> dict:
    """The symbolic inputs of the backbone and the tagger."""
    return {
        "word_ids": keras.Input(shape=(None,), dtype="int32", name="word_ids"),
        "character_ids": keras.Input(
            shape=(None, max_word_length), dtype="int32", name="character_ids"
        ),
        "padding_mask": keras.Input(shape=(None,), dtype="bool", name="padding_mask"),
    }


@keras.saving.register_keras_serializable(package="zoo")
class CharacterEncoder(keras.layers.Layer):
    """One vector per token from its characters: embeddings, a convolution, max pooling.

    Args:
        num_characters: number of character ids (id 0 is padding).
        embedding_dim: width of the character embeddings.
        filters: width of the output (the convolution's filters).
        kernel_size: characters the convolution sees at once.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Call arguments:
        character_ids: int `(B, T, C)`, 0 for padding.

    Returns:
        `(B, T, filters)`: per token, the maximum over its characters of the
        ReLU convolution; zeros for a token without characters (padding).
    """

    def __init__(self, num_characters: int, embedding_dim: int = 32, filters: int = 64,
                 kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.num_characters = _validation.positive_int("num_characters", num_characters)
        self.embedding_dim = _validation.positive_int("embedding_dim", embedding_dim)
        self.filters = _validation.positive_int("filters", filters)
        self.kernel_size = _validation.positive_int("kernel_size", kernel_size)

    def build(self, input_shape):
        max_word_length = input_shape[-1]
        self.embedding = keras.layers.Embedding(
            self.num_characters, self.embedding_dim, dtype=self.dtype_policy, name="embedding"
        )
        self.embedding.build(input_shape)
        self.convolution = keras.layers.Conv1D(
            self.filters, self.kernel_size, padding="same", activation="relu",
            dtype=self.dtype_policy, name="convolution",
        )
        self.convolution.build((None, max_word_length, self.embedding_dim))

    def call(self, character_ids):
        shape = ops.shape(character_ids)
        # Conv1D takes (batch, steps, channels): every token becomes a row.
        flat_ids = ops.reshape(character_ids, (-1, shape[-1]))
        features = self.convolution(self.embedding(flat_ids))
        # ReLU outputs are >= 0, so zeroing padded characters keeps the maximum
        # of the real ones, and a token without characters gets zeros.
        real = ops.expand_dims(ops.cast(flat_ids > 0, features.dtype), -1)
        pooled = ops.max(features * real, axis=1)
        return ops.reshape(pooled, (shape[0], shape[1], self.filters))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_characters": self.num_characters,
            "embedding_dim": self.embedding_dim,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="zoo")
class MaskedConvolution(keras.layers.Layer):
    """A GELU convolution over the tokens of a sentence, padding zeroed first.

    Args:
        filters: output width.
        kernel_size: tokens seen at once (centred: odd sizes see as many on
            each side).
        **kwargs: base layer arguments such as `name` and `dtype`.

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: `(B, T)`, True for real tokens.

    Returns:
        `(B, T, filters)`, zeros at padded positions.
    """

    def __init__(self, filters: int, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = _validation.positive_int("filters", filters)
        self.kernel_size = _validation.positive_int("kernel_size", kernel_size)

    def build(self, inputs_shape, padding_mask_shape=None):
        self.convolution = keras.layers.Conv1D(
            self.filters, self.kernel_size, padding="same", activation="gelu",
            dtype=self.dtype_policy, name="convolution",
        )
        self.convolution.build(inputs_shape)

    def call(self, inputs, padding_mask):
        real = ops.expand_dims(ops.cast(padding_mask, inputs.dtype), -1)
        return self.convolution(inputs * real) * real

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="zoo")
class UnknownWordDropout(keras.layers.Layer):
    """In training, reads a word as unknown at `rate`, so the unknown word's embedding is learnt.

    Without it the `[UNK]` embedding is never trained (every training word
    has an id of its own), and every word unseen in training — most entity
    names of a small or noisy data set — is read through the random vector
    it was initialised with. Here a word id is replaced by `unknown_id` with
    probability `rate` in training (padding stays); at inference the ids
    pass unchanged.

    Args:
        rate: probability in [0, 1) of reading a word as unknown.
        unknown_id: the `[UNK]` id. Defaults to 1.
        seed: optional seed of the draws.
        **kwargs: base layer arguments such as `name`.

    Call arguments:
        word_ids: int `(B, T)`, 0 for padding.
        training: whether to replace words.

    Returns:
        The word ids, some replaced by `unknown_id` in training.
    """

    def __init__(self, rate: float, unknown_id: int = 1, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _validation.rate("rate", rate)
        self.unknown_id = int(unknown_id)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, word_ids, training=None):
        if not training or not self.rate:
            return word_ids
        unknown = keras.random.uniform(ops.shape(word_ids), seed=self.seed_generator) < self.rate
        unknown = ops.logical_and(unknown, word_ids > 0)
        return ops.where(unknown, ops.cast(self.unknown_id, word_ids.dtype), word_ids)

    def compute_output_shape(self, word_ids_shape):
        return word_ids_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "unknown_id": self.unknown_id,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="zoo")
class SequenceTaggerBackbone(Backbone):
    """Tokens to contextual features: characters and words → Transformer blocks.

    Per token, a word embedding (read as `[UNK]`'s in training at
    `word_dropout`) and the `CharacterEncoder` of its characters are
    concatenated, dropped out at `dropout`, and projected to `hidden_dim`
    (through an optional BiLSTM, `lstm_units` per direction; off by default:
    it does not convert to TFLite at a dynamic length). A `MaskedConvolution`
    over `context_window` neighbours adds local order, sinusoidal positions
    are added, and `num_layers` pre-norm `TransformerEncoderBlock`s and a
    final layer normalization follow. On CoNLL-2003 the convolution and the
    positions were worth about 2 F1 points early in training over attention
    without either (see the model card).

    Args:
        vocabulary_size: number of word ids (0 is padding, 1 unknown).
        num_characters: number of character ids.
        max_word_length: characters per token in `character_ids`.
        word_dim: width of the word embeddings.
        character_dim: width of the character embeddings.
        character_filters: width of the character encoder's output (0 for
            no characters: words alone).
        hidden_dim: model width.
        lstm_units: units of each direction of the BiLSTM; 0 for none.
        num_layers: Transformer blocks (0 for none).
        num_heads: attention heads per block, or a list of one count per
            block (a pruned backbone's, with `head_dim`).
        intermediate_dim: feed-forward width of the blocks, or a list of one
            width per block.
        dropout: dropout on the token vectors (and after the BiLSTM).
        attention_dropout: dropout on the attention weights.
        word_dropout: rate at which a word is read as unknown (`[UNK]`) in
            training (its characters stay), so that the unknown word's
            embedding is learnt (`UnknownWordDropout`).
        position_encoding: `"none"` or `"sinusoidal"`.
        context_window: with a positive odd size, a `MaskedConvolution` over
            that many neighbouring tokens is added to the projected token
            vectors (local order for attention); 0 for none.
        block_dropout: dropout in the Transformer blocks.
        head_dim: width of every attention head; `None` for
            `hidden_dim // num_heads` (then `num_heads` must be one int).
        dtype: dtype policy of every layer.

    Inputs: `{"word_ids", "character_ids", "padding_mask"}` (see
    `SequenceTaggerPreprocessor`). Outputs: `{"sequence_output": (B, T,
    hidden_dim), "attention_scores": (B, num_heads, T, T) of the last block}`
    (without blocks, no scores).
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_characters: int,
        max_word_length: int = 16,
        word_dim: int = 100,
        character_dim: int = 32,
        character_filters: int = 64,
        hidden_dim: int = 256,
        lstm_units: int = 0,
        num_layers: int = 2,
        num_heads: Union[int, Sequence[int]] = 4,
        intermediate_dim: Union[int, Sequence[int]] = 512,
        dropout: float = 0.5,
        attention_dropout: float = 0.1,
        word_dropout: float = 0.1,
        position_encoding: str = "sinusoidal",
        context_window: int = 3,
        block_dropout: float = 0.1,
        head_dim: Optional[int] = None,
        dtype=None,
        **kwargs,
    ):
        _validation.one_of("position_encoding", position_encoding, POSITION_ENCODINGS)
        heads_per_layer = per_layer("num_heads", num_heads, num_layers)
        units_per_layer = per_layer("intermediate_dim", intermediate_dim, num_layers)
        _validation.positive_int("head_dim", head_dim, allow_none=True)
        if head_dim is None and not isinstance(num_heads, int):
            raise ValueError(
                "Expected `head_dim` with a list of head counts, received: "
                f"num_heads={list(num_heads)!r}, head_dim=None"
            )
        inputs = tagger_inputs(max_word_length)
        padding_mask = inputs["padding_mask"]
        word_ids = inputs["word_ids"]
        if word_dropout:
            word_ids = UnknownWordDropout(word_dropout, name="word_dropout")(word_ids)
        words = keras.layers.Embedding(
            vocabulary_size, word_dim, name="word_embedding", dtype=dtype,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.1),
        )(word_ids)
        parts = [words]
        if character_filters:
            parts.append(CharacterEncoder(
                num_characters, character_dim, character_filters, name="character_encoder",
                dtype=dtype,
            )(inputs["character_ids"]))
        x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(
            name="token_features", dtype=dtype)(parts)
        x = keras.layers.Dropout(dropout, name="token_dropout", dtype=dtype)(x)
        if lstm_units:
            x = keras.layers.Bidirectional(
                keras.layers.LSTM(lstm_units, return_sequences=True, dtype=dtype),
                name="bilstm", dtype=dtype,
            )(x, mask=padding_mask)
            x = keras.layers.Dropout(dropout, name="bilstm_dropout", dtype=dtype)(x)
        x = keras.layers.Dense(hidden_dim, name="projection", dtype=dtype)(x)
        if context_window:
            # Each token sees its neighbours in order (what attention alone
            # does not know); padding is zeroed first so it adds nothing.
            local = MaskedConvolution(hidden_dim, context_window, name="context_convolution",
                                      dtype=dtype)(x, padding_mask)
            x = keras.layers.Add(name="context", dtype=dtype)([x, local])
        if position_encoding == "sinusoidal":
            x = keras.layers.Add(name="positions", dtype=dtype)(
                [x, layers.SinusoidalPositionEncoding(name="position_encoding", dtype=dtype)(x)]
            )
        outputs = {}
        for index in range(num_layers):
            x, outputs["attention_scores"] = layers.TransformerEncoderBlock(
                num_heads=heads_per_layer[index],
                intermediate_dim=units_per_layer[index],
                key_dim=head_dim,
                dropout=block_dropout,
                attention_dropout=attention_dropout,
                activation="gelu",
                norm_first=True,
                name=f"encoder_block_{index}",
                dtype=dtype,
            )(x, padding_mask=padding_mask, return_attention_scores=True)
        outputs["sequence_output"] = keras.layers.LayerNormalization(
            epsilon=1e-5, name="output_layer_norm", dtype=dtype
        )(x)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_characters = num_characters
        self.max_word_length = max_word_length
        self.word_dim = word_dim
        self.character_dim = character_dim
        self.character_filters = character_filters
        self.hidden_dim = hidden_dim
        self.lstm_units = lstm_units
        self.num_layers = num_layers
        self.num_heads = num_heads if isinstance(num_heads, int) else list(num_heads)
        self.intermediate_dim = (intermediate_dim if isinstance(intermediate_dim, int)
                                 else list(intermediate_dim))
        self.head_dim = head_dim
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.word_dropout = float(word_dropout)
        self.position_encoding = position_encoding
        self.context_window = context_window
        self.block_dropout = float(block_dropout)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_characters": self.num_characters,
            "max_word_length": self.max_word_length,
            "word_dim": self.word_dim,
            "character_dim": self.character_dim,
            "character_filters": self.character_filters,
            "hidden_dim": self.hidden_dim,
            "lstm_units": self.lstm_units,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "word_dropout": self.word_dropout,
            "position_encoding": self.position_encoding,
            "context_window": self.context_window,
            "block_dropout": self.block_dropout,
            "head_dim": self.head_dim,
        }

    def pruned_config(self, updates: dict) -> dict:
        """This backbone's config with blocks resized by `kerasattn.prune`
        (`zoo.backbone.resized_blocks_config`)."""
        return resized_blocks_config(self, updates)


@keras.saving.register_keras_serializable(package="zoo")
class SequenceTagger(Task):
    """A named-entity (or any sequence) tagger: backbone, per-tag scores, a CRF.

    The model maps the backbone's inputs to `{"tags": int32 (B, T),
    "potentials": (B, T, num_tags)}`: the per-token tag scores and, with
    `head="crf"`, the `kerasattn.layers.CRF`'s Viterbi path (constrained to
    legal transitions of `scheme` when the tag names are known), with
    `head="softmax"` each token's best score. Training minimises the CRF's
    negative log-likelihood per sentence (or the token cross-entropy),
    from `"potentials"` and the gold tag ids; `compute_loss` does it, so
    `fit` takes `(features, tag_ids)` or raw `(sentences, tag strings)`.

    Args:
        backbone: a `SequenceTaggerBackbone`.
        num_tags: number of tags.
        preprocessor: optional `SequenceTaggerPreprocessor` (its
            `tag_names` must number `num_tags`).
        head: `"crf"` or `"softmax"` (the ablation).
        scheme: the tag scheme the CRF forbids illegal transitions of
            (`"IOB2"`, `"IOBES"`, `"IOB1"`), or `None`; needs the
            preprocessor's tag names.
        tag_names: the tag names (taken from the preprocessor if `None`).
        dropout: dropout before the tag scores.
        **kwargs: `name`.
    """

    backbone_cls = SequenceTaggerBackbone
    preprocessor_cls = SequenceTaggerPreprocessor

    def __init__(self, backbone: SequenceTaggerBackbone, num_tags: int,
                 preprocessor: Optional[SequenceTaggerPreprocessor] = None, head: str = "crf",
                 scheme: Optional[str] = "IOB2", tag_names: Optional[Sequence[str]] = None,
                 dropout: float = 0.0, **kwargs):
        self.check_components(backbone, preprocessor)
        _validation.positive_int("num_tags", num_tags)
        _validation.one_of("head", head, HEADS)
        if tag_names is None and preprocessor is not None:
            tag_names = preprocessor.tag_names
        if tag_names is not None and len(tag_names) != num_tags:
            raise ValueError(f"Expected {num_tags} tag names, received: {len(tag_names)}")
        dtype = backbone.dtype_policy
        inputs = tagger_inputs(backbone.max_word_length)
        features = backbone(inputs)["sequence_output"]
        features = keras.layers.Dropout(dropout, name="head_dropout", dtype=dtype)(features)
        potentials = keras.layers.Dense(num_tags, name="potentials", dtype=dtype)(features)
        if head == "crf":
            constrained = scheme is not None and tag_names is not None
            tags = layers.CRF(
                num_tags, tag_names=tag_names if constrained else None,
                scheme=scheme if constrained else None, name="crf",
            )(potentials, mask=inputs["padding_mask"])
        else:
            tags = keras.layers.Lambda(
                lambda p: ops.cast(ops.argmax(p, axis=-1), "int32"), name="argmax"
            )(potentials)
        outputs = {"tags": tags, "potentials": potentials}
        super().__init__(inputs=inputs, outputs=outputs, backbone=backbone,
                         preprocessor=preprocessor, **kwargs)
        self.num_tags = num_tags
        self.head = head
        self.scheme = scheme
        self.tag_names = None if tag_names is None else list(tag_names)
        self.dropout = float(dropout)

    @property
    def crf(self):
        return self.get_layer("crf") if self.head == "crf" else None

    def default_compile_arguments(self) -> dict:
        # The loss is the task's own (`compute_loss`), not a Keras loss.
        return {**super().default_compile_arguments(), "optimizer": keras.optimizers.AdamW(2e-3)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        mask = x["padding_mask"]
        potentials = ops.cast(y_pred["potentials"], "float32")
        tags = ops.cast(y, "int32")
        if self.head == "crf":
            per_sentence = -self.crf.log_likelihood(potentials, tags, mask=mask)
        else:
            per_token = keras.losses.sparse_categorical_crossentropy(
                tags, potentials, from_logits=True
            )
            per_sentence = ops.sum(per_token * ops.cast(mask, "float32"), axis=-1)
        if sample_weight is not None:
            per_sentence = per_sentence * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        loss = ops.mean(per_sentence)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return scale_loss_for_replicas(loss)

    def tag(self, sentences: Sequence[str], batch_size: int = 64,
            confidence: bool = True) -> list[dict]:
        """Tags tokenised sentences; the tags and (optionally) each one's probability.

        Args:
            sentences: strings of whitespace-separated tokens.
            batch_size: sentences per batch.
            confidence: also return each tag's marginal probability (the
                CRF's forward-backward; the softmax's probability).

        Returns:
            Per sentence `{"tokens", "tags", "confidence"}` (lists).
        """
        return self._tag(sentences, batch_size, confidence=confidence)

    def _tag(self, sentences: Sequence[str], batch_size: int, confidence: bool = False,
             tokens: bool = True, by_length: bool = False, compiled: bool = False) -> list[dict]:
        """The batching loop of `tag` and of `zoo.sequence_tagger.data.tag_sentences`.

        Args:
            sentences: strings of whitespace-separated tokens.
            batch_size: sentences per batch.
            confidence: also return each tag's marginal probability (else `None`).
            tokens: also return each sentence's tokens (else no `"tokens"`).
            by_length: batch the sentences sorted by their number of tokens
                (fewer padded steps); the results stay in the order given.
            compiled: run each batch through `predict_on_batch` (a traced
                function) rather than calling the model eagerly.

        Returns:
            Per sentence, in the order given, `{"tokens", "tags", "confidence"}`
            (lists; `"tokens"` only with `tokens=True`).
        """
        import numpy as np

        if self.preprocessor is None:
            raise ValueError("Expected a tagger with a preprocessor, received: preprocessor=None")
        order = (np.argsort([len(text.split()) for text in sentences], kind="stable")
                 if by_length else range(len(sentences)))
        results: list[Optional[dict]] = [None] * len(sentences)
        for start in range(0, len(sentences), batch_size):
            indices = order[start:start + batch_size]
            batch = [sentences[index] for index in indices]
            features = self.preprocessor(batch)
            outputs = (self.predict_on_batch(features) if compiled
                       else self(features, training=False))
            mask = np.asarray(features["padding_mask"])
            names = self.preprocessor.tag_names_of(outputs["tags"], mask)
            words = None
            if tokens:
                words = [[token.decode("utf-8") for token in row]
                         for row in self.preprocessor.tokenize(batch).to_list()]
            probabilities = None
            if confidence:
                if self.head == "crf":
                    marginals = self.crf.marginals(outputs["potentials"], mask=mask)
                else:
                    marginals = ops.softmax(ops.cast(outputs["potentials"], "float32"), axis=-1)
                chosen = np.take_along_axis(
                    np.asarray(marginals), np.asarray(outputs["tags"])[..., None], axis=-1
                )[..., 0]
                probabilities = [row[m].tolist() for row, m in zip(chosen, mask)]
            for position, index in enumerate(indices):
                result = {} if words is None else {"tokens": words[position]}
                result["tags"] = names[position]
                result["confidence"] = None if probabilities is None else probabilities[position]
                results[index] = result
        return results

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tags": self.num_tags,
            "head": self.head,
            "scheme": self.scheme,
            "tag_names": self.tag_names,
            "dropout": self.dropout,
        }
