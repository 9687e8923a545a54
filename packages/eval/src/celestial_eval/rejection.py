"""How well a model answers "unknown" for images outside its classes.

Two measurements, honest with the data a project has (no images of other
bodies are needed):

- `nonbody_rejection` (part of the evaluate stage, cheap): the share of
  images that are not celestial bodies at all (blank frames, uniform noise, a
  square, a galaxy-like smudge; generated deterministically) that the model's
  calibrated threshold rejects.
- `leave_one_class_out` (the ``rejection`` stage, one training per class): for
  each held-out class, train on the other classes with the ``train`` and
  ``ood`` params the project's model was made with, then measure how well the
  score separates the held-out class's images (every split: the model never
  saw any) from the known classes' held-out images (AUROC), and how many of
  them the calibrated threshold rejects. Every score of `celestial_models.ood.SCORES` is measured
  from the same trainings, so the choice of score can be checked.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from celestial_data import PreparedDataset, load_prepared, write_prepared
from celestial_data.errors import ParamsError
from celestial_data.params import Params
from celestial_eval.errors import EvalError
from celestial_models.ood import OOD_FILE, OodParams
from celestial_models.params import TrainParams

if TYPE_CHECKING:
    from celestial_models import Classifier

__all__ = [
    "RejectionParams",
    "auroc",
    "leave_one_class_out",
    "nonbody_images",
    "nonbody_rejection",
    "predict_and_score",
    "rejection_stage",
]


class RejectionParams(Params):
    """The ``rejection`` section of ``params.yaml``."""

    section = "rejection"

    classes: Literal["all"] | list[str] = Field(
        "all",
        min_length=1,
        description="classes held out one at a time: `all`, or a list of class names; each "
        "costs one training",
    )
    epochs: int = Field(
        0,
        ge=0,
        description="training epochs of each held-out model; `0` trains as the project's model "
        "was trained (its `train.epochs`)",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _all_or_names(cls, value: Any) -> Any:
        # One message for both forms, instead of one per member of the union.
        if value != "all" and not (isinstance(value, list) and value):
            raise ValueError("must be 'all' or a non-empty list of class names")
        return value


DIGITS = 6


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


def nonbody_images(
    size: int, channels: int, count: int = 8, seed: int = 0
) -> dict[str, np.ndarray]:
    """Images that are not celestial bodies, ``count`` of each kind, always the same.

    Kinds: ``blank`` (uniform frames, black to white), ``noise`` (uniform
    random pixels), ``square`` (a bright square on black), ``smudge`` (a
    faint, elongated, tilted glow, like a distant galaxy).

    Returns:
        For each kind, uint8 ``(count, size, size, channels)``.
    """
    rng = np.random.default_rng(seed)
    shape = (count, size, size, channels)
    levels = np.linspace(0, 255, count).round().astype(np.uint8)
    blank = np.broadcast_to(levels[:, None, None, None], shape).copy()
    noise = rng.integers(0, 256, size=shape, dtype=np.uint8)
    square = np.zeros(shape, dtype=np.uint8)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    smudge = np.zeros(shape, dtype=np.float64)
    for i in range(count):
        side = int(rng.integers(max(size // 4, 1), max(size // 2, 2) + 1))
        top, left = rng.integers(0, size - side + 1, size=2)
        square[i, top : top + side, left : left + side] = rng.integers(128, 256, size=channels)
        angle = rng.uniform(0, np.pi)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = -x * np.sin(angle) + y * np.cos(angle)
        glow = np.exp(-((u / 0.3) ** 2 + (v / 0.08) ** 2))
        smudge[i] = glow[..., None] * rng.uniform(60, 160, size=channels)
    return {
        "blank": blank,
        "noise": noise,
        "square": square,
        "smudge": smudge.round().astype(np.uint8),
    }


def nonbody_rejection(classifier: Classifier) -> dict[str, Any]:
    """Share of non-body images (`nonbody_images`) the classifier calls unknown.

    Returns:
        ``{"rate": overall share, "images": count, "kinds": {kind: share}}``.
    """
    size, _, channels = classifier.input_shape
    kinds = nonbody_images(size, channels)
    rates: dict[str, float] = {}
    rejected = total = 0
    for kind, images in kinds.items():
        _, scores = classifier.predict_with_score(images)
        unknown = classifier.detector.unknown(scores)  # type: ignore[union-attr]
        rates[kind] = round(float(unknown.mean()), DIGITS)
        rejected, total = rejected + int(unknown.sum()), total + len(images)
    return {"rate": round(rejected / total, DIGITS), "images": total, "kinds": rates}


def predict_and_score(
    classifier: Classifier, images: np.ndarray
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Probabilities of ``images`` and how the model answers "unknown", in one pass.

    The evaluated images and the non-body images (`nonbody_images`) go through
    the model in a single call (one compiled shape).

    Returns:
        ``(probabilities float64 (N, K), figures)``: ``figures`` holds the score,
        its threshold, the target and achieved acceptance of ``images`` (known
        classes), and the share of non-body images rejected, overall and per
        kind; None for a model without a detector (probabilities only).

    Raises:
        EvalError: If the model returns a wrong shape or non-finite values.
    """
    from celestial_eval.evaluate import check_probabilities, predict

    detector = getattr(classifier, "detector", None)
    if detector is None:
        return predict(classifier, images), None
    size, _, channels = classifier.input_shape
    kinds = nonbody_images(size, channels)
    batch = np.concatenate([np.asarray(images), *kinds.values()])
    probabilities, scores = classifier.predict_with_score(batch)
    count, classes = len(images), len(classifier.classes)
    probabilities = check_probabilities(probabilities[:count], count, classes)
    unknown = detector.unknown(scores)
    rates, start = {}, count
    for kind, kind_images in kinds.items():
        rates[kind] = round(float(unknown[start : start + len(kind_images)].mean()), DIGITS)
        start += len(kind_images)
    figures = {
        "score": detector.method,
        "threshold": round(detector.threshold, DIGITS),
        "acceptance_target": detector.acceptance,
        "accepted": round(float(1.0 - unknown[:count].mean()), DIGITS) if count else None,
        "nonbody_rejected": round(float(unknown[count:].mean()), DIGITS),
        "nonbody": rates,
    }
    return probabilities, figures


