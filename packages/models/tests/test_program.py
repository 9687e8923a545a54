"""The exported inference program: what it answers, what loads it, how it fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from celestial_data import load_prepared
from celestial_models import ModelDirError, load_classifier
from celestial_models.program import Program, export_program
from celestial_models.saving import load_model
from celestial_models.scoring import Scoring, joined_model

EditMetadata = Callable[[Path, Callable[[dict[str, Any]], object]], None]


def test_the_program_answers_as_the_keras_model_does(trained: Path) -> None:
    images = np.asarray(load_prepared(trained / "prepared").images("val"))
    program = Program.load(trained / "model" / "inference.jax")
    from_program = Scoring.of_program(program, 3)(images)
    from_keras = Scoring.of_model(load_model(trained / "model" / "model.keras"))(images)
    for ours, theirs in zip(from_program, from_keras, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (from_program.probabilities.argmax(1) == from_keras.probabilities.argmax(1)).all()


def test_the_model_folder_records_the_program_it_holds(trained: Path) -> None:
    metadata = json.loads((trained / "model" / "metadata.json").read_text())
    program = Program.load(trained / "model" / "inference.jax")
    assert metadata["program"]["file"] == "inference.jax"
    assert metadata["program"]["embedding"] + 2 * 3 == program.width
    assert {"cpu", "cuda"} <= set(metadata["program"]["platforms"])  # runs beyond this CPU
    assert metadata["parameters"] == load_model(trained / "model" / "model.keras").count_params()


def test_exporting_the_same_weights_gives_the_same_bytes(trained: Path) -> None:
    # Exported here, from another call stack than training's: no code location is kept.
    model = joined_model(load_model(trained / "model" / "model.keras"))
    exported = export_program(model)
    assert exported == (trained / "model" / "inference.jax").read_bytes()
    assert b".py" not in exported and str(Path.cwd()).encode() not in exported


def test_a_classifier_loads_and_answers_without_keras(trained: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from celestial_data import load_prepared\n"
        "from celestial_models import load_classifier\n"
        "classifier = load_classifier(sys.argv[1])\n"
        "images = load_prepared(sys.argv[2]).images('val')\n"
        "probabilities, scores = classifier.predict_with_score(images)\n"
        "np.save(sys.argv[3], probabilities)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'keras'))\n"
    )
    out = trained / "no-keras.npy"
    done = subprocess.run(
        [sys.executable, "-c", code, str(trained / "model"), str(trained / "prepared"), out],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    classifier = load_classifier(trained / "model")
    expected = classifier.predict(load_prepared(trained / "prepared").images("val"))
    np.testing.assert_array_equal(np.load(out), expected)


def test_a_folder_without_a_program_is_run_through_keras(
    trained: Path, tmp_path: Path, without_program: Callable[[Path], None]
) -> None:
    shutil.copytree(trained / "model", tmp_path / "model")
    without_program(tmp_path / "model")
    old, new = load_classifier(tmp_path / "model"), load_classifier(trained / "model")
    assert old.model is not None and new.model is None
    images = np.asarray(load_prepared(trained / "prepared").images("val"))
    np.testing.assert_allclose(old.predict(images), new.predict(images), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("inference.jax", r"not a whole exported program"),
        ("model.keras", r"model\.keras is not the model inference\.jax was exported from.*cut"),
    ],
)
@pytest.mark.parametrize("cut", [0, 100, -100])
def test_a_cut_file_is_named_with_the_fix(
    trained: Path, tmp_path: Path, name: str, says: str, cut: int
) -> None:
    shutil.copytree(trained / "model", tmp_path / "model")
    path = tmp_path / "model" / name
    path.write_bytes(path.read_bytes()[:cut] if cut else b"not a model")
    with pytest.raises(ModelDirError, match=says + r".*dvc checkout dvc\.yaml"):
        load_classifier(tmp_path / "model")


def test_a_program_for_other_machines_is_refused(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jax import export

    monkeypatch.setattr(export, "default_export_platform", lambda: "metal")
    with pytest.raises(ModelDirError, match=r"for cpu, cuda.*not for this machine's metal"):
        load_classifier(trained / "model")
