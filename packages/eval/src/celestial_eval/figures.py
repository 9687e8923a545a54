"""The house look of every picture, and PNGs that are identical on every run.

Matplotlib is imported here, lazily, so commands that draw nothing never pay
for it. Figures are created from `matplotlib.figure.Figure` directly rather
than through pyplot: no GUI backend is ever selected (headless by
construction), and no global figure registry keeps figures alive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["COLORS", "DPI", "new_figure", "save_png", "style"]

DPI = 120
COLORS = {
    "ink": "#1f2937",
    "muted": "#6b7280",
    "grid": "#e5e7eb",
    "train": "#2563eb",
    "val": "#ea580c",
    "right": "#15803d",
    "wrong": "#dc2626",
}
RC: dict[Any, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "text.color": COLORS["ink"],
    "axes.labelcolor": COLORS["ink"],
    "axes.edgecolor": COLORS["muted"],
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": COLORS["muted"],
    "ytick.color": COLORS["muted"],
    "xtick.labelcolor": COLORS["ink"],
    "ytick.labelcolor": COLORS["ink"],
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    # Text stays text in SVG, and SVG ids do not depend on a random salt.
    "svg.fonttype": "none",
    "svg.hashsalt": "celestial",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the house style to the figures drawn inside the block."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A new headless figure of ``width`` x ``height`` inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def save_png(figure: Figure, path: str | Path | IO[bytes], tight: bool = False) -> None:
    """Write ``figure`` as a PNG with no metadata that changes between runs.

    PNGs carry no date, but matplotlib writes its version as ``Software``;
    dropping it keeps outputs byte-identical across patch upgrades too.

    Args:
        figure: The figure to write.
        path: Where to write it: a file, or a binary stream.
        tight: Crop to the drawn content (costs a second rendering pass; for
            layouts whose label sizes are not known in advance).
    """
    figure.savefig(
        path,
        format="png",
        dpi=DPI,
        bbox_inches="tight" if tight else None,
        pad_inches=0.15,
        metadata={"Software": None},
    )
