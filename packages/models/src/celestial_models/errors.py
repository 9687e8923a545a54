"""Exceptions raised by celestial-models."""

from __future__ import annotations

from celestial_data.errors import ParamsError as DataParamsError

__all__ = ["ModelDirError", "ModelError", "ParamsError", "TrainingDataError"]


class ModelError(Exception):
    """Base class of every error celestial-models raises on purpose."""


class ParamsError(ModelError, DataParamsError):
    """A ``train`` param is unknown, misspelt or has a bad value.

    It is also a `celestial_data.ParamsError`, so one handler catches the
    params errors of every package.
    """


class TrainingDataError(ModelError):
    """The prepared dataset cannot be trained on (missing, empty split, ...)."""


class ModelDirError(ModelError):
    """A model directory is missing, incomplete or from an incompatible version."""


class TrainingDivergedError(ModelError):
    """Training diverged (a loss that is not finite, or far above chance): no model is written."""
