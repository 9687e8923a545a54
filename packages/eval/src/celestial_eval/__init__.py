"""Measure trained classifiers and draw their plots."""

import importlib.metadata

__all__ = ["__version__"]

__version__ = importlib.metadata.version("celestial-eval")
