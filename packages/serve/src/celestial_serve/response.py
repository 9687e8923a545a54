"""Build the JSON answer of ``POST /predict``: the one place that shapes a prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["prediction"]


def prediction(
    probabilities: np.ndarray, classes: Sequence[str], k: int, model: dict[str, str]
) -> dict[str, Any]:
    """The answer for one image.

    Args:
        probabilities: The model's class probabilities for the image, shape ``(K,)``.
        classes: Class names, in the model's output order.
        k: How many of the most probable classes to list in ``top_k`` (capped at K).
        model: The model's identity (project and model hash).

    Returns:
        ``{"label", "probability", "top_k": [{"label", "probability"}...], "model"}``,
        ``top_k`` sorted by decreasing probability (ties in class order).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(classes),):
        raise ValueError(
            f"Expected {len(classes)} probabilities, one per class. "
            f"Received shape {probabilities.shape}."
        )
    order = np.argsort(-probabilities, kind="stable")[: max(1, k)]
    top_k = [{"label": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order]
    return {
        "label": top_k[0]["label"],
        "probability": top_k[0]["probability"],
        "top_k": top_k,
        "model": dict(model),
    }
