"""Varied copies of a picture: the same body, framed, turned and recorded otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from celestial_data import ImageFormat, ViewParams, to_array
from celestial_data.vary import CONTEXT, MIN_SIDE, copy_rng, reduced, vary
from celestial_data.view import body_box

SIDE = 96


def body(mode: str = "RGB") -> Image.Image:
    """An orange disc, lit from one side, on black: a body the view can find."""
    y, x = np.mgrid[:SIDE, :SIDE]
    disc = (x - 48) ** 2 + (y - 44) ** 2 < 30**2
    light = np.clip(1.2 - (x - 30) / 80, 0.3, 1.0)
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    pixels[disc] = (np.array([230, 140, 60]) * light[disc, None]).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def test_a_copy_has_the_size_and_mode_of_the_picture_and_differs_from_it() -> None:
    for mode in ("RGB", "L"):
        picture = body(mode)
        copy = vary(picture, copy_rng(0, "a.jpg", 0))
        assert copy.size == picture.size and copy.mode == mode
        assert not np.array_equal(np.asarray(copy), np.asarray(picture))


def test_copies_repeat_with_their_seed_file_and_number() -> None:
    picture = body()

    def pixels(seed: int, file: str, copy: int) -> np.ndarray:
        return np.asarray(vary(picture, copy_rng(seed, file, copy)))

    np.testing.assert_array_equal(pixels(1, "a.jpg", 0), pixels(1, "a.jpg", 0))
    for other in ((2, "a.jpg", 0), (1, "b.jpg", 0), (1, "a.jpg", 1)):
        assert not np.array_equal(pixels(1, "a.jpg", 0), pixels(*other))


def test_the_view_of_a_copy_shows_the_same_body() -> None:
    view = ImageFormat(16, "rgb", ViewParams())
    original = to_array(body(), view).astype(float)
    for k in range(8):
        copy = to_array(vary(body(), copy_rng(0, "a.jpg", k)), view).astype(float)
        # Same colour where lit, centred by the view: the mean colour stays close.
        lit, lit_copy = original.max(axis=-1) > 40, copy.max(axis=-1) > 40
        assert abs(lit.mean() - lit_copy.mean()) < 0.2
        np.testing.assert_allclose(original[lit].mean(axis=0), copy[lit_copy].mean(axis=0), atol=30)


def test_other_modes_are_made_rgb() -> None:
    assert vary(body().convert("RGBA"), copy_rng(0, "a.png", 0)).mode == "RGB"


def test_exposure_is_drawn_only_for_a_view_that_normalises_it() -> None:
    picture = body()
    cropped = ImageFormat(16, "rgb", ViewParams())  # framing removed, light kept

    def light(image: Image.Image) -> float:
        return float(to_array(image, cropped).astype(float).mean())

    source = light(picture)
    plain = [vary(picture, copy_rng(0, "a.jpg", k)) for k in range(12)]
    exposed = [vary(picture, copy_rng(0, "a.jpg", k), exposure=True) for k in range(12)]
    # Without it, the copies keep the light of the picture...
    assert all(abs(light(copy) / source - 1) < 0.15 for copy in plain)
    # ... with it, up to a stop either way, both ways among the copies.
    ratios = [light(copy) / source for copy in exposed]
    assert min(ratios) < 0.8 and max(ratios) > 1.25
    assert all(0.4 < ratio < 2.1 for ratio in ratios)
    # The rest is drawn as without it: the body is framed alike.
    for without, copy in zip(plain, exposed, strict=True):
        box = body_box(copy.convert("L"))
        assert box == pytest.approx(body_box(without.convert("L")), abs=2.5)


@pytest.mark.parametrize("crop", [True, False])
def test_a_large_picture_is_reduced_before_its_copies_are_drawn(crop: bool) -> None:
    view = ImageFormat(16, "rgb", ViewParams(crop=crop))
    large = body().resize((SIDE * 12, SIDE * 12), Image.Resampling.BICUBIC)
    small = reduced(large, view)
    assert small.mode == "RGB" and small.width < large.width // 4
    # What the view keeps is never brought below MIN_SIDE (128) pixels across.
    box = body_box(small.convert("L"))
    assert box is not None
    kept = (box[2] - box[0]) * 1.1 if crop else small.width
    assert MIN_SIDE <= kept < 2 * MIN_SIDE + 8
    # The view sees the same body, whichever was varied.
    assert np.abs(to_array(small, view).astype(int) - to_array(large, view).astype(int)).mean() < 3
    # A picture already small enough is left as it is; other modes become RGB.
    picture = body()
    assert reduced(picture, view) is picture
    assert reduced(picture.convert("RGBA"), view).mode == "RGB"
    # A model of larger images keeps more of the picture.
    assert reduced(large, ImageFormat(128, "rgb", ViewParams(crop=crop))).width > small.width


def test_a_small_body_in_a_wide_frame_is_cut_out_before_its_copies_are_drawn() -> None:
    # A telescope's 12-megapixel frame, the planet 200 pixels across in it:
    # copies of the whole frame took seconds each, for what the view crops away.
    view = ImageFormat(16, "rgb", ViewParams())
    frame = Image.new("RGB", (4000, 3000))
    frame.paste(body().resize((200, 200), Image.Resampling.BICUBIC), (2900, 300))
    cut = reduced(frame, view)
    box = body_box(frame.convert("L"))
    assert box is not None
    extent = max(box[2] - box[0], box[3] - box[1])
    assert max(cut.size) <= CONTEXT * extent + 2
    # The body is whole in it, and its copies show it as the frame's view does.
    assert difference_of(to_array(cut, view), to_array(frame, view)) < 3
    for k in range(4):
        copy = to_array(vary(cut, copy_rng(0, "frame.jpg", k)), view)
        assert difference_of(copy, to_array(frame, view)) < 40


def difference_of(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())
