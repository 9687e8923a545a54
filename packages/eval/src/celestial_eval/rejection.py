"""The ``rejection`` stage: leave-one-class-out figures of the project's model recipe.

Reads the ``train`` and ``ood`` params a model directory records, runs
`celestial_eval.leave_one_class_out.leave_one_class_out` with the
``rejection`` params (which classes, how many a model, how many epochs) and
writes the figures as JSON, a DVC metrics file. The cheap measure of the
evaluate stage (non-body images rejected, known images accepted) lives in
`celestial_eval.scoring`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from celestial_data import load_prepared
from celestial_data.command import output_folder
from celestial_data.errors import ParamsError
from celestial_data.params import Params
from celestial_eval.errors import EvalError
from celestial_eval.leave_one_class_out import leave_one_class_out
from celestial_models.ood import OOD_FILE, OodParams
from celestial_models.params import TrainParams

__all__ = ["RejectionParams", "rejection_stage"]


class RejectionParams(Params):
    """The ``rejection`` section of ``params.yaml``."""

    section = "rejection"

    classes: Literal["all"] | list[str] = Field(
        "all",
        min_length=1,
        description="classes held out: `all`, or a list of class names; each costs one "
        "training, or a share of one with `classes_per_model`",
    )
    epochs: int = Field(
        0,
        ge=0,
        description="training epochs of each held-out model, in place of `train.epochs`: "
        "`train.min_steps` is cut in the same proportion, so each trains that share of the "
        "project model's steps; `0` trains as the project's model was trained",
    )
    classes_per_model: int = Field(
        1,
        ge=1,
        description="classes each held-out model is trained without: `1` trains one model per "
        "class (leave-one-class-out); `2` half as many, each class still measured against the "
        "classes its model knows, as if held out alone (on the reference data: AUROC 0.9986 "
        "against 0.9990, in half the time); at most the number of classes less 2",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _all_or_names(cls, value: Any) -> Any:
        # One message for both forms, instead of one per member of the union.
        if value != "all" and not (isinstance(value, list) and value):
            raise ValueError("must be 'all' or a non-empty list of class names")
        return value


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
    params: RejectionParams | Mapping[str, Any] | None = None,
    workers: int | Literal["auto"] = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """The ``rejection`` stage: leave-one-class-out figures written to ``output`` (JSON).

    Each held-out model is trained with the ``train`` params and calibrated
    with the ``ood`` params recorded in ``model_dir``, so the figures describe
    the project's model recipe; ``params`` (the ``rejection`` section)
    chooses the classes (and may shorten training). ``workers`` is
    `celestial_eval.leave_one_class_out.leave_one_class_out`'s: how many
    processes train (``"auto"``, as ``celestial-eval rejection`` asks: one
    per core when worth it). ``progress``: say what is trained, and each
    class's AUROC, on standard error.

    Returns:
        The figures written.
    """
    params = RejectionParams.of(params)
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
            dataset,
            train_params,
            ood_params,
            params.classes,
            params.epochs,
            classes_per_model=params.classes_per_model,
            workers=workers,
            progress=progress,
        )
    output = Path(output)
    output_folder(output.parent, "folder of the rejection figures")
    output.write_text(json.dumps(figures, indent=2, allow_nan=False) + "\n")
    return figures
