"""What a model directory holds, and how to read its description without Keras.

A model directory, as ``celestial-models train`` writes it, holds
``model.keras`` (the network and its weights), ``inference.jax`` (its
inference pass exported, run without Keras: `celestial_models.program`),
``metadata.json`` (classes,
input format, training parameters, format version), ``history.json``, the
unknown-image detector (``ood.json``, ``ood_centroids.npy``,
``ood_precision.npy``: `celestial_models.ood`) and ``reference.jsonl``, the
validation split's answers that drift is measured against
(`celestial_models.reference`).
This module imports neither Keras nor JAX, so that a process that only needs
the description (an HTTP server checking uploads) stays light.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from celestial_data import COLOR_MODES, NO_VIEW, ViewParams
from celestial_models import __version__
from celestial_models.errors import ModelDirError

__all__ = [
    "FORMAT_VERSION",
    "HISTORY_FILE",
    "METADATA_FILE",
    "MODEL_FILE",
    "PROGRAM_FILE",
    "REBUILD_HINT",
    "RESTORE_HINT",
    "file_sha256",
    "read_metadata",
]

MODEL_FILE = "model.keras"
PROGRAM_FILE = "inference.jax"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.json"
# Version of the model directory layout and metadata keys; bumped on any change
# that an older reader would misread.
FORMAT_VERSION = 1
# DVC deletes a stage's outputs before running it, so a train stage that fails
# (a params typo, a diverged run) leaves no model: say so wherever one is needed.
RESTORE_HINT = (
    "A failed 'dvc repro' removes a stage's outputs before it runs, so a failed train "
    "stage leaves no model: fix what made it fail and rerun it, or restore the last "
    "trained model, and every other output of the project's stages, from the project "
    "folder with 'dvc checkout dvc.yaml' (from the DVC cache) or 'dvc pull dvc.yaml' (from "
    "the remote)."
)


#: What to do about a model folder's file that is cut, corrupt or from another training.
REBUILD_HINT = (
    "Restore the model folder from the project folder with 'dvc checkout dvc.yaml' (or 'dvc "
    "pull dvc.yaml'), or rebuild it with 'dvc repro -f'."
)


def _incomplete(model_dir: Path, name: str) -> ModelDirError:
    return ModelDirError(
        f"Model directory {model_dir} is incomplete: {name} is missing. "
        "Retrain with 'celestial-models train' (dvc repro). " + RESTORE_HINT
    )


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """Read and check ``metadata.json`` of a model directory.

    Returns:
        The metadata, with ``classes`` (a non-empty list of names),
        ``image_size`` (a positive integer), ``color_mode`` (one of
        `celestial_data.COLOR_MODES`), ``view`` and ``program`` (if present)
        checked, and the program's file present when it names one.

    Raises:
        ModelDirError: If the directory, its model or its metadata is missing,
            malformed or written by an incompatible version.
    """
    if not model_dir.is_dir():
        raise ModelDirError(
            f"Model directory {model_dir} not found. Train one with "
            "'celestial-models train PREPARED MODEL_DIR' (the project's train stage). "
            + RESTORE_HINT
        )
    for name in (MODEL_FILE, METADATA_FILE):
        if not (model_dir / name).is_file():
            raise _incomplete(model_dir, name)
    path = model_dir / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelDirError(f"{path} is not readable JSON ({error}). Retrain the model.") from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != FORMAT_VERSION:
        raise ModelDirError(
            f"{model_dir} holds a model directory of format version {version!r}; this "
            f"celestial-models {__version__} reads version {FORMAT_VERSION}. Retrain the "
            "model with this version (dvc repro -f), or install the version that wrote it."
        )
    missing = [key for key in ("classes", "image_size", "color_mode") if key not in metadata]
    if missing:
        raise ModelDirError(f"{path} lacks {', '.join(missing)}. Retrain the model.")
    classes, size, mode = metadata["classes"], metadata["image_size"], metadata["color_mode"]
    valid = (
        isinstance(classes, list)
        and classes
        and all(isinstance(name, str) for name in classes)
        and isinstance(size, int)
        and size >= 1
        and mode in COLOR_MODES
    )
    if not valid:
        raise ModelDirError(
            f"{path} is invalid: expected a non-empty list of class names, a positive "
            f"image_size and a color_mode in {COLOR_MODES}; received classes={classes!r:.200}, "
            f"image_size={size!r}, color_mode={mode!r}. Retrain the model."
        )
    try:
        ViewParams.model_validate(metadata.get("view", NO_VIEW.dump()))
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ModelDirError(
            f"{path} has an invalid view ({str(error).splitlines()[0]}: "
            f"{metadata.get('view')!r:.200}). Retrain the model."
        ) from None
    program = metadata.get("program")
    if program is not None and not isinstance(program, dict):
        raise ModelDirError(
            f"{path}'s 'program' is {program!r:.200}, not the description training writes. "
            + REBUILD_HINT
        )
    if program is not None and not (model_dir / PROGRAM_FILE).is_file():
        raise _incomplete(model_dir, PROGRAM_FILE)
    return metadata
