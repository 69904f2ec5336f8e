"""What can be pruned in a model: attention heads and feed-forward units.

Each prunable structure is a `PrunableGroup`: the heads of one
`MultiHeadAttention` or the feed-forward units of one Transformer block,
found by walking the model's layers and named by the path of layer names
from the model down (`"backbone/encoder_block_0/self_attention"`,
`"backbone/encoder_block_0/feedforward"`). A `TransformerDecoderBlock`'s
self- and cross-attention are two groups of heads (`.../self_attention`,
`.../cross_attention`), each pruned on its own.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import keras

from kerasattn.layers._transformer_block import TransformerBlockBase
from kerasattn.layers.multi_head_attention import MultiHeadAttention
from kerasattn.layers.transformer_decoder_block import TransformerDecoderBlock

HEADS = "heads"
UNITS = "units"
FEEDFORWARD = "feedforward"


@dataclasses.dataclass(frozen=True)
class PrunableGroup:
    """The heads of one attention layer, or the feed-forward units of one block.

    Attributes:
        path: where the group sits, layer names from the model down.
        kind: `"heads"` or `"units"`.
        size: number of query heads, or of feed-forward units.
        group_size: how many of them are removed together: the query heads
            sharing one key/value head (`num_heads // num_key_value_heads`,
            1 without grouped-query attention); 1 for units.
        layer: the `MultiHeadAttention`, or the block holding the units.
        owner: the layer whose config holds the count: the attention
            layer itself, or the Transformer block that builds it.
        owner_path: the path of `owner`.
    """

    path: str
    kind: str
    size: int
    group_size: int
    layer: keras.layers.Layer
    owner: keras.layers.Layer
    owner_path: str

    @property
    def num_removable(self) -> int:
        """Number of removable items: key/value groups of heads, or units."""
        return self.size // self.group_size

    @property
    def output_kernel(self):
        """The kernel whose rows (axis 0) carry each head's or unit's output.

        A gate `g_i` on head (unit) `i` equals scaling row `i` of this kernel
        by `g_i`: `(B, T, N, Hv)` attention results (hidden units) contract
        with it on their head (unit) axis.
        """
        if self.kind == HEADS:
            return self.layer.output_dense.kernel
        return self.layer._feedforward_output_dense.kernel

    @property
    def _is_cross_attention(self) -> bool:
        return (isinstance(self.owner, TransformerDecoderBlock)
                and self.layer is self.owner._cross_attention)

    def config_updates(self, kept: int) -> dict:
        """The `owner`'s config entries that give it `kept` heads or units."""
        if self.kind == UNITS:
            return {"intermediate_dim": kept}
        if self._is_cross_attention:
            # Grouped as the self-attention: the block derives the key/value heads.
            return {"cross_attention_num_heads": kept}
        # Grouped-query layers lose whole key/value groups: the ratio stays.
        kv_heads = kept // self.group_size if self.group_size > 1 else None
        return {"num_heads": kept, "num_key_value_heads": kv_heads}

    @property
    def fixed_config(self) -> dict:
        """The `owner`'s config entries pruning any of its heads must pin.

        What the owner would otherwise derive from the entries that change:
        the heads' width (`key_dim`, and a bare attention layer's
        `value_dim`), and a decoder block's cross-attention head count
        (which defaults to its self-attention's). `config_updates` of the
        owner's groups apply over these, in any order.
        """
        if self.kind == UNITS:
            return {}
        fixed = {"key_dim": self.layer.key_dim}
        if self.owner is self.layer:
            fixed["value_dim"] = self.layer.value_dim
        if isinstance(self.owner, TransformerDecoderBlock) and \
                self.owner._cross_attention is not None:
            fixed["cross_attention_num_heads"] = self.owner._cross_attention.num_heads
        return fixed


def _children(layer: keras.layers.Layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def walk(model: keras.layers.Layer) -> Iterator[tuple[str, keras.layers.Layer]]:
    """`(path, layer)` for every layer below `model`, each once, parents first."""
    seen = {id(model)}

    def visit(layer, prefix):
        for child in _children(layer):
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            yield path, child
            yield from visit(child, path)

    yield from visit(model, "")


def find_prunable(model: keras.layers.Layer) -> list[PrunableGroup]:
    """The heads and feed-forward units of `model` that pruning can remove.

    Every `MultiHeadAttention` contributes its heads (a
    `TransformerDecoderBlock` two groups, its self-attention's and its
    cross-attention's), and every `TransformerEncoderBlock` /
    `TransformerDecoderBlock` its feed-forward units.

    Args:
        model: a built Keras model or layer.

    Returns:
        The groups, in the order of the model's layers.

    Raises:
        ValueError: if `model` is not built.

    Example:

    ```python
    for group in find_prunable(model):
        print(group.path, group.kind, group.size)  # "block/self_attention heads 4", ...
    ```
    """
    if not model.built:
        raise ValueError(
            "Expected a built model (its kernels are what pruning slices), "
            f"received: an unbuilt {type(model).__name__}"
        )
    groups = []
    owners: dict[int, tuple[str, keras.layers.Layer]] = {}
    for path, layer in walk(model):
        if isinstance(layer, TransformerBlockBase):
            groups.append(PrunableGroup(
                path=f"{path}/{FEEDFORWARD}", kind=UNITS, size=layer.intermediate_dim,
                group_size=1, layer=layer, owner=layer, owner_path=path,
            ))
            for child in _children(layer):
                owners[id(child)] = (path, layer)
        elif isinstance(layer, MultiHeadAttention):
            owner_path, owner = owners.get(id(layer), (path, layer))
            groups.append(PrunableGroup(
                path=path, kind=HEADS, size=layer.num_heads,
                group_size=layer.num_heads // layer.num_key_value_heads,
                layer=layer, owner=owner, owner_path=owner_path,
            ))
    return groups
