"""The shared preprocessing: any mode in, the requested uint8 array out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from celestial_data import ImageFormat, ImageTooLarge, decode, to_array


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
