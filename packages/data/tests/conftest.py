"""Tiny raw datasets written on the fly (16 x 16 images, a few per class)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 16


def image_bytes(seed: int, mode: str = "RGB", fmt: str = "PNG", size: int = SIZE) -> bytes:
    """A unique little image: random blocks, so each seed gives other bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)
    image = image.convert(mode)
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


MakeRaw = Callable[..., Path]


@pytest.fixture
def make_raw(tmp_path: Path) -> MakeRaw:
    """Return ``make(counts, name="raw", fmt="PNG", start=0)`` writing a raw folder.

    ``counts`` maps class name to number of images; image ``i`` of the class at
    position ``c`` gets seed ``1000 * c + i`` so contents never repeat.
    """

    def make(
        counts: dict[str, int],
        name: str = "raw",
        fmt: str = "PNG",
        start: int = 0,
    ) -> Path:
        root = tmp_path / name
        extension = {"PNG": "png", "JPEG": "jpg"}[fmt]
        for c, (label, count) in enumerate(sorted(counts.items())):
            folder = root / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + count):
                data = image_bytes(1000 * c + i, fmt=fmt)
                (folder / f"{label.lower()}_{i:03d}.{extension}").write_bytes(data)
        return root

    return make


@pytest.fixture
def raw(make_raw: MakeRaw) -> Path:
    """Three classes of six PNG images each."""
    return make_raw({"Mars": 6, "Moon": 6, "Venus": 6})


@pytest.fixture
def encode() -> Callable[..., bytes]:
    """The `image_bytes` helper, for tests that write their own files."""
    return image_bytes
