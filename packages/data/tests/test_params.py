"""The params loader reads a ``params.yaml`` as DVC reads and writes it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from celestial_data.errors import ParamsError
from celestial_data.params import read_yaml
from celestial_data.prepare import PrepareParams


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-05", 1e-05),
        ("3e-3", 0.003),
        ("1E5", 100000.0),
        ("-2e3", -2000.0),
        ("1.0e9", 1e9),
        ("1.5e+2", 150.0),
        ("0.15", 0.15),
        ("42", 42),
        ("1e", "1e"),
        ("e5", "e5"),
        ("'1e-05'", "1e-05"),
    ],
)
def test_numbers_with_an_exponent_are_numbers(text: str, value: object) -> None:
    read = read_yaml(f"key: {text}")["key"]
    assert read == value
    assert type(read) is type(value)


@pytest.mark.parametrize("value", [1e-05, 2.5e-07, 0.003, 0.15, 1e20, 123456789.0])
def test_what_dvc_writes_is_read_back_as_dvc_reads_it(value: float) -> None:
    # DVC edits params.yaml with ruamel.yaml (YAML 1.2), e.g. for `dvc exp run -S`.
    yaml = YAML()
    stream = io.StringIO()
    yaml.dump({"prepare": {"val_fraction": value}}, stream)
    assert read_yaml(stream.getvalue()) == yaml.load(stream.getvalue())


def test_a_section_written_with_an_exponent_loads(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  val_fraction: 1.5e-1\n  test_fraction: 1e-1\n")
    loaded = PrepareParams.load(params)
    assert (loaded.val_fraction, loaded.test_fraction) == (0.15, 0.1)


def test_a_misspelt_section_is_an_error_naming_it(tmp_path: Path) -> None:
    for written in ("prepar", "Prepare", "perpare"):
        path = tmp_path / "params.yaml"
        path.write_text(f"{written}:\n  image_size: 32\ntrain:\n  epochs: 2\n")
        with pytest.raises(ParamsError, match=rf"no 'prepare' section, but has '{written}': did"):
            PrepareParams.load(path)


def test_a_sub_section_indented_too_little_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  image_size: 32\nview:\n  crop: false\n")
    with pytest.raises(ParamsError, match=r"'view' is at the top .* under 'prepare:'"):
        PrepareParams.load(path)


def test_sections_of_a_projects_own_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  image_size: 32\nseed: 3\nmy_stage:\n  view: 1\n")
    assert PrepareParams.load(path).image_size == 32
    path.write_text("train:\n  epochs: 2\n")  # no prepare section, nothing like it: defaults
    assert PrepareParams.load(path) == PrepareParams()


def test_the_python_api_takes_a_section_as_its_model_a_dict_or_none() -> None:
    typed = PrepareParams(image_size=32)
    assert PrepareParams.of(typed) is typed
    assert PrepareParams.of({"image_size": 32}) == typed
    assert PrepareParams.of(None) == PrepareParams()
    with pytest.raises(ParamsError, match=r"Unknown key 'image_sise' in params prepare"):
        PrepareParams.of({"image_sise": 32})
    with pytest.raises(
        ParamsError, match=r"must be a PrepareParams or a mapping .* Received: list"
    ):
        PrepareParams.of([("image_size", 32)])
