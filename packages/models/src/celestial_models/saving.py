"""Write a model directory (model.keras, metadata.json, history.json); load its model.

Everything is written so that the same inputs give the same bytes: the
``.keras`` zip gets fixed timestamps and no save date, and the JSON files are
sorted and free of wall-clock values. ``dvc repro -f`` twice leaves
``dvc.lock`` unchanged.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from celestial_models.backend import fast_initializers, keras
from celestial_models.errors import ModelDirError
from celestial_models.model_dir import MODEL_FILE, REBUILD_HINT

__all__ = ["load_model", "write_json", "write_model"]

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


def load_model(path: Path) -> keras.Model:
    """Load a ``.keras`` file safely (no arbitrary code), without compiling it.

    Raises:
        ModelDirError: If Keras cannot read the file.
    """
    if path.is_file() and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ModelDirError(
            f"{path} is not a whole .keras file (truncated or corrupt). " + REBUILD_HINT
        )
    try:
        with fast_initializers():  # the initial weights are overwritten at once
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelDirError(
            f"Cannot load {path} with Keras {keras.__version__} ({error}). Retrain the "
            "model with this version (dvc repro -f)."
        ) from error
