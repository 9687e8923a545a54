"""Integration: check and prepare the reference dataset (1,500 JPEGs, 10 classes)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from celestial_data.check import check_dataset
from celestial_data.prepare import PrepareParams, prepare_dataset
from celestial_data.split import split_of

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
DEFAULT = PrepareParams()
CLASSES = [
    "Earth",
    "Jupiter",
    "Mars",
    "Mercury",
    "Moon",
    "Neptune",
    "Pluto",
    "Saturn",
    "Uranus",
    "Venus",
]

pytestmark = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"reference dataset not found at {REFERENCE}"
)


def test_reference_dataset_is_clean() -> None:
    report = check_dataset(REFERENCE)
    assert report.ok, report.errors
    assert report.counts == dict.fromkeys(CLASSES, 150)
    assert report.sizes == {"128x128": 1500}
    assert not report.duplicates and not report.corrupt and not report.ignored


def test_prepare_reference_counts_per_split_and_class(tmp_path: Path) -> None:
    expected: Counter[tuple[str, str]] = Counter()
    for path in REFERENCE.glob("*/*"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        split = split_of(digest, DEFAULT.seed, DEFAULT.val_fraction, DEFAULT.test_fraction)
        expected[split, path.parent.name] += 1

    result = prepare_dataset(REFERENCE, tmp_path / "out")
    dataset = result.dataset
    assert dataset.classes == tuple(CLASSES)
    assert dataset.input_shape == (32, 32, 3)
    assert sum(dataset.splits.values()) == 1500
    for split in ("train", "val", "test"):
        labels = Counter(dataset.classes[i] for i in dataset.labels(split))
        assert labels == {name: expected[split, name] for name in CLASSES}
        assert len(dataset.images(split)) == dataset.splits[split]
        assert all(labels[name] > 0 for name in CLASSES)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["splits"]["val"] == {name: expected["val", name] for name in CLASSES}

    again = prepare_dataset(REFERENCE, tmp_path / "again")
    assert again.dataset.hash == dataset.hash
    for name in ("manifest.csv", "report.json", "preview.png", "dataset.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
