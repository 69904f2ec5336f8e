"""The Attention-Based Transformer backbone and its text classifier."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import keras
from keras import ops

from kerasattn import layers
from kerasattn.layers._validation import positive_int
from kerasattn.layers._validation import rate
from kerasattn.ops import sliding_window_mask_between
from zoo.backbone import Backbone
from zoo.backbone import per_layer
from zoo.backbone import resized_blocks_config
from zoo.task import Task
from zoo.text_preprocessing import MaskedTokenPreprocessor
from zoo.text_preprocessing import TextClassifierPreprocessor

NORMS = ("pre", "post")
POSITION_ENCODINGS = ("learned", "sinusoidal")


@keras.saving.register_keras_serializable(package="zoo")
class SlidingWindowMask(keras.layers.Layer):
    """The `(1, T, T)` band mask `|i - j| < window` of a sequence's positions.

    A layer rather than `sliding_window_mask_between` applied to symbolic
    tensors: a functional model records the ops that function chose when the
    model was built, and only a layer's call is traced again for export,
    where the mask takes its float32 form (`kerasattn.ops.masking`).
    """

    def __init__(self, window: int, **kwargs):
        super().__init__(**kwargs)
        self.window = positive_int("window", window)

    def call(self, inputs):
        return sliding_window_mask_between(inputs, inputs, self.window)

    def compute_output_spec(self, inputs):
        length = inputs.shape[1]
        return keras.KerasTensor((1, length, length), dtype="bool")

    def get_config(self) -> dict:
        return {**super().get_config(), "window": self.window}


def _token_inputs() -> dict:
    """The symbolic `{"token_ids", "padding_mask"}` inputs of the backbone and its tasks."""
    return {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="bool", name="padding_mask"),
    }


@keras.saving.register_keras_serializable(package="zoo")
class AttentionTransformerBackbone(Backbone):
    """The Attention-Based Transformer encoder: token ids to a pooled vector.

    token + position embeddings → `num_layers` `TransformerEncoderBlock`s →
    `CrossLayerAttention` fusing the blocks' outputs at every position (or,
    with `cross_layer_fusion=False`, the last block's output) →
    `AttentionPooling` with a learned query.

    Args:
        vocabulary_size: number of token ids (id 0 is padding).
        num_layers: number of encoder blocks, `L`.
        hidden_dim: model width `d`.
        num_heads: attention heads per block (dividing `hidden_dim` unless
            `head_dim` is given), or a list of one count per block (a pruned
            backbone's, with `head_dim`).
        intermediate_dim: hidden width of each block's feed-forward network,
            or a list of one width per block.
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
        head_dim: width of every attention head; `None` for
            `hidden_dim // num_heads` (then `num_heads` must be one int).
        dtype: optional dtype policy for every layer, such as
            `"mixed_bfloat16"`; `None` for Keras's global policy.
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
        num_heads: Union[int, Sequence[int]] = 4,
        intermediate_dim: Union[int, Sequence[int]] = 256,
        max_sequence_length: int = 128,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        token_dropout: float = 0.0,
        norm: str = "pre",
        cross_layer_fusion: bool = True,
        pooling_units: Optional[int] = None,
        position_encoding: str = "learned",
        attention_window: Optional[int] = None,
        head_dim: Optional[int] = None,
        dtype=None,
        **kwargs,
    ):
        positive_int("vocabulary_size", vocabulary_size)
        positive_int("num_layers", num_layers)
        positive_int("hidden_dim", hidden_dim)
        heads_per_layer = per_layer("num_heads", num_heads, num_layers)
        units_per_layer = per_layer("intermediate_dim", intermediate_dim, num_layers)
        if head_dim is not None:
            positive_int("head_dim", head_dim)
        elif not isinstance(num_heads, int):
            raise ValueError(
                "Expected `head_dim` with a list of head counts (the heads' width is then "
                f"not `hidden_dim // num_heads`), received: num_heads={list(num_heads)!r}, "
                "head_dim=None"
            )
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
        if head_dim is None and hidden_dim % num_heads:
            raise ValueError(
                "Expected `hidden_dim` divisible by `num_heads`, "
                f"received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        if cross_layer_fusion and num_layers < 2:
            raise ValueError(
                "Expected `num_layers` >= 2 for cross-layer fusion (or "
                f"cross_layer_fusion=False), received: num_layers={num_layers}"
            )

        inputs = _token_inputs()
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        x = keras.layers.Embedding(
            vocabulary_size, hidden_dim, name="token_embedding", dtype=dtype
        )(token_ids)
        if position_encoding == "learned":
            positions = layers.PositionEmbedding(
                max_sequence_length, name="position_embedding", dtype=dtype
            )(x)
        else:
            # Scaled as in Vaswani et al., so the fixed unit-amplitude
            # encoding does not drown the (small) initial token embeddings.
            x = keras.layers.Rescaling(
                hidden_dim**0.5, name="token_embedding_scale", dtype=dtype
            )(x)
            positions = layers.SinusoidalPositionEncoding(name="position_encoding", dtype=dtype)(x)
        x = keras.layers.Add(name="embeddings", dtype=dtype)([x, positions])
        if norm == "post":
            x = keras.layers.LayerNormalization(
                epsilon=1e-5, name="embeddings_layer_norm", dtype=dtype
            )(x)
        if token_dropout:
            # One draw per token, shared across the width: the whole word is dropped.
            x = keras.layers.Dropout(
                token_dropout, noise_shape=(None, None, 1), name="token_dropout", dtype=dtype
            )(x)
        x = keras.layers.Dropout(dropout, name="embeddings_dropout", dtype=dtype)(x)
        # The sliding window, built once for every block (each block building
        # its own costs LiteRT as much as a fifth of the block).
        window = None if attention_window is None else SlidingWindowMask(
            attention_window, name="attention_window", dtype=dtype)(x)
        states = []
        for index in range(num_layers):
            x = layers.TransformerEncoderBlock(
                num_heads=heads_per_layer[index],
                intermediate_dim=units_per_layer[index],
                key_dim=head_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation="gelu",
                norm_first=norm == "pre",
                name=f"encoder_block_{index}",
                dtype=dtype,
            )(x, padding_mask=padding_mask, attention_mask=window)
            states.append(x)
        if norm == "pre":
            # Pre-norm blocks leave their residual streams unnormalised.
            states = [
                keras.layers.LayerNormalization(
                    epsilon=1e-5, name=f"output_layer_norm_{i}", dtype=dtype
                )(s)
                for i, s in enumerate(states)
            ]
        outputs = {}
        if cross_layer_fusion:
            sequence, outputs["cross_layer_weights"] = layers.CrossLayerAttention(
                dropout=attention_dropout, name="cross_layer_attention", dtype=dtype
            )(states, mask=padding_mask, return_attention_scores=True)
        else:
            sequence = states[-1]
        pooled, weights = layers.AttentionPooling(
            units=pooling_units, name="attention_pooling", dtype=dtype
        )(
            sequence, mask=padding_mask, return_attention_scores=True
        )
        outputs.update(sequence_output=sequence, pooled_output=pooled, pooling_weights=weights)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads if isinstance(num_heads, int) else list(num_heads)
        self.intermediate_dim = (intermediate_dim if isinstance(intermediate_dim, int)
                                 else list(intermediate_dim))
        self.head_dim = head_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.token_dropout = float(token_dropout)
        self.norm = norm
        self.cross_layer_fusion = bool(cross_layer_fusion)
        self.pooling_units = pooling_units
        self.position_encoding = position_encoding
        self.attention_window = attention_window

    def get_config(self) -> dict:
        return {
            **super().get_config(),
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
            "head_dim": self.head_dim,
        }

    def pruned_config(self, updates: dict) -> dict:
        """This backbone's config with blocks resized by `kerasattn.prune`
        (`zoo.backbone.resized_blocks_config`)."""
        return resized_blocks_config(self, updates)


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
class AttentionTransformerClassifier(Task):
    """Text classifier: `AttentionTransformerBackbone` + a dense head.

    The model maps `{"token_ids", "padding_mask"}` to class logits; with a
    preprocessor (a `TextClassifierPreprocessor`, kept with the model and
    saved in its config and presets) `fit`, `predict` and `evaluate` take
    raw strings, and `classify` also returns the pooling's attention.

    Args:
        backbone: an `AttentionTransformerBackbone`.
        num_classes: number of classes (logits). Defaults to `2`.
        preprocessor: optional `TextClassifierPreprocessor` whose vocabulary
            matches the backbone.
        dropout: dropout rate before the head. Defaults to `0.1`.
        label_names: optional names of the classes, in id order.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    classifier = AttentionTransformerClassifier.from_preset("sst2")
    classifier.predict(["a gorgeous, witty, seductive movie."])  # logits (1, 2)
    classifier.classify(["a gorgeous, witty, seductive movie."])["probabilities"]
    ```
    """

    backbone_cls = AttentionTransformerBackbone
    preprocessor_cls = TextClassifierPreprocessor

    def __init__(
        self,
        backbone: AttentionTransformerBackbone,
        num_classes: int = 2,
        preprocessor: Optional[TextClassifierPreprocessor] = None,
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
        self.check_components(backbone, preprocessor)
        if preprocessor is not None and preprocessor.vocabulary_size != backbone.vocabulary_size:
            raise ValueError(
                "Expected the preprocessor's vocabulary size to match the backbone's "
                f"vocabulary_size={backbone.vocabulary_size}, "
                f"received: {preprocessor.vocabulary_size}"
            )
        inputs = _token_inputs()
        pooled = backbone(inputs)["pooled_output"]
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
        logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(pooled)
        super().__init__(
            inputs=inputs, outputs=logits, backbone=backbone, preprocessor=preprocessor, **kwargs
        )
        self.num_classes = num_classes
        self.head_dropout = float(dropout)
        self.label_names = None if label_names is None else [str(n) for n in label_names]

    def default_compile_arguments(self) -> dict:
        return {
            **super().default_compile_arguments(),
            "loss": SparseCrossentropyWithSmoothing(0.0),
            "metrics": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        }

    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics="auto",
                label_smoothing: float = 0.0, **kwargs):
        """Compiles with defaults for classification.

        Args:
            optimizer: `"auto"` for `keras.optimizers.AdamW(1e-3)`, or any
                Keras optimizer.
            loss: `"auto"` for cross-entropy on the logits with integer
                labels (smoothed by `label_smoothing`), or any Keras loss.
            metrics: `"auto"` for `SparseCategoricalAccuracy("accuracy")`.
            weighted_metrics: `"auto"` for none.
            label_smoothing: used by the `"auto"` loss. Defaults to `0.0`.
            **kwargs: other `keras.Model.compile` arguments.
        """
        if isinstance(loss, str) and loss == "auto":
            loss = SparseCrossentropyWithSmoothing(label_smoothing)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics,
                        weighted_metrics=weighted_metrics, **kwargs)

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
        logits = self(features, training=False)
        weights = self.backbone(features, training=False)["pooling_weights"]
        return {
            "probabilities": ops.convert_to_numpy(ops.softmax(logits, axis=-1)),
            "pooling_weights": ops.convert_to_numpy(weights),
            "tokens": self.preprocessor.id_to_token(features["token_ids"]).numpy(),
        }

    @classmethod
    def from_config(cls, config: dict) -> "AttentionTransformerClassifier":
        preprocessor = config.get("preprocessor")
        if isinstance(preprocessor, dict) and preprocessor.get("class_name") == "TextPreprocessor":
            # A .keras file saved before the zoo's base classes kept a bare
            # kerasattn.text.TextPreprocessor: the same settings, wrapped.
            settings = {key: value for key, value in preprocessor["config"].items()
                        if key not in ("name", "trainable", "dtype")}
            config = {**config, "preprocessor": TextClassifierPreprocessor(**settings)}
        return super().from_config(config)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "dropout": self.head_dropout,
            "label_names": self.label_names,
        }


