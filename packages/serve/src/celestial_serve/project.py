"""Find a project's trained model and describe it without loading it.

The description (`ModelCard`) is what the HTTP side of the server needs: the
class names and input format, to check and preprocess uploads, and the model's
identity, to stamp every answer. Reading it costs no Keras import, so the
server process stays light and start-up errors come before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celestial_data import ImageFormat
from celestial_data.image import WithImageFormat
from celestial_models import ModelDirError
from celestial_models.model_dir import (
    METADATA_FILE,
    MODEL_FILE,
    RESTORE_HINT,
    file_sha256,
    read_metadata,
)
from celestial_serve.errors import ServeError

__all__ = ["ModelCard", "load_card"]

MODEL_DIR = "model"


@dataclass(frozen=True)
class ModelCard(WithImageFormat):
    """What the server knows about the model it serves."""

    project: str
    model_dir: Path
    classes: tuple[str, ...]
    image_format: ImageFormat
    """The size, colour mode and canonical view of the model's images."""
    model_hash: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def identity(self) -> dict[str, str]:
        """The model's identity, returned with every prediction."""
        return {"project": self.project, "model_hash": self.model_hash}

    def info(self) -> dict[str, Any]:
        """The JSON served at ``/info``."""
        return {
            **self.identity,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "color_mode": self.color_mode,
            "input_shape": list(self.input_shape),
            "metadata": self.metadata,
        }


def load_card(project_dir: str | Path) -> ModelCard:
    """Describe the trained model in ``model/`` of a project folder (the train stage's outputs).

    Raises:
        ServeError: If the folder, the model or its metadata is missing or unreadable;
            the message names the ``dvc`` command that fixes it.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise ServeError(
            f"No project folder at {project_dir}. Pass the folder of a project "
            "(for example projects/synthetic-bodies)."
        )
    if (project_dir / MODEL_FILE).is_file() and project_dir.name == MODEL_DIR:
        raise ServeError(
            f"{project_dir} is a project's model folder: pass the project's folder, "
            f"{project_dir.parent}."
        )
    project = project_dir.resolve().name
    model_dir = project_dir / MODEL_DIR
    present = {name for name in (MODEL_FILE, METADATA_FILE) if (model_dir / name).is_file()}
    if not present:
        raise ServeError(
            f"Project '{project}' has no trained model yet ({model_dir / MODEL_FILE} not found). "
            f"Run 'dvc repro' in {project_dir} to train it, or 'dvc pull' there to fetch "
            f"the trained model from the DVC remote. {RESTORE_HINT}"
        )
    missing = sorted({MODEL_FILE, METADATA_FILE} - present)
    if missing:
        raise ServeError(
            f"Model folder {model_dir} is incomplete: {', '.join(missing)} is missing. "
            f"Run 'dvc repro' in {project_dir} to retrain it, or 'dvc pull' there to "
            "fetch the complete model."
        )
    try:
        meta = read_metadata(model_dir)
    except ModelDirError as error:
        raise ServeError(
            f"{error} (Or run 'dvc pull' in {project_dir} to fetch it again.)"
        ) from None
    return ModelCard(
        project=project,
        model_dir=model_dir,
        classes=tuple(meta["classes"]),
        image_format=ImageFormat.from_json(meta),  # read_metadata checked it
        model_hash=file_sha256(model_dir / MODEL_FILE),
        metadata=meta,
    )
