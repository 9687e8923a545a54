"""Exceptions raised by celestial-data."""

from __future__ import annotations

__all__ = ["DataError", "DatasetError", "ParamsError", "PreparedDataError"]


class DataError(Exception):
    """Base class of every error celestial-data raises on purpose."""


class DatasetError(DataError):
    """A raw dataset folder cannot be used as it is."""


class ParamsError(DataError):
    """A params section is missing, misspelt or has a bad value."""


class PreparedDataError(DataError):
    """A prepared dataset folder is missing, incomplete or inconsistent."""
