"""The evaluate stage: measure a trained model on held-out images, write DVC metrics and plots.

Everything is computed on images that neither trained the model nor chose its
weights: the test split when the prepared data has one, else the validation
split (``metrics.json`` names the split used).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from celestial_data import SPLITS, TEST_VARIED, VARIED, PreparedDataset, load_prepared
from celestial_data.command import counted, output_folder
from celestial_data.params import Params
from celestial_eval.confusion import draw_confusion, write_confusion_csv
from celestial_eval.drawing import Drawer
from celestial_eval.errors import EvalError, MismatchError, MissingInputError
from celestial_eval.history import draw_history, read_history, write_history_csv
from celestial_eval.metrics import DIGITS, classification_metrics, confusion_matrix
from celestial_eval.misclassified import write_misclassified_csv
from celestial_eval.preview import draw_preview, select_preview
from celestial_eval.scoring import predict_and_score
from celestial_models.model_dir import RESTORE_HINT

if TYPE_CHECKING:
    from celestial_models import Classifier

__all__ = [
    "MODEL_FILES",
    "OUTPUTS",
    "EvaluateParams",
    "check_compatible",
    "choose_split",
    "evaluate",
    "write_evaluation",
]


class EvaluateParams(Params):
    """The ``evaluate`` section of ``params.yaml``."""

    section = "evaluate"

    split: Literal["auto", "test", "val"] = Field(
        "auto",
        description="the held-out split to measure: `auto` (test if the data has one, else "
        "validation), `test` or `val`; the training split is never accepted",
    )
    preview_images: int = Field(
        24,
        ge=0,
        description="images drawn in `preview.png`, mistakes first; `0` draws an empty grid",
    )


# File names in OUT_DIR; the project template's dvc.yaml declares these.
OUTPUTS = {
    "metrics": "metrics.json",
    "confusion": "confusion.csv",
    "history": "history.csv",
    "confusion_png": "confusion.png",
    "history_png": "history.png",
    "preview_png": "preview.png",
    "misclassified": "misclassified.csv",
}
MODEL_FILES = ("model.keras", "metadata.json", "history.json")
SPLIT_NAMES = {"test": "test", "val": "validation"}


def choose_split(dataset: PreparedDataset, requested: str = "auto") -> str:
    """The split to measure: ``requested``, or for ``auto`` test if present, else val.

    Raises:
        EvalError: If the chosen split is absent or empty.
    """
    if requested == "auto":
        for split in ("test", "val"):
            if dataset.has(split):
                return split
        raise EvalError(
            f"Prepared data {dataset.path} has no test or validation images (splits: "
            f"{dataset.splits}), so nothing held out can be measured. Set prepare's "
            "test_fraction or val_fraction above 0 in params.yaml and rerun the pipeline."
        )
    if not dataset.has(requested):
        raise EvalError(
            f"evaluate.split is '{requested}' but prepared data {dataset.path} has no "
            f"'{requested}' images (splits: {dataset.splits}). Use split: auto or change "
            "prepare's fractions."
        )
    return requested


def check_compatible(classifier: Classifier, dataset: PreparedDataset) -> np.ndarray:
    """Check that the model can be measured on ``dataset``.

    Returns:
        For each dataset class, the index of the model output that scores it
        (identity unless the model lists the same classes in another order).

    Raises:
        MismatchError: If the class sets or the image shapes differ.
    """
    model_classes, data_classes = list(classifier.classes), list(dataset.classes)
    if set(model_classes) != set(data_classes) or len(model_classes) != len(data_classes):
        missing = [c for c in data_classes if c not in model_classes]
        extra = [c for c in model_classes if c not in data_classes]
        raise MismatchError(
            f"The model knows {len(model_classes)} classes and the prepared data at "
            f"{dataset.path} has {len(data_classes)}: classes only in the data: "
            f"{', '.join(missing) or 'none'}; only in the model: {', '.join(extra) or 'none'}. "
            "Evaluate a model trained on this dataset (rerun the train stage)."
        )
    if tuple(classifier.input_shape) != tuple(dataset.input_shape):
        raise MismatchError(
            f"The model expects images of shape {tuple(classifier.input_shape)} "
            f"({classifier.image_size}px {classifier.color_mode}) but the prepared data at "
            f"{dataset.path} holds {dataset.input_shape} ({dataset.image_size}px "
            f"{dataset.color_mode}). Prepare the data with the model's image_size and "
            "color_mode, or retrain the model on this data."
        )
    return np.asarray([model_classes.index(c) for c in data_classes], dtype=np.int64)


def write_evaluation(
    out_dir: str | Path,
    *,
    classes: Sequence[str],
    split: str,
    probabilities: np.ndarray,
    actual: np.ndarray,
    files: Sequence[str],
    images: np.ndarray,
    history: Mapping[str, list[float | None]],
    preview_images: int = EvaluateParams().preview_images,
    extra: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    drawer: Drawer | None = None,
    drawn: Mapping[str, Future[bytes]] | None = None,
) -> dict[str, Any]:
    """Write every output of the evaluate stage from predictions already made.

    Args:
        out_dir: Output folder (created).
        classes: Class names in label order.
        split: The split measured (``test`` or ``val``).
        probabilities: float ``(N, K)`` predicted probabilities.
        actual: int ``(N,)`` true labels.
        files: The N source files, in image order.
        images: uint8 ``(N, S, S, C)`` images (read only for the preview).
        history: The training history (see `celestial_eval.history.read_history`).
        preview_images: How many images preview.png shows.
        extra: More top-level entries for metrics.json (``dataset``, ``model``).
        warnings: Warnings found before measuring (kept first in the list).
        drawer: Where the figures are drawn (default: a `Drawer` of its own).
        drawn: Figures already drawn, by their key in `OUTPUTS` (``history_png``).

    Returns:
        The metrics written to metrics.json.
    """
    out = output_folder(out_dir, "evaluation folder")
    actual = np.asarray(actual, dtype=np.int64)
    measured = classification_metrics(probabilities, actual, classes)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(actual, predicted, len(classes))
    for k, name in enumerate(classes):
        measured["classes"][name]["predicted"] = int(matrix[:, k].sum())
    metrics: dict[str, Any] = {
        "split": split,
        **measured,
        "never_predicted": int((matrix.sum(axis=0) == 0).sum()),
        **(extra or {}),
        "warnings": [*warnings, *measured["warnings"]],
    }
    with open(out / OUTPUTS["metrics"], "w") as stream:
        stream.write(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    write_confusion_csv(out / OUTPUTS["confusion"], actual, predicted, classes)
    write_history_csv(out / OUTPUTS["history"], dict(history))
    write_misclassified_csv(out / OUTPUTS["misclassified"], files, actual, probabilities, classes)

    name, n, wrong = SPLIT_NAMES.get(split, split), len(actual), int((predicted != actual).sum())
    confidence = probabilities[np.arange(n), predicted]
    chosen = select_preview(actual, predicted, confidence, preview_images)
    order = "mistakes first · " if wrong and len(chosen) else ""
    with contextlib.ExitStack() as stack:
        drawer = drawer or stack.enter_context(Drawer())
        figures = dict(drawn or {})
        if "history_png" not in figures:
            figures["history_png"] = drawer.draw(draw_history, dict(history))
        figures["confusion_png"] = drawer.draw(
            draw_confusion,
            matrix,
            classes,
            subtitle=f"{name} split · {counted(n, 'image')} · accuracy {metrics['accuracy']:.1%}",
        )
        figures["preview_png"] = drawer.draw(
            draw_preview,
            np.asarray(images[chosen]),
            actual[chosen],
            predicted[chosen],
            confidence[chosen],
            classes,
            subtitle=f"{name} split · {wrong} of {n} misclassified · {order}"
            "each tile: actual class, then prediction and confidence",
        )
        for key, figure in figures.items():
            (out / OUTPUTS[key]).write_bytes(Drawer.result(figure))
    return metrics


def check_model_dir(model_dir: Path) -> None:
    """Raise `MissingInputError` naming every file of the model folder that is absent."""
    if not model_dir.is_dir():
        raise MissingInputError(
            f"Model folder {model_dir} not found. Run the project's train stage first "
            "('celestial-models train PREPARED MODEL_DIR'). " + RESTORE_HINT
        )
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise MissingInputError(
            f"Model folder {model_dir} lacks {', '.join(missing)}. Point MODEL_DIR at the "
            "output of 'celestial-models train' (run the project's train stage first)."
        )


def kept_epoch(model_dir: Path) -> int | None:
    """The epoch whose weights the model kept, from its metadata (None if it does not say)."""
    try:
        epoch = json.loads((model_dir / "metadata.json").read_text()).get("best_epoch")
    except (OSError, ValueError, AttributeError):  # named when the model is loaded
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def evaluate(
    model_dir: str | Path,
    prepared: str | Path,
    out_dir: str | Path,
    params: EvaluateParams | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure the model in ``model_dir`` on held-out images of ``prepared``.

    Args:
        model_dir: A folder written by ``celestial-models train``.
        prepared: A prepared dataset folder.
        out_dir: Where to write the outputs listed in `OUTPUTS`.
        params: The ``evaluate`` params (default: their defaults).

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        EvalError: If an input is missing or the model and data disagree.
        celestial_data.DataError: If the prepared data is unreadable.
        celestial_models.ModelError: If the model cannot be loaded.
    """
    params = EvaluateParams.of(params)
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    dataset = load_prepared(prepared)
    split = choose_split(dataset, params.split)
    history = read_history(model_dir / "history.json")
    with Drawer() as drawer:
        # Drawn while Keras is imported and the model predicts (see `celestial_eval.drawing`).
        drawn = {"history_png": drawer.draw(draw_history, history, kept=kept_epoch(model_dir))}
        # Keras comes with the model: imported here, so that importing this module stays light.
        from celestial_models import load_classifier

        classifier = load_classifier(model_dir)
        columns = check_compatible(classifier, dataset)
        images = dataset.images(split)
        # Varied copies of the test pictures (prepare.test_varied): how the model holds up.
        varied = (
            dataset.images(TEST_VARIED) if split == "test" and dataset.has(TEST_VARIED) else None
        )
        # One pass gives the probabilities and how the model answers "unknown".
        probabilities, unknown = predict_and_score(classifier, images, varied)
        probabilities = probabilities[:, columns]
        probabilities, varied_probabilities = (
            probabilities[: len(images)],
            probabilities[len(images) :],
        )
        warnings = []
        trained_on = classifier.metadata.get("data_hash")
        if trained_on and trained_on != dataset.hash:
            warnings.append(
                f"The model was trained on prepared data {trained_on[:12]}, not on this data "
                f"({dataset.hash[:12]}): the {split} images may include some it trained on."
            )
        extra = {
            "dataset": {
                "images": sum(dataset.splits.get(split, 0) for split in SPLITS),
                "classes": len(dataset.classes),
            },
            "model": model_summary(model_dir, classifier),
        }
        if varied is not None:
            extra["varied"] = varied_figures(
                varied_probabilities,
                dataset.labels(TEST_VARIED),
                None if unknown is None else unknown.pop("varied_accepted"),
            )
        if unknown is not None:
            extra["unknown"] = unknown
            calibrated = dataset.splits.get("val", 0) + dataset.splits.get(VARIED, 0)
            warnings += acceptance_warnings(unknown, split, calibrated)
        else:
            warnings.append(
                "The model has no unknown-image calibration (ood.json): retrain it with this "
                "version of celestial-models to measure how it rejects unknown images."
            )
        return write_evaluation(
            out_dir,
            classes=dataset.classes,
            split=split,
            probabilities=probabilities,
            actual=dataset.labels(split),
            files=dataset.files(split),
            images=images,
            history=history,
            preview_images=params.preview_images,
            extra=extra,
            warnings=warnings,
            drawer=drawer,
            drawn=drawn,
        )


