"""Tiny prepared datasets (16 x 16 images, a few per class) and a model trained once on one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from celestial_data import PreparedDataset, write_prepared

SIZE = 16
CLASSES = ("Mars", "Moon", "Neptune", "Sun")
# Each class is a disc of its own colour; position, radius and noise vary.
COLOURS = {
    "Mars": (200, 60, 40),
    "Moon": (150, 150, 150),
    "Neptune": (40, 80, 220),
    "Sun": (240, 200, 30),
}
# Train params that keep a test training to a second or two of fitting: exactly
# `epochs` epochs, however few steps the test's handful of images makes.
FAST = {"epochs": 3, "min_steps": 0, "batch_size": 8, "conv_size": 4, "patience": 3}


@pytest.fixture
def fast() -> dict:
    """Train params for tests: few epochs, small batches, a narrow network."""
    return dict(FAST)


def disc_images(colour: tuple[int, int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` noisy discs of ``colour`` on black, at random places and sizes."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((count, SIZE, SIZE, 3), dtype=np.float64)
    for image in images:
        cy, cx = rng.uniform(5, SIZE - 5, size=2)
        radius = rng.uniform(3, 5)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[inside] = np.array(colour) * rng.uniform(0.7, 1.0)
    images += rng.normal(0, 12, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def write_discs(
    path: Path, classes: int = 3, train: int = 8, val: int = 4, seed: int = 0
) -> PreparedDataset:
    """Write a prepared dataset of the first ``classes`` of `CLASSES` at ``path``.

    ``train`` and ``val`` are images per class; a split of 0 images is left out.
    """
    rng = np.random.default_rng(seed)
    names = list(CLASSES[:classes])
    arrays = {}
    for split, count in (("train", train), ("val", val)):
        if count:
            images = np.concatenate([disc_images(COLOURS[n], count, rng) for n in names])
            labels = np.repeat(np.arange(len(names)), count)
            files = [f"{n}/{split}_{i}.png" for n in names for i in range(count)]
            arrays[split] = (images, labels, files)
    return write_prepared(path, names, "rgb", arrays)


MakePrepared = Callable[..., PreparedDataset]


@pytest.fixture
def make_prepared(tmp_path: Path) -> MakePrepared:
    """Return ``make(classes=3, train=8, val=4, seed=0, name="prepared")`` (see `write_discs`)."""

    def make(name: str = "prepared", **kwargs: int) -> PreparedDataset:
        return write_discs(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``prepared``, ``model`` and ``live``: one training shared by the session."""
    from celestial_models import TrainParams, train_model

    root = tmp_path_factory.mktemp("trained")
    write_discs(root / "prepared", train=12, val=6, seed=1)
    train_model(root / "prepared", root / "model", TrainParams(**FAST), live_dir=root / "live")
    return root


def _edit_metadata(model_dir: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = model_dir / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


@pytest.fixture
def edit_metadata() -> Callable[[Path, Callable[[dict[str, Any]], object]], None]:
    """Change a model folder's metadata.json in place: ``edit(model_dir, change)``."""
    return _edit_metadata


def _without_program(model_dir: Path) -> None:
    (model_dir / "inference.jax").unlink()
    _edit_metadata(model_dir, lambda metadata: metadata.pop("program"))


@pytest.fixture
def without_program() -> Callable[[Path], None]:
    """Make a model folder one written before training exported its program."""
    return _without_program
