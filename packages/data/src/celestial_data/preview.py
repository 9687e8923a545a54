"""Draw a preview of a prepared dataset: a row of sample images per class."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from celestial_data.prepared import SPLITS, PreparedDataset

__all__ = ["preview_image", "write_preview"]

LABEL_WIDTH = 96
MIN_CELL = 64
LABEL_POINTS = 10


@cache
def label_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, for class names in any European script; else Pillow's default font.

    Pillow's own font has no accented letters (``Grüne`` came out with a box
    for the ``ü``). DejaVu Sans is the font matplotlib ships, and so draws
    the evaluation's figures with: it is taken from matplotlib's package,
    found without importing it, where matplotlib is installed (it is in this
    workspace, for ``celestial-eval``).
    """
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), LABEL_POINTS)
    return ImageFont.load_default(LABEL_POINTS)


def _samples(dataset: PreparedDataset, label: int, count: int) -> list[np.ndarray]:
    """The first ``count`` images of a class, from train first, then val, test."""
    found: list[np.ndarray] = []
    for split in SPLITS:
        if not dataset.has(split) or len(found) >= count:
            continue
        indices = np.flatnonzero(dataset.labels(split) == label)[: count - len(found)]
        images = dataset.images(split)
        found += [np.asarray(images[i]) for i in indices]
    return found


def preview_image(dataset: PreparedDataset, per_class: int = 8) -> Image.Image:
    """A grid with one row per class: its name, then up to ``per_class`` images.

    Small images are enlarged by a whole factor (nearest neighbour), so the
    pixels a model sees are the pixels shown.
    """
    size = dataset.image_size
    scale = max(1, -(-MIN_CELL // size))
    cell = size * scale + 2
    grid = Image.new("RGB", (LABEL_WIDTH + per_class * cell, len(dataset.classes) * cell))
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(dataset.classes):
        top = row * cell
        draw.text((4, top + cell // 2 - 6), name[:14], fill=(230, 230, 230), font=label_font())
        for column, pixels in enumerate(_samples(dataset, row, per_class)):
            tile = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
            tile = tile.convert("RGB").resize((size * scale,) * 2, Image.Resampling.NEAREST)
            grid.paste(tile, (LABEL_WIDTH + column * cell + 1, top + 1))
    return grid


def write_preview(dataset: PreparedDataset, path: str | Path, per_class: int = 8) -> Path:
    """Write `preview_image` of ``dataset`` as a PNG and return its path."""
    path = Path(path)
    # Fast compression: the preview is looked at, not archived.
    preview_image(dataset, per_class).save(path, format="PNG", compress_level=1)
    return path
