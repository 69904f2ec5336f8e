"""The model card's attention picture: a sentence's self-attention and its tags."""

from __future__ import annotations

import os

import numpy as np

from zoo.files import save_figure


def plot_attention(model, text: str, path: str | os.PathLike) -> None:
    """The last Transformer block's attention over one sentence (mean of the
    heads, and each head), tokens labelled with the predicted tags, as a PNG.

    Args:
        model: a `SequenceTagger` with a preprocessor and Transformer blocks.
        text: the sentence (whitespace-separated tokens).
        path: the PNG file, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    features = model.preprocessor([text])
    scores = np.asarray(model.backbone(features, training=False)["attention_scores"],
                        "float32")[0]
    tagged = model.tag([text], confidence=False)[0]
    labels = [f"{token} ({tag})" if tag != "O" else token
              for token, tag in zip(tagged["tokens"], tagged["tags"])]
    length = len(labels)
    heads = scores.shape[0]
    panels = [("mean over heads", scores.mean(axis=0))] + [
        (f"head {h + 1}", scores[h]) for h in range(heads)
    ]
    size = max(3.0, 0.25 * length)
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes_grid = pyplot.subplots(
        rows, columns, figsize=(size * columns, (size + 1.0) * rows), squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        if index >= len(panels):
            axes.axis("off")
            continue
        title, values = panels[index]
        axes.imshow(values[:length, :length], cmap="viridis", vmin=0)
        axes.set_title(title, fontsize=9)
        axes.set_xticks(range(length), labels, rotation=90, fontsize=7)
        axes.set_yticks(range(length), labels, fontsize=7)
    figure.suptitle("last block's self-attention: each row a token, each column what it attends "
                    "to (predicted entity tags in brackets)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    pyplot.close(figure)
