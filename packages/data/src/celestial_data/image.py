"""Turn any image Pillow reads into the uint8 array a model takes.

This is the single definition of the preprocessing: `prepare` uses it on every
raw file, and serving uses it on every upload, so the two cannot disagree.
There is one decoding path: every container is decoded at full resolution
(no JPEG draft scaling), so identical pixels give an identical array whether
they come as JPEG, PNG, WebP or TIFF; then the canonical view
(`celestial_data.view`) and one antialiased resize.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image, ImageOps

from celestial_data.errors import CorruptImage, DataError, ImageTooLarge, UnsupportedPixels
from celestial_data.view import NO_VIEW, ViewParams, canonical_view

__all__ = [
    "COLOR_MODES",
    "ColorMode",
    "ImageFormat",
    "WithImageFormat",
    "channels",
    "colourless",
    "decode",
    "grey_copies",
    "pixel_digest",
    "to_array",
    "upright",
]

ColorMode = Literal["rgb", "grayscale"]
COLOR_MODES: tuple[str, ...] = get_args(ColorMode)
_PIL_MODE = {"rgb": "RGB", "grayscale": "L"}
# Images `grey_copies` converts at once.
GREY_CHUNK = 4096
# Pillow's modes of 32-bit pixels, refused by `decode` (see `UnsupportedPixels`).
WIDE_MODES = ("I", "F")
# The EXIF tag that says which way is up.
ORIENTATION = 0x0112


def channels(color_mode: ColorMode) -> int:
    """Number of channels of arrays in ``color_mode`` (3 for rgb, 1 for grayscale)."""
    return 3 if color_mode == "rgb" else 1


@dataclass(frozen=True)
class ImageFormat:
    """The square size, colour mode and view of a model's images, and the shape they make."""

    size: int
    color_mode: ColorMode
    view: ViewParams = NO_VIEW

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ImageFormat:
        """The format ``dataset.json`` or ``metadata.json`` records (no view if absent).

        Raises:
            KeyError, ValueError, TypeError, pydantic.ValidationError: If malformed.
        """
        view = document.get("view")
        return cls(
            int(document["image_size"]),
            document["color_mode"],
            NO_VIEW if view is None else ViewParams.model_validate(view),
        )

    def to_json(self) -> dict[str, Any]:
        """The keys `from_json` reads."""
        return {
            "image_size": self.size,
            "color_mode": self.color_mode,
            "channels": self.channels,
            "view": self.view.dump(),
        }

    @property
    def channels(self) -> int:
        """3 for rgb, 1 for grayscale."""
        return channels(self.color_mode)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(size, size, channels)``: one image's array shape."""
        return (self.size, self.size, self.channels)


