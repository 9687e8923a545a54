"""Serve a trained celestial model over HTTP with LitServe, with a page to try it."""

from importlib.metadata import version

from celestial_serve.errors import ServeError
from celestial_serve.project import ModelCard, load_card

__all__ = ["ModelCard", "ServeError", "__version__", "load_card"]

__version__ = version("celestial-serve")
