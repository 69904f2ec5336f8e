"""Rendering one attention map as an RGB heatmap image with matplotlib.

The figures are drawn on matplotlib's Agg canvas directly (no pyplot), so
rendering neither needs a display nor changes the user's matplotlib backend.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 100
# Masked cells: light grey, hatched in a darker grey; never a colour of the
# colormap (viridis has no greys), so they cannot be read as low attention.
MASKED_FACE = "#d4d4d4"
MASKED_HATCH = "#8c8c8c"
LABEL_CHARS = 10


@dataclasses.dataclass(frozen=True)
class Layout:
    """Pixel geometry of a heatmap image; `left`/`top` are the heatmap's
    top-left corner in image coordinates (row 0 at the top)."""

    width: int
    height: int
    left: int
    top: int
    cell: int


def layout(rows: int, cols: int, row_labels: bool, col_labels: bool) -> Layout:
    """The image size and heatmap position for a `rows × cols` map.

    Cells are square, `480 // max(rows, cols)` pixels clipped to [10, 36]:
    a map up to 48 positions long fits in 480 pixels, a longer one grows by
    10 pixels a position. Margins make room for token labels.
    """
    cell = int(np.clip(480 // max(rows, cols), 10, 36))
    map_width, map_height = cols * cell, rows * cell
    left = 100 if row_labels else 48
    bottom = 96 if col_labels else 40
    top = 28
    right = 90  # colorbar and its tick labels
    # Room for the title, and a colorbar that is not a sliver on a 1-row map.
    width = max(left + map_width + right, 360)
    height = top + max(map_height, 80) + bottom
    return Layout(width, height, left, top, cell)


def _tick_labels(labels: Sequence[str]):
    return [
        label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…" for label in labels
    ]


def render(
    weights: np.ndarray,
    masked: np.ndarray,
    title: str,
    row_labels: Optional[Sequence[str]] = None,
    col_labels: Optional[Sequence[str]] = None,
    row_name: str = "query",
    col_name: str = "key",
) -> np.ndarray:
    """Draws a `(rows, cols)` map; returns the image, uint8 `(H, W, 3)`.

    Args:
        weights: float `(rows, cols)` weights.
        masked: boolean `(rows, cols)`, `True` for cells drawn as masked.
        title: the line above the map.
        row_labels: optional label per row (token strings).
        col_labels: optional label per column.
        row_name: the row axis title.
        col_name: the column axis title.

    Returns:
        The RGB image. The colour scale runs from 0 (or the smallest
        unmasked weight, if negative) to the largest unmasked weight.
    """
    rows, cols = weights.shape
    geometry = layout(rows, cols, row_labels is not None, col_labels is not None)
    figure = Figure(figsize=(geometry.width / DPI, geometry.height / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    map_width, map_height = cols * geometry.cell, rows * geometry.cell
    bottom = geometry.height - geometry.top - map_height
    axes = figure.add_axes(
        (
            geometry.left / geometry.width,
            bottom / geometry.height,
            map_width / geometry.width,
            map_height / geometry.height,
        )
    )
    visible = weights[~masked]
    low = min(0.0, float(visible.min())) if visible.size else 0.0
    high = float(visible.max()) if visible.size else 1.0
    if high <= low:
        high = low + 1.0
    axes.add_patch(
        Rectangle(
            (-0.5, -0.5), cols, rows,
            facecolor=MASKED_FACE, edgecolor=MASKED_HATCH, hatch="///", linewidth=0, zorder=0,
        )
    )
    # Masked cells are transparent, so the hatched patch shows through.
    colormap = colormaps["viridis"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    image = axes.imshow(
        np.ma.masked_array(weights, masked),
        cmap=colormap, vmin=low, vmax=high, interpolation="nearest", aspect="auto", zorder=1,
    )
    axes.set_xlim(-0.5, cols - 0.5)
    axes.set_ylim(rows - 0.5, -0.5)
    for axis, labels, count in ((axes.xaxis, col_labels, cols), (axes.yaxis, row_labels, rows)):
        if labels is None and count > 16:
            axis.set_major_locator(ticker.MaxNLocator(nbins=10, integer=True))
        elif labels is None:
            axis.set_major_locator(ticker.FixedLocator(range(count)))
        else:
            axis.set_major_locator(ticker.FixedLocator(range(count)))
            axis.set_major_formatter(ticker.FixedFormatter(_tick_labels(labels)))
    axes.tick_params(labelsize=7, length=2)
    if col_labels is not None:
        axes.tick_params(axis="x", labelrotation=90)
    axes.set_xlabel(col_name, fontsize=8)
    axes.set_ylabel(row_name, fontsize=8)
    axes.set_title(title, fontsize=8, loc="left")
    colorbar_height = max(map_height, 80)
    colorbar_axes = figure.add_axes(
        (
            (geometry.left + map_width + 12) / geometry.width,
            (geometry.height - geometry.top - colorbar_height) / geometry.height,
            12 / geometry.width,
            colorbar_height / geometry.height,
        )
    )
    colorbar = figure.colorbar(image, cax=colorbar_axes)
    colorbar.ax.tick_params(labelsize=7)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
