"""Draw a preview of a prepared dataset: a row of sample images per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from celestial_data.prepared import SPLITS, PreparedDataset

__all__ = ["preview_image", "write_preview"]

LABEL_WIDTH = 96
MIN_CELL = 64


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
        draw.text((4, top + cell // 2 - 6), name[:14], fill=(230, 230, 230))
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
