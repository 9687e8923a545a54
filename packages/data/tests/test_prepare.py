"""prepare: the prepared format, splits, byte-identical reruns, bad params and input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial_data import DatasetError, ParamsError, decode, load_prepared, to_array
from celestial_data.prepare import PrepareParams, prepare_dataset

PARAMS = PrepareParams(image_size=8, val_fraction=0.25, test_fraction=0.25, seed=3)


def changed(**values: object) -> PrepareParams:
    """`PARAMS` with some keys changed."""
    return PrepareParams.parse({**PARAMS.dump(), **values})


def manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def split_by_file(out: Path) -> dict[str, str]:
    return {row["file"]: row["split"] for row in manifest(out)}


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_the_prepared_format(raw: Path, tmp_path: Path) -> None:
    result = prepare_dataset(raw, tmp_path / "out", PARAMS, workers=2)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "manifest.csv",
        "preview.png",
        "report.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
        "val_images.npy",
        "val_labels.npy",
    ]
    dataset = load_prepared(out)
    assert dataset == result.dataset
    assert dataset.classes == ("Mars", "Moon", "Venus")
    assert dataset.input_shape == (8, 8, 3)
    assert sum(dataset.splits.values()) == 18
    for split in ("train", "val", "test"):
        images = dataset.images(split)
        assert isinstance(images, np.memmap)
        assert images.dtype == np.uint8 and images.shape == (dataset.splits[split], 8, 8, 3)
        assert dataset.labels(split).dtype == np.int32
    assert Image.open(out / "preview.png").format == "PNG"


def test_arrays_match_manifest_and_the_shared_preprocessing(raw: Path, tmp_path: Path) -> None:
    dataset = prepare_dataset(raw, tmp_path / "out", PARAMS).dataset
    rows = manifest(tmp_path / "out")
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        files = dataset.files(split)
        assert files == [row["file"] for row in rows if row["split"] == split]
        labels = dataset.labels(split)
        for i, file in enumerate(files):
            assert dataset.classes[labels[i]] == file.split("/")[0]
            expected = to_array(decode(raw / file), PARAMS.image_format)
            np.testing.assert_array_equal(dataset.images(split)[i], expected)


def test_report_holds_the_check_and_counts_per_split(raw: Path, tmp_path: Path) -> None:
    prepare_dataset(raw, tmp_path / "out", PARAMS)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["params"] == PARAMS.dump()
    assert report["counts"] == {"Mars": 6, "Moon": 6, "Venus": 6}
    per_split = report["splits"]
    assert set(per_split) == {"train", "val", "test"}
    for name in ("Mars", "Moon", "Venus"):
        assert sum(per_split[split][name] for split in per_split) == 6


def test_rerun_is_byte_identical_even_from_another_folder(raw: Path, tmp_path: Path) -> None:
    prepare_dataset(raw, tmp_path / "a", PARAMS, workers=2)
    prepare_dataset(raw, tmp_path / "a", PARAMS, workers=1)
    copy = shutil.copytree(raw, tmp_path / "elsewhere" / "raw")
    prepare_dataset(copy, tmp_path / "b", PARAMS, workers=2)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    prepare_dataset(raw, tmp_path / "c", changed(seed=4))
    assert file_bytes(tmp_path / "c") != file_bytes(tmp_path / "a")


def test_adding_images_never_moves_existing_ones(make_raw, tmp_path: Path) -> None:
    old = make_raw({"A": 10, "B": 10}, name="v1")
    prepare_dataset(old, tmp_path / "p1", PARAMS)
    new = make_raw({"A": 10, "B": 10}, name="v1", start=10)  # ten more per class
    assert new == old
    prepare_dataset(new, tmp_path / "p2", PARAMS)
    before, after = split_by_file(tmp_path / "p1"), split_by_file(tmp_path / "p2")
    assert len(after) == 40
    assert {file: after[file] for file in before} == before


def test_renamed_files_keep_their_split(raw: Path, tmp_path: Path) -> None:
    prepare_dataset(raw, tmp_path / "p1", PARAMS)
    (raw / "Mars" / "mars_000.png").rename(raw / "Mars" / "zz_renamed.png")
    prepare_dataset(raw, tmp_path / "p2", PARAMS)
    assert (
        split_by_file(tmp_path / "p2")["Mars/zz_renamed.png"]
        == (split_by_file(tmp_path / "p1")["Mars/mars_000.png"])
    )


def test_duplicates_are_never_split_across(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 12, "B": 12})
    for i in range(12):
        source = root / "A" / f"a_{i:03d}.png"
        (root / "A" / f"copy_{i:03d}.png").write_bytes(source.read_bytes())
    prepare_dataset(root, tmp_path / "out", PARAMS)
    splits = split_by_file(tmp_path / "out")
    assert {splits[f"A/copy_{i:03d}.png"] == splits[f"A/a_{i:03d}.png"] for i in range(12)} == {
        True
    }
    assert len(set(splits.values())) == 3


def resave(source: Path, target: Path, fmt: str, **options: object) -> None:
    """Write ``source``'s pixels to ``target`` in another container (lossless)."""
    with Image.open(source) as image:
        image.convert("RGB").save(target, format=fmt, **options)


