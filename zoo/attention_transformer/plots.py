"""Attention pictures: the model card's (what the pooling and the fusion attend to) and
the probe whose maps TensorBoard shows."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from zoo.files import save_figure


def attention_probe(preprocessor, texts: Sequence[str]):
    """`AttentionMapCallback`'s probe for `texts`: the features and, per text,
    its real tokens (to label the heatmaps with)."""
    features = preprocessor(list(texts))
    tokens = [
        [t.decode() for t, real in zip(row, mask) if real]
        for row, mask in zip(
            preprocessor.id_to_token(features["token_ids"]).numpy(),
            features["padding_mask"].numpy(),
        )
    ]
    return features, tokens


def plot_attention(model, text: str, path: str | os.PathLike) -> None:
    """The pooling weights (and cross-layer weights) over one text's tokens, as a PNG.

    Args:
        model: an `AttentionTransformerClassifier` with a preprocessor.
        text: the text.
        path: the PNG file, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    features = model.preprocessor([text])
    length = int(np.sum(features["padding_mask"].numpy()))
    outputs = model.backbone(features, training=False)
    logits = np.asarray(model(features, training=False)[0])
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    tokens = [t.decode() for t in model.preprocessor.id_to_token(features["token_ids"])[0].numpy()]
    pooling = np.asarray(outputs["pooling_weights"])[0]
    panels = [("pooling", pooling[None], ["pooling"])]
    if "cross_layer_weights" in outputs:
        weights = np.asarray(outputs["cross_layer_weights"])[0].T  # (L, T)
        panels.append(("cross-layer attention: each token's weights over the blocks' outputs",
                       weights, [f"block {i + 1}" for i in range(weights.shape[0])]))
    figure, axes_list = pyplot.subplots(
        len(panels), 1, figsize=(max(6.0, 0.6 * length), 1.6 + 1.1 * len(panels)),
        height_ratios=[max(1, p[1].shape[0]) for p in panels], squeeze=False,
    )
    best = int(np.argmax(probabilities))
    label = model.label_names[best] if model.label_names else str(best)
    for axes, (title, values, rows) in zip(axes_list[:, 0], panels):
        image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=0)
        axes.set_yticks(range(len(rows)), rows)
        axes.set_xticks(range(length), tokens, rotation=45, ha="right")
        axes.set_title(title, fontsize=9)
        figure.colorbar(image, ax=axes, fraction=0.025, pad=0.01)
    figure.suptitle(f"{text!r} → {label} ({probabilities[best]:.2f})", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    pyplot.close(figure)
