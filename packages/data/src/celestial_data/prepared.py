"""The prepared dataset: the on-disk contract between prepare, train and evaluate.

A prepared folder holds, for each split present (``train``, ``val``, ``test``):

- ``<split>_images.npy``: uint8 array ``(N, size, size, channels)``;
- ``<split>_labels.npy``: int32 array ``(N,)`` of indices into ``classes``;

and, for the whole dataset:

- ``dataset.json``: ``classes`` (in label order), ``image_size``, ``color_mode``,
  ``channels``, ``view`` (the canonical view's params; absent means none),
  ``splits`` (images per split) and ``hash`` (a digest of every array, which
  models record as the hash of the data they were trained on);
- ``manifest.csv``: ``file,class,split,sha256``, one row per image, in array
  order within each split (so row i of a split is image i of its arrays).

Arrays open memory-mapped, so training streams them without loading them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from celestial_data.errors import PreparedDataError
from celestial_data.image import COLOR_MODES, ColorMode, ImageFormat, WithImageFormat
from celestial_data.view import NO_VIEW, ViewParams

__all__ = [
    "ARRAY_SPLITS",
    "DATASET_FILE",
    "MANIFEST_FILE",
    "SPLITS",
    "TEST_VARIED",
    "TRAIN_VARIED",
    "VARIED",
    "PreparedDataset",
    "load_prepared",
    "write_prepared",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Varied copies of the ``val`` pictures (``prepare.varied``, `celestial_data.vary`):
#: what the unknown-image threshold is also calibrated on; never trained on or
#: measured, so not one of `SPLITS`.
VARIED = "varied"
#: Varied copies of the ``train`` pictures (``prepare.train_varied``): trained on
#: with the ``train`` split, never measured.
TRAIN_VARIED = "train_varied"
#: Varied copies of the ``test`` pictures (``prepare.test_varied``): measured by
#: ``evaluate`` (its ``varied`` metrics), never trained or calibrated on.
TEST_VARIED = "test_varied"
#: Every split a prepared folder may hold arrays of.
ARRAY_SPLITS: tuple[str, ...] = (*SPLITS, VARIED, TRAIN_VARIED, TEST_VARIED)
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PreparedDataset(WithImageFormat):
    """A prepared dataset folder, opened lazily."""

    path: Path
    classes: tuple[str, ...]
    image_format: ImageFormat
    """The images' size, colour mode and view."""
    splits: dict[str, int]
    hash: str
    _files: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def has(self, split: str) -> bool:
        """Whether the split exists and holds at least one image."""
        return self.splits.get(split, 0) > 0

    @property
    def fitted_splits(self) -> tuple[str, ...]:
        """The splits a model is fitted on: ``train``, and its varied copies when prepared."""
        return tuple(split for split in ("train", TRAIN_VARIED) if self.has(split))

    def fitted_labels(self) -> np.ndarray:
        """The labels of `fitted_splits`, one after the other: int32 ``(N,)``."""
        return np.concatenate([self.labels(split) for split in self.fitted_splits])

    def images(self, split: str) -> np.ndarray:
        """The split's images, memory-mapped, uint8 ``(N, size, size, channels)``."""
        return self._array(split, "images")

    def labels(self, split: str) -> np.ndarray:
        """The split's labels, int32 ``(N,)``."""
        return np.asarray(self._array(split, "labels"), dtype=np.int32)

    def files(self, split: str) -> list[str]:
        """The split's source files (relative to the raw folder), in array order."""
        if not self._files:
            with open(self.path / MANIFEST_FILE, newline="") as stream:
                for row in csv.DictReader(stream):
                    self._files.setdefault(row["split"], []).append(row["file"])
        return list(self._files.get(split, []))

    def _array(self, split: str, kind: str) -> np.ndarray:
        if split not in self.splits:
            raise PreparedDataError(
                f"Prepared data {self.path} has no '{split}' split (it has "
                f"{', '.join(self.splits) or 'none'}). Check the split fractions in "
                "params.yaml and rerun prepare."
            )
        path = self.path / f"{split}_{kind}.npy"
        if not path.is_file():
            raise PreparedDataError(
                f"Prepared data is incomplete: {path} is missing. Rerun prepare."
            )
        return np.load(path, mmap_mode="r")