@keras.saving.register_keras_serializable(package="zoo")
class AttentionTransformerMaskedLM(Task):
    """Masked-token prediction on an `AttentionTransformerBackbone`.

    The self-supervised pre-training task (BERT's masked language model):
    some input tokens are hidden (replaced by `[MASK]`, a random token, or
    left as they are; `MaskedTokenPreprocessor` does it to raw strings) and
    the model predicts the original token at those positions from the
    backbone's fused sequence:

        sequence_output → Dense(hidden_dim, gelu) → LayerNormalization
                        → Dense(vocabulary_size) → logits per position

    Pre-training on the task's own training texts gives the backbone word
    and attention patterns that the labels alone do not teach; the backbone
    then serves a classifier (`backbone.save_to_preset(folder)` and
    `AttentionTransformerClassifier.from_preset(folder)`, or the weights
    directly).

    Args:
        backbone: an `AttentionTransformerBackbone`.
        preprocessor: optional `MaskedTokenPreprocessor`; with it, `fit`
            takes raw strings.
        **kwargs: `keras.Model` arguments such as `name`.

    Call arguments:
        inputs: `{"token_ids", "padding_mask"}` as for the backbone, with
            some token ids masked.

    Returns:
        float32 logits `(B, T, vocabulary_size)`.

    Example:

    ```python
    backbone = AttentionTransformerBackbone(vocabulary_size=8000, num_layers=2, hidden_dim=64)
    masked_lm = AttentionTransformerMaskedLM(
        backbone, preprocessor=MaskedTokenPreprocessor(vocabulary, sequence_length=64))
    masked_lm.compile()
    masked_lm.fit(texts_dataset)  # batches of raw strings
    ```
    """

    backbone_cls = AttentionTransformerBackbone
    preprocessor_cls = MaskedTokenPreprocessor

    def __init__(
        self,
        backbone: AttentionTransformerBackbone,
        preprocessor: Optional[MaskedTokenPreprocessor] = None,
        **kwargs,
    ):
        self.check_components(backbone, preprocessor)
        inputs = _token_inputs()
        sequence = backbone(inputs)["sequence_output"]
        x = keras.layers.Dense(backbone.hidden_dim, activation="gelu", name="mlm_transform")(
            sequence
        )
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="mlm_layer_norm")(x)
        logits = keras.layers.Dense(backbone.vocabulary_size, name="mlm_logits", dtype="float32")(x)
        super().__init__(
            inputs=inputs, outputs=logits, backbone=backbone, preprocessor=preprocessor, **kwargs
        )

    def default_compile_arguments(self) -> dict:
        """AdamW(1e-3); cross-entropy on the logits with the original token
        ids as labels; `SparseCategoricalAccuracy("accuracy")` weighted by
        the sample weights (1 at the masked positions): the masked-token
        accuracy."""
        return {
            **super().default_compile_arguments(),
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        }