class WithImageFormat:
    """The image properties of anything that holds an `ImageFormat` as ``image_format``.

    A prepared dataset, a loaded classifier and a served model card each hold
    one format; these read-only views of it are written once, here.
    """

    image_format: ImageFormat

    @property
    def image_size(self) -> int:
        """Side of the square images, in pixels."""
        return self.image_format.size

    @property
    def color_mode(self) -> ColorMode:
        """``rgb`` or ``grayscale``."""
        return self.image_format.color_mode

    @property
    def view(self) -> ViewParams:
        """The canonical view the images are taken in (`NO_VIEW` for none)."""
        return self.image_format.view

    @property
    def channels(self) -> int:
        """Channels per pixel (3 for rgb, 1 for grayscale)."""
        return self.image_format.channels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image: ``(size, size, channels)``."""
        return self.image_format.shape


def decode(
    source: bytes | str | Path,
    header: dict[str, Any] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Open and fully decode an image at its full resolution, whatever its container.

    A photo that says in its EXIF data which way is up (as phone cameras do)
    comes back turned that way, as viewers show it.

    Args:
        source: Encoded image bytes or a path.
        header: If given, filled with what the file says: ``width``,
            ``height``, ``mode`` and ``format``.
        max_pixels: If given, refuse images with more pixels, after reading
            their header and before decoding them.

    Returns:
        The decoded image (any mode but the 32-bit ones).

    Raises:
        PIL.UnidentifiedImageError, OSError: If the data is not a readable image.
        CorruptImage: If Pillow recognised the format but could not decode the
            data (an `OSError` too).
        UnsupportedPixels: If its pixels are 32-bit integers or floats (an `OSError` too).
        ImageTooLarge: If the image would decode to more than ``max_pixels``
            pixels, or declares more than Pillow's decompression-bomb limit
            (twice ``PIL.Image.MAX_IMAGE_PIXELS``), whatever ``max_pixels``.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with _as_corrupt():
            opened = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise bomb(error, max_pixels) from None
    with opened as image:
        if header is not None:
            header.update(
                width=image.width, height=image.height, mode=image.mode, format=image.format or ""
            )
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ImageTooLarge(image.width, image.height, max_pixels)
        if image.mode in WIDE_MODES:  # before decoding it
            raise UnsupportedPixels(image.mode)
        with _as_corrupt():
            image.load()
        return upright(image, in_place=True)


@contextlib.contextmanager
def _as_corrupt() -> Iterator[None]:
    """Raise what Pillow's plugins raise on bad data (SyntaxError, ValueError...) as `CorruptImage`.

    `OSError` (Pillow's own truncation error, `PIL.UnidentifiedImageError`),
    Pillow's decompression-bomb refusal and this package's errors pass as they are.
    """
    try:
        yield
    except (DataError, OSError, Image.DecompressionBombError):
        raise
    except Exception as error:
        raise CorruptImage(error) from error


def upright(image: Image.Image, in_place: bool = False) -> Image.Image:
    """``image`` checked, and turned as its EXIF data says: as a viewer shows it.

    A camera stores a photo as its sensor read it and says in EXIF how to turn
    it for display; every viewer (browsers included) turns it, so the model is
    given the picture its sender saw (about 6 us an image). `decode` ends
    with it, and a Pillow image given to a model directly goes through it too.

    Args:
        image: A decoded image.
        in_place: Turn ``image`` itself; else a turned copy is returned when
            it needs turning, ``image`` itself when not.

    Raises:
        UnsupportedPixels: If its pixels are 32-bit integers or floats.
        CorruptImage: If it has no pixels (0 wide or high).
    """
    if image.mode in WIDE_MODES:
        raise UnsupportedPixels(image.mode)
    if not image.width or not image.height:
        raise CorruptImage(ValueError(f"the image is {image.width} x {image.height} pixels"))
    if in_place:
        ImageOps.exif_transpose(image, in_place=True)
        return image
    if image.getexif().get(ORIENTATION, 1) in (1, None):
        return image
    return ImageOps.exif_transpose(image)


def bomb(error: Image.DecompressionBombError, max_pixels: int | None) -> ImageTooLarge:
    """The `ImageTooLarge` for an image Pillow refused to open as a decompression bomb.

    Pillow says how many pixels the image declares, but not its width and height.
    """
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if max_pixels is not None:
        limit = min(limit, max_pixels)
    declared = re.search(r"\((\d+) pixels\)", str(error))
    return ImageTooLarge(None, None, limit, pixels=int(declared[1]) if declared else None)


def to_array(image: Image.Image, image_format: ImageFormat) -> np.ndarray:
    """Convert a decoded image to the ``image_format.shape`` uint8 array a model takes.

    Transparent pixels are composited on black (the background of every
    dataset here); palette, CMYK and 16-bit images are converted first; then
    the format's canonical view is taken and the result resized (bilinear,
    antialiased when shrinking).

    Args:
        image: A decoded Pillow image in any mode.
        image_format: The output's side, colour mode and view.

    Returns:
        An array of shape ``image_format.shape`` and dtype uint8.
    """
    size, color_mode = image_format.size, image_format.color_mode
    viewed = canonical_view(_converted(image, color_mode), image_format.view, size)
    return np.asarray(viewed, dtype=np.uint8).reshape(image_format.shape)


def edge_brightness(image: Image.Image) -> float:
    """Median brightness (0 to 255) of a picture's edges: its outer 2%, all round.

    A body on a dark background has dark edges; a digit on paper, a face or
    a scene seldom does (see the warning about ``prepare.view.crop`` in
    `celestial_data.check`). Only the edges are converted, so a large picture
    costs what a small one does.
    """
    width, height = image.size
    band = max(1, round(0.02 * min(width, height)))
    strips = [
        (0, 0, width, band),
        (0, height - band, width, height),
        (0, band, band, height - band),
        (width - band, band, width, height - band),
    ]
    values = [
        np.asarray(_converted(image.crop(box), "grayscale")).ravel()
        for box in strips
        if box[2] > box[0] and box[3] > box[1]
    ]
    return float(np.median(np.concatenate(values)))


def pixel_digest(image: Image.Image) -> str:
    """SHA-256 hex digest of an image's RGB pixels at its own resolution.

    Equal for two files that decode to the same picture whatever their
    container (a PNG and its lossless WebP, TIFF or BMP copy, a JPEG and the
    PNG saved from it), with the conversions of `to_array` (transparency on
    black, 16-bit to 8-bit) applied first.
    """
    rgb = _converted(image, "rgb")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def colourless(images: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: which of a batch of RGB arrays ``(N, S, S, 3)`` have no colour at all.

    True when every pixel's three channels are equal, as for a grey picture
    (any container: a JPEG of grey pixels decodes to equal channels too).
    A colour render of a grey body still has some pixel that differs. A
    batch of one-channel images is all False: it has no colour to lose.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        return np.zeros(len(images), dtype=bool)
    flat = images.reshape(images.shape[0], images.shape[1] * images.shape[2], 3)
    return ((flat[..., 0] == flat[..., 1]) & (flat[..., 1] == flat[..., 2])).all(axis=1)


def grey_copies(images: np.ndarray) -> np.ndarray:
    """Grey copies of RGB arrays ``(N, S, S, 3)``: Pillow's luminance in all three channels.

    The integer arithmetic of Pillow's ``convert("L")`` (ITU-R 601 weights),
    so a copy equals the array of the same picture converted by Pillow.
    """
    copies = np.empty(np.shape(images), dtype=np.uint8)
    for start in range(0, len(copies), GREY_CHUNK):  # a memory-mapped split, a chunk at a time
        wide = np.asarray(images[start : start + GREY_CHUNK], dtype=np.uint32)
        luminance = wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471
        copies[start : start + GREY_CHUNK] = ((luminance + 0x8000) >> 16)[..., None]
    return copies


def _converted(image: Image.Image, color_mode: ColorMode) -> Image.Image:
    """``image`` in the Pillow mode of ``color_mode``, at its own size."""
    if color_mode not in _PIL_MODE:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}. Received: {color_mode!r}")
    if image.mode.startswith("I;16"):
        # Pillow's convert clips 16-bit values to 255; keep the top 8 bits instead.
        wide = np.asarray(image).astype(np.uint16)
        image = Image.fromarray((wide >> 8).astype(np.uint8))
    if image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image.alpha_composite(rgba)
    if image.mode == _PIL_MODE[color_mode]:
        return image  # convert would only copy it
    return image.convert(_PIL_MODE[color_mode])
