"""Attention layers for Keras 3, written with `keras.ops` only."""

from kerasattn.layers.additive_attention import AdditiveAttention
from kerasattn.layers.attention_pooling import AttentionPooling
from kerasattn.layers.crf import CRF
from kerasattn.layers.cross_layer_attention import CrossLayerAttention
from kerasattn.layers.dot_product_attention import DotProductAttention
from kerasattn.layers.multi_head_attention import MultiHeadAttention
from kerasattn.layers.position_embedding import PositionEmbedding
from kerasattn.layers.rotary_embedding import RotaryEmbedding
from kerasattn.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from kerasattn.layers.target_attention import TargetAttention
from kerasattn.layers.transformer_decoder_block import TransformerDecoderBlock
from kerasattn.layers.transformer_encoder_block import TransformerEncoderBlock

__all__ = [
    "AdditiveAttention",
    "AttentionPooling",
    "CRF",
    "CrossLayerAttention",
    "DotProductAttention",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionEncoding",
    "TargetAttention",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
]