def known_split(dataset: PreparedDataset) -> str:
    """The known images to compare with: test when present, else val."""
    for split in ("test", "val"):
        if dataset.has(split):
            return split
    raise EvalError(
        f"Prepared data {dataset.path} has no test or validation images: nothing held out "
        "to measure rejection on. Set prepare's test_fraction or val_fraction above 0."
    )


def without_class(dataset: PreparedDataset, held_out: int, path: Path) -> PreparedDataset:
    """A copy of ``dataset`` without class ``held_out`` (labels renumbered), written to ``path``."""
    classes = [c for k, c in enumerate(dataset.classes) if k != held_out]
    arrays = {}
    for split, count in dataset.splits.items():
        if not count:
            continue
        labels = np.asarray(dataset.labels(split))
        keep = np.flatnonzero(labels != held_out)
        files = dataset.files(split)
        arrays[split] = (
            np.asarray(dataset.images(split))[keep],
            labels[keep] - (labels[keep] > held_out),
            [files[i] for i in keep],
        )
    return write_prepared(path, classes, dataset.color_mode, arrays)


def held_out_images(dataset: PreparedDataset, held_out: int) -> np.ndarray:
    """Every image of class ``held_out``, from all splits."""
    parts = []
    for split, count in dataset.splits.items():
        if count:
            labels = np.asarray(dataset.labels(split))
            parts.append(np.asarray(dataset.images(split))[labels == held_out])
    return np.concatenate(parts)


def measure_held_out(
    classifier: Classifier, known: np.ndarray, unknown: np.ndarray, val: np.ndarray
) -> dict[str, Any]:
    """AUROC, rejection and acceptance of every score for one held-out model."""
    from celestial_models.ood import SCORES, calibrate_threshold, compute_scores

    detector = classifier.detector
    if detector is None:
        raise EvalError("The held-out model has no unknown-image detector.")
    stats = (detector.centroids, detector.precision)
    outputs = {
        name: classifier.outputs(images)
        for name, images in (("known", known), ("unknown", unknown), ("val", val))
    }
    scores: dict[str, dict[str, Any]] = {}
    for method in SCORES:
        known_s, unknown_s, val_s = (
            compute_scores(method, *outputs[name], *stats) for name in ("known", "unknown", "val")
        )
        threshold = (
            detector.threshold
            if method == detector.method
            else calibrate_threshold(val_s, detector.acceptance)
        )
        scores[method] = {
            "auroc": round(auroc(known_s, unknown_s), DIGITS),
            "rejected": round(float(np.mean(unknown_s > threshold)), DIGITS),
            "accepted": round(float(np.mean(known_s <= threshold)), DIGITS),
        }
    return scores


