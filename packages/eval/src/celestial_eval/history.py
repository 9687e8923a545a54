"""The training history: DVC plot data and a two-panel PNG."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import IO

from celestial_eval.errors import EvalError, MissingInputError
from celestial_eval.figures import COLORS, new_figure, save_png, style

__all__ = [
    "HISTORY_COLUMNS",
    "draw_history",
    "marked_epoch",
    "read_history",
    "write_history_csv",
]

HISTORY_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")


def read_history(path: str | Path) -> dict[str, list[float | None]]:
    """Read the per-epoch history that ``celestial-models train`` writes.

    Accepts the Keras shape (``{"loss": [...], "val_loss": [...], ...}``) or a
    list of per-epoch objects. Columns the file lacks (a run without a
    validation split has no ``val_*``) come back as ``None`` values.

    Returns:
        ``HISTORY_COLUMNS`` mapped to one value (or ``None``) per epoch.

    Raises:
        MissingInputError: If the file does not exist.
        EvalError: If it is not a history.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"Training history {path} not found. Point MODEL_DIR at the output of "
            "'celestial-models train' (model.keras, metadata.json, history.json)."
        )
    try:
        document = json.loads(path.read_text())
        if isinstance(document, list):
            document = {key: [epoch.get(key) for epoch in document] for key in HISTORY_COLUMNS}
        epochs = max(len(document.get(key) or []) for key in HISTORY_COLUMNS)
        columns = {}
        for key in HISTORY_COLUMNS:
            values = list(document.get(key) or [None] * epochs)
            if len(values) != epochs:
                raise ValueError(f"'{key}' has {len(values)} values, expected {epochs}")
            columns[key] = [None if v is None else float(v) for v in values]
    except (ValueError, TypeError, AttributeError) as error:
        raise EvalError(
            f"{path} is not a training history ({error}). Expected per-epoch lists of "
            f"{', '.join(HISTORY_COLUMNS)}; rerun the train stage."
        ) from error
    return columns


def write_history_csv(path: str | Path, history: dict[str, list[float | None]]) -> Path:
    """Write ``epoch,loss,accuracy,val_loss,val_accuracy``, epochs counted from 1.

    This is the shape of DVC's ``linear`` template (``x: epoch``). Missing values
    are empty cells.
    """
    path = Path(path)
    epochs = len(history[HISTORY_COLUMNS[0]])
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["epoch", *HISTORY_COLUMNS])
        for epoch in range(epochs):
            values = [history[key][epoch] for key in HISTORY_COLUMNS]
            writer.writerow([epoch + 1, *("" if v is None else f"{v:.6g}" for v in values)])
    return path


def _best_epoch(values: list[float | None]) -> int | None:
    known = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    return min(known)[1] if known else None


def marked_epoch(
    history: dict[str, list[float | None]], kept: int | None = None
) -> tuple[int | None, str]:
    """The index of the epoch `draw_history` marks, and its legend (None: no epoch)."""
    if kept is not None and 1 <= kept <= len(history["loss"]):
        return kept - 1, f"kept weights (epoch {kept})"
    best = _best_epoch(history["val_loss"])
    return best, "" if best is None else f"lowest val loss (epoch {best + 1})"


def draw_history(
    history: dict[str, list[float | None]],
    path: str | Path | IO[bytes],
    kept: int | None = None,
) -> None:
    """Draw loss and accuracy per epoch, train beside validation, as a PNG.

    The epoch whose weights the model kept (``kept``, counted from 1: the
    ``best_epoch`` of the model's metadata) is marked on both panels; without
    it, the epoch of lowest validation loss. They differ where early stopping
    watched only some epochs (under a cosine schedule, the second half).
    """
    from matplotlib.ticker import MaxNLocator  # matplotlib only where a figure is drawn

    epochs = list(range(1, len(history["loss"]) + 1))
    best, marked = marked_epoch(history, kept)
    with style():
        figure = new_figure(9.0, 3.6)
        for index, (metric, title) in enumerate((("loss", "Loss"), ("accuracy", "Accuracy"))):
            axes = figure.add_subplot(1, 2, index + 1)
            for prefix, label, color in (("", "train", "train"), ("val_", "validation", "val")):
                values = history[prefix + metric]
                if all(v is None for v in values):
                    continue
                points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
                axes.plot(
                    *zip(*points, strict=True),
                    color=COLORS[color],
                    linewidth=2,
                    marker="o" if len(points) < 30 else None,
                    markersize=3.5,
                    label=label,
                )
            if best is not None:
                axes.axvline(
                    best + 1,
                    color=COLORS["muted"],
                    linestyle=":",
                    linewidth=1.2,
                    label=marked,
                )
                value = history[f"val_{metric}"][best]
                if value is not None:
                    axes.plot(
                        [best + 1],
                        [value],
                        marker="o",
                        markersize=9,
                        fillstyle="none",
                        color=COLORS["ink"],
                        markeredgewidth=1.3,
                    )
            if metric == "accuracy":
                axes.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
            axes.set_title(title)
            axes.set_xlabel("epoch")
            axes.grid(axis="y", color=COLORS["grid"], linewidth=0.8)
            axes.set_axisbelow(True)
            locator = axes.xaxis.get_major_locator()  # the default, an AutoLocator
            assert isinstance(locator, MaxNLocator)
            locator.set_params(integer=True)
            if index == 0:
                handles, labels = axes.get_legend_handles_labels()
        figure.text(0.01, 0.97, "Training history", fontsize=12, fontweight="bold", va="top")
        # One legend for both panels, above them, where it cannot hide a curve.
        figure.legend(
            handles, labels, loc="upper right", ncol=len(labels), bbox_to_anchor=(0.99, 1.0)
        )
        figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.8, wspace=0.22)
        save_png(figure, path)
