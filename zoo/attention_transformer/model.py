"""The Attention-Based Transformer backbone and its text classifier."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import keras
from keras import ops

from kerasattn import layers
from kerasattn.layers._validation import positive_int
from kerasattn.layers._validation import rate
from kerasattn.ops import sliding_window_mask
from kerasattn.text import TextPreprocessor

NORMS = ("pre", "post")
POSITION_ENCODINGS = ("learned", "sinusoidal")


def _compile_from_config(model: keras.Model, config: dict) -> None:
    # The saved config holds the concrete optimizer, loss and metrics that a
    # task's `compile` resolved; Keras skips restoring them for a custom
    # `compile`, so the task recompiles itself with them.
    model.compile(**keras.saving.deserialize_keras_object(config))
    if model.built:
        model.optimizer.build(model.trainable_variables)


def _task_inputs(backbone) -> dict:
    """A task's symbolic inputs, after checking that `backbone` is an
    `AttentionTransformerBackbone` (defined below; looked up at call time)."""
    if not isinstance(backbone, AttentionTransformerBackbone):
        raise ValueError(
            "Expected `backbone` to be an AttentionTransformerBackbone, "
            f"received: {type(backbone).__name__}"
        )
    return {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="bool", name="padding_mask"),
    }


@keras.saving.register_keras_serializable(package="zoo")
class LocalAttentionMask(keras.layers.Layer):
    """A `(1, T, T)` band mask: position `i` may attend to `j` when `|i - j| < window`.

    Args:
        window: positive integer, the band's half-width plus one.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: any `(B, T, ...)` tensor; only its length `T` is used.

    Returns:
        bool `(1, T, T)`, broadcasting over the batch.
    """

    def __init__(self, window: int, **kwargs):
        super().__init__(**kwargs)
        self.window = positive_int("window", window)

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        return sliding_window_mask(length, length, self.window)[None]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((1, inputs.shape[1], inputs.shape[1]), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "window": self.window}


@keras.saving.register_keras_serializable(package="zoo")
class AttentionTransformerBackbone(keras.Model):
    """The Attention-Based Transformer encoder: token ids to a pooled vector.

    token + position embeddings → `num_layers` `TransformerEncoderBlock`s →
    `CrossLayerAttention` fusing the blocks' outputs at every position (or,
    with `cross_layer_fusion=False`, the last block's output) →
    `AttentionPooling` with a learned query.

    Args:
        vocabulary_size: number of token ids (id 0 is padding).
        num_layers: number of encoder blocks, `L`.
        hidden_dim: model width `d`.
        num_heads: attention heads per block (dividing `hidden_dim`).
        intermediate_dim: hidden width of each block's feed-forward network.
        max_sequence_length: the longest input the position embedding covers.
        dropout: dropout rate after the embeddings and in every block.
        attention_dropout: dropout rate on the blocks' attention weights.
        token_dropout: rate at which whole token vectors are zeroed in
            training (word dropout).
        norm: `"pre"` or `"post"` layer normalisation in the blocks.
        cross_layer_fusion: fuse the `L` block outputs with
            `CrossLayerAttention`; `False` pools the last block's output.
        pooling_units: width of the pooling's `tanh` scoring projection;
            `None` scores the sequence directly.
        position_encoding: `"learned"` (`PositionEmbedding`, up to
            `max_sequence_length`) or `"sinusoidal"`
            (`SinusoidalPositionEncoding`, added to the token embeddings
            scaled by `sqrt(hidden_dim)`).
        attention_window: optional positive integer; if set, every block's
            self-attention is local: token `i` sees tokens `j` with
            `|i - j| < attention_window` (a locality bias, like a
            convolution's), while fusion and pooling stay global.
        **kwargs: `keras.Model` arguments such as `name`.

    Call arguments:
        inputs: a dict with `"token_ids"`, int `(B, T)`, and `"padding_mask"`,
            bool `(B, T)` (`True` at real tokens), as `TextPreprocessor`
            returns; `T` may vary from batch to batch up to
            `max_sequence_length`.

    Returns:
        A dict: `"sequence_output"` `(B, T, d)` (the fused sequence),
        `"pooled_output"` `(B, d)`, `"pooling_weights"` `(B, T)` and, with
        cross-layer fusion, `"cross_layer_weights"` `(B, T, L)` (each
        position's weights over the `L` block outputs).

    Example:

    ```python
    backbone = AttentionTransformerBackbone(vocabulary_size=8000, num_layers=2, hidden_dim=64)
    outputs = backbone({"token_ids": np.array([[5, 9, 0]]),
                        "padding_mask": np.array([[True, True, False]])})
    outputs["pooled_output"].shape  # (1, 64)
    ```
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int = 2,
        hidden_dim: int = 128,
        num_heads: int = 4,
        intermediate_dim: int = 256,
        max_sequence_length: int = 128,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        token_dropout: float = 0.0,
        norm: str = "pre",
        cross_layer_fusion: bool = True,
        pooling_units: Optional[int] = None,
        position_encoding: str = "learned",
        attention_window: Optional[int] = None,
        **kwargs,
    ):
        positive_int("vocabulary_size", vocabulary_size)
        positive_int("num_layers", num_layers)
        positive_int("hidden_dim", hidden_dim)
        positive_int("num_heads", num_heads)
        positive_int("intermediate_dim", intermediate_dim)
        positive_int("max_sequence_length", max_sequence_length)
        if pooling_units is not None:
            positive_int("pooling_units", pooling_units)
        for name, value in (
            ("dropout", dropout),
            ("attention_dropout", attention_dropout),
            ("token_dropout", token_dropout),
        ):
            rate(name, value)
        if norm not in NORMS:
            raise ValueError(f"Expected `norm` to be one of {NORMS}, received: norm={norm!r}")
        if attention_window is not None:
            positive_int("attention_window", attention_window)
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"Expected `position_encoding` to be one of {POSITION_ENCODINGS}, "
                f"received: position_encoding={position_encoding!r}"
            )
        if hidden_dim % num_heads:
            raise ValueError(
                "Expected `hidden_dim` divisible by `num_heads`, "
                f"received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        if cross_layer_fusion and num_layers < 2:
            raise ValueError(
                "Expected `num_layers` >= 2 for cross-layer fusion (or "
                f"cross_layer_fusion=False), received: num_layers={num_layers}"
            )

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
        x = keras.layers.Embedding(vocabulary_size, hidden_dim, name="token_embedding")(token_ids)
        if position_encoding == "learned":
            positions = layers.PositionEmbedding(max_sequence_length, name="position_embedding")(x)
        else:
            # Scaled as in Vaswani et al., so the fixed unit-amplitude
            # encoding does not drown the (small) initial token embeddings.
            x = keras.layers.Rescaling(hidden_dim**0.5, name="token_embedding_scale")(x)
            positions = layers.SinusoidalPositionEncoding(name="position_encoding")(x)
        x = keras.layers.Add(name="embeddings")([x, positions])
        if norm == "post":
            x = keras.layers.LayerNormalization(epsilon=1e-5, name="embeddings_layer_norm")(x)
        if token_dropout:
            # One draw per token, shared across the width: the whole word is dropped.
            x = keras.layers.Dropout(
                token_dropout, noise_shape=(None, None, 1), name="token_dropout"
            )(x)
        x = keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
        local = None
        if attention_window is not None:
            local = LocalAttentionMask(attention_window, name="local_attention_mask")(token_ids)
        states = []
        for index in range(num_layers):
            x = layers.TransformerEncoderBlock(
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation="gelu",
                norm_first=norm == "pre",
                name=f"encoder_block_{index}",
            )(x, mask=padding_mask, attention_mask=local)
            states.append(x)
        if norm == "pre":
            # Pre-norm blocks leave their residual streams unnormalised.
            states = [
                keras.layers.LayerNormalization(epsilon=1e-5, name=f"output_layer_norm_{i}")(s)
                for i, s in enumerate(states)
            ]
        outputs = {}
        if cross_layer_fusion:
            sequence, outputs["cross_layer_weights"] = layers.CrossLayerAttention(
                dropout=attention_dropout, name="cross_layer_attention"
            )(states, mask=padding_mask, return_attention_scores=True)
        else:
            sequence = states[-1]
        pooled, weights = layers.AttentionPooling(units=pooling_units, name="attention_pooling")(
            sequence, mask=padding_mask, return_attention_scores=True
        )
        outputs.update(sequence_output=sequence, pooled_output=pooled, pooling_weights=weights)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=outputs,
            **kwargs,
        )
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.token_dropout = float(token_dropout)
        self.norm = norm
        self.cross_layer_fusion = bool(cross_layer_fusion)
        self.pooling_units = pooling_units
        self.position_encoding = position_encoding
        self.attention_window = attention_window

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "token_dropout": self.token_dropout,
            "norm": self.norm,
            "cross_layer_fusion": self.cross_layer_fusion,
            "pooling_units": self.pooling_units,
            "position_encoding": self.position_encoding,
            "attention_window": self.attention_window,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="zoo")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Sparse categorical cross-entropy on logits with label smoothing.

    `keras.losses.SparseCategoricalCrossentropy` has no label smoothing;
    this one-hot encodes integer labels and smooths them towards uniform.

    Args:
        label_smoothing: float in [0, 1); the target is
            `(1 - label_smoothing) * one_hot + label_smoothing / num_classes`.
        **kwargs: `keras.losses.Loss` arguments such as `name`.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = rate("label_smoothing", label_smoothing)

    def call(self, y_true, y_pred):
        y_true = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            y_true, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="zoo")