def leave_one_class_out(
    prepared: str | Path | PreparedDataset,
    train_params: TrainParams | None = None,
    ood_params: OodParams | None = None,
    classes: Sequence[str] | str = "all",
    epochs: int = 0,
    work_dir: str | Path | None = None,
    *,
    detail: bool = False,
) -> dict[str, Any]:
    """Train once per held-out class and measure how its images are rejected.

    Args:
        prepared: The project's prepared dataset.
        train_params: The ``train`` params each model is trained with.
        ood_params: The ``ood`` params (score, acceptance).
        classes: The classes to hold out, or ``"all"``.
        epochs: Epochs per training; 0 keeps ``train_params``' epochs.
        work_dir: Scratch folder (default: a temporary one, removed after).
        detail: Also give every score's figures per class (``detail``).

    Returns:
        The figures written to ``rejection.json`` (see `rejection_stage`).

    Raises:
        EvalError: If a class is unknown or the data has too few classes.
    """
    from celestial_models import load_classifier, train_model

    dataset = prepared if isinstance(prepared, PreparedDataset) else load_prepared(prepared)
    if len(dataset.classes) < 3:
        raise EvalError(
            f"Leave-one-class-out needs at least 3 classes (2 to train on, 1 held out); "
            f"{dataset.path} has {len(dataset.classes)}."
        )
    chosen = list(dataset.classes) if classes == "all" else list(classes)
    unknown_names = [c for c in chosen if c not in dataset.classes]
    if unknown_names:
        raise EvalError(
            f"rejection.classes names {', '.join(unknown_names)}, not classes of {dataset.path} "
            f"({', '.join(dataset.classes)}). Fix the list in params.yaml or use 'all'."
        )
    train_params = train_params or TrainParams()
    if epochs:
        train_params = train_params.model_copy(update={"epochs": epochs})
    ood_params = ood_params or OodParams()
    split = known_split(dataset)

    per_class: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        for name in chosen:
            held_out = dataset.classes.index(name)
            folder = Path(scratch) / f"without-{held_out}"
            subset = without_class(dataset, held_out, folder / "prepared")
            metadata = train_model(subset, folder / "model", train_params, ood=ood_params)
            unseen = held_out_images(dataset, held_out)
            result = measure_held_out(
                load_classifier(folder / "model"),
                np.asarray(subset.images(split)),
                unseen,
                np.asarray(subset.images("val")),
            )
            per_class[name] = {
                "val_accuracy": round(float(metadata["val_accuracy"]), DIGITS),
                "images": len(unseen),
                "scores": result,
            }
    return summarize(per_class, ood_params, split, detail)


def summarize(
    per_class: Mapping[str, Any],
    ood_params: OodParams,
    split: str,
    detail: bool = False,
) -> dict[str, Any]:
    """Averages over held-out classes: the chosen score first, then every score.

    ``held_out`` gives the chosen score's figures per class (named apart from
    ``metrics.json``'s per-class ``classes`` so that ``dvc metrics show``
    keeps them apart); ``detail`` adds every score's, per class.
    """
    from celestial_models.ood import SCORES

    def mean(method: str, key: str) -> float:
        return round(float(np.mean([c["scores"][method][key] for c in per_class.values()])), DIGITS)

    method = ood_params.score
    return {
        "score": method,
        "acceptance_target": ood_params.acceptance,
        "known_split": split,
        "held_out_classes": len(per_class),
        "auroc": mean(method, "auroc"),
        "rejected": mean(method, "rejected"),
        "accepted": mean(method, "accepted"),
        "val_accuracy": round(
            float(np.mean([c["val_accuracy"] for c in per_class.values()])), DIGITS
        ),
        "by_score": {
            m: {key: mean(m, key) for key in ("auroc", "rejected", "accepted")} for m in SCORES
        },
        "held_out": {
            name: {
                "images": c["images"],
                "val_accuracy": c["val_accuracy"],
                **c["scores"][method],
            }
            for name, c in per_class.items()
        },
        **({"detail": dict(per_class)} if detail else {}),
    }


def model_recipe(model_dir: str | Path) -> tuple[TrainParams, OodParams]:
    """The ``train`` and ``ood`` params a model directory was made with.

    Raises:
        EvalError: If the folder lacks ``metadata.json`` or the calibration.
    """
    model_dir = Path(model_dir)
    try:
        metadata = json.loads((model_dir / "metadata.json").read_text())
        ood = json.loads((model_dir / OOD_FILE).read_text())
        recorded = {"score": ood["score"], "acceptance": ood["acceptance"]}
        return TrainParams.parse(metadata["params"]), OodParams.parse(recorded)
    except (OSError, ValueError, KeyError, TypeError, ParamsError) as error:
        raise EvalError(
            f"Model folder {model_dir} lacks the training params (metadata.json) or the "
            f"unknown-image calibration ({OOD_FILE}): {error}. Run the project's train stage "
            "with this version of celestial-models first."
        ) from error


def rejection_stage(
    model_dir: str | Path,
    prepared: str | Path,
    output: str | Path,
    params: RejectionParams | None = None,
) -> dict[str, Any]:
    """The ``rejection`` stage: leave-one-class-out figures written to ``output`` (JSON).

    Each held-out model is trained with the ``train`` params and calibrated
    with the ``ood`` params recorded in ``model_dir``, so the figures describe
    the project's model recipe; ``params`` (the ``rejection`` section)
    chooses the classes (and may shorten training).

    Returns:
        The figures written.
    """
    params = params or RejectionParams()
    train_params, ood_params = model_recipe(model_dir)
    if not Path(prepared).is_dir():
        raise EvalError(
            f"Prepared data {prepared} not found. Run the project's prepare stage first."
        )
    dataset = load_prepared(prepared)
    if len(dataset.classes) < 3:
        # Not an error: a two-class project still reproduces, and says why
        # this measurement is missing.
        figures: dict[str, Any] = {
            "score": ood_params.score,
            "held_out_classes": 0,
            "warnings": [
                f"Leave-one-class-out needs at least 3 classes (2 to train on, 1 held "
                f"out); {dataset.path} has {len(dataset.classes)}, so nothing was measured."
            ],
        }
    else:
        figures = leave_one_class_out(
            dataset, train_params, ood_params, params.classes, params.epochs
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2, allow_nan=False) + "\n")
    return figures
