"""Reading and checking raw folders: every bad-input rule."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial_data import DatasetError
from celestial_data.check import check_dataset, format_report
from celestial_data.dataset import can_fork, parallel_map, scan


def test_classes_are_sorted_folder_names_and_files_sorted(make_raw) -> None:
    root = make_raw({"Venus": 2, "Earth": 2, "Mars": 3})
    dataset = scan(root)
    assert dataset.classes == ("Earth", "Mars", "Venus")
    assert dataset.files["Mars"] == ["Mars/mars_000.png", "Mars/mars_001.png", "Mars/mars_002.png"]


def test_report_lists_classes_counts_sizes_and_modes(raw: Path) -> None:
    report = check_dataset(raw)
    assert report.ok
    assert report.classes == ["Mars", "Moon", "Venus"]
    assert report.counts == {"Mars": 6, "Moon": 6, "Venus": 6}
    assert report.sizes == {"16x16": 18}
    assert report.modes == {"RGB": 18}
    assert report.formats == {"PNG": 18}
    text = format_report(report, raw)
    assert "Mars" in text and "16x16 (18)" in text and text.endswith("OK")


def test_any_mode_pillow_reads_is_accepted(raw: Path, encode) -> None:
    for i, (mode, fmt, ext) in enumerate(
        [("L", "PNG", "png"), ("RGBA", "PNG", "png"), ("P", "PNG", "png"), ("CMYK", "JPEG", "jpg")]
    ):
        (raw / "Mars" / f"extra_{i}.{ext}").write_bytes(encode(500 + i, mode=mode, fmt=fmt))
    report = check_dataset(raw)
    assert report.ok, report.errors
    assert report.counts["Mars"] == 10
    assert {"L", "RGBA", "P", "CMYK"} <= set(report.modes)


def test_images_in_subfolders_belong_to_the_class(raw: Path, encode) -> None:
    (raw / "Moon" / "batch2").mkdir()
    (raw / "Moon" / "batch2" / "x.png").write_bytes(encode(900))
    assert "Moon/batch2/x.png" in scan(raw).files["Moon"]


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        scan(tmp_path / "nowhere")
    (tmp_path / "gen.py").write_text("")
    with pytest.raises(DatasetError, match=r"gen.py is a file, not a raw dataset folder"):
        scan(tmp_path / "gen.py")


def test_no_class_folders_is_an_error_naming_the_layout(tmp_path: Path, encode) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    (root / "a.png").write_bytes(encode(1))
    with pytest.raises(
        DatasetError, match=r"No class folders in .*raw.*1 loose files.*<ClassName>"
    ):
        scan(root)


def test_one_class_is_an_error(make_raw) -> None:
    root = make_raw({"Mars": 3})
    with pytest.raises(DatasetError, match=r"Only one class folder.*'Mars'.*at least two"):
        scan(root)


def test_classes_wrapped_in_one_folder_are_named_with_the_fix(raw: Path, tmp_path: Path) -> None:
    wrapped = tmp_path / "download"
    (wrapped / "__MACOSX").mkdir(parents=True)  # beside it, as a macOS zip leaves it
    raw.rename(wrapped / "planets")
    with pytest.raises(DatasetError) as caught:
        scan(wrapped)
    assert str(caught.value).endswith(
        "It holds 3 folders of its own (Mars, Moon, Venus): if those are the classes, give "
        f"{wrapped / 'planets'} as the raw folder, or move them up into {wrapped} (an archive "
        "often wraps its folders in one)."
    )


def test_class_folder_without_images_is_an_error_listed_with_the_others(raw: Path) -> None:
    (raw / "Pluto").mkdir()
    (raw / "Pluto" / "notes.txt").write_text("todo")
    (raw / "Mars" / "broken.png").write_bytes(b"")
    report = check_dataset(raw)
    assert not report.ok
    assert len(report.errors) == 2  # the empty folder does not hide the unreadable file
    assert "1 image file(s) cannot be read: Mars/broken.png" in report.errors[0]
    assert re.search(r"'.*Pluto' has no image files \(1 other files ignored: Pluto/notes.txt\)",
                     report.errors[1])  # fmt: skip


@pytest.mark.parametrize("name", ["unknown", "Unknown"])
def test_a_class_named_as_the_unknown_answer_is_an_error(raw: Path, encode, name: str) -> None:
    (raw / name).mkdir()
    (raw / name / "a.png").write_bytes(encode(7))
    report = check_dataset(raw)
    assert [e for e in report.errors if "answer for images of no known class" in e] == [
        f"Class folder '{raw / name}' is named as the answer for images of no known class "
        "('unknown'): an image of this class and a rejected one would get the same label. "
        "Rename the folder (for example to 'unknown-body')."
    ]


def test_class_folders_that_differ_only_in_case_are_a_warning(raw: Path, encode) -> None:
    (raw / "mars").mkdir()
    (raw / "mars" / "a.png").write_bytes(encode(7))
    report = check_dataset(raw)
    assert report.ok
    assert [w for w in report.warnings if "differ only in case" in w] == [
        "Class folders 'Mars', 'mars' differ only in case: on a file system that ignores case "
        "(macOS, Windows) a clone holds them as one folder, and their images as one class. "
        "Rename or merge them."
    ]


def test_non_images_and_hidden_files_are_ignored_and_counted(raw: Path, encode) -> None:
    (raw / "README.md").write_text("about")
    (raw / "Mars" / ".DS_Store").write_bytes(b"\0\0")
    (raw / "Mars" / "._mars_000.png").write_bytes(encode(1))
    (raw / "Moon" / "labels.csv").write_text("a,b")
    (raw / ".git").mkdir()
    (raw / ".git" / "x.png").write_bytes(encode(2))
    report = check_dataset(raw)
    assert report.ok
    assert report.counts == {"Mars": 6, "Moon": 6, "Venus": 6}
    assert report.ignored == [
        "Mars/.DS_Store",
        "Mars/._mars_000.png",
        "Moon/labels.csv",
        "README.md",
    ]
    assert any("4 file(s) that are not images ignored" in w for w in report.warnings)
    assert not any("hidden folder" in w for w in report.warnings)  # .git holds no class


def test_a_hidden_class_folder_and_loose_images_are_named_with_the_fix(raw: Path, encode) -> None:
    (raw / ".Pluto").mkdir()  # hidden by mistake: never read as a class
    for i in range(3):
        (raw / ".Pluto" / f"pluto_{i}.png").write_bytes(encode(10 + i))
    (raw / "stray.png").write_bytes(encode(20))  # beside the class folders
    report = check_dataset(raw)
    assert report.ok and report.counts == {"Mars": 6, "Moon": 6, "Venus": 6}
    assert (
        "1 hidden folder(s) beside the class folders skipped (a name starting with a dot is "
        "never a class): .Pluto. Rename one without its dot if it holds a class."
    ) in report.warnings
    assert (
        "1 image file(s) outside any class folder ignored: stray.png. Move each into the "
        "folder of its class."
    ) in report.warnings
    assert not any("not images" in w for w in report.warnings)


def test_a_zip_made_on_macos_leaves_no_class_of_its_metadata_folder(raw: Path, encode) -> None:
    metadata = raw / "__MACOSX" / "Mars"  # what unzipping a macOS archive leaves
    metadata.mkdir(parents=True)
    (metadata / "._mars_000.png").write_bytes(b"\0\5\26\7" + bytes(80))
    report = check_dataset(raw)
    assert report.ok and report.counts == {"Mars": 6, "Moon": 6, "Venus": 6}
    assert report.ignored == ["__MACOSX/Mars/._mars_000.png"]
    # Only that name: a class folder named like it otherwise is still a class.
    (raw / "MACOSX").mkdir()
    (raw / "MACOSX" / "one.png").write_bytes(encode(5))
    assert "MACOSX" in check_dataset(raw).counts


def test_photos_in_formats_pillow_does_not_read_are_named_with_the_fix(raw: Path) -> None:
    (raw / "Mars" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (raw / "Pluto").mkdir()
    (raw / "Pluto" / "DSC_0001.NEF").write_bytes(b"II*\0")
    report = check_dataset(raw)
    hint = (
        "Among them are {} photos, which are not read: convert them to JPEG or PNG (a phone "
        "can save JPEG: on an iPhone, Settings > Camera > Formats > Most Compatible)."
    )
    (warning,) = [w for w in report.warnings if "not images ignored" in w]
    assert warning.endswith(hint.format("HEIC and camera raw"))
    (error,) = [e for e in report.errors if "Pluto" in e]
    assert error.endswith(hint.format("camera raw"))
    (raw / "Mars" / "IMG_0001.HEIC").unlink()
    (raw / "Pluto" / "DSC_0001.NEF").rename(raw / "Pluto" / "notes.txt")
    assert "Among them" not in " ".join([*check_dataset(raw).warnings, *check_dataset(raw).errors])


def _broken_files(raw: Path, encode) -> list[str]:
    (raw / "Mars" / "empty.png").write_bytes(b"")
    (raw / "Moon" / "text.jpg").write_bytes(b"this is not an image at all")
    whole = encode(77, fmt="JPEG", size=64)
    (raw / "Venus" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    return ["Mars/empty.png", "Moon/text.jpg", "Venus/cut.jpg"]


def test_corrupt_truncated_and_empty_images_are_errors_listing_them(raw: Path, encode) -> None:
    broken = _broken_files(raw, encode)
    report = check_dataset(raw)
    assert not report.ok
    assert [item["file"] for item in report.corrupt] == broken
    assert "3 image file(s) cannot be read" in report.errors[0]
    for name in broken:
        assert name in report.errors[0]
    assert "0 bytes" in report.errors[0] and "on_corrupt: skip" in report.errors[0]
    assert report.counts == {"Mars": 6, "Moon": 6, "Venus": 6}


def test_an_image_of_32_bit_pixels_is_an_error_naming_why(raw: Path) -> None:
    # A float TIFF (values 0 to 1) would have been prepared as a black image.
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(values).save(raw / "Moon" / "science.tif")
    report = check_dataset(raw)
    assert not report.ok
    assert [item["file"] for item in report.corrupt] == ["Moon/science.tif"]
    assert (
        "Moon/science.tif (32-bit floating-point pixels (mode F) have no fixed 8-bit"
        in (report.errors[0])
    )


def test_corrupt_images_can_be_skipped_and_are_listed(raw: Path, encode) -> None:
    broken = _broken_files(raw, encode)
    report = check_dataset(raw, on_corrupt="skip")
    assert report.ok
    assert report.skipped == broken
    assert any("skipped" in w for w in report.warnings)


def test_class_with_only_unreadable_images_is_an_error(raw: Path) -> None:
    (raw / "Pluto").mkdir()
    (raw / "Pluto" / "a.png").write_bytes(b"")
    report = check_dataset(raw, on_corrupt="skip")
    assert not report.ok
    assert any("Pluto' has no readable images" in e for e in report.errors)


def test_duplicates_are_reported(raw: Path) -> None:
    (raw / "Mars" / "copy.png").write_bytes((raw / "Mars" / "mars_001.png").read_bytes())
    report = check_dataset(raw)
    assert report.ok
    assert report.duplicates == [["Mars/copy.png", "Mars/mars_001.png"]]
    assert any("byte-identical" in w and "one split" in w for w in report.warnings)
    assert not any("conflicting labels" in w for w in report.warnings)


def test_duplicates_across_classes_are_flagged_as_conflicting_labels(raw: Path) -> None:
    (raw / "Venus" / "copy.png").write_bytes((raw / "Mars" / "mars_001.png").read_bytes())
    report = check_dataset(raw)
    assert any("conflicting labels" in w and "Venus/copy.png" in w for w in report.warnings)


def test_the_same_pixels_in_another_container_are_reported(raw: Path) -> None:
    with Image.open(raw / "Mars" / "mars_001.png") as image:
        image.save(raw / "Mars" / "copy.tiff", format="TIFF")
        image.save(raw / "Venus" / "copy.bmp", format="BMP")
    with Image.open(raw / "Moon" / "moon_002.png") as image:
        image.convert("RGBA").save(raw / "Moon" / "opaque.webp", format="WEBP", lossless=True)
    report = check_dataset(raw)
    assert report.ok and report.duplicates == []
    assert report.same_pixels == [
        ["Mars/copy.tiff", "Mars/mars_001.png", "Venus/copy.bmp"],
        ["Moon/moon_002.png", "Moon/opaque.webp"],
    ]
    assert any("same pixels" in w and "one split" in w for w in report.warnings)
    assert any("conflicting labels" in w and "Venus/copy.bmp" in w for w in report.warnings)
    assert "Same pixels: 2 group(s)" in format_report(report, raw)


def test_images_that_differ_in_one_pixel_are_not_grouped(raw: Path) -> None:
    with Image.open(raw / "Mars" / "mars_001.png") as image:
        changed = image.convert("RGB")
    changed.putpixel((0, 0), tuple(255 - v for v in changed.getpixel((0, 0))))
    changed.save(raw / "Mars" / "edited.bmp", format="BMP")
    assert check_dataset(raw).same_pixels == []


def test_strong_imbalance_is_a_warning_with_counts(make_raw) -> None:
    root = make_raw({"Mars": 2, "Moon": 8})
    report = check_dataset(root)
    assert report.ok
    assert any("imbalanced" in w and "Mars 2" in w and "Moon 8" in w for w in report.warnings)
    assert not any(
        "imbalanced" in w for w in check_dataset(make_raw({"A": 3, "B": 4}, "b")).warnings
    )


def test_other_formats_pillow_reads_are_images(raw: Path, encode) -> None:
    (raw / "Venus" / "scan.tiff").write_bytes(encode(700, fmt="TIFF"))
    (raw / "Venus" / "web.WEBP").write_bytes(encode(701, fmt="WEBP"))
    (raw / "Venus" / "old.bmp").write_bytes(encode(702, fmt="BMP"))
    report = check_dataset(raw)
    assert report.counts["Venus"] == 9 and not report.ignored
    assert {"TIFF", "WEBP", "BMP"} <= set(report.formats)


def test_parallel_map_keeps_the_order_of_its_items() -> None:
    items = range(1_000)  # several chunks, each of several batches
    assert list(parallel_map(lambda x: x * x, items, workers=3)) == [x * x for x in items]
    assert list(parallel_map(lambda x: x * x, [], workers=2)) == []


def test_a_worker_process_that_is_killed_is_named_not_a_traceback() -> None:
    # In a fresh interpreter, where the work goes to forked processes: one is
    # killed mid-way, as the out-of-memory killer would.
    script = """
