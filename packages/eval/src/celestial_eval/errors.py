"""Exceptions raised by celestial-eval."""

from __future__ import annotations

__all__ = ["EvalError", "LogError", "MismatchError", "MissingInputError"]


class EvalError(Exception):
    """Base class of every error celestial-eval raises on purpose."""


class MissingInputError(EvalError):
    """A file or folder that a command reads does not exist."""


class MismatchError(EvalError):
    """The model and the prepared data disagree (classes, image shape)."""


class LogError(EvalError):
    """A prediction log (or a model's reference) that cannot be used: corrupt, empty, mixed."""
