"""The Label Studio round trip against its documented formats: export, import, bad input.

The task import format (``data``, ``predictions[].result``, ``model_version``,
``score``) and the JSON export (``annotations[].result[].value.choices``,
``value.text`` of a TextArea, ``was_cancelled``) follow labelstud.io's
"Import pre-annotated data" and "Label Studio JSON format of annotated tasks";
test_labelstudio.py runs the same round trip against a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celestial_eval.cli import main
from celestial_eval.errors import MissingInputError
from celestial_eval.labelling import (
    IMPORTED,
    LOCAL_FILES,
    NEW_CLASS,
    LabellingError,
    export_tasks,
    labelling_config,
    read_export,
    read_review,
    stage_writing,
)

EVAL = Path(sys.executable).with_name("celestial-eval")
AddImage = Callable[..., str]
Annotate = Callable[..., list[dict[str, Any]]]


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def review(tmp_path: Path, review_image: AddImage) -> Path:
    """A review folder of three images: answered Mars, Moon, and unknown."""
    folder = tmp_path / "logs" / "review"
    for seed, label in ((1, "Mars"), (2, "Moon"), (3, "unknown")):
        review_image(folder, seed, label)
    return folder


@pytest.fixture
def raw(tmp_path: Path, review_image: AddImage) -> Path:
    """A project's raw folder (two classes) with its DVC pointer beside it."""
    folder = tmp_path / "project" / "data" / "raw"
    for seed, label in ((11, "Mars"), (12, "Moon")):
        staging = tmp_path / "seed-images"
        digest = review_image(staging, seed, label)
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{digest}.png").write_bytes((staging / f"{digest}.png").read_bytes())
    (folder.parent / "raw.dvc").write_text("outs:\n- path: raw\n")
    return folder


def labelled(tasks: list[dict[str, Any]], results: list[Any]) -> list[dict[str, Any]]:
    """The export Label Studio writes once each task got its annotation (None: none)."""
    exported = []
    for number, (task, result) in enumerate(zip(tasks, results, strict=True), start=1):
        annotations = []
        if result == "cancelled":
            annotations = [{"id": number, "result": [], "was_cancelled": True}]
        elif result is not None:
            annotations = [{"id": number, "result": result, "was_cancelled": False}]
        exported.append({"id": number, "data": task["data"], "annotations": annotations,
                         "predictions": [number]})  # fmt: skip
    return exported


def test_export_writes_tasks_with_the_answer_as_pre_annotation(review: Path) -> None:
    images, orphans = read_review(review)
    assert orphans == []
    tasks = export_tasks(images, review.parent, ["Mars", "Moon", "Venus"])
    assert len(tasks) == 3
    by_digest = {task["data"]["digest"]: task for task in tasks}
    for image in images:
        task = by_digest[image.digest]
        assert task["data"]["image"] == f"{LOCAL_FILES}review/{image.path.name}"
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "f" * 64
        assert prediction["score"] == pytest.approx(image.record.confidence)
        (result,) = prediction["result"]
        assert result["from_name"] == "label" and result["to_name"] == "image"
        assert result["type"] == "choices"
        expected = NEW_CLASS if image.record.unknown else image.record.label
        assert result["value"] == {"choices": [expected]}
        assert image.record.label in task["data"]["answer"]


def test_export_refuses_a_root_that_does_not_hold_the_review(review: Path, tmp_path: Path) -> None:
    images, _ = read_review(review)
    with pytest.raises(LabellingError, match="not under the document root"):
        export_tasks(images, tmp_path / "elsewhere", ["Mars", "Moon"])


def test_config_offers_the_classes_and_a_new_class_box() -> None:
    config = ET.fromstring(labelling_config(["Mars", 'Odd "name" & <co>']))
    choices = config.find("Choices")
    assert choices is not None and choices.get("name") == "label"
    values = [c.get("value") for c in choices.iter("Choice")]
    assert values == ["Mars", 'Odd "name" & <co>', NEW_CLASS]
    box = config.find("View/TextArea")
    assert box is not None and box.get("name") == "new_class"
    assert config.find("View").get("whenChoiceValue") == NEW_CLASS  # type: ignore[union-attr]