#: Known images accepted this far under the threshold's target are warned about.
ACCEPTANCE_SLACK = 0.1


def acceptance_warnings(unknown: Mapping[str, Any], split: str, calibrated: int) -> list[str]:
    """A warning when far fewer known images are accepted than the threshold was set for.

    ``calibrated``: how many images the threshold was calibrated on.
    """
    accepted, target = unknown.get("accepted"), unknown["acceptance_target"]
    if accepted is None or accepted >= target - ACCEPTANCE_SLACK:
        return []
    return [
        f"Only {accepted:.0%} of the {split} images (known classes) were accepted, where the "
        f"unknown-image threshold was set to accept {target:.0%}: it was calibrated on "
        f"{calibrated} validation images, too few or too unlike these to hold its target. "
        "Give validation more images (more pictures, or a larger prepare.val_fraction)."
    ]


def varied_figures(
    probabilities: np.ndarray, labels: np.ndarray, accepted: float | None
) -> dict[str, Any]:
    """``metrics.json``'s ``varied``: the test pictures' varied copies, read and accepted.

    ``accepted`` is the share the model accepts as known (None without a
    detector, then left out).
    """
    correct = np.argmax(probabilities, axis=1) == np.asarray(labels)
    figures: dict[str, Any] = {
        "images": len(correct),
        "accuracy": round(float(correct.mean()), DIGITS) if len(correct) else None,
    }
    if accepted is not None:
        figures["accepted"] = accepted
    return figures


def model_summary(model_dir: Path, classifier: Classifier) -> dict[str, int]:
    """Size of the saved model in bytes, and its number of weights where known."""
    summary = {"size_bytes": (model_dir / "model.keras").stat().st_size}
    parameters = classifier.metadata.get("parameters")
    if parameters is None and classifier.model is not None:
        parameters = classifier.model.count_params()  # a folder from before the count was kept
    if parameters is not None:
        summary["parameters"] = int(parameters)
    return summary
