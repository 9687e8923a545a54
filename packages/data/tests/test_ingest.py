"""Adding labelled images to a raw folder: checked first, all or nothing, never replacing."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial_data.errors import DatasetError
from celestial_data.ingest import Candidate, add_images, class_name_problem

MakeRaw = Callable[..., Path]


def image_bytes(seed: int, fmt: str = "PNG") -> bytes:
    """A 16 x 16 image of random pixels (other seeds than the raw folders' images)."""
    pixels = np.random.default_rng(10**6 + seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format=fmt)
    return stream.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) and its bytes."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def source(folder: Path, seed: int, fmt: str = "PNG") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"image-{seed}.{fmt.lower()}"
    path.write_bytes(image_bytes(seed, fmt=fmt))
    return path


def test_adds_to_existing_and_new_classes(tmp_path: Path, make_raw: MakeRaw) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    new = tmp_path / "new"
    items = [
        Candidate(source(new, 1), "Mars", "a.png", "task 1"),
        Candidate(source(new, 2), "Comet", "b.png", "task 2"),
    ]
    result = add_images(raw, items)
    assert result.added == {"Mars": ["Mars/a.png"], "Comet": ["Comet/b.png"]}
    assert result.new_classes == ["Comet"]
    assert (raw / "Mars" / "a.png").read_bytes() == image_bytes(1)
    assert (raw / "Comet" / "b.png").read_bytes() == image_bytes(2)
    # no staging folder is left beside the raw folder
    assert sorted(p.name for p in raw.parent.iterdir()) == ["new", "raw"]


def test_creates_a_missing_raw_folder(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    add_images(raw, [Candidate(source(tmp_path / "new", 1), "Mars", "a.png", "task 1")])
    assert tree(raw) == {"Mars/a.png": image_bytes(1)}


def test_skips_images_already_present_by_bytes_or_pixels(tmp_path: Path, make_raw: MakeRaw) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    present = sorted((raw / "Moon").iterdir())[0]
    new = tmp_path / "new"
    new.mkdir()
    same_bytes = new / "copy.png"
    same_bytes.write_bytes(present.read_bytes())
    same_pixels = new / "copy.bmp"  # the same picture in another container
    stream = io.BytesIO()
    Image.open(present).save(stream, format="BMP")
    same_pixels.write_bytes(stream.getvalue())
    before = tree(raw)
    items = [
        Candidate(same_bytes, "Moon", "x.png", "task 1"),
        Candidate(same_pixels, "Moon", "y.bmp", "task 2"),
        Candidate(source(new, 7), "Mars", "z.png", "task 3"),
        Candidate(source(new, 7), "Mars", "z2.png", "task 4"),  # twice in one export
    ]
    result = add_images(raw, items)
    assert result.added == {"Mars": ["Mars/z.png"]}
    relative = f"raw/{present.relative_to(raw).as_posix()}"
    assert result.duplicates == [("task 1", relative), ("task 2", relative)]
    assert result.repeated == [("task 4", "task 3")]
    assert tree(raw) == {**before, "Mars/z.png": image_bytes(7)}


def test_an_image_already_in_raw_labelled_another_class_is_an_error(
    tmp_path: Path, make_raw: MakeRaw
) -> None:
    # A labeller relabels an image imported in an earlier round: never decided silently.
    raw = make_raw({"Mars": 2, "Moon": 2})
    present = sorted((raw / "Moon").iterdir())[0]
    copy = tmp_path / "new" / "again.png"
    copy.parent.mkdir()
    copy.write_bytes(present.read_bytes())
    before = tree(raw)
    items = [
        Candidate(source(tmp_path / "new", 1), "Mars", "a.png", "task 1"),
        Candidate(copy, "Mars", "b.png", "task 2"),
    ]
    with pytest.raises(DatasetError) as caught:
        add_images(raw, items)
    message = str(caught.value)
    assert "task 2 labels 'Mars' an image already in the raw folder as 'Moon' (raw/Moon/" in message
    assert "move that file into raw/Mars/ and import again" in message
    assert "nothing was written" in message and tree(raw) == before


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("", "is empty"),
        ("../Mars", "contains"),
        ("Mars/Phobos", "contains /"),
        ("a\\b", "contains \\"),
        ("..", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("Ma\x07rs", "control"),
        (" Mars", "leading or trailing spaces"),
        ("x" * 65, "characters long"),
        ("unknown", "reserved"),
        ("New class", "reserved (the choice that asks Label Studio"),
        ("NEW CLASS", "reserved"),
        ("mars", "only in case"),
        ("Marz", "is not a class yet and is close to the existing class 'Mars': a typo?"),
        ("Moons", "close to the existing class 'Moon'"),
    ],
)
def test_bad_class_names_write_nothing(
    tmp_path: Path, make_raw: MakeRaw, label: str, reason: str
) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    before = tree(tmp_path)
    new = tmp_path / "new"
    items = [
        Candidate(source(new, 1), "Moon", "ok.png", "task 1"),
        Candidate(source(new, 2), label, "bad.png", "task 2"),
    ]
    before = {**before, **{f"new/{p.name}": p.read_bytes() for p in new.iterdir()}}
    with pytest.raises(DatasetError, match="nothing was written") as caught:
        add_images(raw, items)
    assert reason in str(caught.value)
    assert "task 2" in str(caught.value)
    assert tree(tmp_path) == before


