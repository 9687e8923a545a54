"""The robustness benchmark's changes do what their names say (``bench/bench_robust.py``)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIDE = 64


def load_bench():
    """``bench/bench_robust.py`` as a module (bench/ is not on the import path)."""
    path = ROOT / "bench" / "bench_robust.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


robust = load_bench()


def disc(centre: tuple[float, float] = (SIDE / 2, SIDE / 2), radius: float = 12) -> Image.Image:
    """A bright, coloured disc on black, as the reference pictures are."""
    y, x = np.mgrid[:SIDE, :SIDE] + 0.5
    inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    pixels[inside] = (200, 120, 60)
    return Image.fromarray(pixels)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def bright(image: Image.Image) -> np.ndarray:
    return pixels(image).max(axis=2) > 40


def centre_of_mass(image: Image.Image) -> np.ndarray:
    """``(x, y)`` of the brightness, in pixel-centre coordinates."""
    weight = pixels(image).sum(axis=2)
    y, x = np.mgrid[:SIDE, :SIDE] + 0.5
    return np.array([(weight * x).sum(), (weight * y).sum()]) / weight.sum()


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_exposure_scales_values_and_clips() -> None:
    image = disc()
    assert pixels(robust.exposure(image, 0.5)).mean() == pytest.approx(pixels(image).mean() / 2)
    brighter = pixels(robust.exposure(image, 1.5))
    assert brighter.max() == 255  # 200 x 1.5, clipped
    assert brighter[..., 2].max() == 90


def test_grayscale_has_equal_channels() -> None:
    grey = pixels(robust.grayscale(disc()))
    assert grey.shape == (SIDE, SIDE, 3)
    assert np.array_equal(grey[..., 0], grey[..., 1])
    assert np.array_equal(grey[..., 1], grey[..., 2])
    assert grey.max() > 0


@pytest.mark.parametrize("factor", [0.6, 0.8])
def test_scale_shrinks_the_bright_area_about_the_centre(factor: float) -> None:
    image = disc()
    smaller = robust.scale(image, factor)
    assert smaller.size == image.size
    assert bright(smaller).sum() / bright(image).sum() == pytest.approx(factor**2, rel=0.1)
    assert centre_of_mass(smaller) == pytest.approx(centre_of_mass(image), abs=0.5)


@pytest.mark.parametrize("fraction", [0.1, 0.2])
def test_shift_moves_the_centre_of_mass_by_the_fraction(fraction: float) -> None:
    image = disc()
    moved = robust.shift(image, fraction, rng())
    assert moved.size == image.size
    distance = np.linalg.norm(centre_of_mass(moved) - centre_of_mass(image))
    assert distance == pytest.approx(fraction * SIDE, abs=1)
    assert pixels(moved).sum() == pytest.approx(pixels(image).sum())  # the disc stays inside


def test_shift_directions_vary_with_the_generator() -> None:
    directions = {
        tuple(np.round(centre_of_mass(robust.shift(disc(), 0.2, rng(seed))))) for seed in range(8)
    }
    assert len(directions) > 4


def test_rotation_turns_about_the_centre() -> None:
    image = disc(centre=(SIDE / 2 + 16, SIDE / 2))
    turned = robust.rotate(image, rng())
    centre = np.array([SIDE / 2, SIDE / 2])
    before, after = centre_of_mass(image) - centre, centre_of_mass(turned) - centre
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before), abs=0.5)
    assert np.linalg.norm(after - before) > 1  # it did turn
    white = robust.rotate(Image.new("RGB", (SIDE, SIDE), "white"), rng())
    assert pixels(white).mean() < 255  # the corners are filled black


def test_blur_softens_edges_and_keeps_the_brightness() -> None:
    image = disc()
    soft = robust.blur(image, 1.5)
    steepest = [np.abs(np.diff(pixels(i), axis=1)).max() for i in (image, soft)]
    assert steepest[1] < steepest[0]
    assert pixels(soft).mean() == pytest.approx(pixels(image).mean(), rel=0.01)


def test_noise_has_the_given_spread() -> None:
    grey = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
    noisy = pixels(robust.noise(grey, 15.0, rng()))
    assert (noisy - 128).std() == pytest.approx(15.0, rel=0.05)
    assert (noisy - 128).mean() == pytest.approx(0.0, abs=0.5)


def test_upscale_enlarges() -> None:
    assert robust.upscale(disc(), 4).size == (4 * SIDE, 4 * SIDE)


def test_every_change_gives_an_image_of_the_expected_format() -> None:
    image = disc()
    for name, change in robust.CHANGES.items():
        result = decoded(change(image, rng()))
        assert result.format == ("JPEG" if name == "jpeg q20" else "PNG"), name
        assert result.size == ((4 * SIDE,) * 2 if name == "upscale x4" else image.size), name
    assert np.array_equal(pixels(decoded(robust.CHANGES["none"](image, rng()))), pixels(image))


def test_the_combined_change_is_grey_and_moved() -> None:
    image = disc()
    combined = pixels(decoded(robust.CHANGES["grey, turned, shift 10%"](image, rng())))
    assert np.array_equal(combined[..., 0], combined[..., 1])
    assert np.array_equal(combined[..., 0], combined[..., 2])
    assert not np.array_equal(combined, pixels(robust.grayscale(image)))


def test_random_changes_repeat_per_file() -> None:
    image = disc()
    noisy = robust.CHANGES["noise sigma 15"]
    again = noisy(image, robust.change_rng(0, "noise sigma 15", "Mars/a.jpg"))
    assert again == noisy(image, robust.change_rng(0, "noise sigma 15", "Mars/a.jpg"))
    assert again != noisy(image, robust.change_rng(0, "noise sigma 15", "Mars/b.jpg"))
    assert again != noisy(image, robust.change_rng(1, "noise sigma 15", "Mars/a.jpg"))


def test_containers_decode_to_identical_pixels() -> None:
    image = Image.fromarray(rng().integers(0, 256, (SIDE, SIDE, 3), np.uint8))
    for name, save in robust.CONTAINERS.items():
        result = decoded(save(image))
        assert result.format == name.upper(), name
        assert np.array_equal(np.asarray(result.convert("RGB")), np.asarray(image)), name


def test_set_overrides_a_param_at_any_depth_with_a_yaml_value() -> None:
    document = {"prepare": {"image_size": 16, "view": {"crop": True}}, "train": {"epochs": 8}}
    changed = robust.overridden(
        document,
        ["prepare.view.exposure=true", "train.epochs=12", "ood.score=cosine", "train.lr=1e-3"],
    )
    assert changed["prepare"] == {"image_size": 16, "view": {"crop": True, "exposure": True}}
    assert changed["train"] == {"epochs": 12, "lr": 0.001}
    assert changed["ood"] == {"score": "cosine"}


def test_a_set_without_a_value_is_refused_naming_it() -> None:
    with pytest.raises(SystemExit, match=r"'train\.epochs' is not KEY=VALUE"):
        robust.overridden({}, ["train.epochs"])


def test_held_out_seeds_record_each_seeds_class_mean() -> None:
    def held_out(class_figures: dict[str, float]) -> dict:
        return {
            name: {"changes": {"none": {"auroc": value, "unknown_rejected": value / 2}}}
            for name, value in class_figures.items()
        }

    trained: list[int] = []

    def train_held_out(seed: int) -> dict:
        trained.append(seed)
        return held_out({"Mars": 0.8, "Moon": 0.9} if seed == 1 else {"Mars": 1.0})

    figures = robust.held_out_seed_figures(held_out({"Mars": 0.96, "Moon": 1.0}), train_held_out, 3)
    assert trained == [1, 2]  # seed 0's figures are given, not trained again
    assert figures["none"]["auroc"] == {"mean": 0.943333, "min": 0.85, "runs": [0.98, 0.85, 1.0]}
    assert figures["none"]["unknown_rejected"]["runs"] == [0.49, 0.425, 0.5]
