"""The list of misclassified images, for a person to go and look at."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["MISCLASSIFIED_COLUMNS", "write_misclassified_csv"]

MISCLASSIFIED_COLUMNS = ("file", "actual", "predicted", "confidence", "actual_probability")


def write_misclassified_csv(
    path: str | Path,
    files: Sequence[str],
    actual: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
) -> Path:
    """Write one row per misclassified image, the most confident mistakes first.

    Columns: ``file`` (as in the prepared manifest, relative to the raw folder),
    ``actual`` and ``predicted`` class names, ``confidence`` (probability of the
    predicted class) and ``actual_probability`` (what the model gave the true
    class). Probabilities have 4 decimals; ties keep image order. A file with
    only the header means no mistakes.
    """
    predicted = probabilities.argmax(axis=1)
    rows = np.arange(len(actual))
    confidence = probabilities[rows, predicted]
    wrong = np.flatnonzero(predicted != actual)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    path = Path(path)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(MISCLASSIFIED_COLUMNS)
        for i in wrong.tolist():
            writer.writerow(
                [
                    files[i],
                    classes[actual[i]],
                    classes[predicted[i]],
                    f"{confidence[i]:.4f}",
                    f"{probabilities[i, actual[i]]:.4f}",
                ]
            )
    return path