class AttentionTransformerClassifier(keras.Model):
    """Text classifier: `AttentionTransformerBackbone` + a dense head.

    The model maps the preprocessor's `{"token_ids", "padding_mask"}` to
    class logits. `preprocessor` (a `kerasattn.text.TextPreprocessor`) is
    kept with the model, saved in its config, and used by `classify` to
    take raw strings.

    Args:
        backbone: an `AttentionTransformerBackbone`.
        num_classes: number of classes (logits). Defaults to `2`.
        preprocessor: optional `kerasattn.text.TextPreprocessor` whose
            vocabulary matches the backbone.
        dropout: dropout rate before the head. Defaults to `0.1`.
        label_names: optional names of the classes, in id order.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    classifier = AttentionTransformerClassifier.from_preset("sst2")
    classifier.classify(["a gorgeous, witty, seductive movie."])
    ```
    """

    backbone_class = AttentionTransformerBackbone

    def __init__(
        self,
        backbone: AttentionTransformerBackbone,
        num_classes: int = 2,
        preprocessor: Optional[TextPreprocessor] = None,
        dropout: float = 0.1,
        label_names: Optional[Sequence[str]] = None,
        **kwargs,
    ):
        positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"Expected `num_classes` >= 2, received: num_classes={num_classes}")
        rate("dropout", dropout)
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(
                f"Expected {num_classes} `label_names` (one per class), "
                f"received: label_names={list(label_names)!r}"
            )
        if preprocessor is not None and not isinstance(preprocessor, TextPreprocessor):
            raise ValueError(
                "Expected `preprocessor` to be a kerasattn.text.TextPreprocessor or None, "
                f"received: {type(preprocessor).__name__}"
            )
        if preprocessor is not None and preprocessor.vocabulary_size != backbone.vocabulary_size:
            raise ValueError(
                "Expected the preprocessor's vocabulary size to match the backbone's "
                f"vocabulary_size={backbone.vocabulary_size}, "
                f"received: {preprocessor.vocabulary_size}"
            )
        inputs = _task_inputs(backbone)
        pooled = backbone(inputs)["pooled_output"]
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
        logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(pooled)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.head_dropout = float(dropout)
        self.label_names = None if label_names is None else [str(n) for n in label_names]

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        """Compiles with defaults for classification.

        Args:
            optimizer: `"auto"` for `keras.optimizers.AdamW(1e-3)`, or any
                Keras optimizer.
            loss: `"auto"` for cross-entropy on the logits with integer
                labels (smoothed by `label_smoothing`), or any Keras loss.
            metrics: `"auto"` for `SparseCategoricalAccuracy("accuracy")`.
            label_smoothing: used by the `"auto"` loss. Defaults to `0.0`.
            **kwargs: other `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3)
        if loss == "auto":
            loss = SparseCrossentropyWithSmoothing(label_smoothing)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        _compile_from_config(self, config)

    def classify(self, texts: Sequence[str]) -> dict:
        """Classifies raw strings with the model's preprocessor.

        Args:
            texts: a list of strings.

        Returns:
            A dict of NumPy arrays: `"probabilities"` `(B, num_classes)`,
            `"pooling_weights"` `(B, T)` and `"tokens"` `(B, T)` (bytes;
            `b"[PAD]"` at padding), with `T` the longest text's length.
        """
        if self.preprocessor is None:
            raise ValueError(
                "Expected a classifier with a `preprocessor`, received: preprocessor=None"
            )
        features = self.preprocessor(list(texts))
        length = max(1, int(ops.max(ops.sum(ops.cast(features["padding_mask"], "int32"), axis=1))))
        features = {key: value[:, :length] for key, value in features.items()}
        logits = self(features, training=False)
        weights = self.backbone(features, training=False)["pooling_weights"]
        return {
            "probabilities": ops.convert_to_numpy(ops.softmax(logits, axis=-1)),
            "pooling_weights": ops.convert_to_numpy(weights),
            "tokens": self.preprocessor.id_to_token(features["token_ids"]).numpy(),
        }

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "preprocessor": None
            if self.preprocessor is None
            else keras.saving.serialize_keras_object(self.preprocessor),
            "dropout": self.head_dropout,
            "label_names": self.label_names,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("preprocessor") is not None:
            config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        return cls(**config)

    @classmethod
    def from_preset(cls, name: str = "sst2") -> "AttentionTransformerClassifier":
        """Loads a preset shipped in `zoo/attention_transformer/presets/`.

        Args:
            name: the preset's name (`"sst2"`), or the path of a folder
                written by `save_preset`.

        Returns:
            The classifier with the preset's weights and preprocessor, compiled
            with the defaults.
        """
        from zoo import presets

        return presets.load_classifier(cls, presets.find(name, __package__))

    def save_preset(self, folder: str | os.PathLike) -> None:
        """Writes `config.json`, `model.weights.h5` and `vocabulary.txt` to `folder`."""
        from zoo import presets

        presets.save_classifier(self, folder)


@keras.saving.register_keras_serializable(package="zoo")
class AttentionTransformerMaskedLM(keras.Model):
    """Masked-token prediction on an `AttentionTransformerBackbone`.

    The self-supervised pre-training task (BERT's masked language model):
    some input tokens are hidden (replaced by `[MASK]`, a random token, or
    left as they are) and the model predicts the original token at those
    positions from the backbone's fused sequence:

        sequence_output → Dense(hidden_dim, gelu) → LayerNormalization
                        → Dense(vocabulary_size) → logits per position

    Pre-training on the task's own training texts gives the backbone word
    and attention patterns that the labels alone do not teach; its weights
    then initialise a classifier's backbone of the same configuration
    (`classifier.backbone.set_weights(masked_lm.backbone.get_weights())`).

    Args:
        backbone: an `AttentionTransformerBackbone`.
        **kwargs: `keras.Model` arguments such as `name`.

    Call arguments:
        inputs: `{"token_ids", "padding_mask"}` as for the backbone, with
            some token ids masked.

    Returns:
        float32 logits `(B, T, vocabulary_size)`.

    Example:

    ```python
    backbone = AttentionTransformerBackbone(vocabulary_size=8000, num_layers=2, hidden_dim=64)
    masked_lm = AttentionTransformerMaskedLM(backbone)
    masked_lm.compile()
    masked_lm.fit(masked_batches)  # (features, original_ids, masked_positions) batches
    ```
    """

    def __init__(self, backbone: AttentionTransformerBackbone, **kwargs):
        inputs = _task_inputs(backbone)
        sequence = backbone(inputs)["sequence_output"]
        x = keras.layers.Dense(backbone.hidden_dim, activation="gelu", name="mlm_transform")(
            sequence
        )
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="mlm_layer_norm")(x)
        logits = keras.layers.Dense(backbone.vocabulary_size, name="mlm_logits", dtype="float32")(x)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """Compiles with defaults for masked-token prediction.

        Train with sample weights that are 1 at the masked positions and 0
        elsewhere, so that only those count in the loss and the accuracy.

        Args:
            optimizer: `"auto"` for `keras.optimizers.AdamW(1e-3)`, or any
                Keras optimizer.
            loss: `"auto"` for cross-entropy on the logits with the original
                token ids as labels, or any Keras loss.
            weighted_metrics: `"auto"` for `SparseCategoricalAccuracy("accuracy")`,
                weighted by the sample weights (the masked-token accuracy).
            **kwargs: other `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        super().compile(
            optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs
        )

    def compile_from_config(self, config):
        _compile_from_config(self, config)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