import os, signal
from celestial_data import DatasetError
from celestial_data.dataset import can_fork, parallel_map
assert can_fork()
def work(item):
    if item == 300:
        os.kill(os.getpid(), signal.SIGKILL)
    return item
try:
    list(parallel_map(work, range(1000), workers=2, processes=True))
except DatasetError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A worker process reading the images stopped without an error")
    assert "out-of-memory killer" in done.stdout and "Free memory" in done.stdout


def test_parallel_map_keeps_to_threads_where_this_process_may_not_fork(monkeypatch) -> None:
    # A process running JAX (a test, a notebook) has threads a fork would not copy.
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))
    assert not can_fork()
    pids = parallel_map(lambda _: os.getpid(), range(40), workers=2, processes=True)
    assert set(pids) == {os.getpid()}


def disc_picture(background: int, side: int = 48, mode: str = "RGB") -> Image.Image:
    """A dark or bright disc on a plain background of grey level ``background``."""
    y, x = np.mgrid[:side, :side]
    inside = (x - side / 2) ** 2 + (y - side / 2) ** 2 < (side / 3) ** 2
    pixels = np.full((side, side, 3), background, np.uint8)
    pixels[inside] = (40, 40, 40) if background > 128 else (220, 180, 120)
    return Image.fromarray(pixels).convert(mode)


