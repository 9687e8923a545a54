"""Batch prediction over a folder of images: ``celestial-models predict``.

Every image under the folder (recursively, hidden files and folders skipped),
or the one image file given, gets a row ``file,label,probability,score,unknown``:
the predicted class (or ``unknown`` when the image is unlike every class), the
probability of the closest class, the unknown-image score and whether it
crossed the model's calibrated threshold.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from celestial_data.check import unread_photos
from celestial_data.dataset import is_image_name, listing
from celestial_data.errors import ImageTooLarge
from celestial_models.classifier import Classifier, load_classifier
from celestial_models.errors import ModelError
from celestial_models.ood import UNKNOWN

__all__ = ["COLUMNS", "UNKNOWN", "image_files", "predict_folder"]

COLUMNS = ("file", "label", "probability", "score", "unknown")
# Images decoded and predicted at a time: memory stays flat on large folders.
CHUNK = 256


def image_files(folder: Path) -> tuple[list[str], list[str]]:
    """Paths (relative to ``folder``, POSIX, sorted) of the image files under it, and the others.

    Hidden files and folders are in neither list.
    """
    images, others = [], []
    for current, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(current).relative_to(folder)
        for name in names:
            if is_image_name(name):
                images.append((base / name).as_posix())
            elif not name.startswith("."):
                others.append((base / name).as_posix())
    return sorted(images), sorted(others)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_folder(
    model_dir: str | Path,
    folder: str | Path,
    output: TextIO,
    *,
    reject: bool = True,
    warn: TextIO | None = sys.stderr,
) -> dict[str, int]:
    """Predict every image under ``folder`` and write one CSV row per image.

    Args:
        model_dir: A folder written by ``celestial-models train``.
        folder: The images to classify (picked by their file names), or
            one image file, read whatever its name (its row names the file
            alone).
        output: Where the CSV goes (header first).
        reject: Label images above the threshold ``unknown``; False keeps
            their closest class (the ``unknown`` column still says so).
        warn: Where to report files that are not readable images (skipped).

    Returns:
        Counts: ``images`` predicted, ``unknown`` among them, ``skipped``.

    Raises:
        ModelError: If the model cannot be loaded, the folder holds no image,
            or the file is not a readable one.
    """
    folder = Path(folder)
    if folder.is_file():  # read whatever its name (a camera's IMG_0001, a download's .part)
        folder, files, single = folder.parent, [folder.name], True
    elif folder.is_dir():
        single = False
        files, others = image_files(folder)
        if others and warn is not None:
            print(
                f"celestial-models: warning: {len(others)} file(s) that are not images (by their "
                f"name) left out: {listing(others, limit=5)}.{unread_photos(others)}",
                file=warn,
            )
    else:
        raise ModelError(f"{folder} not found. Pass a folder of images, or one image file.")
    if not files:
        raise ModelError(
            f"No image files under {folder}. Pass a folder holding JPEG, PNG or other images."
        )
    classifier = load_classifier(model_dir)
    if classifier.detector is None:
        raise ModelError(
            f"The model in {model_dir} has no unknown-image calibration (ood.json). "
            "Retrain it with this version of celestial-models (dvc repro)."
        )
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(COLUMNS)
    counts = {"images": 0, "unknown": 0, "skipped": 0}
    for chunk in _chunks(files, CHUNK):
        names, images = _read(classifier, folder, chunk, warn, strict=single)
        counts["skipped"] += len(chunk) - len(names)
        if not names:
            continue
        probabilities, scores = classifier.predict_with_score(np.stack(images))
        unknown = classifier.detector.unknown(scores)
        best = probabilities.argmax(axis=1)
        for i, name in enumerate(names):
            label = UNKNOWN if reject and unknown[i] else classifier.classes[best[i]]
            writer.writerow(
                (
                    name,
                    label,
                    f"{probabilities[i, best[i]]:.6f}",
                    f"{scores[i]:.6f}",
                    str(bool(unknown[i])).lower(),
                )
            )
        counts["images"] += len(names)
        counts["unknown"] += int(unknown.sum())
    return counts


def _read(
    classifier: Classifier,
    folder: Path,
    names: list[str],
    warn: TextIO | None,
    strict: bool = False,
) -> tuple[list[str], list[np.ndarray]]:
    """The readable images among ``names``, prepared; the others reported to ``warn``.

    With ``strict`` (the one file asked for), an unreadable one is an error.
    """
    kept, images = [], []
    for name in names:
        try:
            images.append(classifier.prepare(folder / name))
        except (ModelError, OSError, ImageTooLarge) as error:
            if strict:
                raise ModelError(f"Cannot classify {folder / name}: {error}") from error
            if warn is not None:
                print(f"celestial-models: warning: skipped {name}: {error}", file=warn)
            continue
        kept.append(name)
    return kept, images
