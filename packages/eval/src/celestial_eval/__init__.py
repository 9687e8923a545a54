"""Measure trained classifiers and draw their plots."""

__all__ = ["__version__"]

__version__ = "0.1.0"
