"""Exceptions raised by celestial-data."""

from __future__ import annotations

__all__ = ["DataError", "DatasetError", "ImageTooLarge", "ParamsError", "PreparedDataError"]


class DataError(Exception):
    """Base class of every error celestial-data raises on purpose."""


class DatasetError(DataError):
    """A raw dataset folder cannot be used as it is."""


class ParamsError(DataError):
    """A params section is missing, misspelt or has a bad value."""


class PreparedDataError(DataError):
    """A prepared dataset folder is missing, incomplete or inconsistent."""


class ImageTooLarge(DataError):
    """An image with more pixels than a caller allows, refused before it is decoded."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"The image is {width} x {height} pixels; the limit is {max_pixels} pixels."
        )
        self.width = width
        self.height = height
        self.max_pixels = max_pixels
