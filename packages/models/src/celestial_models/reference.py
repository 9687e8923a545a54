"""The model's reference: its validation split answered as the server answers.

The train stage writes ``reference.jsonl`` (`REFERENCE_FILE`) into the model
folder: one `PredictionRecord` per validation image, with the classifier's
answer, its unknown-image score and verdict as served with rejection on (the
label is ``unknown`` when the score is above the calibrated threshold:
`OodDetector.unknown`), and the `image_features` of the image. Drift
(``celestial-eval drift``) compares a served model's prediction log with it:
the same model on images that did not fit its weights is what "no drift"
looks like. ``time``, ``digest`` and ``latency_ms`` are null; ``model`` is the
SHA-256 of ``model.keras``, as the server's ``model_hash``.

NumPy only: the probabilities and scores are those the calibration computed
(`celestial_models.scoring.calibrate`), not a second pass of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from celestial_data import PreparedDataset
from celestial_models.model_dir import MODEL_FILE, file_sha256
from celestial_models.ood import UNKNOWN, OodDetector
from celestial_models.prediction_log import REFERENCE_FILE, PredictionRecord, image_features

__all__ = ["TOP_K", "reference_records", "write_reference"]

#: Classes listed in each record's ``top_k``: as many as the server answers by default.
TOP_K = 5
# Images whose features are computed at a time: memory stays flat on large splits.
CHUNK = 256
# Digits kept of probabilities and scores, as the server's answer rounds them.
DIGITS = 6


def reference_records(
    probabilities: np.ndarray,
    scores: np.ndarray,
    detector: OodDetector,
    classes: Sequence[str],
    features: np.ndarray,
    model: str,
    project: str = "",
) -> list[PredictionRecord]:
    """The records of a batch of answers, labelled as the server labels them.

    Args:
        probabilities: ``(N, K)`` class probabilities.
        scores: ``(N,)`` unknown-image scores of ``detector``'s method.
        detector: The model's detector (its threshold decides ``unknown``).
        classes: Class names, in the model's output order.
        features: ``(N, F)`` `image_features` of the images.
        model: The model's hash (SHA-256 of ``model.keras``).
        project: The project's name, when known.

    Returns:
        One record per image, ``top_k`` sorted by decreasing probability (ties
        in class order), ``label`` the closest class or ``unknown``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    unknown = detector.unknown(scores)
    # Stable sort on the negated values: ties stay in class order, as the server sorts.
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_K]
    records = []
    for row, ranked, score, rejected, values in zip(
        probabilities, order, scores, unknown, features, strict=True
    ):
        top_k = tuple((classes[i], round(float(row[i]), DIGITS)) for i in ranked)
        records.append(
            PredictionRecord(
                project=project,
                model=model,
                label=UNKNOWN if rejected else top_k[0][0],
                unknown=bool(rejected),
                score=round(float(score), DIGITS),
                top_k=top_k,
                features=tuple(float(value) for value in values),
            )
        )
    return records


def write_reference(
    model_dir: str | Path,
    dataset: PreparedDataset,
    probabilities: np.ndarray,
    scores: np.ndarray,
    detector: OodDetector,
    project: str = "",
) -> Path:
    """Write ``reference.jsonl`` for the ``val`` split of the data a model was trained on.

    Call it after ``model.keras`` is written: the records name its hash.

    Args:
        model_dir: The model folder (holding ``model.keras``).
        dataset: The prepared data the model was trained on.
        probabilities: ``(N, K)`` the model's probabilities of the ``val`` images.
        scores: ``(N,)`` their unknown-image scores.
        detector: The model's calibrated detector.
        project: The project's name, when known.

    Returns:
        The path written.
    """
    model_dir = Path(model_dir)
    images = dataset.images("val")
    features = np.concatenate(
        [image_features(np.asarray(images[i : i + CHUNK])) for i in range(0, len(images), CHUNK)]
    )
    records = reference_records(
        probabilities,
        scores,
        detector,
        dataset.classes,
        features,
        file_sha256(model_dir / MODEL_FILE),
        project,
    )
    path = model_dir / REFERENCE_FILE
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(record.to_json() + "\n" for record in records)
    return path
