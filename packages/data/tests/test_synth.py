"""synth: deterministic renders of the ten bodies, laid out like the reference dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial_data import DatasetError, ParamsError
from celestial_data.check import check_dataset
from celestial_data.synth import BODIES, MANIFEST, SynthParams, render, synthesize


def mean_colour(body: str, count: int = 6, size: int = 48) -> np.ndarray:
    """Mean RGB of the visible pixels of a few renders."""
    pixels = []
    for i in range(count):
        image = render(body, np.random.default_rng([9, i]), size).reshape(-1, 3).astype(float)
        pixels.append(image[image.max(axis=1) > 40])
    return np.concatenate(pixels).mean(axis=0)


def test_bodies_are_the_reference_classes() -> None:
    assert BODIES == (
        "Earth",
        "Jupiter",
        "Mars",
        "Mercury",
        "Moon",
        "Neptune",
        "Pluto",
        "Saturn",
        "Uranus",
        "Venus",
    )


@pytest.mark.parametrize("body", BODIES)
def test_render_is_a_deterministic_body_on_black(body: str) -> None:
    image = render(body, np.random.default_rng(1), 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, render(body, np.random.default_rng(1), 32))
    assert not np.array_equal(image, render(body, np.random.default_rng(2), 32))
    corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() == 0
    assert (image.max(axis=-1) > 40).mean() > 0.05  # something visible


def test_colours_are_those_of_the_bodies() -> None:
    r, g, b = mean_colour("Mars")
    assert r > 1.5 * g > 1.5 * b * 0.9
    r, g, b = mean_colour("Neptune")
    assert b > 1.5 * r
    r, g, b = mean_colour("Uranus")
    assert g > r and b > r
    r, g, b = mean_colour("Venus")
    assert r > g > b
    for grey in ("Mercury", "Moon"):
        colour = mean_colour(grey)
        assert colour.max() - colour.min() < 0.12 * colour.mean()


def test_saturn_has_rings_wider_than_its_globe() -> None:
    for i in range(4):
        image = render("Saturn", np.random.default_rng([5, i]), 64)
        visible = image.max(axis=-1) > 30
        columns = np.flatnonzero(visible.any(axis=0))
        rows = np.flatnonzero(visible.any(axis=1))
        assert np.ptp(columns) > 1.6 * np.ptp(rows)


def test_moon_has_dark_maria_and_mercury_has_none() -> None:
    def dark_share(body: str) -> float:
        shares = []
        for i in range(6):
            rng = np.random.default_rng([3, i])
            grey = render(body, rng, 64, phase_chance=0, noise=0).mean(axis=-1)
            disk = grey[grey > 20]
            shares.append(float((disk < 0.7 * np.median(disk)).mean()))
        return float(np.mean(shares))

    assert dark_share("Moon") > 2 * dark_share("Mercury")


def test_synthesize_writes_the_reference_layout(tmp_path: Path) -> None:
    paths = synthesize(tmp_path / "raw", SynthParams(per_class=3, size=32, seed=1), workers=2)
    assert len(paths) == 30
    # The list of renders is in a hidden folder, which dataset readers skip.
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [".synth", *BODIES]
    listed = json.loads((tmp_path / "raw" / MANIFEST).read_text())["renders"]
    assert sorted(listed) == sorted(p.relative_to(tmp_path / "raw").as_posix() for p in paths)
    assert sorted(p.name for p in (tmp_path / "raw" / "Mars").iterdir()) == [
        "Mars_0.jpg",
        "Mars_1.jpg",
        "Mars_2.jpg",
    ]
    with Image.open(tmp_path / "raw" / "Pluto" / "Pluto_2.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
    report = check_dataset(tmp_path / "raw")
    assert report.ok and report.counts == dict.fromkeys(BODIES, 3)
    assert report.ignored == []
    assert not report.duplicates


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def test_synthesize_is_deterministic_per_seed(tmp_path: Path) -> None:
    # Enough images for worker processes in one run, and one process in the other.
    synthesize(
        tmp_path / "a",
        SynthParams(per_class=12, size=24, seed=5),
        classes=["Moon", "Earth"],
        workers=2,
    )
    synthesize(
        tmp_path / "b",
        SynthParams(per_class=12, size=24, seed=5),
        classes=["Earth", "Moon"],
        workers=1,
    )
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    synthesize(
        tmp_path / "c", SynthParams(per_class=12, size=24, seed=6), classes=["Moon", "Earth"]
    )
    assert _bytes(tmp_path / "c") != _bytes(tmp_path / "a")


@pytest.mark.parametrize("variation", [0.0, 0.6])
def test_more_images_per_class_keep_the_first_ones(tmp_path: Path, variation: float) -> None:
    params = SynthParams(per_class=2, size=24, seed=0, variation=variation)
    synthesize(tmp_path / "a", params, classes=["Venus", "Jupiter"])
    params = SynthParams(per_class=4, size=24, seed=0, variation=variation)
    synthesize(tmp_path / "b", params, classes=["Venus", "Jupiter"])
    small, large = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert len(large) == 8
    assert {name: large[name] for name in small} == small


def test_rerun_replaces_earlier_renders(tmp_path: Path) -> None:
    synthesize(tmp_path / "raw", SynthParams(per_class=4, size=24), classes=["Moon", "Mars"])
    synthesize(tmp_path / "raw", SynthParams(per_class=2, size=24), classes=["Moon", "Mars"])
    assert sorted(p.name for p in (tmp_path / "raw" / "Moon").iterdir()) == [
        "Moon_0.jpg",
        "Moon_1.jpg",
    ]


def test_a_folder_of_someone_elses_photos_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    # The reference dataset's photos are named as renders are: Moon_0.jpg, ...
    photos = tmp_path / "raw"
    (photos / "Moon").mkdir(parents=True)
    (photos / "Moon" / "Moon_0.jpg").write_bytes(b"a photo")
    (photos / "Moon" / "Moon_7.jpg").write_bytes(b"another photo")
    (photos / "Moon" / ".DS_Store").write_bytes(b"")  # hidden files are nobody's data
    with pytest.raises(DatasetError, match=r"holds 2 file\(s\) synth did not render \(Moon/Moon_0"):
        synthesize(photos, SynthParams(per_class=2, size=16))
    assert (photos / "Moon" / "Moon_0.jpg").read_bytes() == b"a photo"
    assert sorted(p.name for p in photos.rglob("*")) == [
        ".DS_Store",
        "Moon",
        "Moon_0.jpg",
        "Moon_7.jpg",
    ]


def test_a_render_changed_since_is_no_longer_synths_to_replace(tmp_path: Path) -> None:
    synthesize(tmp_path, SynthParams(per_class=2, size=16), classes=["Moon", "Mars"])
    (tmp_path / "Mars" / "Mars_1.jpg").write_bytes(b"edited")
    (tmp_path / "Mars" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"2 file\(s\).*Mars/Mars_1.jpg, Mars/notes.txt"):
        synthesize(tmp_path, SynthParams(per_class=2, size=16), classes=["Mars"])
    assert (tmp_path / "Mars" / "Mars_1.jpg").read_bytes() == b"edited"


def test_a_rerun_of_some_classes_keeps_the_other_classes_renders(tmp_path: Path) -> None:
    synthesize(tmp_path, SynthParams(per_class=3, size=16), classes=["Moon", "Mars"])
    moon = _bytes(tmp_path / "Moon")
    synthesize(tmp_path, SynthParams(per_class=1, size=16), classes=["Mars"])
    assert _bytes(tmp_path / "Moon") == moon
    assert sorted(p.name for p in (tmp_path / "Mars").iterdir()) == ["Mars_0.jpg"]
    synthesize(tmp_path, SynthParams(per_class=1, size=16), classes=["Moon", "Mars"])  # all its own
    assert len(list(tmp_path.rglob("*.jpg"))) == 2


def test_unknown_class_is_an_error_listing_the_bodies(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"Unknown class.*Ceres.*Earth, Jupiter"):
        synthesize(tmp_path, SynthParams(per_class=1, size=16), classes=["Mars", "Ceres"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"per_clas": 3}, "Unknown key 'per_clas'.*Did you mean 'per_class'"),
        (
            {"per_class": 0},
            r"synth.per_class: Input should be greater than or equal to 1\. Received: 0",
        ),
        ({"size": 8}, r"synth.size: Input should be greater than or equal to 16"),
        ({"seed": "x"}, r"synth.seed: Input should be a valid integer\. Received: 'x'"),
        ({"seed": True}, r"synth.seed: Input should be a valid integer\. Received: True"),
        ({"variation": 1.5}, r"synth.variation: Input should be less than or equal to 1\."),
        ({"variation": -0.1}, r"synth.variation: Input should be greater than or equal to 0\."),
        ({"variation": "some"}, r"synth.variation: Input should be a valid number"),
    ],
)
def test_bad_params_are_errors(params: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        SynthParams.parse(params)


def test_defaults() -> None:
    assert SynthParams().dump() == {"per_class": 100, "size": 128, "seed": 0, "variation": 0.0}


# SHA-256 over the relative paths and bytes of every file that synthesize
# writes for (per_class, size, seed), recorded before `variation` existed. A
# change of the renderer that alters them changes existing datasets (and the
# hashes in dvc.lock): it should be on purpose; variation 0 must keep them.
# NumPy's vectorised sine and arc tangent may round differently on another
# CPU family (see the README): a mismatch on such a machine alone would be
# that, not a change of the renderer.
RENDERED = {
    (2, 24, 0): "461c2b13aa7f8b96d350006cb0b6694bcc417a4c508cec824da2a917a6ec48a4",
    (1, 37, 2**40 + 5): "24ecf6691929b0ae03946bdfad54d1f477c597327eba4167f21c3a0f5455db94",
    (3, 64, 11): "f9464f8cc38bae05574905f325c9568caf2ad1afd2a7fbd77c3bbb75538a69e0",
}


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name, data in _bytes(folder).items():
        digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()


@pytest.mark.parametrize(("per_class", "size", "seed"), list(RENDERED))
def test_renders_keep_their_bytes(tmp_path: Path, per_class: int, size: int, seed: int) -> None:
    synthesize(tmp_path, SynthParams(per_class=per_class, size=size, seed=seed))
    assert _digest(tmp_path) == RENDERED[per_class, size, seed]


@pytest.mark.parametrize(("per_class", "size", "seed"), list(RENDERED))
def test_no_variation_writes_the_bytes_written_before_it_existed(
    tmp_path: Path, per_class: int, size: int, seed: int
) -> None:
    params = SynthParams(per_class=per_class, size=size, seed=seed, variation=0)
    synthesize(tmp_path, params, workers=1)
    assert _digest(tmp_path) == RENDERED[per_class, size, seed]


# ---------------------------------------------------------------- variation


def renders(body: str, variation: float, count: int = 24, **options: float) -> list[np.ndarray]:
    """Images 0 to ``count - 1`` of ``body`` at 48 x 48, as floats."""
    images = []
    for i in range(count):
        rng = np.random.default_rng([4, i])
        images.append(render(body, rng, 48, variation=variation, **options).astype(float))
    return images


def test_variation_spreads_the_exposure_both_ways() -> None:
    def disc_brightness(variation: float) -> np.ndarray:
        images = renders("Moon", variation, phase_chance=0, noise=0)
        return np.array([image[image.max(axis=-1) > 8].mean() for image in images])

    still, some, full = (disc_brightness(v) for v in (0.0, 0.5, 1.0))
    assert still.std() < some.std() < full.std()
    assert full.std() > 2.5 * still.std()
    assert full.min() < still.min() - 20 and full.max() > still.max() + 20


def test_variation_moves_and_shrinks_the_body_and_keeps_it_whole() -> None:
    def geometry(variation: float) -> tuple[np.ndarray, np.ndarray]:
        """Offset of the disc's centre (largest axis) and its radius, in sides."""
        offsets, radii = [], []
        for image in renders("Mars", variation, phase_chance=0, noise=0):
            disc = image.max(axis=-1) > 8
            rows, columns = np.nonzero(disc)
            centre = np.array([rows.mean(), columns.mean()]) + 0.5 - 24
            offsets.append(np.abs(centre).max() / 48)
            radii.append(np.sqrt(disc.sum() / np.pi) / 48)
            edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
            assert edges.max() == 0  # nothing cut by the frame
        return np.array(offsets), np.array(radii)

    offsets, radii = geometry(0.0)
    # The usual jitter: up to 0.6 of the room left around a radius of 0.33 or more.
    assert offsets.max() < 0.11 and radii.min() > 0.32
    offsets, radii = geometry(1.0)
    assert (offsets > 0.13).sum() >= 3
    assert (radii < 0.28).sum() >= 3 and radii.min() > 0.6 * 0.33 - 0.02


