"""Small probe models, one or more per layer of `kerasattn.layers`, for export tests.

Each factory builds a tiny functional model around one layer, exercising what
the layer offers at export time: padding masks from `Embedding(mask_zero=True)`,
causal masks, returned attention scores and a dynamic sequence length. It
returns `(model, sample_inputs, representative_data)`: `sample_inputs` is a
dict of NumPy arrays keyed by input name (the parity batch) and
`representative_data` a list of such dicts (the calibration set of full
integer quantization), with other lengths than the sample where the model
allows them.

`PROBES` maps a probe name to its factory; `PROBE_LAYERS` maps it to the
layer class it probes, so a test can check that every layer is covered.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import keras
import numpy as np

from kerasattn import layers

VOCABULARY = 20
# 32 wide, so that most kernels have the 1024 elements from which the
# TFLite converter quantizes weights in "dynamic_int8" mode.
WIDTH = 32
SEED = 7

Inputs = Dict[str, np.ndarray]
ProbeResult = Tuple[keras.Model, Inputs, List[Inputs]]


def _tokens(rng: np.random.Generator, batch: int, length: int, padded: bool = True):
    """int32 `(batch, length)` token ids in [1, VOCABULARY), with trailing
    padding (0) of different lengths per row when `padded`."""
    tokens = rng.integers(1, VOCABULARY, size=(batch, length)).astype("int32")
    if padded:
        for row in range(batch):
            # Row 0 is unpadded; the others lose 1, 2, ... trailing tokens.
            keep = max(1, length - row)
            tokens[row, keep:] = 0
    return tokens


def _sequence_data(names, length: int = 6, padded: bool = True):
    """Sample and representative inputs of one or more token sequences."""
    rng = np.random.default_rng(SEED)
    sample = {name: _tokens(rng, 2, length, padded) for name in names}
    # 192 examples in batches of 3, so that calibration also sees padded rows
    # (row 0 of a batch is never padded); with a few dozen, the int8 range of
    # a pooled output can miss values the sample reaches.
    representative = [
        {name: _tokens(rng, 3, n, padded) for name in names} for n in (3, 5, 6, 8) * 16
    ]
    return sample, representative


def _embedding(mask_zero: bool = True) -> keras.layers.Embedding:
    # Unit-scale vectors, like the LayerNormalization outputs attention usually
    # sees: Keras's default (uniform within ±0.05) makes every score nearly 0
    # and the attention nearly uniform, which hides precision loss.
    return keras.layers.Embedding(
        VOCABULARY,
        WIDTH,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
        mask_zero=mask_zero,
    )


def _embedded_tokens(name: str = "tokens", mask_zero: bool = True):
    keras.utils.set_random_seed(SEED)
    tokens = keras.Input(shape=(None,), dtype="int32", name=name)
    return tokens, _embedding(mask_zero)(tokens)


def _model(inputs, outputs, name: str) -> keras.Model:
    return keras.Model(inputs, outputs, name=name)


# -- multi-head attention ----------------------------------------------------


def multi_head_attention() -> ProbeResult:
    """Causal self-attention over padded tokens, returning the scores."""
    tokens, x = _embedded_tokens()
    output, scores = layers.MultiHeadAttention(num_heads=2, key_dim=16)(
        x, x, use_causal_mask=True, return_attention_scores=True
    )
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [output, scores], "multi_head_attention"), sample, data


def multi_head_attention_gqa() -> ProbeResult:
    """Grouped-query attention (4 query heads, 2 key/value heads)."""
    tokens, x = _embedded_tokens()
    output, scores = layers.MultiHeadAttention(
        num_heads=4, key_dim=8, num_key_value_heads=2
    )(x, x, use_causal_mask=True, return_attention_scores=True)
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [output, scores], "multi_head_attention_gqa"), sample, data


def multi_head_attention_chunked() -> ProbeResult:
    """The chunked (online-softmax) path, several key blocks, causal and
    padded; it returns no scores by design."""
    tokens, x = _embedded_tokens()
    output = layers.MultiHeadAttention(
        num_heads=2, key_dim=16, implementation="chunked", block_size=4
    )(x, x, use_causal_mask=True)
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, output, "multi_head_attention_chunked"), sample, data


# -- single-head attention ---------------------------------------------------


def additive_attention() -> ProbeResult:
    """Causal additive self-attention over padded tokens, with scores."""
    tokens, x = _embedded_tokens()
    output, scores = layers.AdditiveAttention(units=WIDTH)(
        x, x, use_causal_mask=True, return_attention_scores=True
    )
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [output, scores], "additive_attention"), sample, data


def _dot_product(score: str) -> ProbeResult:
    tokens, x = _embedded_tokens()
    output, scores = layers.DotProductAttention(score=score)(
        x, x, use_causal_mask=True, return_attention_scores=True
    )
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [output, scores], f"dot_product_{score}"), sample, data


def dot_product_dot() -> ProbeResult:
    """Luong "dot" self-attention, causal and padded, with scores."""
    return _dot_product("dot")


def dot_product_scaled() -> ProbeResult:
    """Vaswani "scaled" self-attention, causal and padded, with scores."""
    return _dot_product("scaled")


def dot_product_general() -> ProbeResult:
    """Luong "general" self-attention, causal and padded, with scores."""
    return _dot_product("general")


# -- pooling, target and cross-layer attention -------------------------------


def attention_pooling() -> ProbeResult:
    """Two learned queries pool padded tokens through a tanh projection."""
    tokens, x = _embedded_tokens()
    pooled, scores = layers.AttentionPooling(num_queries=2, units=WIDTH)(
        x, return_attention_scores=True
    )
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [pooled, scores], "attention_pooling"), sample, data


def _target(score: str) -> ProbeResult:
    keras.utils.set_random_seed(SEED)
    table = _embedding()
    candidate = keras.Input(shape=(), dtype="int32", name="candidate")
    history = keras.Input(shape=(None,), dtype="int32", name="history")
    kwargs = {"hidden_units": (WIDTH, 16)} if score == "mlp" else {}
    interest, weights = layers.TargetAttention(score=score, **kwargs)(
        table(candidate), table(history), return_attention_scores=True
    )
    rng = np.random.default_rng(SEED)

    def inputs(batch, length):
        return {
            "candidate": rng.integers(1, VOCABULARY, size=(batch,)).astype("int32"),
            "history": _tokens(rng, batch, length),
        }

    sample = inputs(2, 7)
    data = [inputs(3, n) for n in (2, 4, 7, 9) * 16]
    model = _model([candidate, history], [interest, weights], f"target_attention_{score}")
    return model, sample, data


def target_attention_mlp() -> ProbeResult:
    """DIN's activation unit over a padded history of dynamic length."""
    return _target("mlp")


