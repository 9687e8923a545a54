"""The command line: train end to end, one clear line per error, a light --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from celestial_models.cli import main


def write_params(path: Path, train: dict) -> Path:
    path.write_text(yaml.safe_dump({"prepare": {"image_size": 16}, "train": train}))
    return path


def test_train_writes_the_model_directory_and_the_live_logs(
    make_prepared: Callable, tmp_path: Path, fast: dict, capsys: pytest.CaptureFixture
) -> None:
    prepared = make_prepared().path
    params = write_params(tmp_path / "params.yaml", {**fast, "epochs": 2})
    status = main(
        ["train", str(prepared), str(tmp_path / "model"), "--params", str(params),
         "--live-dir", str(tmp_path / "live")]
    )  # fmt: skip
    assert status == 0
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {
        "model.keras",
        "metadata.json",
        "history.json",
        "reference.jsonl",
    }
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["params"]["epochs"] == 2
    assert (tmp_path / "live" / "plots" / "metrics" / "eval" / "accuracy.tsv").is_file()
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "Model written to" in out


@pytest.mark.parametrize(
    ("train", "status", "message"),
    [
        ({"epoch": 3}, 2, "Unknown key 'epoch' in"),
        ({"batch_size": -1}, 2, "train.batch_size: Input should be greater than or equal to 1"),
    ],
)
def test_bad_params_exit_2_with_one_line(
    make_prepared: Callable,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    train: dict,
    status: int,
    message: str,
) -> None:
    params = write_params(tmp_path / "params.yaml", train)
    prepared = make_prepared().path
    assert main(["train", str(prepared), str(tmp_path / "m"), "--params", str(params)]) == status
    err = capsys.readouterr().err
    assert err.startswith("celestial-models: error: ") and message in err and str(params) in err
    assert err.count("\n") == 1


def test_missing_prepared_data_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", str(tmp_path / "nowhere"), str(tmp_path / "model")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("celestial-models: error: No prepared dataset at")
    assert err.count("\n") == 1


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_help_and_params_errors_do_not_import_keras(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {"epoch": 3})
    code = (
        "import sys\n"
        "from celestial_models.cli import main\n"
        f"status = main(['train', 'data', 'model', '--params', {str(params)!r}])\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(status, 'keras' in sys.modules, 'jax' in sys.modules)\n"
    )
    done = run_python(code)
    assert done.stdout.splitlines()[-1] == "2 False False"


def test_another_keras_backend_is_refused_clearly(make_prepared: Callable, tmp_path: Path) -> None:
    prepared = make_prepared().path
    code = (
        "from celestial_models.cli import main\n"
        f"raise SystemExit(main(['train', {str(prepared)!r}, 'm']))"
    )
    done = run_python(code, KERAS_BACKEND="torch")
    assert done.returncode == 1
    assert done.stderr == (
        "celestial-models: error: celestial-models runs Keras on JAX, but "
        "KERAS_BACKEND='torch'. Unset KERAS_BACKEND or set it to 'jax'.\n"
    )
