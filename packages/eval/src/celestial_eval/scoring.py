"""How a model scores images: its probabilities, and how it answers "unknown".

Both stages score through here: ``evaluate`` measures the model on the
held-out split (`predict_and_score`, one pass for the probabilities, the
unknown-image score of the split and of generated non-body images), and the
``rejection`` stage measures how well a score separates unseen classes
(`auroc`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from celestial_data import ImageFormat, to_array
from celestial_eval.errors import EvalError
from celestial_eval.metrics import DIGITS

if TYPE_CHECKING:
    from celestial_models import Classifier

__all__ = [
    "NONBODY_COUNT",
    "PICTURE_SIDE",
    "auroc",
    "check_probabilities",
    "nonbody_images",
    "nonbody_rejection",
    "predict",
    "predict_and_score",
]


def predict(classifier: Classifier, images: np.ndarray) -> np.ndarray:
    """Probabilities for ``images`` (read chunk by chunk when memory-mapped).

    The whole split goes to the classifier in one call: it batches internally
    with a single compiled shape, where calls of varying sizes would compile
    again.

    Raises:
        EvalError: If the model returns a wrong shape or non-finite values.
    """
    return check_probabilities(classifier.predict(images), len(images), len(classifier.classes))


def check_probabilities(probabilities: np.ndarray, count: int, classes: int) -> np.ndarray:
    """``probabilities`` as float64 ``(count, classes)``, checked.

    Raises:
        EvalError: If the shape is wrong or a value is not finite.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (count, classes):
        raise EvalError(
            f"The model returned probabilities of shape {probabilities.shape} for "
            f"{count} images and {classes} classes."
        )
    if not np.isfinite(probabilities).all():
        raise EvalError(
            "The model returned non-finite probabilities (NaN or inf): training diverged. "
            "Lower the learning rate in params.yaml and retrain."
        )
    return probabilities