def test_the_same_pixels_in_another_format_stay_in_one_split(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 12, "B": 12})
    formats = [("BMP", "bmp", {}), ("TIFF", "tiff", {}), ("WEBP", "webp", {"lossless": True})]
    for i in range(12):
        fmt, extension, options = formats[i % 3]
        resave(
            root / "A" / f"a_{i:03d}.png", root / "A" / f"again_{i:03d}.{extension}", fmt, **options
        )
    prepare_dataset(root, tmp_path / "out", PARAMS)
    splits = split_by_file(tmp_path / "out")
    copies = {f: f.replace("again", "a").rsplit(".", 1)[0] + ".png" for f in splits if "again" in f}
    assert len(copies) == 12
    assert [splits[copy] for copy in copies] == [splits[original] for original in copies.values()]
    assert len(set(splits.values())) == 3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["same_pixels"] == sorted(sorted(pair) for pair in copies.items())
    assert report["duplicates"] == []
    warning = next(w for w in report["warnings"] if "same pixels" in w)
    assert warning.startswith("12 group(s) of images with the same pixels in different files")
    assert "A/a_000.png = A/again_000.bmp" in warning


def test_a_pixel_copy_joins_the_split_of_its_original(raw: Path, tmp_path: Path) -> None:
    prepare_dataset(raw, tmp_path / "p1", PARAMS)
    before = split_by_file(tmp_path / "p1")
    for name in sorted(before):  # the original keeps its split only if its digest is the smaller
        resave(raw / name, raw / (name.rsplit(".", 1)[0] + ".bmp"), "BMP")
    prepare_dataset(raw, tmp_path / "p2", PARAMS)
    after = split_by_file(tmp_path / "p2")
    for name in before:
        assert after[name.rsplit(".", 1)[0] + ".bmp"] == after[name]