def target_attention_scaled() -> ProbeResult:
    """Scaled dot-product target attention over a padded dynamic history."""
    return _target("scaled")


def cross_layer_attention() -> ProbeResult:
    """Fuses three per-layer states of padded tokens, with scores."""
    tokens, x = _embedded_tokens()
    states = []
    for _ in range(3):
        x = keras.layers.Dense(WIDTH, activation="tanh")(x)
        states.append(x)
    fused, scores = layers.CrossLayerAttention()(states, return_attention_scores=True)
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [fused, scores], "cross_layer_attention"), sample, data


# -- Transformer blocks -------------------------------------------------------


def transformer_encoder_block() -> ProbeResult:
    """A causal pre-norm encoder block over padded tokens, with scores."""
    tokens, x = _embedded_tokens()
    output, scores = layers.TransformerEncoderBlock(
        num_heads=2, intermediate_dim=2 * WIDTH, norm_first=True
    )(x, use_causal_mask=True, return_attention_scores=True)
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, [output, scores], "transformer_encoder_block"), sample, data


def transformer_decoder_block() -> ProbeResult:
    """A decoder block over padded target and source tokens, with the self-
    and cross-attention scores."""
    keras.utils.set_random_seed(SEED)
    source = keras.Input(shape=(None,), dtype="int32", name="source")
    target = keras.Input(shape=(None,), dtype="int32", name="target")
    table = _embedding()
    output, self_scores, cross_scores = layers.TransformerDecoderBlock(
        num_heads=2, intermediate_dim=2 * WIDTH
    )(table(target), table(source), return_attention_scores=True)
    sample, data = _sequence_data(["source", "target"])
    model = _model(
        [source, target], [output, self_scores, cross_scores], "transformer_decoder_block"
    )
    return model, sample, data


# -- position encodings -------------------------------------------------------