def test_round_trip_adds_images_to_existing_and_new_classes(
    review: Path, raw: Path, tmp_path: Path, annotate: Annotate
) -> None:
    assert main(["label", "export", str(review), "--out", str(tmp_path / "ls")]) == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    export = tmp_path / "export.json"
    results = [annotate("Venus"), annotate(NEW_CLASS, "Comet"), None]
    export.write_text(json.dumps(labelled(tasks, results)))
    first, second, third = (task["data"]["digest"] for task in tasks)
    image = (review / f"{first}.png").read_bytes()
    argv = ["label", "import", str(export), "--review", str(review), "--raw", str(raw)]
    assert main(argv) == 0
    assert (raw / "Venus" / f"{first}.png").read_bytes() == image
    assert (raw / "Comet" / f"{second}.png").is_file()
    assert sorted(p.name for p in raw.iterdir()) == ["Comet", "Mars", "Moon", "Venus"]
    # What was labelled leaves the review folder with its record; the rest stays.
    assert sorted(p.name for p in (review / IMPORTED).iterdir()) == sorted(
        f"{digest}.{ext}" for digest in (first, second) for ext in ("json", "png")
    )
    assert [image.digest for image in read_review(review)[0]] == [third]
    assert main(["label", "export", str(review), "--out", str(tmp_path / "ls2")]) == 0
    assert len(json.loads((tmp_path / "ls2" / "tasks.json").read_text())) == 1
    # The same export again: found among the imported, and nothing added twice.
    before = tree(raw)
    assert main(argv) == 0
    assert tree(raw) == before


def test_a_labelled_image_the_review_folder_let_go_is_skipped_and_named(
    review: Path, raw: Path, tmp_path: Path, annotate: Annotate, capsys: pytest.CaptureFixture
) -> None:
    images, _ = read_review(review)
    tasks = export_tasks(images, review.parent, ["Mars", "Moon"])
    export = tmp_path / "export.json"
    export.write_text(json.dumps(labelled(tasks, [annotate("Mars"), annotate("Moon"), None])))
    gone = review / f"{tasks[0]['data']['digest']}.png"
    gone.unlink()  # past --review-max-mib, the server drops its oldest images
    argv = ["label", "import", str(export), "--review", str(review), "--raw", str(raw)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Added 1 image(s)" in out and "Moon 1" in out
    assert f"Skipped 1 labelled task(s) whose image is no longer in {review}" in out
    # None of them there: the wrong folder, most likely. One error, nothing written.
    before = tree(raw)
    assert main([*argv[:3], "--review", str(tmp_path), "--raw", str(raw)]) == 1
    assert "none of the 2 labelled tasks' images is in" in capsys.readouterr().err
    assert tree(raw) == before


def test_import_skips_duplicates_unlabelled_and_cancelled(
    review: Path,
    raw: Path,
    tmp_path: Path,
    annotate: Annotate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, _ = read_review(review)
    tasks = export_tasks(images, review.parent, ["Mars", "Moon"])
    already = tasks[0]["data"]["digest"]
    (raw / "Moon" / "kept.png").write_bytes((review / f"{already}.png").read_bytes())
    export = tmp_path / "export.json"
    export.write_text(json.dumps(labelled(tasks, [annotate("Moon"), None, "cancelled"])))
    before = tree(raw)
    argv = ["label", "import", str(export), "--review", str(review), "--raw", str(raw)]
    assert main(argv) == 0
    assert tree(raw) == before  # the image already there was not copied again
    out = capsys.readouterr().out
    assert "Added 0 image(s)" in out
    assert f"Skipped 1 image(s) already in {raw}, same class:" in out
    assert "raw/Moon/kept.png" in out
    assert "1 unlabelled, 1 skipped in Label Studio" in out
    # Labelled another class than the one it is filed under: an error, nothing written.
    export.write_text(json.dumps(labelled(tasks, [annotate("Mars"), None, "cancelled"])))
    assert main(argv) == 1
    assert "labels 'Mars' an image already in the raw folder as 'Moon'" in capsys.readouterr().err
    assert tree(raw) == before


def test_read_export_takes_the_typed_name_for_a_new_class(
    review: Path, tmp_path: Path, annotate: Annotate
) -> None:
    images, _ = read_review(review)
    tasks = export_tasks(images, review.parent, ["Mars", "Moon"])
    export = tmp_path / "export.json"
    export.write_text(json.dumps(labelled(tasks, [annotate(NEW_CLASS, " Comet "), None, None])))
    read = read_export(export, review)
    assert [(c.label, c.name, c.origin) for c in read.candidates] == [
        ("Comet", images[0].path.name, "task 1")
    ]
    assert read.unlabelled == ["task 2", "task 3"]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("bad-label", "contains /"),
        ("unknown", "is reserved"),
        ("new-class", "is reserved (the choice that asks Label Studio for a new class"),
        ("empty-new-class", "typed 0 class names"),
        ("both", "also typed a new class name"),
        ("value-text", 'result whose value is \'Mars\', not {"choices": ["..."]}'),
        ("choices-text", "result whose value is {'choices': 'Mars'}"),
        ("null-choice", "has choices that are not names: [None]"),
        ("nested-choice", "has choices that are not names: [['Mars']]"),
        ("number-typed", "has text that are not names: [7]"),
    ],
)
def test_bad_export_is_one_error_and_writes_nothing(
    review: Path,
    raw: Path,
    tmp_path: Path,
    annotate: Annotate,
    capsys: pytest.CaptureFixture[str],
    result: str,
    message: str,
) -> None:
    images, _ = read_review(review)
    tasks = export_tasks(images, review.parent, ["Mars", "Moon"])
    bad: dict[str, Any] = {
        "bad-label": annotate(NEW_CLASS, "../../etc"),
        "unknown": annotate(NEW_CLASS, "unknown"),
        "new-class": annotate(NEW_CLASS, "New class"),
        "empty-new-class": annotate(NEW_CLASS, ""),
        "both": annotate("Mars", "Comet"),
        # Exports edited by hand:
        "value-text": [{**annotate("Mars")[0], "value": "Mars"}],
        "choices-text": [{**annotate("Mars")[0], "value": {"choices": "Mars"}}],
        "null-choice": [{**annotate("Mars")[0], "value": {"choices": [None]}}],
        "nested-choice": [{**annotate("Mars")[0], "value": {"choices": [["Mars"]]}}],
        "number-typed": [
            annotate(NEW_CLASS)[0],
            {**annotate(NEW_CLASS, "x")[1], "value": {"text": [7]}},
        ],
    }
    exported = labelled(tasks, [annotate("Mars"), bad[result], annotate(NEW_CLASS, "Comet")])
    export = tmp_path / "export.json"
    export.write_text(json.dumps(exported))
    before = tree(raw.parent)
    argv = ["label", "import", str(export), "--review", str(review), "--raw", str(raw)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("celestial-eval: error: ")
    assert "task 2" in err[0] and message in err[0]
    assert tree(raw.parent) == before


def test_not_an_export(review: Path, raw: Path, tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"image": "x.png", "label": "Mars"}))  # JSON-MIN, one task
    with pytest.raises(LabellingError, match="not a Label Studio JSON export"):
        read_export(export, review)