def load_prepared(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset folder written by `write_prepared`.

    Raises:
        PreparedDataError: If the folder or its ``dataset.json`` is missing or malformed.
    """
    path = Path(path)
    meta_path = path / DATASET_FILE
    if not meta_path.is_file():
        raise PreparedDataError(
            f"No prepared dataset at {path} ({DATASET_FILE} not found). Run "
            "'celestial-data prepare RAW OUT' (the project's prepare stage) first."
        )
    try:
        meta = json.loads(meta_path.read_text())
        dataset = PreparedDataset(
            path=path,
            classes=tuple(meta["classes"]),
            image_format=ImageFormat.from_json(meta),
            splits={k: int(v) for k, v in meta["splits"].items()},
            hash=meta["hash"],
        )
    except (ValueError, KeyError, TypeError) as error:  # ValidationError is a ValueError
        raise PreparedDataError(
            f"{meta_path} is malformed ({error!r}). Rerun prepare to rewrite it."
        ) from error
    if meta.get("format_version") != FORMAT_VERSION:
        raise PreparedDataError(
            f"{meta_path} has format version {meta.get('format_version')!r}, expected "
            f"{FORMAT_VERSION}. Rerun prepare with this version of celestial-data."
        )
    if dataset.color_mode not in COLOR_MODES:
        raise PreparedDataError(f"{meta_path}: unknown color_mode {dataset.color_mode!r}.")
    return dataset


def digest_arrays(path: Path, splits: list[str]) -> str:
    """SHA-256 over the image and label arrays of ``splits``, in order."""
    digest = hashlib.sha256()
    for split in splits:
        for kind in ("images", "labels"):
            with open(path / f"{split}_{kind}.npy", "rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def write_prepared(
    path: str | Path,
    classes: list[str],
    color_mode: ColorMode,
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[str]]],
    sha256: dict[str, list[str]] | None = None,
    view: ViewParams = NO_VIEW,
) -> PreparedDataset:
    """Write a small prepared dataset from in-memory arrays.

    `celestial-data prepare` streams large datasets split by split; this helper
    writes the same format from arrays, for tests and small tools.

    Args:
        path: Output folder (created).
        classes: Class names in label order.
        color_mode: ``"rgb"`` or ``"grayscale"``.
        arrays: For each split, ``(images, labels, files)``.
        sha256: For each split, the content hash of each file (default: empty).
        view: The canonical view the images were taken with (recorded only).

    Returns:
        The written dataset, opened.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    image_size = None
    rows = []
    for split, (images, labels, files) in arrays.items():
        if split not in ARRAY_SPLITS:
            raise ValueError(f"split must be one of {ARRAY_SPLITS}. Received: {split!r}")
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be (N, size, size, channels). Received: {images.shape}")
        image_size = images.shape[1]
        np.save(path / f"{split}_images.npy", images)
        np.save(path / f"{split}_labels.npy", np.asarray(labels, dtype=np.int32))
        hashes = (sha256 or {}).get(split, [""] * len(files))
        rows += [
            (file, classes[int(label)], split, digest)
            for file, label, digest in zip(files, labels, hashes, strict=True)
        ]
    write_manifest(path, rows)
    write_dataset_json(
        path,
        classes,
        ImageFormat(int(image_size or 0), color_mode, view),
        {split: len(arrays[split][1]) for split in arrays},
    )
    return load_prepared(path)


def write_manifest(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """Write ``manifest.csv`` (``file,class,split,sha256``) in the given order."""
    with open(path / MANIFEST_FILE, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["file", "class", "split", "sha256"])
        writer.writerows(rows)


def write_dataset_json(
    path: Path, classes: list[str], image_format: ImageFormat, splits: dict[str, int]
) -> None:
    """Write ``dataset.json``, hashing the arrays already written for ``splits``."""
    meta = {
        "format_version": FORMAT_VERSION,
        "classes": list(classes),
        **image_format.to_json(),
        "splits": splits,
        "hash": digest_arrays(path, list(splits)),
    }
    (path / DATASET_FILE).write_text(json.dumps(meta, indent=2) + "\n")
