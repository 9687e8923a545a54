"""The shared preprocessing: any mode in, the requested uint8 array out."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from celestial_data import (
    CorruptImage,
    ImageFormat,
    ImageTooLarge,
    UnsupportedPixels,
    colourless,
    decode,
    grey_copies,
    to_array,
    upright,
)


def encoded(image: Image.Image, fmt: str) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("1", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("RGB", "JPEG"),
    ],
)
@pytest.mark.parametrize(("color_mode", "depth"), [("rgb", 3), ("grayscale", 1)])
def test_every_mode_becomes_the_requested_array(mode, fmt, color_mode, depth) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(rgb).convert(mode), fmt)
    array = to_array(decode(data), ImageFormat(8, color_mode))
    assert array.shape == (8, 8, depth) and array.dtype == np.uint8
    assert 40 < array.mean() < 215


def test_sixteen_bit_images_keep_their_range() -> None:
    wide = np.linspace(0, 65535, 256).reshape(16, 16).astype(np.uint16)
    array = to_array(decode(encoded(Image.fromarray(wide), "PNG")), ImageFormat(16, "grayscale"))
    np.testing.assert_array_equal(array[..., 0], (wide >> 8).astype(np.uint8))


@pytest.mark.parametrize(("orientation", "quarter_turns"), [(1, 0), (3, 2), (6, -1), (8, 1)])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_a_photo_is_turned_as_its_exif_orientation_says(fmt, orientation, quarter_turns) -> None:
    # As a phone stores a photo: the sensor's pixels, and an EXIF tag saying
    # how to turn them for display (6: a quarter turn clockwise, 8: counter).
    sensor = np.zeros((30, 60, 3), dtype=np.uint8)
    sensor[:, :20] = (250, 200, 40)  # a yellow band on the left
    upright = np.rot90(sensor, quarter_turns)  # what a viewer shows
    exif = Image.Exif()
    exif[0x0112] = orientation
    stream = io.BytesIO()
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(sensor).save(stream, format=fmt, exif=exif, **lossless)
    decoded = np.asarray(decode(stream.getvalue()).convert("RGB"))
    assert decoded.shape == upright.shape
    # JPEG is lossy at the band's edge; the other containers keep every pixel.
    assert np.abs(decoded.astype(int) - upright).mean() < (3 if fmt == "JPEG" else 1e-9)
    # The model is given what it would get from the upright picture itself.
    image_format = ImageFormat(16, "rgb")
    plain = to_array(decode(encoded(Image.fromarray(upright), "PNG")), image_format)
    arrays = to_array(Image.fromarray(decoded), image_format), plain
    assert np.abs(arrays[0].astype(int) - arrays[1]).mean() < (3 if fmt == "JPEG" else 1e-9)


@pytest.mark.parametrize(
    ("pixels", "kind"),
    [
        (np.linspace(0, 1, 256, dtype=np.float32), "floating-point pixels \\(mode F\\)"),
        (np.linspace(0, 10**6, 256).astype(np.int32), "integer pixels \\(mode I\\)"),
    ],
)
def test_thirty_two_bit_pixels_are_refused_not_clipped(pixels, kind) -> None:
    # Pillow would clip a 0-1 float image to black and a count image to white.
    data = encoded(Image.fromarray(pixels.reshape(16, 16)), "TIFF")
    with pytest.raises(UnsupportedPixels, match=f"32-bit {kind} have no fixed 8-bit scale"):
        decode(data)
    with pytest.raises(OSError, match="save the image with 8 or 16 bits per channel"):
        decode(data)  # an unreadable image to every caller that catches those


Image.init()  # every plugin, so that Image.SAVE lists them all
SAVABLE = [fmt for fmt in ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "AVIF", "JPEG2000")
           if fmt in Image.SAVE]  # fmt: skip


@pytest.mark.parametrize("fmt", SAVABLE)
def test_a_cut_file_of_any_format_is_an_os_error(fmt: str) -> None:
    # Pillow's plugins report cut data as SyntaxError, ValueError, EOFError...:
    # every caller catches one kind, OSError, and says the file is unreadable.
    rgb = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(rgb), fmt)
    for cut in range(1, len(data), max(1, len(data) // 80)):
        with contextlib.suppress(OSError):  # anything else fails the test
            decode(data[:cut])


def test_a_cut_avif_is_named_corrupt() -> None:
    if "AVIF" not in Image.SAVE:
        pytest.fail("this Pillow cannot write AVIF, which the pinned wheels can")
    data = encoded(Image.new("RGB", (64, 64), (90, 60, 30)), "AVIF")
    errors = []
    for cut in range(16, len(data)):
        with pytest.raises((CorruptImage, Image.UnidentifiedImageError)) as caught:
            decode(data[:cut])
        errors.append(caught.value)
    # Past its header, a cut AVIF was a SyntaxError from deep inside Pillow.
    named = [str(e) for e in errors if isinstance(e, CorruptImage)]
    assert named and all(text.startswith("truncated or corrupt image data (") for text in named)


def test_a_pillow_image_is_checked_and_turned_as_a_decoded_file_is() -> None:
    sensor = np.zeros((30, 60, 3), dtype=np.uint8)
    sensor[:, :20] = 250
    exif = Image.Exif()
    exif[0x0112] = 6
    stream = io.BytesIO()
    Image.fromarray(sensor).save(stream, format="PNG", exif=exif)
    with Image.open(stream) as opened:
        turned = upright(opened)
        assert opened.size == (60, 30)  # the caller's image is left as it was
    np.testing.assert_array_equal(np.asarray(turned), np.asarray(decode(stream.getvalue())))
    plain = Image.fromarray(sensor)
    assert upright(plain) is plain  # nothing to turn: no copy
    with pytest.raises(UnsupportedPixels):
        upright(Image.new("F", (4, 4)))
    with pytest.raises(CorruptImage, match="0 x 0 pixels"):
        upright(Image.new("RGB", (0, 0)))


def test_transparency_is_composited_on_black() -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent on the left half
    rgba[:, 8:, 3] = 255
    array = to_array(decode(encoded(Image.fromarray(rgba), "PNG")), ImageFormat(16, "rgb"))
    assert array[:, :8].max() == 0 and (array[:, 8:, 0] == 255).all()


def test_an_image_over_the_pixel_limit_is_refused_from_its_header() -> None:
    data = encoded(Image.new("RGB", (300, 200)), "PNG")
    header: dict = {}
    with pytest.raises(ImageTooLarge, match="300 x 200 pixels; the limit is 59999") as caught:
        decode(data, header, max_pixels=59_999)
    assert (caught.value.width, caught.value.height) == (300, 200)
    assert header["width"] == 300  # read before refusing
    assert decode(data, max_pixels=60_000).size == (300, 200)


def test_an_image_pillow_takes_for_a_decompression_bomb_is_too_large() -> None:
    data = encoded(Image.new("L", (20_000, 20_000)), "PNG")  # 400 MP: over twice Pillow's limit
    assert 2 * Image.MAX_IMAGE_PIXELS < 20_000**2
    for max_pixels in (None, 40_000_000):
        with pytest.raises(ImageTooLarge, match="has 400000000 pixels; the limit is") as caught:
            decode(data, max_pixels=max_pixels)
        assert caught.value.pixels == 400_000_000
        assert (caught.value.width, caught.value.height) == (None, None)
    assert caught.value.max_pixels == 40_000_000


def test_a_jpeg_decodes_at_full_size_and_its_every_pixel_counts() -> None:
    data = encoded(Image.new("RGB", (800, 800)), "JPEG")
    assert decode(data).size == (800, 800)
    with pytest.raises(ImageTooLarge, match="800 x 800 pixels"):
        decode(data, max_pixels=100 * 100)


def test_grey_copies_are_pillows_grey_and_only_they_are_colourless() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    copies = grey_copies(rgb)
    pillow = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])
    for channel in range(3):
        np.testing.assert_array_equal(copies[..., channel], pillow)
    assert colourless(copies).all() and not colourless(rgb).any()
    nearly = copies.copy()
    nearly[2, 7, 7, 1] += 1  # one channel of one pixel differs: a colour picture
    np.testing.assert_array_equal(colourless(nearly), [True, True, False, True, True])
    # A grey upload, in any container, reaches the model with equal channels.
    grey_jpeg = encoded(Image.fromarray(pillow[0]).convert("RGB"), "JPEG")
    assert colourless(to_array(decode(grey_jpeg), ImageFormat(8, "rgb"))[None]).all()
    assert not colourless(rgb[..., :1]).any()  # one channel: nothing to lose
    assert colourless(rgb[:0]).shape == (0,)  # an empty batch
