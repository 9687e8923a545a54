"""The shared command runner: one line per problem, one exit status per kind."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from celestial_data import DataError, DatasetError, ParamsError
from celestial_data.command import counted, output_folder, run_command


def parser_raising(error: BaseException | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celestial-test")
    commands = parser.add_subparsers(required=True)

    def handler(args: argparse.Namespace) -> int:
        if error is not None:
            raise error
        return 0

    commands.add_parser("go").set_defaults(run=handler)
    return parser


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (None, 0, ""),
        (
            ParamsError("params train.epochs: bad"),
            2,
            "celestial-test: error: params train.epochs: bad\n",
        ),
        (DatasetError("no images"), 1, "celestial-test: error: no images\n"),
        (KeyboardInterrupt(), 130, "celestial-test: error: interrupted\n"),
        (
            PermissionError(13, "Permission denied", "/data/out"),
            1,
            "celestial-test: error: [Errno 13] Permission denied: '/data/out'\n",
        ),
    ],
)
def test_each_kind_of_problem_is_one_line_and_its_status(
    error: BaseException | None, status: int, line: str, capsys: pytest.CaptureFixture
) -> None:
    assert run_command(parser_raising(error), ["go"], (DatasetError,)) == status
    assert capsys.readouterr().err == line


def test_an_unexpected_error_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        run_command(parser_raising(ZeroDivisionError()), ["go"], (DatasetError,))


def test_counts_in_messages_agree_with_their_nouns() -> None:
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert counted(1, "class") == "1 class" and counted(3, "class") == "3 classes"
    assert counted(2, "training image") == "2 training images"


def test_an_output_folder_is_created_or_refused_in_one_line(tmp_path: Path) -> None:
    assert output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    assert output_folder(tmp_path / "a") == tmp_path / "a"  # already there
    (tmp_path / "picture.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"^The report folder .*picture.jpg is a file\. Name"):
        output_folder(tmp_path / "picture.jpg", "report folder")
    with pytest.raises(DataError, match=r"^Cannot create the output folder .*: Not a directory"):
        output_folder(tmp_path / "picture.jpg" / "inside")
