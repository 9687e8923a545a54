"""Serve a trained celestial model over HTTP with LitServe."""

__all__ = ["__version__"]

__version__ = "0.1.0"
