"""The confusion matrix: DVC plot data and a labelled heatmap."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from celestial_eval.figures import COLORS, new_figure, save_png, style

__all__ = ["draw_confusion", "write_confusion_csv"]


def write_confusion_csv(
    path: str | Path, actual: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> Path:
    """Write one ``actual,predicted`` row of class names per image, in image order.

    This is the shape DVC's ``confusion`` template counts (``x: actual``,
    ``y: predicted``), so ``dvc plots show/diff`` draw the matrix themselves.
    """
    path = Path(path)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows((classes[a], classes[p]) for a, p in zip(actual, predicted, strict=True))
    return path


def draw_confusion(
    matrix: np.ndarray, classes: Sequence[str], path: str | Path | IO[bytes], subtitle: str = ""
) -> None:
    """Draw ``matrix`` (rows actual, columns predicted) as an annotated heatmap PNG.

    Cells are shaded by the share of the row (so a rare class's mistakes are as
    visible as a common one's) and labelled with the count; the diagonal is
    green, errors red, empty cells blank. Each row's recall and image count
    sit on the right; classes never predicted are named in red.
    """
    from matplotlib.colors import LinearSegmentedColormap

    n = len(classes)
    totals = matrix.sum(axis=1)
    shares = matrix / np.maximum(totals, 1)[:, None]
    side = 1.6 + 0.62 * max(n, 3)
    greens = LinearSegmentedColormap.from_list("right", ["#ffffff", COLORS["right"]])
    reds = LinearSegmentedColormap.from_list("wrong", ["#ffffff", COLORS["wrong"]])
    diagonal = np.eye(n, dtype=bool)
    colors = np.where(diagonal[..., None], greens(shares), reds(shares))
    colors[matrix == 0] = (1, 1, 1, 1)
    font = 9 if n <= 12 else 7
    with style():
        figure = new_figure(side + 0.9, side + 0.5)
        axes = figure.add_axes((0.2, 0.2, 0.68, 0.68))
        axes.imshow(colors, interpolation="nearest", aspect="equal")
        for row in range(n):
            for col in range(n):
                count = int(matrix[row, col])
                if count:
                    dark = shares[row, col] > 0.55
                    axes.text(
                        col,
                        row,
                        str(count),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if dark else COLORS["ink"],
                        fontweight="bold" if row == col else "normal",
                    )
            recall = (
                f"{matrix[row, row] / totals[row]:.0%} of {totals[row]}" if totals[row] else "none"
            )
            axes.text(
                n - 0.3, row, recall, ha="left", va="center", fontsize=font, color=COLORS["muted"]
            )
        axes.text(
            n - 0.3,
            -0.8,
            "recall",
            ha="left",
            va="center",
            fontsize=font,
            color=COLORS["muted"],
            fontweight="bold",
        )
        axes.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(range(n), classes)
        axes.set_xticks(np.arange(n + 1) - 0.5, minor=True)
        axes.set_yticks(np.arange(n + 1) - 0.5, minor=True)
        axes.grid(which="minor", color=COLORS["grid"], linewidth=0.8)
        axes.tick_params(which="both", length=0)
        for spine in axes.spines.values():
            spine.set_visible(False)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("actual class")
        never = [name for name, count in zip(classes, matrix.sum(axis=0), strict=True) if not count]
        for label in (t for t in axes.get_xticklabels() if t.get_text() in never):
            label.set_color(COLORS["wrong"])
            label.set_fontweight("bold")
        if never:
            subtitle = f"{subtitle} · never predicted: {', '.join(never)}".lstrip(" ·")
        axes.set_title("Confusion matrix", pad=26 if subtitle else 12)
        # Points above the matrix, not a share of its height: a matrix of many
        # classes is tall, and the subtitle would climb into the title.
        axes.annotate(
            subtitle,
            xy=(0, 1),
            xycoords="axes fraction",
            xytext=(0, 6),
            textcoords="offset points",
            ha="left",
            va="bottom",
            color=COLORS["muted"],
        )
        save_png(figure, path, tight=True)
