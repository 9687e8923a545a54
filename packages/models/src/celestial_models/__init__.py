"""Build, train, save and load Keras 3 classifiers on the JAX backend."""

__all__ = ["__version__"]

__version__ = "0.1.0"
