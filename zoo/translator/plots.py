"""The translator card's picture: cross-attention between a source and its translation."""

from __future__ import annotations

import os

import numpy as np

from zoo.files import save_figure


def cross_attention_alignment(model, source: str, beam: int = 4):
    """Translates `source` and returns the decoder's cross-attention over it.

    The translation is fed back teacher-forced (`[START]` + its tokens), so
    row `t` holds where the decoder looked while choosing target token `t`.

    Args:
        model: a `Translator` with a preprocessor and multi-head
            cross-attention.
        source: one source sentence.
        beam: the beam width of the translation.

    Returns:
        `(translation, source_tokens, target_tokens, weights)`: `weights` is
        float32 `(layers, target_tokens, source_tokens)`, each layer's
        weights averaged over its heads; the target tokens end with `[END]`.
    """
    from kerasattn.callbacks._collect import collect_attention

    translation = model.translate([source], beam=beam)[0]
    features, labels, _ = model.preprocessor([source], [translation])
    maps = [attention for attention in collect_attention(model, features)
            if "cross_attention" in attention.path]
    if not maps:
        raise ValueError("Expected a translator with multi-head cross-attention, received: "
                         f"cross_attention={model.backbone.cross_attention!r}")
    tokenizer = model.preprocessor.source_tokenizer

    def pieces(ids):
        return [piece.decode("utf-8") for piece in tokenizer.id_to_token(ids).numpy()]

    source_tokens = pieces(features["encoder_token_ids"][0])
    target_tokens = pieces(labels[0])
    weights = np.stack([attention.weights[0].mean(axis=0) for attention in maps])
    return translation, source_tokens, target_tokens, weights


def plot_alignment(model, source: str, path: str | os.PathLike, beam: int = 4) -> str:
    """Draws `cross_attention_alignment` as one heatmap per decoder layer; returns the translation.

    Args:
        model: a `Translator` with multi-head cross-attention.
        source: one source sentence.
        path: the PNG file, written atomically.
        beam: the beam width of the translation.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    translation, source_tokens, target_tokens, weights = cross_attention_alignment(
        model, source, beam)
    layers = weights.shape[0]
    figure, axes_list = pyplot.subplots(
        1, layers, squeeze=False,
        figsize=(1.0 + layers * (0.9 + 0.32 * len(source_tokens)),
                 1.6 + 0.28 * len(target_tokens)))
    for index, axes in enumerate(axes_list[0]):
        axes.imshow(weights[index], aspect="auto", cmap="viridis", vmin=0, vmax=1)
        axes.set_xticks(range(len(source_tokens)), source_tokens, rotation=60, ha="right",
                        fontsize=8)
        axes.set_yticks(range(len(target_tokens)),
                        target_tokens if index == 0 else [""] * len(target_tokens), fontsize=8)
        axes.set_title(f"decoder block {index + 1}", fontsize=9)
    figure.suptitle(f"cross-attention, mean over heads: {source!r} → {translation!r}",
                    fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
    pyplot.close(figure)
    return translation
