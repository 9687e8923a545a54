"""The prepared format's reader and the small writer other packages test with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from celestial_data import PreparedDataError, load_prepared, write_prepared


def small(tmp_path: Path, color_mode: str = "rgb"):
    channels = 3 if color_mode == "rgb" else 1
    images = np.arange(4 * 16 * 16 * channels, dtype=np.uint8).reshape(4, 16, 16, channels)
    arrays = {
        "train": (images[:3], [0, 1, 1], ["A/a.png", "B/b.png", "B/c.png"]),
        "val": (images[3:], [0], ["A/d.png"]),
    }
    return write_prepared(tmp_path / "prepared", ["A", "B"], color_mode, arrays), images


def test_round_trip(tmp_path: Path) -> None:
    dataset, images = small(tmp_path)
    again = load_prepared(tmp_path / "prepared")
    assert again == dataset
    assert again.classes == ("A", "B") and again.input_shape == (16, 16, 3)
    assert again.splits == {"train": 3, "val": 1}
    assert again.has("train") and not again.has("test")
    np.testing.assert_array_equal(again.images("train"), images[:3])
    assert again.labels("train").tolist() == [0, 1, 1]
    assert again.files("val") == ["A/d.png"]
    assert len(again.hash) == 64


def test_grayscale_has_one_channel(tmp_path: Path) -> None:
    dataset, _ = small(tmp_path, "grayscale")
    assert dataset.channels == 1 and dataset.images("val").shape == (1, 16, 16, 1)


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PreparedDataError, match="celestial-data prepare RAW OUT"):
        load_prepared(tmp_path / "nothing")


def test_missing_split_names_the_splits_present(tmp_path: Path) -> None:
    dataset, _ = small(tmp_path)
    with pytest.raises(PreparedDataError, match=r"no 'test' split.*train, val"):
        dataset.images("test")


def test_missing_array_is_an_error(tmp_path: Path) -> None:
    dataset, _ = small(tmp_path)
    (tmp_path / "prepared" / "val_images.npy").unlink()
    with pytest.raises(PreparedDataError, match=r"incomplete.*val_images\.npy"):
        dataset.images("val")


def test_other_format_version_is_an_error(tmp_path: Path) -> None:
    small(tmp_path)
    meta_path = tmp_path / "prepared" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(PreparedDataError, match="format version 99"):
        load_prepared(tmp_path / "prepared")
    meta_path.write_text("{}")
    with pytest.raises(PreparedDataError, match="malformed"):
        load_prepared(tmp_path / "prepared")