def predict_and_score(
    classifier: Classifier, images: np.ndarray, varied: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Probabilities of ``images`` and how the model answers "unknown", in one pass.

    The evaluated images, their ``varied`` copies (if any) and the non-body
    images (`nonbody_images`) go through the model in a single call (one
    compiled shape).

    Returns:
        ``(probabilities float64 (N, K), figures)``: the rows of ``images``,
        then those of ``varied``. ``figures`` holds the score, its threshold,
        the target and achieved acceptance of ``images`` (known classes),
        that of ``varied`` (``varied_accepted``, when given), and the share of
        non-body images rejected, overall and per kind; None for a model
        without a detector (probabilities only).

    Raises:
        EvalError: If the model returns a wrong shape or non-finite values.
    """
    known = np.asarray(images) if varied is None else np.concatenate([images, varied])
    detector = getattr(classifier, "detector", None)
    if detector is None:
        return predict(classifier, known), None
    kinds = nonbody_images(classifier.image_format)
    batch = np.concatenate([known, *kinds.values()])
    probabilities, scores = classifier.predict_with_score(batch)
    count, copies = len(images), len(known) - len(images)
    classes = len(classifier.classes)
    probabilities = check_probabilities(probabilities[: count + copies], count + copies, classes)
    unknown = detector.unknown(scores)
    rates, start = {}, count + copies
    for kind, kind_images in kinds.items():
        rates[kind] = round(float(unknown[start : start + len(kind_images)].mean()), DIGITS)
        start += len(kind_images)
    figures = {
        "score": detector.method,
        "threshold": round(detector.threshold, DIGITS),
        "acceptance_target": detector.acceptance,
        "accepted": round(float(1.0 - unknown[:count].mean()), DIGITS) if count else None,
        "nonbody_rejected": round(float(unknown[count + copies :].mean()), DIGITS),
        "nonbody": rates,
    }
    if varied is not None:
        accepted = 1.0 - unknown[count : count + copies].mean() if copies else None
        figures["varied_accepted"] = None if accepted is None else round(float(accepted), DIGITS)
    return probabilities, figures


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of a score meant to be higher for ``unknown``.

    The probability that an unknown image scores above a known one, ties
    counting half (the Mann-Whitney statistic).

    Raises:
        ValueError: If either side is empty.
    """
    known = np.asarray(known, dtype=np.float64)
    unknown = np.asarray(unknown, dtype=np.float64)
    if not len(known) or not len(unknown):
        raise ValueError("AUROC needs scores of both known and unknown images.")
    values = np.concatenate([known, unknown])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # Average ranks over ties.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    unknown_ranks = ranks[len(known) :].sum()
    n_u = len(unknown)
    return float((unknown_ranks - n_u * (n_u + 1) / 2.0) / (len(known) * n_u))


#: Side of the generated non-body pictures, in pixels: each is taken through
#: the model's image format (its view, size and colour mode) as an upload of
#: that size would be, so that what is measured is what serving answers.
PICTURE_SIDE = 128


#: Non-body pictures of each kind that `predict_and_score` measures.
NONBODY_COUNT = 8


def nonbody_images(
    image_format: ImageFormat, count: int = NONBODY_COUNT, seed: int = 0
) -> dict[str, np.ndarray]:
    """Images that are not celestial bodies, ``count`` of each kind, always the same.

    Kinds: ``blank`` (uniform frames, black to white), ``noise`` (uniform
    random pixels), ``square`` (a bright square on black), ``smudge`` (a
    faint, elongated, tilted glow, like a distant galaxy). Each is drawn as
    a `PICTURE_SIDE`-pixel picture, then converted as an upload is
    (`celestial_data.to_array`): the canonical view finds, crops and shrinks
    it, which makes uniform noise a grainy grey square, a square a filled
    frame.

    Returns:
        For each kind, uint8 ``(count, *image_format.shape)``.
    """
    side = PICTURE_SIDE
    rng = np.random.default_rng(seed)
    shape = (count, side, side, 3)
    levels = np.linspace(0, 255, count).round().astype(np.uint8)
    blank = np.broadcast_to(levels[:, None, None, None], shape).copy()
    noise = rng.integers(0, 256, size=shape, dtype=np.uint8)
    square = np.zeros(shape, dtype=np.uint8)
    y, x = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
    smudge = np.zeros(shape, dtype=np.float64)
    for i in range(count):
        width = int(rng.integers(side // 4, side // 2 + 1))
        top, left = rng.integers(0, side - width + 1, size=2)
        square[i, top : top + width, left : left + width] = rng.integers(128, 256, size=3)
        angle = rng.uniform(0, np.pi)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = -x * np.sin(angle) + y * np.cos(angle)
        glow = np.exp(-((u / 0.3) ** 2 + (v / 0.08) ** 2))
        smudge[i] = glow[..., None] * rng.uniform(60, 160, size=3)
    pictures = {
        "blank": blank,
        "noise": noise,
        "square": square,
        "smudge": smudge.round().astype(np.uint8),
    }
    return {
        kind: np.stack([to_array(Image.fromarray(picture), image_format) for picture in batch])
        for kind, batch in pictures.items()
    }


def nonbody_rejection(classifier: Classifier) -> dict[str, Any]:
    """Share of non-body images (`nonbody_images`) the classifier calls unknown.

    The non-body part of `predict_and_score`, with no known images.

    Returns:
        ``{"rate": overall share, "images": count, "kinds": {kind: share}}``.
    """
    no_images = np.empty((0, *classifier.input_shape), dtype=np.uint8)
    _, figures = predict_and_score(classifier, no_images)
    if figures is None:
        raise EvalError(
            "The model has no unknown-image detector (ood.json) to measure. Retrain it with "
            "this version of celestial-models."
        )
    count = NONBODY_COUNT * len(figures["nonbody"])
    return {"rate": figures["nonbody_rejected"], "images": count, "kinds": figures["nonbody"]}
