"""The translator: a Transformer encoder–decoder, and its task with cached generation."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import keras
from keras import ops
from keras import tree

from kerasattn import layers
from kerasattn.layers import _validation
from zoo.backbone import Backbone
from zoo.backbone import per_layer
from zoo.backbone import resized_blocks_config
from zoo.distribute import scale_loss_for_replicas
from zoo.task import Task
from zoo.translator.preprocessor import END_ID
from zoo.translator.preprocessor import PAD_ID
from zoo.translator.preprocessor import START_ID
from zoo.translator.preprocessor import TranslatorPreprocessor

CROSS_ATTENTIONS = ("multi_head", "additive")
POSITION_ENCODINGS = ("sinusoidal", "learned")
# Generated lengths are rounded up to a multiple of this, so that `generate`
# traces its loop for a few lengths only.
_LENGTH_BUCKET = 8


def translator_inputs() -> dict:
    """The symbolic inputs of the backbone and the translator."""
    return {
        name: keras.Input(shape=(None,), dtype=dtype, name=name)
        for name, dtype in (("encoder_token_ids", "int32"), ("encoder_padding_mask", "bool"),
                            ("decoder_token_ids", "int32"), ("decoder_padding_mask", "bool"))
    }


@keras.saving.register_keras_serializable(package="zoo")
class ReversibleEmbedding(keras.layers.Embedding):
    """A token embedding that also maps vectors back to token scores.

    `call(ids)` looks the ids up as `keras.layers.Embedding` does;
    `call(vectors, reverse=True)` returns `vectors @ embeddingsᵀ`, the
    logits of an output layer tied to the embedding (Press & Wolf, 2017),
    which a translator with one vocabulary for both languages shares
    between source, target and output.

    Args:
        input_dim: number of token ids.
        output_dim: embedding width.
        **kwargs: `keras.layers.Embedding` arguments.

    Call arguments:
        inputs: int ids `(B, T)`, or `(B, T, output_dim)` vectors with `reverse=True`.
        reverse: whether to map vectors to logits.

    Returns:
        `(B, T, output_dim)` embeddings, or `(B, T, input_dim)` logits.

    Example:

    ```python
    embedding = ReversibleEmbedding(100, 8)
    vectors = embedding(np.array([[3, 4]]))       # (1, 2, 8)
    logits = embedding(vectors, reverse=True)     # (1, 2, 100)
    ```
    """

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            return super().call(inputs)
        kernel = ops.cast(self.embeddings, self.compute_dtype)
        return ops.matmul(ops.cast(inputs, self.compute_dtype), ops.transpose(kernel))

    def compute_output_spec(self, inputs, reverse: bool = False):
        if not reverse:
            return super().compute_output_spec(inputs)
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.input_dim,),
                                 dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="zoo")
class AdditiveCrossAttention(keras.layers.Layer):
    """A pre-norm residual sub-layer of Bahdanau attention over the encoder outputs.

    `x + Dropout(AdditiveAttention(LN(x), encoder_sequence))`, with this
    package's `kerasattn.layers.AdditiveAttention` (vᵀ tanh(W_q q + W_k k)).
    `TransformerDecoderBlock`'s cross-attention is multi-head only, so the
    translator's `cross_attention="additive"` decoder layer is a block built
    without cross-attention (causal self-attention and feed-forward)
    followed by this sub-layer.

    Args:
        units: width of the additive score's hidden layer; `None` for the
            decoder width.
        dropout: dropout on the sub-layer's output before the residual sum.
        attention_dropout: dropout on the attention weights.
        layer_norm_epsilon: epsilon of the layer normalization.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Call arguments:
        decoder_sequence: `(B, Tq, d)`.
        encoder_sequence: `(B, Tk, d)`.
        encoder_padding_mask: optional `(B, Tk)`, True at real positions.
        return_attention_scores: also return the `(B, Tq, Tk)` weights.
        training: whether dropout is active.

    Returns:
        `(B, Tq, d)`, and with `return_attention_scores=True` the weights.

    Example:

    ```python
    layer = AdditiveCrossAttention()
    layer(np.ones((2, 3, 8)), np.ones((2, 5, 8))).shape  # (2, 3, 8)
    ```
    """

    def __init__(self, units: Optional[int] = None, dropout: float = 0.0,
                 attention_dropout: float = 0.0, layer_norm_epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.units = _validation.positive_int("units", units, allow_none=True)
        self.dropout = _validation.rate("dropout", dropout)
        self.attention_dropout = _validation.rate("attention_dropout", attention_dropout)
        self.layer_norm_epsilon = _validation.positive_number("layer_norm_epsilon",
                                                              layer_norm_epsilon)

    def build(self, decoder_sequence_shape, encoder_sequence_shape):
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm")
        self.layer_norm.build(decoder_sequence_shape)
        self.attention = layers.AdditiveAttention(
            units=self.units, dropout=self.attention_dropout, dtype=self.dtype_policy,
            name="attention")
        self.attention.build(decoder_sequence_shape, encoder_sequence_shape)
        self.output_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy,
                                                   name="output_dropout")

    def call(self, decoder_sequence, encoder_sequence, encoder_padding_mask=None,
             return_attention_scores: bool = False, training=None):
        attended, scores = self.attention(
            self.layer_norm(decoder_sequence), encoder_sequence,
            value_mask=encoder_padding_mask, return_attention_scores=True, training=training,
        )
        output = decoder_sequence + self.output_dropout(attended, training=training)
        return (output, scores) if return_attention_scores else output

    def compute_output_spec(self, decoder_sequence, encoder_sequence, encoder_padding_mask=None,
                            return_attention_scores: bool = False, training=None):
        output = keras.KerasTensor(decoder_sequence.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        scores_shape = tuple(decoder_sequence.shape[:2]) + (encoder_sequence.shape[1],)
        return output, keras.KerasTensor(scores_shape, dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon}


@keras.saving.register_keras_serializable(package="zoo")
class TranslatorBackbone(Backbone):
    """A Transformer encoder–decoder: source and target ids to decoder features.

    Source and target tokens are embedded (one `ReversibleEmbedding` for
    both with `share_embeddings=True`, for a joint vocabulary), scaled by
    `sqrt(hidden_dim)` and given positions; `num_encoder_layers` pre-norm
    `TransformerEncoderBlock`s encode the source, and `num_decoder_layers`
    decoder layers read the target causally while attending to the source:

    - `cross_attention="multi_head"` (Vaswani et al., 2017): each layer is a
      pre-norm `TransformerDecoderBlock` (causal self-attention, multi-head
      cross-attention, feed-forward);
    - `cross_attention="additive"` (Bahdanau et al., 2015): each layer is a
      `TransformerDecoderBlock` without cross-attention (causal
      self-attention, feed-forward) followed by an `AdditiveCrossAttention`
      sub-layer, since the block's cross-attention is multi-head only.

    Both stacks end in a layer normalization.

    Incremental decoding: `encode` once, `cross_attention_cache` once,
    `initial_cache`, then `decode_step` per position (a key/value cache of
    the self-attention updated in place; for multi-head cross-attention the
    encoder's keys and values projected once). It gives the full causal
    pass's features to float tolerance; `Translator.generate` drives it with
    `kerasattn.generation`.

    Args:
        vocabulary_size: number of source token ids (of both languages with
            `share_embeddings`); id 0 is padding.
        target_vocabulary_size: number of target ids; `None` for
            `vocabulary_size` (required to be equal with `share_embeddings`).
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder layers.
        hidden_dim: model width `d`.
        num_heads: attention heads (dividing `hidden_dim`), or (a pruned
            backbone's) one count per block: the encoder blocks', then the
            decoder blocks' self-attention's; a list needs `head_dim`.
        intermediate_dim: feed-forward width of every block, or one per
            block (encoder blocks first).
        dropout: dropout after the embeddings and in every block.
        attention_dropout: dropout on attention weights.
        cross_attention: `"multi_head"` or `"additive"`.
        share_embeddings: one embedding table for source and target.
        position_encoding: `"sinusoidal"` (any length) or `"learned"` (up to
            `max_sequence_length`).
        max_sequence_length: the longest sequence of learned positions.
        activation: feed-forward activation.
        cross_attention_num_heads: with multi-head cross-attention, its heads
            per decoder block: `None` for the self-attention's count, an int,
            or one per decoder block (a pruned backbone's).
        head_dim: width of every attention head; `None` for `hidden_dim //
            num_heads`.
        dtype: dtype policy of every layer.
        **kwargs: `keras.Model` arguments such as `name`.

    Call arguments:
        inputs: `{"encoder_token_ids", "encoder_padding_mask",
            "decoder_token_ids", "decoder_padding_mask"}`, `(B, Ts)` and
            `(B, Tt)`, masks True at real tokens (as `TranslatorPreprocessor`
            makes them).

    Returns:
        `{"encoder_sequence_output": (B, Ts, d), "sequence_output": (B, Tt, d)}`.

    Example:

    ```python
    backbone = TranslatorBackbone(vocabulary_size=1000, num_encoder_layers=2,
                                  num_decoder_layers=2, hidden_dim=64)
    outputs = backbone({
        "encoder_token_ids": np.array([[5, 9, 0]]),
        "encoder_padding_mask": np.array([[True, True, False]]),
        "decoder_token_ids": np.array([[2, 7]]),
        "decoder_padding_mask": np.array([[True, True]]),
    })
    outputs["sequence_output"].shape  # (1, 2, 64)
    ```
    """

    def __init__(
        self,
        vocabulary_size: int,
        target_vocabulary_size: Optional[int] = None,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        hidden_dim: int = 256,
        num_heads: Union[int, Sequence[int]] = 4,
        intermediate_dim: Union[int, Sequence[int]] = 1024,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        cross_attention: str = "multi_head",
        share_embeddings: bool = True,
        position_encoding: str = "sinusoidal",
        max_sequence_length: int = 256,
        activation: str = "relu",
        cross_attention_num_heads: Union[None, int, Sequence[int]] = None,
        head_dim: Optional[int] = None,
        dtype=None,
        **kwargs,
    ):
        for name, value in (("vocabulary_size", vocabulary_size),
                            ("num_encoder_layers", num_encoder_layers),
                            ("num_decoder_layers", num_decoder_layers),
                            ("hidden_dim", hidden_dim),
                            ("max_sequence_length", max_sequence_length)):
            _validation.positive_int(name, value)
        _validation.positive_int("head_dim", head_dim, allow_none=True)
        blocks = num_encoder_layers + num_decoder_layers
        heads_per_block = per_layer("num_heads", num_heads, blocks)
        units_per_block = per_layer("intermediate_dim", intermediate_dim, blocks)
        if head_dim is None and not isinstance(num_heads, int):
            raise ValueError(
                "Expected `head_dim` with a list of head counts (the heads' width is then "
                f"not `hidden_dim // num_heads`), received: num_heads={list(num_heads)!r}, "
                "head_dim=None")
        _validation.positive_int("target_vocabulary_size", target_vocabulary_size,
                                 allow_none=True)
        _validation.rate("dropout", dropout)
        _validation.rate("attention_dropout", attention_dropout)
        _validation.one_of("cross_attention", cross_attention, CROSS_ATTENTIONS)
        _validation.one_of("position_encoding", position_encoding, POSITION_ENCODINGS)
        cross_heads = [None] * num_decoder_layers
        if cross_attention == "multi_head":
            cross_heads = per_layer(
                "cross_attention_num_heads", heads_per_block[num_encoder_layers:]
                if cross_attention_num_heads is None else cross_attention_num_heads,
                num_decoder_layers)
        elif cross_attention_num_heads is not None:
            raise ValueError(
                "Expected no `cross_attention_num_heads` with additive cross-attention (it has "
                f"no heads), received: cross_attention_num_heads={cross_attention_num_heads!r}")
        if head_dim is None and hidden_dim % num_heads:
            raise ValueError("Expected `hidden_dim` divisible by `num_heads`, received: "
                             f"hidden_dim={hidden_dim}, num_heads={num_heads}")
        target_size = target_vocabulary_size or vocabulary_size
        if share_embeddings and target_size != vocabulary_size:
            raise ValueError(
                "Expected one vocabulary size with `share_embeddings=True`, received: "
                f"vocabulary_size={vocabulary_size}, target_vocabulary_size={target_size}")

        inputs = translator_inputs()
        if share_embeddings:
            source_embedding = target_embedding = ReversibleEmbedding(
                vocabulary_size, hidden_dim, name="token_embedding", dtype=dtype)
        else:
            source_embedding = ReversibleEmbedding(
                vocabulary_size, hidden_dim, name="source_token_embedding", dtype=dtype)
            target_embedding = ReversibleEmbedding(
                target_size, hidden_dim, name="target_token_embedding", dtype=dtype)
        # Scaled as in Vaswani et al., so that positions do not drown the embeddings.
        scale = keras.layers.Rescaling(hidden_dim**0.5, name="embedding_scale", dtype=dtype)

        def positions(name):
            if position_encoding == "learned":
                return layers.PositionEmbedding(max_sequence_length, name=name, dtype=dtype)
            return layers.SinusoidalPositionEncoding(name=name, dtype=dtype)

        self._embedding_layers = {
            "encoder": (source_embedding, positions("encoder_position_encoding"),
                        keras.layers.Dropout(dropout, name="encoder_embedding_dropout",
                                             dtype=dtype)),
            "decoder": (target_embedding, positions("decoder_position_encoding"),
                        keras.layers.Dropout(dropout, name="decoder_embedding_dropout",
                                             dtype=dtype)),
        }
        self._scale = scale
        block_arguments = dict(key_dim=head_dim, dropout=dropout,
                               attention_dropout=attention_dropout, activation=activation,
                               norm_first=True, dtype=dtype)
        self._encoder_blocks = [
            layers.TransformerEncoderBlock(
                heads_per_block[index], units_per_block[index], **block_arguments,
                name=f"encoder_block_{index}")
            for index in range(num_encoder_layers)
        ]
        self._decoder_blocks = [
            layers.TransformerDecoderBlock(
                heads_per_block[num_encoder_layers + index],
                units_per_block[num_encoder_layers + index], **block_arguments,
                cross_attention_num_heads=cross_heads[index], name=f"decoder_block_{index}")
            for index in range(num_decoder_layers)
        ]
        self._additive_layers = [
            AdditiveCrossAttention(dropout=dropout, attention_dropout=attention_dropout,
                                   name=f"additive_cross_attention_{index}", dtype=dtype)
            for index in range(num_decoder_layers)
        ] if cross_attention == "additive" else []
        self._encoder_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="encoder_output_layer_norm", dtype=dtype)
        self._decoder_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="decoder_output_layer_norm", dtype=dtype)

        encoded = self._encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
        x = self._embed("decoder", inputs["decoder_token_ids"])
        for index in range(num_decoder_layers):
            x = self._decoder_layer(index, x, encoded, inputs["encoder_padding_mask"],
                                    decoder_padding_mask=inputs["decoder_padding_mask"])
        outputs = {"encoder_sequence_output": encoded, "sequence_output": self._decoder_norm(x)}
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.target_vocabulary_size = target_vocabulary_size
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads if isinstance(num_heads, int) else list(num_heads)
        self.intermediate_dim = (intermediate_dim if isinstance(intermediate_dim, int)
                                 else list(intermediate_dim))
        self.cross_attention_num_heads = (
            cross_attention_num_heads if cross_attention_num_heads is None
            or isinstance(cross_attention_num_heads, int) else list(cross_attention_num_heads))
        self.head_dim = head_dim
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.cross_attention = cross_attention
        self.share_embeddings = bool(share_embeddings)
        self.position_encoding = position_encoding
        self.max_sequence_length = max_sequence_length
        self.activation = activation

    # -- the graph's pieces, shared by the functional pass and decoding -------

    @property
    def target_token_embedding(self) -> ReversibleEmbedding:
        """The target embedding (also the tied output layer's weights)."""
        return self._embedding_layers["decoder"][0]

    def _embed(self, side: str, token_ids, start_index=0, training=None):
        embedding, position, dropout = self._embedding_layers[side]
        x = self._scale(embedding(token_ids))
        if isinstance(start_index, int) and start_index == 0:
            x = x + position(x)
        else:
            x = x + position(x, start_index=start_index)
        return dropout(x, training=training)

    def _encode(self, token_ids, padding_mask, training=None):
        x = self._embed("encoder", token_ids, training=training)
        for block in self._encoder_blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        return self._encoder_norm(x)

    def _decoder_layer(self, index: int, x, encoder_sequence, encoder_padding_mask,
                       training=None, **cache_arguments):
        """Decoder layer `index`; with a self-attention cache, returns `(x, cache)`."""
        block = self._decoder_blocks[index]
        cross_cache = cache_arguments.pop("cross_attention_cache", None)
        cached = "self_attention_cache" in cache_arguments
        if self.additive_cross_attention:
            result = block(x, training=training, **cache_arguments)
            x, cache = result if cached else (result, None)
            x = self._additive_layers[index](x, encoder_sequence if cross_cache is None
                                             else cross_cache,
                                             encoder_padding_mask=encoder_padding_mask,
                                             training=training)
            return (x, cache) if cached else x
        if cross_cache is not None:
            cache_arguments["cross_attention_cache"] = cross_cache
            encoder_sequence = None
        return block(x, encoder_sequence, encoder_padding_mask=encoder_padding_mask,
                     training=training, **cache_arguments)

    @property
    def additive_cross_attention(self) -> bool:
        return bool(self._additive_layers)

    # -- incremental decoding -------------------------------------------------

    def encode(self, encoder_token_ids, encoder_padding_mask):
        """The encoder's outputs `(B, Ts, d)` of source ids, for inference.

        Args:
            encoder_token_ids: int `(B, Ts)`.
            encoder_padding_mask: bool `(B, Ts)`, True at real tokens.
        """
        return self._encode(encoder_token_ids, encoder_padding_mask, training=False)

    def cross_attention_cache(self, encoder_sequence) -> tuple:
        """What each decoder layer attends to in the source, computed once per source.

        Returns:
            One per decoder layer: with multi-head cross-attention the
            projected `(keys, values)`, `(B, K, key_dim, Ts)` and
            `(B, K, Ts, key_dim)`, of
            `TransformerDecoderBlock.compute_cross_attention_cache`; with
            additive cross-attention the encoder outputs themselves (its key
            projection is inside `AdditiveAttention`'s score).
        """
        if self.additive_cross_attention:
            return tuple(encoder_sequence for _ in self._decoder_blocks)
        return tuple(block.compute_cross_attention_cache(encoder_sequence)
                     for block in self._decoder_blocks)

    def initial_cache(self, batch_size, max_length: int) -> tuple:
        """Empty self-attention caches, one `(keys, values)` per decoder layer: `(B, K,
        key_dim, max_length)` and `(B, K, max_length, key_dim)`."""
        return tuple(block.initial_cache(batch_size, max_length)
                     for block in self._decoder_blocks)

    def decode_step(self, decoder_token_ids, index, cache: Sequence, cross_attention_cache,
                    encoder_padding_mask):
        """Decodes target positions `[index, index + T)` with the caches.

        Args:
            decoder_token_ids: int `(B, T)`, the target ids at those
                positions (usually `T = 1`, the token chosen last).
            index: int or int32 scalar tensor, the position of the first.
            cache: the self-attention caches from `initial_cache` (or the
                previous step).
            cross_attention_cache: from `cross_attention_cache`.
            encoder_padding_mask: bool `(B, Ts)`.

        Returns:
            `(features, cache)`: the `(B, T, d)` decoder features (what the
            functional pass's `"sequence_output"` holds at those positions)
            and the updated caches.
        """
        x = self._embed("decoder", decoder_token_ids, start_index=index, training=False)
        updated = []
        for layer_index, (layer_cache, cross) in enumerate(zip(cache, cross_attention_cache)):
            x, layer_cache = self._decoder_layer(
                layer_index, x, None, encoder_padding_mask, training=False,
                self_attention_cache=layer_cache, self_attention_cache_update_index=index,
                cross_attention_cache=cross,
            )
            updated.append(layer_cache)
        return self._decoder_norm(x), tuple(updated)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "target_vocabulary_size": self.target_vocabulary_size,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "cross_attention": self.cross_attention,
            "share_embeddings": self.share_embeddings,
            "position_encoding": self.position_encoding,
            "max_sequence_length": self.max_sequence_length,
            "activation": self.activation,
            "cross_attention_num_heads": self.cross_attention_num_heads,
            "head_dim": self.head_dim,
        }

    def pruned_config(self, updates: dict) -> dict:
        """This backbone's config with blocks resized by `kerasattn.prune`.

        Args:
            updates: block name (`encoder_block_<i>`, `decoder_block_<i>`) ->
                the config entries `kerasattn.prune.prune_model` changes: a
                decoder block's `cross_attention_num_heads` here, the rest in
                `zoo.backbone.resized_blocks_config`.

        Returns:
            The config, with per-block lists of heads and units.
        """
        decoder_names = [block.name for block in self._decoder_blocks]
        cross_heads = [None if block._cross_attention is None
                       else block._cross_attention.num_heads for block in self._decoder_blocks]
        sizes = {}
        for name, entries in updates.items():
            entries = dict(entries)
            if "cross_attention_num_heads" in entries and name in decoder_names:
                cross_heads[decoder_names.index(name)] = entries.pop("cross_attention_num_heads")
            sizes[name] = entries
        config = resized_blocks_config(self, sizes, (
            ("encoder_block_", self.num_encoder_layers),
            ("decoder_block_", self.num_decoder_layers)))
        if not self.additive_cross_attention:
            config["cross_attention_num_heads"] = cross_heads
        return config


class _TracedDecoders:
    """`Translator.generate`'s traced functions by setting.

    A plain object rather than a dict attribute: TensorFlow would track a dict
    (and then refuse to save the model with `tf.saved_model.save`, its keys
    being tuples), and the functions are a cache, not state.
    """

    def __init__(self):
        self.functions = {}


@keras.saving.register_keras_serializable(package="zoo")
class Translator(Task):
    """A translator: a `TranslatorBackbone` and next-token logits, trained with teacher forcing.

    The model maps the backbone's inputs to float logits `(B, Tt,
    target_vocabulary_size)`, one row per decoder position, scoring the
    next target token; with `tie_embeddings` the output layer is the
    target embedding transposed. `fit` takes raw `(source, target)` string
    pairs through the preprocessor (decoder input `[START] + target`,
    labels `target + [END]`, padding weighted 0); the loss is the token
    cross-entropy with `label_smoothing`, averaged over real target tokens.
    `generate` decodes source ids with the backbone's caches and
    `kerasattn.generation` (greedy or beam search); `translate` goes from
    strings to strings.

    Args:
        backbone: a `TranslatorBackbone`.
        preprocessor: optional `TranslatorPreprocessor`.
        tie_embeddings: score tokens with the target embedding (no separate
            output layer).
        label_smoothing: in [0, 1), the probability mass spread uniformly
            over the vocabulary in the training targets.
        **kwargs: `name`.

    Example:

    ```python
    translator = Translator(backbone, preprocessor)
    translator.fit(["A dog runs."], ["Ein Hund rennt."], epochs=1)
    translator.translate(["A dog runs."], beam=4)  # ["Ein Hund rennt."]
    ```
    """

    backbone_cls = TranslatorBackbone
    preprocessor_cls = TranslatorPreprocessor

    def __init__(self, backbone: TranslatorBackbone,
                 preprocessor: Optional[TranslatorPreprocessor] = None,
                 tie_embeddings: bool = True, label_smoothing: float = 0.1, **kwargs):
        self.check_components(backbone, preprocessor)
        _validation.rate("label_smoothing", label_smoothing)
        if preprocessor is not None:
            sizes = (preprocessor.vocabulary_size, preprocessor.target_vocabulary_size)
            expected = (backbone.vocabulary_size,
                        backbone.target_vocabulary_size or backbone.vocabulary_size)
            if sizes != expected:
                raise ValueError(
                    "Expected a preprocessor with the backbone's vocabulary sizes "
                    f"{expected}, received: {sizes}")
        inputs = translator_inputs()
        features = backbone(inputs)["sequence_output"]
        if tie_embeddings:
            head = backbone.target_token_embedding
            logits = head(features, reverse=True)
        else:
            head = keras.layers.Dense(
                backbone.target_vocabulary_size or backbone.vocabulary_size, name="logits",
                dtype=backbone.dtype_policy)
            logits = head(features)
        super().__init__(inputs=inputs, outputs=logits, backbone=backbone,
                         preprocessor=preprocessor, **kwargs)
        self.tie_embeddings = bool(tie_embeddings)
        self.label_smoothing = float(label_smoothing)
        self._generators = _TracedDecoders()

    def _logits(self, features):
        if self.tie_embeddings:
            return self.backbone.target_token_embedding(features, reverse=True)
        return self.get_layer("logits")(features)

    def head_layers(self) -> list:
        # The tied output layer is the backbone's embedding, saved with the backbone.
        owned = {id(layer) for layer in self.backbone.layers}
        return [layer for layer in super().head_layers() if id(layer) not in owned]

    def default_compile_arguments(self) -> dict:
        return {
            **super().default_compile_arguments(),
            "optimizer": keras.optimizers.AdamW(5e-4),
            "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        weights = (ops.cast(labels != PAD_ID, "float32") if sample_weight is None
                   else ops.reshape(ops.cast(sample_weight, "float32"), (-1,)))
        # Only the weighted positions' rows go through the float32 softmax: about
        # half of a batch's (B * T, V) logits are padding, and these passes over the
        # full vocabulary are memory-bound, so they cost as much in bfloat16.
        (weighted,) = ops.nonzero(weights)
        logits = ops.take(ops.reshape(y_pred, (-1, ops.shape(y_pred)[-1])), weighted, axis=0)
        log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        labels, weights = ops.take(labels, weighted), ops.take(weights, weighted)
        loss = -ops.squeeze(ops.take_along_axis(log_probs, labels[:, None], axis=-1), -1)
        if self.label_smoothing:
            # Cross-entropy against (1 - e) * one_hot + e / V, as Keras's label_smoothing.
            loss = (1.0 - self.label_smoothing) * loss - self.label_smoothing * ops.mean(
                log_probs, axis=-1)
        loss = ops.sum(loss * weights) / ops.maximum(ops.sum(weights), 1.0)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return scale_loss_for_replicas(loss)

    # -- generation -----------------------------------------------------------

    def default_max_length(self, source_length: int) -> int:
        """The generated length (start token included) for sources of `source_length` tokens.

        `1.5 * source_length + 10` tokens, rounded up to a multiple of 8 and
        at most the preprocessor's `target_sequence_length` (128 without one).
        """
        return int(self._max_length_for(source_length))

    def _default_max_length_in_graph(self, source_padding_mask):
        """`default_max_length` of the batch's longest source, as a scalar int32 tensor."""
        return self._max_length_for(
            ops.max(ops.sum(ops.cast(source_padding_mask, "int32"), axis=1), initial=1))

    def _max_length_for(self, longest):
        """`default_max_length`'s rule on an int, or in a graph a scalar int32 tensor."""
        limit = 128 if self.preprocessor is None else self.preprocessor.target_sequence_length
        wanted = (3 * longest + 1) // 2 + 10  # ceil(1.5 * longest) + 10
        return ops.minimum(limit, _LENGTH_BUCKET * ((wanted + _LENGTH_BUCKET - 1)
                                                    // _LENGTH_BUCKET)) + 1

    def _generator(self, beam: int, max_length: int, length_penalty: float):
        """The traced decoding function of one setting (traced once, then reused)."""
        key = (beam, max_length, length_penalty)
        if key not in self._generators.functions:
            self._generators.functions[key] = self.decoding_function(beam, max_length,
                                                                     length_penalty)
        return self._generators.functions[key]

    def decoding_function(self, beam: int, max_length: int, length_penalty: float = 0.6):
        """A new `tf.function` from source ids to target ids: `generate` as one graph.

        The encoder, the cross-attention caches and the cached greedy or
        beam search loop, for any batch size and source length. Each call
        returns a function not yet traced, so that an exporter traces it in
        its own context (`kerasattn.ops.tracing.export_graph`).

        Args:
            beam: 1 for greedy search, else the beam width.
            max_length: the output length, start token included (at least 2).
            length_penalty: GNMT's `alpha` of beam search.

        Returns:
            A `tf.function` taking int32 `source_ids (B, Ts)` and bool
            `source_padding_mask (B, Ts)` and returning int32 `(B,
            max_length)` ids, as `generate`.

        Example:

        ```python
        run = translator.decoding_function(beam=4, max_length=33)
        ids = run(features["encoder_token_ids"], features["encoder_padding_mask"])
        ```
        """
        import tensorflow as tf

        # One trace per setting, whatever the batch's shape.
        @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32),
                                      tf.TensorSpec((None, None), tf.bool)])
        def run(source_ids, source_padding_mask):
            return self._decode(source_ids, source_padding_mask, beam, max_length, length_penalty)

        return run

    def _decode(self, source_ids, source_padding_mask, beam: int, max_length,
                length_penalty: float):
        """The encoder, the cross-attention caches and the search loop, traced
        in the caller's graph; `max_length` an int or a scalar int32 tensor."""
        from kerasattn import generation

        backbone = self.backbone
        encoded = backbone.encode(source_ids, source_padding_mask)
        batch = ops.shape(source_ids)[0]
        cross = backbone.cross_attention_cache(encoded)
        mask = source_padding_mask
        if beam > 1:
            # Every beam of a row reads the same source: repeat it once, outside the loop.
            cross, mask = tree.map_structure(
                lambda x: ops.repeat(x, beam, axis=0), (cross, mask))

        def next_fn(ids, cache, index):
            token = ops.take(ids, index - 1, axis=1)[:, None]
            features, cache = backbone.decode_step(token, index - 1, cache, cross, mask)
            return self._logits(features)[:, 0], cache

        prompt = ops.full((batch, 1), START_ID, dtype="int32")
        cache = backbone.initial_cache(batch, max_length)
        if beam == 1:
            return generation.greedy_search(next_fn, prompt, cache, max_length=max_length,
                                            end_id=END_ID, pad_id=PAD_ID)
        ids, _ = generation.beam_search(
            next_fn, prompt, cache, max_length=max_length, beam_width=beam,
            length_penalty_alpha=length_penalty, end_id=END_ID, pad_id=PAD_ID)
        return ids

    def generate(self, source_ids, source_padding_mask=None, beam: int = 1,
                 max_length: Optional[int] = None, length_penalty: float = 0.6):
        """Translates source ids into target ids with the cached decoder.

        Args:
            source_ids: int `(B, Ts)` source ids (as the preprocessor's
                `"encoder_token_ids"`), padded with 0.
            source_padding_mask: optional bool `(B, Ts)`; defaults to `source_ids != 0`.
            beam: 1 for greedy search, else the beam width.
            max_length: the output length, start token included; defaults to
                `default_max_length` of the longest source.
            length_penalty: GNMT's `alpha` of beam search (0 ranks by
                log-probability; ignored by greedy search).

        Returns:
            int32 `(B, max_length)`: `[START]`, the translation, `[END]`,
            then padding (a row may end without `[END]` at `max_length`).
        """
        import numpy as np

        source_ids = np.asarray(keras.ops.convert_to_numpy(source_ids))
        if source_ids.ndim != 2 or source_ids.dtype.kind not in "iu":
            raise ValueError("Expected `source_ids` of integer ids shaped (batch, length), "
                             f"received: shape={source_ids.shape}, dtype={source_ids.dtype}")
        _validation.positive_int("beam", beam)
        if source_padding_mask is None:
            source_padding_mask = source_ids != PAD_ID
        source_padding_mask = np.asarray(keras.ops.convert_to_numpy(source_padding_mask), bool)
        if source_padding_mask.shape != source_ids.shape:
            raise ValueError(
                "Expected `source_padding_mask` shaped as `source_ids` "
                f"{source_ids.shape}, received: {source_padding_mask.shape}")
        if max_length is None:
            max_length = self.default_max_length(int(source_padding_mask.sum(axis=1).max(
                initial=1)))
        _validation.positive_int("max_length", max_length)
        if max_length < 2:
            raise ValueError("Expected `max_length` of at least 2 (the start token and one "
                             f"more), received: max_length={max_length}")
        run = self._generator(beam, max_length, float(length_penalty))
        return run(source_ids.astype("int32"), source_padding_mask)

    def translate(self, texts: Sequence[str], beam: int = 1, max_length: Optional[int] = None,
                  length_penalty: float = 0.6, batch_size: int = 64,
                  truncate: bool = False) -> list[str]:
        """Translates raw sentences.

        Args:
            texts: the source sentences (non-empty strings).
            beam: 1 for greedy search, else the beam width.
            max_length: the most target tokens (the end token included);
                defaults to `default_max_length` of each batch's longest source.
            length_penalty: GNMT's `alpha` of beam search.
            batch_size: sentences decoded together (sorted by length, so a
                batch pads little; the results keep the order given).
            truncate: cut sources longer than the preprocessor's
                `source_sequence_length` rather than raise.

        Returns:
            The translations, one string per text.

        Raises:
            ValueError: for an empty text or (without `truncate`) a text of
                more subword tokens than the model reads. Bytes that are not
                UTF-8 are no error: they read as U+FFFD.
        """
        import numpy as np

        if self.preprocessor is None:
            raise ValueError("Expected a translator with a preprocessor, "
                             "received: preprocessor=None")
        if isinstance(texts, (str, bytes)):
            raise ValueError(f"Expected a list of texts, received: a single string {texts!r:.60}")
        # Bytes that are not UTF-8 (given as bytes, or as the lone surrogates Python
        # makes of them in command-line arguments) read as U+FFFD.
        texts = [text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
                 for text in texts]
        texts = [text.decode("utf-8", "replace") if isinstance(text, bytes) else text
                 for text in texts]
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Expected non-empty texts, received: texts[{index}]={text!r}")
        _validation.positive_int("batch_size", batch_size)
        lengths = self.preprocessor.source_lengths(texts)
        limit = self.preprocessor.source_sequence_length
        if not truncate and lengths.max(initial=0) > limit:
            index = int(np.argmax(lengths))
            raise ValueError(
                f"Expected texts of at most {limit} subword tokens (the model's "
                f"source_sequence_length), received: texts[{index}] of {int(lengths[index])}; "
                "pass truncate=True to cut it")
        order = np.argsort(lengths, kind="stable")
        results: list[Optional[str]] = [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            indices = order[start:start + batch_size]
            features = self.preprocessor([texts[i] for i in indices])
            ids = self.generate(features["encoder_token_ids"], features["encoder_padding_mask"],
                                beam=beam,
                                max_length=None if max_length is None else max_length + 1,
                                length_penalty=length_penalty)
            for index, text in zip(indices, self.preprocessor.detokenize(ids[:, 1:])):
                results[index] = text
        return results

    def translate_function(self, beam: int = 1, max_length: Optional[int] = None,
                           length_penalty: float = 0.6):
        """The whole translation as one graph: a `tf.function` from strings to strings.

        Tokenisation, the encoder, the cached search loop and detokenisation
        all run inside it, so it serves as a SavedModel's signature (see the
        example). Sources longer than the preprocessor's
        `source_sequence_length` are cut; bytes that are not UTF-8 read as
        U+FFFD (as `translate` reads them); an empty or blank source
        translates to the empty string. The decoding loop is traced anew for
        each function.

        Args:
            beam: 1 for greedy search, else the beam width.
            max_length: the most target tokens (the end token included);
                defaults to `default_max_length` of each batch's longest
                source, computed in the graph (as `translate` does): the
                search's caches and loop are then as long as the batch
                needs, not `target_sequence_length`.
            length_penalty: GNMT's `alpha` of beam search.

        Returns:
            A `tf.function` taking `tf.string` `(B,)` and returning the
            translations, `tf.string` `(B,)`.

        Example:

        ```python
        module = tf.Module()
        module.translator = translator
        translate = translator.translate_function(beam=4)
        tf.saved_model.save(module, "translator", signatures={"translate": translate})
        reloaded = tf.saved_model.load("translator").signatures["translate"]
        reloaded(texts=tf.constant(["A dog runs."]))["output_0"]  # [b"Ein Hund rennt."]
        ```
        """
        import tensorflow as tf

        if self.preprocessor is None:
            raise ValueError("Expected a translator with a preprocessor, "
                             "received: preprocessor=None")
        _validation.positive_int("beam", beam)
        max_length = _validation.positive_int("max_length", max_length, allow_none=True)
        length_penalty = float(length_penalty)
        preprocessor = self.preprocessor

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="texts")])
        def translate(texts):
            texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                                 replacement_char=0xFFFD)
            features = preprocessor(texts)
            mask = features["encoder_padding_mask"]
            length = (self._default_max_length_in_graph(mask) if max_length is None
                      else max_length + 1)
            ids = self._decode(features["encoder_token_ids"], mask, beam, length, length_penalty)
            translations = preprocessor.target_tokenizer.detokenize(ids[:, 1:])
            # Nothing to translate, nothing translated (not what the model makes of nothing).
            blank = tf.equal(tf.strings.length(tf.strings.strip(texts)), 0)
            return tf.where(blank, tf.constant(""), translations)

        return translate

    def get_config(self) -> dict:
        return {**super().get_config(), "tie_embeddings": self.tie_embeddings,
                "label_smoothing": self.label_smoothing}