def test_variation_makes_some_pictures_grey() -> None:
    def spreads(variation: float) -> np.ndarray:
        """Largest difference between the channels of a pixel, per image."""
        return np.array([np.ptp(image, axis=-1).max() for image in renders("Mars", variation)])

    assert spreads(0.0).min() > 60
    colour = spreads(1.0)
    assert (colour == 0).sum() >= 2  # grey to the last pixel, noise included
    assert ((colour > 0) & (colour < spreads(0.0).min())).sum() >= 2  # desaturated


def test_variation_is_deterministic_and_changes_the_bytes(tmp_path: Path) -> None:
    first, second = (render("Earth", np.random.default_rng(3), 32, variation=0.7) for _ in "ab")
    np.testing.assert_array_equal(first, second)
    classes = ["Saturn", "Pluto"]
    for name, variation, workers in [("a", 0.5, 2), ("b", 0.5, 1), ("c", 0.0, 2)]:
        params = SynthParams(per_class=12, size=24, seed=5, variation=variation)
        synthesize(tmp_path / name, params, classes=classes, workers=workers)
    varied, plain = _bytes(tmp_path / "a"), _bytes(tmp_path / "c")
    assert varied == _bytes(tmp_path / "b")
    assert varied.keys() == plain.keys()
    assert all(varied[name] != plain[name] for name in varied)


def test_render_rejects_a_variation_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"variation must be from 0 to 1\. Received: 1\.2"):
        render("Moon", np.random.default_rng(0), 16, variation=1.2)
