"""A grid of evaluated images with their true and predicted labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from celestial_eval.figures import COLORS, new_figure, save_png, style

__all__ = ["draw_preview", "select_preview"]

COLUMNS = 6


def select_preview(
    actual: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, count: int
) -> np.ndarray:
    """Choose which images the preview shows, mistakes first.

    Mistakes come first, the most confident ones leading (they are the most
    surprising); the remaining places go to correct predictions taken from each
    class in turn, so every class is seen. Ties keep image order, so the
    choice is deterministic.

    Returns:
        Indices into the evaluated images, at most ``count`` of them.
    """
    wrong = np.flatnonzero(actual != predicted)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    right = np.flatnonzero(actual == predicted)
    queues = [list(right[actual[right] == k]) for k in np.unique(actual[right])]
    chosen = list(wrong)
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return np.asarray(chosen, dtype=np.int64)


def draw_preview(
    images: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    classes: Sequence[str],
    path: str | Path | IO[bytes],
    subtitle: str = "",
) -> None:
    """Draw the given images in a grid, each with its true class and prediction.

    A red frame and a cross mark a mistake; a green tick a correct prediction.

    Args:
        images: uint8 ``(n, S, S, C)`` images, in display order.
        actual: ``(n,)`` true label indices.
        predicted: ``(n,)`` predicted label indices.
        confidence: ``(n,)`` probability of the predicted class.
        classes: Class names in label order.
        path: Where to write the PNG.
        subtitle: A line under the title (split, counts).
    """
    n = len(images)
    columns = min(COLUMNS, max(n, 1))
    rows = max(math.ceil(n / columns), 1)
    tile, gap_x, gap_y, head = 1.55, 0.25, 0.62, 0.75
    width = columns * tile + (columns + 1) * gap_x
    height = head + rows * (tile + gap_y) + 0.15
    # Small images are enlarged pixel by pixel; large ones are smoothed down.
    interpolation = "nearest" if images.shape[1] * 2 <= tile * 120 else "antialiased"
    from matplotlib.patches import Rectangle

    with style():
        figure = new_figure(width, height)
        # One axes in inches from the top left holds every tile: an axes per
        # tile cost more than the rest of the evaluation.
        axes = figure.add_axes((0, 0, 1, 1))
        axes.set_axis_off()
        axes.text(gap_x, 0.22, "Predictions", fontsize=11, fontweight="bold", va="top")
        axes.text(gap_x, 0.47, subtitle, color=COLORS["muted"], va="top")
        for i in range(n):
            row, col = divmod(i, columns)
            left = gap_x + col * (tile + gap_x)
            top = head + row * (tile + gap_y) + gap_y
            extent = (left, left + tile, top + tile, top)
            image = np.asarray(images[i])
            # The grey scale applies to one-band images; colour ones ignore it.
            axes.imshow(
                image[..., 0] if image.shape[-1] == 1 else image,
                cmap="gray",
                vmin=0,
                vmax=255,
                interpolation=interpolation,
                extent=extent,
                aspect="auto",
            )
            good = actual[i] == predicted[i]
            color = COLORS["right" if good else "wrong"]
            axes.add_patch(
                Rectangle(
                    (left, top),
                    tile,
                    tile,
                    fill=False,
                    edgecolor=color,
                    linewidth=1.2 if good else 3.0,
                )
            )
            axes.text(
                left,
                top - 0.15 * tile,
                classes[actual[i]],
                fontsize=8.5,
                ha="left",
                va="bottom",
                color=COLORS["ink"],
            )
            mark = "\u2713" if good else "\u2717"
            axes.text(
                left,
                top - 0.03 * tile,
                f"{mark} {classes[predicted[i]]} {confidence[i]:.0%}",
                fontsize=8.5,
                ha="left",
                va="bottom",
                color=color,
                fontweight="normal" if good else "bold",
            )
        # Set last: each imshow sets the limits to its own tile.
        axes.set_xlim(0, width)
        axes.set_ylim(height, 0)
        save_png(figure, path)
