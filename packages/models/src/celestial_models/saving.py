"""Write and read a model directory: ``model.keras``, ``metadata.json``, ``history.json``.

Everything is written so that the same inputs give the same bytes: the
``.keras`` zip gets fixed timestamps and no save date, and the JSON files are
sorted and free of wall-clock values. ``dvc repro -f`` twice leaves
``dvc.lock`` unchanged.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from celestial_models import __version__
from celestial_models.backend import fast_initializers, keras
from celestial_models.errors import ModelDirError

__all__ = [
    "FORMAT_VERSION",
    "HISTORY_FILE",
    "METADATA_FILE",
    "MODEL_FILE",
    "file_sha256",
    "load_model",
    "read_metadata",
    "write_json",
    "write_model",
]

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.json"
# Version of the model directory layout and metadata keys; bumped on any change
# that an older reader would misread.
FORMAT_VERSION = 1

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` as a ``.keras`` file whose bytes depend on the model only.

    Keras stamps the zip entries with the current time and its
    ``metadata.json`` with a save date; both are replaced by constants.
    """
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        draft = Path(scratch) / MODEL_FILE
        keras.saving.save_model(model, draft)
        with zipfile.ZipFile(draft) as source, zipfile.ZipFile(path, "w") as target:
            for entry in source.infolist():
                data = source.read(entry.filename)
                if entry.filename == "metadata.json":
                    meta = json.loads(data)
                    meta.pop("date_saved", None)
                    data = json.dumps(meta, sort_keys=True).encode()
                fixed = zipfile.ZipInfo(entry.filename, date_time=_ZIP_EPOCH)
                fixed.create_system = 3
                fixed.external_attr = 0o644 << 16
                target.writestr(fixed, data, compress_type=zipfile.ZIP_STORED)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as sorted, indented JSON with a final newline."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """Read and check ``metadata.json`` of a model directory.

    Raises:
        ModelDirError: If the directory, its model or its metadata is missing,
            malformed or written by an incompatible version.
    """
    if not model_dir.is_dir():
        raise ModelDirError(
            f"Model directory {model_dir} not found. Train one with "
            "'celestial-models train PREPARED MODEL_DIR' (the project's train stage)."
        )
    for name in (MODEL_FILE, METADATA_FILE):
        if not (model_dir / name).is_file():
            raise ModelDirError(
                f"Model directory {model_dir} is incomplete: {name} is missing. "
                "Retrain with 'celestial-models train' (dvc repro)."
            )
    try:
        metadata = json.loads((model_dir / METADATA_FILE).read_text())
    except ValueError as error:
        raise ModelDirError(
            f"{model_dir / METADATA_FILE} is not valid JSON ({error}). Retrain the model."
        ) from error
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != FORMAT_VERSION:
        raise ModelDirError(
            f"{model_dir} holds a model directory of format version {version!r}; this "
            f"celestial-models {__version__} reads version {FORMAT_VERSION}. Retrain the "
            "model with this version (dvc repro -f), or install the version that wrote it."
        )
    missing = [key for key in ("classes", "image_size", "color_mode") if key not in metadata]
    if missing:
        raise ModelDirError(
            f"{model_dir / METADATA_FILE} lacks {', '.join(missing)}. Retrain the model."
        )
    return metadata


def load_model(path: Path) -> keras.Model:
    """Load a ``.keras`` file safely (no arbitrary code), without compiling it.

    Raises:
        ModelDirError: If Keras cannot read the file.
    """
    try:
        with fast_initializers():  # the initial weights are overwritten at once
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelDirError(
            f"Cannot load {path} with Keras {keras.__version__} ({error}). Retrain the "
            "model with this version (dvc repro -f)."
        ) from error
