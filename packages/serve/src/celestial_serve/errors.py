"""Exceptions raised by celestial-serve."""

from __future__ import annotations

from celestial_data.errors import ParamsError

__all__ = ["OptionsError", "ServeError"]


class ServeError(Exception):
    """The server cannot start as asked (no model, incomplete model, port taken...)."""


class OptionsError(ServeError, ParamsError):
    """Options that cannot go together: a usage error (exit status 2, as a bad params value)."""
