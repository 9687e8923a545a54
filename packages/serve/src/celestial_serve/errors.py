"""Exceptions raised by celestial-serve."""

from __future__ import annotations

__all__ = ["ServeError"]


class ServeError(Exception):
    """The server cannot start as asked (no model, incomplete model, port taken...)."""