def test_the_task_list_given_for_the_export_is_named_as_such(review: Path, raw: Path) -> None:
    images, _ = read_review(review)
    tasks = review.parent / "tasks.json"  # what label export writes: no annotations yet
    tasks.write_text(json.dumps(export_tasks(images, review.parent, ["Mars", "Moon"])))
    with pytest.raises(LabellingError, match="a task list to import into Label Studio"):
        read_export(tasks, review)
    # The export of the same tasks, none labelled yet, is read: nothing to add.
    exported = review.parent / "export.json"
    exported.write_text(json.dumps(labelled(json.loads(tasks.read_text()), [None] * 3)))
    assert len(read_export(exported, review).unlabelled) == 3


def test_commands_as_processes(review: Path, raw: Path, tmp_path: Path, annotate: Annotate) -> None:
    out = tmp_path / "ls"
    done = subprocess.run(
        [EVAL, "label", "export", review, "--out", out],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Wrote 3 tasks" in done.stdout
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={review.parent.resolve()}" in done.stdout
    ET.fromstring((out / "config.xml").read_text())
    tasks = json.loads((out / "tasks.json").read_text())
    export = tmp_path / "export.json"
    # a label that is not a valid folder name: one line, exit 1, nothing written
    export.write_text(json.dumps(labelled(tasks, [annotate(NEW_CLASS, "a/b"), None, None])))
    before = tree(raw.parent)
    command = [EVAL, "label", "import", export, "--review", review, "--raw", raw]
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and "class name 'a/b' (task 1)" in failed.stderr
    assert tree(raw.parent) == before
    # a typo of an existing class is refused until confirmed as a new class
    export.write_text(json.dumps(labelled(tasks, [annotate(NEW_CLASS, "Marz"), None, None])))
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 1 and "close to the existing class 'Mars'" in failed.stderr
    assert "--new-class Marz" in failed.stderr and tree(raw.parent) == before
    done = subprocess.run([*command, "--new-class", "Marz", "--dry-run"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert "Marz 1 (new class)" in done.stdout and tree(raw.parent) == before
    export.write_text(json.dumps(labelled(tasks, [annotate(NEW_CLASS, "Comet"), None, None])))
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "Added 1 image(s)" in done.stdout and "Comet 1 (new class)" in done.stdout
    assert "dvc add data/raw" in done.stdout and "dvc repro" in done.stdout
    assert len(list((raw / "Comet").iterdir())) == 1


def test_a_raw_folder_a_stage_writes_is_refused_before_anything_is_added(
    review: Path, raw: Path, tmp_path: Path, annotate: Annotate, capsys: pytest.CaptureFixture
) -> None:
    # As synthetic-bodies: its raw images are rendered by a stage, not added.
    (raw.parent / "raw.dvc").unlink()
    (raw.parent.parent / "dvc.yaml").write_text(
        "stages:\n  synth:\n    cmd: celestial-data synth data/raw\n    outs:\n"
        "      - data/raw:\n          persist: false\n"
    )
    images, _ = read_review(review)
    export = tmp_path / "export.json"
    tasks = export_tasks(images, review.parent, ["Mars", "Moon"])
    export.write_text(json.dumps(labelled(tasks, [annotate("Mars"), None, None])))
    before = tree(raw.parent)
    argv = ["label", "import", str(export), "--review", str(review), "--raw", str(raw)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "is written by the 'synth' stage of" in err and "next 'dvc repro' would replace" in err
    assert tree(raw.parent) == before
    assert stage_writing(raw / "Mars") == (raw.parent.parent / "dvc.yaml", "synth")
    assert stage_writing(tmp_path / "elsewhere") is None


def test_wrong_paths_are_named_with_what_was_meant(
    review: Path, raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The export's folder is a file: one line, not a traceback.
    taken = tmp_path / "taken.jpg"
    taken.write_bytes(b"x")
    assert main(["label", "export", str(review), "--out", str(taken)]) == 1
    err = capsys.readouterr().err
    assert err == f"celestial-eval: error: The export folder {taken} is a file. Name a folder " \
        "(created if missing) or move the file.\n"  # fmt: skip
    # A review folder with nothing kept yet: nothing to label, no empty project.
    empty = tmp_path / "logs-empty" / "review"
    empty.mkdir(parents=True)
    assert main(["label", "export", str(empty), "--out", str(tmp_path / "none")]) == 1
    assert f"Review folder {empty} holds no image to label." in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    # The server's log folder instead of its review folder.
    (review.parent / "predictions-1.jsonl").write_text("")
    with pytest.raises(MissingInputError, match=r"log folder: its review folder is .*review"):
        read_review(review.parent)
    # A raw folder that is not there (mistyped) is not made.
    missing = tmp_path / "nowhere" / "raw"
    export = tmp_path / "export.json"
    export.write_text("[]")
    arguments = ["label", "import", str(export), "--review", str(review), "--raw", str(missing)]
    assert main(arguments) == 1
    assert f"Raw folder {missing} not found" in capsys.readouterr().err
    assert not missing.parent.exists()
    # The export named by its folder.
    with pytest.raises(MissingInputError, match="is a folder, not a file"):
        read_export(tmp_path, review)


def test_the_next_steps_printed_after_an_import_paste_into_a_shell(tmp_path: Path) -> None:
    from celestial_eval.cli import _next_steps

    raw = tmp_path / "My Projects" / "bodies" / "data" / "raw"
    raw.mkdir(parents=True)
    (raw.parent / "raw.dvc").write_text("outs:\n- path: raw\n")
    lines = [line.strip() for line in _next_steps(raw).splitlines()[1:]]
    assert lines == [
        f"cd '{raw.parent.parent.resolve()}'",
        "uv run dvc add data/raw",
        "uv run dvc repro",
        "git add data/raw.dvc dvc.lock evaluation && git commit -m 'Add labelled images'",
    ]
