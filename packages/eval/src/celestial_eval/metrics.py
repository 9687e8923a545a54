"""Classification metrics computed from probabilities, with nothing hidden.

Precision, recall and F1 follow their textbook definitions from the confusion
matrix. When a definition divides by zero (a class the model never predicts has
no precision; a class absent from the evaluated images has no recall), the value
is ``None`` (``null`` in JSON), the macro average that depends on it is ``None``
too, and a sentence in ``warnings`` says why: a substituted 0 or 1 would let a
collapsed class pass unnoticed in a table of averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from celestial_data.command import counted

__all__ = ["LOSS_EPSILON", "classification_metrics", "confusion_matrix", "cross_entropy"]

# Keras clips probabilities to this before taking logs, so the loss here is
# comparable with the val_loss of the training history.
LOSS_EPSILON = 1e-7
DIGITS = 6


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Count images per (actual, predicted) pair.

    Args:
        actual: True label indices, shape ``(N,)``.
        predicted: Predicted label indices, shape ``(N,)``.
        n_classes: Number of classes K.

    Returns:
        An int64 ``(K, K)`` matrix; rows are actual classes, columns predicted ones.
    """
    pairs = np.asarray(actual, dtype=np.int64) * n_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def cross_entropy(probabilities: np.ndarray, actual: np.ndarray) -> float:
    """Mean categorical cross-entropy of ``probabilities`` against the true labels.

    Probabilities are clipped to ``[LOSS_EPSILON, 1 - LOSS_EPSILON]`` as Keras
    does, so a confident mistake costs a large but finite loss.
    """
    chosen = probabilities[np.arange(len(actual)), actual].astype(np.float64)
    return float(-np.mean(np.log(np.clip(chosen, LOSS_EPSILON, 1.0 - LOSS_EPSILON))))


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else round(numerator / denominator, DIGITS)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return None if len(present) < len(values) else round(float(np.mean(present)), DIGITS)


def classification_metrics(
    probabilities: np.ndarray, actual: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, loss, macro and per-class precision / recall / F1 / support.

    Args:
        probabilities: float ``(N, K)`` class probabilities, one row per image.
        actual: int ``(N,)`` true label indices.
        classes: The K class names, in label order.

    Returns:
        A JSON-ready dict: ``images``, ``accuracy``, ``loss``, ``macro``
        (``precision``, ``recall``, ``f1``), ``classes`` (name to ``precision``,
        ``recall``, ``f1``, ``support``) and ``warnings`` (sentences naming every
        undefined value). Undefined values are ``None``.

    Raises:
        ValueError: If the shapes disagree or there are no images.
    """
    probabilities = np.asarray(probabilities)
    actual = np.asarray(actual, dtype=np.int64)
    n_classes = len(classes)
    if probabilities.ndim != 2 or probabilities.shape != (len(actual), n_classes):
        raise ValueError(
            f"probabilities must be (N, K) = ({len(actual)}, {n_classes}). "
            f"Received: {probabilities.shape}"
        )
    if len(actual) == 0:
        raise ValueError("Cannot compute metrics on zero images.")
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(actual, predicted, n_classes)
    true_positive = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    per_class: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for k, name in enumerate(classes):
        tp, n_actual, n_predicted = int(true_positive[k]), int(support[k]), int(predicted_count[k])
        per_class[name] = {
            "precision": _ratio(tp, n_predicted),
            "recall": _ratio(tp, n_actual),
            # 2TP / (2TP + FP + FN): defined whenever the class occurs at all,
            # and 0 for a class that is never predicted but present.
            "f1": _ratio(2 * tp, n_predicted + n_actual),
            "support": n_actual,
        }
        if n_actual == 0 and n_predicted == 0:
            warnings.append(
                f"Class '{name}' has no evaluated images and was never predicted: its "
                "precision, recall and F1 are undefined (null)."
            )
        elif n_predicted == 0:
            warnings.append(
                f"Class '{name}' was never predicted ({counted(n_actual, 'image')} of it): its "
                "precision is undefined (null) and its recall and F1 are 0."
            )
        elif n_actual == 0:
            warnings.append(
                f"Class '{name}' has no evaluated images but was predicted {n_predicted} "
                "times: its recall is undefined (null) and its precision and F1 are 0."
            )
    macro = {
        metric: _mean([values[metric] for values in per_class.values()])
        for metric in ("precision", "recall", "f1")
    }
    undefined = [metric for metric, value in macro.items() if value is None]
    if undefined:
        warnings.append(
            f"Macro {' and '.join(undefined)} undefined (null) because some class's value is."
        )
    return {
        "images": len(actual),
        "accuracy": round(float(true_positive.sum() / len(actual)), DIGITS),
        "loss": round(cross_entropy(probabilities, actual), DIGITS),
        "macro": macro,
        "classes": per_class,
        "warnings": warnings,
    }