def position_embedding() -> ProbeResult:
    """Learned positions (a table of 32) added to token embeddings."""
    tokens, x = _embedded_tokens(mask_zero=False)
    output = keras.layers.Add()([x, layers.PositionEmbedding(sequence_length=32)(x)])
    sample, data = _sequence_data(["tokens"], padded=False)
    return _model(tokens, output, "position_embedding"), sample, data


def sinusoidal_position_encoding() -> ProbeResult:
    """Fixed sinusoidal positions added to token embeddings."""
    tokens, x = _embedded_tokens(mask_zero=False)
    output = keras.layers.Add()([x, layers.SinusoidalPositionEncoding()(x)])
    sample, data = _sequence_data(["tokens"], padded=False)
    return _model(tokens, output, "sinusoidal_position_encoding"), sample, data


def rotary_embedding() -> ProbeResult:
    """RoPE on `(B, T, heads, width)` query-like tensors."""
    tokens, x = _embedded_tokens(mask_zero=False)
    heads = keras.layers.Reshape((-1, 2, WIDTH // 2))(x)
    output = layers.RotaryEmbedding()(heads)
    sample, data = _sequence_data(["tokens"], padded=False)
    return _model(tokens, output, "rotary_embedding"), sample, data


# -- sequence tagging ----------------------------------------------------------


CRF_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


def _crf(name: str, **kwargs) -> ProbeResult:
    tokens, x = _embedded_tokens()
    potentials = keras.layers.Dense(len(CRF_TAGS))(x)
    crf_layer = layers.CRF(len(CRF_TAGS), **kwargs)
    tags = crf_layer(potentials)
    # Transitions as large as the potentials, so that they decide some tags.
    crf_layer.transitions.assign(
        np.random.default_rng(SEED).normal(scale=2.0, size=(len(CRF_TAGS),) * 2)
    )
    sample, data = _sequence_data(["tokens"])
    return _model(tokens, tags, name), sample, data


def crf() -> ProbeResult:
    """Viterbi tags (int32) of padded tokens, 0 at the padding."""
    return _crf("crf")


def crf_iob2() -> ProbeResult:
    """Viterbi tags with the IOB2 constraints (fixed -1e4 scores)."""
    return _crf("crf_iob2", tag_names=CRF_TAGS, scheme="IOB2")


PROBES: Dict[str, Callable[[], ProbeResult]] = {
    "multi_head_attention": multi_head_attention,
    "multi_head_attention_gqa": multi_head_attention_gqa,
    "multi_head_attention_chunked": multi_head_attention_chunked,
    "additive_attention": additive_attention,
    "dot_product_dot": dot_product_dot,
    "dot_product_scaled": dot_product_scaled,
    "dot_product_general": dot_product_general,
    "attention_pooling": attention_pooling,
    "target_attention_mlp": target_attention_mlp,
    "target_attention_scaled": target_attention_scaled,
    "cross_layer_attention": cross_layer_attention,
    "transformer_encoder_block": transformer_encoder_block,
    "transformer_decoder_block": transformer_decoder_block,
    "position_embedding": position_embedding,
    "sinusoidal_position_encoding": sinusoidal_position_encoding,
    "rotary_embedding": rotary_embedding,
    "crf": crf,
    "crf_iob2": crf_iob2,
}

PROBE_LAYERS = {
    "multi_head_attention": layers.MultiHeadAttention,
    "multi_head_attention_gqa": layers.MultiHeadAttention,
    "multi_head_attention_chunked": layers.MultiHeadAttention,
    "additive_attention": layers.AdditiveAttention,
    "dot_product_dot": layers.DotProductAttention,
    "dot_product_scaled": layers.DotProductAttention,
    "dot_product_general": layers.DotProductAttention,
    "attention_pooling": layers.AttentionPooling,
    "target_attention_mlp": layers.TargetAttention,
    "target_attention_scaled": layers.TargetAttention,
    "cross_layer_attention": layers.CrossLayerAttention,
    "transformer_encoder_block": layers.TransformerEncoderBlock,
    "transformer_decoder_block": layers.TransformerDecoderBlock,
    "position_embedding": layers.PositionEmbedding,
    "sinusoidal_position_encoding": layers.SinusoidalPositionEncoding,
    "rotary_embedding": layers.RotaryEmbedding,
    "crf": layers.CRF,
    "crf_iob2": layers.CRF,
}