def test_zero_test_fraction_means_no_test_split(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(raw, out, PARAMS)
    dataset = prepare_dataset(raw, out, changed(test_fraction=0)).dataset
    assert list(dataset.splits) == ["train", "val"]
    assert not dataset.has("test")
    assert not (out / "test_images.npy").exists()


def test_grayscale_and_size(raw: Path, tmp_path: Path) -> None:
    dataset = prepare_dataset(
        raw, tmp_path / "out", PrepareParams(image_size=12, color_mode="grayscale")
    )
    assert dataset.dataset.input_shape == (12, 12, 1)
    assert dataset.dataset.images("train").shape[1:] == (12, 12, 1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"image_sise": 8}, "Unknown key 'image_sise'.*Did you mean 'image_size'"),
        ({"image_size": "big"}, r"prepare.image_size: Input should be a valid integer"),
        ({"image_size": 2}, r"prepare.image_size: Input should be greater than or equal to 4"),
        ({"color_mode": "rgba"}, r"prepare.color_mode: Input should be 'rgb' or 'grayscale'"),
        ({"val_fraction": 1.2}, r"prepare.val_fraction: Input should be less than 1"),
        ({"val_fraction": 0}, r"prepare.val_fraction: Input should be greater than 0"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave images for training"),
        ({"seed": 1.5}, r"prepare.seed: Input should be a valid integer\. Received: 1.5"),
        ({"on_corrupt": "ignore"}, r"prepare.on_corrupt: Input should be 'error' or 'skip'"),
        ({"view": {"crop": "yes"}}, r"prepare.view.crop: Input should be a valid boolean"),
        ({"view": {"margin": 2}}, r"prepare.view.margin: Input should be less than or equal to 1"),
        ({"view": {"centre": True}}, r"Unknown key 'centre' in params prepare.view"),
        ({"varied": -1}, r"prepare.varied: Input should be greater than or equal to 0"),
        ({"varied": 17}, r"prepare.varied: Input should be less than or equal to 16"),
    ],
)
def test_bad_params_are_errors_naming_the_key(params: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        PrepareParams.parse(params)


def test_defaults_are_valid() -> None:
    assert PrepareParams().dump() == {
        "image_size": 32,
        "color_mode": "rgb",
        "seed": 42,
        "split": "hashed",
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "on_corrupt": "error",
        "varied": 0,
        "train_varied": 0,
        "test_varied": 0,
        "view": {"crop": True, "margin": 0.05, "exposure": False},
    }


@pytest.mark.parametrize(
    ("key", "split", "source"),
    [
        ("varied", "varied", "val"),
        ("train_varied", "train_varied", "train"),
        ("test_varied", "test_varied", "test"),
    ],
)
def test_varied_copies_of_each_picture_are_a_split_of_their_own(
    raw: Path, tmp_path: Path, key: str, split: str, source: str
) -> None:
    from celestial_data import SPLITS, TEST_VARIED, TRAIN_VARIED, VARIED

    assert {VARIED, TRAIN_VARIED, TEST_VARIED} == {"varied", "train_varied", "test_varied"}
    plain = prepare_dataset(raw, tmp_path / "plain", PARAMS, workers=2).dataset
    varied = prepare_dataset(raw, tmp_path / "varied", changed(**{key: 3}), workers=2).dataset
    assert split not in SPLITS and not plain.has(split)
    assert set(varied.splits) == {*plain.splits, split}
    # The splits are those of the plain dataset, byte for byte; the copies come on top.
    for name in SPLITS:
        np.testing.assert_array_equal(varied.images(name), plain.images(name))
    files, labels = varied.files(source), varied.labels(source)
    assert varied.splits[split] == 3 * len(files)
    assert varied.files(split) == [file for file in files for _ in range(3)]
    np.testing.assert_array_equal(varied.labels(split), np.repeat(labels, 3))
    copies = np.asarray(varied.images(split)).reshape(len(files), 3, 8, 8, 3)
    for image, its_copies in zip(varied.images(source), copies, strict=True):
        # Each copy is another picture of the same body: not the image, not each other.
        assert not any(np.array_equal(copy, image) for copy in its_copies)
        assert not np.array_equal(its_copies[0], its_copies[1])
    assert varied.hash != plain.hash
    # Only the training copies are fitted on.
    assert varied.fitted_splits == (("train", split) if source == "train" else ("train",))
    # Seeded: a rerun writes the same bytes; back to 0 removes the split.
    again = prepare_dataset(raw, tmp_path / "again", changed(**{key: 3}), workers=1).dataset
    np.testing.assert_array_equal(again.images(split), varied.images(split))
    back = prepare_dataset(raw, tmp_path / "varied", PARAMS, workers=2).dataset
    assert not back.has(split) and not (tmp_path / "varied" / f"{split}_images.npy").exists()
    assert file_bytes(tmp_path / "varied") == file_bytes(tmp_path / "plain")


def test_varied_copies_are_exposed_otherwise_only_for_a_view_that_normalises_exposure(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import celestial_data.prepare as prepare_module

    asked: list[bool] = []

    def recording_vary(image, rng, exposure=False):
        asked.append(exposure)
        return image

    monkeypatch.setattr(prepare_module, "vary", recording_vary)
    for exposure in (False, True):
        asked.clear()
        view = {"crop": True, "margin": 0.05, "exposure": exposure}
        prepare_dataset(raw, tmp_path / str(exposure), changed(varied=1, view=view), workers=1)
        assert asked and set(asked) == {exposure}


def test_a_copy_is_the_same_whichever_pass_draws_it(raw: Path, tmp_path: Path) -> None:
    # Equal counts: every copy is drawn with the picture's one decoding. Unequal:
    # the training copies past the first are drawn in a second pass.
    even = changed(varied=1, train_varied=1, test_varied=1)
    uneven = changed(varied=1, train_varied=3, test_varied=2)
    one = prepare_dataset(raw, tmp_path / "one", even, workers=2).dataset
    three = prepare_dataset(raw, tmp_path / "three", uneven, workers=2).dataset
    for split, count in (("varied", 1), ("train_varied", 3), ("test_varied", 2)):
        copies = np.asarray(three.images(split)).reshape(-1, count, 8, 8, 3)
        np.testing.assert_array_equal(copies[:, 0], one.images(split))
        assert three.files(split)[::count] == one.files(split)
    assert not np.array_equal(copies[:, 0], copies[:, 1])


def test_a_picture_changed_between_the_passes_is_an_error(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import celestial_data.prepare as prepare_module

    read_image = prepare_module.read_image

    def read_then_change(root: Path, file: str, label: int):
        read = read_image(root, file, label)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(root / file)  # read: change it
        return read

    monkeypatch.setattr(prepare_module, "read_image", read_then_change)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"raw/\w+/\S+ was read a moment ago.*Run prepare again"):
        prepare_dataset(raw, out, changed(varied=1, train_varied=2, test_fraction=0), workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def cut_jpeg(raw: Path, encode) -> None:
    whole = encode(5, fmt="JPEG", size=64)
    (raw / "Moon" / "cut.jpg").write_bytes(whole[: len(whole) // 2])


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def test_a_failed_prepare_creates_no_folder(raw: Path, tmp_path: Path, encode) -> None:
    cut_jpeg(raw, encode)
    before = tree(tmp_path)
    with pytest.raises(DatasetError, match=r"1 image file\(s\) cannot be read: Moon/cut.jpg"):
        prepare_dataset(raw, tmp_path / "data" / "prepared", PARAMS)
    assert tree(tmp_path) == before  # neither prepared/ nor data/, nor a staging folder


def test_a_failed_prepare_leaves_the_earlier_dataset_as_it_was(
    raw: Path, tmp_path: Path, encode
) -> None:
    out = tmp_path / "out"
    prepare_dataset(raw, out, PARAMS)
    (out / "notes.txt").write_text("mine")
    before = tree(tmp_path / "out")
    cut_jpeg(raw, encode)
    with pytest.raises(DatasetError, match=r"1 image file\(s\) cannot be read: Moon/cut.jpg"):
        prepare_dataset(raw, out, PARAMS)
    assert tree(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_an_interrupted_prepare_leaves_nothing_half_written(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("celestial_data.prepare.write_preview", interrupt)  # the last write
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, tmp_path / "out", PARAMS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_corrupt_images_can_be_skipped(raw: Path, tmp_path: Path, encode) -> None:
    whole = encode(5, fmt="JPEG", size=64)
    for i in range(4):  # truncated: only decoding finds them
        (raw / "Moon" / f"cut_{i}.jpg").write_bytes(whole[: len(whole) // 2 + i])
    (raw / "Moon" / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    dataset = prepare_dataset(raw, out, changed(on_corrupt="skip")).dataset
    assert sum(dataset.splits.values()) == 18
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == [*(f"Moon/cut_{i}.jpg" for i in range(4)), "Moon/empty.png"]
    files = [row["file"] for row in manifest(out)]
    assert not any("cut" in file or "empty" in file for file in files)
    for split in dataset.splits:
        assert len(dataset.images(split)) == len(dataset.labels(split)) == dataset.splits[split]
    clean = tmp_path / "clean"
    shutil.copytree(raw, clean)
    for path in clean.glob("Moon/*"):
        if path.name.startswith(("cut", "empty")):
            path.unlink()
    prepare_dataset(clean, tmp_path / "clean_out", PARAMS)
    for split in dataset.splits:  # skipping leaves the same arrays as deleting
        a = (out / f"{split}_images.npy").read_bytes()
        assert a == (tmp_path / "clean_out" / f"{split}_images.npy").read_bytes()


def test_worker_processes_write_what_one_process_writes(raw: Path, tmp_path: Path, encode) -> None:
    # Run where forking is safe (a fresh interpreter: no JAX, one thread), so
    # the images are decoded and varied in two worker processes.
    whole = encode(5, fmt="JPEG", size=64)
    (raw / "Moon" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    params = changed(on_corrupt="skip", varied=1, train_varied=2, test_varied=1)
    pids = tmp_path / "pids"
    script = f"""
import os, sys
import celestial_data.prepare as prepare
from celestial_data.dataset import can_fork
from celestial_data.prepare import PrepareParams, prepare_dataset
assert can_fork()
load = prepare._arrays
def logged(*args, **kwargs):
    with open({str(pids)!r}, "a") as log:
        log.write(f"{{os.getpid()}}\\n")
    return load(*args, **kwargs)
prepare._arrays = logged
prepare_dataset({str(raw)!r}, {str(tmp_path / "two")!r},
                PrepareParams.parse({params.dump()!r}), workers=2)
print(os.getpid())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    workers = set(pids.read_text().split())
    assert workers and done.stdout.strip() not in workers  # decoded in other processes
    prepare_dataset(raw, tmp_path / "one", params, workers=1)
    written = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert written == sorted(path.name for path in (tmp_path / "two").iterdir())
    for name in written:  # the cut file skipped alike, every array and report the same
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert json.loads((tmp_path / "two" / "report.json").read_text())["skipped"] == ["Moon/cut.jpg"]


def test_layout_errors_stop_before_writing(make_raw, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Only one class folder"):
        prepare_dataset(make_raw({"A": 3}), tmp_path / "out", PARAMS)
    assert not (tmp_path / "out").exists()


def test_memory_maps_stream_without_loading(raw: Path, tmp_path: Path) -> None:
    dataset = prepare_dataset(raw, tmp_path / "out", PARAMS).dataset
    images = dataset.images("train")
    assert images.filename is not None and Path(images.filename).name == "train_images.npy"


def test_a_class_missing_from_a_split_is_a_warning(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 2, "B": 2})
    result = prepare_dataset(root, tmp_path / "out", changed(val_fraction=0.1))
    empty = [
        (split, name)
        for split, counts in result.split_counts.items()
        for name, count in counts.items()
        if count == 0
    ]
    assert empty  # four images cannot fill three splits for two classes
    for split, name in empty:
        assert any(
            f"Split '{split}' has no images of" in w and name in w for w in result.report.warnings
        )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["warnings"] == result.report.warnings


def test_an_image_size_far_above_the_pictures_is_a_warning(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 4, "B": 4})
    side = Image.open(next(root.glob("A/*"))).width
    result = prepare_dataset(root, tmp_path / "out", changed(image_size=8 * side))
    [warning] = [w for w in result.report.warnings if "enlarges" in w]
    assert warning.startswith(f"image_size {8 * side} enlarges even the largest picture ")
    assert f"({side} pixels across) 8 times" in warning and "64 times those" in warning
    assert f"to {side} or less" in warning
    for size in (side, 2 * side):  # not a word up to twice the pictures' size
        again = prepare_dataset(root, tmp_path / f"out{size}", changed(image_size=size))
        assert not [w for w in again.report.warnings if "enlarges" in w]


def test_report_lists_ignored_files_and_duplicates(raw: Path, tmp_path: Path) -> None:
    (raw / "notes.txt").write_text("x")
    (raw / "Moon" / "again.png").write_bytes((raw / "Moon" / "moon_002.png").read_bytes())
    prepare_dataset(raw, tmp_path / "out", PARAMS)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ignored"] == ["notes.txt"]
    assert report["duplicates"] == [["Moon/again.png", "Moon/moon_002.png"]]
    assert report["total"] == 19


def test_output_inside_the_raw_folder_is_an_error(raw: Path) -> None:
    with pytest.raises(DatasetError, match="inside the raw folder"):
        prepare_dataset(raw, raw / "prepared", PARAMS)
    assert not (raw / "prepared").exists()


def test_a_class_far_short_of_its_share_of_a_split_is_a_warning(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 34, "B": 34, "C": 34})
    # With seed 6, the draw per image puts 26% of the images in test, but 4 of C's 34.
    result = prepare_dataset(root, tmp_path / "hashed", changed(seed=6))
    assert result.split_counts["test"] == {"A": 6, "B": 11, "C": 4}
    assert [w for w in result.report.warnings if "share" in w] == [
        "Split 'test' holds less than half its share of C (4 of 34 images, about 8.5 "
        "asked): with 'split: hashed', each image's split is drawn from its content, and a "
        "small class's shares vary, so its test figures rest on few images. Or set 'split: "
        "stratified' in the prepare section of params.yaml: each class is then cut to the "
        "nearest image by the fractions."
    ]
    stratified = prepare_dataset(root, tmp_path / "cut", changed(seed=6, split="stratified"))
    assert not [w for w in stratified.report.warnings if "share" in w]


def test_a_stratified_split_gives_each_small_class_its_share(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 24, "B": 24, "C": 24})
    prepare_dataset(root, tmp_path / "hashed", PARAMS)
    stratified = PARAMS.model_copy(update={"split": "stratified"})
    prepare_dataset(root, tmp_path / "stratified", stratified)
    report = json.loads((tmp_path / "stratified" / "report.json").read_text())
    quarter = dict.fromkeys("ABC", 6)  # PARAMS' fractions: a quarter each
    assert report["splits"] == {"train": dict.fromkeys("ABC", 12), "val": quarter, "test": quarter}
    assert report["params"]["split"] == "stratified"
    hashed = json.loads((tmp_path / "hashed" / "report.json").read_text())["splits"]
    assert hashed["val"] != quarter  # the draw per image gave these classes other shares


def test_a_split_far_short_of_its_fraction_is_a_warning(make_raw, tmp_path: Path) -> None:
    root = make_raw({"A": 10, "B": 10})
    # With seed 2, the draw per image puts 2 of the 20 images in val, 4 in test.
    hashed = prepare_dataset(root, tmp_path / "hashed", changed(seed=2))
    assert [w for w in hashed.report.warnings if "of the 20 images" in w] == [
        "Split 'val' holds 2 of the 20 images (10%), where val_fraction asks for 25%: with "
        "'split: hashed', each image's split is drawn from its content, and a small "
        "dataset's shares vary. Set 'split: stratified' in the prepare section of "
        "params.yaml for each class's share to the nearest image."
    ]
    stratified = prepare_dataset(root, tmp_path / "cut", changed(seed=2, split="stratified"))
    # 2.5 images of each class per split, to the nearest: 3.
    assert stratified.split_counts == {
        "train": {"A": 4, "B": 4},
        "val": {"A": 3, "B": 3},
        "test": {"A": 3, "B": 3},
    }
    assert not [w for w in stratified.report.warnings if "holds" in w]
