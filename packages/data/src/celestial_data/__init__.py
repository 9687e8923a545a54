"""Read, check, split and prepare image datasets; render synthetic celestial bodies."""

__all__ = ["__version__"]

__version__ = "0.1.0"