def test_pictures_not_on_a_dark_background_are_warned_about_when_the_view_crops(
    tmp_path: Path,
) -> None:
    from celestial_data import ViewParams

    def folder(name: str, backgrounds: list[int]) -> Path:
        for label in ("a", "b"):
            (tmp_path / name / label).mkdir(parents=True)
            for i, background in enumerate(backgrounds):
                disc_picture(background).save(tmp_path / name / label / f"{i}.png")
        return tmp_path / name

    paper = folder("paper", [250, 230, 200, 0])  # three in four on light paper
    sky = folder("sky", [0, 10, 20, 250])  # one in four on a light background
    crop, no_crop = ViewParams(), ViewParams(crop=False)
    warnings = check_dataset(paper, view=crop).warnings
    assert any(
        "6 of 8 images (75%) are not on a dark background" in w
        and "'crop: false'" in w
        and "'turn: 0' under 'augment'" in w  # digits on paper: up matters too
        for w in warnings
    ), warnings
    for root, view in ((paper, no_crop), (paper, None), (sky, crop)):
        assert not any("dark background" in w for w in check_dataset(root, view=view).warnings)


def test_edge_brightness_sees_the_picture_as_the_model_does() -> None:
    from celestial_data.image import edge_brightness

    assert edge_brightness(disc_picture(0)) == 0
    assert edge_brightness(disc_picture(230)) == 230
    for mode in ("L", "CMYK"):
        assert abs(edge_brightness(disc_picture(230, mode=mode)) - 230) <= 3, mode
    palette = disc_picture(230).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert edge_brightness(palette) == 230
    # Transparent edges are black, as the model is shown them.
    transparent = disc_picture(230, mode="RGBA")
    transparent.putalpha(0)
    assert edge_brightness(transparent) == 0
    # A large picture is measured on its edges alone, with the same result.
    assert edge_brightness(disc_picture(230, side=2000)) == 230
