"""Finding and describing a project's model, and the start-up errors."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from celestial_serve.cli import main
from celestial_serve.project import ServeError, load_card

CLASSES = ["Earth", "Mars", "Moon"]


def fake_project(root: Path, *, model: bool = True, metadata: dict | None = None) -> Path:
    """A project folder whose model/ has the files the server looks for (not a real model)."""
    model_dir = root / "demo" / "model"
    model_dir.mkdir(parents=True)
    if model:
        (model_dir / "model.keras").write_bytes(b"not really a keras file")
    if metadata is not None:
        (model_dir / "metadata.json").write_text(json.dumps(metadata))
    return root / "demo"


META = {"classes": CLASSES, "image_size": 16, "color_mode": "rgb", "format_version": 1}


def test_card_describes_the_model_and_its_identity(tmp_path: Path) -> None:
    project = fake_project(tmp_path, metadata=META)
    card = load_card(project)
    digest = hashlib.sha256(b"not really a keras file").hexdigest()
    assert card.classes == tuple(CLASSES)
    assert card.input_shape == (16, 16, 3)
    assert card.identity == {"project": "demo", "model_hash": digest}
    info = card.info()
    assert info["classes"] == CLASSES
    assert info["input_shape"] == [16, 16, 3]
    json.dumps(info)


def test_no_trained_model_says_which_dvc_command_to_run(tmp_path: Path) -> None:
    project = fake_project(tmp_path, model=False)
    said = r"no trained model yet.*'dvc checkout dvc\.yaml'"
    with pytest.raises(ServeError, match=said) as caught:
        load_card(project)
    assert "dvc repro" in str(caught.value)
    assert "dvc pull" in str(caught.value)


def test_a_model_without_metadata_is_incomplete(tmp_path: Path) -> None:
    project = fake_project(tmp_path)
    with pytest.raises(ServeError, match=r"incomplete: metadata\.json is missing"):
        load_card(project)


def test_a_missing_project_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="No project folder"):
        load_card(tmp_path / "nowhere")


def test_the_model_folder_given_for_its_project_names_the_project(tmp_path: Path) -> None:
    project = fake_project(tmp_path)
    with pytest.raises(ServeError, match=rf"model folder: pass the project's folder, {project}\.$"):
        load_card(project / "model")


@pytest.mark.parametrize(
    "metadata",
    [{"classes": CLASSES}, {**META, "color_mode": "cmyk"}, {**META, "classes": []}],
)
def test_unusable_metadata_is_reported(tmp_path: Path, metadata: dict) -> None:
    project = fake_project(tmp_path, metadata=metadata)
    with pytest.raises(ServeError, match="metadata"):
        load_card(project)


def test_a_model_of_another_format_version_is_refused_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    project = fake_project(tmp_path, metadata={**META, "format_version": 99})
    with pytest.raises(ServeError, match="format version 99") as caught:
        load_card(project)
    assert "dvc pull" in str(caught.value)


def test_command_reports_a_missing_model_in_one_line(tmp_path: Path, capsys) -> None:
    project = fake_project(tmp_path, model=False)
    assert main([str(project), "--port", "8123"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("celestial-serve: error: Project 'demo' has no trained model yet")


def test_command_reports_a_taken_port_before_starting(tmp_path: Path, capsys) -> None:
    project = fake_project(tmp_path, metadata=META)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if port < 1024:
            pytest.skip("the OS gave a privileged port")
        assert main([str(project), "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"celestial-serve: error: Port {port} on 127.0.0.1 is already in use (another server "
        "is running there?). Stop it, or choose a free port with --port."
    )


@pytest.mark.parametrize(
    "args", [["--port", "80"], ["--workers", "0"], ["--host", "example.com"], []]
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path), *args] if args else [])
    assert caught.value.code == 2


def test_help_is_fast_because_it_imports_neither_keras_nor_litserve() -> None:
    code = (
        "import sys\n"
        "from celestial_serve.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('keras', 'jax', 'litserve') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
