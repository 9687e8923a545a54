"""`nox -s exp`'s checks before DVC runs (tools/exp.py): the overrides, the data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import exp  # tools/ is on pytest's pythonpath
import pytest

ROOT = Path(__file__).resolve().parents[1]

DOCUMENT = {"train": {"epochs": 8, "augment": {"flip": False}}}


def test_nested_keys_are_checked_and_new_ones_get_dvc_s_plus() -> None:
    args = ["-S", "train.augment.flip=true", "-S", "train.augment.zoom=0.1", "-S", "train.epochs=3"]
    assert exp.rewrite(args, DOCUMENT) == [
        "-S",
        "train.augment.flip=true",
        "-S",
        "+train.augment.zoom=0.1",
        "-S",
        "train.epochs=3",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.augment.flp=true",
            r"Unknown key 'flp' in params train\.augment\. Did you mean 'flip'",
        ),
        (
            "train.augment.zoom=3",
            r"params train\.augment\.zoom: Input should be less than or equal",
        ),
        ("train=3", r"-S takes SECTION\.KEY=VALUE"),
    ],
)
def test_a_bad_nested_override_is_refused_in_one_line(override: str, message: str) -> None:
    with pytest.raises(exp.OverrideError, match=message):
        exp.rewrite(["-S", override], DOCUMENT)


def test_a_number_with_an_exponent_is_a_number_as_dvc_reads_it() -> None:
    args = ["-S", "train.learning_rate=1e-3"]
    assert exp.rewrite(args, DOCUMENT) == ["-S", "+train.learning_rate=1e-3"]


@pytest.mark.parametrize(
    ("value", "values"),
    [
        ("2,3", ["2", "3"]),
        ("choice(2, 5)", ["2", "5"]),
        ("range(2,8,2)", ["2", "4", "6"]),
        ("3", None),
        ("[Mars,Moon]", None),  # a list: one value
        ("[Mars,Moon],[Venus]", ["[Mars,Moon]", "[Venus]"]),
    ],
)
def test_dvc_s_sweeps_are_read_as_their_values(value: str, values: list[str] | None) -> None:
    assert exp.sweep(value) == values


def test_each_value_of_a_sweep_is_checked_and_the_sweep_passed_on_to_dvc() -> None:
    args = ["--queue", "-S", "train.epochs=2,3", "-S", "train.learning_rate=choice(0.1,0.01)"]
    assert exp.rewrite(args, DOCUMENT) == [
        "--queue",
        "-S",
        "train.epochs=2,3",
        "-S",
        "+train.learning_rate=choice(0.1,0.01)",
    ]
    with pytest.raises(exp.OverrideError, match=r"params train\.epochs: Input should be greater"):
        exp.rewrite(["-S", "train.epochs=range(0,3)"], DOCUMENT)
    with pytest.raises(exp.OverrideError, match=r"train\.epochs: Input should be a valid integer"):
        exp.rewrite(["-S", "train.epochs=2,x"], DOCUMENT)


@pytest.mark.slow
def test_data_no_one_can_provide_is_said_in_one_line_before_dvc_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh clone without access to the remote: the raw data is only a pointer.
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    project = tmp_path / "projects" / "planets-moons"
    (project / "data").mkdir(parents=True)
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", "data/raw.dvc"):
        shutil.copy(ROOT / "projects" / "planets-moons" / name, project / name)
    params = (project / "params.yaml").read_bytes()

    assert exp.main([str(project), "-S", "train.epochs=3"]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("celestial-exp: error: no experiment can run: data/raw is neither ")
    assert "run `uv run dvc pull` in projects/planets-moons with access to the remote" in err
    assert (project / "params.yaml").read_bytes() == params
    assert not (project / "data" / "raw").exists()
