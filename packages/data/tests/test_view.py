"""The canonical view and the one decoding path: invariances on small generated bodies."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from celestial_data import NO_VIEW, ImageFormat, ViewParams, decode, to_array
from celestial_data.view import body_box, canonical_view, percentiles

SIDE = 96
FORMAT = ImageFormat(16, "rgb", ViewParams())


def body(
    radius: float = 40, centre: tuple[float, float] = (48, 48), gain: float = 1.0
) -> Image.Image:
    """A banded, limb-darkened disc on black: a planet-like picture."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) + 0.5
    dy, dx = (y - centre[1]) / radius, (x - centre[0]) / radius
    inside = dx**2 + dy**2 <= 1
    shade = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
    bands = 0.75 + 0.25 * np.sin(dy * 9)
    rgb = np.stack([200 * bands, 150 * bands, 90 + 40 * dx], axis=-1) * shade[..., None]
    rgb = np.where(inside[..., None], rgb * gain, 0)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def view_of(image: Image.Image, image_format: ImageFormat = FORMAT) -> np.ndarray:
    return to_array(image, image_format).astype(np.float64)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=fmt, **options)
    return stream.getvalue()


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, in grey levels."""
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize("centre", [(30, 48), (62, 40), (40, 64)])
def test_an_off_centre_body_gives_the_centred_view(centre: tuple[int, int]) -> None:
    reference = view_of(body(radius=30))
    shifted = view_of(body(radius=30, centre=centre))
    assert difference(shifted, reference) < 2.0
    # Without the view, the same shift is a different picture.
    plain = ImageFormat(16, "rgb")
    assert difference(view_of(body(radius=30, centre=centre), plain), view_of(body(30), plain)) > 10


@pytest.mark.parametrize("radius", [24, 30, 46])
def test_a_smaller_or_larger_body_gives_the_same_view(radius: int) -> None:
    assert difference(view_of(body(radius=radius)), view_of(body(radius=40))) < 4.0


def test_a_darker_body_is_found_in_the_same_box() -> None:
    luminance = body(radius=30, centre=(40, 52)).convert("L")
    darker = body(radius=30, centre=(40, 52), gain=0.4).convert("L")
    assert body_box(darker) == pytest.approx(body_box(luminance), abs=1.0)


def test_exposure_normalisation_makes_a_darker_or_brighter_body_look_the_same() -> None:
    exposed = ImageFormat(16, "rgb", ViewParams(exposure=True))
    reference = view_of(body(gain=0.8), exposed)
    for gain in (0.4, 1.1):
        assert difference(view_of(body(gain=gain), exposed), reference) < 2.0
    # Off by default: brightness is kept.
    assert view_of(body(gain=0.4)).mean() < 0.6 * view_of(body(gain=0.8)).mean()


EXPOSED = ImageFormat(16, "rgb", ViewParams(exposure=True))


def speckled(picture: Image.Image) -> Image.Image:
    """``picture`` with small bright spots on the body: craters catching the light."""
    pixels = np.asarray(picture).astype(np.float64)
    rng = np.random.default_rng(1)
    lit = np.argwhere(pixels.max(axis=-1) > 60)
    for y, x in lit[rng.choice(len(lit), 40, replace=False)]:
        pixels[y : y + 2, x : x + 2] = np.minimum(pixels[y : y + 2, x : x + 2] * 1.6, 255)
    return Image.fromarray(np.rint(pixels).astype(np.uint8))


def test_half_the_exposure_gives_the_same_view() -> None:
    # The gain is measured and applied before rounding: no levels are lost.
    reference = view_of(body(), EXPOSED)
    assert np.abs(view_of(body(gain=0.5), EXPOSED) - reference).max() <= 2


def test_a_grey_picture_is_normalised_as_its_colour_original() -> None:
    # On luminance: a grey picture gets its colour original's gain, so its view
    # is the grey of the colour view, as the training's grey images are.
    picture = speckled(body())
    colour = to_array(picture, EXPOSED)
    grey = view_of(picture.convert("L").convert("RGB"), EXPOSED)
    grey_of_colour = np.asarray(Image.fromarray(colour).convert("L"), dtype=np.float64)
    # Within rounding, and where a colour channel burnt out at 255.
    assert difference(grey[..., 0], grey_of_colour) < 1.5


def test_blur_noise_and_enlarging_hardly_move_the_exposure() -> None:
    # Measured on the small view, the bright end is not the few brightest
    # source pixels that blur spreads and noise lifts.
    picture = speckled(body())
    reference = view_of(picture, EXPOSED)
    rng = np.random.default_rng(2)
    noisy = np.asarray(picture) + rng.normal(0, 15, (SIDE, SIDE, 3)) * (np.asarray(picture) > 0)
    changed = {
        "blur": picture.filter(ImageFilter.GaussianBlur(1.5)),
        "noise": Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)),
        "enlarged": picture.resize((4 * SIDE, 4 * SIDE), Image.Resampling.BICUBIC),
    }
    for name, other in changed.items():
        ratio = view_of(other, EXPOSED).mean() / reference.mean()
        assert ratio == pytest.approx(1.0, abs=0.04), name


def test_stray_bright_pixels_do_not_stretch_the_box() -> None:
    picture = np.asarray(body(radius=30)).copy()
    rng = np.random.default_rng(0)
    stars = rng.integers(0, SIDE, (6, 2))
    picture[stars[:, 0], stars[:, 1]] = 255
    noisy = np.clip(picture + rng.normal(0, 8, picture.shape), 0, 255).astype(np.uint8)
    assert difference(view_of(Image.fromarray(noisy)), view_of(body(radius=30))) < 4.0


@pytest.mark.parametrize(
    ("frame", "side", "at"),
    [
        ((2000, 2000), 96, (952, 952)),  # under 0.5% of the picture: the percentile misses it
        ((1920, 1080), 48, (300, 700)),  # gone from the coarse copy: found on a finer one
        ((4000, 3000), 32, (3100, 400)),  # a few dozen pixels in a 12-megapixel frame
    ],
)
def test_a_small_body_in_a_wide_black_frame_gives_its_own_view(
    frame: tuple[int, int], side: int, at: tuple[int, int]
) -> None:
    # A telescope's picture: the planet small, anywhere in a large dark field.
    own = body(radius=30).resize((side, side), Image.Resampling.LANCZOS)
    wide = Image.new("RGB", frame)
    wide.paste(own, at)
    assert difference(view_of(wide), view_of(own)) < 3.0
    box = body_box(wide)
    assert box is not None and at[0] - 2 <= box[0] < box[2] <= at[0] + side + 2


@pytest.mark.parametrize("side", [72, 160])
def test_a_small_body_on_a_faint_sky_inside_a_black_border_is_found(side: int) -> None:
    # A stacked telescope picture: a faint noisy sky, black where the frames
    # did not overlap, and the planet small in it, not on a black square.
    rng = np.random.default_rng(side)
    frame = np.clip(rng.normal(12, 3, (1800, 2400, 3)), 0, 255)
    frame[:40], frame[-40:], frame[:, :40], frame[:, -40:] = 0, 0, 0, 0
    own = np.asarray(body(radius=44).resize((side, side), Image.Resampling.LANCZOS))
    frame[700 : 700 + side, 1500 : 1500 + side] = np.maximum(
        frame[700 : 700 + side, 1500 : 1500 + side], own
    )
    wide = Image.fromarray(frame.astype(np.uint8))
    box = body_box(wide)
    assert box is not None and 1490 <= box[0] < box[2] <= 1510 + side
    assert difference(view_of(wide), view_of(Image.fromarray(own))) < 12.0  # the sky's grain


def test_a_flat_picture_is_only_resized() -> None:
    grey = Image.new("RGB", (40, 30), (90, 90, 90))
    viewed = canonical_view(grey, ViewParams(exposure=True), 16)
    np.testing.assert_array_equal(np.asarray(viewed), np.full((16, 16, 3), 90, np.uint8))


def test_no_view_only_resizes() -> None:
    picture = body(radius=20, centre=(30, 30))
    assert canonical_view(picture, NO_VIEW, SIDE) is picture
    expected = np.asarray(picture.resize((16, 16), Image.Resampling.BILINEAR, reducing_gap=None))
    np.testing.assert_array_equal(to_array(picture, ImageFormat(16, "rgb")), expected)


def test_the_crop_beyond_the_edges_is_black() -> None:
    array = to_array(
        body(radius=30, centre=(20, 48)), ImageFormat(32, "rgb", ViewParams(margin=0.5))
    )
    corners = array[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() == 0


def test_identical_pixels_give_an_identical_array_in_every_container() -> None:
    jpeg = encoded(body(), "JPEG", quality=90)
    pixels = decode(jpeg)  # what the JPEG holds, at full size
    containers = {
        "JPEG": jpeg,
        "PNG": encoded(pixels, "PNG"),
        "WebP": encoded(pixels, "WEBP", lossless=True),
        "TIFF": encoded(pixels, "TIFF"),
        "BMP": encoded(pixels, "BMP"),
    }
    arrays = {name: to_array(decode(data), FORMAT) for name, data in containers.items()}
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, arrays["PNG"], err_msg=name)


def test_an_upscaled_picture_gives_nearly_the_same_view() -> None:
    picture = body(radius=36, centre=(44, 50))
    upscaled = picture.resize((4 * SIDE, 4 * SIDE), Image.Resampling.BICUBIC)
    assert difference(view_of(upscaled), view_of(picture)) < 2.0


@given(
    st.lists(st.integers(0, 255), min_size=1, max_size=400),
    st.lists(st.sampled_from([0.0, 0.5, 2.0, 37.3, 50.0, 95.0, 99.5, 100.0]), min_size=1),
)
def test_percentiles_of_counts_are_numpys_bit_for_bit(
    sample: list[int], percents: list[float]
) -> None:
    counts = np.bincount(np.array(sample), minlength=256)
    expected = np.percentile(np.array(sample, dtype=np.float32), percents)
    assert percentiles(counts, percents).tobytes() == expected.tobytes()


def test_body_box_takes_a_colour_picture_as_its_luminance() -> None:
    picture = Image.new("RGB", (64, 48))
    picture.paste((200, 150, 90), (10, 8, 30, 28))
    assert body_box(picture) == body_box(picture.convert("L"))
    assert body_box(picture) is not None
