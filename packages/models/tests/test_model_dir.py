"""Reading a model directory's description: checked, and without importing Keras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from celestial_models import ModelDirError
from celestial_models.model_dir import FORMAT_VERSION, file_sha256, read_metadata

GOOD = {
    "classes": ["Earth", "Mars"],
    "image_size": 16,
    "color_mode": "rgb",
    "format_version": FORMAT_VERSION,
}


def model_dir(root: Path, metadata: dict | str) -> Path:
    folder = root / "model"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"weights")
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    (folder / "metadata.json").write_text(text)
    return folder


def test_good_metadata_is_returned_whole(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, {**GOOD, "params": {"epochs": 3}})
    assert read_metadata(folder)["params"] == {"epochs": 3}
    assert len(file_sha256(folder / "model.keras")) == 64


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"classes": []}, "non-empty list of class names"),
        ({"classes": "Earth"}, "non-empty list of class names"),
        ({"image_size": 0}, "positive image_size"),
        ({"image_size": "16"}, "positive image_size"),
        ({"color_mode": "cmyk"}, "color_mode in"),
        ({"format_version": 2}, "format version 2"),
    ],
)
def test_bad_metadata_is_refused_with_the_reason(tmp_path: Path, change: dict, words) -> None:
    with pytest.raises(ModelDirError, match=words) as caught:
        read_metadata(model_dir(tmp_path, {**GOOD, **change}))
    assert "Retrain" in str(caught.value)


def test_metadata_that_is_not_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="not readable JSON"):
        read_metadata(model_dir(tmp_path, "{classes"))


def test_reading_the_description_imports_neither_keras_nor_jax() -> None:
    code = (
        "import sys\n"
        "import celestial_models.model_dir\n"
        "print(sorted(m for m in ('keras', 'jax') if m in sys.modules))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize("missing", ["model", "model.keras", "metadata.json"])
def test_a_missing_model_says_how_a_failed_repro_removed_it_and_how_to_restore_it(
    tmp_path: Path, missing: str
) -> None:
    folder = model_dir(tmp_path, GOOD)
    if missing == "model":
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    else:
        (folder / missing).unlink()
    with pytest.raises(ModelDirError) as caught:
        read_metadata(folder)
    message = str(caught.value)
    assert "failed 'dvc repro' removes a stage's outputs before it runs" in message
    assert "'dvc checkout dvc.yaml'" in message and "'dvc pull dvc.yaml'" in message