def test_a_new_class_close_to_an_existing_one_is_added_once_confirmed(
    tmp_path: Path, make_raw: MakeRaw
) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    items = [Candidate(source(tmp_path / "new", 1), "Marz", "a.png", "task 1")]
    with pytest.raises(DatasetError, match="--new-class Marz"):
        add_images(raw, items)
    result = add_images(raw, items, new_classes=["Marz"])
    assert result.new_classes == ["Marz"] and (raw / "Marz" / "a.png").is_file()


def test_valid_class_names() -> None:
    for name in ("Mars", "Comet 67P", "Ceres_2", "Hale-Bopp", "Io (moon)", "Lune"):
        assert class_name_problem(name) is None


def test_a_missing_image_writes_nothing(tmp_path: Path, make_raw: MakeRaw) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    before = tree(raw)
    items = [
        Candidate(source(tmp_path / "new", 1), "Mars", "a.png", "task 1"),
        Candidate(tmp_path / "new" / "gone.png", "Mars", "gone.png", "task 2"),
    ]
    with pytest.raises(DatasetError, match=r"gone\.png \(task 2\) is not there"):
        add_images(raw, items)
    assert tree(raw) == before


def test_one_image_with_two_classes_is_an_error(tmp_path: Path, make_raw: MakeRaw) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    before = tree(raw)
    path = source(tmp_path / "new", 1)
    items = [Candidate(path, "Mars", "a.png", "task 1"), Candidate(path, "Moon", "a.png", "task 2")]
    with pytest.raises(DatasetError, match="labelled 'Mars' \\(task 1\\) and 'Moon' \\(task 2\\)"):
        add_images(raw, items)
    assert tree(raw) == before


def test_never_replaces_a_file(tmp_path: Path, make_raw: MakeRaw) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    taken = sorted((raw / "Mars").iterdir())[0]
    before = tree(raw)
    items = [Candidate(source(tmp_path / "new", 9), "Mars", taken.name, "task 1")]
    with pytest.raises(DatasetError, match="exists and holds another image"):
        add_images(raw, items)
    assert tree(raw) == before


def test_a_failure_while_placing_undoes_what_was_placed(
    tmp_path: Path, make_raw: MakeRaw, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    before = tree(tmp_path)
    new = tmp_path / "new"
    items = [Candidate(source(new, i), "Comet", f"{i}.png", f"task {i}") for i in range(3)]
    before = {**before, **{f"new/{p.name}": p.read_bytes() for p in new.iterdir()}}
    real_link = os.link
    calls = []

    def failing_link(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", failing_link)
    with pytest.raises(OSError, match="disk full"):
        add_images(raw, items)
    assert tree(tmp_path) == before
    assert not (raw / "Comet").exists()


def test_dry_run_writes_nothing(tmp_path: Path, make_raw: MakeRaw) -> None:
    raw = make_raw({"Mars": 2, "Moon": 2})
    before = tree(raw)
    items = [Candidate(source(tmp_path / "new", 1), "Comet", "a.png", "task 1")]
    result = add_images(raw, items, dry_run=True)
    assert result.added == {"Comet": ["Comet/a.png"]} and result.new_classes == ["Comet"]
    assert tree(raw) == before
