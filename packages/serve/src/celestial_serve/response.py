"""Build the JSON answer of ``POST /predict``: the one place that shapes a prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["UNKNOWN", "prediction"]

#: The label of an image that is none of the model's classes.
UNKNOWN = "unknown"


def prediction(
    probabilities: np.ndarray,
    classes: Sequence[str],
    k: int,
    model: dict[str, str],
    score: float | None = None,
    threshold: float | None = None,
    reject: bool = True,
) -> dict[str, Any]:
    """The answer for one image.

    Args:
        probabilities: The model's class probabilities for the image, shape ``(K,)``.
        classes: Class names, in the model's output order.
        k: How many of the most probable classes to list in ``top_k`` (capped at K).
        model: The model's identity (project and model hash).
        score: The image's unknown-image score (higher: less like the known
            classes); None for a model without a calibrated threshold.
        threshold: Scores above it are unknown images.
        reject: Answer ``"unknown"`` for an unknown image; False labels it
            with its closest class anyway.

    Returns:
        ``{"label", "probability", "unknown", "score", "threshold", "top_k":
        [{"label", "probability"}...], "model"}``, ``top_k`` sorted by
        decreasing probability (ties in class order). ``label`` is
        ``"unknown"`` (and ``unknown`` true) when the score is above the
        threshold and ``reject`` is on; ``probability`` is then that of the
        closest class, ``top_k[0]``. ``score`` and ``threshold`` are null for
        a model without a calibrated threshold.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(classes),):
        raise ValueError(
            f"Expected {len(classes)} probabilities, one per class. "
            f"Received shape {probabilities.shape}."
        )
    values = probabilities.tolist()
    # Python's sort is stable with reverse=True too: ties stay in class order.
    order = sorted(range(len(values)), key=values.__getitem__, reverse=True)[: max(1, k)]
    top_k = [{"label": classes[i], "probability": round(values[i], 6)} for i in order]
    shown: tuple[float | None, float | None] = (None, None)
    unknown = False
    if score is not None and threshold is not None and np.isfinite(score):
        shown = (round(float(score), 6), round(float(threshold), 6))
        unknown = bool(reject and score > threshold)
    return {
        "label": UNKNOWN if unknown else top_k[0]["label"],
        "probability": top_k[0]["probability"],
        "unknown": unknown,
        "score": shown[0],
        "threshold": shown[1],
        "top_k": top_k,
        "model": dict(model),
    }
