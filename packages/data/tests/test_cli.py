"""The celestial-data command line: exit codes, one-line errors, params files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from celestial_data import load_prepared
from celestial_data.cli import main


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("celestial-data: error: ")
    return lines[0]


def test_check_prints_the_report(raw: Path, capsys) -> None:
    assert main(["check", str(raw)]) == 0
    out = capsys.readouterr().out
    assert "3 classes, 18 images" in out and "Venus" in out and out.rstrip().endswith("OK")


def test_check_json(raw: Path, capsys) -> None:
    assert main(["check", str(raw), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["Moon"] == 6


def test_check_exits_1_on_errors_listed_once(raw: Path, capsys) -> None:
    (raw / "Moon" / "bad.png").write_bytes(b"")
    assert main(["check", str(raw)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("Moon/bad.png (empty file (0 bytes))") == 1
    assert "Moon/bad.png" not in captured.err
    assert (
        captured.err == f"celestial-data: error: {raw} has 1 error, listed above. "
        "Fix it and check again.\n"
    )


def test_check_json_names_the_errors_on_stderr(raw: Path, capsys) -> None:
    (raw / "Moon" / "bad.png").write_bytes(b"")
    assert main(["check", str(raw), "--json"]) == 1
    line = error_line(capsys)
    assert "Moon/bad.png (empty file (0 bytes))" in line


def test_check_follows_on_corrupt_from_params(raw: Path, tmp_path: Path, capsys) -> None:
    (raw / "Moon" / "bad.png").write_bytes(b"")
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  on_corrupt: skip\n")
    assert main(["check", str(raw), "--params", str(params)]) == 0
    assert "warning:" in capsys.readouterr().out


def test_check_warns_about_the_crop_from_params(raw: Path, tmp_path: Path, capsys) -> None:
    # The raw fixture's pictures are random blocks: bright edges, no dark background.
    assert main(["check", str(raw)]) == 0
    assert "not on a dark background" in capsys.readouterr().out
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  view:\n    crop: false\n")
    assert main(["check", str(raw), "--params", str(params)]) == 0
    assert "dark background" not in capsys.readouterr().out


def test_check_layout_error_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "raw" / "Only").mkdir(parents=True)
    assert main(["check", str(tmp_path / "raw")]) == 1
    assert "Only one class folder" in error_line(capsys)


def test_prepare_reads_its_params_section(raw: Path, tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  image_size: 10\n  test_fraction: 0\ntrain:\n  epochs: 3\n")
    assert main(["prepare", str(raw), str(tmp_path / "out"), "--params", str(params)]) == 0
    assert "Prepared 18 images of 3 classes" in capsys.readouterr().out
    dataset = load_prepared(tmp_path / "out")
    assert dataset.image_size == 10 and "test" not in dataset.splits


def test_prepare_unknown_key_exits_2_naming_it(raw: Path, tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  colour_mode: rgb\n")
    assert main(["prepare", str(raw), str(tmp_path / "out"), "--params", str(params)]) == 2
    line = error_line(capsys)
    assert "Unknown key 'colour_mode'" in line and "Did you mean 'color_mode'" in line


def test_prepare_missing_params_file_exits_2(raw: Path, tmp_path: Path, capsys) -> None:
    assert main(["prepare", str(raw), str(tmp_path / "o"), "--params", "nope.yaml"]) == 2
    assert "nope.yaml not found" in error_line(capsys)


def test_prepare_bad_input_exits_1(raw: Path, tmp_path: Path, capsys) -> None:
    (raw / "Mars" / "x.jpg").write_bytes(b"garbage")
    assert main(["prepare", str(raw), str(tmp_path / "out")]) == 1
    assert "Mars/x.jpg (not a readable image)" in error_line(capsys)


def test_synth_flags_override_params(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  per_class: 5\n  size: 20\n")
    out = tmp_path / "raw"
    args = ["synth", str(out), "--per-class", "2", "--classes", "Moon", "Mars"]
    assert main([*args, "--params", str(params)]) == 0
    assert "Rendered 4 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [".synth", "Mars", "Moon"]


def test_synth_into_a_folder_of_photos_is_one_error_and_touches_nothing(
    tmp_path: Path, capsys
) -> None:
    photo = tmp_path / "raw" / "Moon" / "Moon_1.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a photo")
    assert main(["synth", str(tmp_path / "raw"), "--per-class", "2", "--size", "16"]) == 1
    assert "holds 1 file(s) synth did not render (Moon/Moon_1.jpg)" in error_line(capsys)
    assert photo.read_bytes() == b"a photo"
    assert sorted(p.name for p in (tmp_path / "raw").rglob("*")) == ["Moon", "Moon_1.jpg"]


def test_synth_variation_comes_from_params_or_the_flag(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  variation: 0.8\n")

    def synth(name: str, *flags: str) -> list[bytes]:
        out = tmp_path / name
        args = ["synth", str(out), "--per-class", "2", "--size", "16", "--classes", "Mars"]
        assert main([*args, *flags]) == 0
        return [path.read_bytes() for path in sorted((out / "Mars").iterdir())]

    varied = synth("file", "--params", str(params))
    assert synth("flag", "--variation", "0.8") == varied
    plain = synth("plain")
    assert plain != varied
    assert synth("override", "--params", str(params), "--variation", "0") == plain
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "bad"), "--variation", "1.5"]) == 2
    assert "synth.variation: Input should be less than or equal to 1" in error_line(capsys)


def test_synth_unknown_class_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path), "--classes", "Ceres"]) == 2
    assert "Unknown class(es) Ceres" in error_line(capsys)


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_real_processes_synth_check_prepare(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "celestial-data"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "celestial_data.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True, check=False)

    helped = run("--help")
    assert helped.returncode == 0 and "prepare" in helped.stdout
    raw, out = tmp_path / "raw", tmp_path / "out"
    made = run("synth", str(raw), "--per-class", "4", "--size", "32", "--seed", "3")
    assert made.returncode == 0, made.stderr
    assert run("check", str(raw)).returncode == 0
    prepared = run("prepare", str(raw), str(out))
    assert prepared.returncode == 0, prepared.stderr
    assert load_prepared(out).classes[0] == "Earth"
    failed = run("prepare", str(tmp_path / "missing"), str(out))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr


@pytest.mark.slow
def test_help_imports_neither_keras_nor_jax() -> None:
    code = (
        "import sys\nfrom celestial_data.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert not {'keras', 'jax'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
