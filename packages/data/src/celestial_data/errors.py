"""Exceptions raised by celestial-data."""

from __future__ import annotations

__all__ = [
    "CorruptImage",
    "DataError",
    "DatasetError",
    "ImageTooLarge",
    "ParamsError",
    "PreparedDataError",
    "UnsupportedPixels",
]


class DataError(Exception):
    """Base class of every error celestial-data raises on purpose."""


class DatasetError(DataError):
    """A raw dataset folder cannot be used as it is."""


class ParamsError(DataError):
    """A params section is missing, misspelt or has a bad value."""


class PreparedDataError(DataError):
    """A prepared dataset folder is missing, incomplete or inconsistent."""


class ImageTooLarge(DataError):
    """An image with more pixels than a caller allows, refused before it is decoded.

    Attributes:
        width, height: The size it would decode at; None when only its number
            of pixels is known (Pillow refused it as a decompression bomb).
        pixels: How many pixels it would decode to.
        max_pixels: The limit it is over.
    """

    def __init__(
        self, width: int | None, height: int | None, max_pixels: int, pixels: int | None = None
    ) -> None:
        if width is not None and height is not None:
            pixels = width * height
            size = f"is {width} x {height} pixels"
        else:
            size = f"has {pixels if pixels is not None else 'more'} pixels"
        super().__init__(
            f"The image {size}; the limit is {max_pixels} pixels. Resize it to fewer pixels."
        )
        self.width = width
        self.height = height
        self.pixels = max_pixels + 1 if pixels is None else pixels
        self.max_pixels = max_pixels


class UnsupportedPixels(DataError, OSError):
    """An image whose pixels have no fixed scale to 8 bits: 32-bit integers or floats.

    Such a file (a scientific TIFF, say) may hold values from 0 to 1 or in the
    millions; converting it as Pillow does would clip it to black or white,
    so it is refused, as an unreadable image is (an `OSError`).

    Attributes:
        mode: Its Pillow mode, ``I`` or ``F``.
    """

    def __init__(self, mode: str) -> None:
        kind = "floating-point" if mode == "F" else "integer"
        super().__init__(
            f"32-bit {kind} pixels (mode {mode}) have no fixed 8-bit scale: save the image "
            "with 8 or 16 bits per channel"
        )
        self.mode = mode


class CorruptImage(DataError, OSError):
    """An image whose format Pillow recognised, but whose data it could not decode.

    Pillow reports a truncated or damaged file by many exception types
    (``SyntaxError``, ``ValueError``, ``EOFError``...) by format; `decode`
    raises this one instead, an `OSError` as Pillow's own "image file is
    truncated" is, so that callers catch one thing.
    """

    def __init__(self, error: Exception) -> None:
        reason = str(error).split("\n", 1)[0].strip() or type(error).__name__
        super().__init__(f"truncated or corrupt image data ({reason[:120]})")
